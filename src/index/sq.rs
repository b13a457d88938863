//! int8 codes of an index's vectors (scalar quantization): each
//! dimension's range, measured on the training sample, cut into 255
//! steps, one byte a dimension. A quarter of the float vectors' bytes,
//! for searches that read lists from storage (SQL top-k): the lists'
//! codes rank the candidates, whose float vectors then give the exact
//! scores.
//!
//! A code's score against a query `q` is `Σ q·(lo + step·c)` =
//! `Σ q·lo + Σ (q·step)·c`: one dot product with the code's bytes.

/// Each dimension's lowest value and step (`lo + 255·step` the highest).
#[derive(Clone, Debug, PartialEq)]
pub struct Sq {
    pub lo: Vec<f32>,
    pub step: Vec<f32>,
}

impl Sq {
    /// The ranges of `x` (`n × dim`, rows without a score left out).
    pub fn train(x: &[f32], dim: usize) -> Sq {
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        for row in x.chunks_exact(dim).filter(|r| r[0].is_finite()) {
            for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
                *l = l.min(v);
                *h = h.max(v);
            }
        }
        let (lo, step) = lo
            .iter()
            .zip(&hi)
            .map(|(&l, &h)| {
                if l.is_finite() && h > l {
                    (l, (h - l) / 255.0)
                } else {
                    (if l.is_finite() { l } else { 0.0 }, 1.0)
                }
            })
            .unzip();
        Sq { lo, step }
    }

    pub fn dim(&self) -> usize {
        self.lo.len()
    }

    /// The codes of `rows` (`n × dim`), appended to `out`; values outside
    /// the trained range take its nearest end.
    pub fn encode(&self, rows: &[f32], out: &mut Vec<u8>) {
        for row in rows.chunks_exact(self.dim()) {
            out.extend(
                row.iter()
                    .zip(&self.lo)
                    .zip(&self.step)
                    .map(|((&v, &l), &s)| {
                        let c = ((v - l) / s).round();
                        if c.is_nan() {
                            0
                        } else {
                            c.clamp(0.0, 255.0) as u8
                        }
                    }),
            );
        }
    }

    /// As a file: `lo` then `step`.
    pub fn to_floats(&self) -> Vec<f32> {
        self.lo.iter().chain(&self.step).copied().collect()
    }

    pub fn from_floats(v: &[f32]) -> Sq {
        let dim = v.len() / 2;
        Sq {
            lo: v[..dim].to_vec(),
            step: v[dim..2 * dim].to_vec(),
        }
    }

    /// `q` prepared for scoring codes: its weights and constant.
    pub fn query(&self, q: &[f32]) -> SqQuery {
        SqQuery {
            weights: q.iter().zip(&self.step).map(|(a, s)| a * s).collect(),
            base: q.iter().zip(&self.lo).map(|(a, l)| a * l).sum(),
        }
    }
}

/// A query's weights against codes (see the module's formula).
pub struct SqQuery {
    weights: Vec<f32>,
    base: f32,
}

impl SqQuery {
    /// The approximate score of each code of `codes` (`n × dim`), into
    /// `scores`.
    pub fn score(&self, codes: &[u8], scores: &mut Vec<f32>) {
        let dim = self.weights.len();
        scores.clear();
        scores.extend(codes.chunks_exact(dim).map(|c| {
            // Eight lanes of partial sums, which the compiler vectorizes.
            let mut acc = [0f32; 8];
            let (whole, rest) = (c.chunks_exact(8), c.len() % 8);
            for (cs, ws) in whole.zip(self.weights.chunks_exact(8)) {
                for i in 0..8 {
                    acc[i] += ws[i] * f32::from(cs[i]);
                }
            }
            let tail: f32 = c[dim - rest..]
                .iter()
                .zip(&self.weights[dim - rest..])
                .map(|(&b, &w)| w * f32::from(b))
                .sum();
            self.base + acc.iter().sum::<f32>() + tail
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::Rng;

    #[test]
    fn code_scores_are_within_a_step_of_the_exact_ones() {
        let (n, dim) = (500, 37);
        let mut rng = Rng::new(5);
        let mut x: Vec<f32> = (0..n * dim).map(|_| rng.next_f64() as f32 - 0.5).collect();
        crate::cluster::neighbors::prepare(
            &mut x,
            dim,
            crate::cluster::neighbors::Similarity::Cosine,
        );
        let sq = Sq::train(&x, dim);
        let mut codes = Vec::new();
        sq.encode(&x, &mut codes);
        assert_eq!(codes.len(), n * dim);
        let q = &x[..dim];
        let mut scores = Vec::new();
        sq.query(q).score(&codes, &mut scores);
        let bound: f32 = q.iter().zip(&sq.step).map(|(a, s)| a.abs() * s / 2.0).sum();
        for (row, s) in x.chunks_exact(dim).zip(&scores) {
            let exact: f32 = row.iter().zip(q).map(|(a, b)| a * b).sum();
            assert!(
                (exact - s).abs() <= bound * 1.001 + 1e-6,
                "{exact} {s} {bound}"
            );
        }
        assert_eq!(Sq::from_floats(&sq.to_floats()), sq);
    }
}
