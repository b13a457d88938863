//! Clusters and topics: k-means against scikit-learn, c-TF-IDF against
//! BERTopic's reference (../shared/tools/ctfidf_ref.py), and the `cluster`
//! command end to end on real Parquet.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use embedflow::cluster::ctfidf::{Preprocess, TermCounts, TopicOptions};
use embedflow::cluster::kmeans::{self, Config, Rng};

use crate::util::*;

/// `n` rows around `centres` well-separated centres in `dim` dimensions,
/// each blob with its own spread; rows shuffled.
fn blobs(n: usize, dim: usize, centres: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut unit = || rng.next_f64() as f32 * 2.0 - 1.0;
    let c: Vec<f32> = (0..centres * dim).map(|_| unit() * 4.0).collect();
    let spread: Vec<f32> = (0..centres).map(|_| 0.3 + 0.35 * (unit() + 1.0)).collect();
    let mut x = Vec::with_capacity(n * dim);
    for i in 0..n {
        let b = (i * 7919) % centres;
        for j in 0..dim {
            // Sum of three uniforms: a bell-shaped spread.
            let noise = (unit() + unit() + unit()) / 3.0;
            x.push(c[b * dim + j] + spread[b] * noise);
        }
    }
    x
}

const SKLEARN: &str = r#"
import json, sys
import numpy as np
from sklearn.cluster import KMeans
X = np.load(sys.argv[1]); C = np.load(sys.argv[2]); seeds = int(sys.argv[3])
k = C.shape[0]
m = KMeans(n_clusters=k, init=C, n_init=1, algorithm="lloyd", max_iter=300, tol=1e-4).fit(X)
pp = [KMeans(n_clusters=k, init="k-means++", n_init=1, algorithm="lloyd", max_iter=300, tol=1e-4,
             random_state=s).fit(X).inertia_ for s in range(seeds)]
print(json.dumps({"given": float(m.inertia_), "iters": int(m.n_iter_), "pp": [float(v) for v in pp]}))
"#;

#[test]
fn kmeans_inertia_matches_scikit_learn() {
    let py = reference_python();
    let dir = tempfile::tempdir().unwrap();
    let (_, ref_dim, ref_data) = read_npy(&shared().join("reference/embeddings.npy"));
    let synthetic = blobs(8000, 48, 24, 42);
    for (name, x, dim, k) in [
        ("synthetic blobs 8000×48", synthetic, 48, 24),
        ("MiniLM reference vectors 200×384", ref_data, ref_dim, 8),
    ] {
        let n = x.len() / dim;
        // The same starting centres for both: k rows picked by a seeded draw.
        let mut rng = Rng::new(9);
        let mut init = Vec::new();
        let mut picked = Vec::new();
        while picked.len() < k {
            let i = rng.below(n as u64) as usize;
            if !picked.contains(&i) {
                picked.push(i);
                init.extend_from_slice(&x[i * dim..(i + 1) * dim]);
            }
        }
        write_npy(&dir.path().join("x.npy"), n, dim, &x);
        write_npy(&dir.path().join("c.npy"), k, dim, &init);
        let seeds = 5;
        let out = run_python(
            &py,
            SKLEARN,
            &[
                dir.path().join("x.npy").to_str().unwrap(),
                dir.path().join("c.npy").to_str().unwrap(),
                &seeds.to_string(),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let cfg = Config {
            k,
            max_iter: 300,
            tol: 1e-4,
            ..Default::default()
        };
        let given = kmeans::fit(&x, dim, &cfg, Some(&init));
        let theirs = v["given"].as_f64().unwrap();
        let rel = (given.inertia - theirs).abs() / theirs;
        println!(
            "{name}, k={k}, same start: inertia {:.6} vs scikit-learn {theirs:.6} ({rel:.2e} apart; {} vs {} iterations)",
            given.inertia, given.iterations, v["iters"]
        );
        assert!(rel < 1e-3, "{name}: {} vs {theirs}", given.inertia);

        let ours: Vec<f64> = (0..seeds)
            .map(|s| {
                kmeans::fit(
                    &x,
                    dim,
                    &Config {
                        seed: s,
                        ..cfg.clone()
                    },
                    None,
                )
                .inertia
            })
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let pp: Vec<f64> = v["pp"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let rel = (mean(&ours) - mean(&pp)).abs() / mean(&pp);
        println!(
            "{name}, k={k}, own k-means++ over {seeds} seeds: mean inertia {:.6} vs scikit-learn {:.6} ({rel:.2e} apart)",
            mean(&ours),
            mean(&pp)
        );
        assert!(rel < 1e-2, "{name}: {ours:?} vs {pp:?}");
    }
}

/// Writes (text, label) to Parquet for the reference script.
fn write_labelled(path: &Path, texts: &[String], labels: &[i64]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, true),
        Field::new("label", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(texts)),
            Arc::new(Int64Array::from(labels.to_vec())),
        ],
    )
    .unwrap();
    write_batch(path, &batch);
}

