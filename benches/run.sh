#!/usr/bin/env bash
# The embedding benchmark, side by side in one run (the machine is shared and
# noisy: compare ratios, not absolute numbers):
#  1. benches/throughput.rs: bench_texts.jsonl through embedflow's
#     embedder, length-sorted token-budget batches vs unsorted fixed-count;
#  2. the same texts through Python onnxruntime (same library release, same
#     threads), batched as sentence-transformers does;
#  3. the whole pipeline (Parquet → chunk at 256 tokens → Parquet) on
#     news_articles.parquet, with peak RSS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
scripts/setup >/dev/null
shared=$root/../shared
model=$shared/models/all-MiniLM-L6-v2
texts=$shared/reference/bench_texts.jsonl

echo "== 1. embedflow embedder (benches/throughput.rs)"
cargo build --release --locked --quiet --features bench --bin embedflow-bench --bin embedflow
"$CARGO_TARGET_DIR/release/embedflow-bench" --rounds 3 --texts "$texts" --model "$model"

echo "== 2. Python onnxruntime on the same texts"
venv=$EMBEDFLOW_HOME/bench-venv
if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet "onnxruntime==1.31.1" tokenizers numpy
"$venv/bin/python" benches/python_ort.py --model "$model" --texts "$texts" --rounds 3

echo "== 3. whole pipeline on news_articles.parquet (3,824 articles, chunks of 254 tokens)"
out=$(mktemp -d)
python3 benches/peak_rss.py "$CARGO_TARGET_DIR/release/embedflow" --progress off \
  embed "$shared/data/news_articles.parquet" "$out/news.parquet" \
  --model "$model" --text-template '{title}\n\n{text}' --id-column article_id --columns article_id,outlet \
  || [[ $? == 2 ]] # exit 2: one article has no text and is skipped, as it should be
rm -rf "$out"
