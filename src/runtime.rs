//! CPU work off the async I/O runtime. The runtime's two worker threads
//! drive reads, writes and object-store requests; a model load, a tokenizer
//! load, a session build or a k-means pass on one of them would stall every
//! stream. [`spawn_cpu`] runs such work on tokio's blocking pool, inside
//! the caller's tracing span.

use crate::{Error, Result};

/// Runs `f` on the blocking pool and waits for it without blocking the
/// runtime. A panic in `f` becomes an internal error.
pub async fn spawn_cpu<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| Error::internal(format!("a CPU task failed: {e}")))?
}

/// [`spawn_cpu`] for a long computation that cannot look at the stop flag
/// itself (a library's t-SNE): a stop returns [`Error::Interrupted`] at
/// once, and the computation is left to finish unobserved (the process
/// exits without waiting for it; it holds nothing to clean up).
pub async fn spawn_cpu_stoppable<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::select! {
        biased;
        _ = crate::cancel::wait() => Err(Error::Interrupted),
        r = spawn_cpu(f) => r,
    }
}

/// Runs `f` on each item, each on its own scoped thread, and returns the
/// results in the items' order; a panic in any of them is resumed here.
/// For a few long, blocking calls at once (sessions built or run side by
/// side), not for fine-grained work (rayon's).
pub fn map_threads<T, R, F>(items: impl IntoIterator<Item = T>, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items.into_iter().map(|t| s.spawn(move || f(t))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
