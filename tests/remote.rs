//! Remote models (`model.provider = "openai"`) against a real
//! OpenAI-compatible server (scripts/embedding-server), through a proxy
//! that records what reaches the server and injects the faults a real
//! server does not make on demand.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::shards::write_groups;
use crate::tables::{any_vectors, documents_of, kill9, unit_records};
use crate::util::api::{self, Fault, FaultProxy};
use crate::util::*;

/// The probe's text (embedflow sends it before any row).
const PROBE: &str = "embedflow probe";

/// A job embedding `input` into `output` through the server at `url`,
/// counting and cutting texts with MiniLM's own tokenizer at its 256
/// tokens, as the local model does.
fn api_job(d: &Path, name: &str, input: &str, output: &str, url: &str, extra: &str) -> String {
    let s = api::server();
    let job = format!(
        r#"
[input]
path = "{input}"
text_column = "text"
id_column = "id"

[model]
provider = "openai"
name = "{model}"
base_url = "{url}"
tokenizer = "{tokenizer}"
max_input_tokens = 256
normalize = true

[chunking]
mode = "none"

[output]
path = "{output}"
{extra}
"#,
        model = s.model,
        tokenizer = minilm().join("tokenizer.json").display(),
    );
    let path = d.join(name);
    std::fs::write(&path, job).unwrap();
    path.to_str().unwrap().to_string()
}

/// The ids and vectors of an unchunked table, by id.
fn table_by_id(d: &Path, table: &str) -> (Vec<i64>, Vec<Vec<f32>>) {
    let out = d.join("rows.parquet");
    let _ = std::fs::remove_file(&out);
    let o = embedflow(
        d,
        &[
            "sql",
            "--table",
            &format!("t={table}"),
            "SELECT id, embedding FROM t ORDER BY id",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_code(&o, 0);
    let b = read_parquet(&out).0;
    (ints(&b, "id"), any_vectors(&b, "embedding"))
}

/// Runs a job with the test server's key.
fn run(d: &Path, args: &[&str]) -> std::process::Output {
    let key = api::server().key;
    embedflow_env(d, args, &[("OPENAI_API_KEY", key.as_str())])
}

/// The distinct, non-empty reference texts as (id, text).
fn distinct_texts(n: usize) -> Vec<(i64, String)> {
    texts_under(n, usize::MAX)
}

/// [`distinct_texts`] of fewer than `bytes` bytes: sent whole, never cut.
fn texts_under(n: usize, bytes: usize) -> Vec<(i64, String)> {
    let mut seen = std::collections::HashSet::new();
    reference_texts()
        .into_iter()
        .filter(|t| t.len() < bytes && !t.trim().is_empty() && seen.insert(t.clone()))
        .take(n)
        .enumerate()
        .map(|(i, t)| (i as i64, t))
        .collect()
}

/// The inputs sent for rows (the probe left out).
fn rows_sent(p: &FaultProxy) -> Vec<String> {
    p.sent().into_iter().filter(|t| t != PROBE).collect()
}

#[test]
fn remote_vectors_equal_the_local_models() {
    let server = api::server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let texts = distinct_texts(200);
    documents_of(&d.join("in.parquet"), &texts);
    let job = api_job(
        d,
        "remote.toml",
        "in.parquet",
        "remote.parquet",
        &server.url,
        "",
    );
    let o = run(d, &["run", &job]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("requests") && out.contains("tokens billed"),
        "{out}"
    );
    let model = minilm();
    let mut local = embed_args(model.to_str().unwrap(), "in.parquet", "local.parquet");
    local.extend(["--chunking", "none", "--id-column", "id"]);
    assert_code(&embedflow(d, &local), 0);

    let (remote, kv) = read_parquet(&d.join("remote.parquet"));
    let (local, _) = read_parquet(&d.join("local.parquet"));
    assert_eq!(ints(&remote, "id"), ints(&local, "id"));
    let (r, l) = (vectors(&remote, "embedding"), vectors(&local, "embedding"));
    // Texts the server's own tokenizer splits otherwise than the model's
    // tokenizer.json (llama.cpp's WordPiece: Hangul after NFD, words over
    // 100 characters) cannot give the same vector; every other must.
    let mut hf = tokenizers::Tokenizer::from_file(minilm().join("tokenizer.json")).unwrap();
    hf.with_truncation(None).unwrap().with_padding(None);
    let mut differ = Vec::new();
    for (i, (a, b)) in r.iter().zip(&l).enumerate() {
        let c = cosine(a, b);
        if c >= 0.999 {
            continue;
        }
        let text = &texts[i].1;
        let ours = hf.encode(text.as_str(), true).unwrap().get_ids().to_vec();
        let theirs = server.tokenize(text);
        let n = ours.len().min(theirs.len()).min(200);
        assert_ne!(
            ours[..n],
            theirs[..n],
            "text {i} tokenizes alike on both sides, yet its cosine is {c}: {text:?}"
        );
        differ.push(i);
    }
    assert!(
        differ.len() <= 2,
        "the server's tokenizer differs on texts {differ:?}"
    );
    // The lineage says who made the vectors, never with what key.
    assert_eq!(meta(&kv, "embedflow.api_provider"), "openai");
    assert_eq!(meta(&kv, "embedflow.model"), server.model);
    let host = server
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    assert_eq!(meta(&kv, "embedflow.api_host"), host);
    if !server.key.is_empty() {
        let bytes = std::fs::read(d.join("remote.parquet")).unwrap();
        let key = server.key.as_bytes();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key),
            "the key is in the output"
        );
        assert!(!out.contains(&server.key) && !stderr(&o).contains(&server.key));
    }
}

