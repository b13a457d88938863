//! Command-line interface (clap derive): one options struct per subcommand.
//! The job file says *what* to do; global flags say *how* (threads, progress).

use clap::{Args, Parser, Subcommand};
use toml::{Table, Value};

use crate::cluster::neighbors::Similarity;
use crate::progress::{ProgressMode, SummaryFormat};
use crate::sql::OutputFormat;

#[derive(Parser, Debug)]
#[command(
    name = "embedflow",
    version,
    about = "Turn document tables (Parquet/CSV) into embeddings with ONNX Runtime",
    long_about = "Turn document tables (Parquet/CSV) into embeddings with ONNX Runtime.\n\n\
        embedflow reads Parquet or CSV, chunks long texts into token windows of the model's own tokenizer, \
        embeds them with a sentence-transformers model exported to ONNX, and writes Parquet with the input \
        columns beside an `embedding` column of type FixedSizeList<Float32, dim>.\n\n\
        Exit codes: 0 done; 1 failed (nothing committed); 2 done, but rows with empty or null text were skipped; \
        3 done, but nothing was embedded (empty input, no row matched the filter); 64 the command line is wrong; 130 stopped by SIGINT or SIGTERM (nothing committed).",
    after_help = "Examples:\n  \
        embedflow run jobs/quickstart.toml\n  \
        embedflow run jobs/quickstart.toml --set chunking.max_tokens=128 --set output.path=out/small.parquet\n  \
        embedflow embed sample_data/news.parquet out/news_embedded.parquet --model all-MiniLM-L6-v2 --text-column text --id-column article_id\n  \
        embedflow validate jobs/*.toml"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Progress display on stderr: a bar on a terminal, a line every few seconds otherwise.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub progress: ProgressMode,

    /// ONNX Runtime threads, shared by the --workers sessions (default: the job's embed.threads, 0 = all cores;
    /// more than the cores are not used).
    #[arg(long, global = true, value_name = "N", allow_negative_numbers = true, value_parser = parse_threads)]
    pub threads: Option<usize>,

    /// Batches run at once on the CPU, each in its own ONNX Runtime session with its share
    /// of the threads (default: the job's embed.workers, 0 = auto: one per core up to 4,
    /// fewer for graphs over 256 MB).
    #[arg(long, global = true, value_name = "N", allow_negative_numbers = true, value_parser = parse_workers)]
    pub workers: Option<usize>,

    /// Where the model runs: cpu, cuda or cuda:N (default: the job's embed.device, else cpu).
    /// CUDA needs scripts/setup --gpu; it never falls back to the CPU.
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<crate::embed::Device>,

    /// How `run` and `embed` print their summary: text, or one JSON line on stdout.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub summary: SummaryFormat,

    /// Log level filter (error, warn, info, debug, trace), or set RUST_LOG.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log: String,

    /// How stderr's lines are written: text, or one JSON object per line (level, target,
    /// fields.message, span fields) for log pipelines; with json, progress is plain lines.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: crate::notice::LogFormat,

    /// `run` and `embed`: write the run's counters to FILE in Prometheus' text format, rewritten
    /// atomically every few seconds and at the end (node_exporter's textfile collector reads it);
    /// overrides the job's metrics.path.
    #[arg(long, global = true, value_name = "FILE")]
    pub metrics: Option<String>,

    /// Print nothing but errors (no summary, no progress).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// `--threads`: a range message rather than a parse error for -1 or 100000.
fn parse_threads(s: &str) -> Result<usize, String> {
    parse_bounded(s, "0 (all cores) or a number of threads", "threads")
}

/// `--workers`: as `--threads`, 0 meaning auto.
fn parse_workers(s: &str) -> Result<usize, String> {
    parse_bounded(s, "0 (auto) or a number of sessions", "sessions")
}

