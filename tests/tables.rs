//! Delta Lake tables: one version per run, readable by other readers,
//! resumed after `kill -9` at any moment, one writer at a time.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::util::s3;
use crate::util::*;

/// `rows` documents with an `id` column; the texts differ in length so
/// batches differ in shape.
fn documents(path: &Path, rows: usize, salt: &str) {
    let rows: Vec<(i64, String)> = (0..rows as i64).map(|i| (i, text_of(i, salt))).collect();
    documents_of(path, &rows);
}

/// `output.unit_rows` of every table job here.
pub(crate) const UNIT_ROWS: usize = 2048;

pub(crate) fn table_job(dir: &Path, name: &str, input: &str, table: &str, extra: &str) -> String {
    let job = format!(
        r#"
[input]
path = "{input}"
text_column = "text"
id_column = "id"

[model]
path = "{model}"

[output]
path = "{table}"
format = "delta"
unit_rows = {UNIT_ROWS}
{extra}
"#,
        model = tiny_s()
    );
    let path = dir.join(name);
    std::fs::write(&path, job).unwrap();
    path.to_str().unwrap().to_string()
}

/// The table's rows in (id, chunk_index) order, read through `embedflow sql`.
pub(crate) fn table_rows(dir: &Path, table: &str) -> RecordBatch {
    let out = dir.join("rows.parquet");
    let _ = std::fs::remove_file(&out);
    let o = embedflow(
        dir,
        &[
            "sql",
            "--table",
            &format!("t={table}"),
            "SELECT * FROM t ORDER BY id, chunk_index",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_code(&o, 0);
    read_parquet(&out).0
}

/// The vectors of a List or FixedSizeList column (Delta tables store
/// `List<Float32>`), one Vec per row.
pub(crate) fn any_vectors(batch: &RecordBatch, column: &str) -> Vec<Vec<f32>> {
    let c =
        embedflow::vectors::VectorColumn::try_new(batch.column_by_name(column).unwrap().as_ref())
            .unwrap();
    (0..c.len()).map(|i| c.row(i).unwrap().to_vec()).collect()
}

/// Runs embedflow in `d`, expecting exit 0 and `text` in its stdout.
pub(crate) fn run_saying(d: &Path, args: &[&str], text: &str) -> String {
    let o = embedflow(d, args);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains(text), "{out}");
    out
}

/// Versions in a local table's log.
pub(crate) fn versions(table: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_delta_output_is_one_version_that_other_readers_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    documents(&d.join("in.parquet"), 5000, "v1");
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("as Delta table version 0"), "{out}");
    assert!(out.contains("resumed: 0 of 3 units already done"), "{out}");
    assert_eq!(versions(&d.join("table")), ["00000000000000000000.json"]);

    // The same rows and vectors as the single-file output of the same job.
    let plain = d.join("plain.parquet");
    let o = embedflow(
        d,
        &[
            "embed",
            "in.parquet",
            "plain.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
            "--id-column",
            "id",
        ],
    );
    assert_code(&o, 0);
    let table = table_rows(d, "table");
    let (want, _) = read_parquet(&plain);
    assert_eq!(table.num_rows(), want.num_rows());
    assert_eq!(
        any_vectors(&table, "embedding"),
        any_vectors(&want, "embedding"),
        "the table's vectors differ from the single file's"
    );
    assert_eq!(ints(&table, "id"), ints(&want, "id"));

    // Lineage in every part's footer and in the table's properties.
    let log =
        std::fs::read_to_string(d.join("table/_delta_log/00000000000000000000.json")).unwrap();
    assert!(log.contains("\"embedflow.model_sha256\""), "{log}");
    assert!(log.contains("\"embedflow.run\""), "{log}");
    let part = std::fs::read_dir(d.join("table"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let (_, kv) = read_parquet(&part);
    assert_eq!(meta(&kv, "embedflow.dim"), "32");
    // Nothing of the run is left beside the table but the table.
    assert!(!d.join("table/_embedflow/lease.json").exists());
    assert_eq!(
        std::fs::read_dir(d.join("table/_embedflow/runs"))
            .map(|r| r.count())
            .unwrap_or(0),
        0
    );

    // Other readers: deltalake and polars read the same rows and vectors.
    let python = reference_python();
    let check = r#"
import sys, deltalake, polars, numpy as np
t = deltalake.DeltaTable(sys.argv[1])
a = t.to_pyarrow_table().sort_by("id")
p = polars.read_delta(sys.argv[1]).sort("id")
va = np.array(a.column("embedding").to_pylist(), dtype=np.float32)
vp = np.array(p["embedding"].to_list(), dtype=np.float32)
print(t.version(), a.num_rows, p.height, int((va == vp).all()), *va[[0, -1], 0].view(np.uint32))
"#;
    let got = run_python(&python, check, &[d.join("table").to_str().unwrap()]);
    let v = any_vectors(&table, "embedding");
    let want = format!(
        "0 5000 5000 1 {} {}",
        v[0][0].to_bits(),
        v[v.len() - 1][0].to_bits()
    );
    assert_eq!(
        got.trim(),
        want,
        "deltalake and polars read other rows or vectors"
    );

    // The table as an input: the newest version, or the one asked for.
    documents(&d.join("in.parquet"), 3000, "v2");
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 0);
    assert_eq!(versions(&d.join("table")).len(), 2);
    assert_eq!(table_rows(d, "table").num_rows(), 3000);
    // k-means reads the table's current files, not every file in its folder.
    let o = embedflow(d, &["cluster", "table", "clusters.parquet", "--k", "4"]);
    assert_code(&o, 0);
    let (clustered, _) = read_parquet(&d.join("clusters.parquet"));
    assert_eq!(clustered.num_rows(), 3000);
    assert!(clustered.column_by_name("cluster_id").is_some());
    for (version, rows) in [("", 3000), ("\nversion = 0", 5000)] {
        let reread = table_job(d, "reread.toml", "table", "again", "");
        let text = std::fs::read_to_string(&reread).unwrap().replace(
            "text_column = \"text\"",
            &format!(
                "format = \"delta\"{version}\ncolumns = [\"id\"]\ntext_column = \"chunk_text\""
            ),
        );
        std::fs::write(&reread, text).unwrap();
        let _ = std::fs::remove_dir_all(d.join("again"));
        let o = embedflow(d, &["run", "reread.toml"]);
        assert_code(&o, 0);
        assert_eq!(
            table_rows(d, "again").num_rows(),
            rows,
            "input.version: {version:?}"
        );
    }
}

pub(crate) fn spawn(dir: &Path, args: &[&str]) -> Child {
    require_runtime();
    Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(dir)
        .args(args)
        .args(["--progress", "off", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run embedflow")
}

pub(crate) fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// xorshift: seeded moments, the same on every run of the test.
struct Moments(u64);

impl Moments {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A moment within `span`.
    fn next(&mut self, span: Duration) -> Duration {
        span.mul_f64((self.next_u64() % 10_000) as f64 / 10_000.0)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Kills runs with SIGKILL at seeded moments of their progress, resuming
/// each time, then lets the last run finish; returns its stdout and how many
/// runs (the last one included) resumed an interrupted one.
///
/// A moment is "once `k` unit records exist, plus up to half a unit's
/// time", with `k` drawn between the records found at the start and
/// `units`: counted in work done, not in wall time, so a faster or slower
/// machine kills at the same places (startup, mid-unit, the last unit, the
/// commit and its clean-up).
fn kill_and_resume(
    mut start: impl FnMut() -> Child,
    records: impl Fn() -> usize,
    units: usize,
    full: Duration,
    kills: usize,
) -> (String, usize, String) {
    use std::fmt::Write;
    use std::io::Read;
    // What each attempt did, for the failure messages of the callers.
    let mut log = String::new();
    let mut at = Moments(0x2545_f491_4f6c_dd1d);
    let unit = full.div_f64(units as f64);
    let mut finished_early = 0;
    let mut resumed = 0;
    for _ in 0..kills {
        let before = records().min(units);
        let k = before + at.below(units - before);
        let extra = at.next(unit / 2);
        let mut child = start();
        let alive = |c: &mut Child| c.try_wait().unwrap().is_none();
        while alive(&mut child) && records() < k {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = Instant::now();
        while alive(&mut child) && t.elapsed() < extra {
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = !alive(&mut child);
        if !finished {
            kill9(&mut child);
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        // A run that resumed and then finished before its kill resumed all
        // the same (on a fast store most resumed runs do).
        resumed += usize::from(err.contains("resuming the interrupted run"));
        let said = err
            .lines()
            .filter(|l| l.contains("embedflow"))
            .collect::<Vec<_>>()
            .join(" | ");
        if finished {
            // It finished first: the table is whole; the next run starts
            // again from it.
            finished_early += 1;
            let _ = writeln!(
                log,
                "run with {before} records before: finished before its kill at {k}; stderr: {said}"
            );
            continue;
        }
        let _ = writeln!(
            log,
            "run with {before} records before: killed at {} records (aimed at {k}, then {extra:?}); stderr: {said}",
            records(),
        );
    }
    assert!(
        2 * finished_early <= kills,
        "{finished_early} of {kills} runs finished before their kill:\n{log}"
    );
    let o = start().wait_with_output().unwrap();
    assert_code(&o, 0);
    resumed += usize::from(stderr(&o).contains("resuming the interrupted run"));
    let _ = writeln!(log, "last run: {}", stderr(&o));
    (stdout(&o), resumed, log)
}

/// How many unit records the runs under `table/_embedflow/runs` hold.
pub(crate) fn unit_records(table: &Path) -> usize {
    let Ok(runs) = std::fs::read_dir(table.join("_embedflow/runs")) else {
        return 0;
    };
    runs.flatten()
        .filter_map(|run| std::fs::read_dir(run.path().join("units")).ok())
        .map(|units| units.count())
        .sum()
}

/// Crash tests run full: once a run commits, the next one starts again from
/// the beginning (an incremental one would find nothing to do).
const FULL: &str = "mode = \"full\"";

/// Writes `rows` documents to in.parquet and runs them uninterrupted into
/// the table `reference`; returns how long that took.
fn reference_run(d: &Path, rows: usize) -> Duration {
    documents(&d.join("in.parquet"), rows, "crash");
    let reference = table_job(d, "reference.toml", "in.parquet", "reference", FULL);
    let t = Instant::now();
    let o = spawn(d, &["run", &reference]).wait_with_output().unwrap();
    assert_code(&o, 0);
    t.elapsed()
}

/// Vectors as bits, to compare them exactly.
pub(crate) fn vector_bits(b: &RecordBatch) -> Vec<Vec<u32>> {
    any_vectors(b, "embedding")
        .into_iter()
        .map(|v| v.into_iter().map(f32::to_bits).collect())
        .collect()
}

#[test]
fn a_run_killed_at_any_moment_resumes_to_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let full = reference_run(d, 50_000);
    let job = table_job(d, "job.toml", "in.parquet", "table", FULL);

    let records = || unit_records(&d.join("table"));
    let (out, resumed, log) = kill_and_resume(
        || spawn(d, &["run", &job]),
        records,
        50_000usize.div_ceil(UNIT_ROWS),
        full,
        20,
    );
    assert!(out.contains("as Delta table version"), "{out}");
    // Kills during start-up (before a run says it resumes) are more
    // frequent on a loaded machine: 4 of 20 resumed in one CI-like run,
    // 15 alone (counted before runs that resumed and then finished before
    // their kill were counted too).
    assert!(
        resumed >= 3,
        "only {resumed} runs resumed an interrupted one:\n{log}"
    );
    let want = table_rows(d, "reference");
    let got = table_rows(d, "table");
    assert_eq!(got.num_rows(), want.num_rows());
    // No duplicate (id, chunk_index), no gap, vectors equal as bits.
    assert_eq!(ints(&got, "id"), ints(&want, "id"));
    assert_eq!(ints(&got, "chunk_index"), ints(&want, "chunk_index"));
    assert!(
        vector_bits(&got) == vector_bits(&want),
        "vectors differ from an uninterrupted run's"
    );
    // Parts of killed attempts that the table does not name are gone.
    let log: String = versions(&d.join("table"))
        .iter()
        .map(|v| std::fs::read_to_string(d.join("table/_delta_log").join(v)).unwrap())
        .collect();
    for f in std::fs::read_dir(d.join("table")).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".parquet") {
            assert!(log.contains(&name), "orphan part {name}");
        }
    }
}

#[test]
fn a_resumed_run_says_so_and_a_changed_job_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    documents(&d.join("in.parquet"), 20_000, "resume");
    let job = table_job(d, "job.toml", "in.parquet", "table", FULL);
    // Kill once some units are recorded.
    let mut child = spawn(d, &["run", &job]);
    let units = d.join("table/_embedflow/runs");
    let t = Instant::now();
    loop {
        let n = walk_count(&units);
        if n >= 3 || t.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill9(&mut child);
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 0);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        err.contains("resuming the interrupted run into table"),
        "{err}"
    );
    let resumed: usize = out
        .split("resumed: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(resumed >= 1, "{out}");

    // Interrupted again, then run with another chunk window: not resumed.
    let mut child = spawn(d, &["run", &job]);
    let t = Instant::now();
    while walk_count(&units) < 3 && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    kill9(&mut child);
    let o = embedflow(d, &["run", &job, "--set", "chunking.max_tokens=16"]);
    assert_code(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("not resuming the interrupted run into table: the job changed"),
        "{err}"
    );
    assert!(stdout(&o).contains("resumed: 0 of"), "{}", stdout(&o));
}

/// Files under `dir`, recursively (0 when it is not there).
fn walk_count(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() { walk_count(&p) } else { 1 }
        })
        .sum()
}

#[test]
fn one_writer_at_a_time_and_readers_see_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    documents(&d.join("small.parquet"), 1000, "small");
    documents(&d.join("big.parquet"), 30_000, "big");
    let small = table_job(d, "small.toml", "small.parquet", "table", "");
    let big = table_job(d, "big.toml", "big.parquet", "table", "");
    assert_code(&embedflow(d, &["run", &small]), 0);

    let first = spawn(d, &["run", &big]);
    let lease = d.join("table/_embedflow/lease.json");
    let t = Instant::now();
    while !lease.exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A reader during the run sees the version before it.
    assert_eq!(table_rows(d, "table").num_rows(), 1000);
    let second = embedflow(d, &["run", &small]);
    assert_code(&second, 1);
    let e = stderr(&second);
    assert!(
        e.contains("another run is writing this table:")
            && e.contains(&format!("(pid {}", first.id())),
        "{e}"
    );
    assert!(e.contains("embedflow unlock table"), "{e}");
    let o = first.wait_with_output().unwrap();
    assert_code(&o, 0);
    assert_eq!(versions(&d.join("table")).len(), 2);
    assert_eq!(table_rows(d, "table").num_rows(), 30_000);

    // A lease left by a writer on another host: refused until unlocked.
    std::fs::write(
        &lease,
        r#"{"host":"elsewhere","pid":1,"started_ms":1,"expires_ms":99999999999999}"#,
    )
    .unwrap();
    let o = embedflow(d, &["run", &small]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("elsewhere (pid 1"), "{}", stderr(&o));
    let o = embedflow(d, &["unlock", "table"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("the lease of elsewhere (pid 1"),
        "{}",
        stdout(&o)
    );
    assert_code(&embedflow(d, &["run", &small]), 0);
}

#[test]
fn a_table_on_s3_resumes_after_kills() {
    let server = s3::server();
    let bucket = server.bucket("delta-resume");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let full = reference_run(d, 20_000);
    let job = table_job(
        d,
        "job.toml",
        "in.parquet",
        &format!("s3://{bucket}/tables/t"),
        FULL,
    );
    let start = || {
        server
            .command(d, &["run", &job, "--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let records = || {
        let keys = server.keys(&bucket);
        keys.iter().filter(|k| k.contains("/units/")).count()
    };
    let (out, resumed, log) =
        kill_and_resume(start, records, 20_000usize.div_ceil(UNIT_ROWS), full, 5);
    assert!(out.contains("as Delta table version"), "{out}");
    assert!(resumed >= 1, "no run resumed an interrupted one:\n{log}");
    let got = s3_table_rows(&server, d, &format!("s3://{bucket}/tables/t"));
    let want = table_rows(d, "reference");
    assert_eq!(ints(&got, "id"), ints(&want, "id"));
    assert!(
        any_vectors(&got, "embedding") == any_vectors(&want, "embedding"),
        "vectors on S3 differ from the local run's"
    );
    let keys = server.keys(&bucket);
    assert!(!keys.iter().any(|k| k.contains("lease.json")), "{keys:?}");
}

/// A table on S3's rows in (id, chunk_index) order, read through
/// `embedflow sql`.
pub(crate) fn s3_table_rows(server: &s3::S3, d: &Path, url: &str) -> RecordBatch {
    let rows = d.join("rows.parquet");
    let o = server.embedflow(
        d,
        &[
            "sql",
            "--table",
            &format!("t={url}"),
            "SELECT * FROM t ORDER BY id, chunk_index",
            "-o",
            rows.to_str().unwrap(),
        ],
        &[],
    );
    assert_code(&o, 0);
    read_parquet(&rows).0
}

/// Documents with the given ids and texts.
pub(crate) fn documents_of(path: &Path, rows: &[(i64, String)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
        ],
    )
    .unwrap();
    write_batch(path, &batch);
}

pub(crate) fn text_of(i: i64, salt: &str) -> String {
    format!(
        "document {i} {salt} about topic {} {}",
        i % 97,
        "with some words ".repeat(1 + i as usize % 7)
    )
}

#[test]
fn an_incremental_run_embeds_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before: Vec<(i64, String)> = (0..5000).map(|i| (i, text_of(i, "old"))).collect();
    documents_of(&d.join("in.parquet"), &before);
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("every row embedded: the table is new"),
        "{}",
        stdout(&o)
    );

    // 10 % changed, 5 % deleted, 5 % added.
    let mut after: Vec<(i64, String)> = Vec::new();
    for (i, t) in &before {
        match i {
            0..500 => after.push((*i, text_of(*i, "new"))),
            500..750 => {}
            _ => after.push((*i, t.clone())),
        }
    }
    after.extend((5000..5250).map(|i| (i, text_of(i, "added"))));
    documents_of(&d.join("in.parquet"), &after);
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("incremental      5000 rows: 4250 unchanged (copied), 500 changed, 250 new, 250 deleted; 750 embedded"),
        "{out}"
    );
    assert!(out.contains("as Delta table version 1"), "{out}");

    // The table equals a full run over the new source.
    let full = table_job(d, "full.toml", "in.parquet", "full", "mode = \"full\"");
    let o = embedflow(d, &["run", &full]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("rows read        5000"),
        "{}",
        stdout(&o)
    );
    let (got, want) = (table_rows(d, "table"), table_rows(d, "full"));
    assert_eq!(ints(&got, "id"), ints(&want, "id"));
    assert_eq!(ints(&got, "chunk_index"), ints(&want, "chunk_index"));
    assert_eq!(strings(&got, "chunk_text"), strings(&want, "chunk_text"));
    assert!(
        vector_bits(&got) == vector_bits(&want),
        "the incremental table's vectors differ from a full run's"
    );

    // Nothing changed: nothing embedded.
    run_saying(
        d,
        &["run", &job],
        "5000 rows: 5000 unchanged (copied), 0 changed, 0 new, 0 deleted; 0 embedded",
    );
    assert_eq!(table_rows(d, "table").num_rows(), want.num_rows());

    // Another chunk window, or another model: every row again, and why.
    let o = embedflow(d, &["run", &job, "--set", "chunking.max_tokens=16"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("every row embedded: the model or its settings changed (chunk_max_tokens"),
        "{out}"
    );
    assert!(out.contains("rows read        5000"), "{out}");
    let small: Vec<(i64, String)> = after[..200].to_vec();
    documents_of(&d.join("small.parquet"), &small);
    let small_job = table_job(d, "small.toml", "small.parquet", "small", "");
    assert_code(&embedflow(d, &["run", &small_job]), 0);
    let o = embedflow(
        d,
        &[
            "run",
            &small_job,
            "--set",
            &format!("model.path=\"{}\"", minilm().display()),
        ],
    );
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("model_sha256 changed"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn the_summary_is_one_json_line_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    documents(&d.join("in.parquet"), 3000, "json");
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    assert_code(&embedflow(d, &["run", &job]), 0);
    documents(&d.join("in.parquet"), 3100, "json");
    let o = embedflow(d, &["run", &job, "--summary", "json"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows_read"], 3100);
    assert_eq!(v["rows_embedded"], 100);
    assert_eq!(v["vectors_written"], 3100);
    assert_eq!(v["table"]["version"], 1);
    assert_eq!(v["table"]["units_resumed"], 0);
    let c = &v["table"]["changes"];
    assert_eq!(
        (&c["unchanged"], &c["changed"], &c["new"], &c["deleted"]),
        (&3000.into(), &0.into(), &100.into(), &0.into())
    );
}

#[test]
fn a_repeated_or_missing_id_is_refused_by_an_incremental_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: Vec<(i64, String)> = (0..100).map(|i| (i, text_of(i, "a"))).collect();
    documents_of(&d.join("in.parquet"), &rows);
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    assert_code(&embedflow(d, &["run", &job]), 0);
    let mut twice = rows.clone();
    twice.push((42, text_of(42, "again")));
    documents_of(&d.join("in.parquet"), &twice);
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains(
            "input in.parquet: the id column id holds 42 more than once (rows 43 and 101); an incremental run needs one row per id"
        ),
        "{}",
        stderr(&o)
    );
    // A row without an id is named too.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("text", DataType::Utf8, false),
    ]));
    let ids: Vec<Option<i64>> = (0..100).map(|i| (i != 7).then_some(i)).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
        ],
    )
    .unwrap();
    write_batch(&d.join("in.parquet"), &batch);
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains(
            "input in.parquet: row 8: the id column id is null; an incremental run needs an id on every row"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(versions(&d.join("table")).len(), 1);
    assert_eq!(table_rows(d, "table").num_rows(), 100);
    assert!(!d.join("table/_embedflow/lease.json").exists());
}

