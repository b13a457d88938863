//! The step after the shards: `embedflow commit` checks that every shard
//! finished and that every unit of the plan was done exactly once, then
//! makes one Delta version of all their parts; `embedflow status` says
//! where each shard stands.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::delta::{self, DeltaTarget, PartFile, TableState};
use crate::progress::Changes;
use crate::shard::Shard;
use crate::{Error, Result};

use super::buckets::{self, Spill};
use super::fingerprint;
use super::incremental;
use super::run::{self, RunRecord, ShardMarker, ShardOf, UnitRecord};
use super::shards;
use crate::pipeline::check::CheckedJob;

/// A sharded run of the job, as the table holds it.
struct Found {
    record: RunRecord,
    plan: ShardOf,
    /// Each shard's marker, once it finished.
    markers: Vec<Option<ShardMarker>>,
    /// Unit records by name.
    records: HashMap<String, UnitRecord>,
}

impl Found {
    fn dir(&self) -> String {
        run::run_dir(self.record.run())
    }

    /// The units planned for shard `i` that have no record, by name.
    fn missing(&self, i: u32) -> Vec<String> {
        self.plan
            .assignment
            .units_of(i)
            .into_iter()
            .map(run::unit_name)
            .filter(|n| !self.records.contains_key(n))
            .collect()
    }

    fn recorded(&self, i: u32) -> usize {
        self.plan
            .assignment
            .units_of(i)
            .into_iter()
            .filter(|u| self.records.contains_key(&run::unit_name(*u)))
            .count()
    }
}

/// Finds the sharded run of this job over this input from `base`, and
/// reads its markers and records.
async fn find(
    c: &CheckedJob,
    target: &DeltaTarget,
    base: Option<&TableState>,
    count: Option<u32>,
) -> Result<Found> {
    let plan = &c.plan;
    let job = fingerprint::job_fingerprint(plan, c.max_tokens, c.overlap);
    let model = c.model.clone();
    let sha = crate::runtime::spawn_cpu(move || model.digest())
        .await?
        .folder;
    let mut others = Vec::new();
    let mut runs: Vec<String> = target
        .list(&format!("{}/runs", delta::STATE_DIR))
        .await?
        .into_iter()
        .filter(|n| n.ends_with("/run.json"))
        .collect();
    runs.sort();
    for name in runs {
        let Some(bytes) = target.read_state(&name).await? else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<RunRecord>(&bytes) else {
            continue;
        };
        if rec.shards() <= 1 {
            continue;
        }
        let want = RunRecord::new(
            &c.input,
            &job,
            &sha,
            plan.output.unit_rows,
            base.map(TableState::version),
            rec.shards(),
        )?;
        if want.run() != rec.run() {
            others.push(format!(
                "run {} ({} shards): {}",
                rec.run(),
                rec.shards(),
                rec.differs(&want)
            ));
            continue;
        }
        if let Some(n) = count
            && n != rec.shards()
        {
            return Err(Error::Usage(format!(
                "the table's run of this job has {} shards, not {n}",
                rec.shards()
            )));
        }
        return read_run(c, target, rec).await;
    }
    let mut message = format!(
        "no sharded run of this job to commit (from table version {})",
        base.map_or_else(|| "none".into(), |b| b.version().to_string())
    );
    if others.is_empty() {
        message
            .push_str(": have the shards run? `embedflow status JOB` shows what the table holds");
    } else {
        message.push_str("; the table holds other runs, which this job did not make: ");
        message.push_str(&some_of_by(&others, "; "));
    }
    Err(Error::output(target.display(), message))
}

