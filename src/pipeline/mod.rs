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

mod check;
mod embedding;
mod estimate;
mod finish;
mod output;
mod prepare;
mod stage;
mod table;
mod unit;
mod write;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::analysis::cluster;
use crate::analysis::{ClusterJob, ClusterSummary};
use crate::cluster::ZeroShot;
use crate::embed::digest::ModelDigest;
use crate::embed::{self, Device, ModelConfig, SessionOptions};
use crate::job::JobPlan;
use crate::progress::{Counters, ProgressMode, Reporter, Summary, TableSummary};
use crate::runtime::spawn_cpu;
use crate::sink::{self, OutputKind, OutputLayout, WriteOptions};
use crate::source::{self, RowFilter, SourceBatch};
use crate::{Error, Result};

use check::Probe;
use check::topics_text_column;
pub use check::{CheckedJob, check, load_model};
use embedding::{EmbedStage, Ready};
pub use estimate::{Estimate, estimate_all};
use output::{Rows, hidden_sibling, lineage};
use prepare::PrepareStage;
use stage::{Stop, join_stages};
pub use table::{CommitReport, commit_shards as commit, discard_runs, status};
use table::{DoneUnits, TableCommit, TableStart, UnitFilter, Update};
use unit::WorkUnit;
use write::{Output, WriteStage, Written};

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
    /// Overrides the job's `embed.workers`.
    pub workers: Option<usize>,
    /// Overrides the job's `embed.device`.
    pub device: Option<Device>,
    /// This process's shard of a sharded run (`--shard`, the scheduler).
    pub shard: Option<crate::shard::Shard>,
    /// `--metrics FILE`: overrides the job's `metrics.path`.
    pub metrics_file: Option<String>,
    /// The run's metrics, once started (see [`crate::metrics`]).
    pub metrics: Option<crate::metrics::Metrics>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: ProgressMode::Off,
            threads: None,
            workers: None,
            device: None,
            shard: None,
            metrics_file: None,
            metrics: None,
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
        if let Some(w) = self.workers {
            plan.embed.workers = w;
        }
        if let Some(path) = &self.metrics_file {
            plan.metrics.get_or_insert_default().path = Some(path.clone());
        }
        plan
    }

    /// The run's metrics (if any) count time in `name` from now on.
    pub fn stage(&self, name: &'static str) {
        if let Some(m) = &self.metrics {
            m.stage(name);
        }
    }

    /// Where and how a model runs outside a job: these options, or the
    /// defaults (CPU, all cores).
    pub fn exec_default(&self) -> SessionOptions {
        SessionOptions {
            device: self.device.unwrap_or_default(),
            threads: self.threads.unwrap_or(0),
        }
    }

    /// Where and how a plan's model runs, with these options' overrides.
    pub fn exec(&self, plan: &JobPlan) -> SessionOptions {
        SessionOptions {
            device: self.device.unwrap_or(plan.embed.device),
            threads: self.threads.unwrap_or(plan.embed.threads),
        }
    }
}

/// Embeds zero-shot topic labels with the documents' model (and its prompt,
/// or the prompt named `prompt_name`).
pub fn zero_shot(
    model: &ModelConfig,
    labels: &[String],
    prompt_name: Option<&str>,
    min_similarity: f32,
    exec: SessionOptions,
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
    let (vectors, _) = embed::embed_texts(&m, &texts, exec)?;
    Ok(ZeroShot {
        labels: labels.to_vec(),
        vectors,
        min_similarity,
    })
}

