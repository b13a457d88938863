//! `embedflow report` and a job's `[report]`: the HTML file checked in a
//! real browser (Debian's chromium, driven over the DevTools protocol by
//! tests/report_browser.py), its map checked against scikit-learn's t-SNE,
//! and its inputs and outputs on S3 and in Delta tables.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::s3;
use crate::util::*;

/// The report's embedded data.
fn report_data(html: &str) -> serde_json::Value {
    let open = "<script type=\"application/json\" id=\"report-data\">";
    let at = html.find(open).expect("the report's data") + open.len();
    let end = at + html[at..].find("</script>").unwrap();
    serde_json::from_str(&html[at..end]).expect("the report's data is JSON")
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBEDFLOW_TEST_CHROMIUM") {
        return PathBuf::from(p);
    }
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "this test opens the report in Chromium and found none: run scripts/browser once (or scripts/test, which does), or set EMBEDFLOW_TEST_CHROMIUM"
    );
}

/// All of news_articles by title, k = 9 with keyword topics, and the
/// report, from one job file; then what a user sees of it in Chromium.
#[test]
fn a_jobs_report_shows_every_topic_in_a_browser_and_its_map_keeps_neighbours() {
    require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let news = shared().join("data/news_articles.parquet");
    let job = format!(
        r#"
[input]
path = "{news}"
text_column = "title"
id_column = "article_id"
columns = ["article_id", "title", "outlet"]

[model]
path = "{model}"

[chunking]
mode = "none"

[output]
path = "titles.parquet"

[cluster]
k = 9
clusters_path = "clusters.parquet"

[topics]
topics_path = "topics.parquet"
stop_words = "english"

[report]
path = "report.html"
title = "News articles, k = 9"
"#,
        news = news.display(),
        model = minilm().display(),
    );
    std::fs::write(d.join("job.toml"), job).unwrap();
    let o = embedflow(d, &["run", "job.toml"]);
    // 60 articles have no title: skipped and counted (exit code 2).
    assert_code(&o, 2);
    assert!(stdout(&o).contains("wrote report.html"), "{}", stdout(&o));

    let html = std::fs::read_to_string(d.join("report.html")).unwrap();
    // Self-contained: no script, style or image from elsewhere.
    for outside in ["src=\"http", "href=\"http", "src=\"//", "@import"] {
        assert!(!html.contains(outside), "the report refers to {outside}…");
    }
    let data = report_data(&html);
    let (rows, lineage) = read_parquet(&d.join("titles.parquet"));
    assert_eq!(data["rows"], rows.num_rows() as u64);
    assert_eq!(data["rows"], 3764);
    // Fewer rows than the default sample: every row is on the map.
    assert_eq!(data["map"]["x"].as_array().unwrap().len(), 3764);
    // The lineage shown is the table's.
    let shown: Vec<(String, String)> = serde_json::from_value(data["lineage"].clone()).unwrap();
    for key in ["model", "model_sha256", "pooling", "cluster.k"] {
        let v = &shown.iter().find(|(k, _)| k == key).unwrap().1;
        assert_eq!(v, meta(&lineage, &format!("embedflow.{key}")), "{key}");
    }
    // The topics are the topics table's, in order, with its keywords.
    let (topics, _) = read_parquet(&d.join("topics.parquet"));
    let labels = strings(&topics, "label");
    assert_eq!(labels.len(), 9);
    let keywords = topics
        .column_by_name("keywords")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::ListArray>()
        .unwrap()
        .clone();
    let sizes = ints(&topics, "size");
    let t = data["topics"].as_array().unwrap();
    for (i, topic) in t.iter().enumerate() {
        assert_eq!(topic["label"], labels[i]);
        assert_eq!(topic["size"], sizes[i]);
        let want = keywords.value(i);
        let want = want
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let got: Vec<&str> = topic["keywords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k[0].as_str().unwrap())
            .collect();
        let want: Vec<&str> = (0..got.len()).map(|j| want.value(j)).collect();
        assert_eq!(got, want, "topic {i}");
        assert!(got.len() >= 5, "topic {i}: {got:?}");
    }

    // In the browser.
    let python = reference_python();
    let shot = d.join("report.png");
    let seen = Command::new(&python)
        .arg(root().join("tests/report_browser.py"))
        .arg(chromium())
        .arg(d.join("report.html"))
        .arg(&shot)
        .output()
        .unwrap();
    assert!(
        seen.status.success(),
        "the browser check failed:\n{}\n{}",
        String::from_utf8_lossy(&seen.stdout),
        String::from_utf8_lossy(&seen.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&seen.stdout).unwrap();
    assert_eq!(seen["errors"], serde_json::json!([]), "console errors");
    assert_eq!(seen["requests"], serde_json::json!([]), "network requests");
    // The topic table lists every topic with its keywords, as bars.
    let table = seen["topics"].as_array().unwrap();
    assert_eq!(table.len(), 9);
    for (i, row) in table.iter().enumerate() {
        assert_eq!(row["label"], labels[i]);
        assert_eq!(
            row["keywords"],
            t[i]["keywords"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k[0].clone())
                .collect::<serde_json::Value>()
        );
        let bars: Vec<f64> = serde_json::from_value(row["bars"].clone()).unwrap();
        assert_eq!(bars[0], 100.0);
        assert!(bars.windows(2).all(|w| w[1] <= w[0]), "{bars:?}");
    }
    // The map drew points of every topic's colour.
    let pixels: Vec<u64> = serde_json::from_value(seen["colour_pixels"].clone()).unwrap();
    assert_eq!(pixels.len(), 9);
    for (i, &p) in pixels.iter().enumerate() {
        assert!(
            p >= 30,
            "topic {i} has {p} pixels of its colour on the map: {pixels:?}"
        );
    }
    // Hovering a point shows its id, its topic and its text: the title of
    // that article in the table.
    let point = &seen["point"];
    let tip = seen["tooltip"]
        .as_str()
        .unwrap_or_else(|| panic!("no tooltip at {point}"));
    let id = point["id"].as_str().unwrap();
    assert!(tip.contains(&format!("id: {id}")), "{tip}");
    assert!(tip.contains(point["topic"].as_str().unwrap()), "{tip}");
    let ids = ints(&rows, "article_id");
    let titles = strings(&rows, "title");
    let at = ids.iter().position(|&i| i.to_string() == id).unwrap();
    let title = titles[at].trim();
    let shown_text = point["text"].as_str().unwrap();
    assert_eq!(
        shown_text.trim_end_matches('…'),
        &title[..shown_text.trim_end_matches('…').len()]
    );
    assert!(tip.contains(shown_text), "{tip}");
    // A wheel turn over the map zooms in.
    let before: Vec<f64> = serde_json::from_value(seen["zoom"]["before"].clone()).unwrap();
    let after: Vec<f64> = serde_json::from_value(seen["zoom"]["after"].clone()).unwrap();
    assert!(
        after[1] - after[0] < 0.9 * (before[1] - before[0]),
        "{before:?} → {after:?}"
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 50_000);

    // The map keeps neighbourhoods: scikit-learn's trustworthiness (k = 10)
    // of our layout against that of scikit-learn's own t-SNE on the same rows.
    let got = run_python(
        &python,
        r#"
import json, re, sys
import numpy as np, pyarrow.parquet as pq
from sklearn.manifold import TSNE, trustworthiness
html, table = sys.argv[1:3]
s = open(html, encoding="utf-8").read()
m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', s, re.S)
d = json.loads(m.group(1))
t = pq.read_table(table, columns=["article_id", "embedding"])
pos = {str(i): k for k, i in enumerate(t.column("article_id").to_pylist())}
X = np.array(t.column("embedding").to_pylist(), dtype=np.float32)[[pos[i] for i in d["map"]["id"]]]
ours = np.column_stack([d["map"]["x"], d["map"]["y"]])
ref = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(X)
print(json.dumps({"ours": trustworthiness(X, ours, n_neighbors=10),
                  "sklearn": trustworthiness(X, ref, n_neighbors=10)}))
"#,
        &[
            d.join("report.html").to_str().unwrap(),
            d.join("titles.parquet").to_str().unwrap(),
        ],
    );
    let tw: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    let (ours, sk) = (
        tw["ours"].as_f64().unwrap(),
        tw["sklearn"].as_f64().unwrap(),
    );
    eprintln!("trustworthiness (k = 10): ours {ours:.4}, scikit-learn t-SNE {sk:.4}");
    assert!(ours >= 0.9 * sk, "ours {ours} < 0.9 × scikit-learn's {sk}");
}

/// A Delta table on S3 in, the report to S3; a sample when the table has
/// more rows than `--max-points`; the same seed, the same report.
#[test]
fn a_report_of_a_delta_table_on_s3_samples_and_repeats() {
    require_runtime();
    let server = s3::server();
    let bucket = server.bucket("report");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let table = format!("s3://{bucket}/news");
    let news = root().join("sample_data/news.parquet");
    let o = server.embedflow(
        d,
        &[
            "embed",
            news.to_str().unwrap(),
            &table,
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
            "--id-column",
            "article_id",
            "--output-format",
            "delta",
        ],
        &[],
    );
    // Two articles have no text: skipped and counted (exit code 2).
    assert_code(&o, 2);
    let report = |name: &str| {
        let out = format!("s3://{bucket}/{name}");
        let o = server.embedflow(
            d,
            &[
                "report",
                &table,
                "-o",
                &out,
                "--max-points",
                "200",
                "--seed",
                "3",
            ],
            &[],
        );
        assert_code(&o, 0);
        String::from_utf8(
            server
                .get(&bucket, name)
                .expect("the report on S3")
                .to_vec(),
        )
        .unwrap()
    };
    let (a, b) = (report("a.html"), report("b.html"));
    assert_eq!(a, b, "one seed, one report");
    let data = report_data(&a);
    let chunks = data["rows"].as_u64().unwrap();
    assert!(chunks > 200, "{chunks}");
    let ids = data["map"]["id"].as_array().unwrap();
    assert_eq!(ids.len(), 200);
    // Chunk rows are named by id and chunk index, drawn without repeats.
    let distinct: std::collections::HashSet<&str> =
        ids.iter().map(|i| i.as_str().unwrap()).collect();
    assert_eq!(distinct.len(), 200);
    assert!(
        ids.iter().all(|i| i.as_str().unwrap().contains('#')),
        "{ids:?}"
    );
    assert!(
        data["map_note"]
            .as_str()
            .unwrap()
            .contains(&format!("200 of {chunks} rows"))
    );
    // No clusters yet: one group, and the report says how to get topics.
    assert_eq!(data["topics"].as_array().unwrap().len(), 1);
    assert!(
        data["topics_note"]
            .as_str()
            .unwrap()
            .contains("embedflow cluster")
    );
}

/// What cannot be reported is refused before anything is written, and the
/// table is never replaced by its report.
#[test]
fn a_report_refuses_what_it_cannot_draw_and_never_replaces_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut x = Vec::new();
    for i in 0..40 {
        x.extend([(i % 3) as f32, 1.0, (i % 5) as f32 * 0.1, 0.5]);
    }
    write_vectors(&d.join("v.parquet"), &x, 4);
    let before = std::fs::read(d.join("v.parquet")).unwrap();
    for spelled in [
        "v.parquet",
        "./v.parquet",
        &d.join("v.parquet").display().to_string(),
    ] {
        let e = fails(d, &["report", "v.parquet", "-o", spelled]);
        assert!(e.contains("is the input"), "{e}");
    }
    assert_eq!(std::fs::read(d.join("v.parquet")).unwrap(), before);
    let e = fails(
        d,
        &[
            "report",
            "v.parquet",
            "-o",
            "r.html",
            "--vector-column",
            "vec",
        ],
    );
    assert!(e.contains("'vec'") && e.contains("embedding"), "{e}");
    let e = fails(d, &["report", "missing.parquet", "-o", "r.html"]);
    assert!(e.contains("missing.parquet"), "{e}");
    let e = fails(
        d,
        &[
            "report",
            "v.parquet",
            "-o",
            "r.html",
            "--topics",
            "v.parquet",
        ],
    );
    assert!(
        e.contains("is not a topics table") && e.contains("topic_id"),
        "{e}"
    );
    assert!(!d.join("r.html").exists());
    // And a small table works without clusters, ids from the first column.
    let o = embedflow(d, &["report", "v.parquet", "-o", "r.html"]);
    assert_code(&o, 0);
    let data = report_data(&std::fs::read_to_string(d.join("r.html")).unwrap());
    assert_eq!(data["rows"], 40);
    assert_eq!(data["map"]["id"][0], "1000");
}
