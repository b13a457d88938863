//! The validated, resolved form of a job: every default filled in, every
//! value checked, every problem reported at once.

use toml::Table;

use super::spec::{Problems, Section};
use crate::embed::batch::{DEFAULT_MAX_BATCH_ROWS, default_batch_tokens};
use crate::embed::{Device, ModelOptions, Pooling, WEIGHTEDMEAN_REFUSED};
use crate::sink::{Compression, DEFAULT_ROW_GROUP_SIZE, DEFAULT_UNIT_ROWS, OutputKind, UpdateMode};
use crate::source::{CsvOptions, Format};
use crate::store::S3Options;
use crate::text::TextSpec;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct JobPlan {
    /// The job file's path, or "command line".
    pub origin: String,
    pub name: Option<String>,
    pub input: InputPlan,
    pub model: ModelOptions,
    pub chunking: ChunkPlan,
    pub embed: EmbedPlan,
    pub output: OutputPlan,
    /// Object-store settings for every `s3://` path of the job.
    pub s3: S3Options,
    /// k-means over the output's vectors, once it is written.
    pub cluster: Option<ClusterPlan>,
    /// Topics of the clusters (needs `cluster`).
    pub topics: Option<TopicsPlan>,
    /// `[shard]`: this job split across machines.
    pub shard: ShardSection,
    /// `[report]`: an HTML report of the output, written at the end.
    pub report: Option<ReportPlan>,
}

/// `[report]`: where the run's HTML report goes, and its map's sample.
#[derive(Clone, Debug)]
pub struct ReportPlan {
    pub path: String,
    pub max_points: usize,
    pub seed: u64,
    pub title: Option<String>,
}

