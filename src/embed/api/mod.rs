//! Remote embedding APIs: OpenAI's, Azure OpenAI's, and every server that
//! speaks the same `POST …/embeddings` (vLLM, TEI, llama.cpp, Ollama,
//! infinity, LM Studio). An [`Api`] is shared by the run's request
//! threads; each [`ApiBackend`] is one of them, behind the same
//! [`EmbedBackend`] seam as an ONNX Runtime session.
//!
//! The key is read from the environment and lives in a [`Key`], which
//! never prints: not in errors, logs, the lineage or the report.

mod config;
pub mod pace;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::backend::{BackendInfo, EmbedBackend, InputKind, Needs, Remote};
use super::session::Device;
use super::tokenize::Encoded;
use crate::{Error, Result};
use pace::Pacer;

mod send;

/// OpenAI's API, the default `base_url`.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The environment variable the key is read from by default.
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";

/// What the job says about a remote model and how to call it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiSettings {
    /// The provider's wire format (`openai`, the only one today).
    pub provider: String,
    /// The model the server is asked for (`text-embedding-3-small`).
    pub model: String,
    /// `…/v1` of an OpenAI-compatible server, or an Azure OpenAI
    /// deployment (`https://NAME.openai.azure.com/openai/deployments/DEPLOYMENT`).
    pub base_url: String,
    /// The environment variable holding the key.
    pub api_key_env: String,
    /// Azure OpenAI's `api-version` (its presence selects Azure's
    /// `api-key` header).
    pub api_version: Option<String>,
    /// Matryoshka truncation (`dimensions` in the request).
    pub dimensions: Option<usize>,
    /// The byte-pair encoding texts are counted and cut with
    /// (`cl100k_base`, `o200k_base`), when no tokenizer.json is named.
    pub bpe: Option<String>,
    /// A self-hosted model's own tokenizer.json (`model.tokenizer`).
    pub tokenizer_file: Option<std::path::PathBuf>,
    pub limits: Limits,
    pub pacing: Pacing,
    /// Dollars per million tokens, for the estimated cost.
    pub price_per_million_tokens: Option<f64>,
    /// An input the server refuses on its own (`embed.on_error = "skip"`)
    /// gets a NaN vector, which the embed stage leaves out, instead of
    /// stopping the run.
    pub skip_refused: bool,
}

/// The provider's limits on what one request may hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Tokens one input may have (longer texts are cut, or chunked).
    pub max_input_tokens: usize,
    pub max_inputs_per_request: usize,
    pub max_tokens_per_request: usize,
    /// Bytes of one request's body.
    pub max_request_bytes: usize,
}

impl Limits {
    /// OpenAI's published limits for its embedding models.
    pub const OPENAI: Limits = Limits {
        max_input_tokens: 8_192,
        max_inputs_per_request: 2_048,
        max_tokens_per_request: 300_000,
        max_request_bytes: 16 << 20,
    };
}

/// How hard the run may press the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pacing {
    /// Requests in flight at once.
    pub concurrency: usize,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    /// Retries of one request (429, 5xx, timeouts, broken answers).
    pub max_retries: u32,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// A run that would send more tokens is refused before it sends any.
    pub max_tokens_per_run: Option<u64>,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            concurrency: 4,
            requests_per_minute: None,
            tokens_per_minute: None,
            max_retries: 6,
            timeout: Duration::from_secs(120),
            max_tokens_per_run: None,
        }
    }
}

impl ApiSettings {
    /// The embeddings endpoint.
    pub fn url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        match &self.api_version {
            Some(v) => format!("{base}/embeddings?api-version={v}"),
            None => format!("{base}/embeddings"),
        }
    }

    /// The server's host (and port), what the lineage records.
    pub fn host(&self) -> String {
        url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .unwrap_or_default()
    }
}

/// An API key. Never printed: `Debug` shows its length only.
#[derive(Clone)]
pub struct Key(String);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} characters)", self.0.len())
    }
}

