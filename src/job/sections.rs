//! The job file, read section by section into a [`JobPlan`]: one reader
//! per section, each with its own rules, then the rules that span
//! sections. Problems are collected,
//! never returned early, so that a job file's every mistake is said at once.

use super::plan::{
    ChunkPlan, ClusterPlan, EmbedPlan, IndexPlan, InputPlan, JobPlan, OnEmpty, OnError, OutputPlan,
    ReportPlan, ShardSection, TopicsPlan,
};
use super::spec::{Problems, Section};
use crate::embed::batch::{DEFAULT_MAX_BATCH_ROWS, default_batch_tokens};
use crate::embed::{Device, ModelOptions, Pooling, WEIGHTEDMEAN_REFUSED};
use crate::sink::{Compression, DEFAULT_ROW_GROUP_SIZE, DEFAULT_UNIT_ROWS, OutputKind, UpdateMode};
use crate::source::{CsvOptions, Format};
use crate::store::S3Options;
use crate::text::TextSpec;
use crate::{Error, Result};
use toml::Table;

/// `[input]` as read: what is required may still be missing (said in `p`).
pub(super) struct InputSection {
    pub path: Option<String>,
    pub format: Option<Format>,
    pub delta: bool,
    pub version: Option<i64>,
    pub csv: CsvOptions,
    pub text: Option<TextSpec>,
    pub text_source: String,
    pub image_column: Option<String>,
    pub id_column: Option<String>,
    pub columns: Option<Vec<String>>,
    pub filter: Option<String>,
}

/// `[input]`: the file or table, its text (a column, a template, or images)
/// and the columns kept.
pub(super) fn read_input(root: &mut Section, p: &mut Problems) -> InputSection {
    let mut s = root.table("input", p);
    if !s.is_present() {
        p.push("[input]: required (at least input.path and input.text_column)");
    }
    let in_path = s.required_string("path", p);
    let format_name = s.choice("format", &["parquet", "csv", "delta"], p);
    let delta = format_name == Some("delta");
    let format = format_name.and_then(Format::parse);
    let version = s.count("version", 0, p).map(|v| v as i64);
    if version.is_some() && !delta {
        p.push("input.version: a Delta table version; set input.format = \"delta\"");
    }
    let text_column = s.string("text_column", p);
    let template = s.string("text_template", p);
    let image_column = s.string("image_column", p);
    let id_column = s.string("id_column", p);
    let columns = s.strings("columns", p);
    let filter = s.string("filter", p);
    let mut c = s.table("csv", p);
    let d = CsvOptions::default();
    let csv = CsvOptions {
        header: c.boolean("header", p).unwrap_or(d.header),
        delimiter: c.byte("delimiter", p).unwrap_or(d.delimiter),
        quote: c.byte("quote", p).unwrap_or(d.quote),
        escape: c.byte("escape", p),
        comment: c.byte("comment", p),
        infer_types: c.boolean("infer_types", p).unwrap_or(d.infer_types),
    };
    c.finish(p);
    s.finish(p);
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
    InputSection {
        path: in_path,
        format,
        delta,
        version,
        csv,
        text,
        text_source,
        image_column,
        id_column,
        columns,
        filter,
    }
}

/// `[model]`: the folder, and the options that override its own files;
/// `path` may still be missing (said in `p`).
pub(super) struct ModelSection {
    pub path: Option<String>,
    pub options: ModelOptions,
}

/// `[model]`: its folder and the options that override the folder's files,
/// or a remote model (`provider`).
pub(super) fn read_model(root: &mut Section, p: &mut Problems, images: bool) -> ModelSection {
    let mut s = root.table("model", p);
    if s.peek_str("provider").is_some() || s.has("provider") {
        return read_remote_model(s, p, images);
    }
    let model_path = s.required_string("path", p);
    let max_seq_length = s.count("max_seq_length", 2, p);
    let pooling = if s.peek_str("pooling") == Some("weightedmean") {
        s.string("pooling", p);
        p.push(format!("model.pooling: {WEIGHTEDMEAN_REFUSED}"));
        None
    } else {
        s.value::<Pooling>("pooling", p)
    };
    let normalize = s.boolean("normalize", p);
    let prompt_name = s.string("prompt_name", p);
    let prompt = s.string("prompt", p);
    s.finish(p);
    if prompt_name.is_some() && prompt.is_some() {
        p.push("model: set prompt_name or prompt, not both");
    }
    ModelSection {
        path: model_path.clone(),
        options: ModelOptions {
            path: model_path.unwrap_or_default(),
            max_seq_length,
            pooling,
            normalize,
            prompt_name,
            prompt,
            images,
            api: None,
        },
    }
}

