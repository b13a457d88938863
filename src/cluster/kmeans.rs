//! Seeded, reproducible k-means on f32 rows (row-major, `n × dim`), as
//! scikit-learn's `KMeans(algorithm="lloyd")` defines it: greedy k-means++
//! initialisation (2 + ln k local trials per centre), Lloyd iterations,
//! empty clusters moved to the points farthest from their centres, stop when
//! the labels no longer change or the squared centre shift falls to
//! `tol × mean per-feature variance`, then a last assignment so labels match
//! the centres.
//!
//! Distances are `|x|² − 2 x·c + |c|²` with the `x·c` block computed as a
//! matrix product (matrixmultiply's sgemm, which picks AVX2/FMA at run time);
//! row blocks run in parallel on rayon. Sums for the new centres are kept in
//! f64. Cosine (spherical) mode works on unit rows and renormalises the
//! centres after each update; its distance is `1 − cos`.

use rayon::prelude::*;

use crate::vectors::normalize_rows;

/// Rows per distance block: the block's `rows × k` products stay in cache.
pub const BLOCK_ROWS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Metric {
    /// Spherical k-means: `1 − cos`, unit centres.
    Cosine,
    /// Squared Euclidean distance.
    L2,
}

impl Metric {
    /// The name users write.
    pub fn name(self) -> String {
        crate::names::name_of(&self)
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub k: usize,
    /// Lloyd iterations, or passes over the data in mini-batch steps.
    pub max_iter: usize,
    /// Relative tolerance (scikit-learn's `tol`).
    pub tol: f64,
    pub seed: u64,
    pub metric: Metric,
    /// `Some(batch rows)`: mini-batch k-means instead of Lloyd.
    pub mini_batch: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: 8,
            max_iter: 100,
            tol: 1e-4,
            seed: 0,
            metric: Metric::L2,
            mini_batch: None,
        }
    }
}

/// A trained model.
#[derive(Clone, Debug)]
pub struct Model {
    pub k: usize,
    pub dim: usize,
    /// `k × dim`, row-major.
    pub centroids: Vec<f32>,
    pub metric: Metric,
    /// Sum of distances of the training rows to their centres.
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// SplitMix64: a small seeded generator whose sequence never changes with a
/// dependency update, so a seed gives the same clusters in every release.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

pub fn squared_norms(x: &[f32], dim: usize) -> Vec<f32> {
    x.par_chunks(dim)
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect()
}

/// `x` as the metric measures it: a normalised copy in cosine mode, the
/// rows themselves for L2.
pub fn prepare_rows(x: &[f32], dim: usize, metric: Metric) -> std::borrow::Cow<'_, [f32]> {
    match metric {
        Metric::L2 => std::borrow::Cow::Borrowed(x),
        Metric::Cosine => {
            let mut v = x.to_vec();
            normalize_rows(&mut v, dim);
            std::borrow::Cow::Owned(v)
        }
    }
}

/// `out (rows × k) = x (rows × dim) · cᵀ` where `c` is `k × dim`.
///
/// # Panics
/// When the slices do not have those shapes: `dim` is 0, `x` is not whole
/// rows, `c` is shorter than `k × dim` or `out` than `rows × k`.
pub fn dot_block(x: &[f32], c: &[f32], dim: usize, k: usize, out: &mut [f32]) {
    assert!(dim > 0, "dot_block: dim is 0");
    let rows = x.len() / dim;
    assert!(
        x.len() == rows * dim && c.len() >= k * dim && out.len() >= rows * k,
        "dot_block: {} values are not rows of {dim}, or c ({}) < {k} × {dim}, or out ({}) < {rows} × {k}",
        x.len(),
        c.len(),
        out.len()
    );
    if rows == 0 || k == 0 {
        return;
    }
    // SAFETY: sgemm reads x[i·dim + l] for i < rows, l < dim (within
    // x.len() = rows·dim), c[j·dim + l] for j < k (within c.len() ≥ k·dim),
    // and writes out[i·k + j] (within out.len() ≥ rows·k): the assert above
    // checks all three in every build. The slices cannot overlap (`out` is
    // borrowed mutably).
    unsafe {
        matrixmultiply::sgemm(
            rows,
            dim,
            k,
            1.0,
            x.as_ptr(),
            dim as isize,
            1,
            c.as_ptr(),
            1,
            dim as isize,
            0.0,
            out.as_mut_ptr(),
            k as isize,
            1,
        );
    }
}

