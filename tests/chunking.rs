//! Chunking with the model's own tokenizer: offsets, windows, and chunk
//! vectors equal to the vectors of the chunks' texts.

use embedflow::chunk;
use embedflow::embed::ModelOptions;
use embedflow::embed::{ModelConfig, TextEncoder};

use crate::util::*;

fn model(path: &std::path::Path) -> ModelConfig {
    ModelConfig::load(&ModelOptions {
        path: path.to_str().unwrap().to_string(),
        ..Default::default()
    })
    .unwrap()
}

fn bench_texts() -> Vec<String> {
    std::fs::read_to_string(shared().join("reference/bench_texts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<String>(l).unwrap())
        .collect()
}

/// Windows cut by the real tokenizer: within max_tokens, overlapping as
/// configured, on char boundaries, and each chunk's text re-tokenizes to
/// exactly its window's tokens (the cut falls between words).
#[test]
fn real_tokenizer_windows_retokenize_to_themselves() {
    let cfg = model(&minilm());
    let enc = TextEncoder::new(&cfg).unwrap();
    let mut texts = reference_texts();
    texts.extend(bench_texts().into_iter().take(400));
    let mut multi = 0;
    for (max_tokens, overlap) in [(254, 32), (50, 10), (16, 0)] {
        for text in &texts {
            let tokens = enc.chunk_tokens(text).unwrap();
            let chunks = chunk::split(text.len(), &tokens, max_tokens, overlap);
            let full = enc.encode_untruncated_ids(text).unwrap();
            if chunks.len() > 1 {
                multi += 1;
            }
            for (i, c) in chunks.iter().enumerate() {
                assert!(c.tokens.len() <= max_tokens);
                assert!(text.is_char_boundary(c.bytes.start) && text.is_char_boundary(c.bytes.end));
                if i > 0 {
                    let prev = &chunks[i - 1];
                    assert!(
                        c.tokens.start > prev.tokens.start && c.tokens.start <= prev.tokens.end
                    );
                    assert!(prev.tokens.end - c.tokens.start <= overlap);
                }
                let piece = &text[c.bytes.clone()];
                let alone = enc.encode_untruncated_ids(piece).unwrap();
                let cut_inside_word = (c.tokens.end < tokens.len()
                    && !tokens[c.tokens.end].word_start)
                    || (c.tokens.start > 0 && !tokens[c.tokens.start].word_start);
                if !cut_inside_word {
                    assert_eq!(
                        alone,
                        full[c.tokens.clone()],
                        "chunk {i} of {text:?} ({piece:?})"
                    );
                }
            }
        }
    }
    assert!(
        multi > 100,
        "too few multi-chunk texts to mean anything: {multi}"
    );
}

/// The pipeline's chunk vectors equal the vectors of the chunk texts
/// embedded alone, chunk offsets slice the source text, and a first chunk
/// of exactly max_tokens equals sentence-transformers' (truncated) vector of
/// the whole text.
#[test]
fn chunk_vectors_equal_vectors_of_chunk_texts() {
    let dir = tempfile::tempdir().unwrap();
    let texts = reference_texts();
    // The long texts plus a few short ones.
    let (_, dim, reference) = read_npy(&shared().join("reference/embeddings.npy"));
    let cfg = model(&minilm());
    let enc = TextEncoder::new(&cfg).unwrap();
    let picked: Vec<usize> = (0..texts.len())
        .filter(|&i| !texts[i].trim().is_empty())
        .filter(|&i| enc.chunk_tokens(&texts[i]).unwrap().len() > 254 || i % 25 == 0)
        .collect();
    assert!(picked.len() >= 18 + 5, "{}", picked.len());
    let input = dir.path().join("in.parquet");
    let chosen: Vec<Option<&str>> = picked.iter().map(|&i| Some(texts[i].as_str())).collect();
    write_texts_parquet(&input, &chosen);
    let out = dir.path().join("out.parquet");
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "out.parquet",
            "--model",
            minilm().to_str().unwrap(),
            "--text-column",
            "text",
            "--id-column",
            "id",
            "--columns",
            "id",
            "--keep-chunk-text",
            "--overlap",
            "16",
        ],
    );
    assert_code(&o, 0);
    let (batch, kv) = read_parquet(&out);
    assert_eq!(meta(&kv, "embedflow.chunk_max_tokens"), "254");
    assert_eq!(meta(&kv, "embedflow.chunk_overlap"), "16");
    let ids = ints(&batch, "id");
    let starts = ints(&batch, "chunk_start");
    let ends = ints(&batch, "chunk_end");
    let idx = ints(&batch, "chunk_index");
    let chunk_texts = strings(&batch, "chunk_text");
    let vecs = vectors(&batch, "embedding");
    assert!(
        batch.num_rows() > picked.len(),
        "long texts make several chunks"
    );

    let refs: Vec<&str> = chunk_texts.iter().map(String::as_str).collect();
    let (alone, d) =
        embedflow::embed::embed_texts(&cfg, &refs, embedflow::embed::SessionOptions::cpu(0))
            .unwrap();
    assert_eq!(d, dim);
    let mut exact_first = 0;
    for r in 0..batch.num_rows() {
        let src = &texts[picked[ids[r] as usize]];
        let chars: Vec<char> = src.chars().collect();
        let slice: String = chars[starts[r] as usize..ends[r] as usize].iter().collect();
        assert_eq!(slice, chunk_texts[r], "offsets slice the source text");
        let c = cosine(&vecs[r], &alone[r * d..(r + 1) * d]);
        assert!(
            c >= 0.99999,
            "chunk {r}: cosine {c} to its text embedded alone"
        );
        let is_single = (r + 1 == batch.num_rows() || idx[r + 1] == 0) && idx[r] == 0;
        let full_tokens = enc.chunk_tokens(src).unwrap().len();
        let this_tokens = enc.chunk_tokens(&chunk_texts[r]).unwrap().len();
        if idx[r] == 0 && (is_single || (full_tokens > 254 && this_tokens == 254)) {
            // sentence-transformers truncates at 256 = 254 + [CLS] + [SEP].
            let i = picked[ids[r] as usize];
            let c = cosine(&vecs[r], &reference[i * dim..(i + 1) * dim]);
            assert!(
                c >= 0.99999,
                "text {i}: first chunk vs sentence-transformers: {c}"
            );
            if !is_single {
                exact_first += 1;
            }
        }
    }
    assert!(
        exact_first > 5,
        "too few first chunks of exactly 254 tokens: {exact_first}"
    );
}

