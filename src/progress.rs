//! Progress: counters shared by the stages, a bar on a terminal or a plain
//! line every few seconds otherwise, and the run summary.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Seconds between plain progress lines when stderr is not a terminal.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    Bar,
    Plain,
    Off,
}

/// Counters updated by the pipeline stages.
#[derive(Default)]
pub struct Counters {
    pub rows_read: AtomicU64,
    pub rows_skipped: AtomicU64,
    pub chunks: AtomicU64,
    pub tokens: AtomicU64,
    /// Rows whose chunks are embedded (advances with each inference batch).
    pub rows_embedded: AtomicU64,
    pub tokens_embedded: AtomicU64,
    pub vectors_written: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Runs the reporter on its own thread until [`Reporter::finish`].
pub struct Reporter {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    pub fn start(mode: ProgressMode, counters: Arc<Counters>, total_rows: Option<u64>) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        let mode = match mode {
            // JSON log lines leave no room for a bar.
            ProgressMode::Auto | ProgressMode::Bar if crate::notice::is_json() => {
                ProgressMode::Plain
            }
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let handle = (mode != ProgressMode::Off).then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || report(mode, &counters, total_rows, &stop))
        });
        Reporter { stop, handle }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn report(mode: ProgressMode, c: &Counters, total: Option<u64>, stop: &AtomicBool) {
    let start = Instant::now();
    let line = |elapsed: f64| {
        let rows = Counters::get(&c.rows_embedded);
        let rate = Counters::get(&c.tokens_embedded) as f64 / elapsed.max(1e-9);
        let mut s = format!(
            "{rows} rows embedded ({} read), {} chunks, {} vectors written, {:.0} tokens/s",
            Counters::get(&c.rows_read),
            Counters::get(&c.chunks),
            Counters::get(&c.vectors_written),
            rate
        );
        if let Some(t) = total.filter(|&t| t > 0 && rows > 0) {
            let eta = elapsed * (t.saturating_sub(rows)) as f64 / rows as f64;
            s.push_str(&format!(
                ", {:.0}% of {t} rows, ETA {}",
                100.0 * rows as f64 / t as f64,
                hms(eta)
            ));
        }
        s
    };
    if mode == ProgressMode::Bar {
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        let style = match total {
            Some(_) => "{bar:30} {pos}/{len} rows  {msg}  [{elapsed_precise}, ETA {eta}]",
            None => "{spinner} {pos} rows  {msg}  [{elapsed_precise}]",
        };
        if let Ok(s) = indicatif::ProgressStyle::with_template(style) {
            bar.set_style(s);
        }
        while !stop.load(Ordering::Relaxed) {
            let e = start.elapsed().as_secs_f64();
            bar.set_position(Counters::get(&c.rows_embedded));
            bar.set_message(format!(
                "{} chunks  {:.0} tok/s",
                Counters::get(&c.chunks),
                Counters::get(&c.tokens_embedded) as f64 / e.max(1e-9)
            ));
            std::thread::sleep(Duration::from_millis(200));
        }
        bar.finish_and_clear();
    } else {
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= PLAIN_INTERVAL {
                last = Instant::now();
                let line = line(start.elapsed().as_secs_f64());
                crate::notice::emit(crate::notice::Kind::Progress, format_args!("{line}"));
            }
        }
    }
}

fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub output: String,
    pub documents: Option<String>,
    pub model: String,
    pub provider: String,
    pub dim: usize,
    pub rows_read: u64,
    pub rows_skipped: u64,
    pub chunks: u64,
    pub tokens: u64,
    pub vectors_written: u64,
    pub documents_written: u64,
    pub seconds: f64,
    /// Set for a Delta table output.
    pub table: Option<TableSummary>,
    /// An image job: rows are images (no chunks, no tokens).
    pub images: bool,
    /// What a remote model's requests did.
    pub api: Option<ApiSummary>,
}