/// Centres as the distance kernel takes them: values, squared norms, width
/// and metric.
pub struct Centres<'a> {
    pub values: &'a [f32],
    pub norms: Vec<f32>,
    pub dim: usize,
    pub metric: Metric,
}

impl<'a> Centres<'a> {
    pub fn new(values: &'a [f32], dim: usize, metric: Metric) -> Centres<'a> {
        Centres {
            values,
            norms: squared_norms(values, dim),
            dim,
            metric,
        }
    }
}

/// Nearest centre of each row of `x` and its distance, written to `labels`
/// and `dists`. `x_norms` are the rows' squared norms (unused for cosine).
pub fn nearest(
    x: &[f32],
    x_norms: &[f32],
    centres: &Centres,
    labels: &mut [u32],
    dists: &mut [f32],
) {
    let (c, c_norms, dim, metric) = (centres.values, &centres.norms, centres.dim, centres.metric);
    let k = c.len() / dim;
    x.par_chunks(BLOCK_ROWS * dim)
        .zip(x_norms.par_chunks(BLOCK_ROWS))
        .zip(labels.par_chunks_mut(BLOCK_ROWS))
        .zip(dists.par_chunks_mut(BLOCK_ROWS))
        .for_each_init(Vec::new, |g, (((xb, nb), lb), db)| {
            let rows = nb.len();
            g.resize(rows * k, 0.0);
            dot_block(xb, c, dim, k, g);
            for r in 0..rows {
                let gr = &g[r * k..(r + 1) * k];
                let (best, val) = match metric {
                    Metric::L2 => argmin(gr.iter().zip(c_norms).map(|(g, cn)| cn - 2.0 * g)),
                    Metric::Cosine => argmin(gr.iter().map(|g| -g)),
                };
                lb[r] = best as u32;
                db[r] = match metric {
                    Metric::L2 => (nb[r] + val).max(0.0),
                    Metric::Cosine => (1.0 + val).max(0.0),
                };
            }
        });
}

/// Index and value of the smallest item (the first of equals).
fn argmin(it: impl Iterator<Item = f32>) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (i, v) in it.enumerate() {
        if v < best.1 {
            best = (i, v);
        }
    }
    best
}

/// scikit-learn's `_tolerance`: `tol` times the mean per-feature variance.
fn scaled_tol(x: &[f32], dim: usize, tol: f64) -> f64 {
    let n = (x.len() / dim) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (sum, sq) = x
        .par_chunks(dim)
        .fold(
            || (vec![0f64; dim], vec![0f64; dim]),
            |(mut s, mut q), r| {
                for (j, &v) in r.iter().enumerate() {
                    s[j] += v as f64;
                    q[j] += v as f64 * v as f64;
                }
                (s, q)
            },
        )
        .reduce(
            || (vec![0f64; dim], vec![0f64; dim]),
            |(mut s, mut q), (s2, q2)| {
                for j in 0..dim {
                    s[j] += s2[j];
                    q[j] += q2[j];
                }
                (s, q)
            },
        );
    let var: f64 = (0..dim)
        .map(|j| (sq[j] / n - (sum[j] / n).powi(2)).max(0.0))
        .sum::<f64>()
        / dim as f64;
    var * tol
}

