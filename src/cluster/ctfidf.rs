//! Topic keywords by class-based TF-IDF, as BERTopic (0.17) computes them.
//!
//! All texts of a class form one document (joined with spaces, in row
//! order); it is lowercased and cut into tokens as `(?u)\b\w\w+\b` does;
//! optional stop words are dropped and n-grams formed (across the joins, as
//! over BERTopic's joined document). Then, with `count(x, c)`:
//!
//! ```text
//! tf(x, c) = count(x, c) / Σ_x' count(x', c)        (√tf with reduce_frequent_words)
//! f(x)     = Σ_c count(x, c)
//! A        = ⌊mean_c Σ_x count(x, c)⌋
//! idf(x)   = ln(1 + A / f(x))                        (bm25: ln(1 + (A − f + 0.5) / (f + 0.5)))
//! score    = tf · idf
//! ```
//!
//! Counting streams: only per-class term counts (and the last n−1 tokens of
//! each class, for n-grams) are held, never the texts.
//!
//! Preprocessing: BERTopic's English mode deletes every character outside
//! `[A-Za-z0-9 ]` (after turning `\n` and `\t` into spaces), which destroys
//! non-English text; [`Preprocess::Unicode`] (the default here) keeps every
//! letter and leaves tokenization to the Unicode-aware regex.

use std::collections::HashMap;

use regex::Regex;

use super::stop_words;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Preprocess {
    /// Lowercase only; Unicode letters and digits make tokens.
    Unicode,
    /// BERTopic's English preprocessing, exactly (ASCII letters and digits only).
    English,
}

#[derive(Clone, Debug)]
pub struct TopicOptions {
    pub preprocess: Preprocess,
    /// Drop scikit-learn's English stop words.
    pub english_stop_words: bool,
    /// Smallest and largest n-gram length (BERTopic's `n_gram_range`).
    pub ngram: (usize, usize),
    pub bm25_weighting: bool,
    pub reduce_frequent_words: bool,
    /// Keywords kept per topic.
    pub top_n: usize,
}

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            preprocess: Preprocess::Unicode,
            english_stop_words: false,
            ngram: (1, 1),
            bm25_weighting: false,
            reduce_frequent_words: false,
            top_n: 10,
        }
    }
}

/// Per-class term counts, fed one text at a time.
pub struct TermCounts {
    opts: TopicOptions,
    token: Regex,
    counts: Vec<HashMap<String, u64>>,
    /// The last `max n − 1` tokens of each class (n-grams span the joins).
    carry: Vec<Vec<String>>,
    texts: Vec<u64>,
    /// Whether any text of the class kept a character after preprocessing.
    nonempty: Vec<bool>,
}

impl TermCounts {
    pub fn new(classes: usize, opts: TopicOptions) -> TermCounts {
        TermCounts {
            // scikit-learn's (?u)\b\w\w+\b: maximal runs of two or more word
            // characters, a word character being what Python's `\w` takes
            // (letters, numbers, underscore; not combining marks, which the
            // regex crate's `\w` would add).
            token: Regex::new(r"[\p{L}\p{N}_]{2,}").expect("valid token regex"),
            counts: vec![HashMap::new(); classes],
            carry: vec![Vec::new(); classes],
            texts: vec![0; classes],
            nonempty: vec![false; classes],
            opts,
        }
    }

    /// Adds one text to `class`.
    pub fn add(&mut self, class: usize, text: &str) {
        let cleaned: String = match self.opts.preprocess {
            Preprocess::English => text
                .chars()
                .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
                .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
                .collect(),
            Preprocess::Unicode => text.to_string(),
        };
        self.texts[class] += 1;
        self.nonempty[class] |= !cleaned.is_empty();
        let lower = cleaned.to_lowercase();
        let tokens = self
            .token
            .find_iter(&lower)
            .map(|m| m.as_str())
            .filter(|t| {
                !self.opts.english_stop_words || stop_words::ENGLISH.binary_search(t).is_err()
            });
        let (min_n, max_n) = self.opts.ngram;
        let counts = &mut self.counts[class];
        let carry = &mut self.carry[class];
        for t in tokens {
            carry.push(t.to_string());
            let end = carry.len();
            for n in min_n..=max_n.min(end) {
                let gram = carry[end - n..].join(" ");
                *counts.entry(gram).or_insert(0) += 1;
            }
            if carry.len() >= max_n {
                carry.drain(..carry.len() + 1 - max_n);
            }
        }
    }

