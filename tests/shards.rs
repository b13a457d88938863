//! One job as N shards: each shard finds its index in the scheduler's
//! environment (Slurm, AWS Batch, Kubernetes) or a flag, writes its units
//! and nothing visible, and `embedflow commit` makes one version equal to a
//! one-machine run. The real Slurm cluster runs the same in `slurm.rs`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::tables::{
    kill9, s3_table_rows, table_job, table_rows, text_of, unit_records, vector_bits, versions,
};
use crate::util::*;

/// Scheduler variables a test run must not inherit.
const SCHEDULER_VARS: [&str; 8] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "AWS_BATCH_JOB_ARRAY_SIZE",
    "JOB_COMPLETION_INDEX",
    "EMBEDFLOW_SHARDS",
];

/// `program` in `dir` with `env` and none of the schedulers' variables
/// this process may have.
pub(crate) fn clean_command(program: &str, dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in SCHEDULER_VARS {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c
}

pub(crate) fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    require_runtime();
    let mut c = clean_command(env!("CARGO_BIN_EXE_embedflow"), dir, env);
    c.args(args).args(["--progress", "off", "--threads", "1"]);
    c
}

fn run_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(dir, args, env).output().expect("run embedflow")
}

/// Documents `rows` written with row groups of `group` rows.
pub(crate) fn write_groups(path: &Path, rows: &[(i64, String)], group: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
        ],
    )
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Three files of unlike shapes in `in/`: many row groups, one large one,
/// small ones. Returns the rows per file.
pub(crate) fn three_files(d: &Path, salt: &str) -> [Vec<(i64, String)>; 3] {
    std::fs::create_dir_all(d.join("in")).unwrap();
    let rows = |lo: i64, hi: i64| -> Vec<(i64, String)> {
        (lo..hi).map(|i| (i, text_of(i, salt))).collect()
    };
    let files = [rows(0, 20_000), rows(20_000, 45_000), rows(45_000, 53_000)];
    write_groups(&d.join("in/a.parquet"), &files[0], 3000);
    write_groups(&d.join("in/b.parquet"), &files[1], 65_536);
    write_groups(&d.join("in/c.parquet"), &files[2], 1000);
    files
}

/// The table equals the reference: the same (id, chunk_index) rows, no
/// duplicate, vectors equal as bits.
pub(crate) fn same_table(d: &Path, table: &str, reference: &str) {
    let want = table_rows(d, reference);
    let got = table_rows(d, table);
    assert_eq!(got.num_rows(), want.num_rows(), "{table} vs {reference}");
    assert_eq!(ints(&got, "id"), ints(&want, "id"));
    assert_eq!(ints(&got, "chunk_index"), ints(&want, "chunk_index"));
    assert!(
        vector_bits(&got) == vector_bits(&want),
        "vectors of {table} differ from {reference}'s"
    );
}

/// No part file the log does not name, and no run records left.
pub(crate) fn tidy(table: &Path) {
    let log: String = versions(table)
        .iter()
        .map(|v| std::fs::read_to_string(table.join("_delta_log").join(v)).unwrap())
        .collect();
    for f in std::fs::read_dir(table).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".parquet") {
            assert!(log.contains(&name), "orphan part {name}");
        }
    }
    assert_eq!(unit_records(table), 0, "run records left behind");
}