/// Greedy k-means++ (scikit-learn's `_kmeans_plusplus`): each new centre is
/// the best of `2 + ln k` candidates drawn with probability ∝ squared
/// distance to the nearest centre so far.
pub fn kmeans_plus_plus(
    x: &[f32],
    x_norms: &[f32],
    dim: usize,
    k: usize,
    rng: &mut Rng,
    stop: &dyn Fn() -> bool,
) -> Option<Vec<f32>> {
    let n = x_norms.len();
    let trials = 2 + (k as f64).ln() as usize;
    let mut centers = Vec::with_capacity(k * dim);
    let first = rng.below(n as u64) as usize;
    centers.extend_from_slice(&x[first * dim..(first + 1) * dim]);
    let mut closest = distances_to(x, x_norms, &x[first * dim..(first + 1) * dim], dim, 1);
    let mut pot: f64 = closest.iter().map(|&d| d as f64).sum();
    let mut cum = vec![0f64; n];
    for _ in 1..k {
        if stop() {
            return None;
        }
        let mut acc = 0f64;
        for (c, &d) in cum.iter_mut().zip(&closest) {
            acc += d as f64;
            *c = acc;
        }
        let ids: Vec<usize> = (0..trials)
            .map(|_| {
                let v = rng.next_f64() * pot;
                cum.partition_point(|&c| c < v).min(n - 1)
            })
            .collect();
        let cand: Vec<f32> = ids
            .iter()
            .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        // trials × n distances, then each candidate's potential.
        let dist = distances_to(x, x_norms, &cand, dim, trials);
        let mut best = (0, f64::INFINITY);
        for t in 0..trials {
            let p: f64 = (0..n)
                .into_par_iter()
                .with_min_len(4096)
                .map(|i| closest[i].min(dist[i * trials + t]) as f64)
                .sum();
            if p < best.1 {
                best = (t, p);
            }
        }
        let t = best.0;
        pot = best.1;
        closest
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, c)| *c = c.min(dist[i * trials + t]));
        let id = ids[t];
        centers.extend_from_slice(&x[id * dim..(id + 1) * dim]);
    }
    Some(centers)
}

/// Squared distances (`n × m`, row-major) from every row of `x` to the `m`
/// rows of `c`.
fn distances_to(x: &[f32], x_norms: &[f32], c: &[f32], dim: usize, m: usize) -> Vec<f32> {
    let c_norms = squared_norms(c, dim);
    let mut out = vec![0f32; x_norms.len() * m];
    x.par_chunks(BLOCK_ROWS * dim)
        .zip(x_norms.par_chunks(BLOCK_ROWS))
        .zip(out.par_chunks_mut(BLOCK_ROWS * m))
        .for_each(|((xb, nb), ob)| {
            dot_block(xb, c, dim, m, ob);
            for (r, xn) in nb.iter().enumerate() {
                for (j, cn) in c_norms.iter().enumerate() {
                    let g = &mut ob[r * m + j];
                    *g = (xn - 2.0 * *g + cn).max(0.0);
                }
            }
        });
    out
}

/// Trains on `x` (`n × dim`, row-major; normalised here in cosine mode).
/// `init` gives the starting centres (`k × dim`); `None` runs k-means++.
pub fn fit(x: &[f32], dim: usize, cfg: &Config, init: Option<&[f32]>) -> Model {
    fit_until(x, dim, cfg, init, &|| false).expect("never stopped")
}

/// [`fit`] that asks `stop` between centres of k-means++, Lloyd iterations
/// and mini-batch steps, and gives `None` once it says true.
pub fn fit_until(
    x: &[f32],
    dim: usize,
    cfg: &Config,
    init: Option<&[f32]>,
    stop: &dyn Fn() -> bool,
) -> Option<Model> {
    let n = x.len() / dim;
    let k = cfg.k.min(n).max(1);
    let x = prepare_rows(x, dim, cfg.metric);
    let x = &x[..];
    let x_norms = squared_norms(x, dim);
    let mut rng = Rng::new(cfg.seed);
    let mut centers = match init {
        Some(c) => c[..k * dim].to_vec(),
        None => kmeans_plus_plus(x, &x_norms, dim, k, &mut rng, stop)?,
    };
    if cfg.metric == Metric::Cosine {
        normalize_rows(&mut centers, dim);
    }
    if cfg.mini_batch.is_some() {
        return mini_batch(x, &x_norms, dim, cfg, centers, &mut rng, stop);
    }
    let tol = scaled_tol(x, dim, cfg.tol);
    let mut labels = vec![0u32; n];
    let mut old_labels = vec![u32::MAX; n];
    let mut dists = vec![0f32; n];
    let mut iterations = 0;
    let mut converged = false;
    for it in 0..cfg.max_iter {
        if stop() {
            return None;
        }
        iterations = it + 1;
        let c = Centres::new(&centers, dim, cfg.metric);
        nearest(x, &x_norms, &c, &mut labels, &mut dists);
        let new = update_centers(x, dim, k, &labels, &dists, cfg.metric);
        let shift: f64 = centers
            .iter()
            .zip(&new)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        centers = new;
        if labels == old_labels {
            converged = true;
            break;
        }
        if shift <= tol {
            converged = true;
            break;
        }
        old_labels.copy_from_slice(&labels);
    }
    // Labels and distances for the final centres.
    let c = Centres::new(&centers, dim, cfg.metric);
    nearest(x, &x_norms, &c, &mut labels, &mut dists);
    let inertia = dists.par_iter().map(|&d| d as f64).sum();
    Some(Model {
        k,
        dim,
        centroids: centers,
        metric: cfg.metric,
        inertia,
        iterations,
        converged,
    })
}

