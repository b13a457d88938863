//! Inputs, outputs and models on a real S3 server (s3s-fs on 127.0.0.1,
//! SigV4 enforced), started by scripts/test. Each test uses its own buckets.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::util::s3::{self, Proxy};
use crate::util::*;

/// Writes `rows` rows (id, text, and an optional `payload` column of
/// `payload_bytes` distinct bytes per row) in row groups of `group_rows`.
fn write_parquet(path: &Path, rows: usize, group_rows: usize, payload_bytes: usize) {
    let texts: Vec<String> = reference_texts()
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .collect();
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ];
    if payload_bytes > 0 {
        fields.push(Field::new("payload", DataType::Utf8, false));
    }
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .build();
    let f = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(f, Arc::clone(&schema), Some(props)).unwrap();
    for start in (0..rows).step_by(256) {
        let end = (start + 256).min(rows);
        let mut cols: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(start as i64..end as i64)),
            Arc::new(StringArray::from_iter_values(
                (start..end).map(|i| texts[i % texts.len()].clone()),
            )),
        ];
        if payload_bytes > 0 {
            cols.push(Arc::new(StringArray::from_iter_values((start..end).map(
                |i| {
                    let unit = format!("{i:09}-");
                    unit.repeat(payload_bytes / unit.len() + 1)[..payload_bytes].to_string()
                },
            ))));
        }
        w.write(&RecordBatch::try_new(Arc::clone(&schema), cols).unwrap())
            .unwrap();
    }
    w.close().unwrap();
}

/// [`util::embed_args`](crate::util::embed_args), unchunked.
fn s3_embed_args<'a>(input: &'a str, output: &'a str, model: &'a str) -> Vec<&'a str> {
    let mut args = embed_args(model, input, output);
    args.extend(["--chunking", "none"]);
    args
}

/// The secret must never reach the user's screen or the output file.
fn assert_no_secret(server: &s3::S3, o: &std::process::Output) {
    let secret = &server.secret;
    assert!(
        !stdout(o).contains(secret.as_str()) && !stderr(o).contains(secret.as_str()),
        "the secret key leaked into the output:\n{}{}",
        stdout(o),
        stderr(o)
    );
}

#[test]
fn quickstart_job_on_s3_matches_the_local_run() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let data = server.bucket("qs-data");
    let models = server.bucket("qs-models");
    server.put_file(
        &data,
        "news/news.parquet",
        &root().join("sample_data/news.parquet"),
    );
    server.put_dir(&models, "all-MiniLM-L6-v2", &minilm());
    let job = root().join("jobs/quickstart.toml");
    let job = job.to_str().unwrap();
    // A slice of the quickstart, to keep the debug-build test short.
    let filter = "input.filter=article_id < 400";

    let minilm_s = format!("model.path={}", minilm().display());
    let local = server.embedflow(
        dir.path(),
        &[
            "run",
            job,
            "--set",
            &format!(
                "input.path={}",
                root().join("sample_data/news.parquet").display()
            ),
            "--set",
            &minilm_s,
            "--set",
            "output.path=local/chunks.parquet",
            "--set",
            "output.documents_path=local/docs.parquet",
            "--set",
            filter,
        ],
        &[],
    );
    assert_code(&local, 0);
    let remote = server.embedflow(
        dir.path(),
        &[
            "run",
            job,
            "--set",
            "input.path=s3://qs-data/news/",
            "--set",
            "model.path=s3://qs-models/all-MiniLM-L6-v2/",
            "--set",
            "output.path=s3://qs-data/out/chunks.parquet",
            "--set",
            "output.documents_path=s3://qs-data/out/docs.parquet",
            "--set",
            filter,
        ],
        &[],
    );
    assert_code(&remote, 0);
    assert_no_secret(&server, &remote);

    for (local_file, key) in [
        ("local/chunks.parquet", "out/chunks.parquet"),
        ("local/docs.parquet", "out/docs.parquet"),
    ] {
        let (a, _) = read_parquet(&dir.path().join(local_file));
        let (b, kv) = server.read_parquet(&data, key, dir.path());
        assert!(a.num_rows() > 20, "{local_file}: {} rows", a.num_rows());
        assert_eq!(a.schema(), b.schema());
        // Every column equal, vectors bit for bit.
        assert_eq!(a, b, "{key} differs from the local run");
        let bits = |batch: &RecordBatch| -> Vec<u32> {
            vectors(batch, "embedding")
                .concat()
                .iter()
                .map(|f| f.to_bits())
                .collect()
        };
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(meta(&kv, "embedflow.model"), "all-MiniLM-L6-v2");
        for (_, v) in &kv {
            assert!(!v.contains(&server.secret), "secret in metadata");
        }
    }
    // Nothing but the two outputs was left in the bucket.
    assert_eq!(
        server.keys(&data),
        vec![
            "news/news.parquet",
            "out/chunks.parquet",
            "out/docs.parquet"
        ]
    );
}