#[test]
fn four_shards_from_four_schedulers_commit_the_table_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    three_files(d, "shards");
    let reference = table_job(d, "reference.toml", "in", "reference", "");
    assert_code(&run_env(d, &["run", &reference], &[]), 0);
    let job = table_job(d, "job.toml", "in", "table", "");
    let table = d.join("table");

    // Shard 0 as the second task of a Slurm array that starts at 1.
    let o = run_env(
        d,
        &["run", &job],
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ],
    );
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("shard 0 of 4 (from Slurm: SLURM_ARRAY_TASK_ID=1"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("wrote shard 0 of 4 into table"),
        "{}",
        stdout(&o)
    );
    assert!(!table.join("_delta_log").exists(), "a shard made a version");

    // The commit refuses while shards are missing, naming their units.
    let o = run_env(d, &["commit", &job], &[]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("cannot commit: 3 of 4 shards have not finished")
            && err.contains("shard 1: 0 of ")
            && err.contains("missing f0-u"),
        "{err}"
    );
    let o = run_env(d, &["status", &job], &[]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("in 4 shards")
            && out.contains("shard 0: done")
            && out.contains("shard 3: not finished"),
        "{out}"
    );

    // A shard of another job (other chunking) refuses to mix in.
    let o = run_env(
        d,
        &[
            "run",
            &job,
            "--shard",
            "1/4",
            "--set",
            "chunking.max_tokens=16",
        ],
        &[],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("unfinished sharded run") && stderr(&o).contains("not part of"),
        "{}",
        stderr(&o)
    );

    // Shard 1 as an AWS Batch child, killed once its first unit is
    // recorded, then run again alone: it resumes its own units.
    let batch = [
        ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
        ("AWS_BATCH_JOB_ARRAY_SIZE", "4"),
    ];
    let before = unit_records(&table);
    let mut child = command(d, &["run", &job], &batch).spawn().unwrap();
    while unit_records(&table) <= before && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "shard 1 ended first");
    kill9(&mut child);
    let o = run_env(d, &["run", &job], &batch);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("resuming the interrupted run"),
        "{}",
        stderr(&o)
    );

    // Shards 2 and 3 at once: a Kubernetes pod (index only, the count from
    // the manifest's variable) and a flag.
    let k8s = command(
        d,
        &["run", &job],
        &[("JOB_COMPLETION_INDEX", "2"), ("EMBEDFLOW_SHARDS", "4")],
    )
    .spawn()
    .unwrap();
    let flag = command(d, &["run", &job, "--shard", "3/4"], &[])
        .spawn()
        .unwrap();
    for (name, child) in [("k8s", k8s), ("flag", flag)] {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
    }

    let o = run_env(d, &["commit", &job], &[]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("committed 4 shards into") && stdout(&o).contains("version 0"),
        "{}",
        stdout(&o)
    );
    assert_eq!(versions(&table).len(), 1);
    same_table(d, "table", "reference");
    tidy(&table);
    // Nothing left to commit.
    assert_code(&run_env(d, &["commit", &job], &[]), 1);
}

#[test]
fn an_incremental_run_in_shards_equals_one_machine() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = three_files(d, "v1");
    let reference = table_job(d, "reference.toml", "in", "reference", "");
    let job = table_job(d, "job.toml", "in", "table", "");
    assert_code(&run_env(d, &["run", &reference], &[]), 0);
    assert_code(&run_env(d, &["run", &job], &[]), 0);

    // 10 % changed, 5 % deleted, 5 % new, across the three files.
    let total: i64 = files.iter().map(|f| f.len() as i64).sum();
    for (k, (rows, group)) in files.iter().zip([3000, 65_536, 1000]).enumerate() {
        let mut next: Vec<(i64, String)> = Vec::new();
        for (id, text) in rows {
            match id % 20 {
                0 | 1 => next.push((*id, text_of(*id, "v2"))),
                2 => {}
                _ => next.push((*id, text.clone())),
            }
        }
        let new = (k as i64 * 1000..(k as i64 + 1) * 1000).filter(|i| i % 1000 < total / 20 / 3);
        next.extend(new.map(|i| (100_000 + i, text_of(100_000 + i, "new"))));
        write_groups(
            &d.join(["in/a.parquet", "in/b.parquet", "in/c.parquet"][k]),
            &next,
            group,
        );
    }
    let o = run_env(d, &["run", &reference], &[]);
    assert_code(&o, 0);
    let whole = stdout(&o);
    let counts = whole
        .lines()
        .find(|l| l.contains("incremental"))
        .expect("an incremental line")
        .split_once("rows:")
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();

    let shards: Vec<_> = (0..3)
        .map(|i| {
            command(d, &["run", &job, "--shard", &format!("{i}/3")], &[])
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in shards.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "shard {i}: {}", stderr(&o));
        assert!(
            stdout(&o).contains("deleted rows: counted by the commit"),
            "{}",
            stdout(&o)
        );
    }
    let o = run_env(d, &["commit", &job], &[]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains(&counts),
        "the commit's counts differ from one machine's ({counts}):\n{}",
        stdout(&o)
    );
    same_table(d, "table", "reference");
    tidy(&d.join("table"));

    // An id repeated across two shards' rows is refused by the commit.
    let mut a = files[0].clone();
    a[0].1 = text_of(0, "dup");
    let mut c = files[2].clone();
    c.push((0, text_of(0, "again")));
    write_groups(&d.join("in/a.parquet"), &a, 3000);
    write_groups(&d.join("in/c.parquet"), &c, 1000);
    for i in 0..3 {
        assert_code(
            &run_env(d, &["run", &job, "--shard", &format!("{i}/3")], &[]),
            0,
        );
    }
    let o = run_env(d, &["commit", &job], &[]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("the id column id holds 0 more than once")
            && stderr(&o).contains("in shards 0 and 2"),
        "{}",
        stderr(&o)
    );
    assert_eq!(versions(&d.join("table")).len(), 2);
    // The refused run is discarded by name: its records and parts go, the
    // table's own parts stay.
    let o = run_env(d, &["unlock", &job, "--discard"], &[]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("discarded run "), "{}", stdout(&o));
    tidy(&d.join("table"));
    let o = run_env(d, &["commit", &job], &[]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("no sharded run of this job to commit"),
        "{}",
        stderr(&o)
    );
    same_table(d, "table", "reference");
}

