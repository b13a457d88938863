//! `--metrics FILE` and `[metrics]`: a run's counters in Prometheus' text
//! format (0.0.4), for node_exporter's textfile collector and a
//! Pushgateway. The file is rewritten every `interval` while the run goes
//! and once at its end, each time whole: written beside its name, synced,
//! then renamed over it, so a reader never sees half of one. With
//! `push_url`, the same text is PUT to the Pushgateway at the same times.
//!
//! Every series carries `embedflow_job` (the job's name) and, for a shard,
//! `shard`: one textfile per job (or shard) can sit beside the others in
//! the collector's folder.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::embed::Remote;
use crate::progress::{ApiSummary, Counters, Summary};
use crate::{Error, Result};

/// Seconds between rewrites when the job does not say.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Where a run's metrics go (`[metrics]`, `--metrics FILE`).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsPlan {
    /// The textfile (local): rewritten atomically.
    pub path: Option<String>,
    /// A Pushgateway's base URL (`http://host:9091`).
    pub push_url: Option<String>,
    pub interval: Duration,
}

impl Default for MetricsPlan {
    fn default() -> Self {
        MetricsPlan {
            path: None,
            push_url: None,
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// The running job's metrics: a cheap handle the stages share; a thread
/// rewrites the file until [`Metrics::finish`].
#[derive(Clone)]
pub struct Metrics(Arc<Shared>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("path", &self.0.plan.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    plan: MetricsPlan,
    /// `embedflow_job` and `shard`, on every series.
    labels: Vec<(&'static str, String)>,
    started: SystemTime,
    state: Mutex<State>,
    /// Set (and notified) to end the rewriting thread.
    stop: (Mutex<bool>, Condvar),
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    push: Option<Push>,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    /// Stages done, with their seconds (a stage run twice adds up).
    stages: Vec<(&'static str, f64)>,
    current: Option<(&'static str, Instant)>,
    /// The run's summary and whether it succeeded, once it ended.
    ended: Option<(Option<Summary>, SystemTime)>,
    /// Whether a failed write or push was said already (said once).
    warned: bool,
}

/// What the run attached: its counters as they advance.
struct Live {
    counters: Arc<Counters>,
    api: Option<Arc<dyn Remote>>,
    input_bytes: u64,
}

/// A Pushgateway: where to PUT, and a client.
struct Push {
    url: reqwest::Url,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Metrics {
    /// Starts the metrics of a run of `job` (its name), writing the first
    /// file at once: a path that cannot be written fails here, before any
    /// work, naming it. `None` when the plan asks for nothing.
    pub fn start(
        plan: Option<&MetricsPlan>,
        job: &str,
        shard: Option<u32>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Option<Metrics>> {
        let Some(plan) = plan else {
            return Ok(None);
        };
        if plan.path.is_none() && plan.push_url.is_none() {
            return Err(Error::Usage(
                "[metrics]: set path (a textfile) or push_url (a Pushgateway), or pass --metrics FILE"
                    .into(),
            ));
        }
        let mut labels = vec![("embedflow_job", job.to_string())];
        if let Some(i) = shard {
            labels.push(("shard", i.to_string()));
        }
        let push = match &plan.push_url {
            Some(u) => Some(Push::new(u, &labels, runtime)?),
            None => None,
        };
        let metrics = Metrics(Arc::new(Shared {
            plan: plan.clone(),
            labels,
            started: SystemTime::now(),
            // From its start the run is setting up (checks, model load).
            state: Mutex::new(State {
                current: Some(("setup", Instant::now())),
                ..State::default()
            }),
            stop: (Mutex::new(false), Condvar::new()),
            thread: Mutex::new(None),
            push,
        }));
        if let Some(path) = &plan.path {
            write_atomic(Path::new(path), &metrics.render())
                .map_err(|e| Error::Usage(format!("metrics.path: cannot write {path}: {e}")))?;
        }
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("embedflow-metrics".into())
            .spawn(move || m.rewrite_until_stopped())
            .map_err(Error::internal)?;
        *lock(&metrics.0.thread) = Some(thread);
        Ok(Some(metrics))
    }

    /// The run's counters from here on (an embedding pass attaches its own).
    pub fn attach(&self, counters: Arc<Counters>, api: Option<Arc<dyn Remote>>, input_bytes: u64) {
        lock(&self.0.state).live = Some(Live {
            counters,
            api,
            input_bytes,
        });
    }

    /// The run is in `stage` from now on (the one before ends).
    pub fn stage(&self, stage: &'static str) {
        let mut s = lock(&self.0.state);
        s.end_stage();
        s.current = Some((stage, Instant::now()));
    }

    /// The run ended (`summary` when it succeeded): the last file, the last
    /// push; a push that fails is said, not fatal (the output is committed).
    pub fn finish(&self, summary: Option<&Summary>) {
        {
            let mut s = lock(&self.0.state);
            s.end_stage();
            s.ended = Some((summary.cloned(), SystemTime::now()));
        }
        *lock(&self.0.stop.0) = true;
        self.0.stop.1.notify_all();
        if let Some(t) = lock(&self.0.thread).take() {
            let _ = t.join();
        }
        self.publish();
    }

    fn rewrite_until_stopped(&self) {
        let (stopped, wake) = &self.0.stop;
        let mut guard = lock(stopped);
        loop {
            guard = match wake.wait_timeout(guard, self.0.plan.interval) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
            if *guard {
                return;
            }
            drop(guard);
            self.publish();
            guard = lock(stopped);
        }
    }

    /// Writes the file and pushes, saying the first failure of either.
    fn publish(&self) {
        let text = self.render();
        let mut failures = Vec::new();
        if let Some(path) = &self.0.plan.path
            && let Err(e) = write_atomic(Path::new(path), &text)
        {
            failures.push(format!("cannot write {path}: {e}"));
        }
        if let Some(push) = &self.0.push
            && let Err(e) = push.send(&text)
        {
            failures.push(e);
        }
        let mut s = lock(&self.0.state);
        if !failures.is_empty() && !s.warned {
            s.warned = true;
            crate::warning!("metrics: {} (said once)", failures.join("; "));
        }
    }

    /// The metrics as they stand, in Prometheus' text format.
    pub fn render(&self) -> String {
        let s = lock(&self.0.state);
        let mut out = Families::new(&self.0.labels);
        out.run(self.0.started, &s);
        match (&s.ended, &s.live) {
            (Some((Some(summary), _)), live) => {
                let input_bytes = live.as_ref().map_or(0, |l| l.input_bytes);
                out.summary(summary, input_bytes);
            }
            (_, Some(live)) => out.live(live),
            _ => {}
        }
        out.stages(&s);
        out.text
    }
}

impl State {
    fn end_stage(&mut self) {
        if let Some((name, since)) = self.current.take() {
            add_stage(&mut self.stages, name, since.elapsed().as_secs_f64());
        }
    }

    /// Seconds by stage so far, the current one's included.
    fn stage_seconds(&self) -> Vec<(&'static str, f64)> {
        let mut stages = self.stages.clone();
        if let Some((name, since)) = self.current {
            add_stage(&mut stages, name, since.elapsed().as_secs_f64());
        }
        stages
    }
}

/// Adds `secs` to `name`'s seconds (a stage run twice adds up).
fn add_stage(stages: &mut Vec<(&'static str, f64)>, name: &'static str, secs: f64) {
    match stages.iter_mut().find(|(n, _)| *n == name) {
        Some((_, s)) => *s += secs,
        None => stages.push((name, secs)),
    }
}

/// The text being rendered, one family after another.
struct Families<'a> {
    labels: &'a [(&'static str, String)],
    text: String,
}

impl<'a> Families<'a> {
    fn new(labels: &'a [(&'static str, String)]) -> Self {
        Families {
            labels,
            text: String::new(),
        }
    }

    /// A family of one series.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help, &[(None, value)]);
    }

    /// A family whose series differ by one label (`(label, value)`).
    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        series: &[(Option<(&str, &str)>, f64)],
    ) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (extra, value) in series {
            let mut labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            if let Some((k, v)) = extra {
                labels.push(format!("{k}=\"{}\"", escape(v)));
            }
            let _ = writeln!(
                self.text,
                "{name}{{{}}} {}",
                labels.join(","),
                number(*value)
            );
        }
    }

    /// A family of one series per value of `label`.
    fn labelled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: &[(&str, f64)],
    ) {
        let series: Vec<_> = values
            .iter()
            .map(|(v, n)| (Some((label, *v)), *n))
            .collect();
        self.family(name, kind, help, &series);
    }

    fn run(&mut self, started: SystemTime, s: &State) {
        let now = SystemTime::now();
        self.one(
            "embedflow_run_start_time_seconds",
            "gauge",
            "When the run started (Unix time).",
            unix(started),
        );
        self.one(
            "embedflow_run_last_update_time_seconds",
            "gauge",
            "When this file was written (Unix time): a run that stopped writing it has died.",
            unix(now),
        );
        self.one(
            "embedflow_run_running",
            "gauge",
            "1 while the run goes, 0 once it ended.",
            if s.ended.is_some() { 0.0 } else { 1.0 },
        );
        if let Some((summary, at)) = &s.ended {
            self.one(
                "embedflow_run_end_time_seconds",
                "gauge",
                "When the run ended (Unix time).",
                unix(*at),
            );
            self.one(
                "embedflow_run_success",
                "gauge",
                "1 when the run committed its output, 0 when it failed or was stopped.",
                if summary.is_some() { 1.0 } else { 0.0 },
            );
        }
    }

    /// The rows so far, from the stages' counters.
    fn live(&mut self, l: &Live) {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        let c = &l.counters;
        self.rows(
            get(&c.rows_read),
            get(&c.rows_embedded),
            get(&c.rows_skipped),
        );
        self.work(get(&c.chunks), get(&c.tokens), get(&c.vectors_written));
        self.bytes(l.input_bytes);
        if let Some(api) = &l.api {
            self.api(&api.summary());
        }
    }

    /// The run's figures, from its summary.
    fn summary(&mut self, s: &Summary, input_bytes: u64) {
        let embedded = s.rows_read.saturating_sub(s.rows_skipped);
        self.rows(s.rows_read as f64, embedded as f64, s.rows_skipped as f64);
        self.work(s.chunks as f64, s.tokens as f64, s.vectors_written as f64);
        self.one(
            "embedflow_documents_written_total",
            "counter",
            "Rows written to the documents table (output.documents_path).",
            s.documents_written as f64,
        );
        self.bytes(input_bytes);
        if let Some(t) = &s.table {
            self.one(
                "embedflow_units_total",
                "counter",
                "Units of the output table this run (or shard) had.",
                t.units as f64,
            );
            self.one(
                "embedflow_units_resumed_total",
                "counter",
                "Units an interrupted run had finished, not done again.",
                t.units_resumed as f64,
            );
            if let Some(c) = &t.changes {
                let rows = [
                    ("unchanged", c.unchanged as f64),
                    ("changed", c.changed as f64),
                    ("new", c.new as f64),
                    ("deleted", c.deleted as f64),
                ];
                self.labelled(
                    "embedflow_incremental_rows",
                    "gauge",
                    "An incremental run's source rows by what changed since the table's version.",
                    "change",
                    &rows,
                );
            }
        }
        if let Some(api) = &s.api {
            self.api(api);
        }
    }

    fn rows(&mut self, read: f64, embedded: f64, skipped: f64) {
        self.one(
            "embedflow_rows_read_total",
            "counter",
            "Source rows read for embedding.",
            read,
        );
        self.one(
            "embedflow_rows_embedded_total",
            "counter",
            "Rows whose texts (or images) are embedded.",
            embedded,
        );
        self.one(
            "embedflow_rows_skipped_total",
            "counter",
            "Rows skipped: empty or null text, bad images, inputs a remote model refused.",
            skipped,
        );
    }

    fn work(&mut self, chunks: f64, tokens: f64, vectors: f64) {
        self.one(
            "embedflow_chunks_total",
            "counter",
            "Chunks (token windows) made of the rows' texts.",
            chunks,
        );
        self.one(
            "embedflow_tokens_total",
            "counter",
            "Tokens in the chunks.",
            tokens,
        );
        self.one(
            "embedflow_vectors_written_total",
            "counter",
            "Vectors written to the output.",
            vectors,
        );
        self.one(
            "embedflow_output_bytes_total",
            "counter",
            "Bytes of Parquet written (the output's files, the documents table's).",
            crate::sink::bytes_written() as f64,
        );
    }

    fn bytes(&mut self, input: u64) {
        self.one(
            "embedflow_input_bytes",
            "gauge",
            "Size of the input files this run reads.",
            input as f64,
        );
    }

    fn api(&mut self, a: &ApiSummary) {
        self.one(
            "embedflow_api_requests_total",
            "counter",
            "Requests sent to the remote model.",
            a.requests as f64,
        );
        let causes = [
            ("rate_limited", a.retries_rate_limited as f64),
            ("server_error", a.retries_server_error as f64),
            ("timeout", a.retries_timeout as f64),
            ("connection", a.retries_connection as f64),
            ("bad_answer", a.retries_bad_answer as f64),
        ];
        self.labelled(
            "embedflow_api_retries_total",
            "counter",
            "Requests to the remote model sent again, by cause.",
            "cause",
            &causes,
        );
        self.one(
            "embedflow_api_splits_total",
            "counter",
            "Requests split in halves because the server found them too large.",
            a.splits as f64,
        );
        self.one(
            "embedflow_api_refused_inputs_total",
            "counter",
            "Inputs the server refused on their own, left out.",
            a.refused as f64,
        );
        self.one(
            "embedflow_api_tokens_billed_total",
            "counter",
            "Tokens the server counted (its usage), plus those it did not report, counted here.",
            (a.tokens_billed + a.tokens_unreported) as f64,
        );
    }

    fn stages(&mut self, s: &State) {
        let stages = s.stage_seconds();
        if stages.is_empty() {
            return;
        }
        self.labelled(
            "embedflow_stage_seconds",
            "gauge",
            "Seconds spent in each stage of the run so far (setup: checks and model load; embed: rows read, embedded and written; commit; index; report).",
            "stage",
            &stages,
        );
    }
}

impl Push {
    /// `{base}/metrics/job/embedflow/embedflow_job@base64/…[/shard/N]`: one
    /// group per job (and shard), replaced by each push (PUT).
    fn new(
        base: &str,
        labels: &[(&'static str, String)],
        runtime: tokio::runtime::Handle,
    ) -> Result<Push> {
        use base64::Engine;
        let mut url = reqwest::Url::parse(base).map_err(|e| {
            Error::Usage(format!(
                "metrics.push_url: not a URL ({e}): {}",
                redact(base)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Usage(format!(
                "metrics.push_url: expected http:// or https://, found {}",
                redact(base)
            )));
        }
        let mut path = url.path().trim_end_matches('/').to_string();
        path.push_str("/metrics/job/embedflow");
        for (k, v) in labels {
            let b64 = base64::engine::general_purpose::URL_SAFE.encode(v);
            let _ = write!(
                path,
                "/{k}@base64/{}",
                if b64.is_empty() { "=" } else { &b64 }
            );
        }
        url.set_path(&path);
        // The client's timers belong to the runtime it is built in.
        let _in_runtime = runtime.enter();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::internal)?;
        Ok(Push {
            url,
            client,
            runtime,
        })
    }

    fn send(&self, text: &str) -> std::result::Result<(), String> {
        // Built inside the runtime: its timeout is one of the runtime's timers.
        let request = async {
            self.client
                .put(self.url.clone())
                .header("Content-Type", "text/plain; version=0.0.4")
                .body(text.to_string())
                .send()
                .await
        };
        let where_ = redact(self.url.as_str());
        match self.runtime.block_on(request) {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!(
                "the Pushgateway at {where_} answered {}",
                r.status()
            )),
            Err(e) => Err(format!("cannot push to {where_}: {}", e.without_url())),
        }
    }
}

/// A URL without its user and password (never said).
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(the URL as given)".to_string(),
    }
}

/// Writes `text` beside `path`, syncs it, and renames it over `path`.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "needs a file name")
    })?;
    // Not ending in .prom: the textfile collector skips it.
    let tmp: PathBuf = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A sample value: integers without a fraction, as Prometheus writes them.
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_plain() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        let labels = vec![("embedflow_job", "news \"nightly\"".to_string())];
        let mut f = Families::new(&labels);
        f.one("embedflow_x_total", "counter", "An x.", 7.0);
        assert_eq!(
            f.text,
            "# HELP embedflow_x_total An x.\n# TYPE embedflow_x_total counter\nembedflow_x_total{embedflow_job=\"news \\\"nightly\\\"\"} 7\n"
        );
    }

    #[test]
    fn a_push_url_keeps_no_secret_and_groups_by_job_and_shard() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let labels = vec![
            ("embedflow_job", "news/nightly".to_string()),
            ("shard", "3".to_string()),
        ];
        let p = Push::new(
            "http://u:secret@127.0.0.1:9091/gw/",
            &labels,
            rt.handle().clone(),
        )
        .unwrap();
        assert_eq!(
            p.url.path(),
            "/gw/metrics/job/embedflow/embedflow_job@base64/bmV3cy9uaWdodGx5/shard@base64/Mw=="
        );
        assert!(!redact(p.url.as_str()).contains("secret"));
        let e = Push::new("ftp://x", &labels, rt.handle().clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("http://"), "{e}");
    }

    #[test]
    fn a_file_is_replaced_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("embedflow.prom");
        write_atomic(&path, "a 1\n").unwrap();
        write_atomic(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let missing = dir.path().join("no/such/folder/x.prom");
        assert!(write_atomic(&missing, "a 1\n").is_err());
    }
}
