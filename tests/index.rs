//! `embedflow index` and `neighbors` from an index: real MiniLM vectors of
//! real tweets, recall against the exact search, and indexes that do not
//! fit their table (another file, version, metric) never used silently.

use std::path::Path;

use arrow::array::{Array, Int64Array, ListArray};

use crate::util::*;

/// Each row's neighbour ids, from a `neighbors` output.
fn neighbour_ids(path: &Path) -> Vec<Vec<i64>> {
    let (b, _) = read_parquet(path);
    let l = b
        .column_by_name("neighbor_ids")
        .unwrap()
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap()
        .clone();
    (0..l.len())
        .map(|i| {
            let v = l.value(i);
            let v = v.as_any().downcast_ref::<Int64Array>().unwrap();
            v.values().to_vec()
        })
        .collect()
}

/// recall@k of `got` against `exact`, averaged over rows.
fn recall(got: &[Vec<i64>], exact: &[Vec<i64>]) -> f64 {
    let per_row = got
        .iter()
        .zip(exact)
        .map(|(g, e)| e.iter().filter(|id| g.contains(id)).count() as f64 / e.len().max(1) as f64);
    per_row.sum::<f64>() / exact.len() as f64
}

/// MiniLM vectors of the 2,000 tweets of ../shared/data/health_tweets_2k.csv,
/// into `out` (Parquet; `delta` adds the Delta table's settings).
fn embed_tweets(d: &Path, out: &str, delta: &str) {
    let csv = shared().join("data/health_tweets_2k.csv");
    let job = format!(
        "[input]\npath = \"{}\"\ntext_column = \"text\"\nid_column = \"tweet_id\"\n\
         [model]\npath = \"{}\"\n[chunking]\nmode = \"none\"\n[embed]\non_empty = \"skip\"\n\
         [output]\npath = \"{out}\"\n{}",
        csv.display(),
        minilm().display(),
        delta
    );
    std::fs::write(d.join("embed.toml"), job).unwrap();
    assert_code(&embedflow(d, &["run", "embed.toml"]), 0);
}

#[test]
fn neighbors_from_the_index_find_the_exact_ones_at_the_measured_recall() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    embed_tweets(d, "tweets.parquet", "");
    let o = embedflow(d, &["index", "tweets.parquet"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("wrote the index of tweets.parquet to tweets.parquet.index"),
        "{out}"
    );
    let index_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("tweets.parquet.index/index.json")).unwrap(),
    )
    .unwrap();
    // √2000 lists; the default nprobe reached the target on the sample.
    assert_eq!(index_json["lists"], 45, "{index_json}");
    assert_eq!(index_json["rows"], 2000);
    // The curve goes on to the margin asked of rows from outside the
    // table: their nprobe is larger.
    let curve = index_json["recall_curve"].as_array().unwrap();
    let at = |p: &serde_json::Value| curve.iter().find(|c| c["nprobe"] == *p).unwrap().clone();
    let last = at(&index_json["nprobe"]);
    assert!(last["recall"].as_f64().unwrap() >= 0.95, "{index_json}");
    let for_queries = at(&index_json["query_nprobe"]);
    assert!(
        for_queries["recall"].as_f64().unwrap() >= 0.975,
        "{index_json}"
    );
    assert!(
        for_queries["nprobe"].as_u64() > last["nprobe"].as_u64(),
        "{index_json}"
    );

    let args = [
        "neighbors",
        "tweets.parquet",
        "--k",
        "10",
        "--id-column",
        "tweet_id",
    ];
    let o = embedflow(
        d,
        &[&args[..1], &["tweets.parquet", "ann.parquet"], &args[2..]].concat(),
    );
    assert_code(&o, 0);
    let o = embedflow(
        d,
        &[
            &args[..1],
            &["tweets.parquet", "exact.parquet", "--exact"],
            &args[2..],
        ]
        .concat(),
    );
    assert_code(&o, 0);
    let (ann, kv) = read_parquet(&d.join("ann.parquet"));
    assert_eq!(
        meta(&kv, "embedflow.neighbors.index"),
        "tweets.parquet.index"
    );
    assert_eq!(
        meta(&kv, "embedflow.neighbors.nprobe"),
        index_json["nprobe"].to_string()
    );
    assert_eq!(ann.num_rows(), 2000);
    let (_, kv) = read_parquet(&d.join("exact.parquet"));
    assert_eq!(meta(&kv, "embedflow.neighbors.index"), "exact");
    let got = neighbour_ids(&d.join("ann.parquet"));
    let exact = neighbour_ids(&d.join("exact.parquet"));
    let r = recall(&got, &exact);
    println!("recall@10 of neighbors from the index: {r:.4} (measured at build: {last})");
    assert!(r >= 0.95, "recall@10 {r}");
    // Rows from elsewhere (--queries) are searched with the larger nprobe.
    let (b, _) = read_parquet(&d.join("tweets.parquet"));
    write_batch(&d.join("q.parquet"), &b.slice(0, 100));
    let o = embedflow(
        d,
        &[
            &args[..1],
            &["tweets.parquet", "q_nn.parquet", "--queries", "q.parquet"],
            &args[2..],
        ]
        .concat(),
    );
    assert_code(&o, 0);
    let (_, kv) = read_parquet(&d.join("q_nn.parquet"));
    assert_eq!(
        meta(&kv, "embedflow.neighbors.nprobe"),
        index_json["query_nprobe"].to_string()
    );
    // Probing every list is the exact search.
    let o = embedflow(
        d,
        &[
            &args[..1],
            &["tweets.parquet", "all.parquet", "--nprobe", "45"],
            &args[2..],
        ]
        .concat(),
    );
    assert_code(&o, 0);
    let all = neighbour_ids(&d.join("all.parquet"));
    assert!(recall(&all, &exact) > 0.999, "{}", recall(&all, &exact));
}

