//! Packing rows into inference batches: sorted by token length so that each
//! batch pads little, and sized by a budget of padded tokens.

use super::Device;

/// Default padded-token budget of one inference batch (rows × longest row)
/// on the CPU. Small batches keep a layer's activations in the caches: on
/// the 2-core machine a 1,024-token budget ran the same texts 1.7× faster
/// than 16,384, in a fifth of the memory, with one session; with a session
/// per core (`embed.workers`), each running its own batch in its core's
/// L2, 512 was fastest on short texts and on 256-token chunks, for
/// MiniLM (384 dims) and for a graph of twice its width (768 dims, the
/// size of mpnet-base), with one session or two (benches/batch_curve.sh,
/// with the curves in benches/README.md).
pub const CPU_BATCH_TOKENS: usize = 512;
/// Default budget on a GPU, where a batch must be large to fill the card.
pub const GPU_BATCH_TOKENS: usize = 16_384;
/// Default cap on rows in one inference batch (short texts).
pub const DEFAULT_MAX_BATCH_ROWS: usize = 256;

/// The default padded-token budget for a device (`embed.batch_tokens`
/// overrides it).
pub fn default_batch_tokens(device: Device) -> usize {
    match device {
        Device::Cpu => CPU_BATCH_TOKENS,
        Device::Cuda(_) => GPU_BATCH_TOKENS,
    }
}

/// Splits the rows (given by their token lengths) into batches. Rows are
/// visited longest first; a batch takes rows while its cost is at most
/// `batch_tokens` and `rows ≤ max_rows` (a single row always fits). A
/// `padded` batch costs `rows × longest` (a tensor), another the sum of
/// its rows (a remote API's request). Returns row indices per batch;
/// callers scatter results back by index, which restores input order.
pub fn plan(
    lengths: &[usize],
    batch_tokens: usize,
    max_rows: usize,
    padded: bool,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable: equal lengths keep input order.
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let (mut longest, mut sum) = (0, 0);
    for i in order {
        let l = lengths[i].max(1);
        let cost = match padded {
            true => (cur.len() + 1) * longest.max(l),
            false => sum + l,
        };
        let fits = cur.len() < max_rows && cost <= batch_tokens;
        if !cur.is_empty() && !fits {
            batches.push(std::mem::take(&mut cur));
            (longest, sum) = (0, 0);
        }
        longest = longest.max(l);
        sum += l;
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// Fixed-count batches in input order (no sorting): the baseline the
/// benchmark compares [`plan`] against.
pub fn plan_unsorted(n: usize, rows: usize) -> Vec<Vec<usize>> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(rows.max(1))
        .map(|c| c.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_by_padded_tokens() {
        let b = plan(&[10, 100, 20, 90, 5], 200, 8, true);
        assert_eq!(b, vec![vec![1, 3], vec![2, 0, 4]]);
        // max_rows caps short rows.
        assert_eq!(
            plan(&[1; 5], 1000, 2, true),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        // A row longer than the budget still runs, alone.
        assert_eq!(plan(&[500, 10], 100, 8, true), vec![vec![0], vec![1]]);
    }

    #[test]
    fn packs_a_remote_request_by_the_sum_of_its_tokens() {
        // Padded, the three shortest cannot join 100 + 60 (5 × 100 > 200);
        // summed, all five cost 195.
        let lengths = [10, 100, 20, 60, 5];
        assert_eq!(
            plan(&lengths, 200, 8, true),
            vec![vec![1, 3], vec![2, 0, 4]]
        );
        assert_eq!(plan(&lengths, 200, 8, false), vec![vec![1, 3, 2, 0, 4]]);
    }

    proptest! {
        #[test]
        fn every_row_once_within_budget(lengths in prop::collection::vec(1usize..300, 0..500), budget in 1usize..5000, max_rows in 1usize..64) {
            let batches = plan(&lengths, budget, max_rows, true);
            let mut seen = vec![false; lengths.len()];
            for b in &batches {
                prop_assert!(!b.is_empty() && b.len() <= max_rows);
                let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
                prop_assert!(b.len() == 1 || b.len() * longest <= budget);
                for &i in b {
                    prop_assert!(!seen[i]);
                    seen[i] = true;
                }
            }
            prop_assert!(seen.iter().all(|&s| s));
        }
    }
}