/// `[shard]`: the shard count (and, rarely, the index) of a sharded job;
/// the scheduler usually gives the index.
#[derive(Clone, Debug, Default)]
pub struct ShardSection {
    pub index: Option<u32>,
    pub count: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub kmeans: crate::cluster::kmeans::Config,
    pub train_sample: Option<usize>,
    pub clusters_path: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TopicsPlan {
    pub options: crate::cluster::TopicOptions,
    /// Zero-shot labels (empty: keyword topics only).
    pub labels: Vec<String>,
    pub min_similarity: f32,
    /// The prompt the labels are embedded with (default: the documents').
    pub label_prompt_name: Option<String>,
    pub topics_path: Option<String>,
}

#[derive(Clone, Debug)]
pub struct InputPlan {
    pub path: String,
    pub format: Option<Format>,
    /// A Delta Lake table, at `version` (newest when `None`).
    pub delta: bool,
    pub version: Option<i64>,
    pub csv: CsvOptions,
    pub text: TextSpec,
    /// Written as text in the metadata; `text_column` or `text_template` as given.
    pub text_source: String,
    pub id_column: Option<String>,
    /// Passthrough columns; `None` = all.
    pub columns: Option<Vec<String>>,
    /// SQL boolean expression over the input columns.
    pub filter: Option<String>,
    /// The column of images (encoded bytes, or paths and `s3://` URLs) an
    /// image job embeds with the model's vision graph; `text` then names
    /// this column.
    pub image_column: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ChunkPlan {
    pub enabled: bool,
    /// `None`: the model's max_seq_length minus special and prompt tokens.
    pub max_tokens: Option<usize>,
    /// `None`: [`crate::chunk::DEFAULT_OVERLAP`], at most a quarter of the window.
    pub overlap: Option<usize>,
    pub keep_text: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnEmpty {
    Skip,
    Fail,
    Embed,
}

/// What becomes of a row whose input cannot be embedded (an image that
/// does not decode, is too large, or cannot be read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Stop the run, naming the file, row and column; nothing is committed.
    Fail,
    /// Leave the row out, say so on stderr, and exit 2 at the end.
    Skip,
}

#[derive(Clone, Debug)]
pub struct EmbedPlan {
    pub batch_tokens: usize,
    pub max_batch_rows: usize,
    /// ONNX Runtime threads, shared by the `workers` sessions; 0 = all
    /// cores.
    pub threads: usize,
    /// Sessions that run batches at once on the CPU, sharing `threads`;
    /// 0 = auto ([`crate::embed::session::worker_threads`]).
    pub workers: usize,
    /// Where the model runs: `cpu` (default), `cuda` or `cuda:N`.
    pub device: Device,
    pub on_empty: OnEmpty,
    pub on_error: OnError,
    /// Images with more pixels are refused before they are decoded.
    pub max_image_pixels: u64,
}

#[derive(Clone, Debug)]
pub struct OutputPlan {
    pub path: String,
    /// One Parquet file, or a Delta Lake table (a folder).
    pub format: OutputKind,
    /// Rows of input per resumable unit of a Delta output.
    pub unit_rows: u64,
    /// How a Delta output is updated (always `Full` for Parquet).
    pub mode: UpdateMode,
    /// One row per document: the normalised mean of its chunk vectors.
    pub documents_path: Option<String>,
    pub compression: Compression,
    pub row_group_size: usize,
    pub vector_column: String,
    pub overwrite: bool,
    /// `output.mode = "overwrite"`: a Delta table that embedflow did not
    /// write may be replaced (a full run); otherwise it is refused.
    pub replace_foreign: bool,
}

impl JobPlan {
    pub(super) fn from_table(origin: &str, table: &Table) -> Result<JobPlan> {
        let mut p = Problems::default();
        let mut root = Section::root(table);
        let name = root.string("name", &mut p);

        // [input]
        let mut s = root.table("input", &mut p);
        if !s.is_present() {
            p.push("[input]: required (at least input.path and input.text_column)");
        }
        let in_path = s.required_string("path", &mut p);
        let format_name = s.choice("format", &["parquet", "csv", "delta"], &mut p);
        let delta = format_name == Some("delta");
        let format = format_name.and_then(Format::parse);
        let version = s.count("version", 0, &mut p).map(|v| v as i64);
        if version.is_some() && !delta {
            p.push("input.version: a Delta table version; set input.format = \"delta\"");
        }
        let text_column = s.string("text_column", &mut p);
        let template = s.string("text_template", &mut p);
        let image_column = s.string("image_column", &mut p);
        let id_column = s.string("id_column", &mut p);
        let columns = s.strings("columns", &mut p);
        let filter = s.string("filter", &mut p);
        let mut c = s.table("csv", &mut p);
        let d = CsvOptions::default();
        let csv = CsvOptions {
            header: c.boolean("header", &mut p).unwrap_or(d.header),
            delimiter: c.byte("delimiter", &mut p).unwrap_or(d.delimiter),
            quote: c.byte("quote", &mut p).unwrap_or(d.quote),
            escape: c.byte("escape", &mut p),
            comment: c.byte("comment", &mut p),
            infer_types: c.boolean("infer_types", &mut p).unwrap_or(d.infer_types),
        };
        c.finish(&mut p);
        s.finish(&mut p);
        let (text, text_source) = match (&text_column, &template) {
            _ if image_column.is_some() => {
                if text_column.is_some() || template.is_some() {
                    p.push("input: set image_column, or text_column (or text_template), not both; a job embeds one kind");
                }
                let col = image_column.clone().unwrap_or_default();
                (Some(TextSpec::column(&col)), col)
            }
            (Some(_), Some(_)) => {
                p.push("input: set text_column or text_template, not both");
                (None, String::new())
            }
            (Some(col), None) => (Some(TextSpec::column(col)), col.clone()),
            (None, Some(t)) => match TextSpec::template(t) {
                Ok(spec) => (Some(spec), t.clone()),
                Err(e) => {
                    p.push(format!("input.text_template: {e}"));
                    (None, String::new())
                }
            },
            (None, None) => {
                if in_path.is_some() {
                    p.push("input.text_column: required (or input.text_template, or input.image_column for images)");
                }
                (None, String::new())
            }
        };

        // [model]
        let mut s = root.table("model", &mut p);
        let model_path = s.required_string("path", &mut p);
        let max_seq_length = s.count("max_seq_length", 2, &mut p);
        let pooling = if s.peek_str("pooling") == Some("weightedmean") {
            s.string("pooling", &mut p);
            p.push(format!("model.pooling: {WEIGHTEDMEAN_REFUSED}"));
            None
        } else {
            s.choice("pooling", &Pooling::NAMES, &mut p)
                .and_then(Pooling::parse)
        };
        let normalize = s.boolean("normalize", &mut p);
        let prompt_name = s.string("prompt_name", &mut p);
        let prompt = s.string("prompt", &mut p);
        s.finish(&mut p);
        if prompt_name.is_some() && prompt.is_some() {
            p.push("model: set prompt_name or prompt, not both");
        }

        // [chunking]
        let mut s = root.table("chunking", &mut p);
        let mode_given = s.choice("mode", &["tokens", "none"], &mut p);
        if image_column.is_some() && mode_given == Some("tokens") {
            p.push("chunking.mode = \"tokens\": images are not chunked; leave [chunking] out of an image job");
        }
        // An image is one row, one vector.
        let mode = if image_column.is_some() {
            "none"
        } else {
            mode_given.unwrap_or("tokens")
        };
        let max_tokens = s.count("max_tokens", 1, &mut p);
        let overlap = s.count("overlap", 0, &mut p);
        // On by default: without input.columns the chunk rows leave out the
        // text's own columns, and chunk_text is where the text is.
        let keep_text = s.boolean("keep_text", &mut p).unwrap_or(true);
        s.finish(&mut p);
        if let (Some(o), Some(m)) = (overlap, max_tokens)
            && o >= m
        {
            p.push(format!(
                "chunking.overlap: must be smaller than chunking.max_tokens ({m}), found {o}"
            ));
        }

        // [embed]
        let mut s = root.table("embed", &mut p);
        let batch_tokens = s.count("batch_tokens", 1, &mut p);
        let max_batch_rows = s
            .count("max_batch_rows", 1, &mut p)
            .unwrap_or(DEFAULT_MAX_BATCH_ROWS);
        // A count from 0 (auto) to MAX_THREADS, as --threads and --workers.
        let mut up_to_max = |key: &'static str, zero: &str, p: &mut Problems| {
            let n = s.count(key, 0, p).unwrap_or(0);
            let max = crate::embed::session::MAX_THREADS;
            if n > max {
                p.push(format!("embed.{key}: at most {max} ({zero}), found {n}"));
            }
            n
        };
        let threads = up_to_max(
            "threads",
            "0 = all cores; more than the cores are not used",
            &mut p,
        );
        let workers = up_to_max(
            "workers",
            "0 = auto; more than the threads are not used",
            &mut p,
        );
        let device = match s.string("device", &mut p) {
            None => Device::Cpu,
            Some(d) => d.parse::<Device>().unwrap_or_else(|e| {
                p.push(format!("embed.device: {e}"));
                Device::Cpu
            }),
        };
        // Per device: small batches on the CPU, large ones on a GPU.
        let batch_tokens = batch_tokens.unwrap_or_else(|| default_batch_tokens(device));
        let on_empty = match s.choice("on_empty", &["skip", "fail", "embed"], &mut p) {
            Some("fail") => OnEmpty::Fail,
            Some("embed") => OnEmpty::Embed,
            _ => OnEmpty::Skip,
        };
        if image_column.is_some() && on_empty == OnEmpty::Embed {
            p.push("embed.on_empty = \"embed\": an empty image has no vector; use \"skip\" or \"fail\"");
        }
        let on_error = match s.choice("on_error", &["fail", "skip"], &mut p) {
            Some("skip") => OnError::Skip,
            _ => OnError::Fail,
        };
        let max_image_pixels = s
            .count("max_image_pixels", 1, &mut p)
            .map(|n| n as u64)
            .unwrap_or(crate::embed::image::MAX_IMAGE_PIXELS);
        s.finish(&mut p);

