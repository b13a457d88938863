//! One batch's way to the server: cut to the provider's limits, each
//! request paced, sent, and retried on passing failures (429 with its
//! `Retry-After`, 5xx, timeouts, broken connections and answers); a
//! request the server finds too large, or one input in it refuses, is
//! split in halves until the culprit stands alone.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Api, ApiSettings, Key, pace, wire};
use crate::{Error, Result};

/// Why a request did not give vectors.
#[derive(Debug)]
pub(super) enum Failure {
    /// Passing: worth another attempt after a pause (the server's, when
    /// it names one).
    Retry {
        cause: Cause,
        after: Option<Duration>,
        message: String,
    },
    /// The server finds the request too large (413, a token-limit error).
    TooLarge(String),
    /// The server refused what was sent (another 4xx).
    Refused { status: u16, message: String },
    /// Ctrl-C or another stage's failure.
    Interrupted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    RateLimited,
    ServerError,
    Timeout,
    Connection,
    BadAnswer,
}

impl Cause {
    fn name(self) -> &'static str {
        match self {
            Cause::RateLimited => "rate limited (429)",
            Cause::ServerError => "server error",
            Cause::Timeout => "timed out",
            Cause::Connection => "connection failed",
            Cause::BadAnswer => "unusable answer",
        }
    }
}

/// The pause before retry `attempt` (1, 2, …) when the server names
/// none: exponential from half a second, at most a minute, with full
/// jitter so that request threads do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let cap = (0.5 * 2f64.powi(attempt.saturating_sub(1).min(16) as i32)).min(60.0);
    Duration::from_secs_f64(cap * (0.5 + 0.5 * rand::random::<f64>()))
}

impl Api {
    /// Embeds `texts` (with their token counts) in as many requests as the
    /// limits need; returns rows × dim floats in order.
    pub(super) async fn embed_split(&self, texts: &[&str], tokens: &[usize]) -> Result<Vec<f32>> {
        let mut todo: Vec<Range<usize>> = self.fit(texts, tokens);
        todo.reverse();
        let mut done: Vec<(usize, Vec<f32>)> = Vec::new();
        while let Some(r) = todo.pop() {
            let id = self.next_request.fetch_add(1, Ordering::Relaxed);
            match self
                .attempts(&texts[r.clone()], &tokens[r.clone()], id)
                .await
            {
                Ok(a) => done.push((r.start, a.vectors)),
                Err(
                    Failure::TooLarge(_)
                    | Failure::Refused {
                        status: 400 | 413 | 422,
                        ..
                    },
                ) if r.len() > 1 => {
                    // Halves, the first half first.
                    self.counters.splits.fetch_add(1, Ordering::Relaxed);
                    let mid = r.start + r.len() / 2;
                    todo.push(mid..r.end);
                    todo.push(r.start..mid);
                }
                Err(Failure::Refused {
                    status: 400 | 422,
                    message,
                }) if self.settings.skip_refused && r.len() == 1 => {
                    let what = describe_request(id, &r, texts);
                    tracing::warn!(
                        "{what}: the server refused it, left out: {}",
                        scrub(&message, &self.key)
                    );
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    let dim = self.dim().unwrap_or(1);
                    done.push((r.start, vec![f32::NAN; dim]));
                }
                Err(f) => {
                    let what = describe_request(id, &r, texts);
                    return Err(f.into_error(&self.settings, &self.key, &what));
                }
            }
        }
        done.sort_by_key(|(start, _)| *start);
        Ok(done.into_iter().flat_map(|(_, v)| v).collect())
    }

    /// Cuts a batch into requests within the inputs, tokens and body-size
    /// limits, in order.
    fn fit(&self, texts: &[&str], tokens: &[usize]) -> Vec<Range<usize>> {
        let l = &self.settings.limits;
        let mut out = Vec::new();
        let (mut start, mut sum_tokens, mut bytes) = (0, 0, 0);
        for (i, (t, &n)) in texts.iter().zip(tokens).enumerate() {
            // JSON escapes can double a text; quotes and a comma around it.
            let b = 2 * t.len() + 4;
            let full = i > start
                && (i - start >= l.max_inputs_per_request
                    || sum_tokens + n > l.max_tokens_per_request
                    || bytes + b > l.max_request_bytes);
            if full {
                out.push(start..i);
                (start, sum_tokens, bytes) = (i, 0, 0);
            }
            sum_tokens += n;
            bytes += b;
        }
        if start < texts.len() {
            out.push(start..texts.len());
        }
        out
    }