/// `[model]` with `provider`: a remote model by name, its server and key
/// variable, its tokenizer and the provider's limits.
fn read_remote_model(mut s: Section, p: &mut Problems, images: bool) -> ModelSection {
    use crate::embed::api::{self, ApiSettings, Pacing};
    let provider = s.choice("provider", &["openai"], p);
    let name = s.required_string("name", p);
    refuse_local_keys(&mut s, p);
    let base_url = read_base_url(&mut s, p);
    let (bpe, tokenizer_file) = match s.string("tokenizer", p) {
        Some(t) if crate::embed::bpe::ENCODINGS.contains(&t.as_str()) => (Some(t), None),
        Some(t) => (None, Some(std::path::PathBuf::from(t))),
        None => (None, None),
    };
    let settings = ApiSettings {
        provider: provider.unwrap_or("openai").to_string(),
        model: name.clone().unwrap_or_default(),
        base_url,
        api_key_env: s
            .string("api_key_env", p)
            .unwrap_or_else(|| api::DEFAULT_KEY_ENV.to_string()),
        api_version: s.string("api_version", p),
        dimensions: s.count("dimensions", 1, p),
        bpe,
        tokenizer_file,
        limits: read_limits(&mut s, p),
        pacing: Pacing::default(),
        price_per_million_tokens: s.number("price_per_million_tokens", 0.0..=1e9, p),
        skip_refused: false,
    };
    let normalize = s.boolean("normalize", p);
    let prompt = s.string("prompt", p);
    s.finish(p);
    if images {
        p.push("model.provider: a remote model embeds texts; an image column needs a CLIP model folder");
    }
    ModelSection {
        path: name.map(|n| format!("{}:{n}", settings.provider)),
        options: ModelOptions {
            path: String::new(),
            normalize,
            prompt,
            api: Some(settings),
            ..ModelOptions::default()
        },
    }
}

/// `[model]` keys a remote model does not take: a key in the file (marked
/// known without reading it: the value is never echoed), and a folder's.
fn refuse_local_keys(s: &mut Section, p: &mut Problems) {
    if s.has("api_key") {
        p.push(format!(
            "model.api_key: a key is never read from a job file; put it in ${} (or name another variable in model.api_key_env)",
            crate::embed::api::DEFAULT_KEY_ENV
        ));
    }
    for (key, why) in [
        ("path", "a remote model has no folder; model.name names it"),
        ("pooling", "a remote model pools on its server"),
        (
            "max_seq_length",
            "a remote model's input limit is model.max_input_tokens",
        ),
        (
            "prompt_name",
            "a remote model has no named prompts; use model.prompt",
        ),
    ] {
        if s.has(key) {
            p.push(format!("model.{key}: {why}"));
        }
    }
}

