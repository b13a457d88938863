//! Model folder options: prompts, pooling and normalisation overrides.

use std::path::Path;

use crate::util::*;

/// A copy of the tiny model's folder at `dir/name`, to edit.
fn copy_tiny(dir: &Path, name: &str) -> std::path::PathBuf {
    let m = dir.join(name);
    std::fs::create_dir_all(m.join("1_Pooling")).unwrap();
    for f in [
        "model.onnx",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(tiny().join(f), m.join(f)).unwrap();
    }
    m
}

/// A copy of the tiny model with prompts in config_sentence_transformers.json.
fn model_with_prompts(dir: &Path, default_prompt: Option<&str>) -> std::path::PathBuf {
    let m = copy_tiny(dir, "model");
    let default = default_prompt
        .map(|d| format!(", \"default_prompt_name\": \"{d}\""))
        .unwrap_or_default();
    std::fs::write(
        m.join("config_sentence_transformers.json"),
        format!(r#"{{"prompts": {{"query": "query: ", "passage": "passage: "}}{default}}}"#),
    )
    .unwrap();
    m
}

fn embed(dir: &Path, model: &Path, extra: &[&str]) -> Vec<Vec<f32>> {
    let mut args = vec![
        "embed",
        "in.parquet",
        "o.parquet",
        "--model",
        model.to_str().unwrap(),
        "--text-column",
        "text",
    ];
    args.extend_from_slice(extra);
    let o = embedflow(dir, &args);
    assert_code(&o, 0);
    vectors(&read_parquet(&dir.join("o.parquet")).0, "embedding")
}

#[test]
fn named_prompts_equal_literal_prompts() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(
        &dir.path().join("in.parquet"),
        &[
            Some("how do I reset my password"),
            Some("a cat sits outside"),
        ],
    );
    let m = model_with_prompts(dir.path(), None);
    let named = embed(dir.path(), &m, &["--prompt-name", "query"]);
    let literal = embed(dir.path(), &m, &["--prompt", "query: "]);
    let none = embed(dir.path(), &m, &[]);
    assert_eq!(named, literal);
    assert!(
        cosine(&named[0], &none[0]) < 0.9999,
        "the prompt changes the vector"
    );
    let (_, kv) = read_parquet(&dir.path().join("o.parquet"));
    assert_eq!(meta(&kv, "embedflow.prompt"), "");

    // The folder's default prompt applies unless the job says otherwise.
    let dir2 = tempfile::tempdir().unwrap();
    write_texts_parquet(
        &dir2.path().join("in.parquet"),
        &[
            Some("how do I reset my password"),
            Some("a cat sits outside"),
        ],
    );
    let m2 = model_with_prompts(dir2.path(), Some("passage"));
    let default = embed(dir2.path(), &m2, &[]);
    assert_eq!(default, embed(dir2.path(), &m2, &["--prompt", "passage: "]));
    let (_, kv) = read_parquet(&dir2.path().join("o.parquet"));
    assert_eq!(meta(&kv, "embedflow.prompt"), "passage: ");

    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "x.parquet",
            "--model",
            m.to_str().unwrap(),
            "--text-column",
            "text",
            "--prompt-name",
            "search",
        ],
    );
    assert_code(&o, 1);
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "error: model {}: no prompt named 'search'; its prompts are: passage, query",
            m.display()
        )
    );
}

#[test]
fn pooling_and_normalize_overrides_are_applied_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    write_texts_parquet(
        &dir.path().join("in.parquet"),
        &[Some("one two three"), Some("four")],
    );
    let mean = embed(dir.path(), &tiny(), &[]);
    let cls = embed(
        dir.path(),
        &tiny(),
        &["--pooling", "cls", "--normalize", "false"],
    );
    let (_, kv) = read_parquet(&dir.path().join("o.parquet"));
    assert_eq!(meta(&kv, "embedflow.pooling"), "cls");
    assert_eq!(meta(&kv, "embedflow.normalize"), "false");
    assert!(cosine(&mean[0], &cls[0]) < 0.9999);
    let norm: f32 = cls[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "not normalised: {norm}");
    let max = embed(
        dir.path(),
        &tiny(),
        &["--pooling", "max", "--normalize", "false"],
    );
    let single_token_max = &max[1];
    let single_token_mean = embed(
        dir.path(),
        &tiny(),
        &["--pooling", "mean", "--normalize", "false"],
    );
    // "four" is [CLS] four [SEP]: max ≥ mean in every component.
    for (a, b) in single_token_max.iter().zip(&single_token_mean[1]) {
        assert!(a >= b);
    }
}

