//! A 2-D map of vectors that keeps neighbourhoods: t-SNE (FFT-accelerated,
//! as openTSNE and FIt-SNE do) from the `bhtsne` crate, fed with our exact
//! cosine neighbours and seeded from the first two principal components, so
//! that a seed gives the same map on every run and machine.

use bhtsne::{Neighbor, tSNE};

use crate::cluster::neighbors;

/// t-SNE's perplexity (its usual value; scikit-learn's default).
pub const PERPLEXITY: f32 = 30.0;
/// Optimisation epochs (scikit-learn's default `max_iter`).
pub const EPOCHS: usize = 1000;

/// The 2-D coordinates of `n = x.len() / dim` rows, row-major `[x0, y0, x1,
/// y1, …]`. Rows are compared by cosine (normalised copies); `seed` picks
/// the sign of the initial axes only, the rest is deterministic.
pub fn tsne_2d(x: &[f32], dim: usize, seed: u64) -> Vec<f32> {
    let n = x.len() / dim.max(1);
    if n < 4 {
        // Too few rows for a neighbourhood: put them on a line.
        return (0..n).flat_map(|i| [i as f32, 0.0]).collect();
    }
    let mut v = x.to_vec();
    // The map's rows are finite (the report leaves the others off); a zero
    // vector stays at cosine 0 from every row.
    crate::vectors::normalize_rows(&mut v, dim);
    // t-SNE conditions each row on its 3 × perplexity nearest rows.
    let perplexity = PERPLEXITY.min((n as f32 - 1.0) / 3.0).max(1.0);
    let k = ((3.0 * perplexity) as usize).clamp(1, n - 1);
    let near: Vec<Vec<Neighbor<f32>>> = neighbors::neighbors(&v, &v, dim, Some(0), k)
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(j, score)| Neighbor {
                    index: j as usize,
                    // Euclidean distance between unit vectors.
                    distance: (2.0 - 2.0 * score).max(0.0).sqrt(),
                })
                .collect()
        })
        .collect();
    let init = pca_init(&v, dim, seed);
    let rows: Vec<&[f32]> = v.chunks_exact(dim).collect();
    // The fit sums forces in parallel reductions whose order (and so whose
    // last bits) follows rayon's work stealing, and t-SNE magnifies bits
    // into a different map: one thread makes one seed one map.
    let fit = || {
        let mut t: tSNE<f32, &[f32]> = tSNE::new(&rows);
        t.perplexity(perplexity)
            .epochs(EPOCHS)
            .initial_embedding(init)
            .fit_sne_with_neighbors(&near);
        t.embedding()
    };
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(fit),
        Err(_) => fit(),
    }
}

/// The rows projected on their first two principal components, scaled so
/// that the first has standard deviation 1e-4 (scikit-learn's `init="pca"`).
fn pca_init(x: &[f32], dim: usize, seed: u64) -> Vec<f32> {
    let n = x.len() / dim;
    let mut mean = vec![0f64; dim];
    for r in x.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // Covariance (dim × dim) in f64: dim is a few hundred at most.
    let mut cov = vec![0f64; dim * dim];
    let mut c = vec![0f64; dim];
    for r in x.chunks_exact(dim) {
        for (ci, (&v, m)) in c.iter_mut().zip(r.iter().zip(&mean)) {
            *ci = v as f64 - m;
        }
        for i in 0..dim {
            let ci = c[i];
            let row = &mut cov[i * dim..(i + 1) * dim];
            for (o, &cj) in row.iter_mut().zip(&c) {
                *o += ci * cj;
            }
        }
    }
    let mut rng = crate::cluster::kmeans::Rng::new(seed);
    let first = power_iteration(&cov, dim, None, &mut rng);
    let second = power_iteration(&cov, dim, Some(&first), &mut rng);
    let mut out = Vec::with_capacity(2 * n);
    for r in x.chunks_exact(dim) {
        let (mut a, mut b) = (0f64, 0f64);
        for ((&v, m), (p, q)) in r.iter().zip(&mean).zip(first.iter().zip(&second)) {
            let c = v as f64 - m;
            a += c * p;
            b += c * q;
        }
        out.push(a);
        out.push(b);
    }
    let sd = {
        let s: f64 = out.iter().step_by(2).map(|a| a * a).sum::<f64>() / n as f64;
        s.sqrt()
    };
    let scale = if sd > 0.0 { 1e-4 / sd } else { 0.0 };
    out.into_iter().map(|v| (v * scale) as f32).collect()
}

