//! Embedding: the model folder, its tokenizer, the ONNX Runtime session, and
//! batching by token budget.

pub mod batch;
pub mod digest;
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

/// Called after each inference batch with its rows and tokens; returning
/// false stops the work with [`Error::Interrupted`](crate::Error::Interrupted).
/// Sessions running at once call it from their own threads.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) -> bool + Sync);

/// Embeds `rows` in token-budget batches, longest first, and returns the
/// vectors in the rows' own order (rows × dim). Each session in `embedders`
/// takes the next batch when it is free (one session runs them in turn).
pub fn embed_all(
    embedders: &mut [Embedder],
    rows: &[Encoded],
    batch_tokens: usize,
    max_rows: usize,
    progress: Progress,
) -> Result<(Vec<f32>, usize)> {
    let lengths: Vec<usize> = rows.iter().map(Encoded::len).collect();
    let plan = batch::plan(&lengths, batch_tokens, max_rows);
    run_plan(embedders, rows, &plan, progress)
}

/// Runs the given batches (row indices) on the sessions and scatters the
/// vectors back into row order. Returns the vectors and their width.
pub fn run_plan(
    embedders: &mut [Embedder],
    rows: &[Encoded],
    plan: &[Vec<usize>],
    progress: Progress,
) -> Result<(Vec<f32>, usize)> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dim_hint = embedders.first().and_then(Embedder::dim).unwrap_or(0);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // One session's loop: take the next batch until none is left or another
    // session failed. Returns (batch index, vectors) for each batch it ran.
    type Ran = Vec<(usize, Vec<f32>)>;
    let work = |e: &mut Embedder| -> Result<Ran> {
        let mut done = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(b) = plan.get(k) else { break };
            let batch: Vec<&Encoded> = b.iter().map(|&i| &rows[i]).collect();
            let v = e
                .embed(&batch)
                .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
            done.push((k, v));
            if !progress(b.len(), batch.iter().map(|r| r.len()).sum()) {
                stop.store(true, Ordering::Relaxed);
                return Err(crate::Error::Interrupted);
            }
        }
        Ok(done)
    };
    let results: Vec<Result<Ran>> = match embedders {
        [] => return Err(crate::Error::internal("no session to embed with")),
        [one] => vec![work(one)],
        many => std::thread::scope(|s| {
            let handles: Vec<_> = many.iter_mut().map(|e| s.spawn(|| work(e))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        }),
    };
    // A real failure wins over the stops it caused in the other sessions.
    let mut batches = Vec::with_capacity(plan.len());
    let mut interrupted = false;
    for r in results {
        match r {
            Ok(b) => batches.extend(b),
            Err(crate::Error::Interrupted) => interrupted = true,
            Err(e) => return Err(e),
        }
    }
    if interrupted {
        return Err(crate::Error::Interrupted);
    }
    let dim = match batches.first() {
        Some((k, v)) => v.len() / plan[*k].len(),
        None => dim_hint,
    };
    let mut out = vec![0f32; rows.len() * dim];
    for (k, v) in batches {
        if v.len() != plan[k].len() * dim {
            return Err(crate::Error::internal(format!(
                "a batch of {} rows gave {} values; expected {dim} per row",
                plan[k].len(),
                v.len()
            )));
        }
        for (j, &i) in plan[k].iter().enumerate() {
            out[i * dim..(i + 1) * dim].copy_from_slice(&v[j * dim..(j + 1) * dim]);
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
        std::slice::from_mut(&mut embedder),
        &encoded,
        budget,
        batch::DEFAULT_MAX_BATCH_ROWS,
        &|_, _| true,
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
    Ok(embed_all(std::slice::from_mut(embedder), &[blank], 1, 1, &|_, _| true)?.1)
}