#[test]
fn a_delta_input_reuses_the_keys_of_files_that_did_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let python = reference_python();
    let make = r#"
import sys, pyarrow as pa
from deltalake import write_deltalake, DeltaTable
path, step = sys.argv[1], sys.argv[2]
def rows(lo, hi, salt):
    return pa.table({"id": pa.array(range(lo, hi), pa.int64()),
                     "text": [f"document {i} {salt} about topic {i % 97}" for i in range(lo, hi)]})
if step == "create":
    for k in range(4):
        write_deltalake(path, rows(k * 500, (k + 1) * 500, "a"), mode="append")
else:
    write_deltalake(path, rows(2000, 2100, "b"), mode="append")
    DeltaTable(path).delete("id < 50")
print(DeltaTable(path).version())
"#;
    let source = d.join("source");
    assert_eq!(
        run_python(&python, make, &[source.to_str().unwrap(), "create"]).trim(),
        "3"
    );
    let job = table_job(d, "job.toml", "source", "table", "").to_string();
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "text_column = \"text\"",
        "format = \"delta\"\ntext_column = \"text\"",
    );
    std::fs::write(&job, text).unwrap();
    // New table: every row. Then nothing changed: every file read, keys saved.
    assert_code(&embedflow(d, &["run", &job]), 0);
    let out = run_saying(
        d,
        &["run", &job],
        "2000 rows: 2000 unchanged (copied), 0 changed, 0 new, 0 deleted; 0 embedded",
    );
    assert!(!out.contains("keys reused"), "{out}");

    // 100 rows appended (a new file), 50 deleted (their file rewritten).
    assert_eq!(
        run_python(&python, make, &[source.to_str().unwrap(), "change"]).trim(),
        "5"
    );
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains(
            "2050 rows: 1950 unchanged (copied), 0 changed, 100 new, 50 deleted; 100 embedded"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "input files      3 unchanged since the last run: their keys reused, not read"
        ),
        "{out}"
    );

    // The same table as a full run over the source.
    let full = table_job(d, "full.toml", "source", "full", FULL);
    let text = std::fs::read_to_string(&full).unwrap().replace(
        "text_column = \"text\"",
        "format = \"delta\"\ntext_column = \"text\"",
    );
    std::fs::write(&full, text).unwrap();
    assert_code(&embedflow(d, &["run", &full]), 0);
    let (got, want) = (table_rows(d, "table"), table_rows(d, "full"));
    assert_eq!(ints(&got, "id"), ints(&want, "id"));
    assert!(vector_bits(&got) == vector_bits(&want));
}