        // [output]
        let mut s = root.table("output", &mut p);
        let out_path = s.required_string("path", &mut p);
        let out_format = match s.choice("format", &["parquet", "delta"], &mut p) {
            Some("delta") => OutputKind::Delta,
            _ => OutputKind::Parquet,
        };
        let unit_rows = s.count("unit_rows", 1, &mut p).map(|n| n as u64);
        if out_format == OutputKind::Parquet && unit_rows.is_some() {
            p.push("output.unit_rows: only for output.format = \"delta\" (a single Parquet file is written in one go)");
        }
        let unit_rows = unit_rows.unwrap_or(DEFAULT_UNIT_ROWS);
        let mode_name = s.choice("mode", &["incremental", "full", "overwrite"], &mut p);
        let replace_foreign = mode_name == Some("overwrite");
        if out_format == OutputKind::Parquet && mode_name.is_some() {
            p.push("output.mode: only for output.format = \"delta\" (a Parquet output is always written whole)");
        }
        if mode_name == Some("incremental") && id_column.is_none() {
            p.push("output.mode = \"incremental\": needs input.id_column, to know a row again");
        }
        // Incremental wherever it can be: a Delta output with an id column.
        let update_mode = match mode_name {
            Some("full" | "overwrite") => UpdateMode::Full,
            _ if out_format == OutputKind::Delta && id_column.is_some() => UpdateMode::Incremental,
            _ => UpdateMode::Full,
        };
        let documents_path = s.string("documents_path", &mut p);
        let compression = match s.choice(
            "compression",
            &["zstd", "snappy", "lz4", "gzip", "none"],
            &mut p,
        ) {
            Some("snappy") => Compression::Snappy,
            Some("lz4") => Compression::Lz4,
            Some("gzip") => Compression::Gzip,
            Some("none") => Compression::None,
            _ => Compression::Zstd,
        };
        let row_group_size = s
            .count("row_group_size", 1, &mut p)
            .unwrap_or(DEFAULT_ROW_GROUP_SIZE);
        let vector_column = s
            .string("vector_column", &mut p)
            .unwrap_or_else(|| "embedding".into());
        let overwrite = s.boolean("overwrite", &mut p).unwrap_or(true);
        s.finish(&mut p);

