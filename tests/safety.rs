//! Never lose a user's data: an output that would replace (or later be read
//! back as) the input, however the path is spelled; files of another format
//! in an input directory; duplicate column names; SIGINT and SIGTERM at any
//! moment; temporary files of killed runs; CLI mistakes and their exit codes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The job file `embed_args(model, input, output)` stands for; its path.
fn job_file(dir: &Path, model: &str, input: &str, output: &str) -> String {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            "[input]\npath = {input:?}\ntext_column = \"text\"\n[model]\npath = {model:?}\n[output]\npath = {output:?}\n"
        ),
    )
    .unwrap();
    job.to_str().unwrap().to_string()
}

/// Asserts the spelled-differently run is refused before anything is
/// written: exit 1, the message, and the input byte-identical.
fn refused(dir: &Path, input: &str, output: &str, expect: &str, protect: &Path) {
    let before = std::fs::read(protect).unwrap();
    let model = tiny_s();
    let job = job_file(dir, &model, input, output);
    for args in [embed_args(&model, input, output), vec!["validate", &job]] {
        let cmd = args[0];
        let o = embedflow(dir, &args);
        assert_code(&o, 1);
        let e = stderr(&o);
        assert!(
            e.contains(expect),
            "{cmd} {input} -> {output}: expected '{expect}' in:\n{e}"
        );
        assert_eq!(
            std::fs::read(protect).unwrap(),
            before,
            "{cmd} {input} -> {output} changed {}",
            protect.display()
        );
    }
}

#[test]
fn an_output_that_is_the_input_spelled_another_way_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    let input = d.join("data/in.parquet");
    write_texts_parquet(&input, &[Some("alpha"), Some("beta"), Some("gamma")]);
    let abs = input.to_str().unwrap();
    std::os::unix::fs::symlink(&input, d.join("link.parquet")).unwrap();
    std::fs::hard_link(&input, d.join("hard.parquet")).unwrap();
    let same = "the run would replace its own input";
    for (i, o) in [
        ("data/./in.parquet", "data/in.parquet"),
        ("data/in.parquet", "./data/../data/in.parquet"),
        ("data/in.parquet", abs),
        (abs, "data/in.parquet"),
        ("link.parquet", "data/in.parquet"),
        ("data/in.parquet", "link.parquet"),
        ("hard.parquet", "data/in.parquet"),
    ] {
        refused(d, i, o, same, &input);
    }
    refused(d, "data", "data/in.parquet", same, &input);
    refused(
        d,
        "data/*.parquet",
        "data/in.parquet",
        "spelled another way",
        &input,
    );
}

#[test]
fn an_output_the_next_run_would_read_back_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    let input = d.join("data/in.parquet");
    write_texts_parquet(&input, &[Some("alpha"), Some("beta"), Some("gamma")]);
    refused(
        d,
        "data",
        "data/out.parquet",
        "is inside the input directory data",
        &input,
    );
    refused(
        d,
        "./data/",
        "data/sub/out.parquet",
        "is inside the input directory",
        &input,
    );
    refused(
        d,
        "data/*.parquet",
        "data/out.parquet",
        "matches the input pattern data/*.parquet",
        &input,
    );
    assert_eq!(listing(&d.join("data")), vec!["in.parquet"]);
    // A glob that cannot match the output is fine.
    let o = embedflow(d, &embed_args(&tiny_s(), "data/*.parquet", "data/out.vec"));
    assert_code(&o, 0);
}

#[test]
fn two_outputs_that_are_one_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("alpha")]);
    let model = tiny_s();
    let mut args = embed_args(&model, "in.parquet", "o.parquet");
    args.extend(["--documents", "./o.parquet"]);
    let o = embedflow(d, &args);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains(
            "output.documents_path: ./o.parquet is the same file as output.path (o.parquet)"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(listing(d), vec!["in.parquet"]);
}

