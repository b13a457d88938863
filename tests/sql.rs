//! `embedflow sql`: every vector function against an f64 reference (nulls,
//! mismatched dimensions, empty tables), embed() on a real model, semantic
//! search on real articles, read-only by default, formats, errors.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, ListArray, RecordBatch,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema};

use crate::util::*;

/// id, a: FixedSizeList<Float32, 3>, b: FixedSizeList<Float32, 3>,
/// c: List<Float32> (3 items), two: FixedSizeList<Float32, 2>; row 2 has
/// null a, row 3 has a zero vector.
fn vectors_table(path: &Path) -> Vec<[f32; 3]> {
    let a: Vec<[f32; 3]> = vec![
        [1.0, 2.0, 3.0],
        [-0.5, 0.25, 4.0],
        [9.0, 9.0, 9.0],
        [0.0, 0.0, 0.0],
        [3.0, -1.0, 0.5],
    ];
    let b: Vec<[f32; 3]> = vec![
        [0.5, -1.0, 2.0],
        [1.0, 1.0, 1.0],
        [1.0, 0.0, 0.0],
        [1.0, 2.0, 3.0],
        [-3.0, 1.0, -0.5],
    ];
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    let fixed = |rows: &[[f32; 3]], null_row: Option<usize>| -> ArrayRef {
        let values: Vec<f32> = rows.iter().flatten().copied().collect();
        let valid: Vec<bool> = (0..rows.len()).map(|i| Some(i) != null_row).collect();
        Arc::new(
            FixedSizeListArray::try_new(
                item.clone(),
                3,
                Arc::new(Float32Array::from(values)),
                Some(valid.into()),
            )
            .unwrap(),
        )
    };
    let c: ArrayRef = Arc::new(
        ListArray::try_new(
            item.clone(),
            OffsetBuffer::from_lengths([3; 5]),
            Arc::new(Float32Array::from(
                b.iter().flatten().copied().collect::<Vec<f32>>(),
            )),
            None,
        )
        .unwrap(),
    );
    let two: ArrayRef = Arc::new(
        FixedSizeListArray::try_new(
            item.clone(),
            2,
            Arc::new(Float32Array::from(vec![1.0f32; 10])),
            None,
        )
        .unwrap(),
    );
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..5)),
        fixed(&a, Some(2)),
        fixed(&b, None),
        c,
        two,
    ];
    let schema = Arc::new(Schema::new(
        ["id", "a", "b", "c", "two"]
            .iter()
            .zip(&cols)
            .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(Arc::clone(&schema), cols).unwrap();
    write_batch(path, &batch);
    let _ = b;
    a
}

fn sql(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["sql", "--table", "v=v.parquet"];
    all.extend_from_slice(args);
    embedflow(dir, &all)
}

/// The CSV result rows (header dropped).
fn csv_rows(o: &std::process::Output) -> Vec<Vec<String>> {
    assert_code(o, 0);
    stdout(o)
        .lines()
        .skip(1)
        .map(|l| {
            // Vectors come out quoted as "[1.0, 2.0]".
            let mut fields = Vec::new();
            let mut cur = String::new();
            let mut quoted = false;
            for ch in l.chars() {
                match ch {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                    _ => cur.push(ch),
                }
            }
            fields.push(cur);
            fields
        })
        .collect()
}

fn num(s: &str) -> Option<f64> {
    (!s.is_empty()).then(|| s.parse().unwrap())
}

fn vec_of(s: &str) -> Option<Vec<f64>> {
    let s = s.trim();
    (!s.is_empty()).then(|| {
        s.trim_matches(['[', ']'])
            .split(',')
            .map(|v| v.trim().parse().unwrap())
            .collect()
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0) || (a.is_nan() && b.is_nan())
}

#[test]
fn vector_functions_equal_an_f64_reference() {
    let dir = tempfile::tempdir().unwrap();
    let a = vectors_table(&dir.path().join("v.parquet"));
    let b: Vec<[f64; 3]> = vec![
        [0.5, -1.0, 2.0],
        [1.0, 1.0, 1.0],
        [1.0, 0.0, 0.0],
        [1.0, 2.0, 3.0],
        [-3.0, 1.0, -0.5],
    ];
    let a: Vec<[f64; 3]> = a.iter().map(|r| r.map(|v| v as f64)).collect();
    let dot = |x: &[f64; 3], y: &[f64; 3]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let norm = |x: &[f64; 3]| dot(x, x).sqrt();
    let o = sql(
        dir.path(),
        &[
            "--format",
            "csv",
            "SELECT id, cosine_similarity(a, b), cosine_distance(a, b), inner_product(a, b), \
             l2_distance(a, b), l2_norm(a), vector_dims(a), vec_normalize(a), vec_add(a, b), \
             vec_sub(a, c), vec_scale(a, 2.5), array_cosine_similarity(a, c), vector_dims(c) \
             FROM v ORDER BY id",
        ],
    );
    let rows = csv_rows(&o);
    assert_eq!(rows.len(), 5);
    for (i, r) in rows.iter().enumerate() {
        let (x, y) = (&a[i], &b[i]);
        if i == 2 {
            // a is null: every function of a is null.
            assert!(r[1..12].iter().all(String::is_empty), "{r:?}");
            assert_eq!(r[12], "3");
            continue;
        }
        let cos = dot(x, y) / (norm(x) * norm(y));
        let want_scalars = [
            cos,
            1.0 - cos,
            dot(x, y),
            {
                x.iter()
                    .zip(y)
                    .map(|(p, q)| (p - q).powi(2))
                    .sum::<f64>()
                    .sqrt()
            },
            norm(x),
        ];
        for (j, w) in want_scalars.iter().enumerate() {
            let got = num(&r[1 + j]).unwrap_or(f64::NAN);
            assert!(close(got, *w), "row {i} column {}: {got} vs {w}", 1 + j);
        }
        assert_eq!(r[6], "3");
        let n = norm(x);
        let want_vectors: [Vec<f64>; 4] = [
            x.iter()
                .map(|v| if n == 0.0 { *v } else { v / n })
                .collect(),
            x.iter().zip(y).map(|(p, q)| p + q).collect(),
            x.iter().zip(y).map(|(p, q)| p - q).collect(),
            x.iter().map(|v| v * 2.5).collect(),
        ];
        for (j, w) in want_vectors.iter().enumerate() {
            let got = vec_of(&r[7 + j]).unwrap();
            assert_eq!(got.len(), 3);
            for (g, w) in got.iter().zip(w) {
                assert!(
                    (g - w).abs() < 1e-6,
                    "row {i} column {}: {got:?} vs {w:?}",
                    7 + j
                );
            }
        }
        let alias = num(&r[11]).unwrap_or(f64::NAN);
        assert!(close(alias, cos), "alias row {i}");
    }

    // vec_avg: the centroid of the non-null vectors, per group and overall.
    let o = sql(
        dir.path(),
        &[
            "--format",
            "csv",
            "SELECT vec_avg(a), vec_avg(c), count(a) FROM v",
        ],
    );
    let r = &csv_rows(&o)[0];
    let mean = |rows: &[[f64; 3]], skip: Option<usize>| -> Vec<f64> {
        let used: Vec<&[f64; 3]> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, r)| r)
            .collect();
        (0..3)
            .map(|d| used.iter().map(|r| r[d]).sum::<f64>() / used.len() as f64)
            .collect()
    };
    for (got, want) in [(&r[0], mean(&a, Some(2))), (&r[1], mean(&b, None))] {
        for (g, w) in vec_of(got).unwrap().iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{got} vs {want:?}");
        }
    }
    assert_eq!(r[2], "4");

    // Empty table: a header and no rows; vec_avg of nothing is null.
    let o = sql(
        dir.path(),
        &[
            "--format",
            "csv",
            "SELECT cosine_similarity(a, b) AS s FROM v WHERE id > 100",
        ],
    );
    assert_eq!(stdout(&o).trim(), "s");
    let o = sql(
        dir.path(),
        &[
            "--format",
            "csv",
            "SELECT vec_avg(a) AS m FROM v WHERE id > 100",
        ],
    );
    assert_eq!(csv_rows(&o), vec![vec![String::new()]]);
}

