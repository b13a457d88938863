//! The unit of work that flows through the stages: one input batch, its
//! chunks, their tokens and, once embedded, their vectors.

use std::sync::Arc;

use arrow::array::RecordBatch;

use crate::embed::Encoded;

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
