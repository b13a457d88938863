//! Hostile run, round 3 (issue 27): each case failed before its fix, and
//! runs through the real binary.

use std::path::Path;

use crate::util::*;

/// `e.parquet` with 5 rows of 3-dim vectors (ids 1000…1004).
fn five_vectors(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("e.parquet");
    let x: Vec<f32> = (0..15).map(|i| i as f32 + 1.0).collect();
    write_vectors(&p, &x, 3);
    p
}

fn rows(path: &Path) -> usize {
    read_parquet(path).0.num_rows()
}

#[test]
fn sql_refuses_to_write_over_its_own_table() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let e = five_vectors(d);
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(&e, d.join("link.parquet")).unwrap();
    std::fs::hard_link(&e, d.join("hard.parquet")).unwrap();
    let query = "SELECT * FROM t WHERE id < 1002";
    // The same file as the table, however the output spells it.
    for (table, out) in [
        ("t=e.parquet", "e.parquet"),
        ("t=e.parquet", "sub/../e.parquet"),
        ("t=e.parquet", "./link.parquet"),
        ("t=link.parquet", "e.parquet"),
        ("t=e.parquet", "hard.parquet"),
        ("t=.", "new.parquet"),
    ] {
        for format in ["parquet", "csv"] {
            let o = embedflow(
                d,
                &[
                    "sql", "--table", table, query, "-o", out, "--format", format,
                ],
            );
            assert_code(&o, 1);
            let err = stderr(&o);
            assert!(
                err.contains(&format!("--output {out}")) && err.contains("input"),
                "{table} -o {out}: {err}"
            );
            assert_eq!(rows(&e), 5, "{table} -o {out} ({format}) touched the table");
        }
    }
    assert!(!d.join("new.parquet").exists());
    // Another file is written as before.
    let o = embedflow(
        d,
        &[
            "sql",
            "--table",
            "t=e.parquet",
            query,
            "-o",
            "sub/x.parquet",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(rows(&d.join("sub/x.parquet")), 2);
}

#[test]
fn skipped_rows_are_not_counted_as_embedded() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let texts: Vec<String> = (0..600).map(|i| format!("document number {i}")).collect();
    let rows: Vec<Option<&str>> = texts
        .iter()
        .enumerate()
        .map(|(i, s)| match i % 150 {
            7 => None,
            _ => Some(s.as_str()),
        })
        .collect();
    write_texts_parquet(&d.join("in.parquet"), &rows);
    let tiny = tiny_s();
    let mut args = embed_args(&tiny, "in.parquet", "o.parquet");
    args.extend(["--summary", "json"]);
    for (out, extra) in [
        ("o.parquet", &[][..]),
        ("table", &["--output-format", "delta"][..]),
    ] {
        let mut a = args.clone();
        a[2] = out;
        a.extend(extra);
        let o = embedflow(d, &a);
        assert_code(&o, 2);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(
            (
                &v["rows_read"],
                &v["rows_skipped"],
                &v["rows_embedded"],
                &v["vectors_written"]
            ),
            (&600.into(), &4.into(), &596.into(), &596.into()),
            "{out}: {v}"
        );
    }
}

#[test]
fn a_repeated_id_is_refused_when_an_incremental_run_embeds_every_row() {
    use crate::tables::{documents_of, table_job, table_rows, text_of, versions};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let mut rows: Vec<(i64, String)> = (0..100).map(|i| (i, text_of(i, "a"))).collect();
    rows.push((42, text_of(42, "again")));
    documents_of(&d.join("in.parquet"), &rows);
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    // A new table: every row is embedded, and the id is still refused.
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("the id column id holds 42 more than once (rows 43 and 101)"),
        "{err}"
    );
    assert!(!d.join("table/_delta_log").exists() || versions(&d.join("table")).is_empty());
    // A table whose model changed: a full run, and the same refusal.
    rows.pop();
    documents_of(&d.join("in.parquet"), &rows);
    assert_code(&embedflow(d, &["run", &job]), 0);
    rows.push((7, text_of(7, "again")));
    documents_of(&d.join("in.parquet"), &rows);
    let o = embedflow(d, &["run", &job, "--set", "chunking.max_tokens=16"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("the id column id holds 7 more than once"),
        "{}",
        stderr(&o)
    );
    assert_eq!(versions(&d.join("table")).len(), 1);
    assert_eq!(table_rows(d, "table").num_rows(), 100);
}

