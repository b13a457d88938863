//! `out (m × n) = x (m × k) · cᵀ` (c is n × k, both row-major): the
//! product embedflow's k-means and exact neighbours spend their time in,
//! timed for matrixmultiply (as built) and the gemm crate, one thread each
//! and, through rayon-style row blocks, on every core. Prints one line a
//! shape and library: GFLOP/s, best of ROUNDS.

use std::time::Instant;

fn mm(x: &[f32], c: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    // SAFETY: the slices have the shapes the strides describe (checked by
    // the caller's allocation: x m·k, c n·k, out m·n).
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, 1.0, x.as_ptr(), k as isize, 1, c.as_ptr(), 1, k as isize, 0.0,
            out.as_mut_ptr(), n as isize, 1,
        );
    }
}

fn gm(x: &[f32], c: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    // SAFETY: as above; gemm's dst = alpha·dst + beta·lhs·rhs with
    // read_dst false ignores dst's values.
    unsafe {
        gemm::gemm(
            m, n, k, out.as_mut_ptr(), 1, n as isize, false, x.as_ptr(), 1, k as isize,
            c.as_ptr(), k as isize, 1, 0.0, 1.0, false, false, false, gemm::Parallelism::None,
        );
    }
}

type Kernel = fn(&[f32], &[f32], &mut [f32], usize, usize, usize);

/// Best GFLOP/s of `rounds` products, on `threads` threads each taking a
/// block of rows.
fn time(f: Kernel, m: usize, k: usize, n: usize, threads: usize, rounds: usize) -> (f64, Vec<f32>) {
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let c: Vec<f32> = (0..n * k).map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5).collect();
    let mut out = vec![0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        let rows = m.div_ceil(threads);
        std::thread::scope(|s| {
            for (xb, ob) in x.chunks(rows * k).zip(out.chunks_mut(rows * n)) {
                let c = &c;
                s.spawn(move || f(xb, c, ob, xb.len() / k, k, n));
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    (2.0 * (m * k * n) as f64 / best / 1e9, out)
}

fn main() {
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let rounds = 5;
    let label = if cfg!(feature = "avx512") { "matrixmultiply+avx512" } else { "matrixmultiply" };
    // k-means at k = 1000 and neighbours' blocks; IVF lists (2048 queries
    // against a list of 1000).
    for (m, k, n) in [(4096, 384, 1000), (2048, 384, 4096), (2048, 384, 1000)] {
        for t in [1, threads] {
            let (a, ra) = time(mm, m, k, n, t, rounds);
            let (b, rb) = time(gm, m, k, n, t, rounds);
            let diff = ra.iter().zip(&rb).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            println!("{m}x{k}x{n} threads {t}: {label} {a:.1} GFLOP/s, gemm {b:.1} GFLOP/s (max difference {diff:.1e})");
        }
    }
}
