//! Exact k nearest neighbors of every row among all rows (item-item
//! recommendations), or of other query rows among them: blocks of query
//! rows against blocks of all rows as sgemm products, a bounded heap per
//! query row, rows in parallel on rayon.
//! Exact, not approximate: every pair is scored.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use super::kmeans;

/// Query rows scored together (their scores against one database block
/// stay in cache).
pub const QUERY_BLOCK: usize = 512;
/// Database rows per product.
pub const DB_BLOCK: usize = 4096;

/// The score neighbours are ranked by; its names (`cosine`,
/// `inner_product`) are the flag's values and the lineage's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Similarity {
    /// Cosine: rows are normalised first; score = cos.
    Cosine,
    /// Raw inner product (for vectors whose norm means something).
    InnerProduct,
}

impl Similarity {
    /// The name users write.
    pub fn name(self) -> String {
        crate::names::name_of(&self)
    }
}

/// A candidate in a row's heap: the smallest score on top.
#[derive(Clone, Copy, PartialEq)]
struct Cand {
    score: f32,
    row: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we keep the k largest scores;
        // among equal scores the larger row index is dropped first.
        other
            .score
            .total_cmp(&self.score)
            .then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The `k` best (score, row) pairs offered, the worst on top of a heap;
/// among equal scores the smaller row wins.
pub struct TopK {
    heap: BinaryHeap<Cand>,
    k: usize,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            heap: BinaryHeap::with_capacity(k + 1),
            k,
        }
    }

    /// Keeps `row` if it is among the `k` best so far.
    #[inline]
    pub fn offer(&mut self, score: f32, row: u32) {
        if self.heap.len() < self.k {
            self.heap.push(Cand { score, row });
        } else if let Some(top) = self.heap.peek()
            && (score > top.score || (score == top.score && row < top.row))
        {
            self.heap.pop();
            self.heap.push(Cand { score, row });
        }
    }

    /// The score a row must reach to be kept: −∞ until `k` are kept.
    #[inline]
    pub fn floor(&self) -> f32 {
        match self.heap.peek() {
            Some(top) if self.heap.len() >= self.k => top.score,
            _ => f32::NEG_INFINITY,
        }
    }

    /// Offers each finite score of `scores` (of `rows`), `own` left out:
    /// the scores below the floor, nearly all of a long run, cost one
    /// comparison each.
    #[inline]
    pub fn offer_all(&mut self, scores: &[f32], rows: &[u32], own: Option<u32>) {
        let mut floor = self.floor();
        for (&score, &row) in scores.iter().zip(rows) {
            // NaN fails the comparison; ties reach offer, which breaks them.
            if score >= floor && score.is_finite() && Some(row) != own {
                self.offer(score, row);
                floor = self.floor();
            }
        }
    }

    /// The rows kept, best first.
    pub fn into_sorted(self) -> Vec<(u32, f32)> {
        let mut v: Vec<(u32, f32)> = self.heap.into_iter().map(|c| (c.row, c.score)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// For each query row (`queries`, `q × dim`): the `k` best rows of `db`
/// (`n × dim`), best first, as (db row, score). `self_offset = Some(s)`
/// says query `i` is db row `s + i`, which is then left out.
pub fn block_neighbors(
    queries: &[f32],
    db: &[f32],
    dim: usize,
    self_offset: Option<usize>,
    k: usize,
) -> Vec<Vec<(u32, f32)>> {
    let n = db.len() / dim;
    let q = queries.len() / dim;
    let mut heaps: Vec<TopK> = (0..q).map(|_| TopK::new(k)).collect();
    let mut scores = vec![0f32; q * DB_BLOCK];
    for block in (0..n).step_by(DB_BLOCK) {
        let m = DB_BLOCK.min(n - block);
        let s = &mut scores[..q * m];
        kmeans::dot_block(queries, &db[block * dim..(block + m) * dim], dim, m, s);
        for (i, heap) in heaps.iter_mut().enumerate() {
            let row = &s[i * m..(i + 1) * m];
            let own = self_offset.map(|o| o + i);
            for (j, &score) in row.iter().enumerate() {
                let r = (block + j) as u32;
                // A NaN score (a row without a direction or with a
                // non-finite value) ranks nowhere.
                if own != Some(r as usize) && score.is_finite() {
                    heap.offer(score, r);
                }
            }
        }
    }
    heaps.into_iter().map(TopK::into_sorted).collect()
}

/// Neighbors in `db` of every query row, query blocks in parallel.
/// `self_offset`: as in [`block_neighbors`], for queries drawn from `db`.
pub fn neighbors(
    queries: &[f32],
    db: &[f32],
    dim: usize,
    self_offset: Option<usize>,
    k: usize,
) -> Vec<Vec<(u32, f32)>> {
    let q = queries.len() / dim;
    let blocks: Vec<usize> = (0..q).step_by(QUERY_BLOCK).collect();
    blocks
        .par_iter()
        .flat_map_iter(|&b| {
            let end = (b + QUERY_BLOCK).min(q);
            block_neighbors(
                &queries[b * dim..end * dim],
                db,
                dim,
                self_offset.map(|o| o + b),
                k,
            )
        })
        .collect()
}

/// Prepares rows for `similarity` (normalises for cosine). A row that has
/// no score (a NaN or infinite value; for cosine, a zero vector, which has
/// no direction) is made all NaN: it has no neighbours and is no one's.
/// Returns how many rows were, with the first few's 0-based indices.
pub fn prepare(x: &mut [f32], dim: usize, similarity: Similarity) -> (usize, Vec<usize>) {
    let mut without = (0, Vec::new());
    for (i, row) in x.chunks_exact_mut(dim).enumerate() {
        let finite = row.iter().all(|v| v.is_finite());
        let zero = row.iter().all(|&v| v == 0.0);
        if !finite || (zero && similarity == Similarity::Cosine) {
            row.fill(f32::NAN);
            without.0 += 1;
            if without.1.len() < 5 {
                without.1.push(i);
            }
        }
    }
    if similarity == Similarity::Cosine {
        crate::vectors::normalize_rows(x, dim);
    }
    without
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::Rng;

    #[test]
    fn equals_brute_force() {
        let mut rng = Rng::new(5);
        let (n, d, k) = (1300, 24, 7);
        let mut x: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
        prepare(&mut x, d, Similarity::Cosine);
        let got = neighbors(&x, &x, d, Some(0), k);
        // Queries given apart from the rows: the row itself is a candidate.
        let apart = neighbors(&x[5 * d..9 * d], &x, d, None, k);
        for (i, row) in apart.iter().enumerate() {
            assert_eq!(row[0].0 as usize, 5 + i);
            assert!((row[0].1 - 1.0).abs() < 1e-5);
            for (a, b) in row[1..].iter().zip(&got[5 + i][..k - 1]) {
                assert_eq!(a.0, b.0);
                assert!((a.1 - b.1).abs() < 1e-6);
            }
        }
        for i in (0..n).step_by(97) {
            let mut all: Vec<(u32, f32)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let s: f32 = (0..d).map(|t| x[i * d + t] * x[j * d + t]).sum();
                    (j as u32, s)
                })
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let want: Vec<u32> = all[..k].iter().map(|c| c.0).collect();
            let ids: Vec<u32> = got[i].iter().map(|c| c.0).collect();
            assert_eq!(ids, want, "row {i}");
            for (g, w) in got[i].iter().zip(&all[..k]) {
                assert!((g.1 - w.1).abs() < 1e-5);
            }
        }
    }
}
