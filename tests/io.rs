//! Inputs (Parquet, CSV, globs, directories, templates, filters, passthrough)
//! and the output file (schema, rows, lineage metadata, atomic commit).

use arrow::datatypes::DataType;

use crate::util::*;

fn sample(name: &str) -> String {
    root()
        .join("sample_data")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn parquet_with_template_passthrough_and_documents() {
    let dir = tempfile::tempdir().unwrap();
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            &sample("news.parquet"),
            "out/news.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-template",
            "{title}\n\n{text}",
            "--id-column",
            "article_id",
            "--columns",
            "outlet,title",
            "--documents",
            "out/docs.parquet",
            "--keep-chunk-text",
        ],
    );
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("wrote out/news.parquet ("), "{out}");
    assert!(out.contains("rows read        295"), "{out}");
    let (batch, kv) = read_parquet(&dir.path().join("out/news.parquet"));
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "article_id",
            "outlet",
            "title",
            "chunk_index",
            "chunk_start",
            "chunk_end",
            "chunk_text",
            "embedding"
        ]
    );
    match schema.field_with_name("embedding").unwrap().data_type() {
        DataType::FixedSizeList(item, 32) => assert_eq!(item.data_type(), &DataType::Float32),
        other => panic!("embedding is {other}"),
    }
    // The template: each document's first chunk starts with its title.
    let titles = strings(&batch, "title");
    let texts = strings(&batch, "chunk_text");
    let idx = ints(&batch, "chunk_index");
    for r in 0..batch.num_rows() {
        if idx[r] == 0 {
            assert!(
                texts[r].starts_with(&format!("{}\n\n", titles[r])),
                "row {r}"
            );
        }
    }
    assert!(
        batch.num_rows() > 295 * 2,
        "news articles need several chunks: {}",
        batch.num_rows()
    );
    for key in [
        "embedflow.version",
        "embedflow.model",
        "embedflow.model_sha256",
        "embedflow.dim",
        "embedflow.pooling",
        "embedflow.normalize",
        "embedflow.max_seq_length",
        "embedflow.prompt",
        "embedflow.chunking",
        "embedflow.chunk_max_tokens",
        "embedflow.chunk_overlap",
        "embedflow.execution_provider",
        "embedflow.text",
    ] {
        meta(&kv, key);
    }
    assert_eq!(meta(&kv, "embedflow.model"), "tiny-bert-random-st");
    assert_eq!(meta(&kv, "embedflow.dim"), "32");
    assert_eq!(meta(&kv, "embedflow.pooling"), "mean");
    assert_eq!(meta(&kv, "embedflow.normalize"), "true");
    assert_eq!(meta(&kv, "embedflow.text"), "{title}\n\n{text}");
    assert_eq!(
        meta(&kv, "embedflow.execution_provider"),
        "CPUExecutionProvider"
    );
    let (docs, _) = read_parquet(&dir.path().join("out/docs.parquet"));
    assert_eq!(docs.num_rows(), 295);
    // Nothing but the two outputs is left in the output folder.
    assert_eq!(
        listing(&dir.path().join("out")),
        ["docs.parquet", "news.parquet"]
    );
}

#[test]
fn csv_with_types_inferred_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            &sample("health_tweets.csv"),
            "a.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "text",
            "--chunking",
            "none",
        ],
    );
    assert_code(&o, 0);
    let (a, _) = read_parquet(&dir.path().join("a.parquet"));
    assert_eq!(a.num_rows(), 300);
    assert_eq!(
        a.schema().field_with_name("tweet_id").unwrap().data_type(),
        &DataType::Int64
    );
    assert!(
        a.column_by_name("chunk_index").is_none(),
        "no chunk columns without chunking"
    );
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            &sample("health_tweets.csv"),
            "b.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "text",
            "--chunking",
            "none",
            "--csv-no-infer",
        ],
    );
    assert_code(&o, 0);
    let (b, _) = read_parquet(&dir.path().join("b.parquet"));
    assert_eq!(
        b.schema().field_with_name("tweet_id").unwrap().data_type(),
        &DataType::Utf8
    );
    assert_eq!(strings(&a, "tweet_id"), strings(&b, "tweet_id"));
    assert_eq!(
        vectors(&a, "embedding"),
        vectors(&b, "embedding"),
        "same texts, same vectors"
    );
}