/// The reference's keywords per label: words and scores ("" padding dropped).
fn reference_keywords(
    py: &Path,
    file: &Path,
    label_col: &str,
    args: &[&str],
) -> HashMap<i64, Vec<(String, f64)>> {
    let json = file.with_extension("json");
    let mut all = vec![
        shared()
            .join("tools/ctfidf_ref.py")
            .to_str()
            .unwrap()
            .to_string(),
        file.to_str().unwrap().to_string(),
        "--label-col".into(),
        label_col.into(),
        "--tie-break".into(),
        "word".into(),
        "--json".into(),
        json.to_str().unwrap().into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let o = std::process::Command::new(py).args(&all).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    v["topics"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(l, t)| {
            let words = t["words"].as_array().unwrap();
            let scores = t["scores"].as_array().unwrap();
            let kw = words
                .iter()
                .zip(scores)
                .map(|(w, s)| (w.as_str().unwrap().to_string(), s.as_f64().unwrap()))
                .filter(|(w, _)| !w.is_empty())
                .collect();
            (l.parse().unwrap(), kw)
        })
        .collect()
}

fn assert_same_keywords(what: &str, ours: &[(String, f64)], theirs: &[(String, f64)]) {
    let words = |v: &[(String, f64)]| v.iter().map(|(w, _)| w.clone()).collect::<Vec<_>>();
    assert_eq!(words(ours), words(theirs), "{what}");
    for ((w, a), (_, b)) in ours.iter().zip(theirs) {
        assert!(
            (a - b).abs() <= 1e-12 * b.abs().max(1.0),
            "{what}: {w} {a} vs {b}"
        );
    }
}

#[test]
fn ctfidf_keywords_equal_bertopics_by_outlet() {
    let py = reference_python();
    let dir = tempfile::tempdir().unwrap();
    let english = TopicOptions {
        preprocess: Preprocess::English,
        ..Default::default()
    };
    let configs: Vec<(&str, Vec<&str>, TopicOptions)> = vec![
        ("default (english)", vec![], english.clone()),
        (
            "stop words, 1-2 grams, reduce_frequent_words",
            vec![
                "--stop-words",
                "english",
                "--ngram",
                "1",
                "2",
                "--reduce-frequent-words",
            ],
            TopicOptions {
                english_stop_words: true,
                ngram: (1, 2),
                reduce_frequent_words: true,
                ..english.clone()
            },
        ),
        (
            "bm25, no English preprocessing",
            vec!["--bm25", "--no-preprocess"],
            TopicOptions {
                bm25_weighting: true,
                ..Default::default()
            },
        ),
    ];
    for (file, text_col, n_configs) in [
        ("news_articles.parquet", "text", 3),
        ("health_tweets.parquet", "text", 3),
    ] {
        let (batch, _) = read_parquet(&shared().join("data").join(file));
        let texts = strings(&batch, text_col);
        let outlets = strings(&batch, "outlet");
        let mut names: Vec<&String> = outlets.iter().collect();
        names.sort();
        names.dedup();
        let labels: Vec<i64> = outlets
            .iter()
            .map(|o| names.binary_search(&o).unwrap() as i64)
            .collect();
        let path = dir.path().join(file);
        write_labelled(&path, &texts, &labels);
        for (name, args, opts) in configs.iter().take(n_configs) {
            let theirs = reference_keywords(&py, &path, "label", args);
            let mut counts = TermCounts::new(names.len(), opts.clone());
            for (t, &l) in texts.iter().zip(&labels) {
                counts.add(l as usize, t);
            }
            let ours = counts.keywords();
            assert_eq!(theirs.len(), names.len());
            for (l, kw) in &theirs {
                assert_same_keywords(
                    &format!("{file}, {name}, outlet {}", names[*l as usize]),
                    &ours[*l as usize],
                    kw,
                );
            }
            println!(
                "{file}, {name}: top-10 keywords of {} outlets equal the reference",
                names.len()
            );
        }
    }
}

/// The items of each row of a list column.
fn list_values(batch: &RecordBatch, col: &str) -> Vec<ArrayRef> {
    let l = batch
        .column_by_name(col)
        .unwrap()
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap()
        .clone();
    (0..l.len()).map(|i| l.value(i)).collect()
}

fn list_strings(batch: &RecordBatch, col: &str) -> Vec<Vec<String>> {
    list_values(batch, col)
        .into_iter()
        .map(|v| {
            let s = v.as_any().downcast_ref::<StringArray>().unwrap();
            (0..s.len()).map(|j| s.value(j).to_string()).collect()
        })
        .collect()
}

#[test]
fn cluster_command_writes_labels_clusters_and_topics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = root().join("sample_data/health_tweets.csv");
    let o = embedflow(
        d,
        &[
            "embed",
            csv.to_str().unwrap(),
            "tweets.parquet",
            "--model",
            minilm().to_str().unwrap(),
            "--text-column",
            "text",
            "--chunking",
            "none",
            "--csv-no-infer",
        ],
    );
    assert_code(&o, 0);
    let args = [
        "cluster",
        "tweets.parquet",
        "clustered.parquet",
        "--k",
        "6",
        "--metric",
        "cosine",
        "--id-column",
        "tweet_id",
        "--text-column",
        "text",
        "--clusters",
        "clusters.parquet",
        "--topics",
        "topics.parquet",
        "--preprocess",
        "english",
        "--seed",
        "3",
    ];
    let o = embedflow(d, &args);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("wrote clustered.parquet (300 rows)"),
        "{}",
        stdout(&o)
    );

    let (input, _) = read_parquet(&d.join("tweets.parquet"));
    let (out, kv) = read_parquet(&d.join("clustered.parquet"));
    assert_eq!(meta(&kv, "embedflow.cluster.k"), "6");
    assert_eq!(out.num_rows(), 300);
    assert_eq!(strings(&out, "tweet_id"), strings(&input, "tweet_id"));
    let ids = ints(&out, "cluster_id");
    let dist = out
        .column_by_name("cluster_distance")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Float32Array>()
        .unwrap()
        .clone();

    // Every row sits at its nearest centre, at the distance written.
    let (clusters, _) = read_parquet(&d.join("clusters.parquet"));
    let centroids = vectors(&clusters, "centroid");
    let rows = vectors(&out, "embedding");
    for (i, r) in rows.iter().enumerate() {
        let d: Vec<f64> = centroids.iter().map(|c| 1.0 - cosine(r, c)).collect();
        let best = d.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(d[ids[i] as usize] - best < 1e-5, "row {i}");
        assert!(
            (dist.value(i) as f64 - d[ids[i] as usize]).abs() < 1e-4,
            "row {i}"
        );
    }
    // Sizes and the nearest rows.
    let sizes = ints(&clusters, "size");
    for (c, &s) in sizes.iter().enumerate() {
        assert_eq!(s, ids.iter().filter(|&&l| l == c as i64).count() as i64);
    }
    let tweet_ids = strings(&out, "tweet_id");
    for (c, near) in list_strings(&clusters, "nearest_ids").iter().enumerate() {
        assert_eq!(near.len(), (sizes[c] as usize).min(5));
        let mut members: Vec<(f32, &String)> = (0..300)
            .filter(|&i| ids[i] == c as i64)
            .map(|i| (dist.value(i), &tweet_ids[i]))
            .collect();
        members.sort_by(|a, b| a.0.total_cmp(&b.0));
        for n in near {
            let pos = members.iter().position(|(_, id)| *id == n).unwrap();
            assert!(pos < 5 + 2, "cluster {c}: {n} is not among the nearest");
        }
    }

    // Topics: labels, and keywords equal to the reference on this very output.
    let (topics, _) = read_parquet(&d.join("topics.parquet"));
    let keywords = list_strings(&topics, "keywords");
    let labels = strings(&out, "topic_label");
    for i in 0..300 {
        let kw = &keywords[ids[i] as usize];
        let want = std::iter::once(ids[i].to_string())
            .chain(kw.iter().take(4).cloned())
            .collect::<Vec<_>>()
            .join("_");
        assert_eq!(labels[i], want);
    }
    let py = reference_python();
    let theirs = reference_keywords(&py, &d.join("clustered.parquet"), "cluster_id", &[]);
    for (l, kw) in &theirs {
        let ours = &keywords[*l as usize];
        let words: Vec<String> = kw.iter().map(|(w, _)| w.clone()).collect();
        assert_eq!(ours, &words, "cluster {l}");
    }

    // The same seed gives the same clusters.
    let o = embedflow(d, &args);
    assert_code(&o, 0);
    let (again, _) = read_parquet(&d.join("clustered.parquet"));
    assert_eq!(ints(&again, "cluster_id"), ids);

    // Mini-batch lands within a few percent of Lloyd's training inertia.
    let inertia = |o: &std::process::Output| -> f64 {
        stdout(o)
            .lines()
            .find_map(|l| l.trim().strip_prefix("train inertia"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}", stdout(o)))
    };
    let lloyd = inertia(&o);
    let mut mb_args = args.to_vec();
    mb_args.extend([
        "--algorithm",
        "minibatch",
        "--batch-size",
        "64",
        "--max-iter",
        "20",
    ]);
    let o = embedflow(d, &mb_args);
    assert_code(&o, 0);
    let mb = inertia(&o);
    println!("train inertia: Lloyd {lloyd}, mini-batch {mb}");
    assert!(mb < lloyd * 1.05, "mini-batch {mb} vs Lloyd {lloyd}");
}