/// `model.base_url`, else `$OPENAI_BASE_URL`, else OpenAI's: an http(s)
/// URL without credentials in it.
fn read_base_url(s: &mut Section, p: &mut Problems) -> String {
    let base_url = s
        .string("base_url", p)
        .or_else(|| {
            std::env::var("OPENAI_BASE_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
        })
        .unwrap_or_else(|| crate::embed::api::OPENAI_BASE_URL.to_string());
    if !(base_url.starts_with("http://") || base_url.starts_with("https://"))
        || url::Url::parse(&base_url).is_err()
    {
        p.push(format!(
            "model.base_url: expected an http:// or https:// URL, found {base_url:?}"
        ));
    }
    if let Err(e) = crate::store::refuse_userinfo("model.base_url", &base_url) {
        p.push(e.to_string());
    }
    base_url
}

/// The provider's limits on a request, OpenAI's by default.
fn read_limits(s: &mut Section, p: &mut Problems) -> crate::embed::api::Limits {
    let d = crate::embed::api::Limits::OPENAI;
    crate::embed::api::Limits {
        max_input_tokens: s
            .count("max_input_tokens", 1, p)
            .unwrap_or(d.max_input_tokens),
        max_inputs_per_request: s
            .count("max_inputs_per_request", 1, p)
            .unwrap_or(d.max_inputs_per_request),
        max_tokens_per_request: s
            .count("max_tokens_per_request", 1, p)
            .unwrap_or(d.max_tokens_per_request),
        max_request_bytes: s
            .count("max_request_bytes", 1024, p)
            .unwrap_or(d.max_request_bytes),
    }
}

/// `[chunking]`: token windows with overlap, or none (always none for
/// images: an image is one row, one vector).
pub(super) fn read_chunking(root: &mut Section, p: &mut Problems, images: bool) -> ChunkPlan {
    let mut s = root.table("chunking", p);
    let mode_given = s.choice("mode", &["tokens", "none"], p);
    if images && mode_given == Some("tokens") {
        p.push("chunking.mode = \"tokens\": images are not chunked; leave [chunking] out of an image job");
    }
    // An image is one row, one vector.
    let mode = if images {
        "none"
    } else {
        mode_given.unwrap_or("tokens")
    };
    let max_tokens = s.count("max_tokens", 1, p);
    let overlap = s.count("overlap", 0, p);
    // On by default: without input.columns the chunk rows leave out the
    // text's own columns, and chunk_text is where the text is.
    let keep_text = s.boolean("keep_text", p).unwrap_or(true);
    s.finish(p);
    if let (Some(o), Some(m)) = (overlap, max_tokens)
        && o >= m
    {
        p.push(format!(
            "chunking.overlap: must be smaller than chunking.max_tokens ({m}), found {o}"
        ));
    }
    ChunkPlan {
        enabled: mode == "tokens",
        max_tokens,
        overlap,
        keep_text,
    }
}

/// `[embed]`: batches, threads and sessions, the device, and what becomes
/// of empty and bad rows.
pub(super) fn read_embed(
    root: &mut Section,
    p: &mut Problems,
    images: bool,
    api: Option<&mut crate::embed::api::ApiSettings>,
) -> EmbedPlan {
    let mut s = root.table("embed", p);
    let batch_tokens = s.count("batch_tokens", 1, p);
    let max_batch_rows = s
        .count("max_batch_rows", 1, p)
        .unwrap_or(match api.is_some() {
            // As many inputs a request as a careful client sends.
            true => DEFAULT_API_BATCH_ROWS,
            false => DEFAULT_MAX_BATCH_ROWS,
        });
    let remote = api.is_some();
    let batch_tokens = match &api {
        Some(a) => Some(batch_tokens.unwrap_or(a.limits.max_tokens_per_request)),
        None => batch_tokens,
    };
    read_pacing(&mut s, p, api);
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
        p,
    );
    let workers = up_to_max("workers", "0 = auto; more than the threads are not used", p);
    let device = match s.string("device", p) {
        None => Device::Cpu,
        Some(d) => d.parse::<Device>().unwrap_or_else(|e| {
            p.push(format!("embed.device: {e}"));
            Device::Cpu
        }),
    };
    // Per device: small batches on the CPU, large ones on a GPU.
    let batch_tokens = batch_tokens.unwrap_or_else(|| default_batch_tokens(device));
    let on_empty = s.value("on_empty", p).unwrap_or(OnEmpty::Skip);
    if images && on_empty == OnEmpty::Embed {
        p.push(
            "embed.on_empty = \"embed\": an empty image has no vector; use \"skip\" or \"fail\"",
        );
    }
    let on_error = s.value("on_error", p).unwrap_or(OnError::Fail);
    if remote && device != Device::Cpu {
        p.push("embed.device: a remote model runs on its server; leave embed.device out");
    }
    let max_image_pixels = s
        .count("max_image_pixels", 1, p)
        .map(|n| n as u64)
        .unwrap_or(crate::embed::image::MAX_IMAGE_PIXELS);
    s.finish(p);
    EmbedPlan {
        batch_tokens,
        max_batch_rows,
        threads,
        workers,
        device,
        on_empty,
        on_error,
        max_image_pixels,
    }
}