/// The documents output holds the normalised mean of each document's chunks.
#[test]
fn document_vectors_are_normalised_chunk_means() {
    let dir = tempfile::tempdir().unwrap();
    let texts = reference_texts();
    let long: Vec<Option<&str>> = texts
        .iter()
        .filter(|t| t.len() > 1500)
        .map(|t| Some(t.as_str()))
        .collect();
    write_texts_parquet(&dir.path().join("in.parquet"), &long);
    let o = embedflow(
        dir.path(),
        &[
            "embed",
            "in.parquet",
            "chunks.parquet",
            "--model",
            tiny().to_str().unwrap(),
            "--text-column",
            "text",
            "--max-tokens",
            "64",
            "--overlap",
            "8",
            "--documents",
            "docs.parquet",
        ],
    );
    assert_code(&o, 0);
    let (chunks, _) = read_parquet(&dir.path().join("chunks.parquet"));
    let (docs, _) = read_parquet(&dir.path().join("docs.parquet"));
    assert_eq!(docs.num_rows(), long.len());
    let cid = ints(&chunks, "id");
    let cv = vectors(&chunks, "embedding");
    let dv = vectors(&docs, "embedding");
    let n = ints(&docs, "n_chunks");
    // All but one (3,000 x's: a single [UNK] token) need several chunks.
    assert_eq!(
        n.iter().filter(|&&k| k > 1).count(),
        long.len() - 1,
        "{n:?}"
    );
    for (d, id) in ints(&docs, "id").iter().enumerate() {
        let mine: Vec<&Vec<f32>> = cid
            .iter()
            .zip(&cv)
            .filter(|(c, _)| *c == id)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(mine.len() as i64, n[d]);
        let mut mean = vec![0f64; dv[d].len()];
        for v in &mine {
            for (m, x) in mean.iter_mut().zip(v.iter()) {
                *m += *x as f64;
            }
        }
        let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (m, x) in mean.iter().zip(&dv[d]) {
            assert!((m / norm - *x as f64).abs() < 1e-5);
        }
    }
}

/// The news corpus as one long document (about 1.6 MB, over ten tokenizer
/// windows).
fn long_document() -> String {
    let doc = news_document(1_600_000);
    assert!(
        doc.len() > 10 * embedflow::embed::tokenize::WINDOW,
        "{}",
        doc.len()
    );
    doc
}

/// A long text is tokenized in windows (memory); its tokens, offsets and word
/// starts must be those of the whole text tokenized at once, for a WordPiece
/// (MiniLM) and a SentencePiece (e5) tokenizer, and the
/// truncated model input must be the whole text's.
#[test]
fn windowed_tokenization_equals_whole_text_tokenization() {
    let doc = long_document();
    for dir in [minilm(), shared().join("models/multilingual-e5-small-q4")] {
        let cfg = model(&dir);
        let enc = TextEncoder::new(&cfg).unwrap();
        let mut whole = tokenizers::Tokenizer::from_file(&cfg.tokenizer_path).unwrap();
        whole.with_truncation(None).unwrap();
        whole.with_padding(None);
        let expected = whole.encode(doc.as_str(), false).unwrap();
        let got = enc.chunk_tokens(&doc).unwrap();
        assert_eq!(got.len(), expected.len(), "{}", dir.display());
        let words = expected.get_word_ids();
        for (i, (t, &(start, end))) in got.iter().zip(expected.get_offsets()).enumerate() {
            assert_eq!(
                (t.start, t.end),
                (start, end),
                "{} token {i}",
                dir.display()
            );
            let word_start = i == 0 || words[i].is_none() || words[i] != words[i - 1];
            assert_eq!(t.word_start, word_start, "{} token {i}", dir.display());
        }
        // Truncated input for the model: same ids as truncating the whole.
        whole
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: cfg.max_seq_length,
                ..Default::default()
            }))
            .unwrap();
        let head = whole.encode(doc.as_str(), true).unwrap().get_ids().to_vec();
        let ids = enc.encode(&doc).unwrap().ids;
        assert_eq!(ids.len(), cfg.max_seq_length, "{}", dir.display());
        assert_eq!(ids, head, "{}", dir.display());
    }
}

#[test]
fn a_cut_goes_before_a_whitespace_run_on_a_char_boundary() {
    use embedflow::embed::tokenize::cut_before_space;
    assert_eq!(cut_before_space("abc", 10), 3);
    assert_eq!(cut_before_space("ab  cd ef", 6), 2);
    assert_eq!(cut_before_space("ab  cd ef", 7), 6);
    // No whitespace: cut at the last char boundary within the limit.
    assert_eq!(cut_before_space("ééé", 3), 2);
    // A run at the very start does not give an empty part.
    assert_eq!(cut_before_space("  abcdef", 4), 4);
    assert_eq!(cut_before_space("é", 1), 2);
}