#[test]
fn cluster_errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("texts.parquet"), &[Some("a"), Some("b")]);
    let o = embedflow(d, &["cluster", "texts.parquet", "o.parquet", "--k", "2"]);
    assert_code(&o, 1);
    assert_eq!(
        stderr(&o).trim(),
        "error: input texts.parquet: no column 'embedding'; the columns are: id, text"
    );
    let o = embedflow(
        d,
        &[
            "cluster",
            "texts.parquet",
            "o.parquet",
            "--k",
            "2",
            "--vector-column",
            "text",
        ],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("column 'text': expected a vector column (FixedSizeList<Float32> or List<Float32>), found Utf8"),
        "{}",
        stderr(&o)
    );
    let o = embedflow(
        d,
        &[
            "embed",
            "texts.parquet",
            "v.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "text",
        ],
    );
    assert_code(&o, 0);
    let o = embedflow(d, &["cluster", "v.parquet", "o.parquet", "--k", "3"]);
    assert_code(&o, 1);
    assert_eq!(
        stderr(&o).trim(),
        "error: input v.parquet: 2 rows, fewer than k = 3"
    );
    assert!(!d.join("o.parquet").exists());
}

const ZERO_SHOT: &str = r#"
import json, sys
import numpy as np
import pyarrow.parquet as pq
sys.path.insert(0, sys.argv[1])
from zeroshot_ref import zeroshot_assign
def matrix(path):
    col = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
    return np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(col), -1)
