//! The commit step of an embedding run: the output file (and its documents
//! file) renamed into place, or the table's version made (or, for a shard,
//! its marker left for `embedflow commit`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Result;
use crate::progress::{Counters, TableSummary};
use crate::shard::Shard;
use crate::sink::{ParquetSink, WriteOptions};

use super::output::Rows;
use super::table::{self, TableCommit, Update};
use super::write::Output;

/// What the commit records besides the rows.
pub(super) struct Facts<'a> {
    pub(super) counters: &'a Counters,
    pub(super) write: &'a WriteOptions,
    pub(super) rows: &'a Rows,
    /// The output fingerprint (table properties).
    pub(super) fingerprint: String,
    /// The Delta input's version, when the input is a Delta table.
    pub(super) input_version: Option<i64>,
    pub(super) update: Option<Update>,
    pub(super) shard: Option<&'a Shard>,
}

/// Commits the output; for a table, says what the run did to it and how
/// many vectors it holds from this run (resumed units included).
pub(super) async fn commit(output: Output, f: Facts<'_>) -> Result<Option<(TableSummary, u64)>> {
    match output {
        // The commit point: `commit` refuses once a stop was asked for; the
        // documents file follows the main output whatever comes after it,
        // so the pair is committed together or not at all.
        Output::File { out, docs } => {
            commit_files(out, docs, f.counters).await?;
            Ok(None)
        }
        Output::Table(t) => {
            let c = TableCommit {
                write: f.write,
                schema: &f.rows.schema,
                fingerprint: f.fingerprint,
                input_version: f.input_version,
                update: f.update,
                shard: f.shard,
            };
            table::commit(*t, c).await.map(Some)
        }
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
