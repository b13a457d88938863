//! The recall curve of a built index: recall@10 against the exact search,
//! on rows of the table (each left out of its own list), for growing
//! `nprobe` until the target is reached. The smallest `nprobe` that
//! reaches it is the index's default.

use super::{Ivf, RECALL_K, RecallPoint, query_target, recall};

/// Rows of the table to measure recall on, and where they are.
pub(super) struct Queries {
    pub(super) x: Vec<f32>,
    pub(super) rows: Vec<u32>,
}

/// `nprobe` values tried, in order, up to the number of lists.
const STEPS: [usize; 16] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256];

/// recall@10 by `nprobe`, up to the first that reaches the target of
/// queries from outside the table ([`query_target`]; or every list: the
/// exact search).
pub(super) fn curve(
    ivf: &Ivf,
    queries: &Queries,
    exact: &[Vec<(u32, f32)>],
    target: f64,
) -> Vec<RecallPoint> {
    let lists = ivf.lists();
    let mut steps: Vec<usize> = STEPS.iter().copied().filter(|&s| s < lists).collect();
    let mut more = STEPS[STEPS.len() - 1] * 2;
    while more < lists {
        steps.push(more);
        more *= 2;
    }
    steps.push(lists);
    let mut curve = Vec::new();
    for nprobe in steps {
        let found = ivf.search(&queries.x, Some(&queries.rows), RECALL_K, nprobe);
        let r = recall(exact, &found);
        curve.push(RecallPoint { nprobe, recall: r });
        if r >= query_target(target) {
            break;
        }
    }
    curve
}

/// The smallest `nprobe` of `curve` that reaches `target` (every list,
/// where none does).
pub(super) fn smallest_reaching(curve: &[RecallPoint], target: f64, lists: usize) -> usize {
    curve
        .iter()
        .find(|p| p.recall >= target)
        .map_or(lists, |p| p.nprobe)
}
