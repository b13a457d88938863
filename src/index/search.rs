//! Searching an IVF index: each query's `nprobe` best-scoring centroids
//! name the lists it looks in, and every vector of those lists is scored
//! exactly. Queries are taken a block at a time and grouped by list, so
//! that each list's vectors are scored against all the block's queries
//! that probe it in one sgemm product.

use rayon::prelude::*;

use crate::cluster::kmeans;
use crate::cluster::neighbors::TopK;

use super::IndexMeta;

/// Queries searched together (grouped by list); blocks run in parallel.
const QUERY_BLOCK: usize = 2048;

/// An index in memory: its centroids and lists.
pub struct Ivf {
    pub meta: IndexMeta,
    /// `lists × dim`, as the metric scores them (unit rows for cosine).
    pub(super) centroids: Vec<f32>,
    /// Entry offsets of the lists: list `l` holds entries
    /// `offsets[l]..offsets[l + 1]`.
    pub(super) offsets: Vec<u64>,
    /// `entries × dim`, list after list.
    pub(super) vectors: Vec<f32>,
    /// Each entry's row position in the table's scan order.
    pub(super) rows: Vec<u32>,
}

impl Ivf {
    pub fn dim(&self) -> usize {
        self.meta.dim
    }

    pub fn lists(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Rows in the index (rows without a score are not).
    pub fn entries(&self) -> usize {
        self.rows.len()
    }

    /// Each row position's entry (`u32::MAX` for a row not indexed), for
    /// searching every indexed row in the table's order.
    pub fn entry_of_rows(&self, table_rows: usize) -> Vec<u32> {
        let mut at = vec![u32::MAX; table_rows];
        for (e, &r) in self.rows.iter().enumerate() {
            if let Some(slot) = at.get_mut(r as usize) {
                *slot = e as u32;
            }
        }
        at
    }

    /// The vector of an entry.
    pub fn vector(&self, entry: u32) -> &[f32] {
        let d = self.dim();
        &self.vectors[entry as usize * d..(entry as usize + 1) * d]
    }

    /// For each query (`queries`, `q × dim`, prepared as the index's rows
    /// are): the `k` best rows of the `nprobe` lists it probes, best first,
    /// as (row position, score). `own[i]` is query `i`'s own row, left out.
    pub fn search(
        &self,
        queries: &[f32],
        own: Option<&[u32]>,
        k: usize,
        nprobe: usize,
    ) -> Vec<Vec<(u32, f32)>> {
        let d = self.dim();
        let q = queries.len() / d;
        let blocks: Vec<usize> = (0..q).step_by(QUERY_BLOCK).collect();
        blocks
            .par_iter()
            .flat_map_iter(|&b| {
                let end = (b + QUERY_BLOCK).min(q);
                self.search_block(&queries[b * d..end * d], own.map(|o| &o[b..end]), k, nprobe)
            })
            .collect()
    }

    /// [`Ivf::search`] of one block, on this thread.
    fn search_block(
        &self,
        queries: &[f32],
        own: Option<&[u32]>,
        k: usize,
        nprobe: usize,
    ) -> Vec<Vec<(u32, f32)>> {
        let d = self.dim();
        let q = queries.len() / d;
        let by_list = probing(queries, &self.centroids, d, nprobe);
        let mut heaps: Vec<TopK> = (0..q).map(|_| TopK::new(k)).collect();
        let (mut gathered, mut scores) = (Vec::new(), Vec::new());
        for (l, members) in by_list.iter().enumerate() {
            let (start, end) = (self.offsets[l] as usize, self.offsets[l + 1] as usize);
            if members.is_empty() || start == end {
                continue;
            }
            gathered.clear();
            for &(i, _) in members {
                gathered.extend_from_slice(&queries[i as usize * d..(i as usize + 1) * d]);
            }
            let (vectors, rows) = (&self.vectors[start * d..end * d], &self.rows[start..end]);
            score_list(&gathered, vectors, rows, d, &mut scores, |g, score, row| {
                let i = members[g].0 as usize;
                if own.map(|o| o[i]) != Some(row) {
                    heaps[i].offer(score, row);
                }
            });
        }
        heaps.into_iter().map(TopK::into_sorted).collect()
    }
}

/// For each list, the queries (`q × dim`) that probe it, among the
/// `nprobe` lists whose centroids score best for them, and its rank among
/// those (0: the best).
pub(super) fn probing(
    queries: &[f32],
    centroids: &[f32],
    dim: usize,
    nprobe: usize,
) -> Vec<Vec<(u32, u32)>> {
    let (q, lists) = (queries.len() / dim, centroids.len() / dim);
    let nprobe = nprobe.clamp(1, lists);
    let mut scores = vec![0f32; q * lists];
    kmeans::dot_block(queries, centroids, dim, lists, &mut scores);
    let mut by_list: Vec<Vec<(u32, u32)>> = vec![Vec::new(); lists];
    let mut order: Vec<u32> = Vec::with_capacity(lists);
    for i in 0..q {
        let s = &scores[i * lists..(i + 1) * lists];
        let best = best_lists(s, nprobe, &mut order);
        best.sort_by(|a, b| s[*b as usize].total_cmp(&s[*a as usize]));
        for (rank, &l) in best.iter().enumerate() {
            by_list[l as usize].push((i as u32, rank as u32));
        }
    }
    by_list
}

/// The `nprobe` lists (of all, clamped) whose centroids score best in
/// `scores`, one query's scores against every centroid, in no order; none
/// for a query without a score. `order` is scratch space.
pub fn best_lists<'a>(scores: &[f32], nprobe: usize, order: &'a mut Vec<u32>) -> &'a mut [u32] {
    order.clear();
    if scores.iter().any(|v| !v.is_finite()) {
        return order;
    }
    let nprobe = nprobe.clamp(1, scores.len());
    order.extend(0..scores.len() as u32);
    if nprobe < scores.len() {
        order.select_nth_unstable_by(nprobe - 1, |a, b| {
            scores[*b as usize].total_cmp(&scores[*a as usize])
        });
    }
    &mut order[..nprobe]
}