/// The leading eigenvector of a symmetric matrix (orthogonal to `not`),
/// by power iteration from a seeded start.
fn power_iteration(
    m: &[f64],
    dim: usize,
    not: Option<&[f64]>,
    rng: &mut crate::cluster::kmeans::Rng,
) -> Vec<f64> {
    let mut v: Vec<f64> = (0..dim).map(|_| rng.next_f64() - 0.5).collect();
    let project = |v: &mut Vec<f64>| {
        if let Some(u) = not {
            let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|a| *a /= norm);
        }
    };
    project(&mut v);
    let mut w = vec![0f64; dim];
    for _ in 0..300 {
        for (i, o) in w.iter_mut().enumerate() {
            *o = m[i * dim..(i + 1) * dim]
                .iter()
                .zip(&v)
                .map(|(a, b)| a * b)
                .sum();
        }
        project(&mut w);
        let change: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
        std::mem::swap(&mut v, &mut w);
        if change < 1e-10 {
            break;
        }
    }
    // A fixed sign: the largest component positive.
    if let Some(big) = v.iter().copied().max_by(|a, b| a.abs().total_cmp(&b.abs()))
        && big < 0.0
    {
        v.iter_mut().for_each(|a| *a = -*a);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::Rng;

    /// Three tight groups far apart stay three groups: each point's nearest
    /// point on the map is in its own group, and one seed gives one map.
    #[test]
    fn keeps_groups_apart_and_is_repeatable() {
        let (per, dim) = (60, 16);
        let mut rng = Rng::new(3);
        let mut x = Vec::new();
        for g in 0..3 {
            for _ in 0..per {
                for d in 0..dim {
                    let centre = if d % 3 == g { 1.0 } else { 0.0 };
                    x.push(centre + 0.05 * (rng.next_f64() as f32 - 0.5));
                }
            }
        }
        let map = tsne_2d(&x, dim, 7);
        assert_eq!(map, tsne_2d(&x, dim, 7));
        let n = 3 * per;
        for i in 0..n {
            let nearest = (0..n)
                .filter(|&j| j != i)
                .min_by(|&a, &b| {
                    let da = (map[2 * a] - map[2 * i]).powi(2)
                        + (map[2 * a + 1] - map[2 * i + 1]).powi(2);
                    let db = (map[2 * b] - map[2 * i]).powi(2)
                        + (map[2 * b + 1] - map[2 * i + 1]).powi(2);
                    da.total_cmp(&db)
                })
                .unwrap();
            assert_eq!(nearest / per, i / per, "row {i}");
        }
    }

    #[test]
    fn pca_init_follows_the_widest_axis() {
        // Points along (1, 1, 0) with a little noise: the first coordinate
        // orders them as their position on that axis.
        let mut rng = Rng::new(1);
        let x: Vec<f32> = (0..50)
            .flat_map(|i| {
                let t = i as f32 / 10.0;
                [t, t, 0.01 * rng.next_f64() as f32]
            })
            .collect();
        let init = pca_init(&x, 3, 0);
        let firsts: Vec<f32> = init.iter().step_by(2).copied().collect();
        assert!(firsts.windows(2).all(|w| w[1] > w[0]), "{firsts:?}");
        let sd = (firsts.iter().map(|a| (a * a) as f64).sum::<f64>() / 50.0).sqrt();
        assert!((sd - 1e-4).abs() < 1e-6, "{sd}");
    }
}