/// A count from 0 to [`MAX_THREADS`](crate::embed::session::MAX_THREADS).
fn parse_bounded(s: &str, range: &str, unit: &str) -> Result<usize, String> {
    let max = crate::embed::session::MAX_THREADS;
    match s.trim().parse::<i64>() {
        Ok(n) if (0..=max as i64).contains(&n) => Ok(n as usize),
        Ok(n) => Err(format!("must be {range} up to {max}, found {n}")),
        Err(_) => Err(format!("expected a whole number of {unit}, found '{s}'")),
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a job file (TOML; see README "Job file reference").
    Run(RunOpts),
    /// Embed a file ad hoc: every job option has a flag.
    Embed(Box<EmbedOpts>),
    /// Check job files without running them: fields, input columns, model folder, outputs.
    Validate(ValidateOpts),
    /// K-means cluster labels (and c-TF-IDF topics) for any Parquet with a vector column.
    Cluster(Box<ClusterOpts>),
    /// SQL over embedded datasets: vector functions, embed('text'), semantic search.
    Sql(SqlOpts),
    /// k nearest neighbors of every row (item-item recommendations): from
    /// the table's index when it has one, else exact.
    Neighbors(NeighborsOpts),
    /// Build an approximate nearest-neighbour index (IVF) of a table's
    /// vectors, kept with the table; `neighbors` searches it.
    Index(IndexOpts),
    /// Break the lease of a Delta table whose writer is gone (another host
    /// that crashed); a dead process on this host is noticed by itself.
    Unlock(UnlockOpts),
    /// Commit the shards of a sharded run as one Delta table version.
    Commit(CommitOpts),
    /// Where each shard of a sharded run stands: done, running, missing units.
    Status(StatusOpts),
    /// What embedflow reads from a model folder: graph inputs and outputs,
    /// dim, pooling, normalisation, max length, prompts, tokenizer, sha256.
    Model(ModelOpts),
    /// One self-contained HTML report of an embedded table: lineage, a topic
    /// map (t-SNE), topics and keywords, topic similarity, sizes.
    Report(ReportOpts),
}

#[derive(Args, Debug)]
pub struct ReportOpts {
    /// The embedded table: a Parquet file, folder or glob, or a Delta table; local or s3://.
    pub table: String,
    /// Where to write the HTML file (local or s3://).
    #[arg(short, long, value_name = "FILE")]
    pub output: String,
    /// The vector column [default: the one the table's lineage names, else embedding].
    #[arg(long)]
    pub vector_column: Option<String>,
    /// The text shown when hovering a point [default: chunk_text, else the lineage's text column, else text or title].
    #[arg(long)]
    pub text_column: Option<String>,
    /// The id shown when hovering a point [default: the first column].
    #[arg(long)]
    pub id_column: Option<String>,
    /// The topics table (keywords, representative texts) [default: the one the table's lineage names].
    #[arg(long, value_name = "PATH")]
    pub topics: Option<String>,
    /// Rows drawn on the map at most (a seeded random sample of the table).
    #[arg(long, default_value_t = crate::analysis::report::DEFAULT_MAX_POINTS)]
    pub max_points: usize,
    /// Seed of the sample and the layout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The page's title [default: "embedflow report: TABLE"].
    #[arg(long)]
    pub title: Option<String>,
    /// Fail if the output exists instead of replacing it.
    #[arg(long)]
    pub no_overwrite: bool,
    /// S3-compatible endpoint for s3:// paths.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long)]
    pub s3_region: Option<String>,
}

#[derive(Args, Debug)]
pub struct ModelOpts {
    /// A model folder (local or s3://), or the name of one under $EMBEDFLOW_MODELS / $EMBEDFLOW_HOME/models.
    pub model: String,
    /// Show the model with this named prompt in use.
    #[arg(long)]
    pub prompt_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct UnlockOpts {
    /// The Delta table (a folder or s3://bucket/prefix), or a job file whose output it is.
    pub table: String,
    /// Also discard the records and parts of runs that were never committed
    /// (a sharded run whose job or input changed).
    #[arg(long)]
    pub discard: bool,
}

#[derive(Args, Debug)]
pub struct CommitOpts {
    /// The job file the shards ran.
    pub job: String,
    /// Override a job field, as the shards did (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// The shard count expected (default: the run's own).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
}

#[derive(Args, Debug)]
pub struct StatusOpts {
    /// The job file the shards run.
    pub job: String,
    /// Override a job field, as the shards did (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NeighborsOpts {
    /// Input Parquet with a vector column (local or s3://).
    pub input: String,
    /// Output Parquet: id, neighbor_ids (best first), scores.
    pub output: String,
    /// Neighbors per row.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub k: u32,
    /// Find neighbors for the rows of this file instead (new items against
    /// the catalogue in INPUT); same vector column and width.
    #[arg(long, value_name = "PATH")]
    pub queries: Option<String>,
    #[arg(long, default_value = "embedding")]
    pub vector_column: String,
    /// Column naming the rows (default: the row number).
    #[arg(long)]
    pub id_column: Option<String>,
    /// cosine, or inner_product (raw dot product).
    #[arg(long, value_enum, default_value_t = Similarity::Cosine)]
    pub similarity: Similarity,
    /// Search this index (built by `embedflow index`) [default: the table's
    /// own, when it has one that fits].
    #[arg(long, value_name = "DIR", conflicts_with = "exact")]
    pub index: Option<String>,
    /// Lists an index search probes: more is slower and finds more of the
    /// exact neighbours [default: the index's, measured to reach its target recall].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "exact")]
    pub nprobe: Option<u32>,
    /// Score every pair, even where the table has an index.
    #[arg(long)]
    pub exact: bool,
    /// Fail (rather than search exactly) when the table has no index that
    /// fits it as it is now, e.g. one of an older version.
    #[arg(long, conflicts_with_all = ["exact", "index"])]
    pub require_index: bool,
    /// Fail if the output exists instead of replacing it.
    #[arg(long)]
    pub no_overwrite: bool,
}

#[derive(Args, Debug)]
pub struct IndexOpts {
    /// The table: a Parquet file, folder or glob, or a Delta table; local or s3://.
    pub table: String,
    /// Where the index goes [default: with the table: TABLE/_embedflow/index/vVERSION
    /// for a Delta table, PATH.index beside Parquet files].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<String>,
    #[arg(long, default_value = "embedding")]
    pub vector_column: String,
    /// What searches rank by: cosine, inner_product (raw dot product) or
    /// l2 (Euclidean distance, for SQL's l2_distance over rows of any length).
    #[arg(long, value_enum, default_value_t = crate::index::Metric::Cosine)]
    pub metric: crate::index::Metric,
    /// Lists (k-means centroids) [default: √rows].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub lists: Option<u32>,
    /// The recall@10 the index's default nprobe must reach, measured at
    /// build against the exact search on rows of the table.
    #[arg(long, default_value_t = 0.95)]
    pub target_recall: f64,
    /// Rows of the table the recall is measured on.
    #[arg(long, default_value_t = 1000)]
    pub recall_queries: usize,
    /// Seed of the samples and of k-means.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Build the index again even where an older one could be updated
    /// (by default an index of an earlier Delta version is updated: its
    /// rows matched by content hash, new ones put in their lists).
    #[arg(long)]
    pub rebuild: bool,
    /// Rows added and dropped by updates since the last build, as a
    /// fraction of the index, past which it is built again (its lists were
    /// trained on the table as it was).
    #[arg(long, default_value_t = crate::index::DEFAULT_REBUILD_AFTER)]
    pub rebuild_after: f64,
}

#[derive(Args, Debug)]
pub struct SqlOpts {
    /// The query; none (and no --file): an interactive prompt.
    pub query: Option<String>,
    /// A table: NAME=PATH (Parquet or CSV; file, directory, glob; local or s3://). Repeatable.
    #[arg(long = "table", value_name = "NAME=PATH")]
    pub tables: Vec<String>,
    /// Register a job's outputs (output, documents, clusters, topics tables) and use its model.
    #[arg(long)]
    pub job: Option<String>,
    /// The model embed() runs (a folder, a name under the models directory, or s3://).
    #[arg(long)]
    pub model: Option<String>,
    /// Run the statements of a file (separated by ;).
    #[arg(long, short = 'f')]
    pub file: Option<String>,
    /// table (default), csv, json, or parquet (needs --output).
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Write the result here instead of stdout (the format follows the extension unless --format).
    #[arg(long, short = 'o')]
    pub output: Option<String>,
    /// Allow statements that write (INSERT INTO, COPY … TO).
    #[arg(long)]
    pub allow_write: bool,
    /// S3-compatible endpoint for s3:// tables.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
}

#[derive(Args, Debug)]
pub struct ClusterOpts {
    /// Input Parquet (file, directory, glob; local or s3://) with a vector column.
    pub input: String,
    /// Output Parquet: the input's columns plus cluster_id, cluster_distance (and topic_*).
    pub output: String,
    /// Number of clusters.
    #[arg(long)]
    pub k: usize,
    /// The vector column (FixedSizeList<Float32> or List<Float32>).
    #[arg(long, default_value = "embedding")]
    pub vector_column: String,
    /// l2 (squared Euclidean) or cosine (spherical k-means, for normalised embeddings).
    #[arg(long, default_value = "l2")]
    pub metric: String,
    /// Lloyd iterations at most (mini-batch: passes over the training sample).
    #[arg(long, default_value_t = 100)]
    pub max_iter: usize,
    /// lloyd (exact, as scikit-learn's KMeans) or minibatch (faster on big samples, slightly worse).
    #[arg(long, default_value = "lloyd")]
    pub algorithm: String,
    /// Rows per mini-batch step.
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// Relative tolerance on the centre shift (scikit-learn's tol).
    #[arg(long, default_value_t = 1e-4)]
    pub tol: f64,
    /// Seed of the k-means++ start and the training sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Rows sampled for training (default 256·k); memory is this × dim × 4 bytes.
    #[arg(long)]
    pub train_sample: Option<usize>,
    /// Column naming rows in the clusters table (default: row number).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Write the clusters table here: cluster_id, size, centroid, nearest_ids, nearest_distances.
    #[arg(long)]
    pub clusters: Option<String>,
    /// Fail if an output exists instead of replacing it.
    #[arg(long)]
    pub no_overwrite: bool,

    /// Text column for topics: keywords per cluster by c-TF-IDF (BERTopic's).
    #[arg(long, help_heading = "Topics")]
    pub text_column: Option<String>,
    /// Write the topics table here: topic_id, label, keywords, keyword_scores, size, representative_texts.
    #[arg(long, help_heading = "Topics")]
    pub topics: Option<String>,
    /// unicode (lowercase, Unicode words) or english (BERTopic's: only A-Z a-z 0-9 kept).
    #[arg(long, default_value = "unicode", help_heading = "Topics")]
    pub preprocess: String,
    /// Drop scikit-learn's English stop words.
    #[arg(long, help_heading = "Topics")]
    pub stop_words: Option<String>,
    /// N-gram range, e.g. 1,2 (or 1 2).
    #[arg(long, value_delimiter = ',', num_args = 1..=2, default_values_t = [1, 1], help_heading = "Topics")]
    pub ngram: Vec<usize>,
    /// BM25 weighting of the idf (BERTopic's bm25_weighting).
    #[arg(long, help_heading = "Topics")]
    pub bm25_weighting: bool,
    /// Square root of the term frequency (BERTopic's reduce_frequent_words).
    #[arg(long, help_heading = "Topics")]
    pub reduce_frequent_words: bool,
    /// Keywords per topic.
    #[arg(long, default_value_t = 10, help_heading = "Topics")]
    pub top_n: usize,
    /// Zero-shot topic labels, comma-separated: a row takes the most similar when its cosine reaches --min-similarity.
    #[arg(long, value_delimiter = ',', help_heading = "Topics")]
    pub labels: Vec<String>,
    /// The model the vectors were made with (embeds the labels).
    #[arg(long, help_heading = "Topics")]
    pub model: Option<String>,
    /// Cosine a row needs to take a zero-shot label (BERTopic's default 0.7).
    #[arg(
        long,
        default_value_t = 0.7,
        allow_negative_numbers = true,
        help_heading = "Topics"
    )]
    pub min_similarity: f32,
    /// Embed the labels with this prompt of the model (e.g. query); default: none, or the model's default.
    #[arg(long, help_heading = "Topics")]
    pub label_prompt_name: Option<String>,

    /// S3-compatible endpoint for s3:// paths.
    #[arg(long, help_heading = "S3")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, help_heading = "S3")]
    pub s3_region: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunOpts {
    /// The job file.
    pub job: String,
    /// Override a job field, e.g. --set chunking.max_tokens=128 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Run shard I of N (0-based), e.g. --shard 2/8; default: from the
    /// scheduler (Slurm array, AWS Batch array, Kubernetes Indexed Job).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The shard count, where the scheduler gives an index only (Kubernetes).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
}

#[derive(Args, Debug)]
pub struct ValidateOpts {
    /// Job files to check.
    #[arg(required = true)]
    pub jobs: Vec<String>,
    /// Override a job field before checking (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EmbedOpts {
    /// Input: a Parquet or CSV file, a directory, or a glob such as 'data/*.parquet'; local or s3://bucket/prefix.
    pub input: String,
    /// Output Parquet file, local or s3://bucket/key.parquet.
    pub output: String,

    /// Model folder (local or s3://bucket/folder/), or the name of one under $EMBEDFLOW_MODELS / $EMBEDFLOW_HOME/models; with --provider, the remote model's name (e.g. text-embedding-3-small).
    #[arg(long, help_heading = "Model")]
    pub model: String,
    /// A remote model through an API: openai (OpenAI, Azure OpenAI, and OpenAI-compatible servers). The key is read from $OPENAI_API_KEY.
    #[arg(long, help_heading = "Remote model")]
    pub provider: Option<String>,
    /// The API's base URL, e.g. http://127.0.0.1:8080/v1 [default: $OPENAI_BASE_URL, else OpenAI's].
    #[arg(long, help_heading = "Remote model", requires = "provider")]
    pub base_url: Option<String>,
    /// Ask the API for vectors of this width (OpenAI's text-embedding-3 models).
    #[arg(
        long,
        allow_negative_numbers = true,
        help_heading = "Remote model",
        requires = "provider"
    )]
    pub dimensions: Option<i64>,
    /// How texts are counted and cut: cl100k_base, o200k_base, or a tokenizer.json [default: the model's encoding, else cl100k_base].
    #[arg(long, help_heading = "Remote model", requires = "provider")]
    pub tokenizer: Option<String>,
    /// Requests in flight at once [default: 4].
    #[arg(
        long,
        allow_negative_numbers = true,
        help_heading = "Remote model",
        requires = "provider"
    )]
    pub concurrency: Option<i64>,
    /// Maximum tokens per text, special tokens included (default: the model's max_seq_length).
    #[arg(long, allow_negative_numbers = true, help_heading = "Model")]
    pub max_seq_length: Option<i64>,
    /// Pooling: cls, mean, max, mean_sqrt_len, lasttoken (default: the model's 1_Pooling/config.json).
    #[arg(long, help_heading = "Model")]
    pub pooling: Option<String>,
    /// L2-normalise vectors (default: whether the model has a Normalize module).
    #[arg(long, help_heading = "Model")]
    pub normalize: Option<bool>,
    /// A prompt named in the model's config_sentence_transformers.json, e.g. query or passage.
    #[arg(long, help_heading = "Model")]
    pub prompt_name: Option<String>,
    /// A literal prompt prepended to every text, e.g. "passage: ".
    #[arg(long, help_heading = "Model")]
    pub prompt: Option<String>,

    /// Column holding the text.
    #[arg(long, help_heading = "Input")]
    pub text_column: Option<String>,
    /// Build the text from several columns, e.g. "{title}\n\n{text}".
    #[arg(long, help_heading = "Input")]
    pub text_template: Option<String>,
    /// Column of images to embed with a CLIP model's vision graph: encoded bytes (PNG, JPEG, WebP), or paths and s3:// URLs (relative paths from the input file's folder).
    #[arg(long, help_heading = "Input", conflicts_with_all = ["text_column", "text_template"])]
    pub image_column: Option<String>,
    /// Column identifying each row (always kept; named in error messages).
    #[arg(long, help_heading = "Input")]
    pub id_column: Option<String>,
    /// Input columns to copy to the output, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', help_heading = "Input")]
    pub columns: Option<Vec<String>>,
    /// SQL condition selecting input rows, e.g. "outlet = 'bbc'".
    #[arg(long, help_heading = "Input")]
    pub filter: Option<String>,
    /// Input format, when the file name does not tell: parquet, csv, or delta.
    #[arg(long, help_heading = "Input")]
    pub format: Option<String>,
    /// Delta input: the table version to read (default: the newest).
    #[arg(long, allow_negative_numbers = true, help_heading = "Input")]
    pub input_version: Option<i64>,
    /// CSV: the first line is not a header.
    #[arg(long, help_heading = "Input")]
    pub csv_no_header: bool,
    /// CSV: field delimiter (one character; \t for tab).
    #[arg(long, help_heading = "Input")]
    pub csv_delimiter: Option<String>,
    /// CSV: quote character.
    #[arg(long, help_heading = "Input")]
    pub csv_quote: Option<String>,
    /// CSV: escape character.
    #[arg(long, help_heading = "Input")]
    pub csv_escape: Option<String>,
    /// CSV: read every column as text instead of inferring types.
    #[arg(long, help_heading = "Input")]
    pub csv_no_infer: bool,

    /// Chunking: tokens (windows with overlap) or none (truncate).
    #[arg(long, help_heading = "Chunking")]
    pub chunking: Option<String>,
    /// Tokens per chunk (default: what the model takes).
    #[arg(long, allow_negative_numbers = true, help_heading = "Chunking")]
    pub max_tokens: Option<i64>,
    /// Tokens shared by consecutive chunks.
    #[arg(long, allow_negative_numbers = true, help_heading = "Chunking")]
    pub overlap: Option<i64>,
    /// Write each chunk's text in a chunk_text column (the default with chunking).
    #[arg(long, help_heading = "Chunking", conflicts_with = "no_chunk_text")]
    pub keep_chunk_text: bool,
    /// Leave out the chunk_text column.
    #[arg(long, help_heading = "Chunking")]
    pub no_chunk_text: bool,
    /// Also write one vector per document (normalised mean of its chunks) to this Parquet file.
    #[arg(long, help_heading = "Chunking")]
    pub documents: Option<String>,

    /// Padded tokens per inference batch [default: 1024 on the CPU, 16384 on CUDA].
    #[arg(long, allow_negative_numbers = true, help_heading = "Embedding")]
    pub batch_tokens: Option<i64>,
    /// Rows per inference batch at most.
    #[arg(long, allow_negative_numbers = true, help_heading = "Embedding")]
    pub max_batch_rows: Option<i64>,
    /// Rows with null or empty text: skip (exit code 2), fail, or embed.
    #[arg(long, help_heading = "Embedding")]
    pub on_empty: Option<String>,
    /// Rows that cannot be embedded (an image that does not decode, is too large or cannot be read): fail (default) or skip (exit code 2).
    #[arg(long, help_heading = "Embedding")]
    pub on_error: Option<String>,

    /// Output compression: zstd, snappy, lz4, gzip, none.
    #[arg(long, help_heading = "Output")]
    pub compression: Option<String>,
    /// Rows per Parquet row group.
    #[arg(long, allow_negative_numbers = true, help_heading = "Output")]
    pub row_group_size: Option<i64>,
    /// parquet (one file, the default) or delta (a Delta Lake table: a folder).
    #[arg(long, help_heading = "Output")]
    pub output_format: Option<String>,
    /// Delta only: input rows per resumable unit.
    #[arg(long, allow_negative_numbers = true, help_heading = "Output")]
    pub unit_rows: Option<i64>,
    /// Name of the vector column.
    #[arg(long, help_heading = "Output")]
    pub vector_column: Option<String>,
    /// Fail if the output exists instead of replacing it.
    #[arg(long, help_heading = "Output")]
    pub no_overwrite: bool,

    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 (else AWS_ENDPOINT_URL, else AWS).
    #[arg(long, help_heading = "S3")]
    pub s3_endpoint: Option<String>,
    /// S3 region (else AWS_REGION, else us-east-1).
    #[arg(long, help_heading = "S3")]
    pub s3_region: Option<String>,
    /// Unsigned requests, for public buckets.
    #[arg(long, help_heading = "S3")]
    pub s3_anonymous: bool,

    /// Override any job field, e.g. --set chunking.overlap=16 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl EmbedOpts {
    /// The job these flags describe, as the table a job file would hold.
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        let mut put = |section: &str, key: &str, v: Option<Value>| {
            if let Some(v) = v {
                let s = t
                    .entry(section.to_string())
                    .or_insert_with(|| Value::Table(Table::new()));
                if let Value::Table(s) = s {
                    s.insert(key.to_string(), v);
                }
            }
        };
        let s = |v: &Option<String>| v.clone().map(Value::String);
        let i = |v: &Option<i64>| v.map(Value::Integer);
        let flag = |b: bool, v: bool| b.then_some(Value::Boolean(v));
        put("input", "path", Some(Value::String(self.input.clone())));
        put("input", "text_column", s(&self.text_column));
        put("input", "image_column", s(&self.image_column));
        // A shell passes "\n" through as backslash-n: read it as a newline, as TOML would.
        put(
            "input",
            "text_template",
            self.text_template
                .as_ref()
                .map(|t| Value::String(t.replace("\\n", "\n").replace("\\t", "\t"))),
        );
        put("input", "id_column", s(&self.id_column));
        put(
            "input",
            "columns",
            self.columns
                .clone()
                .map(|c| Value::Array(c.into_iter().map(Value::String).collect())),
        );
        put("input", "filter", s(&self.filter));
        put("input", "format", s(&self.format));
        put("input", "version", i(&self.input_version));
        let mut csv = Table::new();
        if self.csv_no_header {
            csv.insert("header".into(), Value::Boolean(false));
        }
        for (k, v) in [
            ("delimiter", &self.csv_delimiter),
            ("quote", &self.csv_quote),
            ("escape", &self.csv_escape),
        ] {
            if let Some(v) = v {
                csv.insert(k.into(), Value::String(v.clone()));
            }
        }
        if self.csv_no_infer {
            csv.insert("infer_types".into(), Value::Boolean(false));
        }
        if !csv.is_empty() {
            put("input", "csv", Some(Value::Table(csv)));
        }
        match &self.provider {
            Some(provider) => {
                put("model", "provider", Some(Value::String(provider.clone())));
                put("model", "name", Some(Value::String(self.model.clone())));
            }
            None => put("model", "path", Some(Value::String(self.model.clone()))),
        }
        put("model", "base_url", s(&self.base_url));
        put("model", "dimensions", i(&self.dimensions));
        put("model", "tokenizer", s(&self.tokenizer));
        put("embed", "concurrency", i(&self.concurrency));
        put("model", "max_seq_length", i(&self.max_seq_length));
        put("model", "pooling", s(&self.pooling));
        put("model", "normalize", self.normalize.map(Value::Boolean));
        put("model", "prompt_name", s(&self.prompt_name));
        put("model", "prompt", s(&self.prompt));
        put("chunking", "mode", s(&self.chunking));
        put("chunking", "max_tokens", i(&self.max_tokens));
        put("chunking", "overlap", i(&self.overlap));
        put("chunking", "keep_text", flag(self.keep_chunk_text, true));
        put("chunking", "keep_text", flag(self.no_chunk_text, false));
        put("embed", "batch_tokens", i(&self.batch_tokens));
        put("embed", "max_batch_rows", i(&self.max_batch_rows));
        put("embed", "on_empty", s(&self.on_empty));
        put("embed", "on_error", s(&self.on_error));
        put("output", "path", Some(Value::String(self.output.clone())));
        put("output", "documents_path", s(&self.documents));
        put("output", "compression", s(&self.compression));
        put("output", "row_group_size", i(&self.row_group_size));
        put("output", "format", s(&self.output_format));
        put("output", "unit_rows", i(&self.unit_rows));
        put("output", "vector_column", s(&self.vector_column));
        put("output", "overwrite", flag(self.no_overwrite, false));
        put("s3", "endpoint", s(&self.s3_endpoint));
        put("s3", "region", s(&self.s3_region));
        put("s3", "anonymous", flag(self.s3_anonymous, true));
        t
    }
}