#[test]
fn an_index_that_does_not_fit_is_never_used_silently() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    embed_tweets(d, "table", "format = \"delta\"");
    let o = embedflow(d, &["index", "table", "--lists", "20"]);
    assert_code(&o, 0);
    assert!(d.join("table/_embedflow/index/v0/index.json").exists());
    // Another spelling of the table finds the same index.
    let o = embedflow(d, &["neighbors", "./table/", "nn.parquet"]);
    assert_code(&o, 0);
    let (_, kv) = read_parquet(&d.join("nn.parquet"));
    assert!(meta(&kv, "embedflow.neighbors.index").ends_with("_embedflow/index/v0"));

    // Another metric: said, and searched exactly; named, refused.
    let o = embedflow(
        d,
        &[
            "neighbors",
            "table",
            "ip.parquet",
            "--similarity",
            "inner_product",
        ],
    );
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("it ranks by cosine, this run by inner_product"),
        "{}",
        stderr(&o)
    );
    let (_, kv) = read_parquet(&d.join("ip.parquet"));
    assert_eq!(meta(&kv, "embedflow.neighbors.index"), "exact");
    let named = ["--index", "table/_embedflow/index/v0"];
    let o = embedflow(
        d,
        &[
            &[
                "neighbors",
                "table",
                "ip2.parquet",
                "--similarity",
                "inner_product",
            ][..],
            &named,
        ]
        .concat(),
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("this index does not fit"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("ip2.parquet").exists());

    // A new version of the table: the index of version 0 is another
    // table's now.
    embed_tweets(d, "table", "format = \"delta\"\nmode = \"full\"");
    let o = embedflow(
        d,
        &[&["neighbors", "table", "v1.parquet"][..], &named].concat(),
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("it indexes version 0 of the table, which is at version 1 now"),
        "{}",
        stderr(&o)
    );
    // Found with the table: said with what it covers, and the exact
    // search runs; required, refused (neighbors and SQL alike).
    let o = embedflow(d, &["neighbors", "table", "v1_auto.parquet"]);
    assert_code(&o, 0);
    let note = "the index at table/_embedflow/index/v0 covers version 0 of the table (2000 rows), which is at version 1 now";
    assert!(stderr(&o).contains(note), "{}", stderr(&o));
    let (_, kv) = read_parquet(&d.join("v1_auto.parquet"));
    assert_eq!(meta(&kv, "embedflow.neighbors.index"), "exact");
    let o = embedflow(
        d,
        &["neighbors", "table", "v1_req.parquet", "--require-index"],
    );
    assert_code(&o, 1);
    assert!(stderr(&o).contains(note), "{}", stderr(&o));
    assert!(!d.join("v1_req.parquet").exists());
    let q =
        "SELECT tweet_id FROM t ORDER BY cosine_similarity(embedding, embed('flu')) DESC LIMIT 3";
    let (ids, err) = sql_ids(d, "t=table", q);
    assert_eq!(ids.len(), 3);
    assert!(err.contains(note), "{err}");
    let o = sql(
        d,
        "t=table",
        &format!("SET embedflow.require_index = true; {q}"),
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("embedflow.require_index: no index answers this top-k over t: the index at table/_embedflow/index/v0 covers version 0"),
        "{}",
        stderr(&o)
    );
    // `embedflow index` brings it up to date (a full run rewrote every
    // row: all matched by key), and then it answers.
    let o = embedflow(d, &["index", "table", "--lists", "20"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("2000 entries kept, 0 added, 0 dropped"),
        "{}",
        stdout(&o)
    );
    let (ids, _) = sql_ids(
        d,
        "t=table",
        &format!("SET embedflow.require_index = true; {q}"),
    );
    assert_eq!(ids.len(), 3);

    // Parquet: a file rewritten since its index was built.
    embed_tweets(d, "t.parquet", "");
    assert_code(&embedflow(d, &["index", "t.parquet", "--lists", "10"]), 0);
    let (b, _) = read_parquet(&d.join("t.parquet"));
    write_batch(&d.join("t.parquet"), &b.slice(0, 1500));
    let o = embedflow(d, &["neighbors", "t.parquet", "stale.parquet"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("the files it indexed changed since it was built"),
        "{}",
        stderr(&o)
    );
    // A corrupt index is an error naming it, never a wrong answer.
    assert_code(&embedflow(d, &["index", "t.parquet", "--lists", "10"]), 0);
    let vectors = d.join("t.parquet.index/vectors.f32");
    let len = std::fs::metadata(&vectors).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vectors)
        .unwrap()
        .set_len(len - 4)
        .unwrap();
    let o = embedflow(d, &["neighbors", "t.parquet", "bad.parquet"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("a corrupt index"), "{}", stderr(&o));
    assert!(!d.join("bad.parquet").exists());
}

/// `embedflow sql` over `table` (NAME=PATH) with MiniLM, as CSV.
fn sql(d: &Path, table: &str, query: &str) -> std::process::Output {
    let model = minilm();
    let args = [
        "-q",
        "sql",
        "--table",
        table,
        "--model",
        model.to_str().unwrap(),
        "--format",
        "csv",
        query,
    ];
    embedflow(d, &args)
}

/// The ids of a `sql --format csv` answer's first column.
fn sql_ids(d: &Path, table: &str, query: &str) -> (Vec<i64>, String) {
    let o = sql(d, table, query);
    assert_code(&o, 0);
    let out = stdout(&o);
    let ids = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    (ids, stderr(&o))
}

/// recall@10 of top-10 queries answered through the index against the
/// exact scan: `query(text, filter)` for each text, without a filter and
/// with one keeping the ids divisible by 10 (`WHERE tweet_id % 10 = 0`).
/// Each must fill its LIMIT and pass its filter.
fn top10_recall(
    d: &Path,
    table: &str,
    texts: &[&str],
    query: impl Fn(&str, &str) -> String,
) -> f64 {
    let (mut found, mut wanted) = (0, 0);
    for text in texts {
        for filter in ["", "WHERE tweet_id % 10 = 0"] {
            let q = query(text, filter);
            let (ann, _) = sql_ids(d, table, &q);
            let (exact, _) = sql_ids(d, table, &format!("SET embedflow.exact_search = true; {q}"));
            assert_eq!(ann.len(), 10, "{q}: LIMIT 10 not filled: {ann:?}");
            if !filter.is_empty() {
                assert!(ann.iter().all(|id| id % 10 == 0), "{q}: {ann:?}");
            }
            wanted += exact.len();
            found += exact.iter().filter(|id| ann.contains(id)).count();
        }
    }
    found as f64 / wanted as f64
}

#[test]
fn sql_top_k_is_answered_by_the_index_with_and_without_a_filter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    embed_tweets(d, "tweets.parquet", "");
    assert_code(&embedflow(d, &["index", "tweets.parquet"]), 0);
    let table = "t=tweets.parquet";
    let texts = [
        "flu vaccine",
        "ebola outbreak in west africa",
        "healthy diet and exercise",
        "cancer research funding",
        "mental health of teenagers",
    ];
    let recall = top10_recall(d, table, &texts, |text, filter| {
        format!(
            "SELECT tweet_id, cosine_similarity(embedding, embed('{text}')) AS score FROM t {filter} ORDER BY score DESC LIMIT 10"
        )
    });
    println!(
        "SQL top-10 recall through the index: {recall:.3} over {} queries",
        texts.len() * 2
    );
    assert!(recall >= 0.95, "recall {recall}");
    // EXPLAIN says which scan answers; the setting forces the exact one.
    let q =
        "SELECT tweet_id FROM t ORDER BY cosine_similarity(embedding, embed('flu')) DESC LIMIT 3";
    let o = sql(d, table, &format!("EXPLAIN {q}"));
    assert!(
        stdout(&o).contains(
            "IndexScanExec: t via tweets.parquet.index (45 lists, nprobe 24, ranked by int8 codes, re-scored exactly)"
        ),
        "{}",
        stdout(&o)
    );
    // An index without codes (an earlier release's) is searched by its
    // float vectors, to the same answer.
    let (with_codes, _) = sql_ids(d, table, q);
    let json = d.join("tweets.parquet.index/index.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    m["codes"] = serde_json::Value::Bool(false);
    std::fs::write(&json, m.to_string()).unwrap();
    std::fs::remove_file(d.join("tweets.parquet.index/codes.u8")).unwrap();
    let o = sql(d, table, &format!("EXPLAIN {q}"));
    assert!(
        stdout(&o).contains("(45 lists, nprobe 24), "),
        "{}",
        stdout(&o)
    );
    assert_eq!(sql_ids(d, table, q).0, with_codes);
    let o = sql(
        d,
        table,
        &format!("SET embedflow.exact_search = true; EXPLAIN {q}"),
    );
    assert!(!stdout(&o).contains("IndexScanExec"), "{}", stdout(&o));
    // Another ranking than the index's is scanned exactly.
    let o = sql(
        d,
        table,
        "EXPLAIN SELECT tweet_id FROM t ORDER BY inner_product(embedding, embed('flu')) DESC LIMIT 3",
    );
    assert!(!stdout(&o).contains("IndexScanExec"), "{}", stdout(&o));
    // MiniLM's rows have unit length: l2_distance ascending ranks as the
    // index does, and is answered by it, to the exact scan's rows.
    let l2 = "SELECT tweet_id, l2_distance(embedding, embed('flu vaccine')) AS d FROM t ORDER BY d LIMIT 10";
    let o = sql(d, table, &format!("EXPLAIN {l2}"));
    assert!(stdout(&o).contains("IndexScanExec"), "{}", stdout(&o));
    let (ann, _) = sql_ids(d, table, l2);
    let (exact, _) = sql_ids(
        d,
        table,
        &format!("SET embedflow.exact_search = true; {l2}"),
    );
    let found = exact.iter().filter(|id| ann.contains(id)).count();
    assert!(ann.len() == 10 && found >= 9, "{ann:?} {exact:?}");
    // vector_search: the same rows as the top-k the rule answers, from
    // the index, with the nprobe asked; a bad call is said.
    let top = "SELECT tweet_id, cosine_similarity(embedding, embed('flu vaccine')) AS score FROM t ORDER BY score DESC LIMIT 10";
    let (by_rule, _) = sql_ids(d, table, top);
    let vs = "SELECT tweet_id, score FROM vector_search('t', embed('flu vaccine'), 10) ORDER BY score DESC";
    assert_eq!(sql_ids(d, table, vs).0, by_rule);
    let o = sql(
        d,
        table,
        "EXPLAIN SELECT tweet_id FROM vector_search('t', embed('flu'), 5, 7) WHERE score > 0.2",
    );
    assert!(stdout(&o).contains("(45 lists, nprobe 7"), "{}", stdout(&o));
    for (call, says) in [
        (
            "vector_search('t', embed('flu'), 0)",
            "k: a positive integer",
        ),
        (
            "vector_search('nope', embed('flu'), 3)",
            "no table named nope",
        ),
        ("vector_search('t', embed('flu'))", "2 arguments given"),
    ] {
        let o = sql(d, table, &format!("SELECT * FROM {call}"));
        assert_code(&o, 1);
        assert!(stderr(&o).contains(says), "{call}: {}", stderr(&o));
    }
    // A stale index is said and not used.
    let (b, _) = read_parquet(&d.join("tweets.parquet"));
    write_batch(&d.join("tweets.parquet"), &b.slice(0, 1500));
    let (ids, err) = sql_ids(d, table, q);
    assert_eq!(ids.len(), 3);
    assert!(
        err.contains("is not used: the files it indexed changed"),
        "{err}"
    );
}

#[test]
fn an_l2_index_answers_l2_distance_over_rows_of_any_length() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    embed_tweets(d, "tweets.parquet", "");
    // The tweets' vectors at lengths 0.5 to 3.5: the dot product (or the
    // cosine) would rank them otherwise than their distance does.
    let (b, _) = read_parquet(&d.join("tweets.parquet"));
    let scaled: Vec<f32> = vectors(&b, "embedding")
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            let f = 0.5 + (i % 7) as f32 / 2.0;
            v.iter().map(move |x| x * f).collect::<Vec<_>>()
        })
        .collect();
    write_vectors(&d.join("scaled.parquet"), &scaled, 384);
    let o = embedflow(d, &["index", "scaled.parquet", "--metric", "l2"]);
    assert_code(&o, 0);
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("scaled.parquet.index/index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (m["metric"].as_str(), m["unit_norm"].as_bool()),
        (Some("l2"), Some(false))
    );
    // The recall measured at build is of the l2 neighbours.
    let at = m["recall_curve"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["nprobe"] == m["nprobe"])
        .unwrap()
        .clone();
    assert!(at["recall"].as_f64().unwrap() >= 0.95, "{m}");
    let table = "s=scaled.parquet";
    let l2 = |text: &str, filter: &str| {
        let filter = filter.replace("tweet_id", "id");
        format!(
            "SELECT id, l2_distance(embedding, embed('{text}')) AS d FROM s {filter} ORDER BY d LIMIT 10"
        )
    };
    let o = sql(d, table, &format!("EXPLAIN {}", l2("flu", "WHERE id > 5")));
    assert!(
        stdout(&o).contains("IndexScanExec: s via scaled.parquet.index"),
        "{}",
        stdout(&o)
    );
    let texts = [
        "flu vaccine",
        "ebola outbreak",
        "healthy diet",
        "cancer research",
    ];
    let recall = top10_recall(d, table, &texts, l2);
    println!("SQL l2 top-10 recall through the l2 index: {recall:.3}");
    assert!(recall >= 0.95, "recall {recall}");
    // It answers l2_distance only: another ranking scans every row.
    let q = "SELECT id FROM s ORDER BY cosine_similarity(embedding, embed('flu')) DESC LIMIT 3";
    let o = sql(d, table, &format!("EXPLAIN {q}"));
    assert!(!stdout(&o).contains("IndexScanExec"), "{}", stdout(&o));
    // vector_search ranks as the index does: nearest first, distances.
    let vs = "SELECT id, score FROM vector_search('s', embed('flu vaccine'), 10) ORDER BY score";
    let rule =
        "SELECT id, l2_distance(embedding, embed('flu vaccine')) AS d FROM s ORDER BY d LIMIT 10";
    assert_eq!(sql_ids(d, table, vs).0, sql_ids(d, table, rule).0);
    // neighbors ranks by cosine or the inner product: the l2 index is
    // said and passed over.
    let o = embedflow(d, &["neighbors", "scaled.parquet", "nn.parquet"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("is not used: it ranks by l2, this run by cosine"),
        "{}",
        stderr(&o)
    );
}

