//! The commit step of an embedding run: the output file (and its documents
//! file) renamed into place, or the table's version made (or, for a shard,
//! its marker left for `embedflow commit`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Result;
use crate::progress::{Counters, TableSummary};
use crate::sink::ParquetSink;

use super::table::{self, TableCommit};
use super::write::Output;

/// Commits the output: the files with the run's counts in their lineage,
/// or the table with what `table` says (see [`table::commit`]); for a
/// table, says what the run did to it and how many vectors it holds from
/// this run (resumed units included).
pub(super) async fn commit(
    output: Output,
    counters: &Counters,
    table: TableCommit<'_>,
) -> Result<Option<(TableSummary, u64)>> {
    match output {
        // The commit point: `commit` refuses once a stop was asked for; the
        // documents file follows the main output whatever comes after it,
        // so the pair is committed together or not at all.
        Output::File { out, docs } => {
            commit_files(out, docs, counters).await?;
            Ok(None)
        }
        Output::Table(t) => table::commit(*t, table).await.map(Some),
    }
}

async fn commit_files(
    mut out: ParquetSink,
    docs: Option<ParquetSink>,
    counters: &Counters,
) -> Result<()> {
    // What the run did, for the lineage (`embedflow report` shows it).
    // Counts only, no clock time: one job over one input writes the same
    // file every time.
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
    out.append_metadata(&[
        ("embedflow.run.rows_read".into(), load(&counters.rows_read)),
        (
            "embedflow.run.rows_skipped".into(),
            load(&counters.rows_skipped),
        ),
        ("embedflow.run.chunks".into(), load(&counters.chunks)),
        ("embedflow.run.tokens".into(), load(&counters.tokens)),
    ]);
    let committed = out.commit().await;
    let docs_committed = match docs {
        Some(d) if committed.is_ok() => d.commit_unconditionally().await.map(Some),
        Some(d) => {
            d.abort().await;
            Ok(None)
        }
        None => Ok(None),
    };
    committed?;
    docs_committed?;
    Ok(())
}