#[test]
fn type_errors_are_caught_when_planning() {
    let dir = tempfile::tempdir().unwrap();
    vectors_table(&dir.path().join("v.parquet"));
    for (q, want) in [
        (
            "SELECT cosine_similarity(a, two) FROM v",
            "cosine_similarity: the vectors have different dimensions: FixedSizeList(3 x Float32) and FixedSizeList(2 x Float32)",
        ),
        (
            "SELECT l2_distance(id, a) FROM v",
            "l2_distance: expected a vector (FixedSizeList<Float32> or List<Float32>), found Int64",
        ),
        (
            "SELECT vec_scale(a, 'x') FROM v",
            "vec_scale: expected a number",
        ),
        ("SELECT vec_avg(id) FROM v", "vec_avg: expected a vector"),
        (
            "SELECT inner_product(a) FROM v",
            "inner_product: takes 2 arguments, found 1",
        ),
        (
            "SELECT embed('hello') FROM v",
            "embed(): no model; pass --model (or --job, whose model is used)",
        ),
    ] {
        let o = sql(dir.path(), &[q]);
        assert_code(&o, 1);
        assert!(stderr(&o).contains(want), "{q}:\n{}", stderr(&o));
    }
    // A variable-length list of the wrong size is caught per row.
    let o = sql(dir.path(), &["SELECT cosine_similarity(c, two) FROM v"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("cosine_similarity: the vectors have different dimensions: 3 and 2"),
        "{}",
        stderr(&o)
    );
    // Syntax errors point at the place.
    let o = sql(dir.path(), &["SELECT id FROM v WHERE id >"]);
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("at line 1, column") && e.contains('^'), "{e}");
}

