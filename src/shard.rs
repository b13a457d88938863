//! One job as N shards: which shard this process is (from `--shard I/N`,
//! the job's `[shard]`, or the scheduler's environment), and which units of
//! the input are its own.
//!
//! Every shard computes the same assignment from the input listing alone
//! (Parquet footers: row groups and their sizes), so shards need not talk
//! to each other: the units (see `pipeline::table`) are put in input order
//! and cut into N contiguous ranges of near-equal counts. A CSV file has no
//! row count until read, so its units all go to one shard (file index
//! mod N).

use std::collections::HashMap;
use std::fmt;

use crate::{Error, Result};

/// This process's shard of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: u32,
    pub count: u32,
    /// Where index and count came from, for the message at start.
    pub from: String,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {} of {}", self.index, self.count)
    }
}

/// What the command line and the job file say.
#[derive(Clone, Debug, Default)]
pub struct ShardRequest {
    /// `--shard I/N`.
    pub flag: Option<String>,
    /// `--shards N` (for schedulers that give an index only).
    pub count: Option<u32>,
    /// `[shard] index` and `count` in the job.
    pub job_index: Option<u32>,
    pub job_count: Option<u32>,
}

/// The environment variable a Kubernetes manifest sets for the count
/// (Kubernetes gives each pod its index only).
pub const SHARDS_ENV: &str = "EMBEDFLOW_SHARDS";

/// The most shards a job is split into: far more machines than any array
/// runs at once, and a commit that reads every shard's records stays small.
pub const MAX_SHARDS: u32 = 10_000;

/// The variables a scheduler sets for a task's index.
const SCHEDULER_INDEX_VARS: [(&str, &str); 3] = [
    ("Slurm", "SLURM_ARRAY_TASK_ID"),
    ("AWS Batch", "AWS_BATCH_JOB_ARRAY_INDEX"),
    ("Kubernetes", "JOB_COMPLETION_INDEX"),
];

/// Refuses the index variables of two schedulers at once: which one runs
/// this task cannot be told, and choosing one silently may run a shard twice.
fn refuse_two_schedulers(num: &impl Fn(&str) -> Result<Option<i64>>) -> Result<()> {
    let mut set = Vec::new();
    for (who, var) in SCHEDULER_INDEX_VARS {
        if let Some(v) = num(var)? {
            set.push(format!("{who} ({var}={v})"));
        }
    }
    if set.len() > 1 {
        return Err(Error::Usage(format!(
            "the environment holds the task indices of {}: which scheduler runs this task cannot be told; unset the others' variables, or pass --shard I/N",
            set.join(" and ")
        )));
    }
    Ok(())
}

/// Parses `I/N`.
pub fn parse_flag(s: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::Usage(format!(
            "--shard {s}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. --shard 0/4"
        ))
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    if n > MAX_SHARDS {
        return Err(too_many_shards(n, &format!("--shard {s}")));
    }
    Ok((i, n))
}

/// Which shard this process is, or `None` for a whole run. `env` reads an
/// environment variable (the real one, or a test's).
pub fn resolve(req: &ShardRequest, env: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
    let num = |name: &str| -> Result<Option<i64>> {
        match env(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| Error::Usage(format!("{name}={v}: expected a whole number"))),
        }
    };
    if let Some(flag) = &req.flag {
        let (index, count) = parse_flag(flag)?;
        return Ok(Some(Shard {
            index,
            count,
            from: format!("--shard {flag}"),
        }));
    }
    let given = given_count(req, &num)?;
    refuse_two_schedulers(&num)?;
    let scheduler = scheduler_index(&num)?;
    let index = match (req.job_index, &scheduler) {
        (Some(i), _) => Some((i as i64, format!("[shard] index = {i}"))),
        (None, Some((i, _, from))) => Some((*i, from.clone())),
        (None, None) => None,
    };
    let count = match (&given, &scheduler) {
        (Some((n, from)), Some((_, Some(c), sched))) if i64::from(*n) != *c => {
            return Err(Error::Usage(format!(
                "{from} disagrees with the scheduler ({sched}): one job, one shard count"
            )));
        }
        (Some((n, from)), _) => Some((*n as i64, from.clone())),
        (None, Some((_, Some(c), _))) => Some((*c, String::new())),
        (None, _) => None,
    };
    match (index, count) {
        (None, None) => Ok(None),
        (None, Some((1, _))) => Ok(None),
        (None, Some((n, from))) => Err(Error::Usage(format!(
            "the job is split into {n} shards ({from}) but this run has no shard index: pass --shard I/{n}, or run it as an array task (Slurm, AWS Batch) or an Indexed Job (Kubernetes)"
        ))),
        (Some((_, from)), None) => Err(Error::Usage(format!(
            "{from}, but no shard count: Kubernetes gives the index only, so pass --shards N, set {SHARDS_ENV}=N in the manifest, or set [shard] count = N in the job"
        ))),
        (Some((i, from_i)), Some((n, from_n))) => {
            if n > i64::from(MAX_SHARDS) {
                return Err(too_many_shards(
                    n,
                    if from_n.is_empty() { &from_i } else { &from_n },
                ));
            }
            if i < 0 || i >= n {
                return Err(Error::Usage(format!(
                    "shard index {i} ({from_i}) is not below the shard count {n}"
                )));
            }
            let from = if from_n.is_empty() || from_i.contains(&from_n) {
                from_i
            } else {
                format!("{from_i}; {from_n}")
            };
            Ok(Some(Shard {
                index: i as u32,
                count: n as u32,
                from,
            }))
        }
    }
}

