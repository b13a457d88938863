//! `embed(text)` and `embed(text, 'query' | 'passage' | …)`: the model as a
//! SQL function. It is immutable, so DataFusion folds a call on a literal
//! into a constant when it plans the query: `embed('central bank')` runs
//! the model once per query, not once per row. A column is embedded in
//! token-budget batches, longest first, through the pipeline's own code.
//!
//! The model lives on its own thread, which builds the ONNX Runtime session
//! and owns it (TEI's backend thread); the function sends it texts through a
//! bounded channel and waits for the vectors without holding a runtime
//! worker (`block_in_place`), so the scans and writes of the query go on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, StringArray};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use rayon::prelude::*;

use crate::embed::batch::{DEFAULT_MAX_BATCH_ROWS, default_batch_tokens};
use crate::embed::{self, EmbedBackend, Encoded, ModelConfig, SessionOptions, TextEncoder};

/// Vectors of one call, row-major, and which rows are valid (not null).
type Embedded = (Vec<f32>, Vec<bool>);

/// One call's texts for the model thread, and where to send the vectors.
struct Request {
    texts: Vec<Option<String>>,
    prompt: Option<String>,
    reply: SyncSender<Result<Embedded>>,
}

/// Calls in flight to the model thread; more wait in `send`.
const REQUEST_QUEUE: usize = 4;

pub struct EmbedFn {
    model: ModelConfig,
    dim: usize,
    requests: SyncSender<Request>,
    signature: Signature,
}

impl std::fmt::Debug for EmbedFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "embed({})", self.model.name)
    }
}

impl PartialEq for EmbedFn {
    fn eq(&self, other: &Self) -> bool {
        self.model.dir == other.model.dir && self.model.prompt == other.model.prompt
    }
}

impl Eq for EmbedFn {}

impl std::hash::Hash for EmbedFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.model.dir.hash(state);
        self.model.prompt.hash(state);
    }
}

