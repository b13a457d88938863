//! Checking a job before any row is read: input, model, chunk window,
//! outputs.

use std::sync::Arc;

use arrow::datatypes::FieldRef;

use crate::chunk;
use crate::delta::DeltaTarget;
use crate::embed::api::ApiBackend;
use crate::embed::{
    self, Device, EmbedBackend, Embedder, ModelConfig, ModelOptions, SessionOptions, TextEncoder,
};
use crate::job::JobPlan;
use crate::runtime::spawn_cpu;
use crate::sink::{self, OutputKind, ParquetSink, UpdateMode};
use crate::source::{self, RowFilter};
use crate::store::{self, Stores};
use crate::{Error, Result};

/// A job checked against its input, model and outputs.
pub struct CheckedJob {
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
    /// The sessions a run opens ([`embed::session::worker_threads`] for the
    /// plan's device, threads and workers), chosen here once.
    pub sessions: Vec<SessionOptions>,
    /// The first of them, which the check probed the graph with; [`run`]
    /// takes it rather than loading the model a second time.
    pub embedder: Option<Box<dyn EmbedBackend>>,
}

/// The model folder, downloaded into the cache first when it lives on an
/// object store.
pub async fn load_model(stores: &Stores, overrides: &ModelOptions) -> Result<ModelConfig> {
    if overrides.api.is_some() || !store::is_remote(&overrides.path) {
        let o = overrides.clone();
        return spawn_cpu(move || ModelConfig::load(&o)).await;
    }
    let dir = embed::remote::fetch(stores, &overrides.path).await?;
    let local = ModelOptions {
        path: dir.to_string_lossy().into_owned(),
        ..overrides.clone()
    };
    spawn_cpu(move || ModelConfig::load(&local)).await
}

/// Checks what can be checked without running: the input exists and has the
/// columns, the model folder is complete, the chunk window fits the model,
/// the outputs can be written. Every problem found is reported at once.
///
/// First the facts (input, model, tokenizer, a probed session), each load
/// saying its own problem; then the named checks over them; then the
/// checked job, if nothing was found.
#[tracing::instrument(name = "check", skip_all, fields(job = %plan.origin))]
pub async fn check(plan: JobPlan) -> Result<CheckedJob> {
    check_with(plan, Probe::Deferred).await
}

/// When a remote model is asked for its width: at once, or (an
/// incremental run into a table of its vectors) only before the first row
/// the run embeds, so that an unchanged rerun sends no request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    Deferred,
    First,
}

/// [`check`], with the remote model probed as `probe` says.
pub(super) async fn check_with(plan: JobPlan, probe: Probe) -> Result<CheckedJob> {
    let stores = Arc::new(Stores::new(plan.s3.clone()));
    let mut errors: Vec<Error> = Vec::new();
    let f = Facts::load(&plan, &stores, probe, &mut errors).await;
    errors.extend(check_outputs(&plan, &stores, f.input.as_ref()).await);
    let columns = f
        .input
        .as_ref()
        .map(|input| Columns::of(&plan, input, &mut errors))
        .unwrap_or_default();
    let documents_passthrough = columns.passthrough;
    let passthrough = chunk_passthrough(&plan, &documents_passthrough);
    errors.extend(check_topics(&plan, &f, &passthrough));
    errors.extend(check_cluster_k(&plan, f.input.as_ref()));
    let window = f
        .encoder
        .as_ref()
        .map(|enc| chunk_window(&plan, enc, &mut errors));
    match (errors.len(), f.input, f.model, f.encoder, window) {
        (0, Some(input), Some(model), Some(encoder), Some((max_tokens, overlap))) => {
            Ok(CheckedJob {
                plan,
                stores,
                input,
                model,
                encoder,
                read_columns: columns.read,
                documents_passthrough,
                passthrough,
                max_tokens,
                overlap,
                sessions: f.sessions,
                embedder: f.embedder,
            })
        }
        (1, ..) => Err(errors.remove(0)),
        (0, ..) => Err(Error::internal("check failed without an error")),
        _ => Err(Error::Job {
            origin: plan.origin.clone(),
            problems: errors.iter().map(|e| e.to_string()).collect(),
        }),
    }
}