#[test]
fn prefixes_and_globs_read_every_file_in_key_order() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("multi-file");
    for (i, rows) in [(0, 30), (1, 20), (2, 25)] {
        let p = dir.path().join(format!("p{i}.parquet"));
        write_parquet(&p, rows, 10, 0);
        server.put_file(&b, &format!("in/part-{i}.parquet"), &p);
    }
    // Not inputs: a hidden file, another format, a sibling prefix.
    server.put(&b, "in/.part-9.parquet", b"not parquet".to_vec());
    server.put(&b, "in/readme.md", b"notes".to_vec());
    server.put(&b, "in2/part-0.parquet", b"not parquet".to_vec());
    let model = tiny_s();

    for (input, rows) in [
        ("s3://multi-file/in/", 75),
        ("s3://multi-file/in", 75),
        ("s3://multi-file/in/part-[02].parquet", 55),
    ] {
        let o = server.embedflow(
            dir.path(),
            &s3_embed_args(input, "s3://multi-file/out/e.parquet", &model),
            &[],
        );
        assert_code(&o, 0);
        let (batch, _) = server.read_parquet(&b, "out/e.parquet", dir.path());
        assert_eq!(batch.num_rows(), rows, "{input}");
        let ids = ints(&batch, "id");
        // Files in key order, rows in file order.
        assert_eq!(&ids[..30], &(0..30).collect::<Vec<i64>>()[..], "{input}");
    }

    // CSV streams from S3 too.
    let csv = root().join("sample_data/health_tweets.csv");
    server.put_file(&b, "csv/tweets.csv", &csv);
    let o = server.embedflow(
        dir.path(),
        &[
            "embed",
            "s3://multi-file/csv/",
            "tweets.parquet",
            "--model",
            &model,
            "--text-column",
            "text",
        ],
        &[],
    );
    assert_code(&o, 0);
    let (batch, _) = read_parquet(&dir.path().join("tweets.parquet"));
    assert_eq!(batch.num_rows(), 300);
}

#[test]
fn large_output_is_one_multipart_upload() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("big-output");
    // 1,800 rows × 64 KB of distinct payload: ~118 MB uncompressed.
    write_parquet(&dir.path().join("in.parquet"), 1800, 200, 64 << 10);
    let model = tiny_s();
    let mut args = s3_embed_args("in.parquet", "s3://big-output/big.parquet", &model);
    args.extend(["--compression", "none", "--max-seq-length", "16"]);
    let o = server.embedflow(dir.path(), &args, &[]);
    assert_code(&o, 0);

    let head = server.head(&b, "big.parquet").expect("output object");
    assert!(head.size > 100_000_000, "output is {} bytes", head.size);
    // S3 gives a multipart object the ETag "<md5 of part md5s>-<parts>".
    let etag = head.e_tag.unwrap();
    let parts: usize = etag
        .trim_matches('"')
        .rsplit_once('-')
        .map(|(_, n)| n.parse().unwrap())
        .unwrap_or_else(|| panic!("ETag {etag} is not a multipart ETag"));
    assert!(parts >= 10, "{parts} parts");
    let (batch, _) = server.read_parquet(&b, "big.parquet", dir.path());
    assert_eq!(batch.num_rows(), 1800);
    let payload = strings(&batch, "payload");
    assert!(payload[1799].starts_with("000001799-"));
    assert_eq!(payload[1799].len(), 64 << 10);
    assert_eq!(server.keys(&b), vec!["big.parquet"]);
}