/// A sharded run's plan (units to shards), its shards' markers and its
/// unit records.
async fn read_run(c: &CheckedJob, target: &DeltaTarget, rec: RunRecord) -> Result<Found> {
    let shard = Shard {
        index: 0,
        count: rec.shards(),
        from: String::new(),
    };
    let plan = shards::assign(&c.input, c.plan.output.unit_rows, shard).await?;
    let dir = run::run_dir(rec.run());
    let mut markers = Vec::with_capacity(rec.shards() as usize);
    for i in 0..rec.shards() {
        let m = target
            .read_state(&run::shard_marker_name(&dir, i))
            .await?
            .map(|b| serde_json::from_slice::<ShardMarker>(&b))
            .transpose()
            .map_err(|e| {
                Error::output(
                    target.display(),
                    format!("shard {i}'s marker is unreadable ({e}); run that shard again"),
                )
            })?;
        markers.push(m);
    }
    let mut records = HashMap::new();
    for name in target.list(&format!("{dir}/units")).await? {
        if let Some(b) = target.read_state(&name).await?
            && let Ok(r) = serde_json::from_slice::<UnitRecord>(&b)
        {
            records.insert(r.unit.clone(), r);
        }
    }
    Ok(Found {
        record: rec,
        plan,
        markers,
        records,
    })
}

/// Which units to name in a message: the first few, and how many more.
fn some_of(names: &[String]) -> String {
    some_of_by(names, ", ")
}

/// [`some_of`] with its own separator: a message stays a few lines long
/// however many units or shards it is about.
fn some_of_by(names: &[String], separator: &str) -> String {
    const SHOWN: usize = 6;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(separator);
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// What `embedflow commit` did.
#[derive(Clone, Debug)]
pub struct CommitReport {
    pub table: String,
    pub version: i64,
    pub shards: u32,
    pub units: usize,
    pub vectors: u64,
    pub changes: Option<Changes>,
}

impl fmt::Display for CommitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "committed {} shards into {} as Delta table version {} ({} units, {} vectors)",
            self.shards, self.table, self.version, self.units, self.vectors
        )?;
        if let Some(c) = &self.changes {
            write!(
                f,
                "\n  incremental      {} rows: {} unchanged (copied), {} changed, {} new, {} deleted",
                c.rows, c.unchanged, c.changed, c.new, c.deleted
            )?;
        }
        Ok(())
    }
}

/// `embedflow commit`: one version of every shard's parts, or an error
/// naming what is missing. `count` is the shard count the user expects.
pub async fn commit(c: CheckedJob, count: Option<u32>) -> Result<CommitReport> {
    let target = Arc::new(DeltaTarget::resolve(&c.stores, &c.plan.output.path)?);
    let lease = target.acquire_lease().await?;
    let done = commit_under_lease(&c, &target, count, &lease).await;
    lease.release().await;
    done
}

async fn commit_under_lease(
    c: &CheckedJob,
    target: &Arc<DeltaTarget>,
    count: Option<u32>,
    lease: &crate::delta::Lease,
) -> Result<CommitReport> {
    let base = target.current().await?;
    let found = find(c, target, base.as_ref(), count).await?;
    let n = found.record.shards();
    refuse_running_shards(target, &found).await?;
    // Every shard finished.
    refuse_unfinished(target, &found, n)?;
    let markers: Vec<&ShardMarker> = found.markers.iter().flatten().collect();
    // Each unit once, by its own shard, with its record.
    let (seen, mut parts) = recorded_parts(target, &found, &markers, n)?;
    let incremental = markers.iter().any(|m| m.changes.is_some());
    if !incremental {
        refuse_missing_units(target, &found, n)?;
    }
    // One table version's worth of properties: the shards must agree.
    refuse_other_settings(target, &markers)?;
    let first = markers[0];
    let changes = if incremental {
        Some(compare_all(c, target, base.as_ref(), &markers, &found).await?)
    } else {
        None
    };
    crate::cancel::check()?;
    parts.sort_by_key(|(u, _)| run::unit_key(u));
    let parts: Vec<PartFile> = parts.into_iter().map(|(_, p)| p).collect();
    let schema = shards::schema_from_hex(&first.schema)?;
    let mut app = first.app.clone();
    app.push(("embedflow.run".into(), found.record.run().into()));
    app.push(("embedflow.shards".into(), n.into()));
    app.push(("embedflow.units".into(), seen.len().into()));
    lease.confirm().await?;
    let version = target
        .commit_overwrite(base.as_ref(), &schema, &parts, &first.properties, &app)
        .await?;
    // Committed: a failure to clear the records is cleared by the next run
    // (it sees the parts are live).
    if let Err(e) = target.remove_all(&found.dir()).await {
        tracing::warn!("cannot clear the run's records: {e}");
    }
    Ok(CommitReport {
        table: target.display().to_string(),
        version,
        shards: n,
        units: seen.len(),
        vectors: markers.iter().map(|m| m.vectors).sum(),
        changes,
    })
}

