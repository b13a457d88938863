//! `--metrics`, `[metrics] push_url` and `--log-format json`, as a
//! scheduler's tooling reads them: the textfile sampled while the run
//! rewrites it and parsed by prometheus_client's parser at every sample, a
//! real Pushgateway (Debian's, started by scripts/pushgateway), and stderr
//! parsed line by line as JSON.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Texts enough for a run of a few seconds with the tiny model.
fn write_input(path: &Path, rows: usize) {
    let texts = reference_texts();
    let rows: Vec<String> = (0..rows)
        .map(|i| format!("{} {i}", texts[i % texts.len()].repeat(3)))
        .collect();
    let refs: Vec<Option<&str>> = rows.iter().map(|s| Some(s.as_str())).collect();
    write_texts_parquet(path, &refs);
}

fn write_job(dir: &Path, name: &str, extra: &str) -> String {
    let job = format!(
        "name = {name:?}\n[input]\npath = \"in.parquet\"\ntext_column = \"text\"\nid_column = \"id\"\n\
         [model]\npath = {:?}\n[output]\npath = \"out.parquet\"\n{extra}",
        tiny_s()
    );
    std::fs::write(dir.join("job.toml"), job).unwrap();
    "job.toml".into()
}

/// Parses each file with prometheus_client and prints, per file, the
/// families found and their samples as JSON.
const PARSE: &str = r##"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for path in sys.argv[1:]:
    text = open(path).read()
    fams = {}
    for f in text_string_to_metric_families(text):
        fams[f.name] = [[s.name, s.labels, s.value] for s in f.samples]
    out.append({"path": path, "families": fams, "types": text.count("# TYPE "), "ends": text.endswith("\n")})
print(json.dumps(out))
"##;

fn parse(files: &[String]) -> serde_json::Value {
    let args: Vec<&str> = files.iter().map(|s| s.as_str()).collect();
    serde_json::from_str(&run_python(&reference_python(), PARSE, &args)).unwrap()
}

/// The one sample of a family (the run's own labels only).
fn value(parsed: &serde_json::Value, family: &str) -> f64 {
    let samples = parsed["families"][family]
        .as_array()
        .unwrap_or_else(|| panic!("no {family} in {}", parsed["path"]));
    assert_eq!(samples.len(), 1, "{family}: {samples:?}");
    samples[0][2].as_f64().unwrap()
}

/// Rows for a run past the first plain progress line (5 s) with the tiny
/// model on the 2-core machine.
const ROWS: usize = 12_000;

#[test]
fn the_textfile_parses_at_every_rewrite_and_the_json_log_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("in.parquet"), ROWS);
    let job = write_job(dir.path(), "metrics \"test\"", "");
    require_runtime();
    let child = Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(dir.path())
        .args(["run", &job, "--metrics", "m.prom"])
        .args(["--set", "metrics.interval_seconds=0.05"])
        .args([
            "--log-format",
            "json",
            "--log",
            "info",
            "--progress",
            "plain",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let (seen, last) = sample_while_running(child, dir.path());
    check_every_sample(dir.path(), &seen);
    check_last(dir.path(), &last);
    // Nothing but the file in the folder: no temporary left behind.
    let names = listing(dir.path());
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
    check_json_log(&std::fs::read_to_string(dir.path().join("stderr")).unwrap());
}

/// Every distinct content `m.prom` had while the run went, and its last.
fn sample_while_running(mut child: std::process::Child, dir: &Path) -> (BTreeSet<String>, String) {
    let prom = dir.join("m.prom");
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&prom) {
            seen.insert(text);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the run hangs"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.join("stderr")).unwrap()
    );
    let last = std::fs::read_to_string(&prom).unwrap();
    seen.insert(last.clone());
    assert!(seen.len() >= 5, "only {} rewrites seen", seen.len());
    (seen, last)
}

/// Each sample parses whole, carries the job's label, and some were taken
/// while the run went.
fn check_every_sample(dir: &Path, seen: &BTreeSet<String>) {
    let samples_dir = dir.join("samples");
    std::fs::create_dir(&samples_dir).unwrap();
    let mut files = Vec::new();
    for (i, text) in seen.iter().enumerate() {
        let f = samples_dir.join(format!("{i}.prom"));
        std::fs::write(&f, text).unwrap();
        files.push(f.to_str().unwrap().to_string());
    }
    let mut running = 0;
    for p in parse(&files).as_array().unwrap() {
        // Whole files only: every family declared was parsed, the last line ended.
        assert_eq!(p["ends"], true, "{}", p["path"]);
        assert_eq!(
            p["types"].as_u64().unwrap() as usize,
            p["families"].as_object().unwrap().len(),
            "{}",
            p["path"]
        );
        assert!(value(p, "embedflow_run_start_time_seconds") > 1.7e9);
        let labels = &p["families"]["embedflow_run_running"][0][1];
        assert_eq!(labels["embedflow_job"], "metrics \"test\"");
        if value(p, "embedflow_run_running") == 1.0 {
            running += 1;
            if let Some(rows) = p["families"]["embedflow_rows_read"].as_array() {
                assert!(rows[0][2].as_f64().unwrap() <= ROWS as f64);
            }
        }
    }
    assert!(running >= 3, "{running} samples while running");
}