/// What the checks look at, each loaded once; `None` where it could not be
/// (its problem is among the errors).
struct Facts {
    input: Option<source::Input>,
    model: Option<ModelConfig>,
    encoder: Option<Arc<TextEncoder>>,
    /// The sessions the run opens, and the first, probed.
    sessions: Vec<SessionOptions>,
    embedder: Option<Box<dyn EmbedBackend>>,
}

impl Facts {
    async fn load(plan: &JobPlan, stores: &Stores, when: Probe, errors: &mut Vec<Error>) -> Facts {
        let input = keep(errors, open_input(plan, stores).await);
        let model = keep(errors, load_model(stores, &plan.model).await);
        let encoder = match &model {
            Some(m) => {
                let m = m.clone();
                let enc = spawn_cpu(move || TextEncoder::new(&m)).await;
                keep(errors, enc.map(Arc::new))
            }
            None => None,
        };
        let build = keep(errors, check_build(plan.embed.device));
        let (mut sessions, mut embedder) = (Vec::new(), None);
        if let (Some(()), Some(m), Some(enc)) = (build, &model, &encoder) {
            sessions = session_options(plan, m);
            let assumed = match when {
                Probe::Deferred => table_vectors(plan, stores, m).await,
                Probe::First => None,
            };
            embedder = keep(errors, probe(m, enc, sessions[0], assumed).await);
        }
        Facts {
            input,
            model,
            encoder,
            sessions,
            embedder,
        }
    }
}