/// Mini-batch k-means (Sculley 2010, as scikit-learn's `MiniBatchKMeans`
/// without reassignment): each step assigns `batch` random rows and moves
/// their centres towards them with a per-centre rate of 1 / rows seen;
/// `max_iter` passes over the data.
fn mini_batch(
    x: &[f32],
    x_norms: &[f32],
    dim: usize,
    cfg: &Config,
    mut centers: Vec<f32>,
    rng: &mut Rng,
    stop: &dyn Fn() -> bool,
) -> Option<Model> {
    let n = x_norms.len();
    let k = centers.len() / dim;
    let batch = cfg.mini_batch.unwrap_or(n).clamp(1, n);
    let steps = (cfg.max_iter * n).div_ceil(batch).max(1);
    let mut seen = vec![0u64; k];
    let mut rows = vec![0f32; batch * dim];
    let mut norms = vec![0f32; batch];
    let mut labels = vec![0u32; batch];
    let mut dists = vec![0f32; batch];
    for _ in 0..steps {
        if stop() {
            return None;
        }
        for b in 0..batch {
            let i = rng.below(n as u64) as usize;
            rows[b * dim..(b + 1) * dim].copy_from_slice(&x[i * dim..(i + 1) * dim]);
            norms[b] = x_norms[i];
        }
        let c = Centres::new(&centers, dim, cfg.metric);
        nearest(&rows, &norms, &c, &mut labels, &mut dists);
        for (b, &l) in labels.iter().enumerate() {
            let l = l as usize;
            seen[l] += 1;
            let eta = 1.0 / seen[l] as f32;
            let centre = &mut centers[l * dim..(l + 1) * dim];
            for (c, v) in centre.iter_mut().zip(&rows[b * dim..(b + 1) * dim]) {
                *c += eta * (v - *c);
            }
        }
        if cfg.metric == Metric::Cosine {
            normalize_rows(&mut centers, dim);
        }
    }
    let mut labels = vec![0u32; n];
    let mut dists = vec![0f32; n];
    let c = Centres::new(&centers, dim, cfg.metric);
    nearest(x, x_norms, &c, &mut labels, &mut dists);
    Some(Model {
        k,
        dim,
        inertia: dists.par_iter().map(|&d| d as f64).sum(),
        centroids: centers,
        metric: cfg.metric,
        iterations: steps,
        converged: false,
    })
}