impl Key {
    /// The key from `var`; a missing or empty one is an error that names
    /// the variable (never a value).
    pub fn from_env(var: &str) -> Result<Key> {
        match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => Ok(Key(k.trim().to_string())),
            _ => Err(Error::Api(format!(
                "no API key: set {var} (or model.api_key_env to the variable that holds it)"
            ))),
        }
    }

    /// The key a keyless local server takes: any, so none is sent.
    pub fn none() -> Key {
        Key(String::new())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the run's requests did, for the summary.
#[derive(Debug, Default)]
pub struct ApiCounters {
    pub requests: AtomicU64,
    pub retries_rate_limited: AtomicU64,
    pub retries_server_error: AtomicU64,
    pub retries_timeout: AtomicU64,
    pub retries_connection: AtomicU64,
    pub retries_bad_answer: AtomicU64,
    /// Requests split in two because the server found them too large.
    pub splits: AtomicU64,
    /// Inputs the server refused on their own, left out (`on_error = "skip"`).
    pub refused: AtomicU64,
    /// Tokens the server said it counted (its `usage`).
    pub tokens_billed: AtomicU64,
    /// Tokens sent in answers without `usage` (counted by us).
    pub tokens_unreported: AtomicU64,
}

impl ApiCounters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A remote model: its settings, its key, one HTTP client, one pacer and
/// the counters, shared by the run's request threads.
pub struct Api {
    pub settings: ApiSettings,
    key: Key,
    client: reqwest::Client,
    url: String,
    pacer: Pacer,
    pub counters: ApiCounters,
    /// The vectors' width and the model string the server answered the
    /// probe with.
    dim: OnceLock<usize>,
    server_model: OnceLock<String>,
    /// Width and model string were assumed, not yet asked for.
    unconfirmed: AtomicBool,
    /// Numbers requests in errors and logs.
    next_request: AtomicU64,
    runtime: Runtime,
}

/// Where requests run: the caller's tokio runtime, or one of the Api's own
/// when it is used outside any (a test, a CPU thread of a command).
enum Runtime {
    Shared(tokio::runtime::Handle),
    Own(tokio::runtime::Runtime),
}

impl Runtime {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Runtime::Shared(h) => h.block_on(f),
            Runtime::Own(r) => r.block_on(f),
        }
    }
}