#[test]
fn parquet_projection_reads_only_the_needed_bytes() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("projection");
    // A small text column beside a 6 MB payload nobody asks for.
    let file = dir.path().join("in.parquet");
    write_parquet(&file, 400, 100, 16 << 10);
    let size = std::fs::metadata(&file).unwrap().len();
    server.put_file(&b, "in.parquet", &file);
    let model = tiny_s();

    let run = |columns: &str| {
        let proxy = Proxy::start(&server.endpoint, None);
        let mut args = s3_embed_args("s3://projection/in.parquet", "out.parquet", &model);
        args.extend(["--columns", columns]);
        let o = server.embedflow(
            dir.path(),
            &args,
            &[("AWS_ENDPOINT_URL", proxy.endpoint.as_str())],
        );
        assert_code(&o, 0);
        proxy.bytes_down()
    };
    let projected = run("id");
    let everything = run("id,payload");
    println!("file {size} B; GET bytes: id+text {projected}, all columns {everything}");
    assert!(
        projected * 10 < size,
        "read {projected} bytes of a {size}-byte file for two small columns"
    );
    assert!(everything > size, "read {everything} of {size} bytes");
}

#[test]
fn wrong_credentials_are_access_denied_and_say_what_to_check() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("creds");
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a")]);
    server.put_file(&b, "in.parquet", &dir.path().join("in.parquet"));
    let model = tiny_s();
    let args = s3_embed_args("s3://creds/in.parquet", "out.parquet", &model);
    let wrong_secret = format!("{}x", server.secret);
    for (env, said) in [
        (
            [("AWS_SECRET_ACCESS_KEY", wrong_secret.as_str())],
            "SignatureDoesNotMatch",
        ),
        (
            [("AWS_ACCESS_KEY_ID", "nobody-we-know")],
            // s3s' code for an unknown key (AWS says InvalidAccessKeyId).
            "NotSignedUp",
        ),
    ] {
        let o = server.embedflow(dir.path(), &args, &env);
        assert_code(&o, 1);
        let e = stderr(&o);
        assert!(
            e.contains("access denied for s3://creds/in.parquet: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"),
            "{e}"
        );
        assert!(e.contains(said), "{e}");
        assert!(
            !e.contains(&server.secret) && !e.contains(&wrong_secret),
            "{e}"
        );
        assert!(!dir.path().join("out.parquet").exists());
    }
}

#[test]
fn missing_buckets_and_keys_are_named() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("present");
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a")]);
    server.put_file(&b, "in.parquet", &dir.path().join("in.parquet"));
    let model = tiny_s();
    let endpoint = &server.endpoint;
    let cases = [
        (
            s3_embed_args("s3://absent-bucket/in.parquet", "o.parquet", &model),
            format!("error: input s3://absent-bucket/in.parquet: the bucket 'absent-bucket' does not exist at {endpoint}"),
        ),
        (
            s3_embed_args("s3://present/nothing.parquet", "o.parquet", &model),
            "error: input s3://present/nothing.parquet: no such key, and no .parquet or .parq object under it as a prefix".to_string(),
        ),
        (
            s3_embed_args("s3://present/in.parquet", "s3://absent-bucket/o.parquet", &model),
            format!("error: output s3://absent-bucket/o.parquet: the bucket 'absent-bucket' does not exist at {endpoint}"),
        ),
        (
            s3_embed_args("s3://present/in.parquet", "o.parquet", "s3://present/models/none/"),
            "error: model s3://present/models/none/: no objects under this prefix (expected model.onnx, tokenizer.json and the sentence-transformers configs)".to_string(),
        ),
    ];
    for (args, want) in cases {
        let o = server.embedflow(dir.path(), &args, &[]);
        assert_code(&o, 1);
        assert_eq!(stderr(&o).trim(), want, "{args:?}");
        assert_no_secret(&server, &o);
    }
    assert!(!dir.path().join("o.parquet").exists());
    assert_eq!(server.keys(&b), vec!["in.parquet"]);
}