#[test]
fn four_shards_with_the_input_and_the_table_on_s3() {
    let server = crate::util::s3::server();
    let bucket = server.bucket("shards");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    three_files(d, "s3");
    let reference = table_job(d, "reference.toml", "in", "reference", "");
    assert_code(&run_env(d, &["run", &reference], &[]), 0);
    server.put_dir(&bucket, "warehouse/in", &d.join("in"));
    let job = table_job(
        d,
        "job.toml",
        &format!("s3://{bucket}/warehouse/in/"),
        &format!("s3://{bucket}/tables/t"),
        "",
    );
    let shards: Vec<_> = (0..4)
        .map(|i| {
            let mut c = server.command(d, &["run", &job, "--threads", "1"]);
            for v in SCHEDULER_VARS {
                c.env_remove(v);
            }
            c.env("JOB_COMPLETION_INDEX", i.to_string())
                .env("EMBEDFLOW_SHARDS", "4")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in shards.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "shard {i}: {}", stderr(&o));
    }
    let keys = server.keys(&bucket);
    assert!(
        !keys.iter().any(|k| k.contains("_delta_log")),
        "a shard made a version: {keys:?}"
    );
    let o = server.embedflow(d, &["commit", &job], &[]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("committed 4 shards"), "{}", stdout(&o));
    let got = s3_table_rows(&server, d, &format!("s3://{bucket}/tables/t"));
    let want = table_rows(d, "reference");
    assert_eq!(ints(&got, "id"), ints(&want, "id"));
    assert_eq!(ints(&got, "chunk_index"), ints(&want, "chunk_index"));
    assert!(
        vector_bits(&got) == vector_bits(&want),
        "vectors on S3 differ from the local run's"
    );
    let keys = server.keys(&bucket);
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("_embedflow/runs") || k.contains("_embedflow/shards")),
        "{keys:?}"
    );
}

#[test]
fn more_shards_than_units_leaves_some_idle_and_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap();
    let rows: Vec<(i64, String)> = (0..5000).map(|i| (i, text_of(i, "few"))).collect();
    write_groups(&d.join("in/a.parquet"), &rows, 5000);
    let reference = table_job(d, "reference.toml", "in", "reference", "");
    assert_code(&run_env(d, &["run", &reference], &[]), 0);
    // 5,000 rows in units of 2,048: 3 units for 5 shards.
    let job = table_job(d, "job.toml", "in", "table", "");
    let mut idle = 0;
    for i in 0..5 {
        let o = run_env(d, &["run", &job, "--shard", &format!("{i}/5")], &[]);
        assert_code(&o, 0);
        idle += usize::from(stderr(&o).contains(&format!("shard {i} of 5 embedded nothing")));
    }
    assert_eq!(idle, 2);
    assert_code(&run_env(d, &["commit", &job], &[]), 0);
    same_table(d, "table", "reference");
}
