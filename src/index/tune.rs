//! The recall curve of a built index: recall@10 against the exact search,
//! on rows of the table (each left out of its own list), for growing
//! `nprobe` until the target is reached. The smallest `nprobe` that
//! reaches it is the index's default.
//!
//! Measured from the lists as written, one list in memory at a time: each
//! query's lists are ranked by their centroids, each list is scored
//! against the queries that probe it (up to a depth), and a query's result
//! at `nprobe` p is the best of its lists ranked below p. So the build
//! never holds the index (a 10M × 384 one would be 15 GB).

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::cluster::neighbors::TopK;

use super::{RECALL_K, RecallPoint, query_target, recall, score_list};

/// Rows of the table to measure recall on, and where they are.
pub(super) struct Queries {
    pub(super) x: Vec<f32>,
    pub(super) rows: Vec<u32>,
}

/// `nprobe` values tried, in order, up to the number of lists.
const STEPS: [usize; 16] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256];

/// Lists probed by the first measuring pass; a target not reached by then
/// takes a second pass over every list.
const FIRST_DEPTH: usize = 64;

/// An index's lists as written: centroids, offsets, the vectors file
/// (read a list at a time) and the rows.
pub(super) struct Built<'a> {
    pub(super) dir: &'a Path,
    pub(super) centroids: &'a [f32],
    pub(super) offsets: &'a [u64],
    pub(super) rows: &'a [u32],
    pub(super) dim: usize,
}

/// The `nprobe` values to measure for `lists` lists.
fn steps(lists: usize) -> Vec<usize> {
    let mut steps: Vec<usize> = STEPS.iter().copied().filter(|&s| s < lists).collect();
    let mut more = STEPS[STEPS.len() - 1] * 2;
    while more < lists {
        steps.push(more);
        more *= 2;
    }
    steps.push(lists);
    steps
}

/// recall@10 by `nprobe`, up to the first that reaches the target of
/// queries from outside the table ([`query_target`]; or every list: the
/// exact search).
pub(super) fn curve(
    built: &Built<'_>,
    queries: &Queries,
    exact: &[Vec<(u32, f32)>],
    target: f64,
) -> std::io::Result<Vec<RecallPoint>> {
    let lists = built.offsets.len() - 1;
    let steps = steps(lists);
    let mut curve = Vec::new();
    for depth in [FIRST_DEPTH.min(lists), lists] {
        let found = probe(built, queries, depth)?;
        curve.clear();
        for &nprobe in steps.iter().filter(|&&s| s <= depth) {
            let approx: Vec<Vec<(u32, f32)>> =
                found.iter().map(|f| best_below(f, nprobe)).collect();
            let r = recall(exact, &approx);
            curve.push(RecallPoint { nprobe, recall: r });
            if r >= query_target(target) {
                return Ok(curve);
            }
        }
    }
    Ok(curve)
}

/// A candidate of a query: the rank of the list it is in, its row and
/// score.
type Candidate = (u32, u32, f32);

/// A query's [`RECALL_K`] best rows among its candidates of lists ranked
/// below `nprobe`.
fn best_below(found: &[Candidate], nprobe: usize) -> Vec<(u32, f32)> {
    let mut top = TopK::new(RECALL_K);
    for &(rank, row, score) in found {
        if (rank as usize) < nprobe {
            top.offer(score, row);
        }
    }
    top.into_sorted()
}