/// Inputs one request holds by default with a remote model.
pub const DEFAULT_API_BATCH_ROWS: usize = 512;

/// `[embed]`'s keys for a remote model: requests at once, the pace, the
/// retries and each attempt's time limit. Refused for a local model.
fn read_pacing(
    s: &mut Section,
    p: &mut Problems,
    api: Option<&mut crate::embed::api::ApiSettings>,
) {
    let keys = [
        "concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "max_retries",
        "timeout_seconds",
        "max_tokens_per_run",
    ];
    let Some(api) = api else {
        for k in keys {
            if s.has(k) {
                p.push(format!(
                    "embed.{k}: only for a remote model (model.provider)"
                ));
            }
        }
        return;
    };
    let d = &mut api.pacing;
    d.concurrency = s.count("concurrency", 1, p).unwrap_or(d.concurrency);
    d.requests_per_minute = s.count("requests_per_minute", 1, p).map(|n| n as u64);
    d.tokens_per_minute = s.count("tokens_per_minute", 1, p).map(|n| n as u64);
    d.max_retries = s
        .count("max_retries", 0, p)
        .map_or(d.max_retries, |n| n.min(100) as u32);
    d.max_tokens_per_run = s.count("max_tokens_per_run", 1, p).map(|n| n as u64);
    if let Some(t) = s.number("timeout_seconds", 0.1..=86_400.0, p) {
        d.timeout = std::time::Duration::from_secs_f64(t);
    }
}

/// `[output]` as read: the plan, and its `path`, which may still be
/// missing (said in `p`; the plan's own path is empty until then).
pub(super) struct OutputSection {
    pub path: Option<String>,
    pub plan: OutputPlan,
}

/// `[output]`: one Parquet file or a Delta table, and how it is written
/// (`has_id`: the input has an id column, which an incremental run needs).
pub(super) fn read_output(root: &mut Section, p: &mut Problems, has_id: bool) -> OutputSection {
    let mut s = root.table("output", p);
    let out_path = s.required_string("path", p);
    let out_format = match s.choice("format", &["parquet", "delta"], p) {
        Some("delta") => OutputKind::Delta,
        _ => OutputKind::Parquet,
    };
    let unit_rows = s.count("unit_rows", 1, p).map(|n| n as u64);
    if out_format == OutputKind::Parquet && unit_rows.is_some() {
        p.push("output.unit_rows: only for output.format = \"delta\" (a single Parquet file is written in one go)");
    }
    let unit_rows = unit_rows.unwrap_or(DEFAULT_UNIT_ROWS);
    let mode_name = s.choice("mode", &["incremental", "full", "overwrite"], p);
    let replace_foreign = mode_name == Some("overwrite");
    if out_format == OutputKind::Parquet && mode_name.is_some() {
        p.push("output.mode: only for output.format = \"delta\" (a Parquet output is always written whole)");
    }
    if mode_name == Some("incremental") && !has_id {
        p.push("output.mode = \"incremental\": needs input.id_column, to know a row again");
    }
    // Incremental wherever it can be: a Delta output with an id column.
    let update_mode = match mode_name {
        Some("full" | "overwrite") => UpdateMode::Full,
        _ if out_format == OutputKind::Delta && has_id => UpdateMode::Incremental,
        _ => UpdateMode::Full,
    };
    let documents_path = s.string("documents_path", p);
    let compression = s.value("compression", p).unwrap_or(Compression::Zstd);
    let row_group_size = s
        .count("row_group_size", 1, p)
        .unwrap_or(DEFAULT_ROW_GROUP_SIZE);
    let vector_column = s
        .string("vector_column", p)
        .unwrap_or_else(|| "embedding".into());
    let overwrite = s.boolean("overwrite", p).unwrap_or(true);
    s.finish(p);
    OutputSection {
        path: out_path,
        plan: OutputPlan {
            path: String::new(),
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
    }
}

/// `[shard]`: the job split across machines (a Delta output only).
pub(super) fn read_shard(
    root: &mut Section,
    p: &mut Problems,
    out_format: OutputKind,
) -> ShardSection {
    let mut s = root.table("shard", p);
    let shard = ShardSection {
        count: s
            .count("count", 1, p)
            .map(|n| n.min(u32::MAX as usize) as u32),
        index: s
            .count("index", 0, p)
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
    s.finish(p);
    shard
}

/// `[s3]`: the client's settings; never credentials, never a URL's userinfo.
pub(super) fn read_s3(root: &mut Section, p: &mut Problems) -> S3Options {
    let mut s = root.table("s3", p);
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
        endpoint: s.string("endpoint", p),
        region: s.string("region", p),
        allow_http: s.boolean("allow_http", p),
        virtual_hosted_style: s.boolean("virtual_hosted_style", p),
        anonymous: s.boolean("anonymous", p).unwrap_or(false),
        max_retries: s.count("max_retries", 0, p),
        retry_timeout_secs: s.count("retry_timeout_secs", 1, p).map(|v| v as u64),
        connect_timeout_secs: s.count("connect_timeout_secs", 1, p).map(|v| v as u64),
        request_timeout_secs: s.count("request_timeout_secs", 1, p).map(|v| v as u64),
    };
    s.finish(p);
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
    s3
}

/// What the sections after `[output]` say that the rules across sections
/// need.
pub(super) struct Later<'a> {
    pub has_cluster: bool,
    pub report: Option<&'a ReportPlan>,
    pub has_index: bool,
    /// `[shard] count` is set.
    pub sharded: bool,
}