/// A shard of the run still holding its lease is still running.
async fn refuse_running_shards(target: &DeltaTarget, found: &Found) -> Result<()> {
    if let Some((_, i, holder)) = target
        .live_shard_leases()
        .await?
        .into_iter()
        .find(|(run, _, _)| run == found.record.run())
    {
        return Err(Error::output(
            target.display(),
            format!("shard {i} is still running: {holder}; commit when every shard is done"),
        ));
    }
    Ok(())
}

/// Every shard left its marker; those that did not are named, with the
/// units they recorded and miss.
fn refuse_unfinished(target: &DeltaTarget, found: &Found, n: u32) -> Result<()> {
    let unfinished: Vec<String> = (0..n)
        .filter(|&i| found.markers[i as usize].is_none())
        .map(|i| {
            let missing = found.missing(i);
            let planned = found.plan.assignment.units_of(i).len();
            let whole = found.plan.assignment.whole_files_of(i).len();
            let mut s = format!(
                "shard {i}: {} of {planned} units recorded",
                found.recorded(i)
            );
            if whole > 0 {
                s.push_str(&format!(" (and {whole} CSV files read whole)"));
            }
            if !missing.is_empty() {
                s.push_str(&format!(", missing {}", some_of(&missing)));
            }
            s
        })
        .collect();
    if !unfinished.is_empty() {
        return Err(Error::output(
            target.display(),
            format!(
                "cannot commit: {} of {n} shards have not finished ({}). Run those shards again (each resumes its own units), then commit",
                unfinished.len(),
                some_of_by(&unfinished, "; ")
            ),
        ));
    }
    Ok(())
}

/// The parts to commit, each with the unit that wrote it.
type UnitParts = Vec<(String, PartFile)>;

/// Each unit once, by its own shard, with its record: the parts to commit,
/// by unit, and the units seen.
fn recorded_parts<'a>(
    target: &DeltaTarget,
    found: &Found,
    markers: &[&'a ShardMarker],
    n: u32,
) -> Result<(HashSet<&'a str>, UnitParts)> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut parts: Vec<(String, PartFile)> = Vec::new();
    for m in markers {
        for u in &m.units {
            let of = ShardOf {
                shard: Shard {
                    index: m.shard,
                    count: n,
                    from: String::new(),
                },
                assignment: Arc::clone(&found.plan.assignment),
            };
            if !of.owns(u) {
                return Err(Error::output(
                    target.display(),
                    format!(
                        "shard {} recorded unit {u}, which is not its own: the shards did not plan alike; run them again",
                        m.shard
                    ),
                ));
            }
            if !seen.insert(u) {
                return Err(Error::output(
                    target.display(),
                    format!("unit {u} is recorded twice"),
                ));
            }
            let r = found.records.get(u).ok_or_else(|| {
                Error::output(
                    target.display(),
                    format!(
                        "shard {} finished unit {u}, but its record is gone; run shard {} again",
                        m.shard, m.shard
                    ),
                )
            })?;
            parts.extend(r.parts.iter().map(|p| (u.clone(), p.clone())));
        }
    }
    Ok((seen, parts))
}

/// A full run records every unit it planned (empty ones too).
fn refuse_missing_units(target: &DeltaTarget, found: &Found, n: u32) -> Result<()> {
    for i in 0..n {
        let missing = found.missing(i);
        if !missing.is_empty() {
            return Err(Error::output(
                target.display(),
                format!(
                    "shard {i} finished without units {}; run it again",
                    some_of(&missing)
                ),
            ));
        }
    }
    Ok(())
}