impl Api {
    /// Builds the client for `settings` with `key`.
    pub fn new(settings: ApiSettings, key: Key) -> Result<Api> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(settings.pacing.timeout)
            .user_agent(concat!("embedflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Api(format!("cannot build the HTTP client: {e}")))?;
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(h) => Runtime::Shared(h),
            Err(_) => Runtime::Own(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::internal(format!("a runtime for API requests: {e}")))?,
            ),
        };
        Ok(Api {
            url: settings.url(),
            pacer: Pacer::new(
                settings.pacing.requests_per_minute,
                settings.pacing.tokens_per_minute,
            ),
            settings,
            key,
            client,
            counters: ApiCounters::default(),
            dim: OnceLock::new(),
            server_model: OnceLock::new(),
            unconfirmed: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
            runtime,
        })
    }

    /// The key from the settings' variable; for a server on this machine
    /// (`localhost`, `127.0.0.1`) a missing key is no key.
    pub fn open(settings: ApiSettings) -> Result<Api> {
        let local = matches!(
            url::Url::parse(&settings.base_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .as_deref(),
            Some("localhost" | "127.0.0.1" | "[::1]")
        );
        let key = match Key::from_env(&settings.api_key_env) {
            Err(_) if local => Key::none(),
            k => k?,
        };
        Api::new(settings, key)
    }

    /// One small request before any row is read: a wrong key, URL, model
    /// or `dimensions` fails here, once, with the server's words. Returns
    /// the vectors' width.
    pub fn probe(&self) -> Result<usize> {
        let (dim, model) = self.probe_request()?;
        let _ = self.dim.set(dim);
        if let Some(m) = model {
            let _ = self.server_model.set(m);
        }
        Ok(dim)
    }

    /// Takes the width and model string of vectors already embedded (an
    /// incremental run's table) instead of asking: a run with nothing to
    /// embed sends no request. [`Api::confirm`] asks before the first row.
    pub fn assume(&self, dim: usize, server_model: &str) {
        let _ = self.dim.set(dim);
        if !server_model.is_empty() {
            let _ = self.server_model.set(server_model.to_string());
        }
        self.unconfirmed.store(true, Ordering::Relaxed);
    }

    /// The probe, for an [`Api::assume`]d model: `Some(what changed)` when
    /// the server's answer is not what was assumed (the table's vectors
    /// and new ones would not belong together).
    pub fn confirm(&self) -> Result<Option<String>> {
        let (dim, model) = self.probe_request()?;
        self.unconfirmed.store(false, Ordering::Relaxed);
        let mut changed = Vec::new();
        if let Some(&d) = self.dim.get()
            && d != dim
        {
            changed.push(format!("{dim} values a vector where the table's have {d}"));
        }
        let (was, now) = (
            self.server_model().unwrap_or(""),
            model.as_deref().unwrap_or(""),
        );
        if was != now {
            changed.push(format!(
                "model \"{now}\" where the table's vectors came from \"{was}\""
            ));
        }
        Ok((!changed.is_empty()).then(|| {
            format!(
                "the server at {} now answers with {}",
                self.settings.host(),
                changed.join(" and ")
            )
        }))
    }

    /// The probe's request: its width (checked against `dimensions`) and
    /// the model string the server answered with.
    fn probe_request(&self) -> Result<(usize, Option<String>)> {
        let texts = ["embedflow probe"];
        let answer = self
            .runtime
            .block_on(self.attempts(&texts, &[2], 0))
            .map_err(|f| f.into_error(&self.settings, &self.key, "the probe request"))?;
        if let Some(d) = self.settings.dimensions
            && d != answer.dim
        {
            return Err(Error::Api(format!(
                "{}: asked for dimensions = {d}, the server answered with {} values a vector: \
                 it does not take `dimensions` for this model; leave model.dimensions out",
                self.settings.model, answer.dim
            )));
        }
        // The probe is not the run's work: its request and tokens are
        // left out of the counters.
        self.counters.requests.store(0, Ordering::Relaxed);
        self.counters.tokens_billed.store(0, Ordering::Relaxed);
        self.counters.tokens_unreported.store(0, Ordering::Relaxed);
        tracing::info!(
            url = %self.url,
            dim = answer.dim,
            server_model = answer.model.as_deref().unwrap_or("(not said)"),
            "the embedding API answered the probe"
        );
        Ok((answer.dim, answer.model))
    }

    /// The model string the server answered the probe with.
    pub fn server_model(&self) -> Option<&str> {
        self.server_model.get().map(String::as_str)
    }

    pub fn dim(&self) -> Option<usize> {
        self.dim.get().copied()
    }

    /// The width answers are checked against: none while it is only
    /// assumed ([`Api::assume`]) and not yet confirmed.
    pub(super) fn confirmed_dim(&self) -> Option<usize> {
        self.dim()
            .filter(|_| !self.unconfirmed.load(Ordering::Relaxed))
    }

    /// The counters so far, for the run's summary, with the estimated
    /// cost of the tokens billed (and those counted here where the
    /// server did not say).
    pub fn summary(&self) -> crate::progress::ApiSummary {
        let c = &self.counters;
        let get = ApiCounters::get;
        let billed = get(&c.tokens_billed);
        let unreported = get(&c.tokens_unreported);
        crate::progress::ApiSummary {
            requests: get(&c.requests),
            retries_rate_limited: get(&c.retries_rate_limited),
            retries_server_error: get(&c.retries_server_error),
            retries_timeout: get(&c.retries_timeout),
            retries_connection: get(&c.retries_connection),
            retries_bad_answer: get(&c.retries_bad_answer),
            splits: get(&c.splits),
            refused: get(&c.refused),
            tokens_billed: billed,
            tokens_unreported: unreported,
            estimated_cost: self
                .settings
                .price_per_million_tokens
                .map(|p| p * (billed + unreported) as f64 / 1e6),
        }
    }

    /// Embeds a batch: requests within the limits, split when the server
    /// finds one too large, retried on passing failures.
    pub fn embed(&self, texts: &[&str], tokens: &[usize]) -> Result<Vec<f32>> {
        self.runtime.block_on(self.embed_split(texts, tokens))
    }
}