impl EmbedFn {
    /// Starts the model thread and waits (off the runtime) until its session
    /// is built and the vectors' width is known. The thread ends when the
    /// function is dropped.
    pub async fn udf(model: &ModelConfig, exec: SessionOptions) -> crate::Result<ScalarUDF> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<crate::Result<usize>>();
        let (requests, inbox) = sync_channel::<Request>(REQUEST_QUEUE);
        let thread_model = model.clone();
        let span = tracing::info_span!("sql_embed_model");
        std::thread::Builder::new()
            .name("embedflow-sql-embed".into())
            .spawn(move || {
                let _span = span.entered();
                let built = ModelThread::new(thread_model, exec);
                match built {
                    Ok(thread) => {
                        let _ = ready_tx.send(Ok(thread.dim));
                        thread.serve(inbox);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(crate::Error::internal)?;
        let dim = ready_rx.await.map_err(|_| {
            crate::Error::internal("the embed() model thread ended while loading")
        })??;
        Ok(ScalarUDF::new_from_impl(EmbedFn {
            model: model.clone(),
            dim,
            requests,
            signature: Signature::user_defined(Volatility::Immutable),
        }))
    }

    /// Sends the texts to the model thread and waits for the vectors.
    fn embed(&self, texts: Vec<Option<String>>, prompt: Option<String>) -> Result<Embedded> {
        let gone = || DataFusionError::Internal("embed(): the model thread has stopped".into());
        let (reply, answer) = sync_channel(1);
        let wait = move || -> Result<Embedded> {
            self.requests
                .send(Request {
                    texts,
                    prompt,
                    reply,
                })
                .map_err(|_| gone())?;
            answer.recv().map_err(|_| gone())?
        };
        // Waiting on a multi-threaded runtime's worker: hand its other tasks
        // to another worker first. Elsewhere (tests, a current-thread
        // runtime) plain blocking is all there is.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

/// The thread that owns the session: one request at a time, in order.
struct ModelThread {
    model: ModelConfig,
    dim: usize,
    embedder: Box<dyn EmbedBackend>,
    /// One encoder per prompt name asked for (`None`: the model's default).
    encoders: HashMap<Option<String>, Arc<TextEncoder>>,
}

impl ModelThread {
    fn new(model: ModelConfig, exec: SessionOptions) -> crate::Result<ModelThread> {
        let encoder = Arc::new(TextEncoder::new(&model)?);
        let mut embedder = embed::open(&model, &encoder, exec)?;
        let dim = embed::output_dim(embedder.as_mut(), &encoder)?;
        let mut encoders = HashMap::new();
        encoders.insert(None, encoder);
        Ok(ModelThread {
            model,
            dim,
            embedder,
            encoders,
        })
    }

    fn serve(mut self, inbox: Receiver<Request>) {
        while let Ok(r) = inbox.recv() {
            let answer = self.embed(&r.texts, r.prompt);
            // The caller may be gone (its query failed): nothing to do.
            let _ = r.reply.send(answer);
        }
    }

    fn encoder(&mut self, prompt: Option<String>) -> Result<Arc<TextEncoder>> {
        if let Some(e) = self.encoders.get(&prompt) {
            return Ok(Arc::clone(e));
        }
        let name = prompt.as_deref().unwrap_or_default();
        let Some(p) = self.model.prompts.get(name) else {
            return exec_err!(
                "embed(): the model {} has no prompt '{name}' (it has: {})",
                self.model.name,
                self.model
                    .prompts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let mut m = self.model.clone();
        m.prompt = Some(p.clone());
        let enc =
            Arc::new(TextEncoder::new(&m).map_err(|e| DataFusionError::External(Box::new(e)))?);
        self.encoders.insert(prompt, Arc::clone(&enc));
        Ok(enc)
    }

    fn embed(&mut self, texts: &[Option<String>], prompt: Option<String>) -> Result<Embedded> {
        let encoder = self.encoder(prompt)?;
        let present: Vec<&str> = texts.iter().flatten().map(String::as_str).collect();
        let encoded: Vec<Encoded> = present
            .par_iter()
            .map(|t| encoder.encode(t))
            .collect::<crate::Result<_>>()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        tracing::info!(texts = encoded.len(), "embed()");
        let budget = default_batch_tokens(self.embedder.info().device);
        let (vectors, _) = embed::embed_all(
            std::slice::from_mut(&mut self.embedder),
            &encoded,
            budget,
            DEFAULT_MAX_BATCH_ROWS,
            &|_, _| !crate::cancel::requested(),
        )
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // Nulls in, nulls out (zeros under the null bits).
        let dim = self.dim;
        let mut out = Vec::with_capacity(texts.len() * dim);
        let mut valid = Vec::with_capacity(texts.len());
        let mut next = vectors.chunks_exact(dim);
        for t in texts {
            match t {
                Some(_) => {
                    out.extend_from_slice(next.next().unwrap_or(&[]));
                    valid.push(true);
                }
                None => {
                    out.extend(std::iter::repeat_n(0.0, dim));
                    valid.push(false);
                }
            }
        }
        Ok((out, valid))
    }
}

impl ScalarUDFImpl for EmbedFn {
    fn name(&self) -> &str {
        "embed"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.is_empty() || arg_types.len() > 2 {
            return plan_err!(
                "embed: takes a text and optionally a prompt name, embed(text [, 'query']); found {} arguments",
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .map(|t| match t {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                    Ok(DataType::Utf8)
                }
                other => plan_err!("embed: expected text, found {other}"),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeList(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            self.dim as i32,
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let prompt = match args.args.get(1) {
            None => None,
            Some(ColumnarValue::Scalar(ScalarValue::Utf8(p))) => p.clone(),
            Some(_) => {
                return exec_err!("embed: the prompt name must be a constant such as 'query'");
            }
        };
        let (texts, scalar): (ArrayRef, bool) = match &args.args[0] {
            ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
            ColumnarValue::Array(a) => (Arc::clone(a), false),
        };
        let s = texts
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("embed: text not Utf8".into()))?;
        let rows: Vec<Option<String>> = (0..s.len())
            .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
            .collect();
        let (values, valid) = self.embed(rows, prompt)?;
        let list = FixedSizeListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            self.dim as i32,
            Arc::new(Float32Array::from(values)),
            Some(arrow::buffer::NullBuffer::from(valid)),
        )?;
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::FixedSizeList(Arc::new(
                list,
            ))))
        } else {
            Ok(ColumnarValue::Array(Arc::new(list)))
        }
    }
}

/// `embed()` when no model was given: a planning error that says how to give one.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NoModel {
    signature: Signature,
}

impl NoModel {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(NoModel {
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for NoModel {
    fn name(&self) -> &str {
        "embed"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("embed(): no model; pass --model (or --job, whose model is used)")
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("embed(): no model; pass --model (or --job, whose model is used)")
    }
}
