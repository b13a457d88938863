//! The only module that knows every stage. It checks a job against its input
//! and model, then wires the stages with bounded channels:
//!
//! ```text
//! source (async I/O) ─▶ prepare (thread + rayon: filter, text, chunk, tokenize)
//!   ─▶ embed (thread owning the ORT session) ─▶ sink (async Parquet writer)
//! ```
//!
//! Memory is bounded by the queue capacities below times the size of one
//! unit of work (one input batch of [`source::READ_BATCH_ROWS`] rows and its
//! chunks), whatever the size of the input.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::compute::take_record_batch;
use arrow::datatypes::FieldRef;
use rayon::prelude::*;
use tokio::sync::mpsc;

use crate::chunk;
use crate::cluster::{self, ClusterJob, ClusterSummary, ZeroShot};
use crate::embed::{self, Device, Embedder, Encoded, Exec, ModelConfig, TextEncoder};
use crate::job::{JobPlan, ModelOverrides, OnEmpty};
use crate::progress::{Counters, ProgressMode, Reporter, Summary};
use crate::sink::{self, OutputLayout, ParquetSink, WriteOptions};
use crate::source::{self, RowFilter, SourceBatch};
use crate::store::{self, Stores};
use crate::{Error, Result};

/// Batches read ahead of the prepare stage.
pub const SOURCE_QUEUE: usize = 2;
/// Tokenized units waiting for the embedder (tokenization of the next unit
/// overlaps inference of the current one).
pub const PREPARED_QUEUE: usize = 2;
/// Embedded units waiting for the writer.
pub const EMBEDDED_QUEUE: usize = 2;

/// How to run (the job file says what; these say how).
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub progress: ProgressMode,
    /// Overrides the job's `embed.threads`.
    pub threads: Option<usize>,
    /// Overrides the job's `embed.device`.
    pub device: Option<Device>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: ProgressMode::Off,
            threads: None,
            device: None,
        }
    }
}

impl RunOptions {
    /// The plan with these options' overrides of its `[embed]` section
    /// written in, so that checking it checks what will run.
    pub fn apply(&self, mut plan: JobPlan) -> JobPlan {
        if let Some(d) = self.device {
            plan.embed.device = d;
        }
        if let Some(t) = self.threads {
            plan.embed.threads = t;
        }
        plan
    }

    /// Where and how a model runs outside a job: these options, or the
    /// defaults (CPU, all cores).
    pub fn exec_default(&self) -> Exec {
        Exec {
            device: self.device.unwrap_or_default(),
            threads: self.threads.unwrap_or(0),
        }
    }

    /// Where and how a plan's model runs, with these options' overrides.
    pub fn exec(&self, plan: &JobPlan) -> Exec {
        Exec {
            device: self.device.unwrap_or(plan.embed.device),
            threads: self.threads.unwrap_or(plan.embed.threads),
        }
    }
}

/// A job checked against its input, model and outputs.
pub struct Checked {
    pub plan: JobPlan,
    /// The stores every path of the job resolves through.
    pub stores: Arc<Stores>,
    pub input: source::Input,
    pub model: ModelConfig,
    pub encoder: Arc<TextEncoder>,
    /// Columns read from the input.
    pub read_columns: Vec<String>,
    /// Columns copied to the documents output (a prefix of `read_columns`).
    pub documents_passthrough: Vec<FieldRef>,
    /// Columns copied to each row of the main output: the documents' ones,
    /// less the text's own columns when chunks carry their text (see
    /// [`chunk_passthrough`]).
    pub passthrough: Vec<FieldRef>,
    pub max_tokens: usize,
    pub overlap: usize,
    /// The session the check probed the graph with, opened on the plan's
    /// device and threads; [`run`] takes it rather than loading the model
    /// a second time when its options ask for the same.
    pub embedder: Option<(Exec, Embedder)>,
}

/// The model folder, downloaded into the cache first when it lives on an
/// object store.
pub async fn load_model(stores: &Stores, overrides: &ModelOverrides) -> Result<ModelConfig> {
    if !store::is_remote(&overrides.path) {
        return ModelConfig::load(overrides);
    }
    let dir = embed::remote::fetch(stores, &overrides.path).await?;
    let local = ModelOverrides {
        path: dir.to_string_lossy().into_owned(),
        ..overrides.clone()
    };
    ModelConfig::load(&local)
}