    /// Texts counted per class.
    pub fn texts(&self) -> &[u64] {
        &self.texts
    }

    /// The top keywords of every class and their scores, best first (ties
    /// by word). Classes without texts are not classes (they get none).
    pub fn keywords(&self) -> Vec<Vec<(String, f64)>> {
        let mut counts = self.counts.clone();
        if self.opts.preprocess == Preprocess::English {
            // BERTopic: a class document left empty becomes "emptydoc".
            for (c, m) in counts.iter_mut().enumerate() {
                if self.texts[c] == 1 && !self.nonempty[c] {
                    m.insert("emptydoc".into(), 1);
                }
            }
        }
        let classes: Vec<usize> = (0..counts.len()).filter(|&c| self.texts[c] > 0).collect();
        let mut freq: HashMap<&str, u64> = HashMap::new();
        let mut total = 0u64;
        for &c in &classes {
            for (w, &n) in &counts[c] {
                *freq.entry(w.as_str()).or_insert(0) += n;
                total += n;
            }
        }
        let a = if classes.is_empty() {
            0.0
        } else {
            (total as f64 / classes.len() as f64).trunc()
        };
        let idf = |f: u64| -> f64 {
            let f = f as f64;
            if self.opts.bm25_weighting {
                (1.0 + (a - f + 0.5) / (f + 0.5)).ln()
            } else {
                (a / f + 1.0).ln()
            }
        };
        let mut out = vec![Vec::new(); counts.len()];
        for &c in &classes {
            let row_total: u64 = counts[c].values().sum();
            if row_total == 0 {
                continue;
            }
            let mut scored: Vec<(String, f64)> = counts[c]
                .iter()
                .map(|(w, &n)| {
                    let mut tf = n as f64 / row_total as f64;
                    if self.opts.reduce_frequent_words {
                        tf = tf.sqrt();
                    }
                    (w.clone(), tf * idf(freq[w.as_str()]))
                })
                .filter(|(_, s)| *s > 0.0)
                .collect();
            scored.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
            scored.truncate(self.opts.top_n);
            out[c] = scored;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_formula() {
        let mut t = TermCounts::new(2, TopicOptions::default());
        t.add(0, "apple apple banana");
        t.add(1, "banana cherry");
        let kw = t.keywords();
        // A = ⌊(3 + 2) / 2⌋ = 2; f(apple) = 2, f(banana) = 2, f(cherry) = 1.
        let expect_apple = 2.0 / 3.0 * (2.0f64 / 2.0 + 1.0).ln();
        let expect_banana = 1.0 / 3.0 * (2.0f64 / 2.0 + 1.0).ln();
        assert_eq!(kw[0][0].0, "apple");
        assert!((kw[0][0].1 - expect_apple).abs() < 1e-15);
        assert!((kw[0][1].1 - expect_banana).abs() < 1e-15);
        assert_eq!(kw[1][0].0, "cherry");
    }

    #[test]
    fn english_mode_deletes_characters_and_ngrams_cross_texts() {
        let mut t = TermCounts::new(
            1,
            TopicOptions {
                preprocess: Preprocess::English,
                ngram: (1, 2),
                english_stop_words: true,
                ..Default::default()
            },
        );
        t.add(0, "Café, a b,c\tthe END");
        t.add(0, "Über alles");
        let mut words: Vec<String> = t.keywords()[0].iter().map(|(w, _)| w.clone()).collect();
        words.sort();
        // "Café," → "caf"; "b,c" → "bc"; "a"/"the" dropped (one letter / stop
        // word); "Über" → "ber"; "alles"; bigrams across the two texts.
        assert_eq!(
            words,
            [
                "alles",
                "bc",
                "bc end",
                "ber",
                "ber alles",
                "caf",
                "caf bc",
                "end",
                "end ber"
            ]
        );
        let mut u = TermCounts::new(1, TopicOptions::default());
        u.add(0, "Café Über");
        let mut words: Vec<String> = u.keywords()[0].iter().map(|(w, _)| w.clone()).collect();
        words.sort();
        assert_eq!(words, ["café", "über"]);
    }
}