/// The 2,000 tweets as (id, text), from ../shared/data/health_tweets_2k.csv.
fn tweets() -> Vec<(i64, String)> {
    use arrow::array::AsArray;
    let path = shared().join("data/health_tweets_2k.csv");
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("tweet_id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("outlet", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new("text", arrow::datatypes::DataType::Utf8, true),
    ]));
    let reader = arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .build(std::fs::File::open(path).unwrap())
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let ids = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        let texts = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push((ids.value(i), texts.value(i).to_string()));
        }
    }
    out
}

/// Writes (id, text) rows as the Parquet input of a job.
fn write_tweets(path: &Path, rows: &[(i64, String)]) {
    use std::sync::Arc;
    let ids = Int64Array::from_iter_values(rows.iter().map(|r| r.0));
    let texts = arrow::array::StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()));
    let batch = arrow::array::RecordBatch::try_from_iter([
        ("tweet_id", Arc::new(ids) as arrow::array::ArrayRef),
        ("text", Arc::new(texts) as arrow::array::ArrayRef),
    ])
    .unwrap();
    write_batch(path, &batch);
}

/// The incremental Delta job of the tweets with an `[index]` section.
fn indexed_job(d: &Path, index: &str) {
    let job = format!(
        "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\nid_column = \"tweet_id\"\n\
         [model]\npath = \"{}\"\n[chunking]\nmode = \"none\"\n[embed]\non_empty = \"skip\"\n\
         [output]\npath = \"table\"\nformat = \"delta\"\n[index]\n{index}\n",
        minilm().display(),
    );
    std::fs::write(d.join("job.toml"), job).unwrap();
}

