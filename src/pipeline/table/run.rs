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
use crate::shard::{Assignment, Shard};
use crate::sink::{ParquetSink, WriteOptions};
use crate::source::{Input, SourceBatch};
use crate::store::Stores;
use crate::{Error, Result};

use crate::pipeline::output::{Rows, write_unit};
use crate::pipeline::unit::WorkUnit;

/// The unit of an incremental run's copied rows.
const COPY_UNIT: &str = "copy";
/// Rows per part of copied rows.
const COPY_PART_ROWS: u64 = 262_144;

/// Where a unit sits: (input file index, unit index within the file).
pub(crate) type UnitId = (usize, u64);

pub(crate) fn unit_name((file, index): UnitId) -> String {
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
pub(crate) struct RunRecord {
    run: String,
    model_sha256: String,
    /// A hash of the job as checked (model options, chunking, columns, …).
    job: String,
    /// A hash of the input listing (paths, sizes and the store's versions).
    input: String,
    base_version: Option<i64>,
    unit_rows: u64,
    /// How many shards run it (1: a whole run).
    #[serde(default = "one")]
    shards: u32,
}

fn one() -> u32 {
    1
}

impl RunRecord {
    /// The record of a run of this job over this input from this table
    /// version, named by a hash of it: the same in every shard and in the
    /// commit step.
    pub(crate) fn new(
        input: &Input,
        job_fingerprint: &str,
        model_sha256: &str,
        unit_rows: u64,
        base_version: Option<i64>,
        shards: u32,
    ) -> Result<RunRecord> {
        let mut listing = Sha256::new();
        for f in &input.files {
            listing.update(f.location.url().as_bytes());
            listing.update(b"\0");
            listing.update(f.size.to_le_bytes());
            // An in-place edit of the same size is another input too.
            listing.update(f.version.as_deref().unwrap_or("").as_bytes());
            listing.update(b"\0");
        }
        let mut record = RunRecord {
            run: String::new(),
            model_sha256: model_sha256.to_string(),
            job: job_fingerprint.to_string(),
            input: hex::encode(listing.finalize()),
            base_version,
            unit_rows,
            shards,
        };
        let mut id = Sha256::new();
        id.update(serde_json::to_vec(&record).map_err(Error::internal)?);
        record.run = hex::encode(&id.finalize()[..8]);
        Ok(record)
    }

    pub(crate) fn run(&self) -> &str {
        &self.run
    }

    pub(crate) fn shards(&self) -> u32 {
        self.shards
    }

    pub(crate) fn unit_rows(&self) -> u64 {
        self.unit_rows
    }

    /// Why `self` (an earlier run) is not the run `now`.
    pub(crate) fn differs(&self, now: &RunRecord) -> String {
        let mut why = Vec::new();
        if self.model_sha256 != now.model_sha256 {
            why.push("the model file changed".to_string());
        }
        if self.job != now.job {
            why.push(
                "the job changed (model options, chunking, columns, filter, or a remote model's answers)"
                    .into(),
            );
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
        if self.shards != now.shards {
            why.push(format!(
                "the shard count changed ({} then, {} now)",
                self.shards, now.shards
            ));
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
pub(crate) struct UnitRecord {
    pub(crate) unit: String,
    /// Empty when no row of the unit gave a vector.
    pub(crate) parts: Vec<PartFile>,
    pub(crate) documents: u64,
    pub(crate) vectors: u64,
}

/// A run into a table, from the lease to the commit.
pub(crate) struct TableRun {
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
    /// Set in a shard of a sharded run.
    shard: Option<ShardOf>,
}

/// This process's shard and the run's assignment of units to shards.
#[derive(Clone, Debug)]
pub(crate) struct ShardOf {
    pub(crate) shard: Shard,
    pub(crate) assignment: Arc<Assignment>,
}

impl ShardOf {
    /// Whether unit `name` (a unit or copy unit's name) is this shard's.
    pub(crate) fn owns(&self, name: &str) -> bool {
        match parse_unit(name) {
            Some((f, u)) => self.assignment.shard_of(f, u) == Some(self.shard.index),
            None => name == copy_unit_name(Some(self.shard.index)),
        }
    }
}

/// The copy unit of a whole run (`copy`) or of a shard (`copy-sI`).
fn copy_unit_name(shard: Option<u32>) -> String {
    match shard {
        Some(i) => format!("{COPY_UNIT}-s{i}"),
        None => COPY_UNIT.to_string(),
    }
}

struct OpenUnit {
    id: UnitId,
    sink: Option<ParquetSink>,
    part: String,
    documents: u64,
    vectors: u64,
}

/// Which batches the prepare stage skips, and which rows of a batch it
/// embeds: units an interrupted run finished (or another shard's) are
/// skipped; an incremental run embeds its new and changed rows only.
#[derive(Default)]
pub(crate) struct UnitFilter {
    pub(crate) done: DoneUnits,
    /// An incremental run's rows to embed, by input file index.
    pub(crate) todo: Option<Arc<super::buckets::RowSet>>,
}

impl UnitFilter {
    /// Whether the batch's unit is done (or another shard's).
    pub(crate) fn done(&self, sb: &SourceBatch) -> bool {
        self.done.contains(&sb.file, sb.first_row)
    }

    /// The rows of the batch to embed; `None`: all of them.
    pub(crate) fn mask(&self, sb: &SourceBatch) -> Result<Option<Vec<bool>>> {
        let Some(t) = &self.todo else {
            return Ok(None);
        };
        let f = self
            .done
            .file_index(&sb.file)
            .ok_or_else(|| Error::internal(format!("a batch of an unlisted file {}", sb.file)))?;
        Ok(Some(t.mask(f as u32, sb.first_row, sb.batch.num_rows())))
    }
}

/// Which units the prepare stage skips: those an interrupted run finished.
#[derive(Clone, Debug, Default)]
pub(crate) struct DoneUnits {
    files: HashMap<Arc<str>, usize>,
    unit_rows: u64,
    done: HashSet<UnitId>,
    /// In a shard: the units of other shards are skipped too.
    shard: Option<ShardOf>,
}

impl DoneUnits {
    /// The index of an input file (by the name its batches carry).
    pub(crate) fn file_index(&self, file: &Arc<str>) -> Option<usize> {
        self.files.get(file).copied()
    }

    /// Whether the batch of `file` starting at `first_row` is another
    /// shard's.
    pub(crate) fn foreign(&self, file: &Arc<str>, first_row: u64) -> bool {
        let (Some(s), Some(&f)) = (&self.shard, self.files.get(file)) else {
            return false;
        };
        s.assignment.shard_of(f, first_row / self.unit_rows) != Some(s.shard.index)
    }

    /// Whether this is a shard's run.
    pub(crate) fn sharded(&self) -> bool {
        self.shard.is_some()
    }

    /// Whether the batch of `file` starting at `first_row` is to be
    /// skipped: its unit is done, or another shard's.
    pub(crate) fn contains(&self, file: &Arc<str>, first_row: u64) -> bool {
        if self.done.is_empty() && self.shard.is_none() {
            return false;
        }
        let Some(&f) = self.files.get(file) else {
            return false;
        };
        self.done.contains(&(f, first_row / self.unit_rows)) || self.foreign(file, first_row)
    }
}

/// Summary figures of a table run.
#[derive(Clone, Debug, Default)]
pub struct TableOutcome {
    /// `None` for a shard: the commit step makes the version.
    pub version: Option<i64>,
    pub units: usize,
    pub units_resumed: usize,
    pub vectors: u64,
}

/// The lease a run writes under: a shard's own (no whole run or commit may
/// be writing), or the table's (no shard may be).
async fn take_lease(
    target: &Arc<DeltaTarget>,
    record: &RunRecord,
    shard: Option<&ShardOf>,
) -> Result<Lease> {
    match shard {
        // Shards run side by side, each under its own lease; the table's
        // lease (a whole run, a commit) keeps them out.
        Some(s) => {
            let lease = target
                .acquire_shard_lease(&record.run, s.shard.index)
                .await?;
            if let Some(holder) = target.live_lease().await? {
                lease.release().await;
                return Err(Error::output(
                    target.display(),
                    format!(
                        "a whole run or a commit is writing this table: {holder}. Start the shards when it is done"
                    ),
                ));
            }
            Ok(lease)
        }
        None => {
            let lease = target.acquire_lease().await?;
            let shards = target.live_shard_leases().await?;
            if let Some((run, i, holder)) = shards.first() {
                lease.release().await;
                return Err(Error::output(
                    target.display(),
                    format!(
                        "shard {i} of the sharded run {run} is writing this table: {holder}. Wait for the shards and commit them (`embedflow commit JOB`)"
                    ),
                ));
            }
            Ok(lease)
        }
    }
}

/// The table as it is under the lease: a commit between the first read and
/// the lease would make this another run.
async fn base_under_lease(target: &DeltaTarget, record: &RunRecord) -> Result<Option<TableState>> {
    let now = target.current().await?;
    if now.as_ref().map(TableState::version) != record.base_version {
        return Err(Error::output(
            target.display(),
            "the table got a new version while this run started; run it again",
        ));
    }
    Ok(now)
}

impl TableRun {
    /// Takes the table's lease, reads the table, and picks up the records
    /// of an interrupted run of the same job (or clears those of another).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        target: Arc<DeltaTarget>,
        input: &Input,
        job_fingerprint: &str,
        model_sha256: &str,
        unit_rows: u64,
        schema: SchemaRef,
        mut write: WriteOptions,
        shard: Option<ShardOf>,
    ) -> Result<TableRun> {
        // A part of a killed attempt of this run is written again whole.
        write.overwrite = true;
        // Parts are many in one folder: it is swept once, here, not before
        // each part (which made a run quadratic in its parts).
        write.sweep = false;
        // Each part's record keeps the SHA-256 of its bytes as its proof.
        write.digest = true;
        if let Some(local) = &target.location.local {
            crate::sink::remove_stale_part_temporaries(local, delta::PART_PREFIX);
        }
        let first = target.current().await?;
        let files = input.file_indices();
        let record = RunRecord::new(
            input,
            job_fingerprint,
            model_sha256,
            unit_rows,
            first.as_ref().map(TableState::version),
            shard.as_ref().map_or(1, |s| s.shard.count),
        )?;
        drop(first);
        let lease = take_lease(&target, &record, shard.as_ref()).await?;
        let base = match base_under_lease(&target, &record).await {
            Ok(base) => base,
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        };
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
            shard,
        };
        let started = run.pick_up().await;
        if let Err(e) = started {
            run.abandon().await;
            return Err(e);
        }
        Ok(run)
    }

    fn run_dir(&self, run: &str) -> String {
        run_dir(run)
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
            self.clear_run(run, &live).await?;
        }
        let dir = self.run_dir(&self.record.run);
        if runs.contains(&self.record.run) {
            for name in t.list(&format!("{dir}/units")).await? {
                // A shard reads its own units' records only: the others'
                // are many (every shard's), and not its to resume.
                let unit = name
                    .rsplit('/')
                    .next()
                    .and_then(|f| f.strip_suffix(".json"));
                if let (Some(s), Some(unit)) = (&self.shard, unit)
                    && !s.owns(unit)
                {
                    continue;
                }
                let Some(bytes) = t.read_state(&name).await? else {
                    continue;
                };
                // A record cut short by a crash is ignored: its unit is redone.
                // A shard resumes its own units only, and only those whose
                // parts are still the files recorded.
                if let Ok(r) = serde_json::from_slice::<UnitRecord>(&bytes)
                    && self.shard.as_ref().is_none_or(|s| s.owns(&r.unit))
                    && self.proven(&r).await?
                {
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

    /// Clears the records of another run (and its parts, unless the table
    /// holds them: a run that committed and was stopped before it cleaned
    /// up). A shard refuses to clear another unfinished sharded run.
    async fn clear_run(&self, run: &str, live: &HashSet<&str>) -> Result<()> {
        let dir = self.run_dir(run);
        let old = self
            .target
            .read_state(&format!("{dir}/run.json"))
            .await?
            .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok());
        let committed = live
            .iter()
            .any(|f| f.starts_with(&format!("{}{run}-", delta::PART_PREFIX)));
        // A shard never clears another sharded run: its shards may be
        // running or waiting for their commit.
        if !committed
            && self.shard.is_some()
            && let Some(o) = old.as_ref().filter(|o| o.shards > 1)
        {
            return Err(Error::output(
                self.target.display(),
                format!(
                    "the table holds the unfinished sharded run {run} ({} shards), which this shard is not part of: {}. Commit it with the job it ran (`embedflow commit JOB`), or discard it with `embedflow unlock JOB --discard`",
                    o.shards,
                    o.differs(&self.record)
                ),
            ));
        }
        if !committed {
            match &old {
                Some(o) => crate::note!(
                    "not resuming the interrupted run into {}: {}; starting afresh",
                    self.target.display(),
                    o.differs(&self.record)
                ),
                None => tracing::warn!("removing the records of an unreadable run {run}"),
            }
            self.remove_parts_of(run).await?;
        }
        self.target.remove_all(&dir).await?;
        Ok(())
    }

    /// Whether every part of a finished unit is the file its record
    /// describes: there, of its size and (on the local disk) of its
    /// SHA-256. A unit that fails is redone, its stray part removed, and
    /// the user told.
    async fn proven(&self, r: &UnitRecord) -> Result<bool> {
        for part in &r.parts {
            if let Some(why) = self.target.disproves(part, true).await? {
                crate::note!(
                    "redoing unit {} of the interrupted run into {}: {why}",
                    r.unit,
                    self.target.display()
                );
                for p in &r.parts {
                    self.target.delete(&p.path).await?;
                }
                return Ok(false);
            }
        }
        Ok(true)
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

    /// Units already done, for the prepare stage to skip.
    pub(crate) fn done_units(&self) -> DoneUnits {
        DoneUnits {
            files: self.files.clone(),
            unit_rows: self.record.unit_rows,
            done: self.done.keys().filter_map(|k| parse_unit(k)).collect(),
            shard: self.shard.clone(),
        }
    }

    pub(crate) fn resumed(&self) -> usize {
        self.done.len()
    }

    pub(crate) fn display(&self) -> &str {
        self.target.display()
    }

    /// Writes a batch into its unit's part; a batch of a new unit finishes
    /// the one before.
    pub(crate) async fn write(
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

    pub(crate) fn target(&self) -> Arc<DeltaTarget> {
        Arc::clone(&self.target)
    }

    /// The state the run started from.
    pub(crate) fn base(&self) -> Option<&TableState> {
        self.base.as_ref()
    }

    /// Copies the unchanged rows of an incremental run into parts of this
    /// run (one "copy" unit: done again whole if interrupted; nothing is
    /// embedded for it).
    pub(crate) async fn copy(
        &mut self,
        stores: &Stores,
        mut rows: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
        documents: u64,
    ) -> Result<()> {
        let unit = copy_unit_name(self.shard.as_ref().map(|s| s.shard.index));
        if self.done.contains_key(&unit) {
            return Ok(());
        }
        let mut parts = Vec::new();
        let mut open: Option<(ParquetSink, String)> = None;
        let mut in_part = 0u64;
        let mut vectors = 0u64;
        while let Some(batch) = rows.recv().await {
            crate::cancel::check()?;
            let batch = batch?;
            let batch = conform(batch, &self.schema)?;
            if open.is_none() {
                let name = self.part_name(&format!("{unit}-{}", parts.len()));
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
            unit,
            parts,
            documents,
            vectors,
        })
        .await
    }

    async fn finish_part(&self, sink: ParquetSink, name: String) -> Result<PartFile> {
        let (rows, sha256) = sink.commit_with_digest().await?;
        let size = self.target.size_of(&name).await?;
        Ok(PartFile {
            path: name,
            size,
            rows,
            sha256: Some(sha256),
        })
    }

    /// Finishes the last unit and commits every part as one table version;
    /// then clears the run's records and releases the lease.
    pub(crate) async fn commit(
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
            version: None,
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
        let confirmed = match &self.lease {
            Some(l) => l.confirm().await,
            None => Err(Error::internal("a table run commits without its lease")),
        };
        let committed = match confirmed {
            Ok(()) => {
                self.target
                    .commit_overwrite(self.base.as_ref(), &self.schema, &parts, properties, &app)
                    .await
            }
            Err(e) => Err(e),
        };
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
        if let Err(e) = self.target.remove_all(&dir).await {
            tracing::warn!("cannot clear the run's records: {e}");
        }
        if let Some(l) = self.lease.take() {
            l.release().await;
        }
        Ok(TableOutcome {
            version: Some(version),
            ..outcome
        })
    }

    /// Ends a shard: the open unit finished, its keys (an incremental run's)
    /// and its marker written for the commit step, its lease released.
    /// Nothing is committed.
    pub(crate) async fn finish_shard(
        mut self,
        mut marker: ShardMarker,
        keys: Option<&std::path::Path>,
    ) -> Result<TableOutcome> {
        let shard = match &self.shard {
            Some(s) => s.shard.index,
            None => return Err(Error::internal("finish_shard in a whole run")),
        };
        let dir = self.run_dir(&self.record.run);
        let done = async {
            self.finish_unit().await?;
            crate::cancel::check()?;
            if let Some(k) = keys {
                let name = format!("{dir}/keys/s{shard}.parquet");
                let bytes = std::fs::read(k).map_err(Error::internal)?;
                self.target.write_state(&name, bytes).await?;
                marker.keys = Some(name);
            }
            let mut units: Vec<&UnitRecord> = self.done.values().chain(&self.finished).collect();
            units.sort_by_key(|r| unit_key(&r.unit));
            marker.units = units.iter().map(|r| r.unit.clone()).collect();
            marker.units_resumed = self.done.len();
            let outcome = TableOutcome {
                version: None,
                units: units.len(),
                units_resumed: self.done.len(),
                vectors: units.iter().map(|r| r.vectors).sum(),
            };
            marker.vectors = outcome.vectors;
            if let Some(l) = &self.lease {
                l.confirm().await?;
            }
            self.target
                .write_state(
                    &shard_marker_name(&dir, shard),
                    serde_json::to_vec_pretty(&marker).map_err(Error::internal)?,
                )
                .await?;
            Ok::<_, Error>(outcome)
        }
        .await;
        match done {
            Ok(outcome) => {
                if let Some(l) = self.lease.take() {
                    l.release().await;
                }
                Ok(outcome)
            }
            Err(e) => {
                self.abandon().await;
                Err(e)
            }
        }
    }

    /// Stops: the open part is dropped, the records stay for a resume, the
    /// lease is released.
    pub(crate) async fn abandon(&mut self) {
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

/// The table's schema is the new output's: the copied rows are written as
/// they are.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::internal)?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| {
        Error::internal(format!(
            "the table's rows do not fit the output's columns ({e}); run with output.mode = \"full\""
        ))
    })
}

/// A run's folder in the table's state.
pub(crate) fn run_dir(run: &str) -> String {
    format!("{}/runs/{run}", delta::STATE_DIR)
}

/// Where a shard's marker lives in its run's folder.
pub(crate) fn shard_marker_name(run_dir: &str, shard: u32) -> String {
    format!("{run_dir}/shards/s{shard}.json")
}

/// What a finished shard leaves for the commit step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ShardMarker {
    pub(crate) shard: u32,
    pub(crate) count: u32,
    /// Its finished units (resumed ones included), in input order.
    pub(crate) units: Vec<String>,
    pub(crate) units_resumed: usize,
    pub(crate) vectors: u64,
    /// An incremental run's comparison of this shard's rows.
    pub(crate) changes: Option<crate::progress::Changes>,
    /// The state file of its keys (an incremental run's).
    pub(crate) keys: Option<String>,
    /// The output schema, as an Arrow IPC stream (hex).
    pub(crate) schema: String,
    /// The table properties and commit info the version will carry.
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) app: Vec<(String, serde_json::Value)>,
}

/// Units in input order: file, then unit index (the copy unit last).
pub(crate) fn unit_key(name: &str) -> (usize, u64) {
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
            shards: 1,
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