/// The rules that span sections: what a Delta output cannot do yet, paths
/// that must differ, credentials in any path, columns listed twice.
pub(super) fn cross_section(
    input: &InputSection,
    model: &ModelSection,
    chunking: &ChunkPlan,
    output: &OutputSection,
    later: Later,
    p: &mut Problems,
) {
    let Later {
        has_cluster,
        report,
        has_index,
        sharded,
    } = later;
    if has_index && sharded {
        p.push("[index]: not built by a sharded run (no shard sees the whole table); run `embedflow index` on the table after `embedflow commit`");
    }
    let (in_path, model_path, columns) = (&input.path, &model.path, &input.columns);
    let (out_path, documents_path) = (&output.path, &output.plan.documents_path);
    if output.plan.format == OutputKind::Delta {
        if documents_path.is_some() {
            p.push("output.documents_path: not written with output.format = \"delta\" yet; run a second job with chunking.mode = \"none\" for document vectors, or write Parquet");
        }
        if has_cluster {
            p.push("[cluster]: not run inside a job with output.format = \"delta\" yet; run `embedflow cluster` on the table after the job");
        }
        if report.is_some() && sharded {
            p.push("[report]: not written by a sharded run (no shard sees the whole table); run `embedflow report` on the table after `embedflow commit`");
        }
    }
    if documents_path.is_some() && !chunking.enabled {
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
    if let Some(r) = report {
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
}

impl JobPlan {
    pub(super) fn from_table(origin: &str, table: &Table) -> Result<JobPlan> {
        let mut p = Problems::default();
        let mut root = Section::root(table);
        let name = root.string("name", &mut p);
        let input = read_input(&mut root, &mut p);
        let images = input.image_column.is_some();
        let mut model = read_model(&mut root, &mut p, images);
        let chunking = read_chunking(&mut root, &mut p, images);
        let embed = read_embed(&mut root, &mut p, images, model.options.api.as_mut());
        if let Some(api) = model.options.api.as_mut() {
            api.skip_refused = embed.on_error == OnError::Skip;
        }
        let output = read_output(&mut root, &mut p, input.id_column.is_some());
        let cluster = read_cluster(&mut root, &mut p);
        let topics = read_topics(&mut root, cluster.is_some(), &mut p);
        let report = read_report(&mut root, &mut p);
        let index = read_index(&mut root, &mut p);
        if images && topics.as_ref().is_some_and(|t| t.labels.is_empty()) {
            p.push("[topics]: an image job's topics are zero-shot labels (topics.labels); keyword topics are made of texts");
        }
        let shard = read_shard(&mut root, &mut p, output.plan.format);
        let s3 = read_s3(&mut root, &mut p);
        let metrics = read_metrics(&mut root, &mut p);
        root.finish(&mut p);
        let later = Later {
            has_cluster: cluster.is_some(),
            report: report.as_ref(),
            has_index: index.is_some(),
            sharded: shard.count.is_some(),
        };
        cross_section(&input, &model, &chunking, &output, later, &mut p);
        if !p.0.is_empty() {
            return Err(Error::Job {
                origin: origin.to_string(),
                problems: p.0,
            });
        }
        let (Some(in_path), Some(text), Some(model_path), Some(out_path)) =
            (input.path, input.text, model.path, output.path)
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
                format: input.format,
                delta: input.delta,
                version: input.version,
                csv: input.csv,
                text,
                text_source: input.text_source,
                id_column: input.id_column,
                columns: input.columns,
                filter: input.filter,
                image_column: input.image_column,
            },
            model: ModelOptions {
                path: model_path,
                ..model.options
            },
            chunking,
            embed,
            output: OutputPlan {
                path: out_path,
                ..output.plan
            },
            s3,
            cluster,
            topics,
            shard,
            report,
            index,
            metrics,
        })
    }
}