#[test]
fn hidden_files_are_never_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    write_texts_parquet(&d.join("data/a.parquet"), &[Some("one"), Some("two")]);
    // What a killed run leaves: a hidden Parquet file beside the inputs.
    write_texts_parquet(
        &d.join("data/.o.parquet.embedded-1.parquet"),
        &[Some("x"), Some("y"), Some("z")],
    );
    for input in ["data", "data/*.parquet"] {
        let o = embedflow(d, &embed_args(&tiny_s(), input, "o.parquet"));
        assert_code(&o, 0);
        let (batch, _) = read_parquet(&d.join("o.parquet"));
        assert_eq!(batch.num_rows(), 2, "{input} read a hidden file");
    }
}

#[test]
fn a_directory_of_parquet_and_csv_is_refused_and_a_format_skips_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    write_texts_parquet(&d.join("data/a.parquet"), &[Some("one"), Some("two")]);
    std::fs::write(d.join("data/b.csv"), "id,text\n7,seven\n8,eight\n9,nine\n").unwrap();
    std::fs::write(d.join("data/README.txt"), "not data, not csv\n").unwrap();
    let e = fails(d, &embed_args(&tiny_s(), "data", "o.parquet"));
    assert_eq!(
        e.trim(),
        "error: input data: holds both Parquet files (data/a.parquet) and CSV files (data/b.csv); an input is read in one format: set input.format = \"parquet\" or \"csv\" (the other files are then skipped), or name the files with a glob"
    );

    let model = tiny_s();
    let mut args = embed_args(&model, "data", "o.parquet");
    args.extend(["--format", "csv"]);
    let o = embedflow(d, &args);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains(
            "input data: reading 1 CSV file; skipping 2 other files: data/README.txt, data/a.parquet"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(read_parquet(&d.join("o.parquet")).0.num_rows(), 3);
}

#[test]
fn duplicate_column_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("dup.csv"), "id,text,text\n1,a,b\n").unwrap();
    let e = fails(d, &embed_args(&tiny_s(), "dup.csv", "o.parquet"));
    assert_eq!(
        e.trim(),
        "error: input dup.csv: the header names the column 'text' twice (columns 2 and 3); column names must be unique: rename one"
    );
}

#[test]
fn command_line_mistakes_exit_64_with_range_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("a")]);
    let model = tiny_s();
    for (args, expect) in [
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (
            vec!["--threads", "-1", "validate", "x.toml"],
            "must be 0 (all cores) or a number of threads up to 1024, found -1",
        ),
        (
            vec!["--threads", "100000", "validate", "x.toml"],
            "must be 0 (all cores) or a number of threads up to 1024, found 100000",
        ),
        (
            vec!["--workers", "-1", "validate", "x.toml"],
            "must be 0 (auto) or a number of sessions up to 1024, found -1",
        ),
        (
            vec!["--workers", "two", "validate", "x.toml"],
            "expected a whole number of sessions, found 'two'",
        ),
        (vec![], "Usage: embedflow"),
    ] {
        let o = embedflow(d, &args);
        assert_code(&o, 64);
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
    let mut args = embed_args(&model, "in.parquet", "o.parquet");
    args.extend(["--batch-tokens", "-5"]);
    let e = fails(d, &args);
    assert!(e.contains("embed.batch_tokens"), "{e}");
    // More threads than cores: bounded, and said.
    let mut args = vec!["--threads", "1000"];
    args.extend(embed_args(&model, "in.parquet", "o.parquet"));
    let o = embedflow_env(d, &args, &[("RUST_LOG", "warn")]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("1000 threads asked for, but this machine has"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_empty_input_or_filter_says_nothing_was_embedded_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("header.csv"), "id,text\n").unwrap();
    let o = embedflow(d, &embed_args(&tiny_s(), "header.csv", "o.parquet"));
    assert_code(&o, 3);
    assert!(
        stderr(&o).contains("nothing was embedded: the input has no rows; o.parquet holds no rows"),
        "{}",
        stderr(&o)
    );
    assert_eq!(read_parquet(&d.join("o.parquet")).0.num_rows(), 0);

    write_texts_parquet(&d.join("in.parquet"), &[Some("a"), Some("b")]);
    let model = tiny_s();
    let mut args = embed_args(&model, "in.parquet", "f.parquet");
    args.extend(["--filter", "id > 100"]);
    let o = embedflow(d, &args);
    assert_code(&o, 3);
    assert!(
        stderr(&o).contains("nothing was embedded: input.filter matched no row"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unwritable_output_fails_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("a")]);
    std::fs::write(d.join("afile"), "x").unwrap();
    let model = tiny_s();
    let job = job_file(d, &model, "in.parquet", "afile/sub/o.parquet");
    for args in [
        embed_args(&model, "in.parquet", "afile/sub/o.parquet"),
        vec!["validate", &job],
    ] {
        let cmd = args[0];
        let o = embedflow(d, &args);
        assert_code(&o, 1);
        assert!(
            stderr(&o).contains(&format!(
                "output afile/sub/o.parquet: {} is a file, not a folder",
                d.canonicalize().unwrap().join("afile").display()
            )) || stderr(&o).contains("afile is a file, not a folder"),
            "{cmd}: {}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("rows read"), "{}", stderr(&o));
    }
}

#[test]
fn temporary_files_of_dead_runs_are_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("a")]);
    // A process that is gone, and one that lives but is no embedflow run.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let stale = [
        format!(".o.parquet.tmp-{gone_pid}-0"),
        format!(".o.parquet.tmp-{}-3", other.id()),
        format!(".o.parquet.embedded-{gone_pid}.parquet"),
    ];
    for f in &stale {
        std::fs::write(d.join(f), vec![0u8; 4096]).unwrap();
    }
    std::fs::write(d.join(".other.parquet.tmp-1-0"), "not ours").unwrap();
    let o = embedflow(d, &embed_args(&tiny_s(), "in.parquet", "o.parquet"));
    other.kill().unwrap();
    let _ = other.wait();
    assert_code(&o, 0);
    assert_eq!(
        listing(d),
        vec![".other.parquet.tmp-1-0", "in.parquet", "o.parquet"]
    );
}

