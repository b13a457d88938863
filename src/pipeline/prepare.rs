//! The prepare stage: filter, text, chunk and tokenize one input batch.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;

use crate::chunk;
use crate::embed::{Encoded, TextEncoder};
use crate::job::{JobPlan, OnEmpty};
use crate::progress::Counters;
use crate::sink::UpdateMode;
use crate::source::{RowFilter, SourceBatch};
use crate::{Error, Result};

/// One input batch on its way through the stages.
pub(super) struct WorkUnit {
    /// The input file the rows come from, and the first row's index in it
    /// (0-based): where the batch sits in the input.
    pub(super) file: Arc<str>,
    pub(super) first_row: u64,
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
    /// Per row of `batch`, when the output records it: SHA-256 of the
    /// text embedded and the passthrough values.
    pub(super) row_hash: Vec<[u8; 32]>,
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
    /// Hash each row's content (Delta outputs).
    pub(super) hash_rows: bool,
}

/// One chunk of one row, before embedding.
pub(super) struct ChunkOut {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) text: Option<String>,
    pub(super) encoded: Encoded,
}

impl PrepareStage {
    /// The rows of a read batch this job embeds: those `todo` marks (an
    /// incremental run's new and changed rows; all when `None`) that pass
    /// the filter, with their 0-based positions in the file.
    fn selected(&self, sb: &SourceBatch, todo: Option<&[bool]>) -> Result<(RecordBatch, Vec<u64>)> {
        let n = sb.batch.num_rows();
        let (batch, mut at): (RecordBatch, Vec<u64>) = match todo {
            Some(mask) => (
                filter_record_batch(&sb.batch, &BooleanArray::from(mask.to_vec()))
                    .map_err(Error::internal)?,
                (0..n as u64).filter(|&i| mask[i as usize]).collect(),
            ),
            None => (sb.batch.clone(), (0..n as u64).collect()),
        };
        let batch = match &self.filter {
            Some(f) => {
                let (b, kept) = f.apply(&batch)?;
                at = kept.iter().map(|&k| at[k as usize]).collect();
                b
            }
            None => batch,
        };
        Ok((batch, at.into_iter().map(|i| sb.first_row + i).collect()))
    }

    /// An incremental run's keys of a read batch: for each row it would
    /// embed, its file, position, id (as text) and content hash.
    pub(super) fn keys(&self, sb: &SourceBatch, file: u32, name: &str) -> Result<RecordBatch> {
        let (batch, at) = self.selected(sb, None)?;
        let texts = self.plan.input.text.render(&batch)?;
        let passthrough = batch
            .project(&self.passthrough_idx)
            .map_err(Error::internal)?;
        let hashes = content_hashes(&texts, &passthrough)?;
        let ids = match &self.plan.input.id_column {
            Some(c) => batch
                .column_by_name(c)
                .map(|a| arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8))
                .transpose()
                .map_err(Error::internal)?,
            None => None,
        }
        .ok_or_else(|| Error::internal("an incremental run without input.id_column"))?;
        let ids = ids
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::internal("ids as text"))?;
        // Rows whose text is skipped are never in the table: not keys.
        let keep: Vec<usize> = self.kept_rows(&texts).collect();
        self.require_ids(&sb.file, ids, keep.iter().map(|&i| (i, at[i])))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![file; keep.len()])),
            Arc::new(StringArray::from(vec![name; keep.len()])),
            Arc::new(UInt64Array::from_iter_values(keep.iter().map(|&i| at[i]))),
            Arc::new(StringArray::from_iter_values(
                keep.iter().map(|&i| ids.value(i)),
            )),
            Arc::new(BinaryArray::from_iter_values(
                keep.iter().map(|&i| hashes[i].as_slice()),
            )),
        ];
        RecordBatch::try_new(keys_schema(), columns).map_err(Error::internal)
    }

    /// The rows a table holds: all but those whose text is empty, when
    /// `embed.on_empty = "skip"`.
    fn kept_rows<'a>(&self, texts: &'a [Option<String>]) -> impl Iterator<Item = usize> + 'a {
        let skip = self.plan.embed.on_empty == OnEmpty::Skip;
        (0..texts.len())
            .filter(move |&i| !(skip && texts[i].as_deref().is_none_or(|t| t.trim().is_empty())))
    }

    /// An incremental table knows its rows by id, so a row it would hold
    /// (`(index, 0-based row)`) without one is refused, also in a run that
    /// embeds every row: the next run could not compare it.
    fn require_ids(
        &self,
        file: &str,
        ids: &dyn Array,
        rows: impl Iterator<Item = (usize, u64)>,
    ) -> Result<()> {
        if !self.hash_rows || self.plan.output.mode != UpdateMode::Incremental {
            return Ok(());
        }
        for (i, row) in rows {
            if ids.is_null(i) {
                return Err(Error::Data(format!(
                    "input {file}: row {}: the id column {} is null; an incremental run needs an id on every row (or set output.mode = \"full\")",
                    row + 1,
                    self.plan.input.id_column.as_deref().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    pub(super) fn unit(&self, sb: SourceBatch, todo: Option<&[bool]>) -> Result<WorkUnit> {
        let (file, first_row) = (Arc::clone(&sb.file), sb.first_row);
        let (batch, at) = self.selected(&sb, todo)?;
        // 1-based, for messages.
        let rows: Vec<u64> = at.iter().map(|r| r + 1).collect();
        Counters::add(&self.counters.rows_read, batch.num_rows() as u64);
        let texts = self.plan.input.text.render(&batch)?;
        let ids = match &self.plan.input.id_column {
            Some(c) => batch
                .column_by_name(c)
                .and_then(|a| arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).ok()),
            None => None,
        };
        if let Some(ids) = &ids {
            let kept = self.kept_rows(&texts).map(|i| (i, at[i]));
            self.require_ids(&sb.file, ids, kept)?;
        }
        let per_row: Vec<Result<Vec<ChunkOut>>> = texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| self.row(t.as_deref(), &sb.file, rows[i], ids.as_ref(), i))
            .collect();

        let mut unit = WorkUnit {
            file,
            first_row,
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
            row_hash: Vec::new(),
        };
        if self.hash_rows {
            unit.row_hash = content_hashes(&texts, &unit.batch)?;
        }
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

/// Per row: SHA-256 over the text embedded (`None`: a null text) and the
/// row's passthrough values in arrow's row format, which encodes every type
/// unambiguously. Equal hashes: the same vectors and the same output row.
pub(super) fn content_hashes(
    texts: &[Option<String>],
    batch: &RecordBatch,
) -> Result<Vec<[u8; 32]>> {
    use arrow::row::{RowConverter, SortField};
    use sha2::{Digest, Sha256};
    let fields: Vec<SortField> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(Error::internal)?;
    let rows = converter
        .convert_columns(batch.columns())
        .map_err(Error::internal)?;
    Ok(texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut h = Sha256::new();
            match t {
                Some(t) => {
                    h.update([1u8]);
                    h.update((t.len() as u64).to_le_bytes());
                    h.update(t.as_bytes());
                }
                None => h.update([0u8]),
            }
            h.update(rows.row(i).as_ref());
            h.finalize().into()
        })
        .collect())
}

/// Columns of an incremental run's keys file.
pub(super) fn keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::UInt32, false),
        // The file's name (relative to a Delta input), for a later run
        // that reuses the keys of files that did not change.
        Field::new("path", DataType::Utf8, false),
        Field::new("row", DataType::UInt64, false),
        Field::new("id", DataType::Utf8, true),
        Field::new("hash", DataType::Binary, false),
    ]))
}