assigned, best, sim = zeroshot_assign(matrix(sys.argv[2]), matrix(sys.argv[3]), float(sys.argv[4]))
print(json.dumps({"assigned": assigned.tolist(), "sim": sim.tolist()}))
"#;

#[test]
fn job_clusters_and_zero_shot_topics_match_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let labels = [
        "cancer",
        "diet and nutrition",
        "mental health",
        "vaccines",
        "heart disease",
    ];
    let job = format!(
        r#"
[input]
path = "{csv}"
text_column = "text"
id_column = "tweet_id"
columns = ["tweet_id", "outlet", "text"]
[input.csv]
infer_types = false
[model]
path = "{model}"
[chunking]
mode = "none"
[output]
path = "out/tweets.parquet"
[cluster]
k = 5
seed = 1
clusters_path = "out/clusters.parquet"
[topics]
preprocess = "english"
stop_words = "english"
labels = {labels:?}
min_similarity = 0.4
topics_path = "out/topics.parquet"
"#,
        csv = root().join("sample_data/health_tweets.csv").display(),
        model = minilm().display(),
    );
    std::fs::write(d.join("job.toml"), job).unwrap();
    let o = embedflow(d, &["run", "job.toml"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("wrote out/tweets.parquet (300 vectors, 384 dims)")
            && out.contains("wrote out/clusters.parquet (5 clusters)")
            && out.contains("wrote out/topics.parquet (10 topics)"),
        "{out}"
    );
    // No intermediate file left behind.
    assert_eq!(
        listing(&d.join("out")),
        ["clusters.parquet", "topics.parquet", "tweets.parquet"]
    );
    let (batch, kv) = read_parquet(&d.join("out/tweets.parquet"));
    assert_eq!(meta(&kv, "embedflow.model"), "all-MiniLM-L6-v2");
    assert_eq!(meta(&kv, "embedflow.cluster.k"), "5");
    let topic_ids = ints(&batch, "topic_id");
    let topic_labels = strings(&batch, "topic_label");

    // Zero-shot assignments equal BERTopic's rule (../shared/tools/zeroshot_ref.py).
    let py = reference_python();
    let label_texts: Vec<Option<&str>> = labels.iter().map(|l| Some(*l)).collect();
    write_texts_parquet(&d.join("labels.parquet"), &label_texts);
    let o = embedflow(
        d,
        &[
            "embed",
            "labels.parquet",
            "labels_emb.parquet",
            "--model",
            minilm().to_str().unwrap(),
            "--text-column",
            "text",
            "--chunking",
            "none",
        ],
    );
    assert_code(&o, 0);
    let json = run_python(
        &py,
        ZERO_SHOT,
        &[
            shared().join("tools").to_str().unwrap(),
            d.join("out/tweets.parquet").to_str().unwrap(),
            d.join("labels_emb.parquet").to_str().unwrap(),
            "0.4",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let assigned: Vec<i64> = v["assigned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let ours: Vec<i64> = topic_ids
        .iter()
        .map(|&t| if t < labels.len() as i64 { t } else { -1 })
        .collect();
    assert_eq!(ours, assigned);
    let n_assigned = assigned.iter().filter(|&&a| a >= 0).count();
    println!(
        "zero-shot: {n_assigned} of 300 tweets took a label at cosine >= 0.4, as the reference"
    );
    assert!(n_assigned > 10 && n_assigned < 290, "{n_assigned}");
    for (i, &t) in topic_ids.iter().enumerate() {
        if t < labels.len() as i64 {
            assert_eq!(topic_labels[i], labels[t as usize]);
        }
    }
    // Keywords per final topic equal c-TF-IDF's reference over the same assignment.
    let theirs = reference_keywords(
        &py,
        &d.join("out/tweets.parquet"),
        "topic_id",
        &["--stop-words", "english"],
    );
    let (topics, _) = read_parquet(&d.join("out/topics.parquet"));
    let keywords = list_strings(&topics, "keywords");
    assert_eq!(strings(&topics, "label")[..5], labels.map(String::from));
    for (t, kw) in &theirs {
        let words: Vec<String> = kw.iter().map(|(w, _)| w.clone()).collect();
        assert_eq!(keywords[*t as usize], words, "topic {t}");
    }
}

#[test]
fn topics_jobs_are_checked_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("a b"), Some("c d")]);
    // The text column is not passed through, and chunk texts are not kept.
    let base = format!(
        "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\ncolumns = [\"id\"]\n[model]\npath = \"{}\"\n[chunking]\nkeep_text = false\n[output]\npath = \"o.parquet\"\n",
        tiny().display()
    );
    for (extra, want) in [
        (
            "[topics]\ntop_n = 5\n",
            "[topics]: needs a [cluster] section (topics describe clusters)",
        ),
        (
            "[cluster]\nk = 2\n[topics]\ntop_n = 5\n",
            "[topics]: the texts must be in the output: set chunking.keep_text = true",
        ),
        (
            "[cluster]\nmetric = \"cos\"\n",
            "cluster.k: required (the number of clusters)",
        ),
    ] {
        std::fs::write(d.join("job.toml"), format!("{base}{extra}")).unwrap();
        let o = embedflow(d, &["validate", "job.toml"]);
        assert_code(&o, 1);
        assert!(stderr(&o).contains(want), "{extra}: {}", stderr(&o));
    }
}