impl Remote for Api {
    fn summary(&self) -> crate::progress::ApiSummary {
        Api::summary(self)
    }

    fn server_model(&self) -> Option<String> {
        Api::server_model(self).map(str::to_string)
    }

    fn unconfirmed(&self) -> bool {
        self.unconfirmed.load(Ordering::Relaxed)
    }

    fn confirm(&self) -> Result<Option<String>> {
        Api::confirm(self)
    }
}

/// One request thread of the run: a backend of the embed stage. Its
/// siblings share its [`Api`] (client, pacer, counters).
pub struct ApiBackend {
    pub api: Arc<Api>,
    /// L2-normalise the server's vectors (`model.normalize`).
    pub normalize: bool,
}

impl ApiBackend {
    /// The remote model of `model`, probed (see [`Api::probe`]), or with
    /// the width and model string of `assumed` (see [`Api::assume`]).
    pub fn open(
        model: &crate::embed::ModelConfig,
        assumed: Option<(usize, &str)>,
    ) -> Result<ApiBackend> {
        let settings = model
            .api
            .clone()
            .ok_or_else(|| Error::internal("a remote backend for a local model"))?;
        let api = Api::open(settings)?;
        match assumed {
            Some((dim, server_model)) => api.assume(dim, server_model),
            None => {
                api.probe()?;
            }
        }
        Ok(ApiBackend {
            api: Arc::new(api),
            normalize: model.normalize,
        })
    }
}

impl EmbedBackend for ApiBackend {
    fn needs(&self) -> Needs {
        Needs {
            input: InputKind::Tokens,
            padded: false,
            max_rows: Some(self.api.settings.limits.max_inputs_per_request),
        }
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            provider: format!(
                "{} API at {}",
                self.api.settings.provider,
                self.api.settings.host()
            ),
            device: Device::Cpu,
        }
    }

    fn dim(&self) -> Option<usize> {
        self.api.dim()
    }

    fn embed(&mut self, rows: &[&Encoded]) -> Result<Vec<f32>> {
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let tokens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let mut v = self.api.embed(&texts, &tokens)?;
        if self.normalize && !rows.is_empty() {
            let dim = v.len() / rows.len();
            for row in v.chunks_exact_mut(dim.max(1)) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|x| *x /= norm);
                }
            }
        }
        Ok(v)
    }

    fn sibling(&self) -> Option<Box<dyn EmbedBackend>> {
        Some(Box::new(ApiBackend {
            api: Arc::clone(&self.api),
            normalize: self.normalize,
        }))
    }

    fn remote(&self) -> Option<Arc<dyn Remote>> {
        Some(Arc::clone(&self.api) as Arc<dyn Remote>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_hosts() {
        let mut s = ApiSettings {
            provider: "openai".into(),
            model: "m".into(),
            base_url: "http://127.0.0.1:8080/v1/".into(),
            api_key_env: DEFAULT_KEY_ENV.into(),
            api_version: None,
            dimensions: None,
            bpe: None,
            tokenizer_file: None,
            limits: Limits::OPENAI,
            pacing: Pacing::default(),
            price_per_million_tokens: None,
            skip_refused: false,
        };
        assert_eq!(s.url(), "http://127.0.0.1:8080/v1/embeddings");
        assert_eq!(s.host(), "127.0.0.1:8080");
        s.base_url = "https://x.openai.azure.com/openai/deployments/emb".into();
        s.api_version = Some("2024-02-01".into());
        assert_eq!(
            s.url(),
            "https://x.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-02-01"
        );
        assert_eq!(s.host(), "x.openai.azure.com");
    }

    #[test]
    fn a_key_never_prints() {
        let k = Key("sk-secret-value".into());
        assert_eq!(format!("{k:?}"), "Key(15 characters)");
    }
}