/// The last file: the run's figures, equal to what it wrote.
fn check_last(dir: &Path, last: &str) {
    let last_file = dir.join("last.prom");
    std::fs::write(&last_file, last).unwrap();
    let last = parse(&[last_file.to_str().unwrap().to_string()]);
    let last = &last[0];
    let (out, _) = read_parquet(&dir.join("out.parquet"));
    assert_eq!(value(last, "embedflow_run_running"), 0.0);
    assert_eq!(value(last, "embedflow_run_success"), 1.0);
    assert_eq!(value(last, "embedflow_rows_read"), ROWS as f64);
    assert_eq!(value(last, "embedflow_rows_embedded"), ROWS as f64);
    assert_eq!(
        value(last, "embedflow_vectors_written"),
        out.num_rows() as f64
    );
    let size = std::fs::metadata(dir.join("out.parquet")).unwrap().len();
    assert_eq!(value(last, "embedflow_output_bytes"), size as f64);
    let in_size = std::fs::metadata(dir.join("in.parquet")).unwrap().len();
    assert_eq!(value(last, "embedflow_input_bytes"), in_size as f64);
    let stages: Vec<&str> = last["families"]["embedflow_stage_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1]["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["setup", "embed", "commit"]);
}

/// Every line of stderr is a JSON object with a level, a timestamp and a
/// message: the events (with their spans' fields) and the progress lines.
fn check_json_log(log: &str) {
    let mut targets = BTreeSet::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
        targets.insert(v["target"].as_str().unwrap().to_string());
        if v["fields"]["message"] == "starting" {
            assert_eq!(v["fields"]["rows"], format!("Some({ROWS})"), "{line}");
            assert_eq!(v["spans"][0]["job"], "job.toml", "{line}");
        }
    }
    assert!(targets.contains("embedflow::progress"), "{targets:?}");
    assert!(targets.contains("embedflow::pipeline"), "{targets:?}");
}

#[test]
fn a_failed_run_says_so_in_its_metrics_and_an_unwritable_path_fails_first() {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("in.parquet"), 10);
    let job = write_job(dir.path(), "broken", "");
    let o = embedflow(
        dir.path(),
        &["run", &job, "--metrics", "no/such/folder/m.prom"],
    );
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("no/such/folder/m.prom"), "{err}");
    assert!(!dir.path().join("out.parquet").exists());
    // A column that is not there: the run fails after the metrics began.
    let o = embedflow(
        dir.path(),
        &[
            "run",
            &job,
            "--metrics",
            "m.prom",
            "--set",
            "input.text_column=nope",
        ],
    );
    assert_code(&o, 1);
    let parsed = parse(&[dir.path().join("m.prom").to_str().unwrap().to_string()]);
    assert_eq!(value(&parsed[0], "embedflow_run_success"), 0.0);
    assert_eq!(value(&parsed[0], "embedflow_run_running"), 0.0);
}

#[test]
fn a_run_pushes_its_metrics_to_a_real_pushgateway_without_saying_its_password() {
    let url = std::env::var("EMBEDFLOW_TEST_PUSHGATEWAY_URL").unwrap_or_else(|_| {
        panic!("EMBEDFLOW_TEST_PUSHGATEWAY_URL is not set: run scripts/test, or eval \"$(scripts/pushgateway)\" before cargo test")
    });
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("in.parquet"), 40);
    let with_secret = url.replacen("http://", "http://pusher:s3cr3t-pw@", 1);
    let name = format!("news/nightly {}", std::process::id());
    let job = write_job(
        dir.path(),
        &name,
        &format!("[metrics]\npush_url = {with_secret:?}\n"),
    );
    let o = embedflow(dir.path(), &["run", &job, "--log", "debug"]);
    assert_code(&o, 0);
    assert!(!stderr(&o).contains("s3cr3t"), "{}", stderr(&o));
    let f = dir.path().join("gateway.prom");
    let fetch = "import sys, urllib.request; open(sys.argv[2], 'wb').write(urllib.request.urlopen(sys.argv[1] + '/metrics').read())";
    run_python(&reference_python(), fetch, &[&url, f.to_str().unwrap()]);
    let body = std::fs::read_to_string(&f).unwrap();
    let parsed = parse(&[f.to_str().unwrap().to_string()]);
    let rows = parsed[0]["families"]["embedflow_rows_read"]
        .as_array()
        .unwrap_or_else(|| panic!("nothing pushed:\n{body}"));
    let ours: Vec<_> = rows
        .iter()
        .filter(|s| s[1]["embedflow_job"] == name.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{rows:?}");
    assert_eq!(ours[0][1]["job"], "embedflow");
    assert_eq!(ours[0][2].as_f64().unwrap(), 40.0);
    let success = &parsed[0]["families"]["embedflow_run_success"];
    assert!(
        success
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s[1]["embedflow_job"] == name.as_str() && s[2] == 1.0),
        "{success}"
    );
}