/// A remote model's requests in a run: what was sent, retried and billed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiSummary {
    pub requests: u64,
    /// Retries by cause.
    pub retries_rate_limited: u64,
    pub retries_server_error: u64,
    pub retries_timeout: u64,
    pub retries_connection: u64,
    pub retries_bad_answer: u64,
    /// Requests split in halves because the server found them too large.
    pub splits: u64,
    /// Inputs the server refused on their own, left out (`on_error = "skip"`).
    pub refused: u64,
    /// Tokens the server counted (its `usage`).
    pub tokens_billed: u64,
    /// Tokens sent in answers without `usage`, as counted here.
    pub tokens_unreported: u64,
    /// Dollars, from `model.price_per_million_tokens`.
    pub estimated_cost: Option<f64>,
}

impl ApiSummary {
    fn retries(&self) -> u64 {
        self.retries_rate_limited
            + self.retries_server_error
            + self.retries_timeout
            + self.retries_connection
            + self.retries_bad_answer
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "retries": {
                "rate_limited": self.retries_rate_limited,
                "server_error": self.retries_server_error,
                "timeout": self.retries_timeout,
                "connection": self.retries_connection,
                "bad_answer": self.retries_bad_answer,
            },
            "splits": self.splits,
            "refused": self.refused,
            "tokens_billed": self.tokens_billed,
            "tokens_unreported": self.tokens_unreported,
            "estimated_cost": self.estimated_cost,
        })
    }
}

impl fmt::Display for ApiSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  requests         {} ({} retried: {} rate limited, {} server errors, {} timeouts, {} connections, {} bad answers; {} split; {} inputs refused)",
            self.requests,
            self.retries(),
            self.retries_rate_limited,
            self.retries_server_error,
            self.retries_timeout,
            self.retries_connection,
            self.retries_bad_answer,
            self.splits,
            self.refused
        )?;
        let unreported = match self.tokens_unreported {
            0 => String::new(),
            n => format!(" (+{n} counted here: the server did not say)"),
        };
        write!(f, "  tokens billed    {}{unreported}", self.tokens_billed)?;
        if let Some(c) = self.estimated_cost {
            write!(f, "\n  estimated cost   ${c:.4}")?;
        }
        writeln!(f)
    }
}

/// How a run's summary is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    /// Lines for people.
    Text,
    /// One JSON object on one line, for schedulers and dashboards.
    Json,
}

/// What an incremental run found changed since the table's version.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Changes {
    /// Source rows with a key (rows whose text is skipped are not counted).
    pub rows: u64,
    pub unchanged: u64,
    pub changed: u64,
    pub new: u64,
    pub deleted: u64,
    /// Files of a Delta input whose keys were reused, not read.
    pub files_reused: usize,
}

/// What a run into a Delta table committed.
#[derive(Clone, Debug, Default)]
pub struct TableSummary {
    /// `None` for a shard: the commit step makes the version.
    pub version: Option<i64>,
    /// (index, count) of a shard's run.
    pub shard: Option<(u32, u32)>,
    pub units: usize,
    /// Units an interrupted run had finished, not done again.
    pub units_resumed: usize,
    /// An incremental run's comparison with the table.
    pub changes: Option<Changes>,
    /// Why an incremental job embedded every row.
    pub full_because: Option<String>,
}

impl Summary {
    /// Rows read from the source: an incremental run reads them all and
    /// embeds some (`rows_read` counts those).
    fn rows_in_source(&self) -> u64 {
        match self.table.as_ref().and_then(|t| t.changes.as_ref()) {
            Some(c) => c.rows,
            None => self.rows_read,
        }
    }

    /// Rows whose texts (or images) were embedded: those read for
    /// embedding less those skipped (empty, null or bad).
    fn rows_embedded(&self) -> u64 {
        self.rows_read.saturating_sub(self.rows_skipped)
    }

    /// The summary as one JSON object (`--summary json`).
    pub fn to_json(&self) -> String {
        self.to_json_value().to_string()
    }

