//! Searching an IVF index: each query's `nprobe` best-scoring centroids
//! name the lists it looks in, and every vector of those lists is scored
//! exactly. Queries are taken a block at a time and grouped by list, so
//! that each list's vectors are scored against all the block's queries
//! that probe it in one sgemm product.

use rayon::prelude::*;

use crate::cluster::kmeans;
use crate::cluster::neighbors::TopK;

use super::IndexMeta;
use super::mapped::Array;

/// Queries whose centroid scores are computed together (in parallel).
const QUERY_BLOCK: usize = 2048;

/// Queries of one list scored in one product, at most.
const MEMBERS: usize = 1024;
/// Entries searched together by [`Ivf::search_entries`].
const SWEEP: usize = 65_536;

/// An index to search: its centroids in memory, its lists in memory or
/// mapped.
pub struct Ivf {
    pub meta: IndexMeta,
    /// `lists × dim`, as the metric scores them (see [`super::Space`]).
    pub(super) centroids: Vec<f32>,
    /// Entry offsets of the lists: list `l` holds entries
    /// `offsets[l]..offsets[l + 1]`.
    pub(super) offsets: Vec<u64>,
    /// `entries × dim`, list after list.
    pub(super) vectors: Array<f32>,
    /// Each entry's row position in the table's scan order.
    pub(super) rows: Array<u32>,
}

impl Ivf {
    /// The width of its rows and queries (see [`super::Space`]).
    pub fn dim(&self) -> usize {
        self.meta.space().width()
    }

