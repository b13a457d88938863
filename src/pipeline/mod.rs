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

mod buckets;
mod check;
mod commit;
mod fingerprint;
mod incremental;
mod output;
mod prepare;
mod shards;
mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::analysis::cluster;
use crate::analysis::{ClusterJob, ClusterSummary};
use crate::cluster::ZeroShot;
use crate::delta::DeltaTarget;
use crate::embed::{self, Device, Embedder, ModelConfig, SessionOptions};
use crate::job::JobPlan;
use crate::progress::{Counters, ProgressMode, Reporter, Summary, TableSummary};
use crate::runtime::spawn_cpu;
use crate::sink::{self, OutputKind, OutputLayout, ParquetSink, WriteOptions};
use crate::source::{self, RowFilter, SourceBatch};
use crate::{Error, Result};

use check::topics_text_column;
pub use check::{CheckedJob, check, load_model};
pub use commit::{CommitReport, commit, discard_runs, status};
use output::{Rows, hidden_sibling, lineage, write_unit};
use prepare::{PrepareStage, WorkUnit};
use table::{DoneUnits, TableRun};

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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: ProgressMode::Off,
            threads: None,
            workers: None,
            device: None,
            shard: None,
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
        plan
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
#[tracing::instrument(name = "embedding", skip_all)]
pub async fn run_embedding(mut c: CheckedJob, opts: &RunOptions) -> Result<Summary> {
    crate::cancel::check()?;
    if opts.shard.is_some() && c.plan.output.format != OutputKind::Delta {
        return Err(Error::Usage(
            "a sharded run writes a Delta table: set output.format = \"delta\" (shards of one Parquet file could not be committed as one)".into(),
        ));
    }
    let started = Instant::now();
    let plan = c.plan.clone();
    let counters = Arc::new(Counters::default());
    // Set on Ctrl-C or when the writer fails: the stages stop at their next
    // batch instead of finishing work nobody will write.
    let cancel = Arc::new(AtomicBool::new(false));
    let (src_tx, mut src_rx) = mpsc::channel::<Result<SourceBatch>>(SOURCE_QUEUE);
    let (prep_tx, mut prep_rx) = mpsc::channel::<Result<WorkUnit>>(PREPARED_QUEUE);
    let (emb_tx, mut emb_rx) = mpsc::channel::<Result<WorkUnit>>(EMBEDDED_QUEUE);

    let (model, encoder, probed) = (c.model.clone(), Arc::clone(&c.encoder), c.embedder.take());
    let sessions = std::mem::take(&mut c.sessions);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(usize, Device, String)>>();
    let (batch_tokens, max_rows) = (plan.embed.batch_tokens, plan.embed.max_batch_rows);
    let embed_counters = Arc::clone(&counters);
    let embed_cancel = Arc::clone(&cancel);
    let embed_span = tracing::info_span!("embed_stage");
    let embed_thread = std::thread::Builder::new()
        .name("embedflow-embed".into())
        .spawn(move || {
            let _span = embed_span.entered();
            // The thread that runs the sessions also builds them (taking
            // the one the check probed with for the first), and says the
            // vectors' width.
            let built =
                open_sessions(&model, &encoder, &sessions, probed).and_then(|mut sessions| {
                    let dim = embed::output_dim(&mut sessions[0], &encoder)?;
                    Ok((sessions, dim))
                });
            let (mut embedders, dim) = match built {
                Ok((s, dim)) => {
                    let first = &s[0];
                    let _ = ready_tx.send(Ok((dim, first.device(), first.provider().to_string())));
                    (s, dim)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let c = embed_counters;
            let mut rows_before = 0u64;
            while let Some(item) = prep_rx.blocking_recv() {
                let unit = item.and_then(|mut u| {
                    let t = Instant::now();
                    // Progress moves with each inference batch: the unit's
                    // rows advance in proportion to its chunks embedded.
                    let rows = u.row_chunks.len() as u64;
                    let chunks = u.encoded.len().max(1) as u64;
                    let done = std::sync::atomic::AtomicU64::new(0);
                    let progress = |n: usize, tokens: usize| {
                        let done = done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                        c.rows_embedded
                            .fetch_max(rows_before + rows * done / chunks, Ordering::Relaxed);
                        Counters::add(&c.tokens_embedded, tokens as u64);
                        !embed_cancel.load(Ordering::Relaxed) && !crate::cancel::requested()
                    };
                    let (v, d) = embed::embed_all(
                        &mut embedders,
                        &u.encoded,
                        batch_tokens,
                        max_rows,
                        &progress,
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
    // Hashing the model folder is CPU work too: off the I/O runtime, while
    // the embed thread builds its session.
    let model = c.model.clone();
    let (ready, digest) = tokio::join!(ready_rx, spawn_cpu(move || model.digest()));
    let (dim, device, provider) = ready
        .map_err(|_| Error::internal("the embed stage ended before its session was built"))??;
    let digest = digest?;
    let sha = digest.folder.clone();
    let layout = OutputLayout {
        chunk_columns: plan.chunking.enabled,
        chunk_text: plan.chunking.keep_text,
        vector_column: plan.output.vector_column.clone(),
        dim,
        content_hash: plan.output.format == OutputKind::Delta,
        vector_list: plan.output.format == OutputKind::Delta,
    };
    let write = WriteOptions {
        compression: plan.output.compression,
        row_group_size: plan.output.row_group_size,
        overwrite: plan.output.overwrite,
        metadata: lineage(&c, &digest, dim, &provider, device),
        ..WriteOptions::default()
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

    let prepare = Arc::new(PrepareStage {
        passthrough_idx: (0..c.documents_passthrough.len()).collect(),
        plan: plan.clone(),
        encoder: Arc::clone(&c.encoder),
        filter,
        max_tokens: c.max_tokens,
        overlap: c.overlap,
        counters: Arc::clone(&counters),
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
    });
    let stores = &c.stores;
    let mut output = match plan.output.format {
        OutputKind::Parquet => {
            let out =
                ParquetSink::create(stores, &plan.output.path, Arc::clone(&schema), &write).await?;
            let docs = match &plan.output.documents_path {
                Some(p) => {
                    match ParquetSink::create(stores, p, Arc::clone(&docs_schema), &write).await {
                        Ok(s) => Some(s),
                        Err(e) => {
                            out.abort().await;
                            return Err(e);
                        }
                    }
                }
                None => None,
            };
            Output::File { out, docs }
        }
        OutputKind::Delta => {
            let target = Arc::new(DeltaTarget::resolve(stores, &plan.output.path)?);
            let shard = match opts.shard.clone() {
                Some(s) => Some(shards::assign(&c.input, plan.output.unit_rows, s).await?),
                None => None,
            };
            if let Some(s) = &shard {
                c.input = shards::restrict(&c.input, s);
            }
            let run = TableRun::start(
                target,
                &c.input,
                &fingerprint::job_fingerprint(&plan, c.max_tokens, c.overlap),
                &sha,
                plan.output.unit_rows,
                Arc::clone(&schema),
                write.clone(),
                shard,
            )
            .await?;
            if run.resumed() > 0 {
                eprintln!(
                    "embedflow: resuming the interrupted run into {}: {} units already done",
                    run.display(),
                    run.resumed()
                );
            }
            Output::Table(Box::new(run))
        }
    };
    let fingerprint = fingerprint::output_fingerprint(&write.metadata, &schema);
    let mut update = None;
    let mut todo = None;
    if let Output::Table(run) = &mut output {
        // From here to the write loop, a failure gives the lease back.
        let started = async {
            let u =
                incremental::start_update(run, &c, &plan, &prepare, &fingerprint, &write.metadata)
                    .await?;
            let t = u.diff.as_ref().map(|d| Arc::clone(&d.todo));
            Ok::<_, Error>((u, t))
        }
        .await;
        match started {
            Ok((u, t)) => (update, todo) = (Some(u), t),
            Err(e) => {
                run.abandon().await;
                return Err(e);
            }
        }
    }
    let done_units = match &output {
        Output::Table(t) => t.done_units(),
        Output::File { .. } => DoneUnits::default(),
    };
    let rows = Rows {
        chunk_columns: c
            .passthrough
            .iter()
            .map(|f| c.documents_passthrough.iter().position(|d| d == f))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::internal("a chunk column is not a document column"))?,
        schema: Arc::clone(&schema),
        docs_schema,
        dim,
        vector_column: plan.output.vector_column.clone(),
    };

    tracing::info!(
        files = c.input.files.len(),
        rows = ?c.input.total_rows,
        model = %c.model.name,
        dim,
        "starting"
    );
    let total_rows = c.input.total_rows.filter(|_| plan.input.filter.is_none());
    let reporter = Reporter::start(opts.progress, Arc::clone(&counters), total_rows);

    let read_columns = c.read_columns.clone();
    let input_version = c.input.table.as_ref().map(|t| t.version);
    let mut input = c.input;
    // An incremental run reads only the files holding rows to embed.
    if let Some(d) = update.as_ref().and_then(|u| u.diff.as_ref()) {
        input.files = std::mem::take(&mut input.files)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| d.todo.touches(*i as u32))
            .map(|(_, f)| f)
            .collect();
    }
    let source_task = tokio::spawn(async move {
        source::read(&input, &read_columns, source::READ_BATCH_ROWS, src_tx).await
    });

    let prepare_cancel = Arc::clone(&cancel);
    let prepare_stage = Arc::clone(&prepare);
    let prepare_span = tracing::info_span!("prepare_stage");
    let prepare_thread = std::thread::Builder::new()
        .name("embedflow-prepare".into())
        .spawn(move || {
            let _span = prepare_span.entered();
            while let Some(item) = src_rx.blocking_recv() {
                if prepare_cancel.load(Ordering::Relaxed) || crate::cancel::requested() {
                    return;
                }
                // Units an interrupted run finished are in its parts already.
                if let Ok(sb) = &item
                    && done_units.contains(&sb.file, sb.first_row)
                {
                    continue;
                }
                let unit = item.and_then(|sb| {
                    // An incremental run embeds its new and changed rows only.
                    let mask = match todo.as_ref() {
                        Some(t) => {
                            let f = done_units.file_index(&sb.file).ok_or_else(|| {
                                Error::internal(format!("a batch of an unlisted file {}", sb.file))
                            })?;
                            Some(t.mask(f as u32, sb.first_row, sb.batch.num_rows()))
                        }
                        None => None,
                    };
                    prepare_stage.unit(sb, mask.as_deref())
                });
                let failed = unit.is_err();
                if prep_tx.blocking_send(unit).is_err() || failed {
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
            Ok(unit) => match &mut output {
                Output::File { out, docs } => write_unit(unit, &rows, out, docs.as_mut()).await,
                Output::Table(t) => t.write(stores, unit, &rows).await,
            },
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
        match output {
            Output::File { out, docs } => {
                out.abort().await;
                if let Some(d) = docs {
                    d.abort().await;
                }
            }
            Output::Table(mut t) => t.abandon().await,
        }
        return Err(e);
    }
    let mut table = None;
    match output {
        // The commit point: `commit` refuses once a stop was asked for; the
        // documents file follows the main output whatever comes after it,
        // so the pair is committed together or not at all.
        Output::File { mut out, docs } => {
            // What the run did, for the lineage (`embedflow report` shows
            // it). Counts only, no clock time: one job over one input
            // writes the same file every time.
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed).to_string();
            out.append_metadata(&[
                ("embedflow.run.rows_read".into(), load(&counters.rows_read)),
                (
                    "embedflow.run.rows_skipped".into(),
                    load(&counters.rows_skipped),
                ),
                ("embedflow.run.chunks".into(), load(&counters.chunks)),
                ("embedflow.run.tokens".into(), load(&counters.tokens)),
            ]);
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
        }
        Output::Table(t) => {
            let app = write
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                .collect();
            let mut properties = write.metadata.clone();
            properties.push((fingerprint::FINGERPRINT.into(), fingerprint.clone()));
            if let Some(v) = input_version {
                properties.push((incremental::INPUT_VERSION.into(), v.to_string()));
            }
            let target = t.target();
            let diff = update.as_ref().and_then(|u| u.diff.as_ref());
            let outcome = match &opts.shard {
                // A shard leaves its parts, keys and marker; `embedflow
                // commit` makes the version.
                Some(s) => {
                    let marker = table::ShardMarker {
                        shard: s.index,
                        count: s.count,
                        changes: diff.map(|d| d.changes.clone()),
                        schema: shards::schema_to_hex(&schema)?,
                        properties,
                        app,
                        ..Default::default()
                    };
                    let keys = diff.map(incremental::Diff::keys_path);
                    t.finish_shard(marker, keys.as_deref()).await?
                }
                None => {
                    let outcome = t.commit(&properties, app).await?;
                    if let (Some(d), Some(v)) = (diff, outcome.version)
                        && input_version.is_some()
                    {
                        incremental::save_keys(&target, d, v).await;
                    }
                    outcome
                }
            };
            written = outcome.vectors;
            let update = update.take();
            table = Some(TableSummary {
                version: outcome.version,
                shard: opts.shard.as_ref().map(|s| (s.index, s.count)),
                units: outcome.units,
                units_resumed: outcome.units_resumed,
                changes: update
                    .as_ref()
                    .and_then(|u| u.diff.as_ref())
                    .map(|d| d.changes.clone()),
                full_because: update.and_then(|u| u.full_because),
            });
        }
    }

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
        table,
        images: plan.input.image_column.is_some(),
    })
}

/// Where the rows go: one file (and its documents file), or a table. One
/// lives per run, so the file variant's size does not matter.
#[allow(clippy::large_enum_variant)]
enum Output {
    File {
        out: ParquetSink,
        docs: Option<ParquetSink>,
    },
    Table(Box<TableRun>),
}

/// The sessions a run embeds with, as the check chose them: the one it
/// probed with first, the others opened at once, each on its own thread.
fn open_sessions(
    model: &ModelConfig,
    encoder: &embed::TextEncoder,
    sessions: &[SessionOptions],
    probed: Option<Embedder>,
) -> Result<Vec<Embedder>> {
    if sessions.is_empty() {
        return Err(Error::internal("the check chose no session to embed with"));
    }
    tracing::info!(
        sessions = sessions.len(),
        threads = ?sessions.iter().map(|s| s.threads).collect::<Vec<_>>(),
        "opening the embedding sessions"
    );
    let skip = usize::from(probed.is_some());
    let opened: Vec<Result<Embedder>> = std::thread::scope(|s| {
        let handles: Vec<_> = sessions[skip..]
            .iter()
            .map(|&o| s.spawn(move || Embedder::new(model, encoder, o)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    probed.map(Ok).into_iter().chain(opened).collect()
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