#[test]
fn a_job_keeps_its_index_current_by_updating_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rows = tweets();
    write_tweets(&d.join("in.parquet"), &rows);
    indexed_job(d, "");
    let o = embedflow(d, &["run", "job.toml"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("wrote the index of table to table/_embedflow/index/v0"),
        "{}",
        stdout(&o)
    );
    // 3 % of the rows change, 1 % go, 1.5 % come (one of them a copy of a
    // text already there: equal keys are matched once each).
    for r in rows.iter_mut().take(60) {
        r.1 = format!("{} (corrected)", r.1);
    }
    rows.truncate(1980);
    let copied = rows[100].1.clone();
    let new: Vec<(i64, String)> = (0..29)
        .map(|i| (i, format!("new tweet {i}: {}", rows[200 + i as usize].1)))
        .collect();
    rows.extend(new);
    rows.push((99, copied));
    write_tweets(&d.join("in.parquet"), &rows);
    let o = embedflow(d, &["run", "job.toml"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("updated the index of table at table/_embedflow/index/v1"),
        "{out}"
    );
    // Kept: 2,000 less 60 changed and 20 deleted; added: 60 changed, 30 new.
    assert!(
        out.contains("(version 0): 1920 entries kept, 90 added, 80 dropped"),
        "{out}"
    );
    let v1: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("table/_embedflow/index/v1/index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (v1["rows"].as_u64(), v1["entries"].as_u64()),
        (Some(2010), Some(2010))
    );
    // Every row at its place: probing every list is the exact search; the
    // default nprobe keeps its recall.
    let lists = v1["lists"].to_string();
    let nn = |out: &str, extra: &[&str]| {
        let args = [
            &["neighbors", "table", out, "--id-column", "tweet_id"][..],
            extra,
        ]
        .concat();
        assert_code(&embedflow(d, &args), 0);
        neighbour_ids(&d.join(out))
    };
    let exact = nn("exact.parquet", &["--exact"]);
    let all = nn("all.parquet", &["--nprobe", &lists]);
    assert!(recall(&all, &exact) > 0.999, "{}", recall(&all, &exact));
    let r = recall(&nn("ann.parquet", &[]), &exact);
    println!("recall@10 after the update: {r:.4}");
    assert!(r >= 0.95, "recall@10 {r}");
    // An unchanged rerun (a version of copied rows) keeps every entry (as
    // its JSON summary says); an index that is current is left alone.
    let o = embedflow(d, &["run", "job.toml", "--summary", "json"]);
    assert_code(&o, 0);
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let index = &summary["index"];
    assert_eq!(index["how"], "updated", "{summary}");
    assert_eq!(index["dir"], "table/_embedflow/index/v2", "{summary}");
    assert_eq!(
        (
            &index["update"]["from"],
            &index["update"]["kept"],
            &index["update"]["added"]
        ),
        (
            &serde_json::json!("version 1"),
            &serde_json::json!(2010),
            &serde_json::json!(0)
        ),
        "{summary}"
    );
    let o = embedflow(d, &["index", "table"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("is current (version 2)"),
        "{}",
        stdout(&o)
    );
    // Past rebuild_after, it is built again; indexes older than the one
    // updated from are removed.
    indexed_job(d, "rebuild_after = 0.05");
    for r in rows.iter_mut().skip(500).take(40) {
        r.1 = format!("{} (second edit)", r.1);
    }
    write_tweets(&d.join("in.parquet"), &rows);
    let o = embedflow(d, &["run", "job.toml"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("built again      250 entries added or dropped since it was built, past rebuild_after = 0.05"),
        "{}",
        stdout(&o)
    );
    let left: Vec<String> = listing(&d.join("table/_embedflow/index"));
    assert!(!left.iter().any(|f| f.starts_with("v0")), "{left:?}");
    assert!(d.join("table/_embedflow/index/v3/index.json").exists());
}