    pub fn lists(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Rows in the index (rows without a score are not).
    pub fn entries(&self) -> usize {
        self.rows.len()
    }

    /// For each query (`queries`, `q × dim`, prepared as the index's rows
    /// are): the `k` best rows of the `nprobe` lists it probes, best first,
    /// as (row position, score). `own[i]` is query `i`'s own row, left out.
    ///
    /// The queries are grouped by the lists they probe, and each list is
    /// scored against all of its queries in one product: a list is read
    /// (and packed for the product) once per call however many queries
    /// probe it. The lists are shared out among the threads, each keeping
    /// its own best rows of every query, merged at the end.
    pub fn search(
        &self,
        queries: &[f32],
        own: Option<&[u32]>,
        k: usize,
        nprobe: usize,
    ) -> Vec<Vec<(u32, f32)>> {
        let q = queries.len() / self.dim();
        let by_list = self.probing_all(queries, nprobe);
        let workers = rayon::current_num_threads().clamp(1, self.lists());
        let merged = (0..workers)
            .into_par_iter()
            .map(|w| {
                let mut heaps: Vec<TopK> = (0..q).map(|_| TopK::new(k)).collect();
                let (mut gathered, mut scores) = (Vec::new(), Vec::new());
                for l in (w..self.lists()).step_by(workers) {
                    let scratch = (&mut gathered, &mut scores);
                    self.score_list_for(l, &by_list[l], queries, own, &mut heaps, scratch);
                }
                heaps
            })
            .reduce_with(|mut a, b| {
                for (into, from) in a.iter_mut().zip(b) {
                    for (row, score) in from.into_sorted() {
                        into.offer(score, row);
                    }
                }
                a
            });
        merged
            .map(|heaps| heaps.into_iter().map(TopK::into_sorted).collect())
            .unwrap_or_else(|| vec![Vec::new(); q])
    }

    /// The queries probing each list, [`QUERY_BLOCK`] queries' centroid
    /// scores at a time (in parallel).
    fn probing_all(&self, queries: &[f32], nprobe: usize) -> Vec<Vec<u32>> {
        let d = self.dim();
        let q = queries.len() / d;
        let blocks: Vec<usize> = (0..q).step_by(QUERY_BLOCK).collect();
        let parts: Vec<Vec<Vec<(u32, u32)>>> = blocks
            .par_iter()
            .map(|&b| {
                let end = (b + QUERY_BLOCK).min(q);
                probing(&queries[b * d..end * d], &self.centroids, d, nprobe)
            })
            .collect();
        let mut by_list: Vec<Vec<u32>> = vec![Vec::new(); self.lists()];
        for (&b, part) in blocks.iter().zip(parts) {
            for (list, members) in by_list.iter_mut().zip(part) {
                list.extend(members.iter().map(|&(i, _)| b as u32 + i));
            }
        }
        by_list
    }

    /// Scores list `l` against the queries probing it (`members`) and
    /// offers each query its rows (its own left out); `scratch` holds the
    /// gathered queries and the scores.
    fn score_list_for(
        &self,
        l: usize,
        members: &[u32],
        queries: &[f32],
        own: Option<&[u32]>,
        heaps: &mut [TopK],
        (gathered, scores): (&mut Vec<f32>, &mut Vec<f32>),
    ) {
        let d = self.dim();
        let (start, end) = (self.offsets[l] as usize, self.offsets[l + 1] as usize);
        if members.is_empty() || start == end {
            return;
        }
        let (vectors, rows) = (&self.vectors[start * d..end * d], &self.rows[start..end]);
        // A large list probed by many queries: their scores a chunk at a
        // time (`MEMBERS × rows` floats at most).
        for chunk in members.chunks(MEMBERS) {
            gathered.clear();
            for &i in chunk {
                gathered.extend_from_slice(&queries[i as usize * d..(i as usize + 1) * d]);
            }
            scores.resize(chunk.len() * rows.len(), 0.0);
            kmeans::dot_block(gathered, vectors, d, rows.len(), scores);
            for (&i, row_scores) in chunk.iter().zip(scores.chunks_exact(rows.len())) {
                let i = i as usize;
                heaps[i].offer_all(row_scores, rows, own.map(|o| o[i]));
            }
        }
    }

    /// Every indexed row's `k` best other rows at `nprobe`, as (row
    /// position, score), into `found` (`k` slots a table row, a row's
    /// neighbours best first, unused slots left as they are). Entries are
    /// taken as queries in list order, [`SWEEP`] at a time: a block's
    /// queries share home lists and probe nearby ones, so each probed
    /// list is scored against many of them at once and, mapped, only
    /// those lists' pages are touched. `progress(done)` after each sweep;
    /// stops with [`crate::Error::Interrupted`] when a stop is asked for.
    pub fn search_entries(
        &self,
        k: usize,
        nprobe: usize,
        found: &mut [(u32, f32)],
        mut progress: impl FnMut(usize),
    ) -> crate::Result<()> {
        let d = self.dim();
        for start in (0..self.entries()).step_by(SWEEP) {
            crate::cancel::check()?;
            let end = (start + SWEEP).min(self.entries());
            let own = &self.rows[start..end];
            let lists = self.search(&self.vectors[start * d..end * d], Some(own), k, nprobe);
            for (&row, list) in own.iter().zip(lists) {
                let slots = &mut found[row as usize * k..(row as usize + 1) * k];
                slots[..list.len()].copy_from_slice(&list);
            }
            progress(end);
        }
        Ok(())
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
        let vectors: Vec<f32> = order
            .iter()
            .flat_map(|&r| x[r as usize * dim..(r as usize + 1) * dim].iter().copied())
            .collect();
        Ivf {
            meta: IndexMeta::placeholder(dim, lists),
            centroids: model.centroids,
            offsets,
            vectors: Array::from(vectors),
            rows: Array::from(order),
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
    fn every_entry_searched_in_list_order_lands_on_its_own_row() {
        let (n, d, k) = (3000, 16, 10);
        let x = clustered(n, d, 5);
        let ivf = ivf_of(&x, d, 30);
        // Five more table rows than entries: rows the index left out.
        let mut found = vec![(u32::MAX, f32::NAN); (n + 5) * k];
        let mut seen = Vec::new();
        ivf.search_entries(k, 30, &mut found, |done| seen.push(done))
            .unwrap();
        assert_eq!(seen, [n]);
        let exact = neighbors::neighbors(&x, &x, d, Some(0), k);
        for (i, e) in exact.iter().enumerate() {
            let got: Vec<u32> = found[i * k..(i + 1) * k].iter().map(|c| c.0).collect();
            let e: Vec<u32> = e.iter().map(|c| c.0).collect();
            assert_eq!(got, e, "row {i}");
        }
        assert!(found[n * k..].iter().all(|c| c.0 == u32::MAX));
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
