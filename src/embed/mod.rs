//! Embedding: the model folder, its tokenizer, the ONNX Runtime session, and
//! batching by token budget.

pub mod batch;
pub mod image;
pub mod model;
pub mod pool;
pub mod remote;
pub mod session;
pub mod tokenize;

pub use model::{ModelConfig, ModelOptions};
pub use pool::{Pooling, WEIGHTEDMEAN_REFUSED};
pub use session::{Device, Embedder, SessionOptions};
pub use tokenize::{Encoded, TextEncoder};

use rayon::prelude::*;

use crate::Result;

/// Embeds `rows` in token-budget batches, longest first, and returns the
/// vectors in the rows' own order (rows × dim). `progress` is called after
/// each inference batch with its rows and tokens; returning false stops the
/// work with [`Error::Interrupted`](crate::Error::Interrupted).
pub fn embed_all(
    embedder: &mut Embedder,
    rows: &[Encoded],
    batch_tokens: usize,
    max_rows: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<(Vec<f32>, usize)> {
    let lengths: Vec<usize> = rows.iter().map(Encoded::len).collect();
    let plan = batch::plan(&lengths, batch_tokens, max_rows);
    run_plan(embedder, rows, &plan, progress)
}

/// Runs the given batches (row indices) and scatters the vectors back into
/// row order. Returns the vectors and their width.
pub fn run_plan(
    embedder: &mut Embedder,
    rows: &[Encoded],
    plan: &[Vec<usize>],
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<(Vec<f32>, usize)> {
    let mut out: Vec<f32> = Vec::new();
    let mut dim = embedder.dim().unwrap_or(0);
    for b in plan {
        let batch: Vec<&Encoded> = b.iter().map(|&i| &rows[i]).collect();
        let v = embedder.embed(&batch)?;
        let d = v.len() / b.len();
        if out.is_empty() {
            dim = d;
            out = vec![0f32; rows.len() * dim];
        }
        for (k, &i) in b.iter().enumerate() {
            out[i * dim..(i + 1) * dim].copy_from_slice(&v[k * dim..(k + 1) * dim]);
        }
        if !progress(b.len(), batch.iter().map(|r| r.len()).sum()) {
            return Err(crate::Error::Interrupted);
        }
    }
    Ok((out, dim))
}

/// Embeds plain strings with a model folder, outside any job: used by tests,
/// benchmarks and zero-shot labels. Returns rows × dim vectors.
pub fn embed_texts(
    model: &ModelConfig,
    texts: &[&str],
    exec: SessionOptions,
) -> Result<(Vec<f32>, usize)> {
    let encoder = TextEncoder::new(model)?;
    let budget = batch::default_batch_tokens(exec.device);
    let mut embedder = Embedder::new(model, &encoder, exec)?;
    let encoded: Vec<Encoded> = texts
        .par_iter()
        .map(|t| encoder.encode(t))
        .collect::<Result<_>>()?;
    embed_all(
        &mut embedder,
        &encoded,
        budget,
        batch::DEFAULT_MAX_BATCH_ROWS,
        &mut |_, _| true,
    )
}

/// The width of the model's vectors: from the graph's output shape, or by
/// embedding one empty text when the graph leaves it dynamic.
pub fn output_dim(embedder: &mut Embedder, encoder: &TextEncoder) -> Result<usize> {
    if let Some(d) = embedder.dim() {
        return Ok(d);
    }
    let blank = match embedder.image_size() {
        Some((h, w)) => Encoded::image(vec![0; 3 * h * w]),
        None => encoder.encode("")?,
    };
    Ok(embed_all(embedder, &[blank], 1, 1, &mut |_, _| true)?.1)
}
