//! The validated, resolved form of a job: every default filled in, every
//! value checked, every problem reported at once.

use crate::embed::{Device, ModelOptions};
use crate::sink::{Compression, OutputKind, UpdateMode};
use crate::source::{CsvOptions, Format};
use crate::store::S3Options;
use crate::text::TextSpec;

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
    /// `[index]`: the output's ANN index, kept current after each run.
    pub index: Option<IndexPlan>,
    /// `[metrics]` (or `--metrics FILE`): the run's counters for Prometheus.
    pub metrics: Option<crate::metrics::MetricsPlan>,
}

/// `[index]`: how the output's index is built (see `embedflow index`).
#[derive(Clone, Debug)]
pub struct IndexPlan {
    pub build: crate::index::BuildOptions,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum OnEmpty {
    Skip,
    Fail,
    Embed,
}

/// What becomes of a row whose input cannot be embedded (an image that
/// does not decode, is too large, or cannot be read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

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