/// `embedflow model` says what was read from a folder.
#[test]
fn model_info_shows_what_embedflow_read() {
    let dir = tempfile::tempdir().unwrap();
    let o = embedflow(dir.path(), &["model", minilm().to_str().unwrap()]);
    assert_code(&o, 0);
    let out = stdout(&o);
    for line in [
        "sha256           9540aa0261574420a50b2dd2c0645a5aaca70b44b33d2d8fba4442276c801bfc",
        "inputs           input_ids: int64 [?, ?]; attention_mask: int64 [?, ?]; token_type_ids: int64 [?, ?]",
        "outputs          last_hidden_state: float32 [?, ?, 384]",
        "dim              384",
        "pooling          mean",
        "normalize        true",
        "max_seq_length   256",
        "tokenizer        WordPiece, 30522 tokens, 2 special tokens around each text",
        "prompts          none",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let e5 = shared().join("models/multilingual-e5-small-q4");
    let o = embedflow(
        dir.path(),
        &["model", e5.to_str().unwrap(), "--prompt-name", "query"],
    );
    assert_code(&o, 0);
    let out = stdout(&o);
    for line in [
        "inputs           input_ids: int64 [?, ?]; attention_mask: int64 [?, ?]\n",
        "max_seq_length   512",
        "tokenizer        Unigram, 250002 tokens, 2 special tokens around each text",
        "prompts          passage = \"passage: \", query = \"query: \"",
        "prompt in use    \"query: \"",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let potion = shared().join("models/potion-base-8M");
    let o = embedflow(dir.path(), &["model", potion.to_str().unwrap()]);
    assert_code(&o, 0);
    let out = stdout(&o);
    for line in [
        "family           static",
        "max_seq_length   none",
        "outputs          token_embeddings: float32 [?, ?, 256]",
        "tokenizer        WordPiece, 29528 tokens, 0 special tokens around each text",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let o = embedflow(dir.path(), &["model", dir.path().to_str().unwrap()]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("model.onnx"), "{}", stderr(&o));
}

/// A CLIP folder: both graphs, the preprocessing, one space.
#[test]
fn model_info_shows_both_clip_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let clip = shared().join("models/tiny-clip-random");
    let o = embedflow(dir.path(), &["model", clip.to_str().unwrap()]);
    assert_code(&o, 0);
    let out = stdout(&o);
    for line in [
        "family           CLIP (text and images, one space)",
        "sha256           d3e1ef616f516000fd54fb612ff04c4221cf15cd4c3c046101d934f425323b1c",
        "output used      text_embeds (one vector per row, used as is)",
        "dim              16",
        "max_seq_length   77",
        "normalize        false",
        "tokenizer        BPE, 49408 tokens, 2 special tokens around each text",
        "sha256         31e1686a032c20deff04652ff07d9ff36ea96cd60e846c8bf4d11418fbde8882",
        "inputs         pixel_values: float32 [?, 3, 64, 64]",
        "dim            16, the text vectors' space",
        "image size     64x64",
        "preprocessing  resize short side to 64 (bicubic), centre crop 64x64, rescale 0.003922, normalise mean [0.48145467, 0.4578275, 0.40821072] std [0.26862955, 0.2613026, 0.2757771], alpha on white (preprocessor_config.json)",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

/// A folder put together from two models is refused before any row is
/// read, naming the file and the mismatch: a Pooling config whose width is
/// not the graph's, a tokenizer with more ids than the graph's embedding
/// table, a module embedflow cannot run.
#[test]
fn mismatched_model_folders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("hello")]);
    let copy = |name: &str| copy_tiny(d, name);
    let run = |m: &Path| {
        let o = embedflow(
            d,
            &[
                "embed",
                "in.parquet",
                "o.parquet",
                "--model",
                m.to_str().unwrap(),
                "--text-column",
                "text",
            ],
        );
        assert_code(&o, 1);
        assert!(!d.join("o.parquet").exists());
        stderr(&o)
    };

    let wide = copy("wide");
    let pool = std::fs::read_to_string(wide.join("1_Pooling/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&pool).unwrap();
    v["word_embedding_dimension"] = 64.into();
    std::fs::write(wide.join("1_Pooling/config.json"), v.to_string()).unwrap();
    let err = run(&wide);
    assert!(
        err.contains("gives 32-dimensional vectors, but 1_Pooling/config.json says 64"),
        "{err}"
    );

    // MiniLM's tokenizer (30,522 ids) on the tiny graph works (same
    // vocabulary); e5's 250,002 ids do not fit its table.
    let big = copy("big-vocab");
    std::fs::copy(
        shared().join("models/multilingual-e5-small-q4/tokenizer.json"),
        big.join("tokenizer.json"),
    )
    .unwrap();
    let err = run(&big);
    assert!(
        err.contains("the tokenizer has 250002 token ids, but model.onnx fails on id 250001"),
        "{err}"
    );

    let odd = copy("odd-module");
    std::fs::write(
        odd.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},{"idx":1,"name":"1","path":"1_Dense","type":"sentence_transformers.models.Dense"}]"#,
    )
    .unwrap();
    let err = run(&odd);
    assert!(
        err.contains(
            "modules.json lists sentence_transformers.models.Dense, which embedflow cannot run"
        ),
        "{err}"
    );
}

/// A folder made by scripts/quantize-model carries quantization.json (how
/// it was made, its quality gate): every output records it, so a table
/// says its vectors are int8 and how far they are from fp32. A folder
/// without one records nothing of the kind.
#[test]
fn a_quantized_folders_gate_is_in_the_lineage() {
    require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_texts_parquet(&d.join("in.parquet"), &[Some("hello"), Some("world")]);
    let m = copy_tiny(d, "tiny-int8");
    let info = r#"{"precision": "int8", "mode": "dynamic", "gate": {"top10_overlap": 0.9551, "mean_cosine": 0.995093}}"#;
    std::fs::write(m.join("quantization.json"), info).unwrap();
    embed(d, &m, &[]);
    let (_, kv) = read_parquet(&d.join("o.parquet"));
    let got: serde_json::Value =
        serde_json::from_str(meta(&kv, "embedflow.model_quantization")).unwrap();
    assert_eq!(
        got,
        serde_json::from_str::<serde_json::Value>(info).unwrap()
    );
    embed(d, &tiny(), &[]);
    let (_, kv) = read_parquet(&d.join("o.parquet"));
    assert!(
        !kv.iter().any(|(k, _)| k == "embedflow.model_quantization"),
        "{kv:?}"
    );
}