/// Rows enough for a run of a few seconds with the tiny model.
fn long_input(path: &Path, rows: usize) {
    let texts: Vec<String> = (0..rows)
        .map(|i| format!("document {i}: {}", "some words to embed here ".repeat(40)))
        .collect();
    let refs: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    write_texts_parquet(path, &refs);
}

pub(crate) fn spawn_run(dir: &Path, args: &[&str]) -> std::process::Child {
    require_runtime();
    Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(dir)
        .args(args)
        .args(["--progress", "off", "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run embedflow")
}

pub(crate) fn send(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// A whole run of `args` in `d`, timed.
fn timed_run(d: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(d)
        .args(args)
        .args(["--progress", "off", "--threads", "1"])
        .output()
        .unwrap();
    assert_code(&o, 0);
    t.elapsed()
}

/// SIGINT and SIGTERM at `n` seeded moments of runs of `args` (which write
/// `o.parquet` in `d`, where an earlier output is); `timing` is the same run
/// writing `t.parquet`. Every time, the state is one of two: stopped (exit
/// 130, the message, the earlier output byte for byte, no file left) or,
/// for a signal that came after the commit point, finished (exit 0, the new
/// output complete). Returns how many stopped.
fn signals_at_moments(d: &Path, args: &[&str], timing: &[&str], n: usize) -> usize {
    let earlier = std::fs::read(d.join("o.parquet")).unwrap();
    let files = listing(d);
    let full = timed_run(d, timing);
    let fresh = read_parquet_bytes(&std::fs::read(d.join("t.parquet")).unwrap());
    std::fs::remove_file(d.join("t.parquet")).unwrap();
    // Seeded moments (xorshift) from 150 ms (the handlers are installed
    // within milliseconds of the start; nothing is open before) to 90 % of
    // a whole run. A run that finished before its moment shows a whole run
    // is shorter now (the timing run may have shared the cores with other
    // tests): the moments after it shrink to fit.
    let mut full = full;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut stopped = 0;
    for i in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let span = full.mul_f64(0.9).saturating_sub(Duration::from_millis(150));
        let at = Duration::from_millis(150) + span.mul_f64((seed % 1000) as f64 / 1000.0);
        let signal = if i % 2 == 0 { "INT" } else { "TERM" };
        let child = spawn_run(d, args);
        std::thread::sleep(at);
        send(child.id(), signal);
        let o = child.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        let now = std::fs::read(d.join("o.parquet")).unwrap();
        match o.status.code() {
            Some(130) => {
                stopped += 1;
                assert!(
                    e.contains(&format!(
                        "interrupted by SIG{signal}: nothing was committed"
                    )),
                    "{e}"
                );
                assert!(
                    now == earlier,
                    "SIG{signal} at {at:?} changed the earlier output"
                );
            }
            Some(0) => {
                // Finished before the signal could stop it: the new output,
                // whole.
                let got = read_parquet_bytes(&now);
                assert_eq!(got.num_rows(), fresh.num_rows(), "SIG{signal} at {at:?}");
                std::fs::write(d.join("o.parquet"), &earlier).unwrap();
                full = full.min(at);
            }
            other => panic!("SIG{signal} at {at:?} of {full:?}: exit {other:?}: {e}"),
        }
        assert_eq!(listing(d), files, "SIG{signal} at {at:?} left files");
    }
    stopped
}

/// SIGINT and SIGTERM at 30 seeded moments of a run: see
/// [`signals_at_moments`]; two thirds must be stops.
#[test]
fn a_signal_at_any_moment_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    long_input(&d.join("in.parquet"), 1500);
    let model = tiny_s();
    // The earlier output.
    timed_run(d, &embed_args(&model, "in.parquet", "o.parquet"));
    // The interrupted runs would write a different file (smaller chunks).
    let mut args = embed_args(&model, "in.parquet", "o.parquet");
    args.extend(["--max-tokens", "16", "--overlap", "4"]);
    let mut timing = embed_args(&model, "in.parquet", "t.parquet");
    timing.extend(["--max-tokens", "16", "--overlap", "4"]);
    let stopped = signals_at_moments(d, &args, &timing, 30);
    assert!(
        stopped >= 20,
        "only {stopped} of 30 signals stopped the run"
    );
}

