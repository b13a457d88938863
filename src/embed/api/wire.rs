//! The OpenAI embeddings wire format: what one request sends and what its
//! answer holds. Servers that call themselves OpenAI-compatible differ in
//! the details, so the reader is lenient where the meaning is clear (a
//! vector as base64 or as numbers, `usage` missing) and strict where a
//! mistake would misplace a vector (the count, the indices, the width).

use base64::Engine;
use serde_json::{Value, json};

/// The body of `POST …/embeddings` for `texts`.
pub fn request_body(
    model: &str,
    texts: &[&str],
    dimensions: Option<usize>,
    base64: bool,
) -> Vec<u8> {
    let mut body = json!({ "model": model, "input": texts });
    if base64 {
        body["encoding_format"] = json!("base64");
    }
    if let Some(d) = dimensions {
        body["dimensions"] = json!(d);
    }
    body.to_string().into_bytes()
}

/// What a successful answer holds.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// rows × dim floats, in the request's order.
    pub vectors: Vec<f32>,
    pub dim: usize,
    /// The model string the server says it ran.
    pub model: Option<String>,
    /// Tokens the server counted (billed), when it says.
    pub prompt_tokens: Option<u64>,
}

/// Reads an answer to a request of `rows` inputs. An answer that cannot be
/// placed row by row (another count, a missing index, rows of different
/// widths, a vector that is not numbers) is an error that says so.
pub fn read_answer(body: &[u8], rows: usize) -> Result<Answer, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let data = v["data"]
        .as_array()
        .ok_or("the answer has no \"data\" list")?;
    if data.len() != rows {
        return Err(format!(
            "the answer holds {} vectors for {rows} inputs",
            data.len()
        ));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; rows];
    for (k, item) in data.iter().enumerate() {
        // Servers that leave out "index" answer in order.
        let i = match &item["index"] {
            Value::Null => k,
            x => x
                .as_u64()
                .map(|i| i as usize)
                .ok_or_else(|| format!("data[{k}].index is not a number: {x}"))?,
        };
        let slot = slots
            .get_mut(i)
            .ok_or_else(|| format!("data[{k}].index is {i}, past the {rows} inputs"))?;
        if slot.is_some() {
            return Err(format!("two vectors for input {i}"));
        }
        *slot =
            Some(read_vector(&item["embedding"]).map_err(|e| format!("data[{k}].embedding {e}"))?);
    }
    let dim = slots.first().and_then(|s| s.as_ref()).map_or(0, Vec::len);
    let mut vectors = Vec::with_capacity(rows * dim);
    for (i, s) in slots.into_iter().enumerate() {
        let s = s.ok_or_else(|| format!("no vector for input {i}"))?;
        if s.len() != dim {
            return Err(format!(
                "input {i} has a vector of {} values, input 0 one of {dim}",
                s.len()
            ));
        }
        vectors.extend(s);
    }
    if dim == 0 && rows > 0 {
        return Err("the vectors are empty".into());
    }
    Ok(Answer {
        vectors,
        dim,
        model: v["model"].as_str().map(str::to_string),
        prompt_tokens: v["usage"]["prompt_tokens"]
            .as_u64()
            .or_else(|| v["usage"]["total_tokens"].as_u64()),
    })
}

/// One vector: a list of numbers, or base64 of little-endian f32.
fn read_vector(x: &Value) -> Result<Vec<f32>, String> {
    match x {
        Value::String(s) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("is not base64 ({e})"))?;
            if bytes.len() % 4 != 0 {
                return Err(format!(
                    "is {} bytes of base64, not whole floats",
                    bytes.len()
                ));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        }
        Value::Array(a) => a
            .iter()
            .map(|n| {
                n.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| format!("holds {n}, not a number"))
            })
            .collect(),
        other => Err(format!(
            "is neither a list of numbers nor base64: {}",
            short(&other.to_string())
        )),
    }
}

/// The server's own words from an error body: OpenAI's
/// `{"error": {"message": …}}`, a bare `{"detail"|"message"|"error": "…"}`,
/// or the start of the text.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return short(text.trim());
    };
    let found = [
        &v["error"]["message"],
        &v["error"],
        &v["detail"],
        &v["message"],
    ]
    .into_iter()
    .find_map(|x| match x {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Object(_) => None,
        other => Some(other.to_string()),
    });
    short(found.as_deref().unwrap_or(text.trim()))
}

/// At most 300 characters of a server's text (an HTML error page is long).
pub fn short(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Whether the server's words say the input was too long for it (a
/// token limit), which splitting the request may cure.
pub fn says_too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "maximum context length",
        "too many tokens",
        "too long",
        "max_tokens_per_request",
        "maximum request size",
        "exceeds",
        "payload too large",
        "too large",
    ]
    .iter()
    .any(|p| m.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &[f32]) -> String {
        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn answers_in_any_order_as_numbers_or_base64() {
        let body = json!({
            "model": "m-1",
            "data": [
                {"index": 1, "embedding": b64(&[3.0, 4.0])},
                {"index": 0, "embedding": [1.0, 2.0]},
            ],
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        });
        let a = read_answer(body.to_string().as_bytes(), 2).unwrap();
        assert_eq!(a.vectors, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            (a.dim, a.prompt_tokens, a.model.as_deref()),
            (2, Some(7), Some("m-1"))
        );
    }

    #[test]
    fn answers_that_cannot_be_placed_are_refused() {
        let two = |d: Value| json!({"data": d}).to_string();
        let cases = [
            (two(json!([{"embedding": [1.0]}])), "1 vectors for 2 inputs"),
            (
                two(json!([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}])),
                "two vectors for input 0",
            ),
            (
                two(json!([{"embedding": [1.0]}, {"embedding": [1.0, 2.0]}])),
                "input 1 has a vector of 2 values",
            ),
            (
                two(json!([{"embedding": [1.0]}, {"embedding": ["x"]}])),
                "not a number",
            ),
            (
                two(json!([{"embedding": [1.0]}, {"index": 5, "embedding": [1.0]}])),
                "past the 2 inputs",
            ),
            ("{\"data\": [".to_string(), "not JSON"),
        ];
        for (body, want) in cases {
            let e = read_answer(body.as_bytes(), 2).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn the_servers_own_words_are_kept_short() {
        let openai = br#"{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}"#;
        assert_eq!(error_message(openai), "Incorrect API key provided");
        assert_eq!(error_message(br#"{"detail": "Not Found"}"#), "Not Found");
        let page = "<html>".to_string() + &"x".repeat(1000);
        assert!(error_message(page.as_bytes()).chars().count() <= 301);
    }
}