#[test]
fn a_job_file_syntax_error_never_prints_a_credential() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for line in [
        format!("secret_access_key = \"{secret}"),
        format!("secret_access_key = {secret}"),
        format!("aws_session_token = '{secret}"),
    ] {
        let job = format!(
            "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\n[model]\npath = \"{}\"\n[output]\npath = \"o.parquet\"\n[s3]\n{line}\n",
            tiny_s()
        );
        std::fs::write(d.join("job.toml"), job).unwrap();
        for cmd in ["run", "validate"] {
            let o = embedflow(d, &[cmd, "job.toml"]);
            assert_code(&o, 1);
            let (err, out) = (stderr(&o), stdout(&o));
            assert!(err.contains("not valid TOML: line 9"), "{err}");
            assert!(
                !err.contains(secret) && !out.contains(secret),
                "{line}: {err}{out}"
            );
        }
    }
}

#[test]
fn credentials_in_a_url_are_refused_and_never_shown() {
    let server = crate::util::s3::server();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let b = server.bucket("userinfo");
    write_texts_parquet(&d.join("in.parquet"), &[Some("a"), Some("b")]);
    server.put_file(&b, "in.parquet", &d.join("in.parquet"));
    let secret = "wJalrXUtnFEMIK7MDENGbPxRfiCY";
    let tiny = tiny_s();
    let host = server.endpoint.trim_start_matches("http://");
    let with_info = format!("http://user:{secret}@{host}");
    let in_url = format!("s3://AKIAEXAMPLE:{secret}@{b}/in.parquet");
    let out_url = format!("s3://u:{secret}@{b}/o.parquet");
    let table = format!("t=s3://k:{secret}@{b}/in.parquet");
    let plain_out = format!("s3://{b}/o.parquet");
    let plain_in = format!("s3://{b}/in.parquet");
    /// (arguments, environment, what the message shows of the URL)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            embed_args(&tiny, &in_url, "o.parquet"),
            vec![],
            "s3://***@userinfo/in.parquet",
        ),
        (
            embed_args(&tiny, "in.parquet", &out_url),
            vec![],
            "s3://***@",
        ),
        (
            vec!["sql", "--table", &table, "SELECT 1"],
            vec![],
            "s3://***@",
        ),
        (
            [
                embed_args(&tiny, "in.parquet", &plain_out),
                vec!["--s3-endpoint", &with_info],
            ]
            .concat(),
            vec![],
            "http://***@",
        ),
        (
            embed_args(&tiny, &plain_in, "o.parquet"),
            vec![("AWS_ENDPOINT_URL", with_info.as_str())],
            "http://***@",
        ),
    ];
    for (args, mut env, shown) in cases {
        env.push(("RUST_LOG", "trace"));
        let o = server.embedflow(d, &args, &env);
        assert_code(&o, 1);
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            !all.contains(secret),
            "{args:?}: the secret was shown:\n{all}"
        );
        assert!(
            all.contains(shown) && all.contains("credentials in a URL are refused"),
            "{args:?}: {all}"
        );
    }
    assert!(!d.join("o.parquet").exists());
    assert_eq!(server.keys(&b), vec!["in.parquet".to_string()]);
}

