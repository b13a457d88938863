//! Vectors equal sentence-transformers' (../shared/reference), row for row.

use crate::util::*;

/// Min cosine over rows between our output and a reference .npy.
fn min_cosine(ours: &[Vec<f32>], reference: &std::path::Path) -> (f64, usize) {
    let (rows, dim, data) = read_npy(reference);
    assert_eq!(ours.len(), rows, "row count");
    let mut worst = (f64::INFINITY, 0);
    for (i, v) in ours.iter().enumerate() {
        assert_eq!(v.len(), dim);
        let c = cosine(v, &data[i * dim..(i + 1) * dim]);
        if c < worst.0 {
            worst = (c, i);
        }
    }
    worst
}

/// Embeds reference.parquet (200 texts, including empty ones and 18 longer
/// than 256 tokens) through the whole pipeline with chunking off.
fn embed_reference(model: &std::path::Path) -> (arrow::array::RecordBatch, Vec<(String, String)>) {
    embed_reference_with(model, &["--max-seq-length", "256"])
}

/// [`embed_reference`] with other model flags.
fn embed_reference_with(
    model: &std::path::Path,
    flags: &[&str],
) -> (arrow::array::RecordBatch, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let input = shared().join("reference/reference.parquet");
    let out = dir.path().join("ref.parquet");
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--text-column",
            "text",
            "--columns",
            "id,n_tokens_untruncated",
            "--chunking",
            "none",
            "--on-empty",
            "embed",
            // Small batches so that padding and sorting are exercised.
            "--batch-tokens",
            "2048",
        ]
        .into_iter()
        .chain(flags.iter().copied())
        .collect::<Vec<_>>(),
    );
    assert_code(&o, 0);
    read_parquet(&out)
}

#[test]
fn minilm_matches_sentence_transformers_on_every_row() {
    let (batch, kv) = embed_reference(&minilm());
    assert_eq!(
        ints(&batch, "id"),
        (0..200).collect::<Vec<i64>>(),
        "input order is kept"
    );
    let (worst, row) = min_cosine(
        &vectors(&batch, "embedding"),
        &shared().join("reference/embeddings.npy"),
    );
    assert!(worst >= 0.99999, "min cosine {worst} at row {row}");
    // The folder's digest, and each file's: the graph's among them.
    let files: serde_json::Value =
        serde_json::from_str(meta(&kv, "embedflow.model_files")).unwrap();
    assert_eq!(
        files["model.onnx"],
        "9540aa0261574420a50b2dd2c0645a5aaca70b44b33d2d8fba4442276c801bfc"
    );
    assert!(files["tokenizer.json"].is_string() && files["1_Pooling/config.json"].is_string());
    assert_eq!(meta(&kv, "embedflow.model_sha256").len(), 64);
    assert_eq!(meta(&kv, "embedflow.max_seq_length"), "256");
}

/// Sessions running batches at once (`--workers`) change where a batch
/// runs, not its vectors: one session with both threads and two with one
/// each give sentence-transformers' vectors in input order, and the same
/// vectors as each other.
#[test]
fn minilm_matches_with_one_session_or_two() {
    let model = minilm();
    let reference = shared().join("reference/embeddings.npy");
    let runs: Vec<Vec<Vec<f32>>> = ["1", "2"]
        .iter()
        .map(|w| {
            let (batch, kv) = embed_reference_with(
                &model,
                &["--max-seq-length", "256", "--workers", w, "--threads", "2"],
            );
            assert_eq!(
                ints(&batch, "id"),
                (0..200).collect::<Vec<i64>>(),
                "--workers {w}"
            );
            let v = vectors(&batch, "embedding");
            let (worst, row) = min_cosine(&v, &reference);
            assert!(
                worst >= 0.99999,
                "--workers {w}: min cosine {worst} at row {row}"
            );
            assert_eq!(meta(&kv, "embedflow.max_seq_length"), "256");
            v
        })
        .collect();
    for (i, (a, b)) in runs[0].iter().zip(&runs[1]).enumerate() {
        let c = cosine(a, b);
        assert!(
            c >= 0.9999999,
            "row {i}: one session and two differ (cosine {c})"
        );
    }
}

/// multilingual-e5 (XLM-R SentencePiece tokenizer, no token_type_ids, max
/// 512 tokens): the prompt named in config_sentence_transformers.json is
/// prepended and its tokens are pooled, as sentence-transformers does.
#[test]
fn e5_matches_sentence_transformers_with_either_prompt() {
    let e5 = shared().join("models/multilingual-e5-small-q4");
    for (prompt, reference) in [
        ("passage", "e5_passage_embeddings.npy"),
        ("query", "e5_query_embeddings.npy"),
    ] {
        let (batch, kv) = embed_reference_with(&e5, &["--prompt-name", prompt]);
        let (worst, row) = min_cosine(
            &vectors(&batch, "embedding"),
            &shared().join("reference").join(reference),
        );
        assert!(
            worst >= 0.99999,
            "{prompt}: min cosine {worst} at row {row}"
        );
        assert_eq!(meta(&kv, "embedflow.max_seq_length"), "512");
        assert_eq!(meta(&kv, "embedflow.prompt"), format!("{prompt}: "));
    }
}