/// The value, or `None` with its problem kept.
fn keep<T>(errors: &mut Vec<Error>, r: Result<T>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// The input: a Delta table (at its version), or files.
async fn open_input(plan: &JobPlan, stores: &Stores) -> Result<source::Input> {
    let i = &plan.input;
    if i.delta {
        source::open_table(stores, &i.path, i.version).await
    } else {
        source::open(stores, &i.path, i.format, &i.csv).await
    }
}

/// A CUDA job needs the CUDA build of ONNX Runtime.
fn check_build(device: Device) -> Result<()> {
    match device {
        Device::Cuda(_) => embed::session::check_build(embed::session::Build::Cuda),
        Device::Cpu => Ok(()),
    }
}

/// The sessions a run opens, for the plan's device, threads and workers.
fn session_options(plan: &JobPlan, m: &ModelConfig) -> Vec<SessionOptions> {
    let e = &plan.embed;
    if let Some(api) = &m.api {
        // One request thread per request in flight.
        let one = SessionOptions {
            device: Device::Cpu,
            threads: 1,
        };
        return vec![one; api.pacing.concurrency.max(1)];
    }
    embed::session::worker_threads(e.device, e.threads, e.workers, m.graph_bytes())
        .into_iter()
        .map(|threads| SessionOptions {
            device: e.device,
            threads,
        })
        .collect()
}

/// The graph against the tokenizer, on the job's device and threads (a
/// process loads one build of ONNX Runtime, CPU or CUDA): the session is
/// the one the run will use.
async fn probe(
    m: &ModelConfig,
    enc: &Arc<TextEncoder>,
    exec: SessionOptions,
    assumed: Option<(usize, String)>,
) -> Result<Box<dyn EmbedBackend>> {
    let (m, enc) = (m.clone(), Arc::clone(enc));
    if m.api.is_some() {
        // One small request: the key, URL, model and dimensions checked
        // before any row is read (or, `assumed`, before the first row
        // embedded).
        return spawn_cpu(move || {
            let assumed = assumed.as_ref().map(|(d, s)| (*d, s.as_str()));
            Ok(Box::new(ApiBackend::open(&m, assumed)?) as Box<dyn EmbedBackend>)
        })
        .await;
    }
    spawn_cpu(move || {
        let mut e = Embedder::new(&m, &enc, exec)?;
        e.probe(&m.dir, &enc)?;
        Ok(Box::new(e) as Box<dyn EmbedBackend>)
    })
    .await
}

/// The width and server model string of the vectors in the job's table,
/// for an incremental run of a remote model that wrote them with the
/// job's settings (provider, host, model, dimensions, tokenizer).
async fn table_vectors(
    plan: &JobPlan,
    stores: &Stores,
    m: &ModelConfig,
) -> Option<(usize, String)> {
    let api = m.api.as_ref()?;
    let o = &plan.output;
    if o.format != OutputKind::Delta || o.mode != UpdateMode::Incremental {
        return None;
    }
    let state = DeltaTarget::resolve(stores, &o.path)
        .ok()?
        .current()
        .await
        .ok()??;
    let props = state.properties();
    let name = ("embedflow.model", m.name.clone());
    let same = api
        .lineage(None)
        .into_iter()
        .filter(|(k, _)| *k != "embedflow.api_server_model")
        .chain([name])
        .all(|(k, v)| props.get(k) == Some(&v));
    let dim = props.get("embedflow.dim")?.parse().ok()?;
    let server_model = props.get("embedflow.api_server_model")?;
    same.then(|| (dim, server_model.clone()))
}

/// The outputs can be written (and a Delta table is one embedflow may
/// write), and none is the input or another output.
async fn check_outputs(
    plan: &JobPlan,
    stores: &Stores,
    input: Option<&source::Input>,
) -> Vec<Error> {
    let o = &plan.output;
    let main = match o.format {
        OutputKind::Parquet => ParquetSink::check_target(stores, &o.path, o.overwrite)
            .await
            .map(|_| ()),
        OutputKind::Delta => {
            DeltaTarget::check(stores, &o.path, o.overwrite, o.replace_foreign).await
        }
    };
    let mut errors: Vec<Error> = main.err().into_iter().collect();
    if let Some(out) = &o.documents_path
        && let Err(e) = ParquetSink::check_target(stores, out, o.overwrite).await
    {
        errors.push(e);
    }
    errors.extend(output_clashes(plan, stores, input));
    errors
}

/// The columns a run reads and copies.
#[derive(Default)]
struct Columns {
    /// Read from the input: the copied ones, then the text's and the
    /// filter's.
    read: Vec<String>,
    /// Copied to the documents output.
    passthrough: Vec<FieldRef>,
}

impl Columns {
    /// Every column named exists, and the text (or image) column holds
    /// what the job says.
    fn of(plan: &JobPlan, input: &source::Input, errors: &mut Vec<Error>) -> Columns {
        let schema = &input.schema;
        let first = input.files[0].location.display.as_str();
        let wanted = wanted_columns(plan, schema);
        let mut passthrough = Vec::new();
        for c in &wanted {
            match schema.field_with_name(c) {
                Ok(f) => passthrough.push(Arc::new(f.clone())),
                Err(_) => errors.push(Error::missing_column(first, c, schema)),
            }
        }
        let content = match &plan.input.image_column {
            Some(col) => image_column_check(schema, first, col),
            None => plan.input.text.check(schema, first),
        };
        errors.extend(content.err());
        let mut read = wanted;
        let mut add = |cols: Vec<String>| {
            for c in cols {
                if !read.contains(&c) {
                    read.push(c);
                }
            }
        };
        add(plan.input.text.columns());
        if let Some(sql) = &plan.input.filter {
            match RowFilter::columns(sql, schema) {
                Ok(cols) => add(cols),
                Err(e) => errors.push(e),
            }
        }
        Columns { read, passthrough }
    }
}

/// The columns copied: `input.columns`, or all of them (an image job's
/// bytes left out unless listed), the id column first if not among them.
fn wanted_columns(plan: &JobPlan, schema: &arrow::datatypes::Schema) -> Vec<String> {
    let mut wanted: Vec<String> = match &plan.input.columns {
        Some(cols) => cols.clone(),
        None => schema.fields().iter().map(|f| f.name().clone()).collect(),
    };
    // An image job copies no image bytes to its output unless asked
    // (input.columns): a path column is kept, the bytes are not.
    if plan.input.columns.is_none()
        && let Some(col) = &plan.input.image_column
        && schema.field_with_name(col).is_ok_and(|f| {
            matches!(
                f.data_type(),
                arrow::datatypes::DataType::Binary
                    | arrow::datatypes::DataType::LargeBinary
                    | arrow::datatypes::DataType::BinaryView
            )
        })
    {
        wanted.retain(|c| c != col);
    }
    if let Some(id) = &plan.input.id_column
        && !wanted.contains(id)
    {
        wanted.insert(0, id.clone());
    }
    wanted
}

/// Keyword topics need their texts in the output; a label prompt must be
/// one of the model's.
fn check_topics(plan: &JobPlan, f: &Facts, passthrough: &[FieldRef]) -> Vec<Error> {
    let mut errors = Vec::new();
    if plan.topics.is_some()
        && plan.input.image_column.is_none()
        && f.input.is_some()
        && topics_text_column(plan, passthrough).is_none()
    {
        errors.push(Error::Job {
            origin: plan.origin.clone(),
            problems: vec![
                "[topics]: the texts must be in the output: set chunking.keep_text = true, or keep the text column among input.columns (with chunking.mode = \"none\")".into(),
            ],
        });
    }
    if let (Some(t), Some(m)) = (&plan.topics, &f.model)
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
    errors
}

/// k-means needs k vectors: with one vector per row (no chunking, no
/// filter) the row count of a Parquet input tells before any embedding.
fn check_cluster_k(plan: &JobPlan, input: Option<&source::Input>) -> Option<Error> {
    let (cp, rows) = (plan.cluster.as_ref()?, input?.total_rows?);
    let one_each = !plan.chunking.enabled && plan.input.filter.is_none();
    (one_each && rows < cp.kmeans.k as u64).then(|| Error::Job {
        origin: plan.origin.clone(),
        problems: vec![format!(
            "cluster.k: {} clusters need at least {} vectors, and the input has {rows} rows (one vector each with chunking.mode = \"none\"); lower cluster.k",
            cp.kmeans.k, cp.kmeans.k
        )],
    })
}

/// The chunk window (max tokens, overlap): the job's, or what the model
/// takes; it must fit the model and the overlap the window.
fn chunk_window(plan: &JobPlan, enc: &TextEncoder, errors: &mut Vec<Error>) -> (usize, usize) {
    let fits = enc.default_max_tokens();
    let max_tokens = plan.chunking.max_tokens.unwrap_or(fits);
    let overlap = plan
        .chunking
        .overlap
        .unwrap_or(chunk::DEFAULT_OVERLAP.min(max_tokens / 4));
    let problem = |text: String| Error::Job {
        origin: plan.origin.clone(),
        problems: vec![text],
    };
    if plan.chunking.enabled && overlap >= max_tokens {
        errors.push(problem(format!(
            "chunking.overlap: must be smaller than the chunk window ({max_tokens} tokens), found {overlap}"
        )));
    }
    if plan.chunking.enabled && max_tokens > fits {
        errors.push(problem(format!(
            "chunking.max_tokens: {max_tokens} is more than the model takes ({fits} = max_seq_length {} minus special and prompt tokens)",
            enc.max_seq_length()
        )));
    }
    (max_tokens, overlap)
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

/// An image column holds encoded images (binary) or paths to them (text).
fn image_column_check(schema: &arrow::datatypes::Schema, file: &str, col: &str) -> Result<()> {
    use arrow::datatypes::DataType;
    let f = schema
        .field_with_name(col)
        .map_err(|_| Error::missing_column(file, col, schema))?;
    match f.data_type() {
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View => Ok(()),
        other => Err(Error::input(
            file,
            format!(
                "input.image_column {col} is {other}; expected binary (the images' bytes) or text (their paths or s3:// URLs)"
            ),
        )),
    }
}

/// The output column holding the texts topics are made of (none in an
/// image job: its topics are zero-shot labels).
pub(super) fn topics_text_column(plan: &JobPlan, passthrough: &[FieldRef]) -> Option<String> {
    if plan.input.image_column.is_some() {
        return None;
    }
    if plan.chunking.enabled && plan.chunking.keep_text {
        return Some(sink::CHUNK_TEXT.to_string());
    }
    let col = plan.input.text.as_column()?;
    passthrough
        .iter()
        .any(|f| f.name() == col)
        .then(|| col.to_string())
}
