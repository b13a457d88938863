//! Checking a job before any row is read: input, model, chunk window,
//! outputs.

use std::sync::Arc;

use arrow::datatypes::FieldRef;

use crate::chunk;
use crate::delta::DeltaTarget;
use crate::embed::{
    self, Device, Embedder, ModelConfig, ModelOptions, SessionOptions, TextEncoder,
};
use crate::job::JobPlan;
use crate::runtime::spawn_cpu;
use crate::sink::{self, OutputKind, ParquetSink};
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
    pub embedder: Option<Embedder>,
}

/// The model folder, downloaded into the cache first when it lives on an
/// object store.
pub async fn load_model(stores: &Stores, overrides: &ModelOptions) -> Result<ModelConfig> {
    if !store::is_remote(&overrides.path) {
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
#[tracing::instrument(name = "check", skip_all, fields(job = %plan.origin))]
pub async fn check(plan: JobPlan) -> Result<CheckedJob> {
    let mut errors: Vec<Error> = Vec::new();
    let stores = Arc::new(Stores::new(plan.s3.clone()));
    let input = if plan.input.delta {
        source::open_table(&stores, &plan.input.path, plan.input.version).await
    } else {
        source::open(
            &stores,
            &plan.input.path,
            plan.input.format,
            &plan.input.csv,
        )
        .await
    };
    let input = input.map_err(|e| errors.push(e)).ok();
    let model = load_model(&stores, &plan.model)
        .await
        .map_err(|e| errors.push(e))
        .ok();
    let mut encoder = None;
    if let Some(m) = &model {
        let m = m.clone();
        match spawn_cpu(move || TextEncoder::new(&m)).await {
            Ok(e) => encoder = Some(Arc::new(e)),
            Err(e) => errors.push(e),
        }
    }
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
    let mut sessions = Vec::new();
    if let (true, Some(m), Some(enc)) = (build_ok, &model, &encoder) {
        let (m, enc) = (m.clone(), Arc::clone(enc));
        let threads = embed::session::worker_threads(
            plan.embed.device,
            plan.embed.threads,
            plan.embed.workers,
            m.graph_bytes(),
        );
        sessions = threads
            .into_iter()
            .map(|threads| SessionOptions {
                device: plan.embed.device,
                threads,
            })
            .collect();
        let exec = sessions[0];
        let probed = spawn_cpu(move || {
            let mut e = Embedder::new(&m, &enc, exec)?;
            e.probe(&m.dir, &enc)?;
            Ok(e)
        })
        .await;
        match probed {
            Ok(e) => embedder = Some(e),
            Err(e) => errors.push(e),
        }
    }

    let checked = match plan.output.format {
        OutputKind::Parquet => {
            ParquetSink::check_target(&stores, &plan.output.path, plan.output.overwrite)
                .await
                .map(|_| ())
        }
        OutputKind::Delta => {
            DeltaTarget::check(
                &stores,
                &plan.output.path,
                plan.output.overwrite,
                plan.output.replace_foreign,
            )
            .await
        }
    };
    if let Err(e) = checked {
        errors.push(e);
    }
    if let Some(out) = &plan.output.documents_path
        && let Err(e) = ParquetSink::check_target(&stores, out, plan.output.overwrite).await
    {
        errors.push(e);
    }
    errors.extend(output_clashes(&plan, &stores, input.as_ref()));

    let mut read_columns: Vec<String> = Vec::new();
    let mut passthrough: Vec<FieldRef> = Vec::new();
    if let Some(input) = &input {
        let schema = &input.schema;
        let first = input.files[0].location.display.as_str();
        let missing = |c: &str| Error::missing_column(first, c, schema);
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
        for c in &wanted {
            match schema.field_with_name(c) {
                Ok(f) => passthrough.push(Arc::new(f.clone())),
                Err(_) => errors.push(missing(c)),
            }
        }
        let content = match &plan.input.image_column {
            Some(col) => image_column_check(schema, first, col),
            None => plan.input.text.check(schema, first),
        };
        if let Err(e) = content {
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
    if plan.topics.is_some()
        && plan.input.image_column.is_none()
        && input.is_some()
        && topics_text_column(&plan, &passthrough).is_none()
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
            .unwrap_or(chunk::DEFAULT_OVERLAP.min(max_tokens / 4));
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
        (0, Some(input), Some(model), Some(encoder), Some((max_tokens, overlap))) => {
            Ok(CheckedJob {
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
                sessions,
                embedder,
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