impl ClusterOpts {
    /// The `[cluster]` and `[topics]` sections these flags stand for, read
    /// by the same rules as a job file's (`job::cluster_sections`).
    pub fn to_table(&self) -> Table {
        let int = |v: usize| Value::Integer(v as i64);
        let mut c = Table::new();
        c.insert("k".into(), int(self.k));
        c.insert("metric".into(), Value::String(self.metric.clone()));
        c.insert("max_iter".into(), int(self.max_iter));
        c.insert("tol".into(), Value::Float(self.tol));
        c.insert("seed".into(), Value::Integer(self.seed as i64));
        c.insert("algorithm".into(), Value::String(self.algorithm.clone()));
        if self.algorithm == "minibatch" {
            c.insert("batch_size".into(), int(self.batch_size));
        }
        if let Some(n) = self.train_sample {
            c.insert("train_sample".into(), int(n));
        }
        if let Some(p) = &self.clusters {
            c.insert("clusters_path".into(), Value::String(p.clone()));
        }
        let mut t = Table::new();
        t.insert("cluster".into(), Value::Table(c));
        if self.text_column.is_some() || self.topics.is_some() || !self.labels.is_empty() {
            let mut p = Table::new();
            p.insert("preprocess".into(), Value::String(self.preprocess.clone()));
            if let Some(w) = &self.stop_words {
                p.insert("stop_words".into(), Value::String(w.clone()));
            }
            p.insert(
                "ngram_range".into(),
                Value::Array(self.ngram.iter().map(|&n| int(n)).collect()),
            );
            p.insert("bm25_weighting".into(), Value::Boolean(self.bm25_weighting));
            p.insert(
                "reduce_frequent_words".into(),
                Value::Boolean(self.reduce_frequent_words),
            );
            p.insert("top_n".into(), int(self.top_n));
            if !self.labels.is_empty() {
                p.insert(
                    "labels".into(),
                    Value::Array(self.labels.iter().cloned().map(Value::String).collect()),
                );
            }
            p.insert(
                "min_similarity".into(),
                Value::Float(self.min_similarity as f64),
            );
            if let Some(n) = &self.label_prompt_name {
                p.insert("label_prompt_name".into(), Value::String(n.clone()));
            }
            if let Some(path) = &self.topics {
                p.insert("topics_path".into(), Value::String(path.clone()));
            }
            t.insert("topics".into(), Value::Table(p));
        }
        t
    }
}