#[test]
fn csv_dialect_options() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("semi.csv"),
        "id;body\n1;'first; with a delimiter inside'\n2;'second ''quoted'' word'\n3;third\n",
    )
    .unwrap();
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "semi.csv",
            "o.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "body",
            "--csv-delimiter",
            ";",
            "--csv-quote",
            "'",
            "--keep-chunk-text",
            "--set",
            "chunking.overlap=0",
        ],
    );
    assert_code(&o, 0);
    let (b, _) = read_parquet(&dir.path().join("o.parquet"));
    assert_eq!(
        strings(&b, "chunk_text"),
        [
            "first; with a delimiter inside",
            "second 'quoted' word",
            "third"
        ]
    );
}

#[test]
fn globs_and_directories_read_every_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("parts");
    std::fs::create_dir(&d).unwrap();
    write_texts_parquet(
        &d.join("a.parquet"),
        &[Some("alpha one"), Some("alpha two")],
    );
    write_texts_parquet(&d.join("b.parquet"), &[Some("beta one")]);
    std::fs::write(d.join("notes.txt"), "not an input").unwrap();
    for input in ["parts/*.parquet", "parts", "parts/"] {
        let o = embedflow(
            dir.path(),
            &[
                "embed",
                input,
                "o.parquet",
                "--model",
                tiny().to_str().unwrap(),
                "--text-column",
                "text",
                "--keep-chunk-text",
            ],
        );
        assert_code(&o, 0);
        let (b, _) = read_parquet(&dir.path().join("o.parquet"));
        assert_eq!(
            strings(&b, "chunk_text"),
            ["alpha one", "alpha two", "beta one"],
            "{input}"
        );
    }
}

#[test]
fn filter_selects_rows_with_sql() {
    let dir = tempfile::tempdir().unwrap();
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            &sample("news.parquet"),
            "o.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "title",
            "--chunking",
            "none",
            "--columns",
            "article_id,outlet",
            "--filter",
            "outlet = 'bbc' AND publish_date >= '2017-01-01'",
        ],
    );
    assert_code(&o, 0);
    let (b, kv) = read_parquet(&dir.path().join("o.parquet"));
    assert_eq!(b.num_rows(), 32);
    assert!(strings(&b, "outlet").iter().all(|o| o == "bbc"));
    assert_eq!(
        meta(&kv, "embedflow.filter"),
        "outlet = 'bbc' AND publish_date >= '2017-01-01'"
    );
    assert!(
        b.column_by_name("publish_date").is_none(),
        "filter columns are read, not passed through"
    );
}

#[test]
fn empty_text_is_skipped_counted_and_exit_code_is_2() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(
        &dir.path().join("in.parquet"),
        &[Some("one"), None, Some("  "), Some("four")],
    );
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "text",
        ],
    );
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("rows skipped     2 (empty or null text)"),
        "{}",
        stdout(&o)
    );
    let (b, _) = read_parquet(&dir.path().join("o.parquet"));
    assert_eq!(ints(&b, "id"), [0, 3]);
    // on_empty = embed keeps every row.
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "text",
            "--on-empty",
            "embed",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(read_parquet(&dir.path().join("o.parquet")).0.num_rows(), 4);
}

#[test]
fn output_reads_back_as_a_fixed_size_list_for_big_inputs() {
    // More rows than one read batch, a small row group size and a prompt.
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..5000)
        .map(|i| format!("document number {i} about topic {}", i % 7))
        .collect();
    let refs: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    write_texts_parquet(&dir.path().join("in.parquet"), &refs);
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "text",
            "--row-group-size",
            "1000",
            "--prompt",
            "passage: ",
            "--compression",
            "snappy",
        ],
    );
    assert_code(&o, 0);
    let (b, kv) = read_parquet(&dir.path().join("o.parquet"));
    assert_eq!(ints(&b, "id"), (0..5000).collect::<Vec<_>>());
    assert_eq!(meta(&kv, "embedflow.prompt"), "passage: ");
    let f = std::fs::File::open(dir.path().join("o.parquet")).unwrap();
    let r = parquet::file::reader::SerializedFileReader::new(f).unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(r.metadata().num_row_groups(), 5);
    // Vectors are unit length.
    for v in vectors(&b, "embedding").iter().take(100) {
        let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5);
    }
}
