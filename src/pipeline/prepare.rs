//! The prepare stage: filter, text, chunk and tokenize one input batch.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use rayon::prelude::*;

use crate::chunk;
use crate::embed::{Encoded, TextEncoder};
use crate::job::{JobPlan, OnEmpty};
use crate::progress::Counters;
use crate::source::{RowFilter, SourceBatch};
use crate::{Error, Result};

/// One input batch on its way through the stages.
pub(super) struct WorkUnit {
    /// Passthrough columns of the rows that survived the filter.
    pub(super) batch: RecordBatch,
    /// Per row of `batch`: how many chunks it has (0 = skipped).
    pub(super) row_chunks: Vec<u32>,
    /// Per chunk: the row of `batch` it belongs to.
    pub(super) chunk_row: Vec<u32>,
    pub(super) chunk_index: Vec<i32>,
    pub(super) chunk_start: Vec<i64>,
    pub(super) chunk_end: Vec<i64>,
    pub(super) chunk_text: Vec<String>,
    pub(super) encoded: Vec<Encoded>,
    pub(super) vectors: Vec<f32>,
}

/// What the prepare stage needs, shared with its rayon workers.
pub(super) struct PrepareStage {
    pub(super) plan: JobPlan,
    pub(super) encoder: Arc<TextEncoder>,
    pub(super) filter: Option<RowFilter>,
    /// Indices of the passthrough columns in the read batch.
    pub(super) passthrough_idx: Vec<usize>,
    pub(super) max_tokens: usize,
    pub(super) overlap: usize,
    pub(super) counters: Arc<Counters>,
}

/// One chunk of one row, before embedding.
pub(super) struct ChunkOut {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) text: Option<String>,
    pub(super) encoded: Encoded,
}

impl PrepareStage {
    pub(super) fn unit(&self, sb: SourceBatch) -> Result<WorkUnit> {
        let n = sb.batch.num_rows();
        let (batch, rows): (RecordBatch, Vec<u64>) = match &self.filter {
            Some(f) => {
                let (b, kept) = f.apply(&sb.batch)?;
                (
                    b,
                    kept.iter().map(|&k| sb.first_row + k as u64 + 1).collect(),
                )
            }
            None => (
                sb.batch,
                (0..n as u64).map(|i| sb.first_row + i + 1).collect(),
            ),
        };
        Counters::add(&self.counters.rows_read, batch.num_rows() as u64);
        let texts = self.plan.input.text.render(&batch)?;
        let ids = match &self.plan.input.id_column {
            Some(c) => batch
                .column_by_name(c)
                .and_then(|a| arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).ok()),
            None => None,
        };
        let per_row: Vec<Result<Vec<ChunkOut>>> = texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| self.row(t.as_deref(), &sb.file, rows[i], ids.as_ref(), i))
            .collect();

        let mut unit = WorkUnit {
            batch: batch
                .project(&self.passthrough_idx)
                .map_err(Error::internal)?,
            row_chunks: Vec::with_capacity(texts.len()),
            chunk_row: Vec::new(),
            chunk_index: Vec::new(),
            chunk_start: Vec::new(),
            chunk_end: Vec::new(),
            chunk_text: Vec::new(),
            encoded: Vec::new(),
            vectors: Vec::new(),
        };
        let mut skipped = 0;
        let mut tokens = 0;
        for (r, chunks) in per_row.into_iter().enumerate() {
            let chunks = chunks?;
            if chunks.is_empty() {
                skipped += 1;
            }
            unit.row_chunks.push(chunks.len() as u32);
            for (k, c) in chunks.into_iter().enumerate() {
                tokens += c.encoded.len() as u64;
                unit.chunk_row.push(r as u32);
                unit.chunk_index.push(k as i32);
                unit.chunk_start.push(c.start);
                unit.chunk_end.push(c.end);
                if let Some(t) = c.text {
                    unit.chunk_text.push(t);
                }
                unit.encoded.push(c.encoded);
            }
        }
        Counters::add(&self.counters.rows_skipped, skipped);
        Counters::add(&self.counters.chunks, unit.encoded.len() as u64);
        Counters::add(&self.counters.tokens, tokens);
        Ok(unit)
    }

    /// A row's chunks; empty when the row is skipped.
    fn row(
        &self,
        text: Option<&str>,
        file: &str,
        row: u64,
        ids: Option<&ArrayRef>,
        i: usize,
    ) -> Result<Vec<ChunkOut>> {
        let empty = text.is_none_or(|t| t.trim().is_empty());
        if empty {
            match self.plan.embed.on_empty {
                OnEmpty::Skip => return Ok(Vec::new()),
                OnEmpty::Fail => {
                    let id = match (ids, &self.plan.input.id_column) {
                        (Some(a), Some(c)) => {
                            let s = a.as_any().downcast_ref::<StringArray>();
                            match s {
                                Some(s) if s.is_valid(i) => format!(" ({c} = {})", s.value(i)),
                                _ => format!(" ({c} is null)"),
                            }
                        }
                        _ => String::new(),
                    };
                    let what = if text.is_none() { "null" } else { "empty" };
                    return Err(Error::Data(format!(
                        "input {file}: row {row}{id}: the text ({}) is {what}, and embed.on_empty = \"fail\"; set it to \"skip\" or \"embed\" to go on",
                        self.plan.input.text_source
                    )));
                }
                OnEmpty::Embed => {}
            }
        }
        let text = text.unwrap_or("");
        let keep = self.plan.chunking.keep_text;
        if !self.plan.chunking.enabled {
            return Ok(vec![ChunkOut {
                start: 0,
                end: text.chars().count() as i64,
                text: keep.then(|| text.to_string()),
                encoded: self.encoder.encode(text)?,
            }]);
        }
        let tokens = self.encoder.chunk_tokens(text)?;
        let chunks = chunk::split(text.len(), &tokens, self.max_tokens, self.overlap);
        let bounds: Vec<usize> = chunks
            .iter()
            .flat_map(|c| [c.bytes.start, c.bytes.end])
            .collect();
        let chars = chunk::char_offsets(text, &bounds);
        chunks
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let piece = &text[c.bytes.clone()];
                Ok(ChunkOut {
                    start: chars[2 * k] as i64,
                    end: chars[2 * k + 1] as i64,
                    text: keep.then(|| piece.to_string()),
                    encoded: self.encoder.encode(piece)?,
                })
            })
            .collect()
    }
}