const BRUTE_FORCE: &str = r#"
import json, sys
import numpy as np
x = np.load(sys.argv[1]).astype(np.float64)
k = int(sys.argv[2])
x /= np.linalg.norm(x, axis=1, keepdims=True)
ids, scores = [], []
for s in range(0, len(x), 2000):
    sims = x[s:s + 2000] @ x.T
    for i in range(sims.shape[0]):
        sims[i, s + i] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    ids += (top + 1000).tolist()
    scores += np.take_along_axis(sims, top, axis=1).tolist()
print(json.dumps({"ids": ids, "scores": scores}))
"#;

#[test]
fn neighbors_equal_brute_force() {
    let py = reference_python();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n, dim, k) = (10_000, 48, 10);
    let x = blobs(n, dim, 50, 11);
    write_vectors(&d.join("items.parquet"), &x, dim);
    write_npy(&d.join("items.npy"), n, dim, &x);
    let o = embedflow(
        d,
        &[
            "neighbors",
            "items.parquet",
            "nn.parquet",
            "--k",
            "10",
            "--id-column",
            "id",
        ],
    );
    assert_code(&o, 0);
    println!("{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(
        run_python(
            &py,
            BRUTE_FORCE,
            &[d.join("items.npy").to_str().unwrap(), "10"],
        )
        .trim(),
    )
    .unwrap();
    let (out, kv) = read_parquet(&d.join("nn.parquet"));
    assert_eq!(meta(&kv, "embedflow.neighbors.k"), "10");
    assert_eq!(out.num_rows(), n);
    assert_eq!(
        ints(&out, "id"),
        (1000..1000 + n as i64).collect::<Vec<_>>()
    );
    let (got_ids, got_scores) = (
        list_values(&out, "neighbor_ids"),
        list_values(&out, "scores"),
    );
    let mut differing = 0;
    for i in 0..n {
        let ids = got_ids[i].as_any().downcast_ref::<Int64Array>().unwrap();
        let sc = got_scores[i]
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .unwrap();
        let want_ids: Vec<i64> = v["ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let want_sc: Vec<f64> = v["scores"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(ids.len(), k);
        for (j, w) in want_sc.iter().enumerate() {
            assert!((sc.value(j) as f64 - w).abs() < 1e-5, "row {i} rank {j}");
        }
        if ids.values().to_vec() != want_ids {
            // Only scores equal to 1e-6 may swap places.
            differing += 1;
            for (j, (w, ws)) in want_ids.iter().zip(&want_sc).enumerate() {
                if ids.value(j) != *w {
                    assert!((ws - sc.value(j) as f64).abs() < 1e-6, "row {i} rank {j}");
                }
            }
        }
    }
    println!(
        "neighbors: {n} rows x {k}, scores within 1e-5 of numpy; {differing} rows with near-tied ranks swapped"
    );

    // --queries: other rows searched against the same items. Here they are
    // the first 300 items again, so each finds itself first (score 1) and
    // then its neighbors from above.
    let q = 300;
    write_vectors(&d.join("new.parquet"), &x[..q * dim], dim);
    let o = embedflow(
        d,
        &[
            "neighbors",
            "items.parquet",
            "new_nn.parquet",
            "--queries",
            "new.parquet",
            "--k",
            "10",
            "--id-column",
            "id",
        ],
    );
    assert_code(&o, 0);
    let (qout, _) = read_parquet(&d.join("new_nn.parquet"));
    assert_eq!(qout.num_rows(), q);
    let (ql, qs) = (
        list_values(&qout, "neighbor_ids"),
        list_values(&qout, "scores"),
    );
    for i in 0..q {
        let ids = ql[i].as_any().downcast_ref::<Int64Array>().unwrap();
        let sc = qs[i]
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .unwrap();
        assert_eq!(ids.value(0), 1000 + i as i64, "row {i}");
        assert!((sc.value(0) - 1.0).abs() < 1e-5);
        let all = got_ids[i].as_any().downcast_ref::<Int64Array>().unwrap();
        let all_sc = got_scores[i]
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .unwrap();
        for j in 1..k {
            assert!(
                ids.value(j) == all.value(j - 1)
                    || (sc.value(j) - all_sc.value(j - 1)).abs() < 1e-6,
                "row {i} rank {j}"
            );
        }
    }
    // A queries file of another width is refused, naming it.
    write_vectors(&d.join("narrow.parquet"), &x[..10 * 8], 8);
    let o = embedflow(
        d,
        &[
            "neighbors",
            "items.parquet",
            "x.parquet",
            "--queries",
            "narrow.parquet",
        ],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("narrow.parquet")
            && stderr(&o).contains("has 8 dimensions; the rows searched (items.parquet) have 48"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("x.parquet").exists());
}

/// `embedflow cluster`'s flags go through the job file's [cluster] and
/// [topics] readers: the same mistake gets the same message either way.
#[test]
fn cluster_flags_and_job_sections_share_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_vectors(&d.join("v.parquet"), &[0.0, 1.0, 1.0, 0.0], 2);
    write_texts_parquet(&d.join("in.parquet"), &[Some("a b"), Some("c d")]);
    let job = |section: &str| {
        std::fs::write(
            d.join("job.toml"),
            format!(
                "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\n[model]\npath = \"{}\"\n[output]\npath = \"o.parquet\"\n{section}",
                tiny().display()
            ),
        )
        .unwrap();
        let o = embedflow(d, &["validate", "job.toml"]);
        assert_code(&o, 1);
        stderr(&o)
    };
    for (flags, section, want) in [
        (
            vec!["--k", "0"],
            "[cluster]\nk = 0\n",
            "cluster.k: must be at least 1, found 0",
        ),
        (
            vec!["--k", "2", "--metric", "cos"],
            "[cluster]\nk = 2\nmetric = \"cos\"\n",
            "cluster.metric: \"cos\" is not one of",
        ),
        (
            vec!["--k", "2", "--text-column", "text", "--ngram", "2,1"],
            "[cluster]\nk = 2\n[topics]\nngram_range = [2, 1]\n",
            "topics.ngram_range: expected [min, max] with 1 <= min <= max",
        ),
        (
            vec!["--k", "2", "--text-column", "text", "--preprocess", "latin"],
            "[cluster]\nk = 2\n[topics]\npreprocess = \"latin\"\n",
            "topics.preprocess: \"latin\" is not one of",
        ),
    ] {
        let mut args = vec!["cluster", "v.parquet", "o.parquet"];
        args.extend(&flags);
        let o = embedflow(d, &args);
        assert_code(&o, 1);
        assert!(stderr(&o).contains(want), "{flags:?}: {}", stderr(&o));
        let from_job = job(section);
        assert!(from_job.contains(want), "{section}: {from_job}");
        assert!(!d.join("o.parquet").exists());
    }
}