    /// The summary as a JSON value, for a caller that adds to it (a job's
    /// `[index]` step).
    pub fn to_json_value(&self) -> serde_json::Value {
        let table = self.table.as_ref().map(|t| {
            serde_json::json!({
                "version": t.version,
                "shard": t.shard.map(|(i, n)| serde_json::json!({"index": i, "count": n})),
                "units": t.units,
                "units_resumed": t.units_resumed,
                "full_because": t.full_because,
                "changes": t.changes.as_ref().map(|c| serde_json::json!({
                    "rows": c.rows,
                    "unchanged": c.unchanged,
                    "changed": c.changed,
                    "new": c.new,
                    // A shard's deleted rows are the commit's to count.
                    "deleted": t.shard.is_none().then_some(c.deleted),
                    "input_files_reused": c.files_reused,
                })),
            })
        });
        serde_json::json!({
            "output": self.output,
            "documents": self.documents,
            "model": self.model,
            "provider": self.provider,
            "dim": self.dim,
            "rows_read": self.rows_in_source(),
            "rows_embedded": self.rows_embedded(),
            "rows_skipped": self.rows_skipped,
            "chunks": self.chunks,
            "tokens": self.tokens,
            "images": self.images,
            "vectors_written": self.vectors_written,
            "documents_written": self.documents_written,
            "seconds": self.seconds,
            "table": table,
            "api": self.api.as_ref().map(ApiSummary::to_json),
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds.max(1e-9);
        match &self.table {
            Some(TableSummary {
                version: Some(v), ..
            }) => writeln!(
                f,
                "wrote {} as Delta table version {v} ({} vectors, {} dims)",
                self.output, self.vectors_written, self.dim
            )?,
            Some(t) => {
                let (i, n) = t.shard.unwrap_or((0, 1));
                writeln!(
                    f,
                    "wrote shard {i} of {n} into {} ({} vectors, {} dims): not visible until `embedflow commit` commits every shard",
                    self.output, self.vectors_written, self.dim
                )?
            }
            None => writeln!(
                f,
                "wrote {} ({} vectors, {} dims)",
                self.output, self.vectors_written, self.dim
            )?,
        }
        if let Some(d) = &self.documents {
            writeln!(f, "wrote {d} ({} document vectors)", self.documents_written)?;
        }
        writeln!(f, "  model            {} on {}", self.model, self.provider)?;
        writeln!(f, "  rows read        {}", self.rows_in_source())?;
        writeln!(
            f,
            "  rows skipped     {}{}",
            self.rows_skipped,
            match (self.rows_skipped > 0, self.images) {
                (false, _) => "",
                (true, false) => " (empty or null text)",
                (true, true) => " (empty, null or bad images)",
            }
        )?;
        if let Some(t) = &self.table {
            writeln!(
                f,
                "  units            {} (resumed: {} of {} units already done)",
                t.units, t.units_resumed, t.units
            )?;
            if let Some(c) = &t.changes
                && t.shard.is_some()
            {
                // A shard sees its own rows; what left the source is counted
                // by the commit, which sees them all.
                writeln!(
                    f,
                    "  incremental      this shard's {} rows: {} unchanged (copied), {} changed, {} new; {} embedded (deleted rows: counted by the commit)",
                    c.rows,
                    c.unchanged,
                    c.changed,
                    c.new,
                    self.rows_embedded()
                )?;
            } else if let Some(c) = &t.changes {
                writeln!(
                    f,
                    "  incremental      {} rows: {} unchanged (copied), {} changed, {} new, {} deleted; {} embedded",
                    c.rows,
                    c.unchanged,
                    c.changed,
                    c.new,
                    c.deleted,
                    self.rows_embedded()
                )?;
                if c.files_reused > 0 {
                    writeln!(
                        f,
                        "  input files      {} unchanged since the last run: their keys reused, not read",
                        c.files_reused
                    )?;
                }
            }
            if let Some(why) = &t.full_because {
                writeln!(f, "  full run         every row embedded: {why}")?;
            }
        }
        if let Some(a) = &self.api {
            write!(f, "{a}")?;
        }
        if self.images {
            writeln!(f, "  seconds          {:.2}", self.seconds)?;
            return write!(
                f,
                "  throughput       {:.1} images/s",
                self.vectors_written as f64 / s
            );
        }
        writeln!(f, "  chunks           {}", self.chunks)?;
        writeln!(f, "  tokens           {}", self.tokens)?;
        writeln!(f, "  seconds          {:.2}", self.seconds)?;
        write!(
            f,
            "  throughput       {:.1} rows/s, {:.1} chunks/s, {:.0} tokens/s",
            self.rows_read as f64 / s,
            self.chunks as f64 / s,
            self.tokens as f64 / s
        )
    }
}
