//! The ONNX Runtime side: loading the library once per process, opening a
//! session on the model graph, and running one padded batch.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

use super::model::ModelConfig;
use super::pool;
use super::tokenize::{Encoded, TextEncoder};
use crate::job::Pooling;
use crate::{Error, Result};

/// The ONNX Runtime release embedflow is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// Where the ONNX Runtime shared library is looked for:
/// `$EMBEDFLOW_ORT_LIB`, else what `scripts/setup` installs under
/// `$EMBEDFLOW_HOME/onnxruntime/<version>/cpu/`.
pub fn ort_library_path() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBEDFLOW_ORT_LIB") {
        return PathBuf::from(p);
    }
    super::embedflow_home()
        .join("onnxruntime")
        .join(ORT_VERSION)
        .join("cpu")
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// Loads the ONNX Runtime library and builds the process's one environment.
pub fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = ort_library_path();
        if !path.is_file() {
            return Err(format!(
                "library not found at {}: run scripts/setup (or point EMBEDFLOW_ORT_LIB at libonnxruntime.so.{ORT_VERSION})",
                path.display()
            ));
        }
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load {}: {e}; run scripts/setup to install ONNX Runtime {ORT_VERSION}", path.display()))?;
        builder
            .with_name("embedflow")
            .build()
            .map_err(|e| format!("cannot create the environment: {e}"))
    })
    .as_ref()
    .map_err(|e| Error::Runtime(e.clone()))
}

/// How the graph's output is to be read.
#[derive(Clone, Debug)]
enum Output {
    /// [batch, seq, hidden]: pool it ourselves.
    Tokens(String),
    /// [batch, dim]: already pooled by the graph.
    Pooled(String),
}

/// One ORT session over the model, owned by one thread (no lock on the hot path).
pub struct Embedder {
    session: Session,
    output: Output,
    token_type_ids: bool,
    pooling: Pooling,
    normalize: bool,
    pool_skip: usize,
    pad_id: i64,
    dim: Option<usize>,
}

impl Embedder {
    /// Opens the model graph with `threads` intra-op threads (0 = all cores).
    pub fn new(cfg: &ModelConfig, encoder: &TextEncoder, threads: usize) -> Result<Embedder> {
        let env = environment()?;
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let rt = |e: ort::Error| Error::Runtime(e.to_string());
        let session = Session::builder(env)
            .map_err(rt)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| Error::Runtime(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| Error::Runtime(e.to_string()))?
            .commit_from_file(&cfg.onnx_path)
            .map_err(|e| {
                Error::model(
                    cfg.dir.display(),
                    format!("model.onnx cannot be loaded: {e}"),
                )
            })?;

        let names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        for n in &names {
            if !matches!(
                n.as_str(),
                "input_ids" | "attention_mask" | "token_type_ids"
            ) {
                return Err(Error::model(
                    cfg.dir.display(),
                    format!(
                        "model.onnx has an input '{n}'; embedflow feeds input_ids, attention_mask and token_type_ids"
                    ),
                ));
            }
        }
        for required in ["input_ids", "attention_mask"] {
            if !names.iter().any(|n| n == required) {
                return Err(Error::model(
                    cfg.dir.display(),
                    format!(
                        "model.onnx has no '{required}' input (its inputs: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        let outputs: Vec<(String, usize)> = session
            .outputs()
            .iter()
            .map(|o| {
                (
                    o.name().to_string(),
                    o.dtype().tensor_shape().map(|s| s.len()).unwrap_or(0),
                )
            })
            .collect();
        let find = |n: &str| outputs.iter().find(|(name, _)| name == n).cloned();
        let output = if let Some((n, _)) =
            find("last_hidden_state").or_else(|| find("token_embeddings"))
        {
            Output::Tokens(n)
        } else if let Some((n, _)) = find("sentence_embedding") {
            Output::Pooled(n)
        } else {
            match outputs.first() {
                Some((n, 3)) => Output::Tokens(n.clone()),
                Some((n, 2)) => Output::Pooled(n.clone()),
                _ => {
                    return Err(Error::model(
                        cfg.dir.display(),
                        format!(
                            "model.onnx has no last_hidden_state, token_embeddings or sentence_embedding output (its outputs: {})",
                            outputs
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        };
        let dim = session
            .outputs()
            .iter()
            .find(|o| {
                o.name()
                    == match &output {
                        Output::Tokens(n) | Output::Pooled(n) => n.as_str(),
                    }
            })
            .and_then(|o| o.dtype().tensor_shape().and_then(|s| s.last().copied()))
            .filter(|&d| d > 0)
            .map(|d| d as usize)
            .or(cfg.dim_hint);
        Ok(Embedder {
            session,
            output,
            token_type_ids: names.iter().any(|n| n == "token_type_ids"),
            pooling: cfg.pooling,
            normalize: cfg.normalize,
            pool_skip: encoder.pool_skip(),
            pad_id: encoder.pad_id() as i64,
            dim,
        })
    }

    /// The vector width, when the graph or the folder tells it before a run.
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// The execution provider that runs the graph (recorded in lineage).
    pub fn provider(&self) -> &'static str {
        "CPUExecutionProvider"
    }

    /// Embeds one batch of rows; returns rows × dim floats in the given order.
    pub fn embed(&mut self, rows: &[&Encoded]) -> Result<Vec<f32>> {
        let n = rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![self.pad_id; n * seq];
        let mut mask = vec![0i64; n * seq];
        let mut types = vec![0i64; if self.token_type_ids { n * seq } else { 0 }];
        for (r, row) in rows.iter().enumerate() {
            let base = r * seq;
            for (t, &id) in row.ids.iter().enumerate() {
                ids[base + t] = id as i64;
                mask[base + t] = 1;
            }
            if self.token_type_ids {
                for (t, &ty) in row.type_ids.iter().enumerate() {
                    types[base + t] = ty as i64;
                }
            }
        }
        let rt = |e: ort::Error| Error::Runtime(format!("inference failed: {e}"));
        let mut inputs: Vec<(Cow<'static, str>, SessionInputValue<'static>)> = vec![
            (
                "input_ids".into(),
                Tensor::from_array(([n, seq], ids)).map_err(rt)?.into(),
            ),
            (
                "attention_mask".into(),
                Tensor::from_array(([n, seq], mask)).map_err(rt)?.into(),
            ),
        ];
        if self.token_type_ids {
            inputs.push((
                "token_type_ids".into(),
                Tensor::from_array(([n, seq], types)).map_err(rt)?.into(),
            ));
        }
        let outputs = self.session.run(inputs).map_err(rt)?;
        let (name, pooled) = match &self.output {
            Output::Tokens(n) => (n.as_str(), false),
            Output::Pooled(n) => (n.as_str(), true),
        };
        let (shape, data) = outputs[name].try_extract_tensor::<f32>().map_err(rt)?;
        let dim = *shape.last().unwrap_or(&0) as usize;
        let mut out = vec![0f32; n * dim];
        if pooled {
            out.copy_from_slice(&data[..n * dim]);
        } else {
            if shape.len() != 3 || shape[1] as usize != seq {
                return Err(Error::Runtime(format!(
                    "output '{name}' has shape {shape:?}; expected [{n}, {seq}, hidden]"
                )));
            }
            let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
            pool::pool(
                self.pooling,
                data,
                seq,
                dim,
                &lengths,
                self.pool_skip,
                &mut out,
            );
        }
        if self.normalize {
            pool::normalize_rows(&mut out, dim);
        }
        self.dim = Some(dim);
        Ok(out)
    }
}