/// Checks what can be checked without running: the input exists and has the
/// columns, the model folder is complete, the chunk window fits the model,
/// the outputs can be written. Every problem found is reported at once.
pub async fn check(plan: JobPlan) -> Result<Checked> {
    let mut errors: Vec<Error> = Vec::new();
    let stores = Arc::new(Stores::new(plan.s3.clone()));
    let input = source::open(
        &stores,
        &plan.input.path,
        plan.input.format,
        &plan.input.csv,
    )
    .await
    .map_err(|e| errors.push(e))
    .ok();
    let model = load_model(&stores, &plan.model)
        .await
        .map_err(|e| errors.push(e))
        .ok();
    let encoder = model
        .as_ref()
        .and_then(|m| TextEncoder::new(m).map_err(|e| errors.push(e)).ok())
        .map(Arc::new);
    let build_ok = match plan.embed.device {
        Device::Cuda(_) => match embed::session::check_build(embed::session::Build::Cuda) {
            Ok(()) => true,
            Err(e) => {
                errors.push(e);
                false
            }
        },
        Device::Cpu => true,
    };
    // The graph against the tokenizer, on the job's device and threads (a
    // process loads one build of ONNX Runtime, CPU or CUDA): the session is
    // the one the run will use.
    let mut embedder = None;
    if let (true, Some(m), Some(enc)) = (build_ok, &model, &encoder) {
        let (m, enc) = (m.clone(), Arc::clone(enc));
        let exec = Exec {
            device: plan.embed.device,
            threads: plan.embed.threads,
        };
        let probed = tokio::task::spawn_blocking(move || {
            let mut e = Embedder::new(&m, &enc, exec)?;
            e.probe(&m.dir, &enc)?;
            Ok(e)
        })
        .await
        .map_err(Error::internal)
        .and_then(|r| r);
        match probed {
            Ok(e) => embedder = Some((exec, e)),
            Err(e) => errors.push(e),
        }
    }

    for out in [Some(&plan.output.path), plan.output.documents_path.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Err(e) = ParquetSink::check_target(&stores, out, plan.output.overwrite).await {
            errors.push(e);
        }
    }
    errors.extend(output_clashes(&plan, &stores, input.as_ref()));

    let mut read_columns: Vec<String> = Vec::new();
    let mut passthrough: Vec<FieldRef> = Vec::new();
    if let Some(input) = &input {
        let schema = &input.schema;
        let first = input.files[0].location.display.as_str();
        let missing = |c: &str| {
            Error::input(
                first,
                format!(
                    "no column '{c}'; the columns are: {}",
                    source::column_list(schema)
                ),
            )
        };
        let mut wanted: Vec<String> = match &plan.input.columns {
            Some(cols) => cols.clone(),
            None => schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        if let Some(id) = &plan.input.id_column
            && !wanted.contains(id)
        {
            wanted.insert(0, id.clone());
        }
        for c in &wanted {
            match schema.field_with_name(c) {
                Ok(f) => passthrough.push(Arc::new(f.clone())),
                Err(_) => errors.push(missing(c)),
            }
        }
        if let Err(e) = plan.input.text.check(schema, first) {
            errors.push(e);
        }
        read_columns = wanted;
        for c in plan.input.text.columns() {
            if !read_columns.contains(&c) {
                read_columns.push(c);
            }
        }
        if let Some(sql) = &plan.input.filter {
            match RowFilter::columns(sql, schema) {
                Ok(cols) => {
                    for c in cols {
                        if !read_columns.contains(&c) {
                            read_columns.push(c);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }

    let documents_passthrough = passthrough;
    let passthrough = chunk_passthrough(&plan, &documents_passthrough);
    if plan.topics.is_some() && input.is_some() && topics_text_column(&plan, &passthrough).is_none()
    {
        errors.push(Error::Job {
            origin: plan.origin.clone(),
            problems: vec![
                "[topics]: the texts must be in the output: set chunking.keep_text = true, or keep the text column among input.columns (with chunking.mode = \"none\")".into(),
            ],
        });
    }
    if let (Some(t), Some(m)) = (&plan.topics, &model)
        && let Some(name) = &t.label_prompt_name
        && !m.prompts.contains_key(name)
    {
        errors.push(Error::model(
            &m.name,
            format!(
                "topics.label_prompt_name: no prompt '{name}' in config_sentence_transformers.json (it has: {})",
                m.prompts.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    // k-means needs k vectors: with one vector per row (no chunking, no
    // filter) the row count of a Parquet input tells before any embedding.
    if let (Some(cp), Some(rows)) = (&plan.cluster, input.as_ref().and_then(|i| i.total_rows))
        && !plan.chunking.enabled
        && plan.input.filter.is_none()
        && rows < cp.kmeans.k as u64
    {
        errors.push(Error::Job {
            origin: plan.origin.clone(),
            problems: vec![format!(
                "cluster.k: {} clusters need at least {} vectors, and the input has {rows} rows (one vector each with chunking.mode = \"none\"); lower cluster.k",
                cp.kmeans.k, cp.kmeans.k
            )],
        });
    }
    let mut window = None;
    if let Some(enc) = &encoder {
        let fits = enc.default_max_tokens();
        let max_tokens = plan.chunking.max_tokens.unwrap_or(fits);
        let overlap = plan
            .chunking
            .overlap
            .unwrap_or(crate::job::DEFAULT_OVERLAP.min(max_tokens / 4));
        if plan.chunking.enabled && overlap >= max_tokens {
            errors.push(Error::Job {
                origin: plan.origin.clone(),
                problems: vec![format!(
                    "chunking.overlap: must be smaller than the chunk window ({max_tokens} tokens), found {overlap}"
                )],
            });
        }
        if plan.chunking.enabled && max_tokens > fits {
            errors.push(Error::Job {
                origin: plan.origin.clone(),
                problems: vec![format!(
                    "chunking.max_tokens: {max_tokens} is more than the model takes ({fits} = max_seq_length {} minus special and prompt tokens)",
                    enc.max_seq_length()
                )],
            });
        }
        window = Some((max_tokens, overlap));
    }

    match (errors.len(), input, model, encoder, window) {
        (0, Some(input), Some(model), Some(encoder), Some((max_tokens, overlap))) => Ok(Checked {
            plan,
            stores,
            input,
            model,
            encoder,
            read_columns,
            documents_passthrough,
            passthrough,
            max_tokens,
            overlap,
            embedder,
        }),
        (1, ..) => Err(errors.remove(0)),
        (0, ..) => Err(Error::internal("check failed without an error")),
        _ => Err(Error::Job {
            origin: plan.origin.clone(),
            problems: errors.iter().map(|e| e.to_string()).collect(),
        }),
    }
}

/// Every output of the job (by the field that names it), checked against the
/// input and each other by what the paths resolve to, not how they are
/// spelled: no output may be, or later be read back as, the input, and no
/// two outputs may be one file.
fn output_clashes(plan: &JobPlan, stores: &Stores, input: Option<&source::Input>) -> Vec<Error> {
    let outputs: Vec<(&str, &str)> = [
        ("output.path", Some(&plan.output.path)),
        ("output.documents_path", plan.output.documents_path.as_ref()),
        (
            "cluster.clusters_path",
            plan.cluster.as_ref().and_then(|c| c.clusters_path.as_ref()),
        ),
        (
            "topics.topics_path",
            plan.topics.as_ref().and_then(|t| t.topics_path.as_ref()),
        ),
    ]
    .into_iter()
    .filter_map(|(field, p)| p.map(|p| (field, p.as_str())))
    .collect();
    let files = input.map(|i| i.files.as_slice()).unwrap_or_default();
    store::output_clashes(stores, &plan.input.path, files, &outputs)
        .into_iter()
        .map(|problem| Error::Job {
            origin: plan.origin.clone(),
            problems: vec![problem],
        })
        .collect()
}

/// One input batch on its way through the stages.
struct Unit {
    /// Passthrough columns of the rows that survived the filter.
    batch: RecordBatch,
    /// Per row of `batch`: how many chunks it has (0 = skipped).
    row_chunks: Vec<u32>,
    /// Per chunk: the row of `batch` it belongs to.
    chunk_row: Vec<u32>,
    chunk_index: Vec<i32>,
    chunk_start: Vec<i64>,
    chunk_end: Vec<i64>,
    chunk_text: Vec<String>,
    encoded: Vec<Encoded>,
    vectors: Vec<f32>,
}

/// What the prepare stage needs, shared with its rayon workers.
struct Prepare {
    plan: JobPlan,
    encoder: Arc<TextEncoder>,
    filter: Option<RowFilter>,
    /// Indices of the passthrough columns in the read batch.
    passthrough_idx: Vec<usize>,
    max_tokens: usize,
    overlap: usize,
    counters: Arc<Counters>,
}

/// One chunk of one row, before embedding.
struct ChunkOut {
    start: i64,
    end: i64,
    text: Option<String>,
    encoded: Encoded,
}

impl Prepare {
    fn unit(&self, sb: SourceBatch) -> Result<Unit> {
        let n = sb.batch.num_rows();
        let (batch, rows): (RecordBatch, Vec<u64>) = match &self.filter {
            Some(f) => {
                let (b, kept) = f.apply(&sb.batch)?;
                (
                    b,
                    kept.iter().map(|&k| sb.first_row + k as u64 + 1).collect(),
                )
            }
            None => (
                sb.batch,
                (0..n as u64).map(|i| sb.first_row + i + 1).collect(),
            ),
        };
        Counters::add(&self.counters.rows_read, batch.num_rows() as u64);
        let texts = self.plan.input.text.render(&batch)?;
        let ids = match &self.plan.input.id_column {
            Some(c) => batch
                .column_by_name(c)
                .and_then(|a| arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).ok()),
            None => None,
        };
        let per_row: Vec<Result<Vec<ChunkOut>>> = texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| self.row(t.as_deref(), &sb.file, rows[i], ids.as_ref(), i))
            .collect();

        let mut unit = Unit {
            batch: batch
                .project(&self.passthrough_idx)
                .map_err(Error::internal)?,
            row_chunks: Vec::with_capacity(texts.len()),
            chunk_row: Vec::new(),
            chunk_index: Vec::new(),
            chunk_start: Vec::new(),
            chunk_end: Vec::new(),
            chunk_text: Vec::new(),
            encoded: Vec::new(),
            vectors: Vec::new(),
        };
        let mut skipped = 0;
        let mut tokens = 0;
        for (r, chunks) in per_row.into_iter().enumerate() {
            let chunks = chunks?;
            if chunks.is_empty() {
                skipped += 1;
            }
            unit.row_chunks.push(chunks.len() as u32);
            for (k, c) in chunks.into_iter().enumerate() {
                tokens += c.encoded.len() as u64;
                unit.chunk_row.push(r as u32);
                unit.chunk_index.push(k as i32);
                unit.chunk_start.push(c.start);
                unit.chunk_end.push(c.end);
                if let Some(t) = c.text {
                    unit.chunk_text.push(t);
                }
                unit.encoded.push(c.encoded);
            }
        }
        Counters::add(&self.counters.rows_skipped, skipped);
        Counters::add(&self.counters.chunks, unit.encoded.len() as u64);
        Counters::add(&self.counters.tokens, tokens);
        Ok(unit)
    }

    /// A row's chunks; empty when the row is skipped.
    fn row(
        &self,
        text: Option<&str>,
        file: &str,
        row: u64,
        ids: Option<&ArrayRef>,
        i: usize,
    ) -> Result<Vec<ChunkOut>> {
        let empty = text.is_none_or(|t| t.trim().is_empty());
        if empty {
            match self.plan.embed.on_empty {
                OnEmpty::Skip => return Ok(Vec::new()),
                OnEmpty::Fail => {
                    let id = match (ids, &self.plan.input.id_column) {
                        (Some(a), Some(c)) => {
                            let s = a.as_any().downcast_ref::<StringArray>();
                            match s {
                                Some(s) if s.is_valid(i) => format!(" ({c} = {})", s.value(i)),
                                _ => format!(" ({c} is null)"),
                            }
                        }
                        _ => String::new(),
                    };
                    let what = if text.is_none() { "null" } else { "empty" };
                    return Err(Error::Data(format!(
                        "input {file}: row {row}{id}: the text ({}) is {what}, and embed.on_empty = \"fail\"; set it to \"skip\" or \"embed\" to go on",
                        self.plan.input.text_source
                    )));
                }
                OnEmpty::Embed => {}
            }
        }
        let text = text.unwrap_or("");
        let keep = self.plan.chunking.keep_text;
        if !self.plan.chunking.enabled {
            return Ok(vec![ChunkOut {
                start: 0,
                end: text.chars().count() as i64,
                text: keep.then(|| text.to_string()),
                encoded: self.encoder.encode(text)?,
            }]);
        }
        let tokens = self.encoder.chunk_tokens(text)?;
        let chunks = chunk::split(text.len(), &tokens, self.max_tokens, self.overlap);
        let bounds: Vec<usize> = chunks
            .iter()
            .flat_map(|c| [c.bytes.start, c.bytes.end])
            .collect();
        let chars = chunk::char_offsets(text, &bounds);
        chunks
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let piece = &text[c.bytes.clone()];
                Ok(ChunkOut {
                    start: chars[2 * k] as i64,
                    end: chars[2 * k + 1] as i64,
                    text: keep.then(|| piece.to_string()),
                    encoded: self.encoder.encode(piece)?,
                })
            })
            .collect()
    }
}

/// Key-value metadata recorded in every output: where the vectors came from.
fn lineage(
    c: &Checked,
    sha256: &str,
    dim: usize,
    provider: &str,
    device: Device,
) -> Vec<(String, String)> {
    let m = &c.model;
    let p = &c.plan;
    let mut kv = vec![
        ("embedflow.version", env!("CARGO_PKG_VERSION").to_string()),
        ("embedflow.model", m.name.clone()),
        ("embedflow.model_sha256", sha256.to_string()),
        ("embedflow.dim", dim.to_string()),
        ("embedflow.pooling", m.pooling.name().to_string()),
        ("embedflow.normalize", m.normalize.to_string()),
        ("embedflow.max_seq_length", m.max_seq_length.to_string()),
        ("embedflow.prompt", m.prompt.clone().unwrap_or_default()),
        ("embedflow.text", p.input.text_source.clone()),
        (
            "embedflow.chunking",
            if p.chunking.enabled { "tokens" } else { "none" }.to_string(),
        ),
        ("embedflow.vector_column", p.output.vector_column.clone()),
        ("embedflow.execution_provider", provider.to_string()),
        ("embedflow.device", device.to_string()),
        (
            "embedflow.onnxruntime",
            embed::session::ORT_VERSION.to_string(),
        ),
    ];
    if p.chunking.enabled {
        kv.push(("embedflow.chunk_max_tokens", c.max_tokens.to_string()));
        kv.push(("embedflow.chunk_overlap", c.overlap.to_string()));
    }
    if let Some(f) = &p.input.filter {
        kv.push(("embedflow.filter", f.clone()));
    }
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The columns each chunk row carries. With chunking on and `input.columns`
/// not set, the columns the text is made of are left out: every chunk would
/// repeat its whole document (a 20 MB document in 19,000 chunks is 380 GB),
/// and `chunk_text` holds each chunk's own text. The id column stays. Listed
/// in `input.columns`, a text column is repeated per chunk as asked.
fn chunk_passthrough(plan: &JobPlan, documents: &[FieldRef]) -> Vec<FieldRef> {
    if !plan.chunking.enabled || plan.input.columns.is_some() {
        return documents.to_vec();
    }
    let text = plan.input.text.columns();
    documents
        .iter()
        .filter(|f| {
            !text.contains(f.name()) || plan.input.id_column.as_deref() == Some(f.name().as_str())
        })
        .cloned()
        .collect()
}

/// The output column holding the texts topics are made of.
fn topics_text_column(plan: &JobPlan, passthrough: &[FieldRef]) -> Option<String> {
    if plan.chunking.enabled && plan.chunking.keep_text {
        return Some(sink::CHUNK_TEXT.to_string());
    }
    let col = plan.input.text.as_column()?;
    passthrough
        .iter()
        .any(|f| f.name() == col)
        .then(|| col.to_string())
}

/// Embeds zero-shot topic labels with the documents' model (and its prompt,
/// or the prompt named `prompt_name`).
pub fn zero_shot(
    model: &ModelConfig,
    labels: &[String],
    prompt_name: Option<&str>,
    min_similarity: f32,
    exec: Exec,
) -> Result<ZeroShot> {
    let mut m = model.clone();
    if let Some(name) = prompt_name {
        m.prompt = Some(m.prompts.get(name).cloned().ok_or_else(|| {
            Error::model(
                &m.name,
                format!("no prompt '{name}' in config_sentence_transformers.json"),
            )
        })?);
    }
    let texts: Vec<&str> = labels.iter().map(String::as_str).collect();
    let (vectors, _) = embed_texts(&m, &texts, exec)?;
    Ok(ZeroShot {
        labels: labels.to_vec(),
        vectors,
        min_similarity,
    })
}

/// A hidden name beside `path` for an intermediate file.
fn hidden_sibling(path: &str, what: &str) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), path),
    };
    format!("{dir}.{name}.{what}-{}.parquet", std::process::id())
}

/// Runs a checked job: the embedding pipeline, then, with `[cluster]`,
/// clusters and topics. With a cluster stage the vectors go to a hidden
/// intermediate file first, and the output appears only once it has its
/// clusters: a failure at any stage commits nothing.
pub async fn run_job(c: Checked, opts: &RunOptions) -> Result<(Summary, Option<ClusterSummary>)> {
    let Some(cp) = c.plan.cluster.clone() else {
        return Ok((run(c, opts).await?, None));
    };
    let plan = c.plan.clone();
    let stores = Arc::clone(&c.stores);
    let exec = opts.exec(&plan);
    let text_column = plan
        .topics
        .as_ref()
        .and_then(|_| topics_text_column(&plan, &c.passthrough));
    let zero_shot = match &plan.topics {
        Some(t) if !t.labels.is_empty() => {
            let model = c.model.clone();
            let (labels, name, min) = (
                t.labels.clone(),
                t.label_prompt_name.clone(),
                t.min_similarity,
            );
            Some(
                tokio::task::spawn_blocking(move || {
                    zero_shot(&model, &labels, name.as_deref(), min, exec)
                })
                .await
                .map_err(Error::internal)??,
            )
        }
        _ => None,
    };
    let staging = hidden_sibling(&plan.output.path, "embedded");
    let mut c = c;
    c.plan.output.path = staging.clone();
    c.plan.output.overwrite = true;
    let mut summary = run(c, opts).await?;
    summary.output = plan.output.path.clone();
    let job = ClusterJob {
        input: staging.clone(),
        output: plan.output.path.clone(),
        vector_column: plan.output.vector_column.clone(),
        id_column: plan.input.id_column.clone(),
        text_column,
        kmeans: cp.kmeans.clone(),
        train_sample: cp.train_sample,
        clusters_path: cp.clusters_path.clone(),
        topics_path: plan.topics.as_ref().and_then(|t| t.topics_path.clone()),
        topics: plan
            .topics
            .as_ref()
            .map(|t| t.options.clone())
            .unwrap_or_default(),
        overwrite: plan.output.overwrite,
        s3: plan.s3.clone(),
        zero_shot,
    };
    let clustered = cluster::run(&job, opts.progress != ProgressMode::Off).await;
    if let Ok(loc) = stores.resolve(&staging) {
        let _ = object_store::ObjectStoreExt::delete(loc.store.as_ref(), &loc.path).await;
    }
    // The intermediate file is ours, not the user's: name what they know.
    let clustered = clustered.map_err(|e| match e {
        Error::Input { file, message } if file == staging => Error::Job {
            origin: plan.origin.clone(),
            problems: vec![format!(
                "[cluster]: the vectors of this run: {message}; nothing was committed to {}",
                plan.output.path
            )],
        },
        other => other,
    })?;
    Ok((summary, Some(clustered)))
}

/// Runs a checked job to completion. On any error nothing is committed.
pub async fn run(mut c: Checked, opts: &RunOptions) -> Result<Summary> {
    crate::cancel::check()?;
    let started = Instant::now();
    let plan = c.plan.clone();
    let exec = opts.exec(&plan);
    let mut embedder = match c.embedder.take() {
        Some((probed, e)) if probed == exec => e,
        _ => Embedder::new(&c.model, &c.encoder, exec)?,
    };
    let dim = match embedder.dim() {
        Some(d) => d,
        None => {
            embed::embed_all(
                &mut embedder,
                &[c.encoder.encode("")?],
                1,
                1,
                &mut |_, _| true,
            )?
            .1
        }
    };
    let device = embedder.device();
    let provider = embedder.provider().to_string();
    let sha = c.model.onnx_sha256()?;
    let layout = OutputLayout {
        chunk_columns: plan.chunking.enabled,
        chunk_text: plan.chunking.keep_text,
        vector_column: plan.output.vector_column.clone(),
        dim,
    };
    let write = WriteOptions {
        compression: plan.output.compression,
        row_group_size: plan.output.row_group_size,
        overwrite: plan.output.overwrite,
        metadata: lineage(&c, &sha, dim, &provider, device),
    };
    let schema = sink::output_schema(&c.passthrough, &layout)?;
    let docs_schema = sink::documents_schema(&c.documents_passthrough, &layout)?;
    let filter = match &plan.input.filter {
        Some(sql) => {
            let read_schema = c
                .input
                .schema
                .project(
                    &c.read_columns
                        .iter()
                        .map(|n| c.input.schema.index_of(n))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(Error::internal)?,
                )
                .map_err(Error::internal)?;
            Some(RowFilter::new(sql, &read_schema)?)
        }
        None => None,
    };

    let stores = &c.stores;
    let mut out =
        ParquetSink::create(stores, &plan.output.path, Arc::clone(&schema), &write).await?;
    let mut docs = match &plan.output.documents_path {
        Some(p) => match ParquetSink::create(stores, p, Arc::clone(&docs_schema), &write).await {
            Ok(s) => Some(s),
            Err(e) => {
                out.abort().await;
                return Err(e);
            }
        },
        None => None,
    };
    let rows = Rows {
        chunk_columns: c
            .passthrough
            .iter()
            .map(|f| c.documents_passthrough.iter().position(|d| d == f))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::internal("a chunk column is not a document column"))?,
        schema,
        docs_schema,
        dim,
    };

    tracing::info!(
        files = c.input.files.len(),
        rows = ?c.input.total_rows,
        model = %c.model.name,
        dim,
        "starting"
    );
    let counters = Arc::new(Counters::default());
    // Set on Ctrl-C or when the writer fails: the stages stop at their next
    // batch instead of finishing work nobody will write.
    let cancel = Arc::new(AtomicBool::new(false));
    let total_rows = c.input.total_rows.filter(|_| plan.input.filter.is_none());
    let reporter = Reporter::start(opts.progress, Arc::clone(&counters), total_rows);

    let (src_tx, mut src_rx) = mpsc::channel::<Result<SourceBatch>>(SOURCE_QUEUE);
    let (prep_tx, mut prep_rx) = mpsc::channel::<Result<Unit>>(PREPARED_QUEUE);
    let (emb_tx, mut emb_rx) = mpsc::channel::<Result<Unit>>(EMBEDDED_QUEUE);

    let read_columns = c.read_columns.clone();
    let input = c.input;
    let source_task = tokio::spawn(async move {
        source::read(&input, &read_columns, source::READ_BATCH_ROWS, src_tx).await
    });

    let prepare = Prepare {
        passthrough_idx: (0..c.documents_passthrough.len()).collect(),
        plan: plan.clone(),
        encoder: Arc::clone(&c.encoder),
        filter,
        max_tokens: c.max_tokens,
        overlap: c.overlap,
        counters: Arc::clone(&counters),
    };
    let prepare_cancel = Arc::clone(&cancel);
    let prepare_thread = std::thread::Builder::new()
        .name("embedflow-prepare".into())
        .spawn(move || {
            while let Some(item) = src_rx.blocking_recv() {
                if prepare_cancel.load(Ordering::Relaxed) || crate::cancel::requested() {
                    return;
                }
                let unit = item.and_then(|sb| prepare.unit(sb));
                let failed = unit.is_err();
                if prep_tx.blocking_send(unit).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(Error::internal)?;

    let (batch_tokens, max_rows) = (plan.embed.batch_tokens, plan.embed.max_batch_rows);
    let embed_counters = Arc::clone(&counters);
    let embed_cancel = Arc::clone(&cancel);
    let embed_thread = std::thread::Builder::new()
        .name("embedflow-embed".into())
        .spawn(move || {
            let c = embed_counters;
            let mut rows_before = 0u64;
            while let Some(item) = prep_rx.blocking_recv() {
                let unit = item.and_then(|mut u| {
                    let t = Instant::now();
                    // Progress moves with each inference batch: the unit's
                    // rows advance in proportion to its chunks embedded.
                    let rows = u.row_chunks.len() as u64;
                    let chunks = u.encoded.len().max(1) as u64;
                    let mut done = 0u64;
                    let mut progress = |n: usize, tokens: usize| {
                        done += n as u64;
                        c.rows_embedded
                            .store(rows_before + rows * done / chunks, Ordering::Relaxed);
                        Counters::add(&c.tokens_embedded, tokens as u64);
                        !embed_cancel.load(Ordering::Relaxed) && !crate::cancel::requested()
                    };
                    let (v, d) = embed::embed_all(
                        &mut embedder,
                        &u.encoded,
                        batch_tokens,
                        max_rows,
                        &mut progress,
                    )?;
                    rows_before += rows;
                    c.rows_embedded.store(rows_before, Ordering::Relaxed);
                    if !v.is_empty() && d != dim {
                        return Err(Error::internal(format!(
                            "vector width changed from {dim} to {d}"
                        )));
                    }
                    tracing::debug!(
                        chunks = u.encoded.len(),
                        seconds = t.elapsed().as_secs_f64(),
                        "embedded a unit"
                    );
                    u.vectors = v;
                    u.encoded = Vec::new();
                    Ok(u)
                });
                let failed = unit.is_err();
                if emb_tx.blocking_send(unit).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(Error::internal)?;

    let mut written = 0u64;
    let mut docs_written = 0u64;
    let mut result: Result<()> = Ok(());
    loop {
        // The stop flag first: a signal that came during the last write is
        // seen here, before another unit is taken.
        let item = tokio::select! {
            biased;
            _ = crate::cancel::wait() => {
                result = Err(Error::Interrupted);
                break;
            }
            item = emb_rx.recv() => item,
        };
        let Some(item) = item else { break };
        let step = match item {
            Ok(unit) => write_unit(unit, &rows, &mut out, docs.as_mut()).await,
            Err(e) => Err(e),
        };
        match step {
            Ok((n, d)) => {
                written += n;
                docs_written += d;
                Counters::add(&counters.vectors_written, n);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() {
        cancel.store(true, Ordering::Relaxed);
    }
    drop(emb_rx);
    // A stage that panicked closes its channel like one that finished:
    // join them all before anything is committed.
    let joined = join_stages(source_task, prepare_thread, embed_thread).await;
    reporter.finish();
    if let Err(e) = result.and(joined) {
        out.abort().await;
        if let Some(d) = docs {
            d.abort().await;
        }
        return Err(e);
    }
    // The commit point: `commit` refuses once a stop was asked for; the
    // documents file follows the main output whatever comes after it, so
    // the pair is committed together or not at all.
    let committed = out.commit().await;
    let docs_committed = match docs {
        Some(d) if committed.is_ok() => d.commit_unconditionally().await.map(Some),
        Some(d) => {
            d.abort().await;
            Ok(None)
        }
        None => Ok(None),
    };
    committed?;
    docs_committed?;

    Ok(Summary {
        output: plan.output.path.clone(),
        documents: plan.output.documents_path.clone(),
        model: c.model.name.clone(),
        provider: match device {
            Device::Cpu => provider,
            Device::Cuda(_) => format!("{provider} ({device})"),
        },
        dim,
        rows_read: counters.rows_read.load(Ordering::Relaxed),
        rows_skipped: counters.rows_skipped.load(Ordering::Relaxed),
        chunks: counters.chunks.load(Ordering::Relaxed),
        tokens: counters.tokens.load(Ordering::Relaxed),
        vectors_written: written,
        documents_written: docs_written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn join_stages(
    source_task: tokio::task::JoinHandle<Result<()>>,
    prepare: std::thread::JoinHandle<()>,
    embed: std::thread::JoinHandle<()>,
) -> Result<()> {
    let source = source_task
        .await
        .map_err(|e| Error::internal(format!("source stage: {e}")))?;
    let threads = tokio::task::spawn_blocking(move || {
        let p = prepare
            .join()
            .map_err(|_| Error::internal("the prepare stage panicked"));
        let e = embed
            .join()
            .map_err(|_| Error::internal("the embed stage panicked"));
        p.and(e)
    })
    .await
    .map_err(Error::internal)?;
    source.and(threads)
}

/// The shapes of the output rows, built from units.
struct Rows {
    schema: arrow::datatypes::SchemaRef,
    docs_schema: arrow::datatypes::SchemaRef,
    dim: usize,
    /// Indices, among a unit's batch columns (the documents' passthrough),
    /// of the columns each chunk row carries.
    chunk_columns: Vec<usize>,
}

/// The most bytes one written batch of chunk rows holds: a long document's
/// chunks are written in slices of this size, so that a passthrough column
/// repeated per chunk never overflows Arrow's 32-bit offsets nor memory.
const SLICE_BYTES: usize = 64 << 20;

/// Builds and writes the output rows of one unit, in slices of at most
/// [`SLICE_BYTES`]. Returns (chunk rows, document rows).
async fn write_unit(
    u: Unit,
    rows: &Rows,
    out: &mut ParquetSink,
    docs: Option<&mut ParquetSink>,
) -> Result<(u64, u64)> {
    let n = u.chunk_row.len();
    if n == 0 {
        return Ok((0, 0));
    }
    let dim = rows.dim;
    let mut doc_rows = 0u64;
    if let Some(docs) = docs {
        let batch = documents_batch(&u, &rows.docs_schema, dim)?;
        doc_rows = batch.num_rows() as u64;
        docs.write(&batch).await?;
    }
    let pass = u
        .batch
        .project(&rows.chunk_columns)
        .map_err(Error::internal)?;
    let pass_bytes = row_bytes(&pass);
    let chunked = rows.schema.column_with_name(sink::CHUNK_INDEX).is_some();
    let with_text = rows.schema.column_with_name(sink::CHUNK_TEXT).is_some();
    let mut start = 0;
    while start < n {
        let mut end = start;
        let mut bytes = 0usize;
        while end < n {
            let b = pass_bytes[u.chunk_row[end] as usize]
                + u.chunk_text.get(end).map_or(0, String::len)
                + dim * 4;
            if end > start && bytes + b > SLICE_BYTES {
                break;
            }
            bytes += b;
            end += 1;
        }
        let take = UInt32Array::from(u.chunk_row[start..end].to_vec());
        let mut cols: Vec<ArrayRef> = take_record_batch(&pass, &take)
            .map_err(Error::internal)?
            .columns()
            .to_vec();
        if chunked {
            cols.push(Arc::new(Int32Array::from(
                u.chunk_index[start..end].to_vec(),
            )));
            cols.push(Arc::new(Int64Array::from(
                u.chunk_start[start..end].to_vec(),
            )));
            cols.push(Arc::new(Int64Array::from(u.chunk_end[start..end].to_vec())));
            if with_text {
                cols.push(Arc::new(StringArray::from_iter_values(
                    &u.chunk_text[start..end],
                )));
            }
        }
        cols.push(sink::vector_array(
            u.vectors[start * dim..end * dim].to_vec(),
            dim,
        )?);
        let batch =
            RecordBatch::try_new(Arc::clone(&rows.schema), cols).map_err(Error::internal)?;
        out.write(&batch).await?;
        start = end;
    }
    Ok((n as u64, doc_rows))
}

/// About how many bytes each row of `batch` holds: exact for strings and
/// binaries, the column's average otherwise.
fn row_bytes(batch: &RecordBatch) -> Vec<usize> {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    let n = batch.num_rows();
    let mut out = vec![0usize; n];
    for col in batch.columns() {
        let sizes: Box<dyn Fn(usize) -> usize> = match col.data_type() {
            DataType::Utf8 => {
                let a = col.as_string::<i32>();
                Box::new(move |i| a.value_length(i) as usize)
            }
            DataType::LargeUtf8 => {
                let a = col.as_string::<i64>();
                Box::new(move |i| a.value_length(i) as usize)
            }
            DataType::Binary => {
                let a = col.as_binary::<i32>();
                Box::new(move |i| a.value_length(i) as usize)
            }
            DataType::LargeBinary => {
                let a = col.as_binary::<i64>();
                Box::new(move |i| a.value_length(i) as usize)
            }
            _ => {
                let avg = col.get_array_memory_size() / n.max(1);
                Box::new(move |_| avg)
            }
        };
        for (i, o) in out.iter_mut().enumerate() {
            *o += sizes(i);
        }
    }
    out
}

/// One row per document of the unit that has chunks: its passthrough
/// columns, its chunk count and the normalised mean of its chunk vectors.
fn documents_batch(
    u: &Unit,
    schema: &arrow::datatypes::SchemaRef,
    dim: usize,
) -> Result<RecordBatch> {
    let kept: Vec<u32> = (0..u.row_chunks.len() as u32)
        .filter(|&r| u.row_chunks[r as usize] > 0)
        .collect();
    let counts: Vec<i32> = kept
        .iter()
        .map(|&r| u.row_chunks[r as usize] as i32)
        .collect();
    let mut means = vec![0f32; kept.len() * dim];
    // Chunks are stored row by row, so each document's chunks are contiguous.
    let mut chunk = 0usize;
    for (m, &nc) in means.chunks_exact_mut(dim).zip(&counts) {
        let nc = nc as usize;
        for v in u.vectors[chunk * dim..(chunk + nc) * dim].chunks_exact(dim) {
            for (a, &b) in m.iter_mut().zip(v) {
                *a += b;
            }
        }
        for a in m.iter_mut() {
            *a /= nc as f32;
        }
        chunk += nc;
    }
    embed::pool::normalize_rows(&mut means, dim);
    let rows = take_record_batch(&u.batch, &UInt32Array::from(kept)).map_err(Error::internal)?;
    let mut cols: Vec<ArrayRef> = rows.columns().to_vec();
    cols.push(Arc::new(Int32Array::from(counts)));
    cols.push(sink::vector_array(means, dim)?);
    RecordBatch::try_new(Arc::clone(schema), cols).map_err(Error::internal)
}

/// Embeds plain strings with a model folder, outside any job: used by tests,
/// benchmarks and (later) SQL's `embed()`. Returns rows × dim vectors.
pub fn embed_texts(model: &ModelConfig, texts: &[&str], exec: Exec) -> Result<(Vec<f32>, usize)> {
    let encoder = TextEncoder::new(model)?;
    let mut embedder = Embedder::new(model, &encoder, exec)?;
    let encoded: Vec<Encoded> = texts
        .par_iter()
        .map(|t| encoder.encode(t))
        .collect::<Result<_>>()?;
    embed::embed_all(
        &mut embedder,
        &encoded,
        crate::job::DEFAULT_BATCH_TOKENS,
        crate::job::DEFAULT_MAX_BATCH_ROWS,
        &mut |_, _| true,
    )
}
