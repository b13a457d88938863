//! What a run would send a remote model, counted before anything is sent:
//! the read and prepare stages run as in the real run (the same chunks,
//! the same cuts, the same units skipped), and their rows are counted
//! instead of embedded. `embedflow validate` prints it; a run with
//! `embed.max_tokens_per_run` refuses to start past it.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::progress::Counters;
use crate::source::SourceBatch;
use crate::{Error, Result};

use super::check::CheckedJob;
use super::stage::{Stop, join_threads};
use super::table::{UnitFilter, Update};
use super::unit::WorkUnit;
use super::write::Output;
use super::{PREPARED_QUEUE, SOURCE_QUEUE, prepare_stage, read_stage, unit_filter};

/// Rows, inputs and tokens a run would send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub rows: u64,
    /// Inputs (chunks, or rows when chunking is off).
    pub chunks: u64,
    pub tokens: u64,
}

/// Counts what the run would send: all the input, or (`update`, `skip`)
/// what an incremental or resumed run would embed of it.
pub(super) async fn estimate(
    c: &CheckedJob,
    update: Option<&Update>,
    skip: UnitFilter,
) -> Result<Estimate> {
    let counters = Arc::new(Counters::default());
    let (src_tx, src_rx) = mpsc::channel::<Result<SourceBatch>>(SOURCE_QUEUE);
    let (prep_tx, mut prep_rx) = mpsc::channel::<Result<WorkUnit>>(PREPARED_QUEUE);
    let prepare = Arc::new(prepare_stage(c, &counters)?);
    let source_task = read_stage(c, update, src_tx);
    let prepare_thread = prepare.spawn(skip, Stop::default(), src_rx, prep_tx)?;
    let mut failed = None;
    while let Some(unit) = prep_rx.recv().await {
        if let Err(e) = unit {
            failed = Some(e);
            break;
        }
    }
    drop(prep_rx);
    let joined = join_threads(source_task, vec![("prepare", prepare_thread)]).await;
    if let Some(e) = failed {
        return Err(e);
    }
    joined?;
    let get = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Estimate {
        rows: get(&counters.rows_read) - get(&counters.rows_skipped),
        chunks: get(&counters.chunks),
        tokens: get(&counters.tokens),
    })
}

/// Counts all the input a checked job would send (`embedflow validate`).
pub async fn estimate_all(c: &CheckedJob) -> Result<Estimate> {
    let all = UnitFilter {
        done: Default::default(),
        todo: None,
    };
    estimate(c, None, all).await
}

/// A run with `embed.max_tokens_per_run` stops before it sends more: the
/// rows this run would embed (past `output`'s done units and `update`'s
/// unchanged rows) are counted first. Nothing is read without the setting.
pub(super) async fn check_budget(
    c: &CheckedJob,
    output: &Output,
    update: Option<&Update>,
) -> Result<()> {
    let Some(api) = &c.model.api else {
        return Ok(());
    };
    let Some(max) = api.pacing.max_tokens_per_run else {
        return Ok(());
    };
    let e = estimate(c, update, unit_filter(output, update)).await?;
    if e.tokens > max {
        return Err(Error::Usage(format!(
            "this run would send {} tokens ({} inputs from {} rows) to {}, more than embed.max_tokens_per_run = {max}; nothing was sent (raise the limit, or embed fewer rows with input.filter)",
            e.tokens, e.chunks, e.rows, api.model
        )));
    }
    tracing::info!(tokens = e.tokens, max, "within embed.max_tokens_per_run");
    Ok(())
}
