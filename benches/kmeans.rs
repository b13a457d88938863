//! k-means training speed on a .npy of f32 vectors from given starting
//! centres, for a fixed number of Lloyd iterations (benches/kmeans.sh runs
//! it beside scikit-learn and faiss on the same files).
//!
//!   embedflow-kmeans-bench X.npy INIT.npy --iters 20 --out CENTROIDS.npy
//!
//! Prints one JSON line: seconds, iterations, GFLOP/s of the distance
//! products (2·n·k·d per iteration), training inertia, peak RSS.

use std::time::Instant;

use std::path::Path;

use embedflow::cluster::kmeans::{self, Config};
use embedflow::npy;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let (x_path, c_path) = (&args[1], &args[2]);
    let iters: usize = opt("--iters").and_then(|v| v.parse().ok()).unwrap_or(20);
    let (n, d, x) = npy::read(Path::new(x_path)).unwrap_or_else(|e| panic!("{e}"));
    let (k, d2, init) = npy::read(Path::new(c_path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d, d2);
    let cfg = Config {
        k,
        max_iter: iters,
        tol: 0.0,
        ..Default::default()
    };
    let t = Instant::now();
    let m = kmeans::fit(&x, d, &cfg, Some(&init));
    let secs = t.elapsed().as_secs_f64();
    // Each iteration and the final assignment is one n×k×d product.
    let flops = 2.0 * n as f64 * k as f64 * d as f64 * (m.iterations + 1) as f64;
    if let Some(out) = opt("--out") {
        npy::write(Path::new(&out), k, d, &m.centroids).unwrap_or_else(|e| panic!("{e}"));
    }
    println!(
        "{{\"tool\": \"embedflow\", \"n\": {n}, \"d\": {d}, \"k\": {k}, \"seconds\": {secs:.4}, \"iterations\": {}, \"gflops\": {:.2}, \"inertia\": {}, \"peak_rss_mib\": {:.0}, \"threads\": {}}}",
        m.iterations,
        flops / secs / 1e9,
        m.inertia,
        peak_rss_mib(),
        rayon::current_num_threads()
    );
}
