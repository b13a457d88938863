//! What an index ranks by, and the one trick that lets every metric be
//! searched as a dot product: the lists, codes and searches of
//! [`super::search`] and [`super::sq`] only ever take the largest dot
//! product.
//!
//! - cosine: rows and queries are scaled to unit length;
//! - inner product: they are taken as they are;
//! - l2: a row `x` is stored as `[x, −‖x‖²/2]` and a query `q` scored as
//!   `[q, 1]`, whose dot product `q·x − ‖x‖²/2` is `(‖q‖² − ‖q − x‖²)/2`:
//!   the largest is the nearest row. Centroids, trained by L2 k-means on
//!   the rows as they are, are stored the same way, so that a query's
//!   best-scoring centroids are its nearest ones.

use std::borrow::Cow;

use crate::cluster::kmeans;
use crate::cluster::neighbors::{self, Similarity};

/// What searches of an index rank by; its names (`cosine`,
/// `inner_product`, `l2`) are the flag's, the job file's and `index.json`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Metric {
    /// The cosine of the angle (rows scaled to unit length).
    Cosine,
    /// The raw dot product (for vectors whose length means something).
    InnerProduct,
    /// Euclidean distance, nearest first.
    L2,
}

impl Metric {
    pub fn name(self) -> String {
        crate::names::name_of(&self)
    }
}

/// Vectors of `dim` values as an index of `metric` scores them.
#[derive(Clone, Copy, Debug)]
pub struct Space {
    pub metric: Metric,
    /// The table's vectors' width.
    pub dim: usize,
}

impl Space {
    pub fn new(metric: Metric, dim: usize) -> Space {
        Space { metric, dim }
    }

    /// The width of the index's stored rows, centroids and queries: one
    /// more than the table's for l2.
    pub fn width(&self) -> usize {
        self.dim + usize::from(self.metric == Metric::L2)
    }

    /// The k-means that trains the centroids (on the table's rows as
    /// they are: see [`Space::centroids`]).
    pub fn kmeans(&self) -> kmeans::Metric {
        match self.metric {
            Metric::Cosine => kmeans::Metric::Cosine,
            Metric::InnerProduct | Metric::L2 => kmeans::Metric::L2,
        }
    }

    /// Table rows (`n × dim`) made ready for scoring, in place: a row
    /// without a score (NaN or infinite; zero for cosine) all NaN, unit
    /// rows for cosine. Returns how many had none and the first few.
    fn prepare(&self, x: &mut [f32]) -> (usize, Vec<usize>) {
        let similarity = match self.metric {
            Metric::Cosine => Similarity::Cosine,
            Metric::InnerProduct | Metric::L2 => Similarity::InnerProduct,
        };
        neighbors::prepare(x, self.dim, similarity)
    }

    /// Table rows (`n × dim`) as the index stores them (`n × width`).
    pub fn stored(&self, mut x: Vec<f32>) -> Vec<f32> {
        self.prepare(&mut x);
        self.widen(x, |row| -row.iter().map(|v| v * v).sum::<f32>() / 2.0)
    }

    /// Query rows (`n × dim`) as they score stored rows (`n × width`).
    pub fn queries(&self, mut x: Vec<f32>) -> Vec<f32> {
        self.prepare(&mut x);
        self.widen(x, |row| if row[0].is_nan() { f32::NAN } else { 1.0 })
    }

    /// Stored rows (`n × width`) turned into query rows, in place.
    pub fn stored_as_queries(&self, x: &mut [f32]) {
        if self.metric == Metric::L2 {
            let w = self.width();
            for row in x.chunks_exact_mut(w) {
                if !row[0].is_nan() {
                    row[w - 1] = 1.0;
                }
            }
        }
    }

    /// Stored rows as query rows: borrowed as they are but for l2.
    pub fn as_queries<'a>(&self, stored: &'a [f32]) -> Cow<'a, [f32]> {
        if self.metric != Metric::L2 {
            return Cow::Borrowed(stored);
        }
        let mut x = stored.to_vec();
        self.stored_as_queries(&mut x);
        Cow::Owned(x)
    }

    /// The table's values of stored rows (`n × width` → `n × dim`).
    pub fn unstored(&self, x: &[f32]) -> Vec<f32> {
        x.chunks_exact(self.width())
            .flat_map(|row| row[..self.dim].iter().copied())
            .collect()
    }

    /// Centroids trained on the table's rows (`lists × dim`) as stored
    /// (`lists × width`): for l2, each followed by `−‖c‖²/2`.
    pub fn centroids(&self, c: Vec<f32>) -> Vec<f32> {
        self.widen(c, |row| -row.iter().map(|v| v * v).sum::<f32>() / 2.0)
    }

    /// For l2, each row of `x` followed by `last(row)`; else `x`.
    fn widen(&self, x: Vec<f32>, last: impl Fn(&[f32]) -> f32) -> Vec<f32> {
        if self.metric != Metric::L2 {
            return x;
        }
        let mut out = Vec::with_capacity(x.len() / self.dim * self.width());
        for row in x.chunks_exact(self.dim) {
            out.extend_from_slice(row);
            out.push(last(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::Rng;

    #[test]
    fn the_best_l2_score_is_the_nearest_row_whatever_the_lengths() {
        let (n, dim) = (400, 7);
        let mut rng = Rng::new(9);
        // Rows of very different lengths: the dot product alone would
        // rank the long ones first.
        let x: Vec<f32> = (0..n * dim)
            .map(|i| (rng.next_f64() as f32 - 0.5) * (1 + i / dim % 5) as f32)
            .collect();
        let s = Space::new(Metric::L2, dim);
        assert_eq!(s.width(), dim + 1);
        let stored = s.stored(x.clone());
        assert_eq!(s.unstored(&stored), x);
        for qi in 0..20 {
            let q_raw = x[qi * dim..(qi + 1) * dim]
                .iter()
                .map(|v| v + 0.01)
                .collect();
            let q = s.queries(q_raw);
            let score = |r: usize| -> f32 {
                stored[r * (dim + 1)..(r + 1) * (dim + 1)]
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let dist = |r: usize| -> f32 {
                x[r * dim..(r + 1) * dim]
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt()
            };
            let best = (0..n)
                .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                .unwrap();
            let nearest = (0..n).min_by(|&a, &b| dist(a).total_cmp(&dist(b))).unwrap();
            assert_eq!(best, nearest, "query {qi}");
        }
        let mut as_queries = stored.clone();
        s.stored_as_queries(&mut as_queries);
        assert_eq!(s.queries(x.clone()), as_queries);
        assert_eq!(&*s.as_queries(&stored), &as_queries[..]);
    }

    #[test]
    fn cosine_and_inner_product_keep_the_table_width() {
        let x = vec![3.0, 4.0, f32::NAN, 1.0];
        let cos = Space::new(Metric::Cosine, 2);
        assert_eq!(cos.width(), 2);
        let got = cos.stored(x.clone());
        assert_eq!(&got[..2], &[0.6, 0.8]);
        assert!(got[2].is_nan() && got[3].is_nan());
        assert_eq!(
            Space::new(Metric::InnerProduct, 2).stored(vec![3.0, 4.0]),
            [3.0, 4.0]
        );
    }
}