/// Means of the rows of each cluster; an empty cluster takes the row
/// farthest from its centre (taken out of its old cluster), as
/// scikit-learn's `_relocate_empty_clusters` does.
fn update_centers(
    x: &[f32],
    dim: usize,
    k: usize,
    labels: &[u32],
    dists: &[f32],
    metric: Metric,
) -> Vec<f32> {
    let threads = rayon::current_num_threads().max(1);
    let per = labels.len().div_ceil(threads).max(1);
    let (mut sums, mut counts) = x
        .par_chunks(per * dim)
        .zip(labels.par_chunks(per))
        .map(|(xb, lb)| {
            let mut s = vec![0f64; k * dim];
            let mut c = vec![0u64; k];
            for (r, &l) in xb.chunks_exact(dim).zip(lb) {
                let l = l as usize;
                c[l] += 1;
                for (a, &v) in s[l * dim..(l + 1) * dim].iter_mut().zip(r) {
                    *a += v as f64;
                }
            }
            (s, c)
        })
        .reduce(
            || (vec![0f64; k * dim], vec![0u64; k]),
            |(mut s, mut c), (s2, c2)| {
                s.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
                c.iter_mut().zip(&c2).for_each(|(a, b)| *a += b);
                (s, c)
            },
        );
    let empty: Vec<usize> = (0..k).filter(|&j| counts[j] == 0).collect();
    if !empty.is_empty() {
        let mut far: Vec<usize> = (0..labels.len()).collect();
        far.sort_by(|&a, &b| dists[b].total_cmp(&dists[a]).then(a.cmp(&b)));
        for (&j, &i) in empty.iter().zip(&far) {
            let old = labels[i] as usize;
            let row = &x[i * dim..(i + 1) * dim];
            for d in 0..dim {
                sums[old * dim + d] -= row[d] as f64;
                sums[j * dim + d] = row[d] as f64;
            }
            counts[old] -= 1;
            counts[j] = 1;
        }
    }
    let mut centers = vec![0f32; k * dim];
    for j in 0..k {
        if counts[j] == 0 {
            continue;
        }
        let inv = 1.0 / counts[j] as f64;
        for d in 0..dim {
            centers[j * dim + d] = (sums[j * dim + d] * inv) as f32;
        }
    }
    if metric == Metric::Cosine {
        normalize_rows(&mut centers, dim);
    }
    centers
}

impl Model {
    /// Nearest centre and distance of each row of `x` (`n × dim`).
    pub fn assign(&self, x: &[f32]) -> (Vec<u32>, Vec<f32>) {
        self.assign_prepared(&prepare_rows(x, self.dim, self.metric))
    }

