//! Pacing requests within a provider's limits: requests and tokens per
//! minute as token buckets (a request waits until both have room), and the
//! server's own `x-ratelimit-*` headers, which hold every request back
//! until the reset the server names when it says nothing is left.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The share of a minute's allowance that may go out at once (the bucket's
/// depth). A full minute at once would let the first minute send twice its
/// limit against a server that counts by fixed windows.
const BURST: f64 = 0.1;

/// One limit as a bucket: `rate` units per second, `depth` units deep.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    depth: f64,
    /// When the bucket is next empty of debt (GCRA's theoretical arrival).
    tat: Option<Instant>,
}

impl Bucket {
    fn per_minute(n: u64) -> Bucket {
        let rate = n as f64 / 60.0;
        Bucket {
            rate,
            depth: (n as f64 * BURST).max(1.0),
            tat: None,
        }
    }

    /// Takes `cost` units; returns how long to wait before sending. A
    /// request larger than the depth is charged in full: it waits for its
    /// excess, so the rate holds whatever the requests' sizes.
    fn take(&mut self, cost: f64, now: Instant) -> Duration {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let new_tat = tat + Duration::from_secs_f64(cost / self.rate);
        self.tat = Some(new_tat);
        let allowed_from = new_tat.checked_sub(Duration::from_secs_f64(self.depth / self.rate));
        allowed_from.map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }
}

/// The limits of a run, shared by its request threads.
#[derive(Debug, Default)]
pub struct Pacer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    /// The server said a limit is spent: nothing goes before this.
    hold_until: Option<Instant>,
}

impl Pacer {
    pub fn new(requests_per_minute: Option<u64>, tokens_per_minute: Option<u64>) -> Pacer {
        Pacer {
            state: Mutex::new(State {
                requests: requests_per_minute.map(Bucket::per_minute),
                tokens: tokens_per_minute.map(Bucket::per_minute),
                hold_until: None,
            }),
        }
    }

    /// How long a request of `tokens` must wait before it is sent (its
    /// place in both buckets is taken now).
    pub fn reserve(&self, tokens: u64) -> Duration {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = s
            .hold_until
            .map_or(Duration::ZERO, |h| h.saturating_duration_since(now));
        if let Some(b) = s.requests.as_mut() {
            wait = wait.max(b.take(1.0, now));
        }
        if let Some(b) = s.tokens.as_mut() {
            wait = wait.max(b.take(tokens as f64, now));
        }
        wait
    }

    /// Holds every request back for `d` (the server's words: a 429's
    /// `Retry-After`, or a limit its headers say is spent).
    pub fn hold(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.hold_until = Some(s.hold_until.map_or(until, |h| h.max(until)));
    }

    /// Reads the server's `x-ratelimit-*` headers after an answer: when it
    /// says no request or too few tokens are left, nothing goes until its
    /// reset.
    pub fn observe(&self, headers: &reqwest::header::HeaderMap, next_tokens: u64) {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| get(name).and_then(|v| v.trim().parse::<u64>().ok());
        let reset = |name: &str| get(name).and_then(parse_reset);
        if number("x-ratelimit-remaining-requests") == Some(0)
            && let Some(d) = reset("x-ratelimit-reset-requests")
        {
            self.hold(d);
        }
        if number("x-ratelimit-remaining-tokens").is_some_and(|t| t < next_tokens)
            && let Some(d) = reset("x-ratelimit-reset-tokens")
        {
            self.hold(d);
        }
    }
}

/// A reset as OpenAI writes it (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) or as
/// plain seconds (`12`, `0.5`).
pub fn parse_reset(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// A `Retry-After` (seconds; an HTTP date is read as "a second"), or
/// OpenAI's `retry-after-ms`.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let v = get("retry-after")?.trim();
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
        _ => Some(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_as_openai_writes_them() {
        let s = |x: f64| Some(Duration::from_secs_f64(x));
        assert_eq!(parse_reset("1s"), s(1.0));
        assert_eq!(parse_reset("6m0s"), s(360.0));
        assert_eq!(parse_reset("20ms"), s(0.02));
        assert_eq!(parse_reset("1h2m3.5s"), s(3723.5));
        assert_eq!(parse_reset("0.5"), s(0.5));
        assert_eq!(parse_reset("soon"), None);
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_paces_at_its_rate() {
        // 600 tokens a minute: 10 a second, 60 at once.
        let mut b = Bucket::per_minute(600);
        let t0 = Instant::now();
        assert_eq!(b.take(60.0, t0), Duration::ZERO);
        let w = b.take(10.0, t0);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
        // Over a minute of steady asking, what goes out is the rate.
        let mut b = Bucket::per_minute(600);
        let mut sent_by = Duration::ZERO;
        for _ in 0..100 {
            sent_by = sent_by.max(b.take(10.0, t0));
        }
        // 1,000 tokens: 60 at once, then 940 at 10 a second.
        assert!((sent_by.as_secs_f64() - 94.0).abs() < 1e-6, "{sent_by:?}");
        // Requests twice the depth: each waits for its excess, and the
        // rate holds (ten of 120 tokens: 1,200 by 114 s, not at once).
        let mut b = Bucket::per_minute(600);
        let waits: Vec<f64> = (0..10).map(|_| b.take(120.0, t0).as_secs_f64()).collect();
        assert!((waits[0] - 6.0).abs() < 1e-6, "{waits:?}");
        assert!((waits[9] - 114.0).abs() < 1e-6, "{waits:?}");
    }
}
