//! OpenAI's byte-pair encodings (tiktoken's `cl100k_base`, `o200k_base`),
//! for counting and cutting texts as a remote API counts them. The ranks
//! ship inside the `tiktoken-rs` crate: nothing is downloaded at run time.

use std::ops::Range;

use tiktoken_rs::CoreBPE;

use crate::{Error, Result};

/// The encodings embedflow knows by name.
pub const ENCODINGS: [&str; 2] = ["cl100k_base", "o200k_base"];

/// A byte-pair encoding and its name.
pub struct Bpe {
    pub name: &'static str,
    core: CoreBPE,
}

impl Bpe {
    /// The encoding called `name` (one of [`ENCODINGS`]).
    pub fn named(name: &str) -> Result<Bpe> {
        let (name, core) = match name {
            "cl100k_base" => ("cl100k_base", tiktoken_rs::cl100k_base()),
            "o200k_base" => ("o200k_base", tiktoken_rs::o200k_base()),
            other => {
                return Err(Error::Usage(format!(
                    "no byte-pair encoding called {other:?}: embedflow knows {}",
                    ENCODINGS.join(", ")
                )));
            }
        };
        let core = core.map_err(|e| Error::internal(format!("tiktoken {name}: {e}")))?;
        Ok(Bpe { name, core })
    }

    /// The encoding OpenAI's embedding models count with, for a model it
    /// knows (`text-embedding-3-*`, `text-embedding-ada-002`).
    pub fn of_openai_model(model: &str) -> Option<&'static str> {
        (model.starts_with("text-embedding-3") || model == "text-embedding-ada-002")
            .then_some("cl100k_base")
    }

    pub fn ids(&self, text: &str) -> Vec<u32> {
        self.core.encode_ordinary(text)
    }

    /// Each token of `text` with its bytes in `text`. A token that ends
    /// inside a character (byte-level merges can) ends before it instead,
    /// so that every range cuts `text` at character boundaries; the next
    /// token starts there.
    pub fn pieces(&self, text: &str) -> Vec<(u32, Range<usize>)> {
        let ids = self.core.encode_ordinary(text);
        let mut out = Vec::with_capacity(ids.len());
        let mut raw_end = 0;
        let mut start = 0;
        for (id, bytes) in ids
            .iter()
            .zip(self.core._decode_native_and_split(ids.clone()))
        {
            raw_end += bytes.len();
            let end = text.floor_char_boundary(raw_end.min(text.len()));
            out.push((*id, start..end));
            start = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_text_at_character_boundaries() {
        let bpe = Bpe::named("cl100k_base").unwrap();
        for text in [
            "hello world",
            "naïve café 東京 🦀🦀 done",
            "  spaced\n\nout  ",
            "",
        ] {
            let pieces = bpe.pieces(text);
            assert_eq!(pieces.len(), bpe.ids(text).len());
            let mut at = 0;
            for (_, r) in &pieces {
                assert_eq!(r.start, at);
                assert!(text.is_char_boundary(r.end));
                at = r.end;
            }
            assert_eq!(at, text.len(), "{text:?}");
        }
        // tiktoken's own example: "hello world" is two tokens.
        assert_eq!(bpe.ids("hello world"), vec![15339, 1917]);
    }

    #[test]
    fn unknown_encodings_are_named() {
        let e = Bpe::named("p50k").err().unwrap().to_string();
        assert!(e.contains("cl100k_base, o200k_base"), "{e}");
        assert_eq!(
            Bpe::of_openai_model("text-embedding-3-small"),
            Some("cl100k_base")
        );
        assert_eq!(Bpe::of_openai_model("all-minilm"), None);
    }
}
