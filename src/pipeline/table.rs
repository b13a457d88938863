//! A run into a Delta table: the input cut into deterministic units, a
//! part file and a progress record per finished unit, and one commit at the
//! end. A run stopped at any moment (`kill -9` included) leaves its records;
//! the same job run again skips the units they name and commits a table
//! equal to an uninterrupted run's.
//!
//! A **unit** is the batches of one input file whose first row falls in
//! `[k × unit_rows, (k + 1) × unit_rows)`: the reader cuts batches the same
//! way on every run, so units are the same on every run. A **run** is named
//! by a hash of what decides its output (the job, the model file, the input
//! listing, the table version it started from); records of another run are
//! not resumed, and the reason is said.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::delta::{self, DeltaTarget, Lease, PartFile, TableState};
use crate::sink::{ParquetSink, WriteOptions};
use crate::source::Input;
use crate::store::Stores;
use crate::{Error, Result};

use super::output::{Rows, write_unit};
use super::prepare::WorkUnit;

/// The unit of an incremental run's copied rows.
const COPY_UNIT: &str = "copy";
/// Rows per part of copied rows.
const COPY_PART_ROWS: u64 = 262_144;

/// Where a unit sits: (input file index, unit index within the file).
pub(super) type UnitId = (usize, u64);

fn unit_name((file, index): UnitId) -> String {
    format!("f{file}-u{index}")
}

/// The unit a [`unit_name`] names (`None` for the copy unit).
fn parse_unit(name: &str) -> Option<UnitId> {
    let (f, u) = name.strip_prefix('f')?.split_once("-u")?;
    Some((f.parse().ok()?, u.parse().ok()?))
}

/// What a run is: compared with an interrupted run's to tell why it cannot
/// be resumed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct RunRecord {
    run: String,
    model_sha256: String,
    /// A hash of the job as checked (model options, chunking, columns, …).
    job: String,
    /// A hash of the input listing (paths and sizes).
    input: String,
    base_version: Option<i64>,
    unit_rows: u64,
}

impl RunRecord {
    /// Why `self` (an earlier run) is not the run `now`.
    fn differs(&self, now: &RunRecord) -> String {
        let mut why = Vec::new();
        if self.model_sha256 != now.model_sha256 {
            why.push("the model file changed".to_string());
        }
        if self.job != now.job {
            why.push("the job changed (model options, chunking, columns or filter)".into());
        }
        if self.input != now.input {
            why.push("the input files changed".into());
        }
        if self.base_version != now.base_version {
            why.push(format!(
                "the table changed (version {} then, {} now)",
                show_version(self.base_version),
                show_version(now.base_version)
            ));
        }
        if self.unit_rows != now.unit_rows {
            why.push("output.unit_rows changed".into());
        }
        if why.is_empty() {
            why.push("it is another run".into());
        }
        why.join(", ")
    }
}

fn show_version(v: Option<i64>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}

/// One finished unit, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct UnitRecord {
    unit: String,
    /// Empty when no row of the unit gave a vector.
    parts: Vec<PartFile>,
    documents: u64,
    vectors: u64,
}

/// A run into a table, from the lease to the commit.
pub(super) struct TableRun {
    target: Arc<DeltaTarget>,
    lease: Option<Lease>,
    base: Option<TableState>,
    record: RunRecord,
    files: HashMap<Arc<str>, usize>,
    /// Units an interrupted run of this job finished (read at the start).
    done: HashMap<String, UnitRecord>,
    finished: Vec<UnitRecord>,
    open: Option<OpenUnit>,
    write: WriteOptions,
    schema: SchemaRef,
}

struct OpenUnit {
    id: UnitId,
    sink: Option<ParquetSink>,
    part: String,
    documents: u64,
    vectors: u64,
}

/// Which units the prepare stage skips: those an interrupted run finished.
#[derive(Clone, Debug, Default)]
pub(super) struct DoneUnits {
    files: HashMap<Arc<str>, usize>,
    unit_rows: u64,
    done: HashSet<UnitId>,
}

impl DoneUnits {
    /// The index of an input file (by the name its batches carry).
    pub(super) fn file_index(&self, file: &Arc<str>) -> Option<usize> {
        self.files.get(file).copied()
    }