/// A static (model2vec) model: no special tokens, no truncation (texts of
/// 600 tokens whole), mean over tokens, normalised; texts without tokens
/// give the zero vector, as sentence-transformers' StaticEmbedding.
#[test]
fn potion_static_model_matches_sentence_transformers() {
    let potion = shared().join("models/potion-base-8M");
    let (batch, kv) = embed_reference_with(&potion, &[]);
    let ours = vectors(&batch, "embedding");
    let (rows, dim, want) = read_npy(&shared().join("reference/potion_embeddings.npy"));
    assert_eq!((ours.len(), ours[0].len()), (rows, dim));
    let mut zero = 0;
    for (i, v) in ours.iter().enumerate() {
        let r = &want[i * dim..(i + 1) * dim];
        if r.iter().all(|&x| x == 0.0) {
            zero += 1;
            assert!(v.iter().all(|&x| x == 0.0), "row {i}: not the zero vector");
        } else {
            let c = cosine(v, r);
            assert!(c >= 0.99999, "row {i}: cosine {c}");
        }
    }
    assert_eq!(zero, 4);
    assert_eq!(meta(&kv, "embedflow.max_seq_length"), "none");
}

#[test]
fn tiny_model_matches_sentence_transformers_on_every_row() {
    let (batch, _) = embed_reference(&tiny());
    let (worst, row) = min_cosine(
        &vectors(&batch, "embedding"),
        &shared().join("reference/tiny_embeddings.npy"),
    );
    assert!(worst >= 0.99999, "min cosine {worst} at row {row}");
}

#[test]
fn the_shipped_tokenizer_settings_would_be_wrong() {
    // Guard on the trap in ../shared/models/README.md: at 128 tokens (the
    // tokenizer.json's own truncation) long texts diverge from the reference.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.parquet");
    let input = shared().join("reference/reference.parquet");
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "text",
            "--columns",
            "id",
            "--chunking",
            "none",
            "--max-seq-length",
            "128",
            "--on-empty",
            "embed",
        ],
    );
    assert_code(&o, 0);
    let (batch, _) = read_parquet(&out);
    let (worst, _) = min_cosine(
        &vectors(&batch, "embedding"),
        &shared().join("reference/tiny_embeddings.npy"),
    );
    assert!(
        worst < 0.999,
        "truncating at 128 should change long texts, min cosine {worst}"
    );
}

/// A user's own XLM-R export carries transformers 4's tokenizer.json layout
/// (a lone Metaspace pre-tokenizer, and a normalizer collapsing spaces),
/// which gives an extra lone '▁' token on whitespace-only and trailing-space
/// texts. embedflow corrects it, so the vectors still match
/// sentence-transformers on every row, and says so in `embedflow model`.
#[test]
fn e5_with_a_transformers_4_tokenizer_still_matches() {
    let e5 = shared().join("models/multilingual-e5-small-q4");
    let dir = tempfile::tempdir().unwrap();
    let stock = dir.path().join("e5-stock");
    std::fs::create_dir(&stock).unwrap();
    for entry in std::fs::read_dir(&e5).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "tokenizer.json" {
            std::os::unix::fs::symlink(&p, stock.join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e5.join("tokenizer.json")).unwrap()).unwrap();
    let metaspace = t["pre_tokenizer"]["pretokenizers"][1].clone();
    assert_eq!(metaspace["type"], "Metaspace");
    t["pre_tokenizer"] = metaspace;
    let precompiled = t["normalizer"].clone();
    t["normalizer"] = serde_json::json!({
        "type": "Sequence",
        "normalizers": [precompiled, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}],
    });
    std::fs::write(stock.join("tokenizer.json"), t.to_string()).unwrap();

    // The layout does make a difference, used as is.
    let raw = tokenizers::Tokenizer::from_file(stock.join("tokenizer.json")).unwrap();
    let fixed = tokenizers::Tokenizer::from_file(e5.join("tokenizer.json")).unwrap();
    let ids = |t: &tokenizers::Tokenizer, s: &str| t.encode(s, true).unwrap().get_ids().to_vec();
    assert_ne!(ids(&raw, "passage: hello "), ids(&fixed, "passage: hello "));
    assert_ne!(ids(&raw, "   "), ids(&fixed, "   "));

    let (batch, _) = embed_reference_with(&stock, &["--prompt-name", "passage"]);
    let (worst, row) = min_cosine(
        &vectors(&batch, "embedding"),
        &shared().join("reference/e5_passage_embeddings.npy"),
    );
    assert!(worst >= 0.99999, "min cosine {worst} at row {row}");

    let o = embedflow(dir.path(), &["model", stock.to_str().unwrap()]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("pre-tokenizer corrected"),
        "{}",
        stdout(&o)
    );
}

/// all-mpnet-base-v2 (MPNet, no token_type_ids, max_seq_length 384, the
/// shipped tokenizer's 128-token trap): made by `scripts/export-model DIR
/// --model all-mpnet-base-v2`, which needs torch (~6 GB) and so is not part
/// of CI. Runs where `$EMBEDFLOW_MPNET` (or `$EMBEDFLOW_HOME/models-export/
/// all-mpnet-base-v2`) holds the export; says it did not run otherwise.
#[test]
fn mpnet_export_matches_sentence_transformers_where_exported() {
    let dir = std::env::var_os("EMBEDFLOW_MPNET")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            embedflow::paths::embedflow_home().join("models-export/all-mpnet-base-v2")
        });
    if !dir.join("model.onnx").is_file() {
        eprintln!(
            "not run: no mpnet export at {} (scripts/export-model DIR --model all-mpnet-base-v2)",
            dir.display()
        );
        return;
    }
    let (batch, kv) = embed_reference_with(&dir, &[]);
    let (worst, row) = min_cosine(
        &vectors(&batch, "embedding"),
        &shared().join("reference/mpnet_embeddings.npy"),
    );
    println!("mpnet: min cosine {worst} at row {row}");
    assert!(worst >= 0.99999, "min cosine {worst} at row {row}");
    assert_eq!(meta(&kv, "embedflow.max_seq_length"), "384");
}