#[test]
fn writes_need_allow_write_and_formats_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    vectors_table(&d.join("v.parquet"));
    let copy = "COPY (SELECT id FROM v) TO 'ids.csv' STORED AS CSV";
    let o = sql(d, &[copy]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("read-only unless --allow-write is given"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("ids.csv").exists());
    let o = sql(d, &["--allow-write", copy]);
    assert_code(&o, 0);
    assert!(d.join("ids.csv").exists());

    let o = sql(
        d,
        &[
            "--format",
            "json",
            "SELECT id, vector_dims(b) AS n FROM v WHERE id < 2",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "{\"id\":0,\"n\":3}\n{\"id\":1,\"n\":3}");
    let o = sql(
        d,
        &[
            "--output",
            "out.parquet",
            "SELECT id, vec_normalize(b) AS u FROM v",
        ],
    );
    assert_code(&o, 0);
    let (batch, _) = read_parquet(&d.join("out.parquet"));
    assert_eq!(batch.num_rows(), 5);
    assert!(matches!(
        batch.schema().field_with_name("u").unwrap().data_type(),
        DataType::FixedSizeList(_, 3)
    ));
    let o = sql(d, &["SELECT id FROM v WHERE id = 4"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("| 4  |"), "{}", stdout(&o));
    // A script of several statements.
    std::fs::write(
        d.join("q.sql"),
        "-- two queries\nSELECT 1 AS one;\nSELECT count(*) AS n FROM v;",
    )
    .unwrap();
    let o = sql(d, &["-f", "q.sql", "--format", "csv"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "one\n1\nn\n5");
}

/// Embeds the articles of `input` with MiniLM, one vector per article
/// (`text` is `--text-column C` or `--text-template T`), keeping
/// article_id and title.
fn embed_articles(dir: &Path, input: &Path, out: &str, text: [&str; 2]) -> std::process::Output {
    embedflow(
        dir,
        &[
            "embed",
            input.to_str().unwrap(),
            out,
            "--model",
            minilm().to_str().unwrap(),
            text[0],
            text[1],
            "--chunking",
            "none",
            "--columns",
            "article_id,title",
        ],
    )
}

#[test]
fn semantic_search_finds_the_articles_about_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let news = root().join("sample_data/news.parquet");
    let o = embed_articles(
        d,
        &news,
        "news.parquet",
        ["--text-template", "{title}\n\n{text}"],
    );
    assert_code(&o, 0);
    let o = embedflow_env(
        d,
        &[
            "sql",
            "--table",
            "news=news.parquet",
            "--model",
            minilm().to_str().unwrap(),
            "--format",
            "csv",
            "SELECT article_id, title, cosine_similarity(embedding, embed('North Korea missile tests and sanctions')) AS score \
             FROM news ORDER BY score DESC LIMIT 10",
        ],
        &[("RUST_LOG", "embedflow=info")],
    );
    assert_code(&o, 0);
    let rows = csv_rows(&o);
    println!("{}", stdout(&o));
    let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    // Read and checked by hand: the articles about North Korea's missiles
    // and the sanctions over them.
    for want in [170, 2432, 3004] {
        assert!(ids.contains(&want), "{want} not in the top 10: {ids:?}");
    }
    // The literal was embedded once for the whole query, not once per row.
    let log = stderr(&o);
    let calls: Vec<&str> = log.lines().filter(|l| l.contains("embed()")).collect();
    assert_eq!(calls.len(), 1, "{log}");
    assert!(calls[0].contains("texts=1"), "{}", calls[0]);

    // embed() over a column gives the pipeline's vectors.
    let o = embedflow(
        d,
        &[
            "embed",
            news.to_str().unwrap(),
            "titles.parquet",
            "--model",
            minilm().to_str().unwrap(),
            "--text-column",
            "title",
            "--chunking",
            "none",
            "--on-empty",
            "embed",
            "--columns",
            "article_id,title",
        ],
    );
    assert_code(&o, 0);
    let o = embedflow(
        d,
        &[
            "sql",
            "--table",
            "t=titles.parquet",
            "--model",
            minilm().to_str().unwrap(),
            "--format",
            "csv",
            "SELECT min(cosine_similarity(embed(title), embedding)) AS worst, count(*) AS n FROM t",
        ],
    );
    let r = &csv_rows(&o)[0];
    assert!(num(&r[0]).unwrap() > 0.99999, "{r:?}");
    assert_eq!(r[1], "295");
}

#[test]
fn semantic_search_over_all_news_articles() {
    // All 3,824 articles of ../shared/data/news_articles.parquet, by title
    // (short texts keep the debug-build suite quick).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let news = shared().join("data/news_articles.parquet");
    let o = embed_articles(d, &news, "titles.parquet", ["--text-column", "title"]);
    // 60 articles have no title: skipped and counted (exit code 2).
    assert_code(&o, 2);
    assert!(stdout(&o).contains("rows skipped     60"), "{}", stdout(&o));
    // Read and checked by hand: each id's title is about the query's topic.
    for (query, want) in [
        (
            // "US Federal Reserve System raises base interest rate to
            // 0.75-1%", "US raises benchmark interest rate by 0.25%", "Fed
            // hikes interest rates as inflation picks up", "Fed raises rate
            // and sees more hikes as US economy improves"
            "central bank raises interest rates",
            [2462, 2457, 2476, 2422],
        ),
        (
            // "North Korea launches ballistic missile test", "North Korea
            // conducts another missile engine test, US officials say", "N
            // Korea declares ballistic missile test 'success'", "UN Security
            // Council to discuss North Korean missile test"
            "North Korea missile tests",
            [982, 3423, 1049, 1082],
        ),
        (
            // "Brexit bill: Parliament clears way for talks with EU",
            // "British government takes next steps towards Brexit", "UK
            // moves closer to triggering Brexit", "Brexit: UK sets out plans
            // to replace all EU laws"
            "Brexit negotiations between Britain and the EU",
            [2259, 3800, 2211, 3754],
        ),
    ] {
        let o = embedflow(
            d,
            &[
                "sql",
                "--table",
                "news=titles.parquet",
                "--model",
                minilm().to_str().unwrap(),
                "--format",
                "csv",
                &format!(
                    "SELECT article_id, title, cosine_similarity(embedding, embed('{query}')) AS score \
                     FROM news ORDER BY score DESC LIMIT 10"
                ),
            ],
        );
        let rows = csv_rows(&o);
        assert_eq!(rows.len(), 10);
        let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        for w in want {
            assert!(
                ids.contains(&w),
                "{query}: {w} not in the top 10:\n{}",
                stdout(&o)
            );
        }
    }
}

#[test]
fn interactive_prompt_runs_statements_and_keeps_history() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    vectors_table(&d.join("v.parquet"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(d)
        .args(["sql", "--table", "v=v.parquet", "--format", "csv"])
        .env("EMBEDFLOW_HOME", d.join("home"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT 1 AS one;\nSELECT vector_dims(a) AS n\n  FROM v WHERE id = 0;\nSELECT nope FROM v;\n\\q\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "one\n1\nn\n3");
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    let history = std::fs::read_to_string(d.join("home/sql_history")).unwrap();
    assert!(history.contains("SELECT 1 AS one;"), "{history}");
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    use std::io::BufRead;
    // `embedflow sql … | head -1`: the reader goes away after one line.
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(dir.path())
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT value FROM generate_series(1, 300000)",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "value");
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 0);
    assert_eq!(stderr(&o), "");
}