        let cluster = read_cluster(&mut root, &mut p);
        let topics = read_topics(&mut root, cluster.is_some(), &mut p);
        let report = read_report(&mut root, &mut p);
        if image_column.is_some() && topics.as_ref().is_some_and(|t| t.labels.is_empty()) {
            p.push("[topics]: an image job's topics are zero-shot labels (topics.labels); keyword topics are made of texts");
        }

        // [shard]
        let mut s = root.table("shard", &mut p);
        let shard = ShardSection {
            count: s
                .count("count", 1, &mut p)
                .map(|n| n.min(u32::MAX as usize) as u32),
            index: s
                .count("index", 0, &mut p)
                .map(|n| n.min(u32::MAX as usize) as u32),
        };
        if s.is_present() && out_format != OutputKind::Delta {
            p.push("[shard]: a sharded job writes a Delta table (output.format = \"delta\")");
        }
        if let (Some(i), Some(n)) = (shard.index, shard.count)
            && i >= n
        {
            p.push(format!("shard.index: {i} is not below shard.count {n}"));
        }
        if let Some(n) = shard.count.filter(|&n| n > crate::shard::MAX_SHARDS) {
            p.push(format!(
                "shard.count: {n} is more than the {} shards a job is split into",
                crate::shard::MAX_SHARDS
            ));
        }
        s.finish(&mut p);

