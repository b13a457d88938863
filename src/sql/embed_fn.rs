//! `embed(text)` and `embed(text, 'query' | 'passage' | …)`: the model as a
//! SQL function. It is immutable, so DataFusion folds a call on a literal
//! into a constant when it plans the query: `embed('central bank')` runs
//! the model once per query, not once per row. A column is embedded in
//! token-budget batches, longest first, through the pipeline's own code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, StringArray};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use rayon::prelude::*;

use crate::embed::batch::{DEFAULT_BATCH_TOKENS, DEFAULT_MAX_BATCH_ROWS};
use crate::embed::{self, Embedder, Encoded, ModelConfig, SessionOptions, TextEncoder};

/// The model behind `embed()`; one ONNX Runtime session, encoders per prompt.
struct Loaded {
    embedder: Embedder,
    encoders: HashMap<Option<String>, Arc<TextEncoder>>,
}

pub struct EmbedFn {
    model: ModelConfig,
    dim: usize,
    loaded: Mutex<Loaded>,
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
    pub fn udf(model: &ModelConfig, exec: SessionOptions) -> crate::Result<ScalarUDF> {
        let encoder = Arc::new(TextEncoder::new(model)?);
        let mut embedder = Embedder::new(model, &encoder, exec)?;
        let dim = embed::output_dim(&mut embedder, &encoder)?;
        let mut encoders = HashMap::new();
        encoders.insert(None, encoder);
        Ok(ScalarUDF::new_from_impl(EmbedFn {
            model: model.clone(),
            dim,
            loaded: Mutex::new(Loaded { embedder, encoders }),
            signature: Signature::user_defined(Volatility::Immutable),
        }))
    }

    fn embed(&self, texts: &[Option<&str>], prompt: Option<&str>) -> Result<(Vec<f32>, Vec<bool>)> {
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| DataFusionError::Internal("embed(): model lock poisoned".into()))?;
        let key = prompt.map(str::to_string);
        if !loaded.encoders.contains_key(&key) {
            let name = prompt.unwrap_or_default();
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
            let enc = TextEncoder::new(&m).map_err(|e| DataFusionError::External(Box::new(e)))?;
            loaded.encoders.insert(key.clone(), Arc::new(enc));
        }
        let encoder = Arc::clone(&loaded.encoders[&key]);
        let present: Vec<&str> = texts.iter().flatten().copied().collect();
        let encoded: Vec<Encoded> = present
            .par_iter()
            .map(|t| encoder.encode(t))
            .collect::<crate::Result<_>>()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        tracing::info!(texts = encoded.len(), "embed()");
        let (vectors, _) = embed::embed_all(
            &mut loaded.embedder,
            &encoded,
            DEFAULT_BATCH_TOKENS,
            DEFAULT_MAX_BATCH_ROWS,
            &mut |_, _| true,
        )
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // Nulls in, nulls out (zeros under the null bits).
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        let mut valid = Vec::with_capacity(texts.len());
        let mut next = vectors.chunks_exact(self.dim);
        for t in texts {
            match t {
                Some(_) => {
                    out.extend_from_slice(next.next().unwrap_or(&[]));
                    valid.push(true);
                }
                None => {
                    out.extend(std::iter::repeat_n(0.0, self.dim));
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
        let rows: Vec<Option<&str>> = (0..s.len())
            .map(|i| (!s.is_null(i)).then(|| s.value(i)))
            .collect();
        let (values, valid) = self.embed(&rows, prompt.as_deref())?;
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