/// The shards wrote with one fingerprint (model, options, columns).
fn refuse_other_settings(target: &DeltaTarget, markers: &[&ShardMarker]) -> Result<()> {
    let first = markers[0];
    let fp = |m: &ShardMarker| {
        m.properties
            .iter()
            .find(|(k, _)| k == fingerprint::FINGERPRINT)
            .map(|(_, v)| v.clone())
    };
    if let Some(m) = markers.iter().find(|m| fp(m) != fp(first)) {
        return Err(Error::output(
            target.display(),
            format!(
                "shards 0 and {} wrote with different settings (model, options or columns); run the shards again with one job",
                m.shard
            ),
        ));
    }
    Ok(())
}

/// Each shard's keys file, copied from the table's state into `dir`.
async fn fetch_keys(
    target: &DeltaTarget,
    markers: &[&ShardMarker],
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>> {
    let mut keys = Vec::new();
    for m in markers {
        let name = m.keys.as_ref().ok_or_else(|| {
            Error::output(
                target.display(),
                format!("shard {} left no keys; run it again", m.shard),
            )
        })?;
        let bytes = target.read_state(name).await?.ok_or_else(|| {
            Error::output(
                target.display(),
                format!("shard {}'s keys are gone; run it again", m.shard),
            )
        })?;
        let path = dir.join(format!("keys-s{}.parquet", m.shard));
        std::fs::write(&path, &bytes).map_err(Error::internal)?;
        keys.push(path);
    }
    Ok(keys)
}

/// The whole run's comparison, from the shards' keys: a repeated id across
/// shards is refused, and rows deleted from the source are counted.
async fn compare_all(
    c: &CheckedJob,
    target: &DeltaTarget,
    base: Option<&TableState>,
    markers: &[&ShardMarker],
    found: &Found,
) -> Result<Changes> {
    let dir = tempfile::Builder::new()
        .prefix("embedflow-commit-")
        .tempdir()
        .map_err(|e| Error::internal(format!("cannot make a temporary folder: {e}")))?;
    let keys = fetch_keys(target, markers, dir.path()).await?;
    let old = match base {
        Some(b) if !b.files.is_empty() => {
            Some(crate::source::table_state_input(&c.stores, target, b).await?)
        }
        _ => None,
    };
    let new_rows: u64 = markers
        .iter()
        .filter_map(|m| m.changes.as_ref().map(|c| c.rows))
        .sum();
    let old_rows = old.as_ref().and_then(|o| o.total_rows).unwrap_or(0);
    let n = buckets::buckets_for(new_rows.max(old_rows));
    let new = {
        let (keys, d) = (keys.clone(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let mut spill = Spill::create(&d, "new", n)?;
            for k in &keys {
                incremental::spill_keys_file(k, &mut spill)?;
            }
            spill.finish()
        })
        .await
        .map_err(Error::internal)??
    };
    let id = c
        .plan
        .input
        .id_column
        .clone()
        .ok_or_else(|| Error::internal("an incremental run without input.id_column"))?;
    let old_buckets = incremental::spill_old(old.as_ref(), &id, dir.path(), n).await?;
    let joined = tokio::task::spawn_blocking(move || {
        buckets::join(&new, &old_buckets, crate::cancel::check)
    })
    .await
    .map_err(Error::internal)??;
    let outcome = joined.map_err(|r| {
        let name = |p: buckets::Pos| c.input.display_of(p.file as usize);
        Error::Data(format!(
            "input {}: the id column {id} holds {} more than once (row {} of {} and row {} of {}, in shards {} and {}); an incremental run needs one row per id",
            name(r.first),
            r.id,
            r.first.row + 1,
            name(r.first),
            r.again.row + 1,
            name(r.again),
            shard_of_pos(found, r.first),
            shard_of_pos(found, r.again),
        ))
    })?;
    Ok(Changes {
        rows: outcome.rows,
        unchanged: outcome.unchanged,
        changed: outcome.changed,
        new: outcome.new,
        deleted: outcome.deleted,
        files_reused: 0,
    })
}

fn shard_of_pos(found: &Found, p: buckets::Pos) -> String {
    let unit = p.row / found.record.unit_rows();
    found
        .plan
        .assignment
        .shard_of(p.file as usize, unit)
        .map_or_else(|| "?".into(), |s| s.to_string())
}

/// `embedflow status`: each shard of the job's run, done or not, and what
/// is missing.
pub async fn status(c: CheckedJob) -> Result<String> {
    let target = DeltaTarget::resolve(&c.stores, &c.plan.output.path)?;
    let base = target.current().await?;
    let mut out = format!(
        "table {}: {}\n",
        target.display(),
        match &base {
            Some(b) => format!("version {}", b.version()),
            None => "no table yet".into(),
        }
    );
    if let Some(holder) = target.live_lease().await? {
        out.push_str(&format!("  lease: a whole run or a commit by {holder}\n"));
    }
    let found = match find(&c, &target, base.as_ref(), None).await {
        Ok(f) => f,
        Err(e) => {
            out.push_str(&format!("  {e}"));
            return Ok(out);
        }
    };
    let live: BTreeMap<u32, String> = target
        .live_shard_leases()
        .await?
        .into_iter()
        .filter(|(run, _, _)| run == found.record.run())
        .map(|(_, i, h)| (i, h))
        .collect();
    let n = found.record.shards();
    out.push_str(&format!("  run {} in {n} shards\n", found.record.run()));
    let mut finished = 0;
    for i in 0..n {
        let planned = found.plan.assignment.units_of(i).len();
        let line = match (&found.markers[i as usize], live.get(&i)) {
            (Some(m), _) => {
                finished += 1;
                format!(
                    "done: {} units ({} resumed), {} vectors",
                    m.units.len(),
                    m.units_resumed,
                    m.vectors
                )
            }
            (None, Some(h)) => format!(
                "running on {h}: {} of {planned} units recorded",
                found.recorded(i)
            ),
            (None, None) => {
                let missing = found.missing(i);
                format!(
                    "not finished: {} of {planned} units recorded{}",
                    found.recorded(i),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(", missing {}", some_of(&missing))
                    }
                )
            }
        };
        out.push_str(&format!("  shard {i}: {line}\n"));
    }
    out.push_str(&if finished == n {
        "  every shard is done: `embedflow commit JOB` makes the version".to_string()
    } else {
        format!("  {finished} of {n} shards done: rerun the others (each resumes its own units), then commit")
    });
    Ok(out)
}