    /// [`Model::assign`] for rows already as [`prepare_rows`] gives them
    /// (unit rows in cosine mode), without another copy.
    pub fn assign_prepared(&self, x: &[f32]) -> (Vec<u32>, Vec<f32>) {
        let n = x.len() / self.dim;
        let x_norms = squared_norms(x, self.dim);
        let c = Centres::new(&self.centroids, self.dim, self.metric);
        let mut labels = vec![0u32; n];
        let mut dists = vec![0f32; n];
        nearest(x, &x_norms, &c, &mut labels, &mut dists);
        (labels, dists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_block_multiplies_and_refuses_wrong_shapes() {
        let x = [1.0f32, 2.0, 3.0, 4.0]; // 2 rows × 2
        let c = [1.0f32, 0.0, 1.0, 1.0, 0.0, 2.0]; // 3 centres × 2
        let mut out = [0f32; 6];
        dot_block(&x, &c, 2, 3, &mut out);
        assert_eq!(out, [1.0, 3.0, 4.0, 3.0, 7.0, 8.0]);
        // Each wrong shape panics (before sgemm reads or writes out of
        // bounds) in release builds too.
        let bad: [(usize, usize, usize, usize); 4] = [
            (4, 4, 2, 6), // c shorter than k × dim
            (4, 6, 2, 5), // out shorter than rows × k
            (3, 6, 2, 6), // x not whole rows
            (4, 6, 0, 6), // dim 0
        ];
        for (xn, cn, dim, outn) in bad {
            let r = std::panic::catch_unwind(|| {
                let mut out = vec![0f32; outn];
                dot_block(&x[..xn], &c[..cn], dim, 3, &mut out);
            });
            assert!(r.is_err(), "x {xn}, c {cn}, dim {dim}, out {outn} passed");
        }
    }

    /// Three tight blobs far apart, shuffled.
    fn blobs(seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = Rng::new(seed);
        let centres = [[0.0f32, 0.0], [10.0, 10.0], [-10.0, 10.0]];
        let mut x = Vec::new();
        let mut truth = Vec::new();
        for i in 0..300 {
            let c = i % 3;
            x.push(centres[c][0] + rng.next_f64() as f32 - 0.5);
            x.push(centres[c][1] + rng.next_f64() as f32 - 0.5);
            truth.push(c as u32);
        }
        (x, truth)
    }

    #[test]
    fn finds_separated_blobs_and_is_reproducible() {
        let (x, truth) = blobs(1);
        let cfg = Config {
            k: 3,
            seed: 7,
            ..Default::default()
        };
        let m = fit(&x, 2, &cfg, None);
        let (labels, dists) = m.assign(&x);
        // Same partition as the truth (up to renaming).
        for i in 0..truth.len() {
            for j in 0..truth.len() {
                assert_eq!(truth[i] == truth[j], labels[i] == labels[j]);
            }
        }
        assert!(m.converged && m.iterations <= 3, "{m:?}");
        let inertia: f64 = dists.iter().map(|&d| d as f64).sum();
        assert!((inertia - m.inertia).abs() < 1e-3 * m.inertia);
        // Each centre is the mean of its blob: inertia ≈ 300 × 2 × 1/12.
        assert!((m.inertia - 50.0).abs() < 10.0, "{}", m.inertia);
        let again = fit(&x, 2, &cfg, None);
        assert_eq!(again.centroids, m.centroids);
    }

    #[test]
    fn mini_batch_lands_near_lloyd() {
        let (x, _) = blobs(4);
        let lloyd = fit(
            &x,
            2,
            &Config {
                k: 3,
                seed: 1,
                ..Default::default()
            },
            None,
        );
        let mb = fit(
            &x,
            2,
            &Config {
                k: 3,
                seed: 1,
                max_iter: 5,
                mini_batch: Some(32),
                ..Default::default()
            },
            None,
        );
        assert!(
            mb.inertia < lloyd.inertia * 1.05,
            "{} vs {}",
            mb.inertia,
            lloyd.inertia
        );
    }

    #[test]
    fn distances_match_a_plain_loop() {
        let mut rng = Rng::new(3);
        let (n, d, k) = (700, 37, 13);
        let x: Vec<f32> = (0..n * d)
            .map(|_| rng.next_f64() as f32 * 2.0 - 1.0)
            .collect();
        let c: Vec<f32> = (0..k * d)
            .map(|_| rng.next_f64() as f32 * 2.0 - 1.0)
            .collect();
        let mut labels = vec![0; n];
        let mut dists = vec![0.0; n];
        nearest(
            &x,
            &squared_norms(&x, d),
            &Centres::new(&c, d, Metric::L2),
            &mut labels,
            &mut dists,
        );
        for i in 0..n {
            let exact: Vec<f64> = (0..k)
                .map(|j| {
                    (0..d)
                        .map(|t| ((x[i * d + t] - c[j * d + t]) as f64).powi(2))
                        .sum()
                })
                .collect();
            let best = exact.iter().cloned().fold(f64::INFINITY, f64::min);
            assert!((exact[labels[i] as usize] - best).abs() < 1e-4, "row {i}");
            assert!(
                (dists[i] as f64 - best).abs() < 1e-4 * best.max(1.0),
                "row {i}"
            );
        }
    }

    #[test]
    fn empty_clusters_are_reseeded_and_cosine_centres_are_unit() {
        // Every start at one point: all but one cluster empty at first.
        let (x, _) = blobs(2);
        let init: Vec<f32> = [0.0f32, 0.0].repeat(3);
        let m = fit(
            &x,
            2,
            &Config {
                k: 3,
                ..Default::default()
            },
            Some(&init),
        );
        // The two empty clusters took far rows: three distinct, non-empty
        // clusters (a local optimum, as scikit-learn's relocation gives).
        let (labels, _) = m.assign(&x);
        for j in 0..3 {
            assert!(labels.contains(&j), "{m:?}");
        }
        assert!(m.inertia < 300.0 * 200.0, "{m:?}");
        let (x, _) = blobs(3);
        let x: Vec<f32> = x.iter().map(|v| v + 20.0).collect();
        let m = fit(
            &x,
            2,
            &Config {
                k: 3,
                metric: Metric::Cosine,
                ..Default::default()
            },
            None,
        );
        for c in m.centroids.chunks(2) {
            assert!(((c[0] * c[0] + c[1] * c[1]).sqrt() - 1.0).abs() < 1e-5);
        }
    }
}