#[test]
fn sql_embed_calls_the_jobs_remote_model() {
    let server = api::server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let texts = texts_under(40, 300);
    documents_of(&d.join("in.parquet"), &texts);
    let job = api_job(
        d,
        "news.toml",
        "in.parquet",
        "news.parquet",
        &server.url,
        "",
    );
    assert_code(&run(d, &["run", &job]), 0);
    // Each text, asked for through embed(), finds its own row first.
    for (id, text) in texts.iter().step_by(13) {
        let query = format!(
            "SELECT id FROM news ORDER BY cosine_similarity(embedding, embed('{}')) DESC LIMIT 1",
            text.replace('\'', "''")
        );
        let o = run(d, &["sql", "--job", &job, "--format", "csv", &query]);
        assert_code(&o, 0);
        assert_eq!(
            stdout(&o).lines().nth(1),
            Some(id.to_string().as_str()),
            "{text}"
        );
    }
}

#[test]
fn the_base_url_comes_from_the_environment_and_dimensions_are_checked() {
    let server = api::server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    documents_of(&d.join("in.parquet"), &texts_under(8, 300));
    let job = api_job(d, "job.toml", "in.parquet", "o.parquet", "UNSET", "");
    let unset = std::fs::read_to_string(&job)
        .unwrap()
        .replace("base_url = \"UNSET\"\n", "");
    std::fs::write(&job, unset).unwrap();
    let env = [
        ("OPENAI_API_KEY", server.key.as_str()),
        ("OPENAI_BASE_URL", server.url.as_str()),
    ];
    let o = embedflow_env(d, &["run", &job], &env);
    assert_code(&o, 0);
    let host = server
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    assert_eq!(
        meta(&read_parquet(&d.join("o.parquet")).1, "embedflow.api_host"),
        host
    );
    // A server that ignores `dimensions` (this one does) is caught by the
    // probe, before any row.
    std::fs::remove_file(d.join("o.parquet")).unwrap();
    let o = embedflow_env(d, &["run", &job, "--set", "model.dimensions=128"], &env);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("asked for dimensions = 128, the server answered with 384 values a vector"),
        "{err}"
    );
    assert!(!d.join("o.parquet").exists());
}

