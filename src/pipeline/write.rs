//! The write stage: embedded units into the run's output, one at a time,
//! on the I/O runtime; and the output itself, a file or a table.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::job::JobPlan;
use crate::progress::Counters;
use crate::sink::{ParquetSink, WriteOptions};
use crate::store::Stores;
use crate::{Error, Result};

use super::output::{Rows, write_unit};
use super::stage::Stop;
use super::table::TableRun;
use super::unit::WorkUnit;

/// Where the rows go: one file (and its documents file), or a table. One
/// lives per run, so the file variant's size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Output {
    File {
        out: ParquetSink,
        docs: Option<ParquetSink>,
    },
    Table(Box<TableRun>),
}

impl Output {
    /// Opens the output file and the documents file, if the job has one.
    pub(super) async fn create_files(
        stores: &Stores,
        plan: &JobPlan,
        rows: &Rows,
        write: &WriteOptions,
    ) -> Result<Output> {
        let out =
            ParquetSink::create(stores, &plan.output.path, Arc::clone(&rows.schema), write).await?;
        let docs = match &plan.output.documents_path {
            Some(p) => {
                match ParquetSink::create(stores, p, Arc::clone(&rows.docs_schema), write).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        out.abort().await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        Ok(Output::File { out, docs })
    }

    /// One unit's rows written; returns (chunk rows, document rows).
    async fn write(&mut self, stores: &Stores, unit: WorkUnit, rows: &Rows) -> Result<(u64, u64)> {
        match self {
            Output::File { out, docs } => write_unit(unit, rows, out, docs.as_mut()).await,
            Output::Table(t) => t.write(stores, unit, rows).await,
        }
    }

    /// Gives up: nothing written is committed, and a table's lease is given
    /// back.
    pub(super) async fn abort(self) {
        match self {
            Output::File { out, docs } => {
                out.abort().await;
                if let Some(d) = docs {
                    d.abort().await;
                }
            }
            Output::Table(mut t) => t.abandon().await,
        }
    }
}

/// What the write stage wrote.
#[derive(Default)]
pub(super) struct Written {
    pub(super) vectors: u64,
    pub(super) documents: u64,
}

/// The write stage, built once per run.
pub(super) struct WriteStage<'a> {
    pub(super) output: Output,
    pub(super) rows: &'a Rows,
    pub(super) stores: &'a Stores,
    pub(super) counters: Arc<Counters>,
    pub(super) stop: Stop,
}

impl WriteStage<'_> {
    /// Writes every unit that comes, until the embed stage ends, a unit
    /// fails or a stop is asked for; on failure the other stages are told
    /// to stop. Gives the output back, committed by nobody yet.
    pub(super) async fn run(
        mut self,
        mut input: mpsc::Receiver<Result<WorkUnit>>,
    ) -> (Output, Result<Written>) {
        let mut written = Written::default();
        let result = loop {
            // The stop flag first: a signal that came during the last
            // write is seen here, before another unit is taken.
            let item = tokio::select! {
                biased;
                _ = crate::cancel::wait() => break Err(Error::Interrupted),
                item = input.recv() => item,
            };
            let Some(item) = item else { break Ok(()) };
            let step = match item {
                Ok(unit) => self.output.write(self.stores, unit, self.rows).await,
                Err(e) => Err(e),
            };
            match step {
                Ok((n, d)) => {
                    written.vectors += n;
                    written.documents += d;
                    Counters::add(&self.counters.vectors_written, n);
                }
                Err(e) => break Err(e),
            }
        };
        if result.is_err() {
            self.stop.set();
        }
        (self.output, result.map(|()| written))
    }
}
