//! The Delta-table run, in one room: resume units and their records
//! (run.rs), leases, the incremental comparison and its on-disk buckets
//! (incremental.rs, buckets.rs), fingerprints, shards and the step that
//! commits them (shards.rs, shard_commit.rs).
//!
//! One door, each step taking the last: [`open`] (the lease, what an
//! interrupted run left, an incremental run's comparison with its unchanged
//! rows copied) → [`TableRun::write`] for each embedded unit → [`commit`]
//! (one table version, or a shard's marker), or [`TableRun::abandon`]. The
//! wiring names nothing under this folder but what this file exports.

mod buckets;
mod fingerprint;
mod incremental;
mod run;
mod shard_commit;
mod shards;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::Result;
use crate::delta::DeltaTarget;
use crate::progress::TableSummary;
use crate::shard::Shard;
use crate::sink::WriteOptions;

use super::check::CheckedJob;

pub use shard_commit::{CommitReport, commit as commit_shards, discard_runs, status};

pub(super) use fingerprint::output_fingerprint;
pub(super) use incremental::{RowKeys, Update, keys_schema};
pub(super) use run::{DoneUnits, TableRun, UnitFilter};

/// What a table run starts from, besides the checked job.
pub(super) struct TableStart<'a> {
    /// This process's shard of a sharded run.
    pub(super) shard: Option<Shard>,
    pub(super) schema: SchemaRef,
    pub(super) write: &'a WriteOptions,
    /// Each input row's key, for an incremental run's comparison.
    pub(super) keys: Arc<dyn RowKeys>,
    pub(super) model_sha: &'a str,
    /// The output fingerprint ([`output_fingerprint`]).
    pub(super) fingerprint: &'a str,
}

/// Starts a run into the job's table: a shard reads its own units only
/// (`c.input` is cut to them); the records of an interrupted run are picked
/// up; an incremental run compares the input with the table and copies the
/// unchanged rows before anything is embedded. A failure after the lease
/// was taken gives it back.
pub(super) async fn open(c: &mut CheckedJob, s: TableStart<'_>) -> Result<(TableRun, Update)> {
    let plan = c.plan.clone();
    let target = Arc::new(DeltaTarget::resolve(&c.stores, &plan.output.path)?);
    let shard = match s.shard {
        Some(sh) => Some(shards::assign(&c.input, plan.output.unit_rows, sh).await?),
        None => None,
    };
    if let Some(sh) = &shard {
        c.input = shards::restrict(&c.input, sh);
    }
    // A whole run resumes only units whose vectors were made as this run's
    // are: a remote model's width and model string are its server's
    // answer, known at run time only. (A shard's records are named as its
    // commit step finds them; the commit compares the shards' fingerprints.)
    let mut job = fingerprint::job_fingerprint(&plan, c.max_tokens, c.overlap);
    if shard.is_none() {
        job = format!("{job}-{}", s.fingerprint);
    }
    let mut run = TableRun::start(
        target,
        &c.input,
        &job,
        s.model_sha,
        plan.output.unit_rows,
        s.schema,
        s.write.clone(),
        shard,
    )
    .await?;
    if run.resumed() > 0 {
        crate::note!(
            "resuming the interrupted run into {}: {} units already done",
            run.display(),
            run.resumed()
        );
    }
    let lineage = &s.write.metadata;
    match incremental::start_update(&mut run, c, &plan, &s.keys, s.fingerprint, lineage).await {
        Ok(u) => Ok((run, u)),
        Err(e) => {
            run.abandon().await;
            Err(e)
        }
    }
}

/// What the commit records besides the parts.
pub(super) struct TableCommit<'a> {
    pub(super) write: &'a WriteOptions,
    pub(super) schema: &'a SchemaRef,
    /// The output fingerprint, kept in the table's properties.
    pub(super) fingerprint: String,
    /// The Delta input's version, when the input is a Delta table.
    pub(super) input_version: Option<i64>,
    pub(super) update: Option<Update>,
    pub(super) shard: Option<&'a Shard>,
}

/// Commits the run as one table version (a shard leaves its parts, keys and
/// marker for `embedflow commit`); says what the run did to the table and
/// how many vectors it holds from this run (resumed units included).
pub(super) async fn commit(t: TableRun, f: TableCommit<'_>) -> Result<(TableSummary, u64)> {
    let app = f
        .write
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    let mut properties = f.write.metadata.clone();
    properties.push((fingerprint::FINGERPRINT.into(), f.fingerprint.clone()));
    if let Some(v) = f.input_version {
        properties.push((incremental::INPUT_VERSION.into(), v.to_string()));
    }
    let target = t.target();
    let diff = f.update.as_ref().and_then(|u| u.diff.as_ref());
    let outcome = match f.shard {
        Some(s) => {
            let marker = run::ShardMarker {
                shard: s.index,
                count: s.count,
                changes: diff.map(|d| d.changes.clone()),
                schema: shards::schema_to_hex(f.schema)?,
                properties,
                app,
                ..Default::default()
            };
            let keys = diff.map(incremental::Diff::keys_path);
            t.finish_shard(marker, keys.as_deref()).await?
        }
        None => {
            let outcome = t.commit(&properties, app).await?;
            if let (Some(d), Some(v)) = (diff, outcome.version)
                && f.input_version.is_some()
            {
                incremental::save_keys(&target, d, v).await;
            }
            outcome
        }
    };
    let summary = TableSummary {
        version: outcome.version,
        shard: f.shard.map(|s| (s.index, s.count)),
        units: outcome.units,
        units_resumed: outcome.units_resumed,
        changes: diff.map(|d| d.changes.clone()),
        full_because: f.update.and_then(|u| u.full_because),
    };
    Ok((summary, outcome.vectors))
}