/// The count a user gave (flag, job, manifest variable), if any, with
/// where it came from.
fn given_count(
    req: &ShardRequest,
    num: &impl Fn(&str) -> Result<Option<i64>>,
) -> Result<Option<(u32, String)>> {
    let given: Option<(u32, String)> = match (req.count, req.job_count, num(SHARDS_ENV)?) {
        (Some(n), _, _) => Some((n, format!("--shards {n}"))),
        (None, Some(n), _) => Some((n, format!("[shard] count = {n}"))),
        (None, None, Some(n)) => Some((
            u32::try_from(n)
                .map_err(|_| Error::Usage(format!("{SHARDS_ENV}={n}: out of range")))?,
            format!("{SHARDS_ENV}={n}"),
        )),
        _ => None,
    };
    if let Some((0, from)) = &given {
        return Err(Error::Usage(format!("{from}: a job has at least 1 shard")));
    }
    Ok(given)
}

/// What the scheduler says of this task: (index, count if it gives one,
/// description); Slurm first, then AWS Batch, then Kubernetes.
fn scheduler_index(
    num: &impl Fn(&str) -> Result<Option<i64>>,
) -> Result<Option<(i64, Option<i64>, String)>> {
    Ok(if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        let count = num("SLURM_ARRAY_TASK_COUNT")?;
        if (id - min) % step != 0 {
            return Err(Error::Usage(format!(
                "SLURM_ARRAY_TASK_ID={id} is not on the array's steps (min {min}, step {step}): shard a job with an array range such as --array=0-3"
            )));
        }
        Some((
            (id - min) / step,
            count,
            format!(
                "Slurm: SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}{}, SLURM_ARRAY_TASK_COUNT={}",
                if step == 1 {
                    String::new()
                } else {
                    format!(", SLURM_ARRAY_TASK_STEP={step}")
                },
                count.map_or_else(|| "unset".into(), |c| c.to_string())
            ),
        ))
    } else if let Some(i) = num("AWS_BATCH_JOB_ARRAY_INDEX")? {
        let size = num("AWS_BATCH_JOB_ARRAY_SIZE")?;
        Some((
            i,
            size,
            format!(
                "AWS Batch: AWS_BATCH_JOB_ARRAY_INDEX={i}, AWS_BATCH_JOB_ARRAY_SIZE={}",
                size.map_or_else(|| "unset".into(), |c| c.to_string())
            ),
        ))
    } else {
        num("JOB_COMPLETION_INDEX")?.map(|i| {
            (
                i,
                None,
                format!("Kubernetes Indexed Job: JOB_COMPLETION_INDEX={i}"),
            )
        })
    })
}

fn too_many_shards(n: impl std::fmt::Display, from: &str) -> Error {
    Error::Usage(format!(
        "{from}: {n} shards is more than the {MAX_SHARDS} a job is split into; give each shard many units (output.unit_rows rows each)"
    ))
}

/// The shape of one input file, as the assignment needs it.
#[derive(Clone, Debug)]
pub enum FileShape {
    /// Row counts of the row groups, in order (a Parquet footer).
    RowGroups(Vec<u64>),
    /// Rows unknown until read (CSV).
    Unknown,
}

/// The assignment of units to shards, the same in every shard.
#[derive(Clone, Debug)]
pub struct Assignment {
    count: u32,
    unit_rows: u64,
    batch_rows: u64,
    /// Per file: its units and their shards, or the shard of the whole file.
    files: Vec<FileUnits>,
}

