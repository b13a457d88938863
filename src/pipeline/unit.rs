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

impl WorkUnit {
    /// Leaves out, after embedding, the rows of the chunks at `chunks`
    /// (indices into the chunk columns): all their chunks go, and the rows
    /// count as skipped (0 chunks). Returns the rows left out.
    pub(super) fn drop_chunk_rows(&mut self, chunks: &[usize], dim: usize) -> Vec<u32> {
        let mut rows: Vec<u32> = chunks.iter().map(|&c| self.chunk_row[c]).collect();
        rows.sort_unstable();
        rows.dedup();
        let keep: Vec<bool> = self
            .chunk_row
            .iter()
            .map(|r| rows.binary_search(r).is_err())
            .collect();
        retain_kept(&mut self.chunk_index, &keep);
        retain_kept(&mut self.chunk_start, &keep);
        retain_kept(&mut self.chunk_end, &keep);
        if !self.chunk_text.is_empty() {
            retain_kept(&mut self.chunk_text, &keep);
        }
        retain_kept(&mut self.chunk_row, &keep);
        if dim > 0 {
            let mut vectors = Vec::with_capacity(self.vectors.len());
            for (c, v) in self.vectors.chunks_exact(dim).enumerate() {
                if keep[c] {
                    vectors.extend_from_slice(v);
                }
            }
            self.vectors = vectors;
        }
        for &r in &rows {
            self.row_chunks[r as usize] = 0;
        }
        rows
    }
}

/// Keeps the items of `v` whose place in `keep` is true.
fn retain_kept<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut k = keep.iter();
    v.retain(|_| *k.next().unwrap_or(&true));
}
