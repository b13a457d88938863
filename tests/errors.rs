//! Bad input: a clear message naming file, row, column or field, exit code 1,
//! and nothing left behind that looks like an output.

use crate::util::*;

#[test]
fn missing_column_is_named_with_the_columns_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a")]);
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "body",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: input in.parquet: no column 'body'; the columns are: id, text"
    );
}

#[test]
fn wrong_column_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a")]);
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "id",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: input in.parquet: column 'id' has type Int64; expected a string column (utf8)"
    );
}

#[test]
fn corrupt_parquet_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.parquet"),
        b"this is not parquet at all",
    )
    .unwrap();
    let e = fails(
        dir.path(),
        &[
            "embed",
            "bad.parquet",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
        ],
    );
    assert!(
        e.starts_with("error: input bad.parquet: not a readable Parquet file: "),
        "{e}"
    );
}

#[test]
fn truncated_parquet_fails_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..3000).map(|i| format!("text {i}")).collect();
    let refs: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    write_texts_parquet(&dir.path().join("good.parquet"), &refs);
    let bytes = std::fs::read(dir.path().join("good.parquet")).unwrap();
    // Keep the footer, damage the data pages.
    let mut bad = bytes.clone();
    for b in &mut bad[8..bytes.len() / 2] {
        *b = 0xff;
    }
    std::fs::write(dir.path().join("bad.parquet"), &bad).unwrap();
    let e = fails(
        dir.path(),
        &[
            "embed",
            "bad.parquet",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
        ],
    );
    assert!(e.starts_with("error: input bad.parquet: "), "{e}");
}

#[test]
fn invalid_utf8_in_csv_names_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"id,text\n1,fine\n2,also fine\n3,bad \xff\xfe bytes\n4,after\n".to_vec();
    data.extend_from_slice(b"5,last\n");
    std::fs::write(dir.path().join("in.csv"), data).unwrap();
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.csv",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
            "--csv-no-infer",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: input in.csv: row 3, column 'text': invalid UTF-8 (embedflow reads CSV as UTF-8; re-encode the file)"
    );
}

#[test]
fn invalid_utf8_past_the_inference_window_names_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"id,text,tag\n".to_vec();
    for i in 1..=1500 {
        if i == 1234 {
            data.extend_from_slice(b"1234,bad \xc3\x28 bytes,x\n");
        } else {
            data.extend_from_slice(format!("{i},text number {i},x\n").as_bytes());
        }
    }
    std::fs::write(dir.path().join("in.csv"), data).unwrap();
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.csv",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: input in.csv: row 1234, column 'text': invalid UTF-8 (embedflow reads CSV as UTF-8; re-encode the file)"
    );
}

#[test]
fn on_empty_fail_names_file_row_and_id() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(
        &dir.path().join("in.parquet"),
        &[Some("a"), Some("b"), Some(""), Some("d")],
    );
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
            "--id-column",
            "id",
            "--on-empty",
            "fail",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: input in.parquet: row 3 (id = 2): the text (text) is empty, and embed.on_empty = \"fail\"; set it to \"skip\" or \"embed\" to go on"
    );
}

#[test]
fn model_folder_missing_a_file_says_which() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a")]);
    let m = dir.path().join("model");
    std::fs::create_dir(&m).unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap();
        if f.path().is_file() && f.file_name() != "tokenizer.json" {
            std::fs::copy(f.path(), m.join(f.file_name())).unwrap();
        }
    }
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            "model",
            "--text-column",
            "text",
        ],
    );
    assert_eq!(e.trim(), "error: model model: missing tokenizer.json");
    std::fs::copy(tiny().join("tokenizer.json"), m.join("tokenizer.json")).unwrap();
    // modules.json names 1_Pooling, which this copy lacks.
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            "model",
            "--text-column",
            "text",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: model model: missing 1_Pooling/config.json (modules.json names a Pooling module); or set model.pooling"
    );
    std::fs::remove_file(m.join("model.onnx")).unwrap();
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            "model",
            "--text-column",
            "text",
            "--pooling",
            "mean",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: model model: missing model.onnx (looked for model.onnx, onnx/model.onnx and a CLIP folder's text_model.onnx)"
    );
}

#[test]
fn weightedmean_pooling_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a")]);
    let m = dir.path().join("model");
    std::fs::create_dir_all(m.join("1_Pooling")).unwrap();
    for f in [
        "model.onnx",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "config.json",
    ] {
        std::fs::copy(tiny().join(f), m.join(f)).unwrap();
    }
    std::fs::write(
        m.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_weightedmean_tokens": true}"#,
    )
    .unwrap();
    let e = fails(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            "model",
            "--text-column",
            "text",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: model model: 1_Pooling/config.json: \"weightedmean\" pooling is not supported (it weights tokens by position, which embedflow does not implement); choose one of cls, mean, max, mean_sqrt_len, lasttoken"
    );
}

#[test]
fn missing_onnx_runtime_says_run_setup() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a")]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(dir.path())
        .env(
            "EMBEDFLOW_ORT_LIB",
            dir.path().join("nowhere/libonnxruntime.so"),
        )
        .args([
            "embed",
            "in.parquet",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
        ])
        .output()
        .unwrap();
    assert_code(&o, 1);
    let e = stderr(&o);
    assert_eq!(
        e.trim(),
        format!(
            "error: ONNX Runtime: library not found at {}: run scripts/setup (or point EMBEDFLOW_ORT_LIB at libonnxruntime.so.1.31.1)",
            dir.path().join("nowhere/libonnxruntime.so").display()
        )
    );
    assert!(!dir.path().join("o.parquet").exists());
}

#[test]
fn missing_input_and_model_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let e = fails(
        dir.path(),
        &[
            "embed",
            "nope.parquet",
            "o.parquet",
            "--model",
            "no-such-model",
            "--text-column",
            "text",
        ],
    );
    assert!(e.starts_with("error: command line: 2 problems\n  - input nope.parquet: no such file or directory\n  - model no-such-model: not a folder here, nor a model under "), "{e}");
}

#[test]
fn directory_without_inputs_says_what_it_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    std::fs::write(dir.path().join("empty/readme.md"), "no data here").unwrap();
    let e = fails(
        dir.path(),
        &[
            "embed",
            "empty",
            "o.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
        ],
    );
    assert_eq!(
        e.trim(),
        "error: input empty: the directory holds no Parquet (.parquet) or CSV (.csv, .tsv) file; it holds empty/readme.md"
    );
}

#[test]
fn failed_run_keeps_the_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(&dir.path().join("in.parquet"), &[Some("a"), Some("")]);
    let ok = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "out.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
            "--on-empty",
            "embed",
        ],
    );
    assert_code(&ok, 0);
    let before = std::fs::read(dir.path().join("out.parquet")).unwrap();
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "out.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
            "--on-empty",
            "fail",
        ],
    );
    assert_code(&o, 1);
    assert_eq!(
        std::fs::read(dir.path().join("out.parquet")).unwrap(),
        before,
        "the old output is untouched"
    );
    assert_eq!(listing(dir.path()), ["in.parquet", "out.parquet"]);
    // --no-overwrite refuses to replace it.
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "out.parquet",
            "--model",
            &tiny_s(),
            "--text-column",
            "text",
            "--no-overwrite",
        ],
    );
    assert_code(&o, 1);
    assert_eq!(
        stderr(&o).trim(),
        "error: output out.parquet: already exists and output.overwrite = false"
    );
}