#[derive(Clone, Debug)]
enum FileUnits {
    Known {
        groups: Vec<u64>,
        shard_of: HashMap<u64, u32>,
    },
    Whole(u32),
}

impl Assignment {
    /// Units are those of the reader: batches of `batch_rows` rows cut per
    /// row group, each batch in the unit of its first row.
    pub fn new(files: &[FileShape], unit_rows: u64, batch_rows: u64, count: u32) -> Assignment {
        let mut units: Vec<(usize, u64)> = Vec::new();
        for (f, shape) in files.iter().enumerate() {
            if let FileShape::RowGroups(groups) = shape {
                let mut start = 0u64;
                let mut last = None;
                for &n in groups {
                    let mut b = start;
                    while b < start + n {
                        let u = b / unit_rows;
                        if last != Some(u) {
                            units.push((f, u));
                            last = Some(u);
                        }
                        b += batch_rows;
                    }
                    start += n;
                }
            }
        }
        let total = units.len() as u64;
        let mut shard_of: Vec<HashMap<u64, u32>> = vec![HashMap::new(); files.len()];
        for (o, &(f, u)) in units.iter().enumerate() {
            let s = (o as u64 * u64::from(count) / total.max(1)) as u32;
            shard_of[f].insert(u, s);
        }
        let files = files
            .iter()
            .zip(shard_of)
            .enumerate()
            .map(|(f, (shape, shard_of))| match shape {
                FileShape::RowGroups(groups) => FileUnits::Known {
                    groups: groups.clone(),
                    shard_of,
                },
                FileShape::Unknown => FileUnits::Whole((f as u64 % u64::from(count)) as u32),
            })
            .collect();
        Assignment {
            count,
            unit_rows,
            batch_rows,
            files,
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard of unit `unit` of file `file`.
    pub fn shard_of(&self, file: usize, unit: u64) -> Option<u32> {
        match self.files.get(file)? {
            FileUnits::Known { shard_of, .. } => shard_of.get(&unit).copied(),
            FileUnits::Whole(s) => Some(*s),
        }
    }

    /// Whether `shard` has any unit in file `file`.
    pub fn touches(&self, file: usize, shard: u32) -> bool {
        match self.files.get(file) {
            Some(FileUnits::Known { shard_of, .. }) => shard_of.values().any(|&s| s == shard),
            Some(FileUnits::Whole(s)) => *s == shard,
            None => false,
        }
    }

    /// The row groups of `file` that hold a batch of `shard`'s units;
    /// `None` when the file is read whole (CSV).
    pub fn row_groups(&self, file: usize, shard: u32) -> Option<Vec<usize>> {
        let FileUnits::Known { groups, shard_of } = self.files.get(file)? else {
            return None;
        };
        let mut out = Vec::new();
        let mut start = 0u64;
        for (g, &n) in groups.iter().enumerate() {
            let mut b = start;
            while b < start + n {
                if shard_of.get(&(b / self.unit_rows)) == Some(&shard) {
                    out.push(g);
                    break;
                }
                b += self.batch_rows;
            }
            start += n;
        }
        Some(out)
    }

    /// The units of `shard` known before reading (those of files with row
    /// counts), in input order.
    pub fn units_of(&self, shard: u32) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (f, fu) in self.files.iter().enumerate() {
            if let FileUnits::Known { shard_of, .. } = fu {
                let mut mine: Vec<u64> = shard_of
                    .iter()
                    .filter(|(_, s)| **s == shard)
                    .map(|(u, _)| *u)
                    .collect();
                mine.sort_unstable();
                out.extend(mine.into_iter().map(|u| (f, u)));
            }
        }
        out
    }

    /// Files read whole by `shard` (no row count to cut them by).
    pub fn whole_files_of(&self, shard: u32) -> Vec<usize> {
        self.files
            .iter()
            .enumerate()
            .filter(|(_, fu)| matches!(fu, FileUnits::Whole(s) if *s == shard))
            .map(|(f, _)| f)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn at(req: &ShardRequest, vars: &[(&str, &str)]) -> Result<Option<(u32, u32)>> {
        resolve(req, env(vars)).map(|s| s.map(|s| (s.index, s.count)))
    }

    #[test]
    fn shards_come_from_the_flag_the_job_or_the_scheduler() {
        let none = ShardRequest::default();
        assert_eq!(at(&none, &[]).unwrap(), None);
        let flag = ShardRequest {
            flag: Some("2/4".into()),
            ..Default::default()
        };
        // The flag wins over the scheduler.
        assert_eq!(
            at(&flag, &[("SLURM_ARRAY_TASK_ID", "0")]).unwrap(),
            Some((2, 4))
        );
        // Slurm, an array that starts at 1 and one with a step.
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(at(&none, &slurm).unwrap(), Some((2, 4)));
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "6"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(at(&none, &stepped).unwrap(), Some((3, 4)));
        // AWS Batch.
        let batch = [
            ("AWS_BATCH_JOB_ARRAY_INDEX", "5"),
            ("AWS_BATCH_JOB_ARRAY_SIZE", "8"),
        ];
        assert_eq!(at(&none, &batch).unwrap(), Some((5, 8)));
        // Kubernetes: the index alone is not enough.
        let k8s = [("JOB_COMPLETION_INDEX", "1")];
        let e = at(&none, &k8s).unwrap_err().to_string();
        assert!(
            e.contains("no shard count") && e.contains("--shards N"),
            "{e}"
        );
        let counted = ShardRequest {
            count: Some(3),
            ..Default::default()
        };
        assert_eq!(at(&counted, &k8s).unwrap(), Some((1, 3)));
        assert_eq!(
            at(&none, &[("JOB_COMPLETION_INDEX", "2"), (SHARDS_ENV, "3")]).unwrap(),
            Some((2, 3))
        );
        let job = ShardRequest {
            job_count: Some(3),
            ..Default::default()
        };
        assert_eq!(at(&job, &k8s).unwrap(), Some((1, 3)));
    }

    #[test]
    fn disagreements_and_nonsense_are_refused() {
        let none = ShardRequest::default();
        let job8 = ShardRequest {
            job_count: Some(8),
            ..Default::default()
        };
        let slurm4 = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let e = at(&job8, &slurm4).unwrap_err().to_string();
        assert!(e.contains("disagrees with the scheduler"), "{e}");
        // A job split in shards, run without an index.
        let e = at(&job8, &[]).unwrap_err().to_string();
        assert!(e.contains("no shard index"), "{e}");
        for bad in ["4/4", "1", "a/4", "0/0", "-1/4"] {
            let f = ShardRequest {
                flag: Some(bad.into()),
                ..Default::default()
            };
            assert!(at(&f, &[]).is_err(), "{bad}");
        }
        let e = at(&none, &[("JOB_COMPLETION_INDEX", "x"), (SHARDS_ENV, "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("JOB_COMPLETION_INDEX=x"), "{e}");
        let off = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert!(at(&none, &off).is_err());
        let beyond = [
            ("AWS_BATCH_JOB_ARRAY_INDEX", "8"),
            ("AWS_BATCH_JOB_ARRAY_SIZE", "8"),
        ];
        assert!(at(&none, &beyond).is_err());
    }

    #[test]
    fn every_unit_has_one_shard_and_ranges_are_even() {
        // Three files: row groups of odd sizes, and a CSV file.
        let files = vec![
            FileShape::RowGroups(vec![5000, 5000, 300]),
            FileShape::Unknown,
            FileShape::RowGroups(vec![65_536, 20_000]),
        ];
        let a = Assignment::new(&files, 2048, 1024, 4);
        let all: Vec<Vec<(usize, u64)>> = (0..4).map(|s| a.units_of(s)).collect();
        let mut seen = std::collections::HashSet::new();
        for (s, units) in all.iter().enumerate() {
            for u in units {
                assert!(seen.insert(*u), "unit {u:?} twice");
                assert_eq!(a.shard_of(u.0, u.1), Some(s as u32));
            }
        }
        let sizes: Vec<usize> = all.iter().map(Vec::len).collect();
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(hi - lo <= 1, "{sizes:?}");
        // Contiguous: a shard's units follow each other in input order.
        let order: Vec<(usize, u64)> = all.concat();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted);
        // The CSV file goes whole to shard 1 % 4.
        assert_eq!(a.whole_files_of(1), [1]);
        assert_eq!(a.row_groups(1, 1), None);
        // Row groups read by a shard hold its units, and every group is read
        // by some shard.
        for f in [0, 2] {
            let mut read: Vec<usize> = (0..4).flat_map(|s| a.row_groups(f, s).unwrap()).collect();
            read.sort_unstable();
            read.dedup();
            let groups = if f == 0 { 3 } else { 2 };
            assert_eq!(read, (0..groups).collect::<Vec<_>>());
        }
    }
}