/// Runs a checked job: the embedding pipeline, then, with `[cluster]`,
/// clusters and topics. With a cluster stage the vectors go to a hidden
/// intermediate file first, and the output appears only once it has its
/// clusters: a failure at any stage commits nothing.
#[tracing::instrument(name = "run_job", skip_all, fields(job = %c.plan.origin))]
pub async fn run_job(
    c: CheckedJob,
    opts: &RunOptions,
) -> Result<(Summary, Option<ClusterSummary>)> {
    let Some(cp) = c.plan.cluster.clone() else {
        return Ok((run_embedding(c, opts).await?, None));
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
            // Labels are texts, also for an image job (CLIP's text graph).
            let model = c.model.text_side();
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
    let mut summary = run_embedding(c, opts).await?;
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
    opts.stage("cluster");
    let clustered = cluster::run_cluster(&job, opts.progress != ProgressMode::Off).await;
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
///
/// The wiring: the embed stage starts building its sessions at once; the
/// output is opened once the vectors' width is known; then read → prepare
/// → embed → write run joined by bounded channels, and the output is
/// committed only after every stage has ended well.
///
/// A remote model whose width was taken from the table (see
/// [`check::Probe`]) is asked before the first row; where its server no
/// longer answers as the table's vectors were made, the job is checked
/// again with the model probed first, and every row is embedded anew.
pub async fn run_embedding(c: CheckedJob, opts: &RunOptions) -> Result<Summary> {
    let plan = c.plan.clone();
    match embed_run(c, opts).await? {
        Ran::Done(summary) => Ok(*summary),
        Ran::ServerChanged(why) => {
            crate::note!("{why}: every row is embedded again");
            let c = check::check_with(plan, Probe::First).await?;
            match embed_run(c, opts).await? {
                Ran::Done(summary) => Ok(*summary),
                Ran::ServerChanged(why) => Err(Error::internal(why)),
            }
        }
    }
}

/// How a run ended: done, or stopped before its first row because the
/// remote model no longer answers as the table's vectors were made.
enum Ran {
    Done(Box<Summary>),
    ServerChanged(String),
}

#[tracing::instrument(name = "embedding", skip_all)]
async fn embed_run(mut c: CheckedJob, opts: &RunOptions) -> Result<Ran> {
    crate::cancel::check()?;
    refuse_sharded_file(&c.plan, opts)?;
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = Stop::default();
    let (src_tx, src_rx) = mpsc::channel::<Result<SourceBatch>>(SOURCE_QUEUE);
    let (prep_tx, prep_rx) = mpsc::channel::<Result<WorkUnit>>(PREPARED_QUEUE);
    let (emb_tx, emb_rx) = mpsc::channel::<Result<WorkUnit>>(EMBEDDED_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let embed_thread = embed_stage(&mut c, &counters, &stop).spawn(prep_rx, emb_tx, ready_tx)?;
    let (ready, digest) = sessions_ready(ready_rx, &c.model).await?;
    let rows = output_rows(&c, ready.dim)?;
    let write = write_options(&c, &digest, &ready);
    let prepare = Arc::new(prepare_stage(&c, &counters)?);
    let fingerprint = table::output_fingerprint(&write.metadata, &rows.schema);
    let (output, update) = open_output(
        &mut c,
        opts,
        &rows,
        &write,
        &prepare,
        &digest.folder,
        &fingerprint,
    )
    .await?;
    let skip = unit_filter(&output, update.as_ref());
    match before_rows(&c, &output, update.as_ref(), &ready).await {
        Ok(None) => {}
        done => {
            output.abort().await;
            return done.map(|why| Ran::ServerChanged(why.unwrap_or_default()));
        }
    }
    let reporter = watch_rows(opts, &c, &counters, &ready);
    let input_version = c.input.table.as_ref().map(|t| t.version);
    let source_task = read_stage(&c, update.as_ref(), src_tx);
    let prepare_thread = prepare.spawn(skip, stop.clone(), src_rx, prep_tx)?;
    let writer = WriteStage {
        output,
        rows: &rows,
        stores: &c.stores,
        counters: Arc::clone(&counters),
        stop,
    };
    let (output, written) = writer.run(emb_rx).await;
    let joined = join_stages(source_task, prepare_thread, embed_thread).await;
    reporter.finish();
    let mut written = match written.and_then(|w| joined.map(|()| w)) {
        Ok(w) => w,
        Err(e) => {
            output.abort().await;
            return Err(e);
        }
    };
    let table = TableCommit {
        write: &write,
        schema: &rows.schema,
        fingerprint,
        input_version,
        update,
        shard: opts.shard.as_ref(),
    };
    opts.stage("commit");
    let table = finish::commit(output, &counters, table)
        .await?
        .map(|(table, vectors)| {
            written.vectors = vectors;
            table
        });
    let summary = summary(&c, &counters, &ready, written, table, started);
    Ok(Ran::Done(Box::new(summary)))
}

/// From the first row on: the log's "starting", the progress display and
/// the run's metrics follow these counters.
fn watch_rows(
    opts: &RunOptions,
    c: &CheckedJob,
    counters: &Arc<Counters>,
    ready: &Ready,
) -> Reporter {
    tracing::info!(
        files = c.input.files.len(),
        rows = ?c.input.total_rows,
        model = %c.model.name,
        dim = ready.dim,
        "starting"
    );
    let total_rows = c.input.total_rows.filter(|_| c.plan.input.filter.is_none());
    let reporter = Reporter::start(opts.progress, Arc::clone(counters), total_rows);
    if let Some(m) = &opts.metrics {
        let input_bytes = c.input.files.iter().map(|f| f.size).sum();
        m.attach(Arc::clone(counters), ready.api.clone(), input_bytes);
        m.stage("embed");
    }
    reporter
}

/// Before the first row is read: the token budget; and a remote model
/// whose width was taken from the table is asked for it, when the run has
/// rows to embed (an unchanged rerun sends no request). `Some(why)` when
/// its server no longer answers as the table's vectors were made.
async fn before_rows(
    c: &CheckedJob,
    output: &Output,
    update: Option<&Update>,
    ready: &Ready,
) -> Result<Option<String>> {
    estimate::check_budget(c, output, update).await?;
    let Some(api) = ready.api.clone().filter(|a| a.unconfirmed()) else {
        return Ok(None);
    };
    let diff = update.and_then(|u| u.diff.as_ref());
    if diff.is_some_and(|d| d.changes.changed + d.changes.new == 0) {
        return Ok(None);
    }
    spawn_cpu(move || api.confirm()).await
}

/// What the prepare stage skips: units an interrupted run finished, and
/// in an incremental run the rows that did not change.
fn unit_filter(output: &Output, update: Option<&Update>) -> UnitFilter {
    UnitFilter {
        done: match output {
            Output::Table(t) => t.done_units(),
            Output::File { .. } => DoneUnits::default(),
        },
        todo: update
            .and_then(|u| u.diff.as_ref())
            .map(|d| Arc::clone(&d.todo)),
    }
}

/// A shard of a Parquet file could not be committed as one file.
fn refuse_sharded_file(plan: &JobPlan, opts: &RunOptions) -> Result<()> {
    if opts.shard.is_some() && plan.output.format != OutputKind::Delta {
        return Err(Error::Usage(
            "a sharded run writes a Delta table: set output.format = \"delta\" (shards of one Parquet file could not be committed as one)".into(),
        ));
    }
    Ok(())
}

/// The embed stage, with the sessions the check chose (and the one it
/// probed with).
fn embed_stage(c: &mut CheckedJob, counters: &Arc<Counters>, stop: &Stop) -> EmbedStage {
    EmbedStage {
        model: c.model.clone(),
        encoder: Arc::clone(&c.encoder),
        sessions: std::mem::take(&mut c.sessions),
        probed: c.embedder.take(),
        batch_tokens: c.plan.embed.batch_tokens,
        max_rows: c.plan.embed.max_batch_rows,
        counters: Arc::clone(counters),
        stop: stop.clone(),
    }
}

/// Waits for the embed stage's sessions, hashing the model folder
/// meanwhile: CPU work too, off the I/O runtime.
async fn sessions_ready(
    ready: oneshot::Receiver<Result<Ready>>,
    model: &ModelConfig,
) -> Result<(Ready, ModelDigest)> {
    let model = model.clone();
    let (ready, digest) = tokio::join!(ready, spawn_cpu(move || model.digest()));
    let ready = ready
        .map_err(|_| Error::internal("the embed stage ended before its session was built"))??;
    Ok((ready, digest?))
}

/// The shapes of the rows this run writes.
fn output_rows(c: &CheckedJob, dim: usize) -> Result<Rows> {
    let plan = &c.plan;
    let layout = OutputLayout {
        chunk_columns: plan.chunking.enabled,
        chunk_text: plan.chunking.keep_text,
        vector_column: plan.output.vector_column.clone(),
        dim,
        content_hash: plan.output.format == OutputKind::Delta,
        vector_list: plan.output.format == OutputKind::Delta,
    };
    Ok(Rows {
        chunk_columns: c
            .passthrough
            .iter()
            .map(|f| c.documents_passthrough.iter().position(|d| d == f))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::internal("a chunk column is not a document column"))?,
        schema: sink::output_schema(&c.passthrough, &layout)?,
        docs_schema: sink::documents_schema(&c.documents_passthrough, &layout)?,
        dim,
        vector_column: plan.output.vector_column.clone(),
    })
}

/// How the output is written, with the lineage it records.
fn write_options(c: &CheckedJob, digest: &ModelDigest, ready: &Ready) -> WriteOptions {
    WriteOptions {
        compression: c.plan.output.compression,
        row_group_size: c.plan.output.row_group_size,
        overwrite: c.plan.output.overwrite,
        metadata: lineage(
            c,
            digest,
            ready.dim,
            &ready.provider,
            ready.device,
            ready.api.as_ref().and_then(|a| a.server_model()).as_deref(),
        ),
        ..WriteOptions::default()
    }
}

/// The prepare stage, with the job's row filter over the columns read.
fn prepare_stage(c: &CheckedJob, counters: &Arc<Counters>) -> Result<PrepareStage> {
    let plan = &c.plan;
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
    Ok(PrepareStage {
        passthrough_idx: (0..c.documents_passthrough.len()).collect(),
        plan: plan.clone(),
        encoder: Arc::clone(&c.encoder),
        filter,
        max_tokens: c.max_tokens,
        overlap: c.overlap,
        counters: Arc::clone(counters),
        hash_rows: plan.output.format == OutputKind::Delta,
        images: match (&c.model.vision, c.model.images) {
            (Some(v), true) => Some(prepare::ImageStage {
                processor: v.processor.clone(),
                stores: Arc::clone(&c.stores),
                runtime: tokio::runtime::Handle::current(),
                reported: Default::default(),
            }),
            _ => None,
        },
    })
}

/// Opens the output: the files, or the table run (see [`table::open`]).
async fn open_output(
    c: &mut CheckedJob,
    opts: &RunOptions,
    rows: &Rows,
    write: &WriteOptions,
    prepare: &Arc<PrepareStage>,
    model_sha: &str,
    fingerprint: &str,
) -> Result<(Output, Option<Update>)> {
    if c.plan.output.format == OutputKind::Parquet {
        let out = Output::create_files(&c.stores, &c.plan, rows, write).await?;
        return Ok((out, None));
    }
    let start = TableStart {
        shard: opts.shard.clone(),
        schema: Arc::clone(&rows.schema),
        write,
        keys: Arc::clone(prepare) as Arc<dyn table::RowKeys>,
        model_sha,
        fingerprint,
    };
    let (run, update) = table::open(c, start).await?;
    Ok((Output::Table(Box::new(run)), Some(update)))
}

/// Starts reading the input; an incremental run reads only the files
/// holding rows to embed.
fn read_stage(
    c: &CheckedJob,
    update: Option<&Update>,
    out: mpsc::Sender<Result<SourceBatch>>,
) -> tokio::task::JoinHandle<Result<()>> {
    let mut input = c.input.clone();
    if let Some(d) = update.and_then(|u| u.diff.as_ref()) {
        input.files = std::mem::take(&mut input.files)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| d.todo.touches(*i as u32))
            .map(|(_, f)| f)
            .collect();
    }
    let read_columns = c.read_columns.clone();
    tokio::spawn(
        async move { source::read(&input, &read_columns, source::READ_BATCH_ROWS, out).await },
    )
}

/// What the run did, printed at the end.
fn summary(
    c: &CheckedJob,
    counters: &Counters,
    ready: &Ready,
    written: Written,
    table: Option<TableSummary>,
    started: Instant,
) -> Summary {
    let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    Summary {
        output: c.plan.output.path.clone(),
        documents: c.plan.output.documents_path.clone(),
        model: c.model.name.clone(),
        provider: match ready.device {
            Device::Cpu => ready.provider.clone(),
            Device::Cuda(_) => format!("{} ({})", ready.provider, ready.device),
        },
        dim: ready.dim,
        rows_read: load(&counters.rows_read),
        rows_skipped: load(&counters.rows_skipped),
        chunks: load(&counters.chunks),
        tokens: load(&counters.tokens),
        vectors_written: written.vectors,
        documents_written: written.documents,
        seconds: started.elapsed().as_secs_f64(),
        table,
        images: c.plan.input.image_column.is_some(),
        api: ready.api.as_ref().map(|a| a.summary()),
    }
}