    /// One request, paced and retried up to `max_retries`.
    pub(super) async fn attempts(
        &self,
        texts: &[&str],
        tokens: &[usize],
        id: u64,
    ) -> Result<wire::Answer, Failure> {
        let n_tokens: usize = tokens.iter().sum();
        let mut attempt = 0;
        loop {
            let wait = self.pacer.reserve(n_tokens as u64);
            if !wait.is_zero() {
                pause(wait).await?;
            }
            let failure = match self.request(texts, tokens, id).await {
                Ok(a) => return Ok(a),
                Err(f) => f,
            };
            let Failure::Retry {
                cause,
                after,
                message,
            } = failure
            else {
                return Err(failure);
            };
            if attempt >= self.settings.pacing.max_retries {
                return Err(Failure::Retry {
                    cause,
                    after,
                    message,
                });
            }
            attempt += 1;
            self.count_retry(cause);
            let d = after.unwrap_or_else(|| backoff(attempt));
            if cause == Cause::RateLimited {
                // Every request thread holds back, not only this one.
                self.pacer.hold(d);
            }
            tracing::warn!(
                request = id,
                attempt,
                cause = cause.name(),
                wait_seconds = d.as_secs_f64(),
                "retrying: {}",
                scrub(&message, &self.key)
            );
            pause(d).await?;
        }
    }

    fn count_retry(&self, cause: Cause) {
        let c = &self.counters;
        let counter = match cause {
            Cause::RateLimited => &c.retries_rate_limited,
            Cause::ServerError => &c.retries_server_error,
            Cause::Timeout => &c.retries_timeout,
            Cause::Connection => &c.retries_connection,
            Cause::BadAnswer => &c.retries_bad_answer,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt: the request, its answer read and checked.
    async fn request(
        &self,
        texts: &[&str],
        tokens: &[usize],
        id: u64,
    ) -> Result<wire::Answer, Failure> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let s = &self.settings;
        let body = wire::request_body(&s.model, texts, s.dimensions, true);
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if !self.key.is_empty() {
            req = match s.api_version {
                Some(_) => req.header("api-key", &self.key.0),
                None => req.bearer_auth(&self.key.0),
            };
        }
        let call = async {
            let resp = req.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        };
        let (status, headers, bytes) = tokio::select! {
            biased;
            _ = crate::cancel::wait() => return Err(Failure::Interrupted),
            r = call => r.map_err(transport_failure)?,
        };
        let n_tokens: usize = tokens.iter().sum();
        if status.is_success() {
            self.pacer.observe(&headers, n_tokens as u64);
            return self.accept(&bytes, texts.len(), n_tokens, id);
        }
        Err(status_failure(status.as_u16(), &headers, &bytes))
    }

    /// A 2xx answer: vectors placed and checked against the probe's width.
    fn accept(
        &self,
        body: &[u8],
        rows: usize,
        n_tokens: usize,
        id: u64,
    ) -> Result<wire::Answer, Failure> {
        let bad = |message: String| Failure::Retry {
            cause: Cause::BadAnswer,
            after: None,
            message,
        };
        let a = wire::read_answer(body, rows).map_err(bad)?;
        if let Some(i) = a.vectors.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "input {} has a vector with {} in it",
                i / a.dim.max(1),
                a.vectors[i]
            )));
        }
        // A width only assumed (from a table) is the probe's to confirm.
        if let Some(d) = self.confirmed_dim()
            && a.dim != d
        {
            return Err(bad(format!(
                "vectors of {} values, where the probe's had {d}",
                a.dim
            )));
        }
        match a.prompt_tokens {
            Some(t) => self.counters.tokens_billed.fetch_add(t, Ordering::Relaxed),
            None => self
                .counters
                .tokens_unreported
                .fetch_add(n_tokens as u64, Ordering::Relaxed),
        };
        tracing::debug!(request = id, rows, tokens = n_tokens, "embedded by the API");
        Ok(a)
    }
}

/// What a failed status means.
fn status_failure(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> Failure {
    let message = format!("HTTP {status}: {}", wire::error_message(body));
    let after = pace::retry_after(headers);
    match status {
        // OpenAI answers a spent balance with 429 too: no retry cures it.
        429 if message.contains("insufficient_quota")
            || message.contains("exceeded your current quota") =>
        {
            Failure::Refused { status, message }
        }
        429 => Failure::Retry {
            cause: Cause::RateLimited,
            after,
            message,
        },
        408 | 409 | 500..=599 => Failure::Retry {
            cause: Cause::ServerError,
            after,
            message,
        },
        413 => Failure::TooLarge(message),
        400 | 422 if wire::says_too_long(&message) => Failure::TooLarge(message),
        _ => Failure::Refused { status, message },
    }
}

fn transport_failure(e: reqwest::Error) -> Failure {
    let cause = if e.is_timeout() {
        Cause::Timeout
    } else {
        Cause::Connection
    };
    // reqwest's chain says what broke (connection refused, reset, …).
    let mut message = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        message = format!("{message}: {s}");
        src = s.source();
    }
    Failure::Retry {
        cause,
        after: None,
        message,
    }
}