/// The same with a `[cluster]` stage after the embedding: a signal during
/// either stops the run, and nothing is committed.
#[test]
fn a_signal_during_a_job_with_clusters_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    long_input(&d.join("in.parquet"), 1500);
    std::fs::write(
        d.join("job.toml"),
        format!(
            "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\n[model]\npath = {:?}\n[chunking]\nmode = \"none\"\n[output]\npath = \"o.parquet\"\n[cluster]\nk = 8\n",
            tiny_s()
        ),
    )
    .unwrap();
    timed_run(d, &["run", "job.toml", "--set", "cluster.k=4"]);
    let stopped = signals_at_moments(
        d,
        &["run", "job.toml"],
        &["run", "job.toml", "--set", "output.path=t.parquet"],
        8,
    );
    assert!(stopped >= 4, "only {stopped} of 8 signals stopped the run");
}

/// `n` seeded pseudo-random vectors of `dim` in `path` (`id` from 1000,
/// `embedding`).
pub(crate) fn random_vectors(path: &Path, n: usize, dim: usize) {
    let mut rng = embedflow::cluster::kmeans::Rng::new(7);
    let values: Vec<f32> = (0..n * dim)
        .map(|_| rng.next_f64() as f32 * 2.0 - 1.0)
        .collect();
    write_vectors(path, &values, dim);
}

/// `cluster` (a signal during k-means training too), `neighbors` and
/// `sql -o` stop on SIGINT and SIGTERM as `embed` does: exit 130, nothing
/// committed, the earlier output byte for byte.
#[test]
fn signals_stop_cluster_neighbors_and_sql_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    random_vectors(&d.join("v.parquet"), 10_000, 32);
    let cluster = |out: &'static str| {
        vec![
            "cluster",
            "v.parquet",
            out,
            "--k",
            "60",
            "--max-iter",
            "300",
            "--id-column",
            "id",
        ]
    };
    let neighbors = |out: &'static str| {
        vec![
            "neighbors",
            "v.parquet",
            out,
            "--k",
            "10",
            "--id-column",
            "id",
        ]
    };
    let sql = |out: &'static str| {
        vec![
            "sql",
            "SELECT a.id AS a, b.id AS b, inner_product(a.embedding, b.embedding) AS s FROM v a, v b WHERE a.id < 1150",
            "--table",
            "v=v.parquet",
            "--format",
            "parquet",
            "-o",
            out,
        ]
    };
    for (name, make) in [
        (
            "cluster",
            &cluster as &dyn Fn(&'static str) -> Vec<&'static str>,
        ),
        ("neighbors", &neighbors),
        ("sql", &sql),
    ] {
        // The earlier output: another file's bytes, so that any commit shows.
        std::fs::copy(d.join("v.parquet"), d.join("o.parquet")).unwrap();
        let stopped = signals_at_moments(d, &make("o.parquet"), &make("t.parquet"), 6);
        assert!(
            stopped >= 3,
            "{name}: only {stopped} of 6 signals stopped it"
        );
    }
}

