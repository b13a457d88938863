//! Chunking: pure text → token windows with offsets. No I/O, no model: the
//! caller hands in the tokens of the model's own tokenizer.
//!
//! Cuts fall between words when a word boundary lies in the window, so a
//! chunk's text, tokenized on its own, gives the same tokens as its window
//! (for WordPiece/BPE/Unigram tokenizers that pre-split on whitespace and
//! punctuation). Only a single word longer than the window is cut inside.

use std::ops::Range;

/// Default overlap between consecutive chunks, in tokens.
pub const DEFAULT_OVERLAP: usize = 32;

/// What the chunker needs to know of one token (special tokens excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// Byte offsets of the token in the original text.
    pub start: usize,
    pub end: usize,
    /// True when this token begins a new word (pre-tokenizer split).
    pub word_start: bool,
}

/// One chunk: the token window and the byte range of the original text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub tokens: Range<usize>,
    pub bytes: Range<usize>,
}

/// Splits a text of `text_len` bytes whose tokens are `tokens` into windows of
/// at most `max_tokens` tokens, consecutive windows sharing at most `overlap`
/// tokens (exactly `overlap` when a word starts there).
///
/// The first chunk starts at byte 0 and the last ends at `text_len`, so a text
/// that fits in one window is one chunk holding the whole text.
///
/// # Panics
/// If `max_tokens == 0` or `overlap >= max_tokens` (the job plan refuses both).
pub fn split(text_len: usize, tokens: &[Token], max_tokens: usize, overlap: usize) -> Vec<Chunk> {
    assert!(
        max_tokens > 0 && overlap < max_tokens,
        "invalid chunk window"
    );
    let n = tokens.len();
    if n <= max_tokens {
        return vec![Chunk {
            tokens: 0..n,
            bytes: 0..text_len,
        }];
    }
    let mut chunks = Vec::with_capacity(n / (max_tokens - overlap) + 1);
    let mut start = 0;
    loop {
        let hard_end = (start + max_tokens).min(n);
        let end = if hard_end == n {
            n
        } else {
            // Latest word start that still leaves room for the overlap to advance.
            (start + overlap + 1..=hard_end)
                .rev()
                .find(|&e| tokens[e].word_start)
                .unwrap_or(hard_end)
        };
        let b_start = if start == 0 { 0 } else { tokens[start].start };
        let b_end = if end == n {
            text_len
        } else {
            tokens[end - 1].end.max(b_start)
        };
        chunks.push(Chunk {
            tokens: start..end,
            bytes: b_start..b_end,
        });
        if end == n {
            return chunks;
        }
        let lo = end.saturating_sub(overlap).max(start + 1);
        start = (lo..=end).find(|&s| tokens[s].word_start).unwrap_or(lo);
    }
}

/// Converts sorted byte offsets of `text` to character (Unicode scalar value)
/// offsets, the unit Python, DuckDB and pyarrow slice strings by.
pub fn char_offsets(text: &str, bytes: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut b, mut c) = (0usize, 0usize);
    for &target in bytes {
        if target < b {
            // Not sorted: count from the start.
            b = 0;
            c = 0;
        }
        c += text[b..target].chars().count();
        b = target;
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Tokens of a whitespace-separated text, each word split into pieces of
    /// at most 3 bytes (a stand-in for word pieces).
    fn toy_tokens(text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        let mut pos = 0;
        for word in text.split(' ') {
            let mut first = true;
            let mut s = pos;
            let word_end = pos + word.len();
            while s < word_end {
                let mut e = (s + 3).min(word_end);
                while !text.is_char_boundary(e) {
                    e += 1;
                }
                out.push(Token {
                    start: s,
                    end: e,
                    word_start: first,
                });
                first = false;
                s = e;
            }
            pos = word_end + 1;
        }
        out
    }

    #[test]
    fn short_text_is_one_chunk() {
        let text = "a short text";
        let t = toy_tokens(text);
        assert_eq!(
            split(text.len(), &t, 10, 2),
            vec![Chunk {
                tokens: 0..t.len(),
                bytes: 0..text.len()
            }]
        );
        assert_eq!(
            split(0, &[], 10, 2),
            vec![Chunk {
                tokens: 0..0,
                bytes: 0..0
            }]
        );
    }

    #[test]
    fn cuts_between_words_with_overlap() {
        let text = "aa bb cc dd ee ff gg";
        let t = toy_tokens(text);
        let c = split(text.len(), &t, 3, 1);
        let texts: Vec<&str> = c.iter().map(|c| &text[c.bytes.clone()]).collect();
        assert_eq!(texts, vec!["aa bb cc", "cc dd ee", "ee ff gg"]);
    }

    #[test]
    fn moves_cut_back_to_a_word_start() {
        // "abcdef" is two tokens (abc, def): a window of 3 must not split it.
        let text = "x y abcdef z";
        let t = toy_tokens(text);
        let c = split(text.len(), &t, 3, 0);
        let texts: Vec<&str> = c.iter().map(|c| &text[c.bytes.clone()]).collect();
        assert_eq!(texts, vec!["x y", "abcdef z"]);
    }

    #[test]
    fn char_offsets_count_scalars() {
        let s = "héllo wörld";
        assert_eq!(char_offsets(s, &[0, 3, 7, s.len()]), vec![0, 2, 6, 11]);
    }

    proptest! {
        #[test]
        fn chunk_invariants(
            words in prop::collection::vec("[a-zé中]{1,12}", 0..200),
            max_tokens in 1usize..40,
            overlap_frac in 0.0f64..1.0,
        ) {
            let text = words.join(" ");
            let tokens = toy_tokens(&text);
            let overlap = ((max_tokens as f64) * overlap_frac) as usize % max_tokens;
            let chunks = split(text.len(), &tokens, max_tokens, overlap);
            prop_assert!(!chunks.is_empty());
            prop_assert_eq!(chunks[0].tokens.start, 0);
            prop_assert_eq!(chunks[0].bytes.start, 0);
            prop_assert_eq!(chunks.last().unwrap().tokens.end, tokens.len());
            prop_assert_eq!(chunks.last().unwrap().bytes.end, text.len());
            for c in &chunks {
                prop_assert!(c.tokens.len() <= max_tokens);
                prop_assert!(text.is_char_boundary(c.bytes.start) && text.is_char_boundary(c.bytes.end));
                prop_assert!(c.bytes.start <= c.bytes.end);
                // Every token of the window lies inside the chunk's bytes.
                for t in &tokens[c.tokens.clone()] {
                    prop_assert!(c.bytes.start <= t.start && t.end <= c.bytes.end);
                }
            }
            for w in chunks.windows(2) {
                let (a, b) = (&w[0], &w[1]);
                // In order, no gap, overlap at most as configured.
                prop_assert!(b.tokens.start > a.tokens.start);
                prop_assert!(b.tokens.start <= a.tokens.end);
                prop_assert!(a.tokens.end - b.tokens.start <= overlap);
                prop_assert!(b.bytes.start >= a.bytes.start);
                // Exactly the configured overlap when a word starts there.
                let lo = a.tokens.end - overlap;
                if lo > a.tokens.start && tokens[lo].word_start {
                    prop_assert_eq!(a.tokens.end - b.tokens.start, overlap);
                }
            }
        }
    }
}
