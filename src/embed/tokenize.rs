//! The model's own tokenizer, set up as sentence-transformers uses it:
//! truncation at max_seq_length, no padding (batches are padded to their
//! longest row), the prompt prepended.

use tokenizers::{
    PaddingParams, PostProcessor, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use super::bpe::Bpe;
use super::model::ModelConfig;
use crate::chunk;
use crate::{Error, Result};

/// A tokenized text ready for the model (special tokens included), or a
/// prepared image.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// A prepared image for a vision graph (interleaved 8-bit RGB, at the
    /// graph's height and width); empty for a text.
    pub pixels: Vec<u8>,
    /// What a remote API is sent (the prompt and the text, cut at the
    /// input limit); empty for a local model.
    pub text: String,
}

/// Pixels an image counts as one token for, in batch budgets: a 224 × 224
/// image weighs 196 tokens, about the patches of a ViT-B/16.
pub const PIXELS_PER_TOKEN: usize = 256;

impl Encoded {
    /// An image's pixel values for a vision graph.
    pub fn image(pixels: Vec<u8>) -> Encoded {
        Encoded {
            pixels,
            ..Default::default()
        }
    }

    /// Tokens, or what an image weighs in a batch budget.
    pub fn len(&self) -> usize {
        if self.pixels.is_empty() {
            self.ids.len()
        } else {
            (self.pixels.len() / 3 / PIXELS_PER_TOKEN).max(1)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.pixels.is_empty()
    }
}

/// Tokenizes texts for the model and for the chunker. Cheap to share across
/// threads (`&self` only).
pub struct TextEncoder {
    /// Truncating tokenizer for model input (a tokenizer.json).
    model: Tokenizer,
    /// Untruncated tokenizer for chunking (offsets into the original text).
    full: Tokenizer,
    /// OpenAI's byte-pair encoding instead of a tokenizer.json (a remote
    /// model that names one): `model` and `full` are then unused.
    bpe: Option<Bpe>,
    /// Keep the text each row is cut to ([`Encoded::text`]): a remote
    /// model is sent texts, not token ids.
    send_text: bool,
    prompt: Option<String>,
    do_lower_case: bool,
    max_seq_length: usize,
    /// Special tokens around each text ([CLS] … [SEP]); none for a static model.
    add_special: bool,
    special_tokens: usize,
    prompt_tokens: usize,
    pool_skip: usize,
    pad_id: u32,
    /// The tokenizer.json had transformers 4's XLM-R pre-tokenizer, which
    /// embedflow replaced (see [`correct_xlmr_pre_tokenizer`]).
    pre_tokenizer_corrected: bool,
}

/// A stock XLM-R (SentencePiece-Unigram) tokenizer.json, as transformers 4
/// wrote it, pre-tokenizes with a lone `Metaspace`: a whitespace-only text,
/// or one ending in a space, gets an extra lone `▁` token. transformers 5
/// (and so sentence-transformers 6) ignores that pre-tokenizer and builds
/// `WhitespaceSplit` + `Metaspace`, which never makes one. The same
/// correction here makes a user's own XLM-R export (multilingual-e5, …)
/// match sentence-transformers. Returns whether the layout was found.
pub fn correct_xlmr_pre_tokenizer(tokenizer: &mut serde_json::Value) -> bool {
    let unigram = tokenizer["model"]["type"] == "Unigram";
    let pre = &tokenizer["pre_tokenizer"];
    let lone_metaspace = pre["type"] == "Metaspace";
    if !(unigram && lone_metaspace) {
        return false;
    }
    let metaspace = pre.clone();
    tokenizer["pre_tokenizer"] = serde_json::json!({
        "type": "Sequence",
        "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace],
    });
    true
}

impl TextEncoder {
    pub fn new(cfg: &ModelConfig) -> Result<TextEncoder> {
        if let Some(name) = cfg.api.as_ref().and_then(|a| a.bpe.as_deref()) {
            return Self::with_bpe(cfg, Bpe::named(name)?);
        }
        let bad = |e: &dyn std::fmt::Display| {
            Error::model(
                cfg.dir.display(),
                format!("tokenizer.json cannot be loaded: {e}"),
            )
        };
        // Read once (an XLM-R tokenizer.json is 17 MB): the model's and the
        // chunker's tokenizers are clones.
        let text = std::fs::read_to_string(&cfg.tokenizer_path).map_err(|e| bad(&e))?;
        let mut json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e))?;
        let pre_tokenizer_corrected = correct_xlmr_pre_tokenizer(&mut json);
        if pre_tokenizer_corrected {
            tracing::info!(
                model = %cfg.name,
                "tokenizer.json has transformers 4's XLM-R pre-tokenizer (Metaspace alone); using WhitespaceSplit + Metaspace, as sentence-transformers does"
            );
        }
        let loaded: Tokenizer = if pre_tokenizer_corrected {
            json.to_string().parse()
        } else {
            text.parse()
        }
        .map_err(|e: tokenizers::Error| bad(&e))?;
        // The shipped tokenizer.json may carry its own truncation and fixed
        // padding (all-MiniLM-L6-v2: 128 and 128); sentence-transformers
        // overrides both, and so do we.
        let mut model = loaded.clone();
        // A static model truncates nothing (sentence-transformers'
        // StaticEmbedding tokenizes whole texts, without special tokens).
        let truncation = (!cfg.static_embedding).then_some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: cfg.max_seq_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        });
        model
            .with_truncation(truncation)
            .map_err(|e| Error::model(cfg.dir.display(), format!("tokenizer truncation: {e}")))?;
        let pad_id = model
            .get_padding()
            .map(|p: &PaddingParams| p.pad_id)
            .unwrap_or(0);
        model.with_padding(None);
        let mut full = loaded;
        full.with_truncation(None)
            .map_err(|e| Error::model(cfg.dir.display(), format!("tokenizer truncation: {e}")))?;
        full.with_padding(None);

        let add_special = !cfg.static_embedding;
        let special_tokens = match add_special {
            true => model
                .get_post_processor()
                .map(|p| p.added_tokens(false))
                .unwrap_or(0),
            false => 0,
        };
        let mut enc = TextEncoder {
            model,
            full,
            bpe: None,
            send_text: cfg.api.is_some(),
            prompt: cfg.prompt.clone(),
            do_lower_case: cfg.do_lower_case,
            max_seq_length: cfg.max_seq_length,
            add_special,
            special_tokens,
            prompt_tokens: 0,
            pool_skip: 0,
            pad_id,
            pre_tokenizer_corrected,
        };
        if let Some(p) = &cfg.prompt {
            enc.prompt_tokens = enc.full.encode(p.as_str(), false).map_err(tok_err)?.len();
            if !cfg.include_prompt {
                // As sentence-transformers: the prompt's tokens with the
                // leading special token, i.e. its length with specials minus one.
                enc.pool_skip = enc
                    .full
                    .encode(p.as_str(), add_special)
                    .map_err(tok_err)?
                    .len()
                    .saturating_sub(usize::from(add_special));
            }
        }
        if special_tokens + enc.prompt_tokens >= cfg.max_seq_length {
            return Err(Error::model(
                cfg.dir.display(),
                format!(
                    "max_seq_length {} leaves no room for text after {} special and {} prompt tokens",
                    cfg.max_seq_length, special_tokens, enc.prompt_tokens
                ),
            ));
        }
        Ok(enc)
    }

    /// A remote model's encoder: OpenAI's byte-pair encoding, no special
    /// tokens, the prompt prepended, cut at the input limit.
    fn with_bpe(cfg: &ModelConfig, bpe: Bpe) -> Result<TextEncoder> {
        // An empty tokenizer: never run (every method asks `bpe` first).
        let none = Tokenizer::new(tokenizers::models::bpe::BPE::default());
        let prompt_tokens = cfg.prompt.as_deref().map_or(0, |p| bpe.ids(p).len());
        if prompt_tokens >= cfg.max_seq_length {
            return Err(Error::model(
                &cfg.name,
                format!(
                    "the prompt takes {prompt_tokens} tokens of the {} an input may have",
                    cfg.max_seq_length
                ),
            ));
        }
        Ok(TextEncoder {
            model: none.clone(),
            full: none,
            bpe: Some(bpe),
            send_text: true,
            prompt: cfg.prompt.clone(),
            do_lower_case: false,
            max_seq_length: cfg.max_seq_length,
            add_special: false,
            special_tokens: 0,
            prompt_tokens,
            pool_skip: 0,
            pad_id: 0,
            pre_tokenizer_corrected: false,
        })
    }

    /// Tokens for the model: the prompt and the text, truncated to max_seq_length.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        if let Some(bpe) = &self.bpe {
            return Ok(self.encode_bpe(bpe, text));
        }
        let lowered;
        let text = if self.do_lower_case {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        // The tokenizer truncates only after tokenizing everything, which
        // for a long text costs far more memory than the text itself (about
        // 125 bytes per byte). A prefix cut before a whitespace run tokenizes
        // to a prefix of the whole text's tokens, so once a prefix fills
        // max_seq_length the rest cannot change the result.
        let mut end = text.len();
        if text.len() > WINDOW {
            end = cut_before_space(text, WINDOW);
        }
        loop {
            let input = self.with_prompt(&text[..end]);
            let enc = self
                .model
                .encode(input.as_ref(), self.add_special)
                .map_err(tok_err)?;
            if end == text.len() || enc.len() >= self.max_seq_length {
                let text = match self.send_text {
                    true => self.sent_text(&enc, &input),
                    false => String::new(),
                };
                return Ok(Encoded {
                    ids: enc.get_ids().to_vec(),
                    type_ids: enc.get_type_ids().to_vec(),
                    pixels: Vec::new(),
                    text,
                });
            }
            let longer = cut_before_space(text, end.saturating_mul(2));
            // No whitespace run after the cut: the rest is one word.
            end = if longer > end { longer } else { text.len() };
        }
    }

    /// The prompt and the text, as the model reads them.
    fn with_prompt<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        match &self.prompt {
            Some(p) => format!("{p}{text}").into(),
            None => text.into(),
        }
    }

    /// What a remote model is sent for `whole` (the prompt and the text)
    /// encoded as `enc`: cut after the last token kept when it was
    /// truncated.
    fn sent_text(&self, enc: &tokenizers::Encoding, whole: &str) -> String {
        if enc.get_overflowing().is_empty() && enc.len() < self.max_seq_length {
            return whole.to_string();
        }
        let end = enc
            .get_offsets()
            .iter()
            .zip(enc.get_special_tokens_mask())
            .filter(|(_, special)| **special == 0)
            .map(|((_, e), _)| *e)
            .max()
            .unwrap_or(0);
        whole[..whole.floor_char_boundary(end)].to_string()
    }

    /// [`encode`](Self::encode) with a byte-pair encoding: the prompt and
    /// the text, cut after max_seq_length tokens. A long text is encoded a
    /// growing prefix at a time, as with a tokenizer.json.
    fn encode_bpe(&self, bpe: &Bpe, text: &str) -> Encoded {
        let whole = self.with_prompt(text);
        let max = self.max_seq_length;
        let mut end = cut_before_space(&whole, WINDOW.min(whole.len().max(1)));
        loop {
            let pieces = bpe.pieces(&whole[..end]);
            if end == whole.len() || pieces.len() >= max {
                let kept = &pieces[..pieces.len().min(max)];
                let cut = if pieces.len() > max {
                    kept.last().map_or(0, |(_, r)| r.end)
                } else {
                    end
                };
                return Encoded {
                    ids: kept.iter().map(|(id, _)| *id).collect(),
                    type_ids: vec![0; kept.len()],
                    pixels: Vec::new(),
                    text: whole[..cut].to_string(),
                };
            }
            let longer = cut_before_space(&whole, end.saturating_mul(2));
            end = if longer > end { longer } else { whole.len() };
        }
    }

    /// Token ids of `text` alone, no special tokens, no truncation, no prompt
    /// (what a chunk's window holds).
    pub fn encode_untruncated_ids(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(bpe) = &self.bpe {
            return Ok(bpe.ids(text));
        }
        Ok(self
            .full
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Tokens of the whole text for the chunker: byte offsets into `text`
    /// and word starts, special tokens excluded, no truncation.
    ///
    /// A long text is tokenized in windows of about [`WINDOW`] bytes, each cut
    /// before a whitespace run, so that memory stays bounded (a 20 MB
    /// document tokenized at once takes gigabytes). Every pre-tokenizer of
    /// the supported models splits at whitespace, so the windows' tokens are
    /// the whole text's tokens.
    pub fn chunk_tokens(&self, text: &str) -> Result<Vec<chunk::Token>> {
        let mut out = Vec::new();
        let mut from = 0;
        while from < text.len() {
            let to = from + cut_before_space(&text[from..], WINDOW);
            if let Some(bpe) = &self.bpe {
                bpe_tokens(bpe, text, from..to, &mut out);
                from = to;
                continue;
            }
            let enc = self.full.encode(&text[from..to], false).map_err(tok_err)?;
            let words = enc.get_word_ids();
            out.reserve(enc.len());
            for (i, &(start, end)) in enc.get_offsets().iter().enumerate() {
                let word_start = i == 0 || words[i].is_none() || words[i] != words[i - 1];
                out.push(chunk::Token {
                    start: from + start,
                    end: from + end,
                    word_start,
                });
            }
            from = to;
        }
        Ok(out)
    }

    /// The longest chunk, in tokens, that fits the model with its special
    /// tokens and the prompt.
    pub fn default_max_tokens(&self) -> usize {
        self.max_seq_length - self.special_tokens - self.prompt_tokens
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Whether texts are cut at max_seq_length (not for a static model).
    pub fn truncates(&self) -> bool {
        self.add_special
    }

    /// Token ids the tokenizer can give, added tokens included: the model's
    /// embedding table must have at least this many rows.
    pub fn vocab_size(&self) -> usize {
        if self.bpe.is_some() {
            return 0;
        }
        self.model.get_vocab_size(true)
    }

    /// Tokens at the start of each row that pooling leaves out.
    pub fn pool_skip(&self) -> usize {
        self.pool_skip
    }

    /// The tokenizer's algorithm (WordPiece, Unigram, BPE, …), its
    /// vocabulary size and the special tokens added around each text.
    pub fn describe(&self) -> (String, usize, usize) {
        if let Some(bpe) = &self.bpe {
            return (format!("BPE ({})", bpe.name), 0, 0);
        }
        let kind = serde_json::to_value(self.model.get_model())
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        (kind, self.model.get_vocab_size(true), self.special_tokens)
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Whether the tokenizer.json's XLM-R pre-tokenizer was corrected.
    pub fn pre_tokenizer_corrected(&self) -> bool {
        self.pre_tokenizer_corrected
    }
}

/// Texts longer than this (bytes) are tokenized in windows of about this size.
pub const WINDOW: usize = 128 * 1024;

/// Where to cut `text` so that the first part has at most `limit` bytes: just
/// before the last whitespace run that starts within the limit (the run goes
/// with the next part, as the tokenizers' pre-tokenizers would treat it),
/// else at the last char boundary within the limit. Never returns 0 for a
/// non-empty text, and the whole length when it fits.
pub fn cut_before_space(text: &str, limit: usize) -> usize {
    if text.len() <= limit {
        return text.len();
    }
    let head = &text[..text.floor_char_boundary(limit)];
    let mut run_start = None;
    for (i, c) in head.char_indices().rev() {
        if c.is_whitespace() {
            run_start = Some(i);
        } else if run_start.is_some() {
            break;
        }
    }
    match run_start {
        Some(i) if i > 0 => i,
        _ => {
            let b = head.len();
            if b > 0 { b } else { text.ceil_char_boundary(1) }
        }
    }
}

/// The chunker's tokens of `text[window]` by a byte-pair encoding: a
/// token starts a word when whitespace comes before it or begins it.
fn bpe_tokens(bpe: &Bpe, text: &str, window: std::ops::Range<usize>, out: &mut Vec<chunk::Token>) {
    let from = window.start;
    let part = &text[window];
    for (_, r) in bpe.pieces(part) {
        let (start, end) = (from + r.start, from + r.end);
        let space_before = text[..start]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        let space_first = text[start..]
            .chars()
            .next()
            .is_some_and(char::is_whitespace);
        out.push(chunk::Token {
            start,
            end,
            word_start: space_before || space_first,
        });
    }
}

fn tok_err(e: tokenizers::Error) -> Error {
    Error::Data(format!("tokenizer failed: {e}"))
}