/// Sleeps, or returns early when the run is stopped.
async fn pause(d: Duration) -> Result<(), Failure> {
    tokio::select! {
        biased;
        _ = crate::cancel::wait() => Err(Failure::Interrupted),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// "request 7 (inputs 0–511 of the batch; the first begins "…")".
fn describe_request(id: u64, r: &Range<usize>, texts: &[&str]) -> String {
    let first: String = texts[r.start].chars().take(60).collect();
    let more = if texts[r.start].chars().count() > 60 {
        "…"
    } else {
        ""
    };
    match r.len() {
        1 => format!(
            "request {id} (input {} of the batch: \"{first}{more}\")",
            r.start
        ),
        n => format!(
            "request {id} ({n} inputs, {}–{} of the batch; the first begins \"{first}{more}\")",
            r.start,
            r.end - 1
        ),
    }
}

/// The server's words with anything that looks like the key taken out:
/// some servers echo the key they were given, in full or in part.
pub(super) fn scrub(message: &str, key: &Key) -> String {
    let k = &key.0;
    if k.len() < 6 {
        return message.to_string();
    }
    message
        .split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
        .map(|w| {
            let shares = (0..=k.len() - 6)
                .filter(|&i| k.is_char_boundary(i) && k.is_char_boundary(i + 6))
                .any(|i| w.contains(&k[i..i + 6]));
            if shares {
                let tail: String = w
                    .chars()
                    .rev()
                    .take_while(|c| !c.is_alphanumeric())
                    .collect();
                format!("[the key]{}", tail.chars().rev().collect::<String>())
            } else {
                w.to_string()
            }
        })
        .collect()
}

impl Failure {
    /// The error a user reads: the cause, the server's words (the key
    /// scrubbed), the request and its rows, and what to do.
    pub(super) fn into_error(self, s: &ApiSettings, key: &Key, what: &str) -> Error {
        let model = &s.model;
        match self {
            Failure::Interrupted => Error::Interrupted,
            Failure::Retry { cause, message, .. } => Error::Api(format!(
                "{what}: {} after {} retries: {}",
                cause.name(),
                s.pacing.max_retries,
                scrub(&message, key)
            )),
            Failure::TooLarge(message) => Error::Api(format!(
                "{what}: the server finds a single input too large ({}); lower model.max_input_tokens \
                 (or chunking.max_tokens) to what {model} takes",
                scrub(&message, key)
            )),
            Failure::Refused {
                status: 401 | 403,
                message,
            } => Error::Api(format!(
                "{what}: the server refused the key from ${} ({}); check the key and that it may use {model}",
                s.api_key_env,
                scrub(&message, key)
            )),
            Failure::Refused {
                status: 404,
                message,
            } => Error::Api(format!(
                "{what}: {} answered {} : check model.base_url and model.name ({model})",
                s.url(),
                scrub(&message, key)
            )),
            Failure::Refused { message, .. } => Error::Api(format!(
                "{what}: the server refused it: {}",
                scrub(&message, key)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_minute_with_jitter() {
        for a in 1..20 {
            let d = backoff(a).as_secs_f64();
            let cap = (0.5 * 2f64.powi(a as i32 - 1)).min(60.0);
            assert!(d >= cap / 2.0 && d <= cap, "attempt {a}: {d}");
        }
    }

    #[test]
    fn statuses_mean_what_they_say() {
        let h = reqwest::header::HeaderMap::new();
        let f = |s, b: &str| status_failure(s, &h, b.as_bytes());
        assert!(matches!(
            f(429, "{}"),
            Failure::Retry {
                cause: Cause::RateLimited,
                ..
            }
        ));
        assert!(matches!(
            f(
                429,
                r#"{"error": {"message": "You exceeded your current quota"}}"#
            ),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            f(503, "busy"),
            Failure::Retry {
                cause: Cause::ServerError,
                ..
            }
        ));
        assert!(matches!(f(413, ""), Failure::TooLarge(_)));
        assert!(matches!(
            f(
                400,
                r#"{"error": {"message": "This model's maximum context length is 8192 tokens"}}"#
            ),
            Failure::TooLarge(_)
        ));
        assert!(matches!(f(401, "no"), Failure::Refused { status: 401, .. }));
    }

    #[test]
    fn the_key_is_scrubbed_whole_or_in_part() {
        let key = Key("sk-proj-abcdefghijklmnop".into());
        let m = "Incorrect API key provided: sk-proj-abcd************mnop. You can find…";
        let s = scrub(m, &key);
        assert!(!s.contains("abcd") && s.contains("[the key]."), "{s}");
        assert_eq!(scrub("nothing here", &key), "nothing here");
        let whole = format!("echo \"{}\"", key.0);
        assert!(
            !scrub(&whole, &key).contains("sk-proj"),
            "{}",
            scrub(&whole, &key)
        );
    }
}
