//! Embedding throughput on ../shared/reference/bench_texts.jsonl (2,000 texts
//! of mixed length, 9 % over 256 tokens) with all-MiniLM-L6-v2:
//! tokenization, then inference with length-sorted token-budget batches
//! against unsorted fixed-count batches (the plain approach), alternating
//! the two so that machine noise hits both. Prints sentences/s, tokens/s,
//! the speed-up, and peak RSS.
//!
//!   cargo run --release --features bench --bin embedflow-bench -- [--rounds 3 --texts PATH --model DIR]
//!   (benches/run.sh runs it beside the Python baseline)

use std::time::Instant;

use embedflow::embed::ModelOptions;
use embedflow::embed::batch::{CPU_BATCH_TOKENS, DEFAULT_MAX_BATCH_ROWS};
use embedflow::embed::{self, Embedder, Encoded, ModelConfig, TextEncoder, batch};
use rayon::prelude::*;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    let texts_path =
        arg("--texts").unwrap_or_else(|| format!("{root}/../shared/reference/bench_texts.jsonl"));
    let model_path =
        arg("--model").unwrap_or_else(|| format!("{root}/../shared/models/all-MiniLM-L6-v2"));
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(3);
    let fixed_rows: usize = arg("--fixed-rows")
        .and_then(|r| r.parse().ok())
        .unwrap_or(32);

    let texts: Vec<String> = std::fs::read_to_string(&texts_path)
        .unwrap_or_else(|e| panic!("{texts_path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON string per line"))
        .collect();
    let cfg = ModelConfig::load(&ModelOptions {
        path: model_path,
        ..Default::default()
    })
    .expect("model");
    let encoder = TextEncoder::new(&cfg).expect("tokenizer");
    let mut embedder = Embedder::new(
        &cfg,
        &encoder,
        embedflow::embed::SessionOptions {
            device: arg("--device")
                .map(|d| d.parse().expect("--device"))
                .unwrap_or_default(),
            threads: 0,
        },
    )
    .expect("ONNX Runtime (run scripts/setup)");

    let t = Instant::now();
    let encoded: Vec<Encoded> = texts
        .par_iter()
        .map(|s| encoder.encode(s).unwrap())
        .collect();
    let tok_s = t.elapsed().as_secs_f64();
    let tokens: usize = encoded.iter().map(Encoded::len).sum();
    println!(
        "texts {}  tokens {}  (mean {:.1})  tokenization {:.3}s = {:.0} texts/s, {:.0} tokens/s (rayon, {} threads)",
        texts.len(),
        tokens,
        tokens as f64 / texts.len() as f64,
        tok_s,
        texts.len() as f64 / tok_s,
        tokens as f64 / tok_s,
        rayon::current_num_threads()
    );

    let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
    let sorted = batch::plan(&lengths, CPU_BATCH_TOKENS, DEFAULT_MAX_BATCH_ROWS, true);
    let unsorted = batch::plan_unsorted(encoded.len(), fixed_rows);
    let padded = |plan: &[Vec<usize>]| -> usize {
        plan.iter()
            .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap_or(0))
            .sum()
    };
    println!(
        "padded tokens: sorted/budget {} ({} batches), unsorted/{fixed_rows} rows {} ({} batches)",
        padded(&sorted),
        sorted.len(),
        padded(&unsorted),
        unsorted.len()
    );
    // Warm-up (graph optimisation, allocator).
    embed::run_plan(
        std::slice::from_mut(&mut embedder),
        &encoded,
        &sorted[..1],
        &|_, _| true,
    )
    .unwrap();

    let mut best = [f64::INFINITY; 2];
    for round in 0..rounds {
        for (k, plan) in [&sorted, &unsorted].into_iter().enumerate() {
            let t = Instant::now();
            let (v, _) = embed::run_plan(
                std::slice::from_mut(&mut embedder),
                &encoded,
                plan,
                &|_, _| true,
            )
            .unwrap();
            let s = t.elapsed().as_secs_f64();
            std::hint::black_box(v);
            best[k] = best[k].min(s);
            println!(
                "round {round} {:<22} {s:.2}s  {:.1} sentences/s  {:.0} tokens/s",
                if k == 0 {
                    "sorted, token budget"
                } else {
                    "unsorted, fixed count"
                },
                texts.len() as f64 / s,
                tokens as f64 / s
            );
        }
    }
    println!(
        "best: sorted {:.1} sentences/s ({:.0} tokens/s), unsorted {:.1} sentences/s; speed-up {:.2}x; peak RSS {:.0} MiB",
        texts.len() as f64 / best[0],
        tokens as f64 / best[0],
        texts.len() as f64 / best[1],
        best[1] / best[0],
        peak_rss_mib()
    );
}