/// A Parquet file held in memory, read back.
fn read_parquet_bytes(bytes: &[u8]) -> arrow::array::RecordBatch {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.parquet");
    std::fs::write(&p, bytes).unwrap();
    read_parquet(&p).0
}

/// A second signal exits at once, committing nothing; whatever it leaves is
/// removed by the next run.
#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    long_input(&d.join("in.parquet"), 1500);
    let model = tiny_s();
    let args = embed_args(&model, "in.parquet", "o.parquet");
    let t = Instant::now();
    let o = embedflow(d, &args);
    assert_code(&o, 0);
    let full = t.elapsed();
    std::fs::remove_file(d.join("o.parquet")).unwrap();
    let child = spawn_run(d, &args);
    std::thread::sleep(full.mul_f64(0.3).max(Duration::from_millis(200)));
    send(child.id(), "INT");
    std::thread::sleep(Duration::from_millis(20));
    // The first may already have stopped the run: then there is no one to
    // send the second to.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(
        e.contains("second SIGINT: exiting now; nothing was committed")
            || e.contains("interrupted by SIGINT: nothing was committed"),
        "{e}"
    );
    assert!(!d.join("o.parquet").exists());
    let o = embedflow(d, &args);
    assert_code(&o, 0);
    assert_eq!(listing(d), vec!["in.parquet", "o.parquet"]);
}

/// A row with too many or too few fields is named by its row number (data
/// rows from 1, as everywhere else), whether schema inference or the reader
/// meets it.
#[test]
fn a_ragged_csv_row_is_named_by_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("short.csv"), "id,text\n1,a\n2,b,c\n3,d\n").unwrap();
    let e = fails(d, &embed_args(&tiny_s(), "short.csv", "o.parquet"));
    assert_eq!(
        e.trim(),
        "error: input short.csv: row 2: 3 fields, where the header has 2 (a delimiter or quote out of place? see input.csv)"
    );
    let mut text = String::from("id,text\n");
    for i in 1..=20_000 {
        if i == 15_000 {
            text.push_str(&format!("{i}\n"));
        } else {
            text.push_str(&format!("{i},row {i}\n"));
        }
    }
    std::fs::write(d.join("long.csv"), text).unwrap();
    let e = fails(d, &embed_args(&tiny_s(), "long.csv", "o.parquet"));
    assert!(
        e.contains(
            "input long.csv: row 15000: 1 field, where the header has 2 (a delimiter or quote out of place? see input.csv)"
        ),
        "{e}"
    );
}

/// k-means with more clusters than vectors: refused before embedding when
/// the row count tells (one vector per row), else after it in the user's
/// words, never naming the run's intermediate file; nothing is left.
#[test]
fn more_clusters_than_vectors_is_said_in_the_users_terms() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(
        &d.join("in.parquet"),
        &[Some("a b"), Some("c d"), Some("e f")],
    );
    let job = |mode: &str| {
        format!(
            "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\n[model]\npath = {:?}\n[chunking]\nmode = \"{mode}\"\nkeep_text = true\n[output]\npath = \"o.parquet\"\n[cluster]\nk = 10\n",
            tiny_s()
        )
    };
    std::fs::write(d.join("none.toml"), job("none")).unwrap();
    for cmd in ["validate", "run"] {
        let e = fails(d, &[cmd, "none.toml"]);
        assert!(
            e.contains("cluster.k: 10 clusters need at least 10 vectors, and the input has 3 rows"),
            "{cmd}: {e}"
        );
        assert!(!e.contains("rows read"));
    }
    std::fs::write(d.join("tokens.toml"), job("tokens")).unwrap();
    let e = fails(d, &["run", "tokens.toml"]);
    assert!(
        e.contains("[cluster]: the vectors of this run: 3 rows, fewer than k = 10; nothing was committed to o.parquet"),
        "{e}"
    );
    assert!(!e.contains(".embedded-"), "{e}");
    assert_eq!(listing(d), vec!["in.parquet", "none.toml", "tokens.toml"]);
}

