//! Image throughput with the tiny CLIP (../shared/models/tiny-clip-random):
//! its 12 test images (PNG and JPEG, 25 × 40 to 800 × 600 px) repeated to
//! `--images N`, timed stage by stage on all cores: decoding, resizing and
//! cropping, then normalising and the vision graph in batches. Prints
//! images/s per stage and for all of them, and each stage's share.
//!
//!   cargo run --release --features bench --bin embedflow-images-bench -- [--images 2400 --rounds 3]
//!   (benches/images.sh runs it beside the whole pipeline)

use std::time::Instant;

use embedflow::embed::image::{MAX_IMAGE_PIXELS, decode};
use embedflow::embed::{Embedder, Encoded, ModelConfig, ModelOptions, SessionOptions, TextEncoder};
use rayon::prelude::*;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    let model =
        arg("--model").unwrap_or_else(|| format!("{root}/../shared/models/tiny-clip-random"));
    let n: usize = arg("--images").and_then(|v| v.parse().ok()).unwrap_or(2400);
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let batch: usize = arg("--batch").and_then(|v| v.parse().ok()).unwrap_or(256);
    let cfg = ModelConfig::load(&ModelOptions {
        path: model.clone(),
        images: true,
        ..Default::default()
    })
    .expect("model");
    let processor = cfg
        .vision
        .as_ref()
        .expect("a CLIP folder")
        .processor
        .clone();
    let encoder = TextEncoder::new(&cfg).expect("tokenizer");
    let mut embedder = Embedder::new(&cfg, &encoder, SessionOptions::cpu(0)).expect("session");
    let mut files: Vec<_> = std::fs::read_dir(format!("{model}/images"))
        .expect("images/")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let blobs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let images: Vec<&[u8]> = (0..n).map(|i| blobs[i % blobs.len()].as_slice()).collect();
    let mb: f64 = images.iter().map(|b| b.len()).sum::<usize>() as f64 / 1e6;
    println!(
        "{n} images ({mb:.1} MB encoded, the 12 test images repeated), {} threads, batches of {batch}",
        rayon::current_num_threads()
    );
    let mut best = [f64::INFINITY; 3];
    for r in 1..=rounds {
        let t = Instant::now();
        let decoded: Vec<_> = images
            .par_iter()
            .map(|b| decode(b, MAX_IMAGE_PIXELS).expect("decodes"))
            .collect();
        let t_decode = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let prepared: Vec<Encoded> = decoded
            .into_par_iter()
            .map(|img| Encoded::image(processor.prepare(img).expect("a prepared image").data))
            .collect();
        let t_resize = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut dims = 0;
        for chunk in prepared.chunks(batch) {
            let rows: Vec<&Encoded> = chunk.iter().collect();
            dims += embedder.embed(&rows).expect("embeds").len();
        }
        let t_model = t.elapsed().as_secs_f64();
        assert_eq!(dims, n * 16);
        let total = t_decode + t_resize + t_model;
        println!(
            "round {r}: decode {:8.0} img/s  resize+crop {:8.0} img/s  normalise+graph {:8.0} img/s  all {:7.0} img/s  (decode {:.0} %, resize {:.0} %, graph {:.0} %)",
            n as f64 / t_decode,
            n as f64 / t_resize,
            n as f64 / t_model,
            n as f64 / total,
            100.0 * t_decode / total,
            100.0 * t_resize / total,
            100.0 * t_model / total
        );
        for (b, t) in best.iter_mut().zip([t_decode, t_resize, t_model]) {
            *b = b.min(t);
        }
    }
    let total: f64 = best.iter().sum();
    println!(
        "best: decode {:.0} img/s, resize+crop {:.0} img/s, normalise+graph {:.0} img/s; all stages {:.0} img/s, decoding {:.0} % of the time",
        n as f64 / best[0],
        n as f64 / best[1],
        n as f64 / best[2],
        n as f64 / total,
        100.0 * best[0] / total
    );
}
