//! Pooling and normalisation, as sentence-transformers computes them.

/// Why weighted-mean pooling is refused, wherever it is asked for.
pub const WEIGHTEDMEAN_REFUSED: &str = "\"weightedmean\" pooling is not supported (it weights tokens by position, which embedflow does not implement); choose one of cls, mean, max, mean_sqrt_len, lasttoken";

/// The pooling modes, named as sentence-transformers' `pooling_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Pooling {
    Cls,
    Mean,
    Max,
    MeanSqrtLen,
    #[value(name = "lasttoken")]
    LastToken,
}

impl Pooling {
    /// The mode named `s` (as a job or a Pooling config writes it).
    pub fn parse(s: &str) -> Option<Pooling> {
        crate::names::parse(s).filter(|p: &Pooling| p.name() == s)
    }

    /// The name users write.
    pub fn name(self) -> String {
        crate::names::name_of(&self)
    }
}

/// Pools token embeddings `hidden` of shape [rows, seq, dim] (row-major)
/// into `out` [rows, dim]. `lengths[r]` is row r's number of real tokens;
/// the first `skip` tokens of each row (an excluded prompt) are left out of
/// mean, max and mean_sqrt_len pooling.
pub fn pool(
    pooling: Pooling,
    hidden: &[f32],
    seq: usize,
    dim: usize,
    lengths: &[usize],
    skip: usize,
    out: &mut [f32],
) {
    debug_assert_eq!(hidden.len(), lengths.len() * seq * dim);
    debug_assert_eq!(out.len(), lengths.len() * dim);
    for (r, (&len, o)) in lengths.iter().zip(out.chunks_exact_mut(dim)).enumerate() {
        let row = &hidden[r * seq * dim..(r + 1) * seq * dim];
        let tok = |t: usize| &row[t * dim..(t + 1) * dim];
        let from = skip.min(len);
        match pooling {
            Pooling::Cls => o.copy_from_slice(tok(0)),
            Pooling::LastToken => o.copy_from_slice(tok(len.max(1) - 1)),
            Pooling::Max => {
                // Masked positions count as -1e9, as in sentence-transformers.
                o.fill(if from < len { f32::NEG_INFINITY } else { -1e9 });
                for t in from..len {
                    for (a, &b) in o.iter_mut().zip(tok(t)) {
                        *a = a.max(b);
                    }
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                o.fill(0.0);
                for t in from..len {
                    for (a, &b) in o.iter_mut().zip(tok(t)) {
                        *a += b;
                    }
                }
                let n = ((len - from) as f32).max(1e-9);
                let d = if pooling == Pooling::Mean {
                    n
                } else {
                    n.sqrt()
                };
                for a in o.iter_mut() {
                    *a /= d;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::normalize_rows;

    // Two rows, seq 3, dim 2; row 0 has 3 tokens, row 1 has 2 (one pad).
    const H: [f32; 12] = [
        1., 2., 3., 4., 5., 6., /* row 1 */ -1., 0., 3., 8., 99., 99.,
    ];

    fn run(p: Pooling, skip: usize) -> Vec<f32> {
        let mut out = vec![0.0; 4];
        pool(p, &H, 3, 2, &[3, 2], skip, &mut out);
        out
    }

    #[test]
    fn pools_like_sentence_transformers() {
        assert_eq!(run(Pooling::Mean, 0), vec![3., 4., 1., 4.]);
        assert_eq!(run(Pooling::Cls, 0), vec![1., 2., -1., 0.]);
        assert_eq!(run(Pooling::Max, 0), vec![5., 6., 3., 8.]);
        assert_eq!(run(Pooling::LastToken, 0), vec![5., 6., 3., 8.]);
        let s = run(Pooling::MeanSqrtLen, 0);
        assert!((s[0] - 9.0 / 3f32.sqrt()).abs() < 1e-6 && (s[3] - 8.0 / 2f32.sqrt()).abs() < 1e-6);
        // Skipping a one-token prompt.
        assert_eq!(run(Pooling::Mean, 1), vec![4., 5., 3., 8.]);
    }

    #[test]
    fn normalizes_and_leaves_zero_rows_alone() {
        let mut v = vec![3., 4., 0., 0.];
        normalize_rows(&mut v, 2);
        assert_eq!(v, vec![0.6, 0.8, 0., 0.]);
    }
}