        // [s3]
        let mut s = root.table("s3", &mut p);
        for secret in [
            "access_key_id",
            "secret_access_key",
            "session_token",
            "aws_access_key_id",
            "aws_secret_access_key",
        ] {
            if s.has(secret) {
                p.push(format!(
                    "s3.{secret}: credentials do not belong in a job file; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment"
                ));
            }
        }
        let s3 = S3Options {
            endpoint: s.string("endpoint", &mut p),
            region: s.string("region", &mut p),
            allow_http: s.boolean("allow_http", &mut p),
            virtual_hosted_style: s.boolean("virtual_hosted_style", &mut p),
            anonymous: s.boolean("anonymous", &mut p).unwrap_or(false),
            max_retries: s.count("max_retries", 0, &mut p),
            retry_timeout_secs: s.count("retry_timeout_secs", 1, &mut p).map(|v| v as u64),
            connect_timeout_secs: s.count("connect_timeout_secs", 1, &mut p).map(|v| v as u64),
            request_timeout_secs: s.count("request_timeout_secs", 1, &mut p).map(|v| v as u64),
        };
        s.finish(&mut p);
        if let Some(e) = &s3.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            p.push(format!(
                "s3.endpoint: must start with http:// or https://, found \"{}\"",
                crate::store::redact_url(&format!("x://{e}")).trim_start_matches("x://")
            ));
        }
        if let Some(Err(e)) = s3
            .endpoint
            .as_deref()
            .map(|e| crate::store::refuse_userinfo("s3.endpoint", e))
        {
            p.push(e.to_string());
        }
        root.finish(&mut p);

        if out_format == OutputKind::Delta {
            if documents_path.is_some() {
                p.push("output.documents_path: not written with output.format = \"delta\" yet; run a second job with chunking.mode = \"none\" for document vectors, or write Parquet");
            }
            if cluster.is_some() {
                p.push("[cluster]: not run inside a job with output.format = \"delta\" yet; run `embedflow cluster` on the table after the job");
            }
            if report.is_some() && shard.count.is_some() {
                p.push("[report]: not written by a sharded run (no shard sees the whole table); run `embedflow report` on the table after `embedflow commit`");
            }
        }
        if documents_path.is_some() && mode == "none" {
            p.push("output.documents_path: needs chunking (chunking.mode = \"tokens\"); without chunks the row vectors are the document vectors");
        }
        if let (Some(o), Some(d)) = (&out_path, &documents_path)
            && o == d
        {
            p.push("output.documents_path: must differ from output.path");
        }
        if let (Some(o), Some(i)) = (&out_path, &in_path)
            && o == i
        {
            p.push("output.path: must differ from input.path");
        }
        if let Some(r) = &report {
            for (name, other) in [
                ("output.path", &out_path),
                ("input.path", &in_path),
                ("output.documents_path", &documents_path),
            ] {
                if other.as_ref() == Some(&r.path) {
                    p.push(format!("report.path: must differ from {name}"));
                }
            }
        }
        for (name, path) in [
            ("input.path", &in_path),
            ("output.path", &out_path),
            ("output.documents_path", &documents_path),
            ("model.path", &model_path),
        ] {
            if let Some(Err(e)) = path
                .as_deref()
                .map(|u| crate::store::refuse_userinfo(name, u))
            {
                p.push(e.to_string());
            }
        }
        if let Some(cols) = &columns {
            let mut seen = std::collections::HashSet::new();
            for c in cols {
                if !seen.insert(c) {
                    p.push(format!("input.columns: '{c}' is listed twice"));
                }
            }
        }

