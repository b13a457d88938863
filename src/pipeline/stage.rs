//! What the stages of a run share: one stop flag, and joining them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

/// Set when a stage fails (the writer, mostly): the other stages stop at
/// their next batch instead of finishing work nobody will write. A signal
/// (`crate::cancel`) stops them as well.
#[derive(Clone, Default)]
pub(super) struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Whether the stages are to stop: a stage failed, or a signal came.
    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed) || crate::cancel::requested()
    }

    pub(super) fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Spawns a stage's thread, named for stack traces and `top`, inside its
/// tracing span.
pub(super) fn spawn_thread(
    name: &str,
    span: tracing::Span,
    body: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("embedflow-{name}"))
        .spawn(move || {
            let _span = span.entered();
            body()
        })
        .map_err(Error::internal)
}

/// Waits for the reading task and the two stage threads. A stage that
/// panicked closes its channel like one that finished: the run joins them
/// all before anything is committed.
pub(super) async fn join_stages(
    source_task: tokio::task::JoinHandle<Result<()>>,
    prepare: std::thread::JoinHandle<()>,
    embed: std::thread::JoinHandle<()>,
) -> Result<()> {
    join_threads(source_task, vec![("prepare", prepare), ("embed", embed)]).await
}

/// Waits for the reading task and every stage thread named (all joined,
/// whatever one of them did); the first failure is the result.
pub(super) async fn join_threads(
    source_task: tokio::task::JoinHandle<Result<()>>,
    threads: Vec<(&'static str, std::thread::JoinHandle<()>)>,
) -> Result<()> {
    let source = source_task
        .await
        .map_err(|e| Error::internal(format!("source stage: {e}")))?;
    let threads = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|(name, t)| {
                t.join()
                    .map_err(|_| Error::internal(format!("the {name} stage panicked")))
            })
            .fold(Ok(()), Result::and)
    })
    .await
    .map_err(Error::internal)?;
    source.and(threads)
}