/// A copy of the tiny model folder whose files the test may change.
pub(crate) fn tiny_copy(dir: &Path) -> std::path::PathBuf {
    let to = dir.join("model");
    std::fs::create_dir_all(to.join("1_Pooling")).unwrap();
    for entry in std::fs::read_dir(tiny()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if entry.path().is_dir() {
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(&name).join(f.file_name())).unwrap();
            }
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
    to
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

/// A tokenizer with more ids than the model's embedding table, and a
/// max_seq_length past the graph's position table that config.json does
/// not state: both found before any row is read, by validate too, in words.
#[test]
fn a_tokenizer_or_length_the_graph_cannot_take_is_found_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("a")]);
    let model = tiny_copy(d);
    edit_json(&model.join("tokenizer.json"), |t| {
        let vocab = t["model"]["vocab"].as_object_mut().unwrap();
        for i in 0..100 {
            vocab.insert(format!("extra{i}"), serde_json::json!(30522 + i));
        }
    });
    let m = model.to_str().unwrap();
    let job = job_file(d, m, "in.parquet", "o.parquet");
    for args in [
        vec!["validate", &job],
        embed_args(m, "in.parquet", "o.parquet"),
    ] {
        let e = fails(d, &args);
        assert!(
            e.contains("the tokenizer has 30622 token ids, but model.onnx fails on id 30621: its embedding table is smaller, so tokenizer.json does not belong to this model.onnx"),
            "{e}"
        );
        assert!(!e.contains('\u{1b}'), "colour codes in {e}");
    }

    let model = tiny_copy(&d.join("long"));
    edit_json(&model.join("config.json"), |c| {
        c.as_object_mut().unwrap().remove("max_position_embeddings");
    });
    edit_json(&model.join("sentence_bert_config.json"), |c| {
        c["max_seq_length"] = serde_json::json!(600);
    });
    let mut args = embed_args(model.to_str().unwrap(), "in.parquet", "o.parquet");
    args.extend(["--chunking", "none"]);
    let e = fails(d, &args);
    assert!(
        e.contains("max_seq_length is 600 tokens, but model.onnx takes at most 512 (its position table); set model.max_seq_length to 512 or less"),
        "{e}"
    );
}

/// A disk that fills up mid-run: the message says so in words, nothing is
/// committed, the earlier output stays and no temporary file is left. The
/// small disk is a tmpfs in a private mount namespace (`unshare -m`; the
/// test runs as root, as scripts/test does in CI).
#[test]
fn a_full_disk_is_said_in_words_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    long_input(&d.join("in.parquet"), 1500);
    std::fs::create_dir(d.join("small")).unwrap();
    require_runtime();
    let model = tiny_s();
    let mut args = embed_args(&model, "in.parquet", "small/o.parquet");
    args.extend(["--keep-chunk-text", "--progress", "off"]);
    // Inside the namespace: mount, an earlier output, the run, then what
    // is left on the small disk (gone with the namespace afterwards).
    let script = "mount -t tmpfs -o size=256k tmpfs small || exit 90
echo earlier > small/o.parquet
\"$@\"
echo \"exit=$?\"
ls -A small
cat small/o.parquet";
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(env!("CARGO_BIN_EXE_embedflow"))
        .args(&args)
        .current_dir(d)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "this test needs root, for unshare -m and a tmpfs mount: {e}"
    );
    assert_eq!(out, "exit=1\no.parquet\nearlier\n", "{e}");
    assert!(
        e.contains("output small/o.parquet: the disk is full (no space left on the device); nothing was committed"),
        "{e}"
    );

    // A read-only file system: said before any row is read.
    let script = "mount -t tmpfs -o ro tmpfs small || exit 90