        if !p.0.is_empty() {
            return Err(Error::Job {
                origin: origin.to_string(),
                problems: p.0,
            });
        }
        let (Some(in_path), Some(text), Some(model_path), Some(out_path)) =
            (in_path, text, model_path, out_path)
        else {
            return Err(Error::internal(
                "job plan: required field passed validation unset",
            ));
        };
        Ok(JobPlan {
            origin: origin.to_string(),
            name,
            input: InputPlan {
                path: in_path,
                format,
                delta,
                version,
                csv,
                text,
                text_source,
                id_column,
                columns,
                filter,
                image_column: image_column.clone(),
            },
            model: ModelOptions {
                path: model_path,
                max_seq_length,
                pooling,
                normalize,
                prompt_name,
                prompt,
                images: image_column.is_some(),
            },
            chunking: ChunkPlan {
                enabled: mode == "tokens",
                max_tokens,
                overlap,
                keep_text,
            },
            embed: EmbedPlan {
                batch_tokens,
                max_batch_rows,
                threads,
                workers,
                device,
                on_empty,
                on_error,
                max_image_pixels,
            },
            output: OutputPlan {
                path: out_path,
                format: out_format,
                unit_rows,
                mode: update_mode,
                documents_path,
                compression,
                row_group_size,
                vector_column,
                overwrite,
                replace_foreign,
            },
            s3,
            cluster,
            topics,
            shard,
            report,
        })
    }
}

/// `[cluster]`, or `None` when the section is absent: the job's and
/// `embedflow cluster`'s flags (through [`cluster_sections`]) alike.
fn read_cluster(root: &mut Section, p: &mut Problems) -> Option<ClusterPlan> {
    let mut s = root.table("cluster", p);
    let cluster = if s.is_present() {
        let k = s.count("k", 1, p);
        if k.is_none() && !s.has("k") {
            p.push("cluster.k: required (the number of clusters)");
        }
        let metric = match s.choice("metric", &["cosine", "l2"], p) {
            Some("l2") => crate::cluster::Metric::L2,
            _ => crate::cluster::Metric::Cosine,
        };
        let d = crate::cluster::kmeans::Config::default();
        let kmeans = crate::cluster::kmeans::Config {
            k: k.unwrap_or(1),
            max_iter: s.count("max_iter", 1, p).unwrap_or(d.max_iter),
            tol: s.number("tol", 0.0..=1.0, p).unwrap_or(d.tol),
            seed: s.count("seed", 0, p).unwrap_or(0) as u64,
            metric,
            mini_batch: match s.choice("algorithm", &["lloyd", "minibatch"], p) {
                Some("minibatch") => Some(s.count("batch_size", 1, p).unwrap_or(1024)),
                _ => {
                    if s.has("batch_size") {
                        p.push("cluster.batch_size: only with algorithm = \"minibatch\"");
                    }
                    None
                }
            },
        };
        let train_sample = s.count("train_sample", 1, p);
        let clusters_path = s.string("clusters_path", p);
        Some(ClusterPlan {
            kmeans,
            train_sample,
            clusters_path,
        })
    } else {
        None
    };
    s.finish(p);
    cluster
}

/// `[report]`, or `None` when the section is absent.
fn read_report(root: &mut Section, p: &mut Problems) -> Option<ReportPlan> {
    let mut s = root.table("report", p);
    let report = if s.is_present() {
        let path = s.string("path", p);
        if path.is_none() && !s.has("path") {
            p.push("report.path: required (where the HTML file goes, e.g. \"out/report.html\")");
        }
        Some(ReportPlan {
            path: path.unwrap_or_default(),
            max_points: s
                .count("max_points", 1, p)
                .unwrap_or(crate::pipeline::report::DEFAULT_MAX_POINTS),
            seed: s.count("seed", 0, p).unwrap_or(0) as u64,
            title: s.string("title", p),
        })
    } else {
        None
    };
    s.finish(p);
    report
}