#[test]
fn unreachable_endpoint_names_it_and_the_retries_spent() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let model = tiny_s();
    let mut args = s3_embed_args("s3://any-bucket/in.parquet", "o.parquet", &model);
    args.extend([
        "--set",
        "s3.max_retries=2",
        "--set",
        "s3.retry_timeout_secs=20",
    ]);
    let o = server.embedflow(dir.path(), &args, &[("AWS_ENDPOINT_URL", &endpoint)]);
    assert_code(&o, 1);
    let e = stderr(&o);
    println!("{e}");
    assert!(
        e.contains(&format!(
            "cannot reach the S3 endpoint {endpoint} (Connection refused"
        )) && e
            .contains("gave up after 2 retries (s3.max_retries = 2, s3.retry_timeout_secs = 20)"),
        "{e}"
    );
}

#[test]
fn server_gone_mid_run_fails_cleanly_and_commits_nothing() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("mid-run");
    // 3,000 rows in row groups of 100 (~2.6 MB with the payload), read as
    // the pipeline needs them.
    let file = dir.path().join("in.parquet");
    write_parquet(&file, 3000, 100, 800);
    let size = std::fs::metadata(&file).unwrap().len();
    server.put_file(&b, "in.parquet", &file);
    // An earlier output, which a failed run must leave as it was.
    server.put(&b, "out.parquet", b"previous".to_vec());
    let proxy = Proxy::start(&server.endpoint, Some(size / 2));
    let model = tiny_s();
    let mut args = s3_embed_args(
        "s3://mid-run/in.parquet",
        "s3://mid-run/out.parquet",
        &model,
    );
    args.extend([
        "--set",
        "s3.max_retries=2",
        "--set",
        "s3.retry_timeout_secs=10",
    ]);
    let o = server.embedflow(
        dir.path(),
        &args,
        &[("AWS_ENDPOINT_URL", proxy.endpoint.as_str())],
    );
    assert!(proxy.was_cut(), "the run finished before the cut");
    assert_code(&o, 1);
    let e = stderr(&o);
    println!("{e}");
    assert!(
        e.contains("error: input s3://mid-run/in.parquet: reading failed after row ")
            && e.contains(&format!("cannot reach the S3 endpoint {}", proxy.endpoint))
            && e.contains("gave up after 2 retries"),
        "{e}"
    );
    let after_row: u64 = e
        .split("after row ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{e}"));
    assert!(after_row > 0 && after_row < 3000, "{e}");
    assert_no_secret(&server, &o);
    // The earlier output is untouched and nothing else was written.
    assert_eq!(server.get(&b, "out.parquet").unwrap().as_ref(), b"previous");
    assert_eq!(server.keys(&b), vec!["in.parquet", "out.parquet"]);
}