/// `[metrics]`: a textfile for node_exporter (`path`), a Pushgateway
/// (`push_url`), and the seconds between rewrites.
fn read_metrics(root: &mut Section, p: &mut Problems) -> Option<crate::metrics::MetricsPlan> {
    let mut s = root.table("metrics", p);
    if !s.is_present() {
        return None;
    }
    let path = s.string("path", p);
    let push_url = s.string("push_url", p);
    let interval = s.number("interval_seconds", 0.05..=86_400.0, p).map_or(
        crate::metrics::DEFAULT_INTERVAL,
        std::time::Duration::from_secs_f64,
    );
    if let Some(path) = path.as_deref().filter(|p| p.contains("://")) {
        p.push(format!(
            "metrics.path: a local file is expected (node_exporter's textfile folder), found {path}; a Pushgateway is metrics.push_url"
        ));
    }
    // Neither path nor push_url is checked when the run starts: --metrics
    // FILE may give the path.
    s.finish(p);
    Some(crate::metrics::MetricsPlan {
        path,
        push_url,
        interval,
    })
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
        let metric = s
            .value("metric", p)
            .unwrap_or(crate::cluster::Metric::Cosine);
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
                .unwrap_or(crate::analysis::report::DEFAULT_MAX_POINTS),
            seed: s.count("seed", 0, p).unwrap_or(0) as u64,
            title: s.string("title", p),
        })
    } else {
        None
    };
    s.finish(p);
    report
}

/// `[index]`, or `None` when the section is absent: `embedflow index`'s
/// flags.
fn read_index(root: &mut Section, p: &mut Problems) -> Option<IndexPlan> {
    let mut s = root.table("index", p);
    let index = if s.is_present() {
        let d = crate::index::BuildOptions::default();
        Some(IndexPlan {
            build: crate::index::BuildOptions {
                lists: s.count("lists", 1, p),
                metric: s.value("metric", p).unwrap_or(d.metric),
                target_recall: s
                    .number("target_recall", 0.0..=1.0, p)
                    .unwrap_or(d.target_recall),
                recall_queries: s.count("recall_queries", 1, p).unwrap_or(d.recall_queries),
                seed: s.count("seed", 0, p).unwrap_or(0) as u64,
                progress: false,
                rebuild: false,
                rebuild_after: s
                    .number("rebuild_after", 0.0..=1.0, p)
                    .unwrap_or(d.rebuild_after),
            },
        })
    } else {
        None
    };
    s.finish(p);
    index
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
            preprocess: s
                .value("preprocess", p)
                .unwrap_or(crate::cluster::Preprocess::Unicode),
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