    pub(super) fn contains(&self, file: &Arc<str>, first_row: u64) -> bool {
        !self.done.is_empty()
            && self
                .files
                .get(file)
                .is_some_and(|&f| self.done.contains(&(f, first_row / self.unit_rows)))
    }
}

/// Summary figures of a table run.
#[derive(Clone, Debug, Default)]
pub struct TableOutcome {
    pub version: i64,
    pub units: usize,
    pub units_resumed: usize,
    pub vectors: u64,
}

impl TableRun {
    /// Takes the table's lease, reads the table, and picks up the records
    /// of an interrupted run of the same job (or clears those of another).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start(
        target: Arc<DeltaTarget>,
        input: &Input,
        job_fingerprint: &str,
        model_sha256: &str,
        unit_rows: u64,
        schema: SchemaRef,
        mut write: WriteOptions,
    ) -> Result<TableRun> {
        // A part of a killed attempt of this run is written again whole.
        write.overwrite = true;
        let lease = target.acquire_lease().await?;
        let base = target.current().await?;
        let files = input.file_indices();
        let mut listing = Sha256::new();
        for f in &input.files {
            listing.update(f.location.url().as_bytes());
            listing.update(b"\0");
            listing.update(f.size.to_le_bytes());
        }
        let mut record = RunRecord {
            run: String::new(),
            model_sha256: model_sha256.to_string(),
            job: job_fingerprint.to_string(),
            input: hex::encode(listing.finalize()),
            base_version: base.as_ref().map(TableState::version),
            unit_rows,
        };
        let mut id = Sha256::new();
        id.update(serde_json::to_vec(&record).map_err(Error::internal)?);
        record.run = hex::encode(&id.finalize()[..8]);

        let mut run = TableRun {
            target,
            lease: Some(lease),
            base,
            record,
            files,
            done: HashMap::new(),
            finished: Vec::new(),
            open: None,
            write,
            schema,
        };
        let started = run.pick_up().await;
        if let Err(e) = started {
            run.abandon().await;
            return Err(e);
        }
        Ok(run)
    }

    fn run_dir(&self, run: &str) -> String {
        format!("{}/runs/{run}", delta::STATE_DIR)
    }

    /// A part of this run: `what` is a unit's name or `copy-N`.
    fn part_name(&self, what: &str) -> String {
        format!("{}{}-{what}.parquet", delta::PART_PREFIX, self.record.run)
    }

    /// Resumes this run's records; clears other runs' (their parts too,
    /// unless the table holds them: a run that committed and was stopped
    /// before it cleaned up).
    async fn pick_up(&mut self) -> Result<()> {
        let t = Arc::clone(&self.target);
        let mut runs: HashSet<String> = HashSet::new();
        for name in t.list(&format!("{}/runs", delta::STATE_DIR)).await? {
            if let Some(run) = name.split('/').nth(2) {
                runs.insert(run.to_string());
            }
        }
        let live: HashSet<&str> = self
            .base
            .as_ref()
            .map(|b| b.files.iter().map(|f| f.path.as_str()).collect())
            .unwrap_or_default();
        for run in runs.iter().filter(|r| **r != self.record.run) {
            let dir = self.run_dir(run);
            let old = t
                .read_state(&format!("{dir}/run.json"))
                .await?
                .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok());
            let committed = live
                .iter()
                .any(|f| f.starts_with(&format!("{}{run}-", delta::PART_PREFIX)));
            if !committed {
                match &old {
                    Some(o) => eprintln!(
                        "embedflow: not resuming the interrupted run into {}: {}; starting afresh",
                        t.display(),
                        o.differs(&self.record)
                    ),
                    None => tracing::warn!("removing the records of an unreadable run {run}"),
                }
                self.remove_parts_of(run).await?;
            }
            self.remove_dir(&dir).await?;
        }
        let dir = self.run_dir(&self.record.run);
        if runs.contains(&self.record.run) {
            for name in t.list(&format!("{dir}/units")).await? {
                let Some(bytes) = t.read_state(&name).await? else {
                    continue;
                };
                // A record cut short by a crash is ignored: its unit is redone.
                if let Ok(r) = serde_json::from_slice::<UnitRecord>(&bytes) {
                    self.done.insert(r.unit.clone(), r);
                }
            }
        } else {
            t.write_state(
                &format!("{dir}/run.json"),
                serde_json::to_vec_pretty(&self.record).map_err(Error::internal)?,
            )
            .await?;
        }
        Ok(())
    }

    async fn remove_parts_of(&self, run: &str) -> Result<()> {
        let prefix = format!("{}{run}-", delta::PART_PREFIX);
        for name in self.target.list("").await? {
            if !name.contains('/') && name.starts_with(&prefix) {
                self.target.delete(&name).await?;
            }
        }
        Ok(())
    }

    async fn remove_dir(&self, dir: &str) -> Result<()> {
        for name in self.target.list(dir).await? {
            self.target.delete(&name).await?;
        }
        self.target.remove_empty_dirs(dir);
        Ok(())
    }

    /// Units already done, for the prepare stage to skip.
    pub(super) fn done_units(&self) -> DoneUnits {
        DoneUnits {
            files: self.files.clone(),
            unit_rows: self.record.unit_rows,
            done: self.done.keys().filter_map(|k| parse_unit(k)).collect(),
        }
    }

    pub(super) fn resumed(&self) -> usize {
        self.done.len()
    }

    pub(super) fn display(&self) -> &str {
        self.target.display()
    }

    /// Writes a batch into its unit's part; a batch of a new unit finishes
    /// the one before.
    pub(super) async fn write(
        &mut self,
        stores: &Stores,
        u: WorkUnit,
        rows: &Rows,
    ) -> Result<(u64, u64)> {
        let file = *self
            .files
            .get(&u.file)
            .ok_or_else(|| Error::internal(format!("a batch of an unlisted file {}", u.file)))?;
        let id = (file, u.first_row / self.record.unit_rows);
        if self.open.as_ref().is_some_and(|o| o.id != id) {
            self.finish_unit().await?;
        }
        if self.open.is_none() {
            self.open = Some(OpenUnit {
                id,
                sink: None,
                part: self.part_name(&unit_name(id)),
                documents: 0,
                vectors: 0,
            });
        }
        let TableRun {
            open,
            target,
            schema,
            write,
            ..
        } = self;
        let open = open.as_mut().expect("a unit is open");
        if u.chunk_row.is_empty() {
            return Ok((0, 0));
        }
        if open.sink.is_none() {
            let path = target.child_display(&open.part);
            open.sink = Some(ParquetSink::create(stores, &path, Arc::clone(schema), write).await?);
        }
        let sink = open.sink.as_mut().expect("the part is open");
        let (n, d) = write_unit(u, rows, sink, None).await?;
        open.vectors += n;
        open.documents += d;
        Ok((n, d))
    }

    /// Finishes the open unit: its part put in place, then its record.
    async fn finish_unit(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let part = match open.sink {
            Some(sink) => Some(self.finish_part(sink, open.part.clone()).await?),
            None => None,
        };
        let record = UnitRecord {
            unit: unit_name(open.id),
            parts: part.into_iter().collect(),
            documents: open.documents,
            vectors: open.vectors,
        };
        self.record_unit(record).await
    }

    async fn record_unit(&mut self, record: UnitRecord) -> Result<()> {
        let name = format!(
            "{}/units/{}.json",
            self.run_dir(&self.record.run),
            record.unit
        );
        self.target
            .write_state(&name, serde_json::to_vec(&record).map_err(Error::internal)?)
            .await?;
        self.finished.push(record);
        Ok(())
    }

    pub(super) fn target(&self) -> Arc<DeltaTarget> {
        Arc::clone(&self.target)
    }

    /// The state the run started from.
    pub(super) fn base(&self) -> Option<&TableState> {
        self.base.as_ref()
    }

    /// Copies the unchanged rows of an incremental run into parts of this
    /// run (one "copy" unit: done again whole if interrupted; nothing is
    /// embedded for it).
    pub(super) async fn copy(
        &mut self,
        stores: &Stores,
        mut rows: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
        documents: u64,
    ) -> Result<()> {
        if self.done.contains_key(COPY_UNIT) {
            return Ok(());
        }
        let mut parts = Vec::new();
        let mut open: Option<(ParquetSink, String)> = None;
        let mut in_part = 0u64;
        let mut vectors = 0u64;
        while let Some(batch) = rows.recv().await {
            crate::cancel::check()?;
            let batch = batch?;
            let batch = super::incremental::conform(batch, &self.schema)?;
            if open.is_none() {
                let name = self.part_name(&format!("copy-{}", parts.len()));
                let path = self.target.child_display(&name);
                let sink =
                    ParquetSink::create(stores, &path, Arc::clone(&self.schema), &self.write)
                        .await?;
                open = Some((sink, name));
            }
            let (sink, _) = open.as_mut().expect("a copy part is open");
            sink.write(&batch).await?;
            in_part += batch.num_rows() as u64;
            vectors += batch.num_rows() as u64;
            if in_part >= COPY_PART_ROWS
                && let Some((sink, name)) = open.take()
            {
                parts.push(self.finish_part(sink, name).await?);
                in_part = 0;
            }
        }
        if let Some((sink, name)) = open.take() {
            parts.push(self.finish_part(sink, name).await?);
        }
        self.record_unit(UnitRecord {
            unit: COPY_UNIT.into(),
            parts,
            documents,
            vectors,
        })
        .await
    }

    async fn finish_part(&self, sink: ParquetSink, name: String) -> Result<PartFile> {
        let rows = sink.commit().await?;
        let size = self.target.size_of(&name).await?;
        Ok(PartFile {
            path: name,
            size,
            rows,
        })
    }

    /// Finishes the last unit and commits every part as one table version;
    /// then clears the run's records and releases the lease.
    pub(super) async fn commit(
        mut self,
        properties: &[(String, String)],
        app: Vec<(String, serde_json::Value)>,
    ) -> Result<TableOutcome> {
        if let Err(e) = self.finish_unit().await {
            self.abandon().await;
            return Err(e);
        }
        if let Err(e) = crate::cancel::check() {
            self.abandon().await;
            return Err(e);
        }
        let mut records: Vec<&UnitRecord> = self.done.values().chain(&self.finished).collect();
        records.sort_by_key(|r| unit_key(&r.unit));
        let parts: Vec<PartFile> = records.iter().flat_map(|r| r.parts.clone()).collect();
        let outcome = TableOutcome {
            version: 0,
            units: records.len(),
            units_resumed: self.resumed(),
            vectors: records.iter().map(|r| r.vectors).sum(),
        };
        let mut app = app;
        app.push(("embedflow.run".into(), self.record.run.clone().into()));
        app.push(("embedflow.units".into(), outcome.units.into()));
        app.push((
            "embedflow.units_resumed".into(),
            outcome.units_resumed.into(),
        ));
        let committed = self
            .target
            .commit_overwrite(self.base.as_ref(), &self.schema, &parts, properties, &app)
            .await;
        let version = match committed {
            Ok(v) => v,
            Err(e) => {
                self.abandon().await;
                return Err(e);
            }
        };
        // Committed: the records are history now. A failure to clear them
        // is cleared by the next run (it sees the parts are live).
        let dir = self.run_dir(&self.record.run);
        if let Err(e) = self.remove_dir(&dir).await {
            tracing::warn!("cannot clear the run's records: {e}");
        }
        if let Some(l) = self.lease.take() {
            l.release().await;
        }
        Ok(TableOutcome { version, ..outcome })
    }

    /// Stops: the open part is dropped, the records stay for a resume, the
    /// lease is released.
    pub(super) async fn abandon(&mut self) {
        if let Some(OpenUnit {
            sink: Some(sink), ..
        }) = self.open.take()
        {
            sink.abort().await;
        }
        if let Some(l) = self.lease.take() {
            l.release().await;
        }
    }
}

/// Units in input order: file, then unit index (the copy unit last).
fn unit_key(name: &str) -> (usize, u64) {
    parse_unit(name).unwrap_or((usize::MAX, u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_sort_in_input_order() {
        let mut names = vec!["f1-u0", "f0-u10", "f0-u2", "f10-u0"];
        names.sort_by_key(|n| unit_key(n));
        assert_eq!(names, ["f0-u2", "f0-u10", "f1-u0", "f10-u0"]);
        assert_eq!(unit_name((3, 7)), "f3-u7");
    }

    #[test]
    fn a_changed_run_says_what_changed() {
        let a = RunRecord {
            run: "a".into(),
            model_sha256: "m1".into(),
            job: "j".into(),
            input: "i".into(),
            base_version: Some(3),
            unit_rows: 16384,
        };
        let b = RunRecord {
            model_sha256: "m2".into(),
            base_version: Some(4),
            ..a.clone()
        };
        assert_eq!(
            a.differs(&b),
            "the model file changed, the table changed (version 3 then, 4 now)"
        );
    }
}