\"$@\"
echo \"exit=$?\"";
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(env!("CARGO_BIN_EXE_embedflow"))
        .args(&args)
        .current_dir(d)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "exit=1\n", "{e}");
    assert!(
        e.contains("output small/o.parquet: cannot write in ")
            && e.contains("small: the file system is read-only"),
        "{e}"
    );
}

/// Asserts the chunk rows of `doc` cover it in order: chunk_text is the
/// document's text between chunk_start and chunk_end (code points).
fn assert_chunks_cover(batch: &arrow::array::RecordBatch, doc: &str) {
    let chars: Vec<char> = doc.chars().collect();
    let starts = ints(batch, "chunk_start");
    let ends = ints(batch, "chunk_end");
    let texts = strings(batch, "chunk_text");
    let n = batch.num_rows();
    assert_eq!(
        ints(batch, "chunk_index"),
        (0..n as i64).collect::<Vec<_>>()
    );
    for r in 0..n {
        let piece: String = chars[starts[r] as usize..ends[r] as usize].iter().collect();
        assert_eq!(texts[r], piece, "chunk {r}");
        if r > 0 {
            assert!(
                starts[r] > starts[r - 1] && starts[r] <= ends[r - 1],
                "chunk {r}"
            );
        }
    }
    assert_eq!(starts[0], 0);
    let tail: String = chars[ends[n - 1] as usize..].iter().collect();
    assert!(
        tail.trim().is_empty(),
        "text after the last chunk: {tail:?}"
    );
}

/// A 5 MB document (40 tokenizer windows; the README's 20 MB figure is in
/// benches/long_document.sh) with default columns: every chunk row carries
/// the id and its own text, not the whole document (which overflowed
/// Arrow's offsets before), and the documents output keeps the text.
#[test]
fn a_long_document_is_chunked_with_default_columns() {
    let d = tempfile::tempdir().unwrap();
    let doc = news_document(5_000_000);
    write_texts_parquet(
        &d.path().join("in.parquet"),
        &[Some(doc.as_str()), Some("a short one")],
    );
    let model = tiny_s();
    let mut args = embed_args(&model, "in.parquet", "o.parquet");
    args.extend(["--documents", "docs.parquet"]);
    let o = embedflow(d.path(), &args);
    assert_code(&o, 0);
    let (out, _) = read_parquet(&d.path().join("o.parquet"));
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "id",
            "chunk_index",
            "chunk_start",
            "chunk_end",
            "chunk_text",
            "embedding"
        ]
    );
    let ids = ints(&out, "id");
    let big = ids.iter().filter(|&&i| i == 0).count();
    assert!(big > 4_000, "{big} chunks");
    assert_chunks_cover(&out.slice(0, big), &doc);
    assert_eq!(ids[big..], [1]);
    let (docs, _) = read_parquet(&d.path().join("docs.parquet"));
    assert_eq!(strings(&docs, "text"), [doc.as_str(), "a short one"]);
    assert_eq!(ints(&docs, "n_chunks"), [big as i64, 1]);
}

/// The text column asked for in input.columns is repeated in every chunk
/// row: written in slices (64 MiB), each row still holding the whole text.
#[test]
fn a_text_column_asked_for_is_repeated_per_chunk_across_slices() {
    let d = tempfile::tempdir().unwrap();
    let doc = news_document(400_000);
    write_texts_parquet(&d.path().join("in.parquet"), &[Some(doc.as_str())]);
    let model = tiny_s();
    let mut args = embed_args(&model, "in.parquet", "o.parquet");
    args.extend(["--columns", "text", "--no-chunk-text"]);
    let o = embedflow(d.path(), &args);
    assert_code(&o, 0);
    let (out, _) = read_parquet(&d.path().join("o.parquet"));
    let n = out.num_rows();
    // More than 64 MiB of repeated text: at least two slices.
    assert!(
        n * doc.len() > 64 << 20,
        "{n} chunks of {} bytes",
        doc.len()
    );
    assert!(out.column_by_name("chunk_text").is_none());
    let texts = strings(&out, "text");
    assert!(texts.iter().all(|t| *t == doc), "a chunk row lost its text");
}