/// `embedflow unlock --discard`: removes the records and parts of every
/// run the table never committed (none may be running). Returns what went.
pub async fn discard_runs(target: &DeltaTarget) -> Result<Vec<String>> {
    if let Some(holder) = target.live_lease().await? {
        return Err(Error::output(
            target.display(),
            format!("a run is writing this table: {holder}; discard when it is done"),
        ));
    }
    if let Some((run, i, holder)) = target.live_shard_leases().await?.into_iter().next() {
        return Err(Error::output(
            target.display(),
            format!("shard {i} of run {run} is running: {holder}; discard when it is done"),
        ));
    }
    let live: HashSet<String> = target
        .current()
        .await?
        .map(|b| b.files.iter().map(|f| f.path.clone()).collect())
        .unwrap_or_default();
    let mut runs: Vec<String> = target
        .list(&format!("{}/runs", delta::STATE_DIR))
        .await?
        .iter()
        .filter_map(|n| n.split('/').nth(2).map(str::to_string))
        .collect();
    runs.sort();
    runs.dedup();
    let mut gone = Vec::new();
    let names = target.list("").await?;
    for run in runs {
        let prefix = format!("{}{run}-", delta::PART_PREFIX);
        let mut parts = 0;
        for name in names
            .iter()
            .filter(|n| !n.contains('/') && n.starts_with(&prefix))
        {
            if !live.contains(name) {
                target.delete(name).await?;
                parts += 1;
            }
        }
        target.remove_all(&run::run_dir(&run)).await?;
        gone.push(format!("run {run} ({parts} uncommitted part files)"));
    }
    Ok(gone)
}