/// Scores gathered queries (`q × d`) against one list's `vectors` as one
/// sgemm product and hands each finite score to `offer(query, score,
/// row)`; `scores` is scratch space.
pub fn score_list(
    gathered: &[f32],
    vectors: &[f32],
    rows: &[u32],
    d: usize,
    scores: &mut Vec<f32>,
    mut offer: impl FnMut(usize, f32, u32),
) {
    let m = rows.len();
    scores.resize(gathered.len() / d * m, 0.0);
    kmeans::dot_block(gathered, vectors, d, m, scores);
    for (g, row_scores) in scores.chunks_exact(m.max(1)).enumerate() {
        for (&score, &row) in row_scores.iter().zip(rows) {
            if score.is_finite() {
                offer(g, score, row);
            }
        }
    }
}

/// The share of `exact`'s rows found in `approx`, over all queries: each
/// query's recall@k (k = its exact list's length), averaged.
pub fn recall(exact: &[Vec<(u32, f32)>], approx: &[Vec<(u32, f32)>]) -> f64 {
    let mut sum = 0.0;
    let mut counted = 0usize;
    for (e, a) in exact.iter().zip(approx) {
        if e.is_empty() {
            continue;
        }
        let found = e
            .iter()
            .filter(|(r, _)| a.iter().any(|x| x.0 == *r))
            .count();
        sum += found as f64 / e.len() as f64;
        counted += 1;
    }
    if counted == 0 {
        1.0
    } else {
        sum / counted as f64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::kmeans::Rng;
    use crate::cluster::neighbors::{self, Similarity};

    /// An index of `x` with `lists` lists made by k-means, in memory.
    pub(crate) fn ivf_of(x: &[f32], dim: usize, lists: usize) -> Ivf {
        let cfg = kmeans::Config {
            k: lists,
            max_iter: 20,
            metric: kmeans::Metric::Cosine,
            ..Default::default()
        };
        let model = kmeans::fit(x, dim, &cfg, None);
        let n = x.len() / dim;
        let mut labels = vec![0u32; n];
        let mut dists = vec![0f32; n];
        let c = kmeans::Centres::new(&model.centroids, dim, kmeans::Metric::Cosine);
        kmeans::nearest(x, &vec![0.0; n], &c, &mut labels, &mut dists);
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&r| labels[r as usize]);
        let mut offsets = vec![0u64; lists + 1];
        for &l in &labels {
            offsets[l as usize + 1] += 1;
        }
        for l in 0..lists {
            offsets[l + 1] += offsets[l];
        }
        let vectors = order
            .iter()
            .flat_map(|&r| x[r as usize * dim..(r as usize + 1) * dim].iter().copied())
            .collect();
        Ivf {
            meta: IndexMeta::placeholder(dim, lists),
            centroids: model.centroids,
            offsets,
            vectors,
            rows: order,
        }
    }

    fn clustered(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let centres: Vec<f32> = (0..20 * dim).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let mut x = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let c = rng.below(20) as usize;
            for t in 0..dim {
                x.push(centres[c * dim + t] + 0.15 * (rng.next_f64() as f32 - 0.5));
            }
        }
        neighbors::prepare(&mut x, dim, Similarity::Cosine);
        x
    }

    #[test]
    fn probing_every_list_is_the_exact_search() {
        let (n, d, k) = (3000, 16, 10);
        let x = clustered(n, d, 3);
        let ivf = ivf_of(&x, d, 30);
        let own: Vec<u32> = (0..n as u32).collect();
        let got = ivf.search(&x, Some(&own), k, 30);
        let exact = neighbors::neighbors(&x, &x, d, Some(0), k);
        for (i, (g, e)) in got.iter().zip(&exact).enumerate() {
            let g: Vec<u32> = g.iter().map(|c| c.0).collect();
            let e: Vec<u32> = e.iter().map(|c| c.0).collect();
            assert_eq!(g, e, "row {i}");
        }
        assert_eq!(recall(&exact, &got), 1.0);
    }

    #[test]
    fn fewer_lists_probed_find_fewer_and_never_the_row_itself() {
        let (n, d, k) = (3000, 16, 10);
        let x = clustered(n, d, 4);
        let ivf = ivf_of(&x, d, 30);
        let own: Vec<u32> = (0..n as u32).collect();
        let exact = neighbors::neighbors(&x, &x, d, Some(0), k);
        let one = ivf.search(&x, Some(&own), k, 1);
        let four = ivf.search(&x, Some(&own), k, 4);
        assert!(
            one.iter()
                .enumerate()
                .all(|(i, r)| r.iter().all(|c| c.0 != i as u32))
        );
        let (r1, r4) = (recall(&exact, &one), recall(&exact, &four));
        assert!(r1 < r4 && r4 <= 1.0, "recall {r1} with 1 list, {r4} with 4");
        assert!(r1 > 0.3, "recall {r1} with 1 list");
    }
}
