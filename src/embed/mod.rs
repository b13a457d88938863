//! Embedding: the model folder, its tokenizer, the backends that make
//! vectors (an ONNX Runtime session today, behind [`EmbedBackend`]), and
//! batching by token budget.

pub mod api;
pub mod backend;
pub mod batch;
pub mod bpe;
pub mod digest;
pub mod image;
pub mod model;
pub mod pool;
pub mod remote;
pub mod session;
pub mod tokenize;

pub use backend::{BackendInfo, EmbedBackend, InputKind, Needs, Remote, output_dim};
pub use model::{ModelConfig, ModelOptions};
pub use pool::{Pooling, WEIGHTEDMEAN_REFUSED};
pub use session::{Device, Embedder, SessionOptions};
pub use tokenize::{Encoded, TextEncoder};

use rayon::prelude::*;

use crate::Result;

/// Opens the backend a model runs on: its remote API (probed), or an ONNX
/// Runtime session on `exec.device` (its text graph, or its vision graph
/// for an image job).
pub fn open(
    model: &ModelConfig,
    encoder: &TextEncoder,
    exec: SessionOptions,
) -> Result<Box<dyn EmbedBackend>> {
    if model.api.is_some() {
        return Ok(Box::new(api::ApiBackend::open(model, None)?));
    }
    Ok(Box::new(Embedder::new(model, encoder, exec)?))
}

/// Called after each inference batch with its rows and tokens; returning
/// false stops the work with [`Error::Interrupted`](crate::Error::Interrupted).
/// Sessions running at once call it from their own threads.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) -> bool + Sync);

/// Embeds `rows` in token-budget batches, longest first, and returns the
/// vectors in the rows' own order (rows × dim). Each session in `embedders`
/// takes the next batch when it is free (one session runs them in turn).
pub fn embed_all<B: EmbedBackend>(
    embedders: &mut [B],
    rows: &[Encoded],
    batch_tokens: usize,
    max_rows: usize,
    progress: Progress,
) -> Result<(Vec<f32>, usize)> {
    let lengths: Vec<usize> = rows.iter().map(Encoded::len).collect();
    // A backend with a row limit of its own (an API's inputs per request).
    let max_rows = match embedders.first().and_then(|b| b.needs().max_rows) {
        Some(limit) => limit.min(max_rows),
        None => max_rows,
    };
    let padded = embedders.first().is_none_or(|b| b.needs().padded);
    let plan = batch::plan(&lengths, batch_tokens, max_rows, padded);
    run_plan(embedders, rows, &plan, progress)
}

/// Runs the given batches (row indices) on the sessions and scatters the
/// vectors back into row order. Returns the vectors and their width.
pub fn run_plan<B: EmbedBackend>(
    embedders: &mut [B],
    rows: &[Encoded],
    plan: &[Vec<usize>],
    progress: Progress,
) -> Result<(Vec<f32>, usize)> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dim_hint = embedders.first().and_then(B::dim).unwrap_or(0);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // One session's loop: take the next batch until none is left or another
    // session failed. Returns (batch index, vectors) for each batch it ran.
    type Ran = Vec<(usize, Vec<f32>)>;
    let work = |e: &mut B| -> Result<Ran> {
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
        many => crate::runtime::map_threads(many.iter_mut(), work),
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
    let mut embedder = open(model, &encoder, exec)?;
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