/// A 1 x 1,000,000 grayscale PNG (a few kB): under the pixel limit, but
/// resized to a 64-pixel shortest edge it would take gigabytes.
fn thin_png() -> Vec<u8> {
    let img = image::GrayImage::from_pixel(1_000_000, 1, image::Luma([128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// `embed` of an image-path column, stopped after 120 s at most (a read
/// that blocks forever must fail the test, not hang it).
fn embed_image_paths(d: &Path, paths: &[&str], extra: &[&str]) -> std::process::Output {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("path", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..paths.len() as i64)),
            Arc::new(StringArray::from(paths.to_vec())),
        ],
    )
    .unwrap();
    write_batch(&d.join("paths.parquet"), &batch);
    let clip = shared().join("models/tiny-clip-random");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(d)
        .args(["embed", "paths.parquet", "o.parquet", "--model"])
        .arg(&clip)
        .args([
            "--image-column",
            "path",
            "--id-column",
            "id",
            "--progress",
            "off",
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("embed of {paths:?} still running after 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn thin_images_fifos_devices_and_folders_are_row_errors() {
    require_runtime();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let good = shared().join("models/tiny-clip-random/images/00_red_circle_128x128.png");
    std::fs::write(d.join("thin.png"), thin_png()).unwrap();
    std::fs::create_dir(d.join("folder.png")).unwrap();
    let fifo = d.join("fifo.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let cases = [
        ("thin.png", "would be resized to"),
        ("fifo.png", "is not a regular file"),
        ("folder.png", "is a directory, not an image file"),
        ("/dev/zero", "is not a regular file"),
        ("/proc/self/environ", "is a file of the system"),
    ];
    // Each alone fails the run with its reason and writes nothing.
    for (path, why) in cases {
        let o = embed_image_paths(d, &[good.to_str().unwrap(), path], &[]);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains(&format!("column path ({path}): ")) && err.contains(why),
            "{path}: {err}"
        );
        assert!(!d.join("o.parquet").exists());
    }
    // Skipped all together: the good row is written, each bad one named.
    let mut paths = vec![good.to_str().unwrap()];
    paths.extend(cases.iter().map(|c| c.0));
    let o = embed_image_paths(d, &paths, &["--on-error", "skip"]);
    assert_code(&o, 2);
    let err = stderr(&o);
    for (path, why) in cases {
        assert!(
            err.contains(&format!("({path}): ")) && err.contains(why),
            "{path}: {err}"
        );
    }
    assert_eq!(ints(&read_parquet(&d.join("o.parquet")).0, "id"), vec![0]);
}

#[test]
fn a_shard_count_is_bounded_and_two_schedulers_are_refused() {
    use crate::tables::{documents_of, table_job, text_of};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let rows: Vec<(i64, String)> = (0..20).map(|i| (i, text_of(i, "a"))).collect();
    documents_of(&d.join("in.parquet"), &rows);
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    for (args, env, expect) in [
        (
            vec!["run", job.as_str(), "--shard", "1/1000000"],
            vec![],
            "--shard 1/1000000: 1000000 shards is more than the 10000",
        ),
        (
            vec!["run", job.as_str(), "--shards", "20000"],
            vec![("JOB_COMPLETION_INDEX", "3")],
            "20000 shards is more than the 10000",
        ),
        (
            vec!["run", job.as_str()],
            vec![
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
                ("JOB_COMPLETION_INDEX", "1"),
                ("EMBEDFLOW_SHARDS", "2"),
            ],
            "the task indices of Slurm (SLURM_ARRAY_TASK_ID=0) and Kubernetes (JOB_COMPLETION_INDEX=1)",
        ),
    ] {
        let o = embedflow_env(d, &args, &env);
        assert_code(&o, 1);
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
        assert!(!d.join("table").exists(), "{args:?} touched the table");
    }
}

/// Parts named by the unit records under `table/_embedflow/runs/*/units`.
fn recorded_parts(table: &Path) -> Vec<std::path::PathBuf> {
    let mut parts = Vec::new();
    for run in std::fs::read_dir(table.join("_embedflow/runs"))
        .into_iter()
        .flatten()
    {
        let units = run.unwrap().path().join("units");
        for u in std::fs::read_dir(units).into_iter().flatten() {
            let Ok(bytes) = std::fs::read(u.unwrap().path()) else {
                continue;
            };
            let Ok(r) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            for p in r["parts"].as_array().into_iter().flatten() {
                parts.push(table.join(p["path"].as_str().unwrap()));
            }
        }
    }
    parts.sort();
    parts
}

/// Starts `run JOB` and kills it (-9) once `n` parts are recorded; false
/// when it finished first.
fn kill_after_parts(d: &Path, job: &str, n: usize) -> bool {
    use crate::tables::{kill9, spawn};
    let mut child = spawn(d, &["run", job]);
    while child.try_wait().unwrap().is_none() {
        if recorded_parts(&d.join("table")).len() >= n {
            kill9(&mut child);
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

#[test]
fn a_resume_redoes_parts_that_were_deleted_truncated_or_replaced() {
    use crate::tables::{documents_of, table_job, table_rows, text_of, vector_bits};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let rows: Vec<(i64, String)> = (0..24_000).map(|i| (i, text_of(i, "tamper"))).collect();
    documents_of(&d.join("in.parquet"), &rows);
    let reference = table_job(
        d,
        "reference.toml",
        "in.parquet",
        "reference",
        "mode = \"full\"",
    );
    assert_code(&embedflow(d, &["run", &reference]), 0);
    let want = table_rows(d, "reference");
    let job = table_job(d, "job.toml", "in.parquet", "table", "mode = \"full\"");
    for tamper in ["delete", "truncate", "replace"] {
        assert!(
            kill_after_parts(d, &job, 3),
            "{tamper}: the run finished before its kill"
        );
        let parts = recorded_parts(&d.join("table"));
        let victim = &parts[1];
        match tamper {
            "delete" => std::fs::remove_file(victim).unwrap(),
            "truncate" => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(victim)
                    .unwrap();
                f.set_len(100).unwrap();
            }
            _ => std::fs::copy(&parts[0], victim).map(|_| ()).unwrap(),
        }
        let o = embedflow(d, &["run", &job]);
        assert_code(&o, 0);
        let err = stderr(&o);
        assert!(err.contains("redoing unit"), "{tamper}: {err}");
        let got = table_rows(d, "table");
        assert_eq!(ints(&got, "id"), ints(&want, "id"), "{tamper}");
        assert!(
            vector_bits(&got) == vector_bits(&want),
            "{tamper}: vectors differ"
        );
    }
    // A part removed while the run is still going: the commit refuses.
    let versions_before = crate::tables::versions(&d.join("table")).len();
    let mut child = crate::tables::spawn(d, &["run", &job]);
    let mut removed = false;
    while child.try_wait().unwrap().is_none() {
        let parts = recorded_parts(&d.join("table"));
        if !removed && parts.len() >= 2 {
            std::fs::remove_file(&parts[0]).unwrap();
            removed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    assert!(removed, "the run finished before a part could be removed");
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("nothing was committed: 1 of the run's")
            && stderr(&o).contains("is missing"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        crate::tables::versions(&d.join("table")).len(),
        versions_before
    );
    // The next run redoes it and commits a whole table.
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 0);
    let got = table_rows(d, "table");
    assert!(
        vector_bits(&got) == vector_bits(&want),
        "vectors differ after the redo"
    );
}

#[test]
fn unlock_refuses_a_live_writer_and_a_writer_whose_lease_was_broken_commits_nothing() {
    use crate::tables::{documents_of, spawn, table_job, table_rows, text_of, versions};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let rows: Vec<(i64, String)> = (0..30_000).map(|i| (i, text_of(i, "lease"))).collect();
    documents_of(&d.join("in.parquet"), &rows);
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    let lease = d.join("table/_embedflow/lease.json");
    let wait_for_lease = || {
        let t = std::time::Instant::now();
        while !lease.exists() && t.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(lease.exists(), "the run took no lease");
    };
    // unlock refuses the lease of a run alive on this host.
    let first = spawn(d, &["run", &job]);
    wait_for_lease();
    let o = embedflow(d, &["unlock", "table"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("held by a run that is alive on this host")
            && stderr(&o).contains(&format!("kill {}", first.id())),
        "{}",
        stderr(&o)
    );
    let o = first.wait_with_output().unwrap();
    assert_code(&o, 0);
    assert_eq!(versions(&d.join("table")).len(), 1);
    // A lease taken from under a live writer (as unlock on another host
    // would): the writer finds it gone before its commit and commits nothing.
    let second = spawn(d, &["run", &job, "--set", "output.mode=\"full\""]);
    wait_for_lease();
    std::fs::write(
        &lease,
        r#"{"host":"elsewhere","pid":1,"started_ms":1,"expires_ms":99999999999999}"#,
    )
    .unwrap();
    let o = second.wait_with_output().unwrap();
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("was broken while it ran")
            && stderr(&o).contains("nothing was committed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(versions(&d.join("table")).len(), 1);
    // The other holder's lease is left as it is.
    assert!(
        std::fs::read_to_string(&lease)
            .unwrap()
            .contains("elsewhere")
    );
    assert_eq!(table_rows(d, "table").num_rows(), 30_000);
}

#[test]
fn a_changed_tokenizer_or_weights_file_re_embeds_an_incremental_table() {
    use crate::tables::{documents_of, table_rows, vector_bits};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let model = crate::safety::tiny_copy(d);
    // Capitals: a tokenizer that stops lower-casing sees other tokens.
    let rows: Vec<(i64, String)> = (0..300)
        .map(|i| {
            (
                i,
                format!("Document {i} About The Topic {} In Capitals", i % 7),
            )
        })
        .collect();
    documents_of(&d.join("in.parquet"), &rows);
    let job = format!(
        "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\nid_column = \"id\"\n[model]\npath = \"{}\"\n[output]\npath = \"table\"\nformat = \"delta\"\n",
        model.display()
    );
    std::fs::write(d.join("job.toml"), job).unwrap();
    assert_code(&embedflow(d, &["run", "job.toml"]), 0);
    let before = table_rows(d, "table");
    // Unchanged: nothing embedded.
    let o = embedflow(d, &["run", "job.toml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("0 embedded"), "{}", stdout(&o));
    // The tokenizer lower-cases no more: other tokens, other vectors.
    let tok = model.join("tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
    v["normalizer"]["lowercase"] = serde_json::Value::Bool(false);
    std::fs::write(&tok, serde_json::to_string(&v).unwrap()).unwrap();
    let o = embedflow(d, &["run", "job.toml"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("every row embedded: the model or its settings changed")
            && stdout(&o).contains("model files changed: tokenizer.json"),
        "{}",
        stdout(&o)
    );
    let after = table_rows(d, "table");
    assert!(
        vector_bits(&after) != vector_bits(&before),
        "the vectors did not change"
    );
    // A file of external weights beside the graph counts too.
    std::fs::write(model.join("model.onnx_data"), b"weights").unwrap();
    let o = embedflow(d, &["run", "job.toml"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("model files changed: model.onnx_data"),
        "{}",
        stdout(&o)
    );
    // A README does not.
    std::fs::write(model.join("README.md"), b"# notes").unwrap();
    let o = embedflow(d, &["run", "job.toml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("0 embedded"), "{}", stdout(&o));
}

#[test]
fn an_input_edited_in_place_between_a_crash_and_the_rerun_is_not_resumed() {
    use crate::tables::{table_job, table_rows};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let mut csv = String::from("id,text\n");
    for i in 0..24_000 {
        csv.push_str(&format!("{i},row {i} says alpha about topic {}\n", i % 13));
    }
    std::fs::write(d.join("in.csv"), &csv).unwrap();
    let job = table_job(d, "job.toml", "in.csv", "table", "mode = \"full\"");
    assert!(
        kill_after_parts(d, &job, 3),
        "the run finished before its kill"
    );
    // The same size, other content, written in place.
    let edited = csv.replacen("row 5 says alpha", "row 5 says gamma", 1);
    assert_eq!(edited.len(), csv.len());
    std::fs::write(d.join("in.csv"), &edited).unwrap();
    let o = embedflow(d, &["run", &job]);
    assert_code(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("not resuming the interrupted run") && err.contains("the input files changed"),
        "{err}"
    );
    let got = table_rows(d, "table");
    let texts = strings(&got, "chunk_text");
    assert_eq!(texts.len(), 24_000);
    assert!(
        texts.iter().any(|t| t.starts_with("row 5 says gamma")),
        "row 5 kept its old text"
    );
    assert!(!texts.iter().any(|t| t.starts_with("row 5 says alpha")));
}

/// A Delta table another tool wrote: columns customer and amount, one file.
fn foreign_table(dir: &Path) {
    use arrow::array::{Float64Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    std::fs::create_dir_all(dir.join("_delta_log")).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Float64Array::from(vec![9.5, 20.0])),
        ],
    )
    .unwrap();
    write_batch(&dir.join("part-0.parquet"), &batch);
    let size = std::fs::metadata(dir.join("part-0.parquet")).unwrap().len();
    let schema_string = r#"{"type":"struct","fields":[{"name":"customer","type":"long","nullable":true,"metadata":{}},{"name":"amount","type":"double","nullable":true,"metadata":{}}]}"#;
    let log = [
        serde_json::json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
        serde_json::json!({"metaData": {
            "id": "3a6d0c1e-0000-4000-8000-000000000001",
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string,
            "partitionColumns": [],
            "configuration": {},
            "createdTime": 1
        }}),
        serde_json::json!({"add": {
            "path": "part-0.parquet", "partitionValues": {}, "size": size,
            "modificationTime": 1, "dataChange": true
        }}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect::<Vec<_>>()
    .join("\n");
    std::fs::write(dir.join("_delta_log/00000000000000000000.json"), log + "\n").unwrap();
}

#[test]
fn a_delta_table_embedflow_did_not_write_is_not_replaced_unless_asked() {
    use crate::tables::{table_job, versions};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("a"), Some("b"), Some("c")]);
    foreign_table(&d.join("table"));
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    for args in [vec!["run", job.as_str()], vec!["validate", job.as_str()]] {
        let o = embedflow(d, &args);
        assert_code(&o, 1);
        assert!(
            stderr(&o).contains(
                "is a Delta table that embedflow did not write (columns: customer, amount)"
            ) && stderr(&o).contains("output.mode = \"overwrite\""),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(versions(&d.join("table")).len(), 1);
    let o = embedflow(d, &["run", &job, "--set", "output.mode=\"overwrite\""]);
    assert_code(&o, 0);
    assert_eq!(versions(&d.join("table")).len(), 2);
    // Once embedflow's, the table is updated as any other.
    assert_code(&embedflow(d, &["run", &job]), 0);
}

/// Rewrites a Parquet file with extra key-value metadata in its footer.
fn with_footer(path: &Path, kv: &[(&str, &str)]) {
    let (batch, _) = read_parquet(path);
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(
            kv.iter()
                .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.to_string(), v.to_string()))
                .collect(),
        ))
        .build();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn a_report_never_follows_a_footer_path_outside_the_table() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::create_dir_all(d.join("tables")).unwrap();
    std::fs::create_dir_all(d.join("private")).unwrap();
    // A file the table's author wants read into the page.
    std::fs::write(d.join("private/secret.parquet"), b"PAR1 private words PAR1").unwrap();
    let mut x = Vec::new();
    for i in 0..40 {
        x.extend([(i % 3) as f32, 1.0, (i % 5) as f32 * 0.1, 0.5]);
    }
    let table = d.join("tables/v.parquet");
    write_vectors(&table, &x, 4);
    let outside = d.join("private/secret.parquet");
    for named in [
        outside.to_str().unwrap(),
        "private/secret.parquet",
        "tables/../private/secret.parquet",
        "/etc/passwd",
    ] {
        with_footer(&table, &[("embedflow.topics.topics_path", named)]);
        let _ = std::fs::remove_file(d.join("r.html"));
        let o = embedflow(d, &["report", "tables/v.parquet", "-o", "r.html"]);
        assert_code(&o, 0);
        assert!(
            stderr(&o).contains("names a topics table outside its folder")
                && stderr(&o).contains("not read"),
            "{named}: {}",
            stderr(&o)
        );
        let html = std::fs::read_to_string(d.join("r.html")).unwrap();
        assert!(
            !html.contains("private words") && !html.contains("root:x:0:0"),
            "{named}"
        );
    }
    // The user may still name it.
    let o = embedflow(
        d,
        &[
            "report",
            "tables/v.parquet",
            "-o",
            "r.html",
            "--topics",
            "private/secret.parquet",
        ],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("private/secret.parquet"),
        "{}",
        stderr(&o)
    );
}

/// Starts `report` with plain progress lines; returns the child and a
/// channel that receives the moment its t-SNE begins ("laying out").
fn report_with_layout_signal(
    d: &Path,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<std::time::Instant>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(d)
        .args(args)
        .args(["--progress", "plain", "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("laying out") {
                let _ = tx.send(std::time::Instant::now());
            }
        }
    });
    (child, rx)
}

#[test]
fn a_report_stops_at_once_on_sigterm_during_its_layout() {
    use crate::safety::{random_vectors, send};
    use std::time::{Duration, Instant};
    require_runtime();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    random_vectors(&d.join("v.parquet"), 1500, 16);
    let args = [
        "report",
        "v.parquet",
        "-o",
        "r.html",
        "--max-points",
        "1500",
    ];
    // How long the layout takes, uninterrupted.
    let (mut child, began) = report_with_layout_signal(d, &args);
    let began = began.recv_timeout(Duration::from_secs(300)).unwrap();
    assert!(child.wait().unwrap().success());
    let layout = began.elapsed();
    std::fs::remove_file(d.join("r.html")).unwrap();
    assert!(
        layout > Duration::from_secs(2),
        "the layout took {layout:?}: too short to tell a stop inside it"
    );
    // A signal a third of the way into the layout.
    let (mut child, began) = report_with_layout_signal(d, &args);
    began.recv_timeout(Duration::from_secs(300)).unwrap();
    std::thread::sleep(layout / 3);
    let signalled = Instant::now();
    send(child.id(), "TERM");
    let status = child.wait().unwrap();
    let stopped = signalled.elapsed();
    assert_eq!(status.code(), Some(130));
    assert!(!d.join("r.html").exists());
    assert!(
        stopped < Duration::from_secs(1).max(layout / 4),
        "stopped {stopped:?} after SIGTERM; the layout alone takes {layout:?}"
    );
}

#[test]
fn a_blank_text_never_ranks_first_in_a_semantic_search() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let potion = shared().join("models/potion-base-8M");
    let potion = potion.to_str().unwrap();
    write_texts_parquet(
        &d.join("in.parquet"),
        &[
            Some("   "),
            Some("the cat sat on the mat"),
            Some("stock markets fell sharply today"),
            Some("a recipe for lemon cake"),
        ],
    );
    let mut args = embed_args(potion, "in.parquet", "e.parquet");
    args.extend(["--on-empty", "embed", "--chunking", "none"]);
    assert_code(&embedflow(d, &args), 0);
    for (order, query) in [
        (
            "score DESC",
            "cosine_similarity(embedding, embed('the cat sat on the mat'))",
        ),
        (
            "score",
            "cosine_distance(embedding, embed('the cat sat on the mat'))",
        ),
        (
            "score",
            "l2_distance(embedding, embed('the cat sat on the mat'))",
        ),
        (
            "score DESC",
            "inner_product(embedding, embed('the cat sat on the mat'))",
        ),
    ] {
        let o = embedflow(
            d,
            &[
                "sql",
                "--table",
                "t=e.parquet",
                "--model",
                potion,
                "--format",
                "csv",
                &format!("SELECT id, {query} AS score FROM t ORDER BY {order}"),
            ],
        );
        assert_code(&o, 0);
        let out = stdout(&o);
        let rows: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(rows.len(), 4, "{out}");
        assert!(
            !rows[0].starts_with("0,"),
            "{query} {order}: the blank text ranks first:\n{out}"
        );
        assert!(
            !out.to_lowercase().contains("nan"),
            "{query}: NaN in\n{out}"
        );
    }
}

/// 30 rows of 4-dim vectors in 3 groups; rows 4, 11 and 20 hold a NaN or
/// an infinity, row 7 is a zero vector.
fn vectors_with_holes(path: &Path) {
    let mut x = Vec::new();
    for i in 0..30 {
        let g = (i % 3) as f32;
        let mut v = [1.0 + g, 0.1 * (i as f32), 3.0 - g, 0.5];
        match i {
            4 => v[1] = f32::NAN,
            11 => v[2] = f32::INFINITY,
            20 => v[0] = f32::NEG_INFINITY,
            7 => v = [0.0; 4],
            _ => {}
        }
        x.extend(v);
    }
    write_vectors(path, &x, 4);
}

#[test]
fn non_finite_vectors_are_left_off_clusters_neighbors_and_the_map() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    vectors_with_holes(&d.join("v.parquet"));
    let bad_ids = [1004i64, 1011, 1020];
    // Clusters: finite centroids, null labels for the bad rows, named.
    let o = embedflow(
        d,
        &[
            "cluster",
            "v.parquet",
            "c.parquet",
            "--k",
            "3",
            "--clusters",
            "k.parquet",
            "--id-column",
            "id",
        ],
    );
    assert_code(&o, 0);
    assert!(
        stderr(&o)
            .contains("3 rows with NaN or infinite vector values are left out of the clusters"),
        "{}",
        stderr(&o)
    );
    let (c, _) = read_parquet(&d.join("c.parquet"));
    let ids = ints(&c, "id");
    let labels = c.column_by_name("cluster_id").unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(labels.is_null(i), bad_ids.contains(id), "row id {id}");
    }
    let (k, _) = read_parquet(&d.join("k.parquet"));
    for centroid in vectors(&k, "centroid") {
        assert!(centroid.iter().all(|v| v.is_finite()), "{centroid:?}");
    }
    assert_eq!(ints(&k, "size").iter().sum::<i64>(), 27);
    // Neighbors: the bad rows and the zero vector have none and are none.
    let o = embedflow(
        d,
        &[
            "neighbors",
            "v.parquet",
            "n.parquet",
            "--k",
            "5",
            "--id-column",
            "id",
        ],
    );
    assert_code(&o, 0);
    assert!(
        stderr(&o)
            .contains("4 vectors of v.parquet with NaN or infinite values or zero (no direction)"),
        "{}",
        stderr(&o)
    );
    let (n, _) = read_parquet(&d.join("n.parquet"));
    let lists = n.column_by_name("neighbor_ids").unwrap();
    let lists = lists
        .as_any()
        .downcast_ref::<arrow::array::ListArray>()
        .unwrap();
    let scores = n.column_by_name("scores").unwrap();
    let scores = scores
        .as_any()
        .downcast_ref::<arrow::array::ListArray>()
        .unwrap();
    let none = [1004i64, 1007, 1011, 1020];
    for (i, id) in ints(&n, "id").iter().enumerate() {
        let got = lists.value(i);
        let got = got
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(got.is_empty(), none.contains(id), "row id {id}");
        assert!(
            got.iter().all(|g| !none.contains(&g.unwrap())),
            "row id {id}: {got:?}"
        );
        let s = scores.value(i);
        let s = s
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .unwrap();
        assert!(s.iter().all(|v| v.unwrap().is_finite()));
    }
    // The report: 27 points placed, the 3 named.
    let o = embedflow(d, &["report", "c.parquet", "-o", "r.html"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("3 rows with NaN or infinite vector values are left off the map"),
        "{}",
        stderr(&o)
    );
    let html = std::fs::read_to_string(d.join("r.html")).unwrap();
    assert!(html.contains("3 rows with NaN or infinite vector values are left off the map"));
    assert!(html.contains("All 27 rows, placed by t-SNE"));
}

#[test]
fn a_damaged_delta_log_or_a_missing_version_is_said_in_words_and_as_an_input() {
    use crate::tables::{documents_of, table_job, text_of};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let rows: Vec<(i64, String)> = (0..50).map(|i| (i, text_of(i, "log"))).collect();
    documents_of(&d.join("in.parquet"), &rows);
    let job = table_job(d, "job.toml", "in.parquet", "table", "");
    assert_code(&embedflow(d, &["run", &job]), 0);
    let tiny = tiny_s();
    // A version past the newest.
    let mut args = embed_args(&tiny, "table", "o.parquet");
    args.extend(["--format", "delta", "--input-version", "7"]);
    let o = embedflow(d, &args);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("input table: Delta table: version 7 does not exist; the newest is 0"),
        "{err}"
    );
    // A truncated commit file, read by sql and by report.
    let commit = d.join("table/_delta_log/00000000000000000000.json");
    let bytes = std::fs::read(&commit).unwrap();
    std::fs::write(&commit, &bytes[..bytes.len() / 2]).unwrap();
    for args in [
        vec!["sql", "--table", "t=table", "SELECT count(*) FROM t"],
        vec!["report", "table", "-o", "r.html"],
    ] {
        let o = embedflow(d, &args);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains("input table: Delta table: its log cannot be read: a commit file is damaged or truncated")
                && err.contains("00000000000000000000.json"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("Kernel error") || err.contains("the library said"),
            "{err}"
        );
        assert!(
            !err.contains(" ERROR "),
            "{args:?}: library log lines: {err}"
        );
        assert!(!err.contains("output table"), "{err}");
    }
}

#[test]
fn an_input_naming_a_fifo_is_refused_instead_of_blocking() {
    require_runtime();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for name in ["in.parquet", "in.csv"] {
        let made = std::process::Command::new("mkfifo")
            .arg(d.join(name))
            .status()
            .unwrap();
        assert!(made.success());
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_embedflow"))
            .current_dir(d)
            .args(embed_args(&tiny_s(), name, "o.parquet"))
            .args(["--progress", "off"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("embed {name} (a FIFO) still running after 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        assert_code(&o, 1);
        assert!(
            stderr(&o).contains(&format!(
                "input {name}: is not a regular file (a FIFO, socket or device)"
            )),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn a_commit_that_loses_a_race_says_so_and_commits_nothing() {
    use crate::tables::{documents_of, spawn, table_job, table_rows, text_of, versions};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let rows: Vec<(i64, String)> = (0..24_000).map(|i| (i, text_of(i, "race"))).collect();
    documents_of(&d.join("in.parquet"), &rows);
    let job = table_job(d, "job.toml", "in.parquet", "table", "mode = \"full\"");
    assert_code(&embedflow(d, &["run", &job]), 0);
    // Another writer (one that takes no lease) lands version 1 while the
    // run is writing: its commit of version 1 must lose, in words.
    let child = spawn(d, &["run", &job]);
    let start = std::time::Instant::now();
    while recorded_parts(&d.join("table")).is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "no part recorded"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let log = d.join("table/_delta_log");
    std::fs::copy(
        log.join("00000000000000000000.json"),
        log.join("00000000000000000001.json"),
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("the commit failed, nothing was committed: another writer committed a version of this table while this run was writing it"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("Failed to commit transaction: 0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(versions(&d.join("table")).len(), 2);
    assert_eq!(table_rows(d, "table").num_rows(), 24_000);
}

#[test]
fn an_invalid_bucket_name_is_said_before_any_request() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tiny = tiny_s();
    for args in [
        embed_args(&tiny, "s3://Bad_Bucket/x.parquet", "o.parquet"),
        vec!["sql", "--table", "t=s3://Bad_Bucket/x.parquet", "SELECT 1"],
    ] {
        let o = embedflow_env(d, &args, &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")]);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains("'Bad_Bucket' is not an S3 bucket name: 'B' is not allowed"),
            "{args:?}: {err}"
        );
        assert!(!err.contains('<') && !err.contains("400"), "{err}");
    }
}

#[test]
fn a_full_disk_at_the_commit_is_said_in_words() {
    use crate::tables::{documents_of, table_job, table_rows, text_of};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let rows: Vec<(i64, String)> = (0..3000).map(|i| (i, text_of(i, "full"))).collect();
    documents_of(&d.join("in.parquet"), &rows);
    let job = table_job(d, "job.toml", "in.parquet", "table", "mode = \"full\"");
    assert_code(&embedflow(d, &["run", &job]), 0);
    // The log on a small disk filled to the brim: the parts are written,
    // the commit is not.
    let script = "mkdir keep && cp table/_delta_log/* keep/
mount -t tmpfs -o size=64k tmpfs table/_delta_log || exit 90
cp keep/* table/_delta_log/
dd if=/dev/zero of=table/_delta_log/.fill bs=1k count=1000 2>/dev/null
\"$@\"
echo \"exit=$?\"
ls table/_delta_log";
    let o = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(env!("CARGO_BIN_EXE_embedflow"))
        .args(["run", &job, "--progress", "off"])
        .current_dir(d)
        .output()
        .unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(
        o.status.code(),
        Some(0),
        "this test needs root (unshare -m, tmpfs): {err}"
    );
    assert!(out.starts_with("exit=1\n"), "{out}{err}");
    assert!(
        err.contains(
            "the commit failed, nothing was committed: the disk is full (no space left on the device)"
        ),
        "{err}"
    );
    assert!(!out.contains("00000000000000000001.json"), "{out}");
    assert_eq!(table_rows(d, "table").num_rows(), 3000);
}

#[test]
fn a_model_folder_holding_a_fifo_is_refused_instead_of_blocking() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let model = crate::safety::tiny_copy(d);
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(model.join("tokenizer.json"))
        .status()
        .unwrap();
    assert!(made.success());
    write_texts_parquet(&d.join("in.parquet"), &[Some("a")]);
    let o = embedflow(
        d,
        &embed_args(model.to_str().unwrap(), "in.parquet", "o.parquet"),
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("tokenizer.json is not a regular file (a FIFO, socket or device)"),
        "{}",
        stderr(&o)
    );
}
