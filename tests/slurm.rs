//! A sharded job on a real Slurm cluster (one node, started by
//! `scripts/slurm-cluster`, which `scripts/test` runs): the example
//! `jobs/scale-out/slurm/submit.sh` submits a 4-task array and the
//! dependent commit; one task is killed with SIGKILL mid-run and requeued
//! alone; the committed table equals a one-machine run's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::shards::{clean_command, command, same_table, three_files, tidy};
use crate::tables::{table_job, versions};
use crate::util::*;

fn slurm(args: &[&str]) -> Output {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
    o
}

/// One field (`JobState`, `ExitCode`, …) of each of a job's tasks.
fn job_field(job: &str, field: &str) -> Vec<String> {
    let o = Command::new("scontrol")
        .args(["-o", "show", "job", job])
        .output()
        .unwrap();
    stdout(&o)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{field}=")))
                .map(str::to_string)
        })
        .collect()
}

/// The pid of the `embedflow run` of array task `task` of `array`.
fn task_pid(array: &str, task: u32) -> Option<u32> {
    let want = [
        format!("SLURM_ARRAY_JOB_ID={array}"),
        format!("SLURM_ARRAY_TASK_ID={task}"),
    ];
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmd).contains("embedflow\0run") {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let vars: Vec<String> = env
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if want.iter().all(|w| vars.contains(w)) {
            return Some(pid);
        }
    }
    None
}

/// Units shard `i` has recorded, from `embedflow status`.
fn recorded_by(d: &Path, job: &str, i: u32) -> usize {
    let o = command(d, &["status", job], &[]).output().unwrap();
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("shard {i}:")))
        .unwrap_or("");
    line.split(": ")
        .last()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_slurm_array_and_its_dependent_commit_make_the_table_of_one_run() {
    assert!(
        std::env::var_os("SLURM_CONF").is_some(),
        "no Slurm cluster: run the tests with scripts/test, which starts one (scripts/slurm-cluster)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    three_files(d, "slurm");
    let reference = table_job(d, "reference.toml", "in", "reference", "");
    assert_code(&command(d, &["run", &reference], &[]).output().unwrap(), 0);
    let job = table_job(d, "job.toml", "in", "table", "");
    let submit: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/scale-out/slurm/submit.sh");
    let bin = env!("CARGO_BIN_EXE_embedflow");
    let d_str = d.to_str().unwrap();
    let o = clean_command(submit.to_str().unwrap(), d, &[("EMBEDFLOW", bin)])
        .args([
            &job,
            "4",
            "--chdir",
            d_str,
            "--cpus-per-task=1",
            "--mem=300M",
        ])
        .output()
        .unwrap();
    assert_code(&o, 0);
    let ids = stdout(&o);
    let (array, commit) = ids.trim().split_once(' ').expect("two job ids");
    let (array, commit) = (array.to_string(), commit.to_string());
    assert!(
        stderr(&o).contains("job.toml (3 input files"),
        "{}",
        stderr(&o)
    );

    // Task 2 is killed once it has recorded a unit, and requeued alone.
    let task2 = format!("{array}_2");
    wait_until("task 2 to record a unit", Duration::from_secs(300), || {
        if job_field(&array, "JobState").iter().any(|s| s == "FAILED") {
            let logs: Vec<String> = (0..4)
                .map(|i| {
                    std::fs::read_to_string(d.join(format!("embedflow-shard-{array}_{i}.out")))
                        .unwrap_or_default()
                })
                .collect();
            panic!("a task failed before the kill:\n{}", logs.join("\n"));
        }
        task_pid(&array, 2).is_some() && recorded_by(d, &job, 2) >= 1
    });
    let pid = task_pid(&array, 2).expect("task 2 is running");
    slurm(&["kill", "-9", &pid.to_string()]);
    wait_until("task 2 to fail", Duration::from_secs(60), || {
        job_field(&task2, "JobState")
            .first()
            .is_some_and(|s| s == "FAILED")
    });
    // Rerun alone, with the commit put after it (the documented way).
    let retry = submit.with_file_name("retry.sh");
    let o = clean_command(retry.to_str().unwrap(), d, &[("EMBEDFLOW", bin)])
        .args([
            &job,
            &array,
            &commit,
            "2",
            "--",
            "--chdir",
            d_str,
            "--mem=300M",
        ])
        .output()
        .unwrap();
    assert_code(&o, 0);
    let commit = stdout(&o).trim().to_string();

    wait_until("the array and the commit", Duration::from_secs(600), || {
        let reason = job_field(&commit, "Reason");
        if reason
            .first()
            .is_some_and(|r| r == "DependencyNeverSatisfied")
        {
            let log: String = (0..4)
                .map(|i| {
                    let f = d.join(format!("embedflow-shard-{array}_{i}.out"));
                    format!(
                        "task {i}: {}",
                        std::fs::read_to_string(f).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "the commit will never run: tasks {:?} exit {:?}; logs:\n{log}",
                job_field(&array, "JobState"),
                job_field(&array, "ExitCode")
            );
        }
        let o = Command::new("squeue")
            .args(["-h", "-j", &format!("{array},{commit}")])
            .output()
            .unwrap();
        stdout(&o).trim().is_empty()
    });
    let states = job_field(&array, "JobState");
    assert_eq!(states.len(), 4, "{states:?}");
    assert!(states.iter().all(|s| s == "COMPLETED"), "{states:?}");
    assert_eq!(job_field(&commit, "JobState"), ["COMPLETED"]);
    assert_eq!(job_field(&commit, "ExitCode"), ["0:0"]);
    let log = std::fs::read_to_string(d.join(format!("embedflow-commit-{commit}.out"))).unwrap();
    assert!(log.contains("committed 4 shards into table"), "{log}");
    let task_log =
        std::fs::read_to_string(d.join(format!("embedflow-shard-{array}_2.out"))).unwrap();
    assert!(
        task_log.contains("resuming the interrupted run"),
        "the requeued task started over:\n{task_log}"
    );
    assert_eq!(versions(&d.join("table")).len(), 1);
    same_table(d, "table", "reference");
    tidy(&d.join("table"));
}