#[test]
fn the_remote_example_jobs_validate_against_a_server() {
    let server = api::server();
    let base_url = format!("model.base_url=\"{}\"", server.url);
    let o = run(
        &root(),
        &[
            "validate",
            "jobs/remote/self-hosted.toml",
            "--set",
            &base_url,
        ],
    );
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("ok: jobs/remote/self-hosted.toml ("),
        "{}",
        stdout(&o)
    );
    // OpenAI's example asks for 512 of text-embedding-3-small's 1,536
    // dimensions: this server takes any model name but not `dimensions`,
    // and the probe says so.
    let o = run(
        &root(),
        &["validate", "jobs/remote/openai.toml", "--set", &base_url],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("asked for dimensions = 512, the server answered with 384"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn validate_counts_the_tokens_the_server_bills_and_a_budget_refuses_more() {
    let server = api::server();
    let proxy = FaultProxy::start(&server.url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Not Hangul: llama.cpp's WordPiece splits it otherwise than the model's.
    let hangul = |t: &str| t.chars().any(|c| ('\u{ac00}'..='\u{d7a3}').contains(&c));
    let texts: Vec<(i64, String)> = texts_under(60, 300)
        .into_iter()
        .filter(|t| !hangul(&t.1))
        .take(24)
        .collect();
    documents_of(&d.join("in.parquet"), &texts);
    let job = api_job(d, "job.toml", "in.parquet", "o.parquet", &proxy.url, "");
    let price = ["--set", "model.price_per_million_tokens=2.5"];
    let o = run(d, &[&["validate", job.as_str()][..], &price[..]].concat());
    assert_code(&o, 0);
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.contains("sends "))
        .unwrap_or_else(|| panic!("{out}"));
    let tokens: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        line.contains("(24 inputs from 24 rows), estimated cost $"),
        "{line}"
    );
    assert_eq!(proxy.requests(), 1, "validate sent more than its probe");

    // The server bills what validate counted.
    let o = run(
        d,
        &[&["run", job.as_str(), "--summary", "json"][..], &price[..]].concat(),
    );
    assert_code(&o, 0);
    let s: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(s["api"]["tokens_billed"], tokens, "{s}");
    let cost = s["api"]["estimated_cost"].as_f64().unwrap();
    assert!((cost - 2.5 * tokens as f64 / 1e6).abs() < 1e-12, "{s}");

    // One token under the budget: refused before any row is sent.
    std::fs::remove_file(d.join("o.parquet")).unwrap();
    proxy.clear();
    let budget = format!("embed.max_tokens_per_run={}", tokens - 1);
    let o = run(d, &["run", &job, "--set", &budget]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains(&format!(
            "this run would send {tokens} tokens (24 inputs from 24 rows)"
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(rows_sent(&proxy), Vec::<String>::new());
    assert!(!d.join("o.parquet").exists());
}

#[test]
fn a_table_through_the_api_never_sends_a_row_twice() {
    let server = api::server();
    let proxy = FaultProxy::start(&server.url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let texts = texts_under(120, 300);
    documents_of(&d.join("in.parquet"), &texts);
    let extra = "format = \"delta\"\nunit_rows = 40";
    let job = api_job(d, "job.toml", "in.parquet", "table", &proxy.url, extra);
    assert_code(&run(d, &["run", &job]), 0);
    let sent = rows_sent(&proxy);
    let mut want: Vec<String> = texts.iter().map(|t| t.1.clone()).collect();
    let mut got = sent.clone();
    want.sort();
    got.sort();
    assert!(
        got == want,
        "not every row sent once, or more than the rows: {} sent for {} rows",
        got.len(),
        want.len()
    );

    // Unchanged: no request at all, not even the probe (the width is the
    // table's), and the summary says none.
    proxy.clear();
    let o = run(d, &["run", &job, "--summary", "json"]);
    assert_code(&o, 0);
    assert_eq!(proxy.requests(), 0, "an unchanged rerun sent a request");
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(summary["api"]["requests"], 0, "{summary}");
    // Nor does validating it.
    assert_code(&run(d, &["validate", &job]), 0);
    assert_eq!(
        proxy.requests(),
        0,
        "validate of an unchanged rerun sent a request"
    );

    // Five rows changed: those five, nothing else.
    let mut changed = texts.clone();
    for t in &mut changed[10..15] {
        t.1.push_str(" (revised)");
    }
    documents_of(&d.join("in.parquet"), &changed);
    proxy.clear();
    let o = run(d, &["run", &job, "--summary", "json"]);
    assert_code(&o, 0);
    let mut sent = rows_sent(&proxy);
    sent.sort();
    let mut five: Vec<String> = changed[10..15].iter().map(|t| t.1.clone()).collect();
    five.sort();
    assert_eq!(sent, five);
    // The probe, asked before the first row, and the five rows' request.
    assert_eq!(proxy.requests(), 2);
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(
        summary["api"]["tokens_billed"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(table_by_id(d, "table").0.len(), texts.len());

    // The server now runs another model behind the same URL and name:
    // the table's vectors and new ones would not belong together, so the
    // probe before the first row finds it and every row is embedded anew.
    for t in &mut changed[20..22] {
        t.1.push_str(" (again)");
    }
    documents_of(&d.join("in.parquet"), &changed);
    proxy.clear();
    proxy.always(Some(Fault::ModelSays("another-model.gguf")));
    let o = run(d, &["run", &job, "--summary", "json"]);
    proxy.always(None);
    assert_code(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("now answers with model \"another-model.gguf\"")
            && err.contains("every row is embedded again"),
        "{err}"
    );
    assert_eq!(rows_sent(&proxy).len(), texts.len(), "{err}");
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        summary["table"]["full_because"]
            .as_str()
            .map(|s| s.contains("api_server_model")),
        Some(true),
        "{summary}"
    );
    assert_eq!(table_by_id(d, "table").0.len(), texts.len());
}

#[test]
fn a_killed_table_run_resends_only_the_units_without_a_record() {
    let server = api::server();
    let proxy = FaultProxy::start(&server.url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let texts = texts_under(60, 300);
    // Row groups of 10 rows: units of 10 rows (a unit is whole row groups).
    write_groups(&d.join("in.parquet"), &texts, 10);
    let extra = "format = \"delta\"\nunit_rows = 10\n[embed]\nconcurrency = 1\nmax_batch_rows = 5";
    let job = api_job(d, "job.toml", "in.parquet", "table", &proxy.url, extra);
    // The probe and the three first units (two requests each) pass; the
    // next request hangs until the run is killed.
    proxy.then(&[Fault::Pass; 7]);
    proxy.always(Some(Fault::Hang(Duration::from_secs(600))));
    let mut child = Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(d)
        .args(["run", &job, "--progress", "off"])
        .env("OPENAI_API_KEY", &server.key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The eighth request (the fourth unit's first) has arrived, and the
    // units before it are written: a unit's record is made when the next
    // unit's rows reach the writer, so the third has none yet.
    let t = Instant::now();
    while (proxy.requests() < 8 || unit_records(&d.join("table")) < 2)
        && t.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let records = unit_records(&d.join("table"));
    kill9(&mut child);
    let first = rows_sent(&proxy);
    if records < 2 || first.len() != 30 {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        panic!(
            "{records} unit records and {} rows sent when the 8th request hung:\n{err}",
            first.len()
        );
    }

    proxy.always(None);
    proxy.clear();
    let o = run(d, &["run", &job]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("resuming the interrupted run"),
        "{}",
        stderr(&o)
    );
    // Every row of a recorded unit stays paid for; the rest is sent once.
    let again = rows_sent(&proxy);
    let recorded: Vec<&String> = texts[..records * 10].iter().map(|t| &t.1).collect();
    assert!(
        again.iter().all(|t| !recorded.contains(&t)),
        "a row of a recorded unit was sent again"
    );
    let mut want: Vec<String> = texts[records * 10..].iter().map(|t| t.1.clone()).collect();
    let mut got = again.clone();
    want.sort();
    got.sort();
    assert!(
        got == want,
        "{} rows sent after the kill, {} expected",
        got.len(),
        want.len()
    );
    let (ids, vectors) = table_by_id(d, "table");
    assert_eq!(ids, (0..60).collect::<Vec<i64>>());
    assert!(vectors.iter().all(|v| v.len() == 384));
}

/// The same vectors as a clean run's, row by row: the server's floats
/// move in the last digits with the other inputs of a batch.
fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let c = cosine(a, b);
        assert!(
            c >= 0.99999,
            "{what}: row {i} has cosine {c} to a clean run's"
        );
    }
}

/// Runs the 24-text job through `proxy` and returns (exit, stdout, stderr).
fn faulted(d: &Path, proxy: &FaultProxy, name: &str, extra: &str) -> std::process::Output {
    let job = api_job(
        d,
        &format!("{name}.toml"),
        "in.parquet",
        &format!("{name}.parquet"),
        &proxy.url,
        extra,
    );
    run(d, &["run", &job, "--summary", "json"])
}

#[test]
fn passing_faults_are_retried_to_the_same_vectors() {
    let server = api::server();
    let proxy = FaultProxy::start(&server.url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    documents_of(&d.join("in.parquet"), &texts_under(24, 300));
    // Small requests, one at a time: each fault hits one request of rows.
    // The server serves one request at a time, other tests' too: only the
    // hang's run has a time limit short enough to be reached.
    let extra = "[embed]\nconcurrency = 1\nmax_batch_rows = 8\ntimeout_seconds = 60";
    let hang_extra = "[embed]\nconcurrency = 1\nmax_batch_rows = 8\ntimeout_seconds = 3";
    assert_code(&faulted(d, &proxy, "clean", extra), 0);
    let clean = vectors(&read_parquet(&d.join("clean.parquet")).0, "embedding");
    let cases: Vec<(&str, Fault, &str)> = vec![
        (
            "ra",
            Fault::Status(429, Some("1"), r#"{"error": {"message": "slow down"}}"#),
            "rate_limited",
        ),
        ("r0", Fault::Status(429, None, "{}"), "rate_limited"),
        ("s500", Fault::Status(500, None, "oops"), "server_error"),
        (
            "s503",
            Fault::Status(503, Some("0"), "busy"),
            "server_error",
        ),
        ("hang", Fault::Hang(Duration::from_secs(8)), "timeout"),
        ("cut", Fault::CutMidBody, "connection"),
        ("bad", Fault::Malformed, "bad_answer"),
        ("short", Fault::OneVectorShort, "bad_answer"),
        ("narrow", Fault::Narrow(8), "bad_answer"),
    ];
    for (name, fault, cause) in cases {
        proxy.then(&[Fault::Pass, fault]);
        let hang = matches!(fault, Fault::Hang(_));
        let o = faulted(d, &proxy, name, if hang { hang_extra } else { extra });
        assert_code(&o, 0);
        let s: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let retried = s["api"]["retries"][cause].as_u64().unwrap();
        // A busy server may time a retried request out again.
        assert!(retried == 1 || (hang && retried >= 1), "{fault:?}: {s}");
        let got = vectors(
            &read_parquet(&d.join(format!("{name}.parquet"))).0,
            "embedding",
        );
        assert_close(&got, &clean, &format!("{fault:?}"));
    }
    // Too large: split in halves until it fits, never failed whole.
    proxy.always(Some(Fault::TooLargeOver(3)));
    let o = faulted(d, &proxy, "split", extra);
    proxy.always(None);
    assert_code(&o, 0);
    let s: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(s["api"]["splits"].as_u64().unwrap() >= 3, "{s}");
    let split = vectors(&read_parquet(&d.join("split.parquet")).0, "embedding");
    assert_close(&split, &clean, "split requests");
    // No usage: the tokens are counted here, and said to be.
    proxy.always(Some(Fault::NoUsage));
    let o = faulted(d, &proxy, "nousage", extra);
    proxy.always(None);
    assert_code(&o, 0);
    let s: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(s["api"]["tokens_unreported"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn lasting_faults_stop_the_run_with_the_cause_and_nothing_written() {
    let server = api::server();
    let proxy = FaultProxy::start(&server.url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    documents_of(&d.join("in.parquet"), &texts_under(24, 300));
    let extra =
        "[embed]\nconcurrency = 1\nmax_batch_rows = 8\nmax_retries = 2\ntimeout_seconds = 60";
    let cases: Vec<(Fault, &[&str])> = vec![
        (
            Fault::Status(500, None, r#"{"error": {"message": "model crashed"}}"#),
            &[
                "server error after 2 retries",
                "HTTP 500: model crashed",
                "request",
            ],
        ),
        (
            Fault::Narrow(8),
            &[
                "unusable answer after 2 retries",
                "vectors of 8 values, where the probe's had 384",
            ],
        ),
        (
            Fault::Status(400, None, r#"{"error": {"message": "invalid input"}}"#),
            &["the server refused it: HTTP 400: invalid input", "input "],
        ),
    ];
    for (fault, says) in cases {
        proxy.then(&[Fault::Pass]);
        proxy.always(Some(fault));
        let o = faulted(d, &proxy, "o", extra);
        proxy.always(None);
        assert_code(&o, 1);
        let err = stderr(&o);
        for s in says {
            assert!(err.contains(s), "{fault:?}: expected {s:?} in:\n{err}");
        }
        assert!(!d.join("o.parquet").exists(), "{fault:?} left an output");
    }
}

#[test]
fn an_input_the_server_refuses_follows_on_error() {
    let server = api::server();
    let proxy = FaultProxy::start(&server.url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let texts = texts_under(24, 300);
    documents_of(&d.join("in.parquet"), &texts);
    let bad: &'static str = Box::leak(texts[9].1.clone().into_boxed_str());
    proxy.always(Some(Fault::RefuseInput(bad)));
    let extra = "[embed]\nconcurrency = 1\nmax_batch_rows = 8";
    // fail (the default): the run stops naming the input, nothing written.
    let o = faulted(d, &proxy, "o", extra);
    assert_code(&o, 1);
    let start: String = bad.chars().take(30).collect();
    let err = stderr(&o);
    assert!(
        err.contains("this input is not allowed") && err.contains(&start),
        "{err}"
    );
    assert!(!d.join("o.parquet").exists());
    // skip: the others are embedded, that row is left out, named, counted.
    let o = faulted(d, &proxy, "o", &format!("{extra}\non_error = \"skip\""));
    proxy.always(None);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("the embedding API refused its input"),
        "{}",
        stderr(&o)
    );
    let s: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (s["rows_skipped"].as_u64(), s["api"]["refused"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let (batch, _) = read_parquet(&d.join("o.parquet"));
    let ids = ints(&batch, "id");
    assert_eq!(ids, (0..24).filter(|&i| i != 9).collect::<Vec<i64>>());
}

#[test]
fn azure_openai_gets_its_api_key_header_and_api_version() {
    let server = api::server();
    let proxy = FaultProxy::start(&server.url);
    proxy.always(Some(Fault::AzureFront));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let texts = texts_under(12, 300);
    documents_of(&d.join("in.parquet"), &texts);
    let job = api_job(d, "job.toml", "in.parquet", "o.parquet", &proxy.url, "");
    let o = run(
        d,
        &["run", &job, "--set", "model.api_version=\"2024-02-01\""],
    );
    assert_code(&o, 0);
    assert_eq!(rows_sent(&proxy).len(), texts.len());
    // Without api_version the key goes as a Bearer token: Azure refuses it.
    let o = run(d, &["run", &job]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("refused the key from $OPENAI_API_KEY"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_wrong_key_is_one_clear_error_before_any_row_and_never_echoed() {
    let server = api::server();
    if server.key.is_empty() {
        panic!(
            "scripts/embedding-server starts its server with a key; EMBEDFLOW_TEST_EMBED_KEY is empty"
        );
    }
    let proxy = FaultProxy::start(&server.url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    documents_of(&d.join("in.parquet"), &texts_under(24, 300));
    let job = api_job(d, "job.toml", "in.parquet", "o.parquet", &proxy.url, "");
    let wrong = "sk-wrong-0123456789abcdef";
    let o = embedflow_env(d, &["run", &job], &[("OPENAI_API_KEY", wrong)]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("refused the key from $OPENAI_API_KEY"),
        "{err}"
    );
    assert!(
        !err.contains("0123456789abcdef") && !stdout(&o).contains("0123456789abcdef"),
        "{err}"
    );
    assert_eq!(proxy.requests(), 1, "more than the probe was sent");
    assert!(!d.join("o.parquet").exists());
    // A key in the job file is refused, and not echoed either.
    let with_key = std::fs::read_to_string(&job).unwrap().replace(
        "normalize = true",
        "normalize = true\napi_key = \"sk-in-the-file-987654\"",
    );
    std::fs::write(d.join("keyed.toml"), with_key).unwrap();
    let o = embedflow(d, &["validate", "keyed.toml"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("model.api_key: a key is never read from a job file"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("987654"));
}