#[test]
fn model_folder_on_s3_is_cached_and_refetched_when_it_changes() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("model-cache");
    server.put_dir(&b, "m/tiny-bert-random-st", &tiny());
    write_texts_parquet(
        &dir.path().join("in.parquet"),
        &[Some("hello"), Some("world")],
    );
    let args = s3_embed_args(
        "in.parquet",
        "out.parquet",
        "s3://model-cache/m/tiny-bert-random-st/",
    );
    let log = [("RUST_LOG", "embedflow=info")];
    let first = server.embedflow(dir.path(), &args, &log);
    assert_code(&first, 0);
    assert!(
        stderr(&first).contains("downloading the model folder"),
        "{}",
        stderr(&first)
    );
    let cache = dir.path().join(".embedflow-home/cache/models");
    assert_eq!(listing(&cache).len(), 1);
    let (one, kv) = read_parquet(&dir.path().join("out.parquet"));
    assert_eq!(meta(&kv, "embedflow.model"), "tiny-bert-random-st");

    let second = server.embedflow(dir.path(), &args, &log);
    assert_code(&second, 0);
    let e = stderr(&second);
    assert!(
        e.contains("using the cached copy") && !e.contains("downloading"),
        "{e}"
    );
    assert_eq!(listing(&cache).len(), 1);
    let (two, _) = read_parquet(&dir.path().join("out.parquet"));
    assert_eq!(one, two);

    // A changed file (a smaller max_seq_length) is a new copy, and it is used.
    let cfg = std::fs::read_to_string(tiny().join("sentence_bert_config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["max_seq_length"] = serde_json::json!(3);
    server.put(
        &b,
        "m/tiny-bert-random-st/sentence_bert_config.json",
        serde_json::to_vec(&v).unwrap(),
    );
    let third = server.embedflow(dir.path(), &args, &log);
    assert_code(&third, 0);
    assert!(stderr(&third).contains("downloading the model folder"));
    assert_eq!(listing(&cache).len(), 2);
    let (_, kv) = read_parquet(&dir.path().join("out.parquet"));
    assert_eq!(meta(&kv, "embedflow.max_seq_length"), "3");
}

#[test]
fn secret_stays_out_of_logs_even_at_trace_level() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("no-leak");
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a"), Some("b")]);
    server.put_file(&b, "in.parquet", &dir.path().join("in.parquet"));
    server.put_dir(&b, "model", &tiny());
    let o = server.embedflow(
        dir.path(),
        &s3_embed_args(
            "s3://no-leak/in.parquet",
            "s3://no-leak/out.parquet",
            "s3://no-leak/model/",
        ),
        &[("RUST_LOG", "trace")],
    );
    assert_code(&o, 0);
    assert!(stderr(&o).len() > 1000, "trace logging is on");
    assert_no_secret(&server, &o);
    let out = server.get(&b, "out.parquet").unwrap();
    let hay = String::from_utf8_lossy(&out);
    assert!(!hay.contains(&server.secret));
    assert!(!hay.contains(&server.access_key));
}

#[test]
fn credentials_in_a_job_file_are_refused_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        r#"
[input]
path = "s3://b/in.parquet"
text_column = "text"
[model]
path = "m"
[output]
path = "o.parquet"
[s3]
endpoint = "127.0.0.1:9000"
secret_access_key = "hunter2-very-secret"
"#,
    )
    .unwrap();
    let o = embedflow(dir.path(), &["validate", "job.toml"]);
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("s3.secret_access_key: credentials do not belong in a job file; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment")
            && e.contains("s3.endpoint: must start with http:// or https://, found \"127.0.0.1:9000\""),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
}

/// An S3 output that is the input, or that the input would read back,
/// however spelled (`s3a://`, a prefix with or without its slash, a glob):
/// refused before anything is written, the input untouched.
#[test]
fn an_s3_output_that_is_or_feeds_the_input_is_refused() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let b = server.bucket("same-key");
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a"), Some("b")]);
    server.put_file(&b, "in/in.parquet", &dir.path().join("in.parquet"));
    let before = server.get(&b, "in/in.parquet").unwrap();
    let model = tiny_s();
    for (input, output, expect) in [
        (
            "s3://same-key/in/in.parquet",
            "s3a://same-key/in/in.parquet",
            "spelled another way",
        ),
        (
            "s3://same-key/in/",
            "s3://same-key/in/in.parquet",
            "spelled another way",
        ),
        (
            "s3://same-key/in",
            "s3://same-key/in/out.parquet",
            "is inside the input directory s3://same-key/in",
        ),
        (
            "s3://same-key/in/*.parquet",
            "s3://same-key/in/new.parquet",
            "matches the input pattern s3://same-key/in/*.parquet",
        ),
    ] {
        let o = server.embedflow(dir.path(), &s3_embed_args(input, output, &model), &[]);
        assert_code(&o, 1);
        assert!(
            stderr(&o).contains(expect),
            "{input} -> {output}: {}",
            stderr(&o)
        );
        assert_eq!(server.get(&b, "in/in.parquet").unwrap(), before);
        assert_no_secret(&server, &o);
    }
    assert_eq!(server.keys(&b), vec!["in/in.parquet"]);
}
