//! The embed stage: one thread that builds the run's sessions, then embeds
//! each prepared unit, spreading its batches over the sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::embed::{self, Device, EmbedBackend, ModelConfig, SessionOptions, TextEncoder};
use crate::progress::Counters;
use crate::{Error, Result};

use super::stage::{Stop, spawn_thread};
use super::unit::WorkUnit;

/// What the embed stage says once its sessions are built.
pub(super) struct Ready {
    /// The vectors' width.
    pub(super) dim: usize,
    pub(super) device: Device,
    /// The execution provider of the first session.
    pub(super) provider: String,
    /// The remote API the run embeds through, if any (its counters).
    pub(super) api: Option<Arc<dyn embed::Remote>>,
}

/// The embed stage, built once per run.
pub(super) struct EmbedStage {
    pub(super) model: ModelConfig,
    pub(super) encoder: Arc<TextEncoder>,
    /// The sessions the check chose, and the one it probed with (reused).
    pub(super) sessions: Vec<SessionOptions>,
    pub(super) probed: Option<Box<dyn EmbedBackend>>,
    pub(super) batch_tokens: usize,
    pub(super) max_rows: usize,
    pub(super) counters: Arc<Counters>,
    pub(super) stop: Stop,
}

impl EmbedStage {
    /// Starts the stage on its own thread: `ready` gets the vectors' width
    /// (or why no session could be built) before the first unit is taken.
    pub(super) fn spawn(
        self,
        input: mpsc::Receiver<Result<WorkUnit>>,
        output: mpsc::Sender<Result<WorkUnit>>,
        ready: oneshot::Sender<Result<Ready>>,
    ) -> Result<std::thread::JoinHandle<()>> {
        let span = tracing::info_span!("embed_stage");
        spawn_thread("embed", span, move || self.run(input, output, ready))
    }

    fn run(
        mut self,
        mut input: mpsc::Receiver<Result<WorkUnit>>,
        output: mpsc::Sender<Result<WorkUnit>>,
        ready: oneshot::Sender<Result<Ready>>,
    ) {
        // The thread that runs the sessions also builds them (taking the
        // one the check probed with for the first), and says the vectors'
        // width.
        let (mut embedders, dim) = match self.open() {
            Ok((sessions, dim)) => {
                let info = sessions[0].info();
                let r = Ready {
                    dim,
                    device: info.device,
                    provider: info.provider,
                    api: sessions[0].remote(),
                };
                let _ = ready.send(Ok(r));
                (sessions, dim)
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let mut rows_before = 0u64;
        while let Some(item) = input.blocking_recv() {
            let unit = item.and_then(|u| self.embed_unit(&mut embedders, u, dim, &mut rows_before));
            let failed = unit.is_err();
            if output.blocking_send(unit).is_err() || failed {
                return;
            }
        }
    }

    fn open(&mut self) -> Result<(Vec<Box<dyn EmbedBackend>>, usize)> {
        let mut sessions = open_sessions(
            &self.model,
            &self.encoder,
            &self.sessions,
            self.probed.take(),
        )?;
        let dim = embed::output_dim(sessions[0].as_mut(), &self.encoder)?;
        Ok((sessions, dim))
    }

    /// Embeds one unit's chunks; its rows move the progress in proportion
    /// to its chunks embedded, batch by batch.
    fn embed_unit(
        &self,
        embedders: &mut [Box<dyn EmbedBackend>],
        mut u: WorkUnit,
        dim: usize,
        rows_before: &mut u64,
    ) -> Result<WorkUnit> {
        let t = Instant::now();
        // The closure runs on each session's thread: it borrows what it
        // needs, not the stage (whose probed backend is not `Sync`).
        let (c, stop) = (&self.counters, &self.stop);
        let rows = u.row_chunks.len() as u64;
        let chunks = u.encoded.len().max(1) as u64;
        let done = AtomicU64::new(0);
        let before = *rows_before;
        let progress = |n: usize, tokens: usize| {
            let done = done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            c.rows_embedded
                .fetch_max(before + rows * done / chunks, Ordering::Relaxed);
            Counters::add(&c.tokens_embedded, tokens as u64);
            !stop.is_set()
        };
        let (v, d) = embed::embed_all(
            embedders,
            &u.encoded,
            self.batch_tokens,
            self.max_rows,
            &progress,
        )?;
        *rows_before += rows;
        c.rows_embedded.store(*rows_before, Ordering::Relaxed);
        if !v.is_empty() && d != dim {
            return Err(Error::internal(format!(
                "vector width changed from {dim} to {d}"
            )));
        }
        u.vectors = v;
        self.leave_out_refused(&mut u, dim);
        tracing::debug!(
            chunks = u.encoded.len(),
            seconds = t.elapsed().as_secs_f64(),
            "embedded a unit"
        );
        u.encoded = Vec::new();
        Ok(u)
    }

    /// Rows an API refused on their own (`embed.on_error = "skip"`: their
    /// vectors come back NaN, which no answer may hold) are left out,
    /// named and counted as skipped.
    fn leave_out_refused(&self, u: &mut WorkUnit, dim: usize) {
        let skips = self.model.api.as_ref().is_some_and(|a| a.skip_refused);
        if dim == 0 || !skips {
            return;
        }
        let refused: Vec<usize> = u
            .vectors
            .chunks_exact(dim)
            .enumerate()
            .filter(|(_, v)| v[0].is_nan())
            .map(|(c, _)| c)
            .collect();
        if refused.is_empty() {
            return;
        }
        for &c in &refused {
            let text: String = u.encoded[c].text.chars().take(60).collect();
            crate::note!(
                "skipped a row of {} (from row {}): the embedding API refused its input \"{text}…\"",
                u.file,
                u.first_row
            );
        }
        let rows = u.drop_chunk_rows(&refused, dim);
        Counters::add(&self.counters.rows_skipped, rows.len() as u64);
    }
}

/// The sessions a run embeds with, as the check chose them: the one it
/// probed with first, the others opened at once, each on its own thread.
fn open_sessions(
    model: &ModelConfig,
    encoder: &TextEncoder,
    sessions: &[SessionOptions],
    probed: Option<Box<dyn EmbedBackend>>,
) -> Result<Vec<Box<dyn EmbedBackend>>> {
    if sessions.is_empty() {
        return Err(Error::internal("the check chose no session to embed with"));
    }
    tracing::info!(
        sessions = sessions.len(),
        threads = ?sessions.iter().map(|s| s.threads).collect::<Vec<_>>(),
        "opening the embedding sessions"
    );
    // A remote API's request threads share the probed one's connection.
    if let Some(first) = &probed
        && first.sibling().is_some()
    {
        let more: Vec<_> = (1..sessions.len())
            .filter_map(|_| first.sibling())
            .collect();
        return Ok(probed.into_iter().chain(more).collect());
    }
    let skip = usize::from(probed.is_some());
    let opened = crate::runtime::map_threads(sessions[skip..].iter().copied(), |o| {
        embed::open(model, encoder, o)
    });
    probed.map(Ok).into_iter().chain(opened).collect()
}