/// `[topics]`, or `None` when the section is absent.
fn read_topics(root: &mut Section, has_cluster: bool, p: &mut Problems) -> Option<TopicsPlan> {
    let mut s = root.table("topics", p);
    let topics = if s.is_present() {
        if !has_cluster {
            p.push("[topics]: needs a [cluster] section (topics describe clusters)");
        }
        let d = crate::cluster::TopicOptions::default();
        let options = crate::cluster::TopicOptions {
            preprocess: match s.choice("preprocess", &["unicode", "english"], p) {
                Some("english") => crate::cluster::Preprocess::English,
                _ => crate::cluster::Preprocess::Unicode,
            },
            english_stop_words: s.choice("stop_words", &["english"], p).is_some(),
            ngram: s.int_range("ngram_range", p).unwrap_or(d.ngram),
            bm25_weighting: s.boolean("bm25_weighting", p).unwrap_or(false),
            reduce_frequent_words: s.boolean("reduce_frequent_words", p).unwrap_or(false),
            top_n: s.count("top_n", 1, p).unwrap_or(d.top_n),
        };
        let labels = s.strings("labels", p).unwrap_or_default();
        let min_similarity = s.number("min_similarity", -1.0..=1.0, p).unwrap_or(0.7) as f32;
        let label_prompt_name = s.string("label_prompt_name", p);
        let topics_path = s.string("topics_path", p);
        Some(TopicsPlan {
            options,
            labels,
            min_similarity,
            label_prompt_name,
            topics_path,
        })
    } else {
        None
    };
    s.finish(p);
    topics
}

/// The `[cluster]` and `[topics]` sections alone (what `embedflow cluster`'s
/// flags stand for), checked by the same rules as in a job file.
pub fn cluster_sections(origin: &str, table: &Table) -> Result<(ClusterPlan, Option<TopicsPlan>)> {
    let mut p = Problems::default();
    let mut root = Section::root(table);
    let cluster = read_cluster(&mut root, &mut p);
    let topics = read_topics(&mut root, cluster.is_some(), &mut p);
    root.finish(&mut p);
    match cluster {
        Some(c) if p.0.is_empty() => Ok((c, topics)),
        _ => Err(Error::Job {
            origin: origin.to_string(),
            problems: p.0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml: &str) -> Result<JobPlan> {
        JobPlan::from_table("job.toml", &toml::from_str(toml).unwrap())
    }

    #[test]
    fn minimal_job_takes_defaults() {
        let j = plan(
            r#"
            [input]
            path = "in.parquet"
            text_column = "text"
            [model]
            path = "all-MiniLM-L6-v2"
            [output]
            path = "out.parquet"
            "#,
        )
        .unwrap();
        assert!(j.chunking.enabled);
        assert_eq!(j.chunking.overlap, None);
        assert_eq!(j.embed.on_empty, OnEmpty::Skip);
        assert_eq!(j.output.compression, Compression::Zstd);
        assert_eq!(j.output.vector_column, "embedding");
        assert_eq!((j.embed.threads, j.embed.workers), (0, 0));
    }

    #[test]
    fn workers_are_counted_and_bounded() {
        let job = |workers: &str| {
            plan(&format!(
                "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\n[model]\npath = \"m\"\n[output]\npath = \"o.parquet\"\n[embed]\nworkers = {workers}\n"
            ))
        };
        assert_eq!(job("2").unwrap().embed.workers, 2);
        assert_eq!(
            job("-1").unwrap_err().to_string(),
            "job.toml: 1 problem\n  - embed.workers: must be at least 0, found -1"
        );
        assert_eq!(
            job("5000").unwrap_err().to_string(),
            "job.toml: 1 problem\n  - embed.workers: at most 1024 (0 = auto; more than the threads are not used), found 5000"
        );
    }

    #[test]
    fn lists_every_problem_at_once() {
        let e = plan(
            r#"
            [input]
            path = "in.parquet"
            text_colum = "text"
            [model]
            pooling = "weightedmean"
            [chunking]
            max_tokens = 10
            overlap = 10
            [outptu]
            path = "x"
            "#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "job.toml: 7 problems
  - input.text_colum: unknown key; did you mean 'input.text_column'?
  - input.text_column: required (or input.text_template, or input.image_column for images)
  - model.path: required
  - model.pooling: \"weightedmean\" pooling is not supported (it weights tokens by position, which embedflow does not implement); choose one of cls, mean, max, mean_sqrt_len, lasttoken
  - chunking.overlap: must be smaller than chunking.max_tokens (10), found 10
  - output.path: required
  - outptu: unknown key; did you mean 'output'?"
        );
    }
}