/// Each query's best [`RECALL_K`] rows of each of its first `depth`
/// lists, with the lists' ranks; the lists read one at a time.
fn probe(
    built: &Built<'_>,
    queries: &Queries,
    depth: usize,
) -> std::io::Result<Vec<Vec<Candidate>>> {
    let d = built.dim;
    let by_list = super::search::probing(&queries.x, built.centroids, d, depth);
    let vectors = std::fs::File::open(built.dir.join(super::VECTORS))?;
    let mut found: Vec<Vec<Candidate>> = vec![Vec::new(); queries.rows.len()];
    let (mut list, mut gathered, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    for (l, members) in by_list.iter().enumerate() {
        let (a, b) = (built.offsets[l] as usize, built.offsets[l + 1] as usize);
        if members.is_empty() || a == b {
            continue;
        }
        list.resize((b - a) * d, 0f32);
        vectors.read_exact_at(bytemuck::cast_slice_mut(&mut list), (a * d * 4) as u64)?;
        gathered.clear();
        for &(i, _) in members {
            gathered.extend_from_slice(&queries.x[i as usize * d..(i as usize + 1) * d]);
        }
        let mut heaps: Vec<TopK> = members.iter().map(|_| TopK::new(RECALL_K)).collect();
        score_list(
            &gathered,
            &list,
            &built.rows[a..b],
            d,
            &mut scores,
            |g, s, row| {
                if queries.rows[members[g].0 as usize] != row {
                    heaps[g].offer(s, row);
                }
            },
        );
        for (&(i, rank), heap) in members.iter().zip(heaps) {
            found[i as usize].extend(heap.into_sorted().into_iter().map(|(r, s)| (rank, r, s)));
        }
    }
    Ok(found)
}

/// The smallest `nprobe` of `curve` that reaches `target` (every list,
/// where none does).
pub(super) fn smallest_reaching(curve: &[RecallPoint], target: f64, lists: usize) -> usize {
    curve
        .iter()
        .find(|p| p.recall >= target)
        .map_or(lists, |p| p.nprobe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::Rng;
    use crate::cluster::neighbors::{self, Similarity};

    /// The curve measured list by list from the files equals the one of
    /// the whole index in memory, at every nprobe, to the last query.
    #[test]
    fn the_streamed_curve_is_the_in_memory_search() {
        let (n, d) = (4000, 24);
        let mut rng = Rng::new(9);
        let mut x: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
        neighbors::prepare(&mut x, d, Similarity::Cosine);
        let ivf = crate::index::search::tests::ivf_of(&x, d, 80);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(super::super::VECTORS),
            bytemuck::cast_slice::<f32, u8>(&ivf.vectors),
        )
        .unwrap();
        let q: Vec<u32> = (0..200).map(|i| i * 17).collect();
        let queries = Queries {
            x: q.iter()
                .flat_map(|&r| x[r as usize * d..(r as usize + 1) * d].iter().copied())
                .collect(),
            rows: q.clone(),
        };
        let exact: Vec<Vec<(u32, f32)>> =
            neighbors::neighbors(&queries.x, &x, d, None, RECALL_K + 1)
                .into_iter()
                .zip(&q)
                .map(|(mut v, &own)| {
                    v.retain(|c| c.0 != own);
                    v.truncate(RECALL_K);
                    v
                })
                .collect();
        let built = Built {
            dir: dir.path(),
            centroids: &ivf.centroids,
            offsets: &ivf.offsets,
            rows: &ivf.rows,
            dim: d,
        };
        let streamed = curve(&built, &queries, &exact, 1.0).unwrap();
        for p in &streamed {
            let got = ivf.search(&queries.x, Some(&queries.rows), RECALL_K, p.nprobe);
            assert_eq!(p.recall, recall(&exact, &got), "nprobe {}", p.nprobe);
        }
        assert_eq!(streamed.last().unwrap().recall, 1.0);
        // Past the first pass's depth: every list probed is the exact search.
        let all = probe(&built, &queries, 80).unwrap();
        let got: Vec<Vec<(u32, f32)>> = all.iter().map(|f| best_below(f, 80)).collect();
        assert_eq!(recall(&exact, &got), 1.0);
        let partial: Vec<Vec<(u32, f32)>> = all.iter().map(|f| best_below(f, 70)).collect();
        let in_memory = ivf.search(&queries.x, Some(&queries.rows), RECALL_K, 70);
        assert_eq!(recall(&exact, &partial), recall(&exact, &in_memory));
    }
}
