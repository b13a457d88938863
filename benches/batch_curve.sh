#!/usr/bin/env bash
# The CPU batch budget (issue 17): whole `embed` runs of all-MiniLM-L6-v2
# with embed.batch_tokens from 256 to 16,384, on two corpora: the 2,000
# texts of bench_texts.jsonl (chunking none, max 256 tokens) and the first
# ARTICLES news articles chunked at 256 tokens. Wall time and peak RSS per
# run (whole process), budgets interleaved within each round so that
# machine noise hits them alike; best of ROUNDS.
# Usage: benches/batch_curve.sh [ROUNDS] [ARTICLES]
#   EMBEDFLOW_BIN  the binary to measure (default: a release build)
#   BUDGETS        the budgets to try (default "256 512 1024 2048 4096 16384")
#   MODEL          the model folder (default all-MiniLM-L6-v2; for another
#                  size class, e.g. a random 768-dim one from
#                  benches/wide_model.py)
#   WORKERS        embed.workers for every run (default: embedflow's auto)
#   TEXTS          how many of the bench texts (default all 2,000)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
python=$(scripts/py-env)
rounds=${1:-2}
articles=${2:-200}
budgets=${BUDGETS:-256 512 1024 2048 4096 16384}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z ${EMBEDFLOW_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
  EMBEDFLOW_BIN=$CARGO_TARGET_DIR/release/embedflow
fi
shared=$root/../shared
"$python" - "$shared/reference/bench_texts.jsonl" "$work/texts.parquet" \
  "$shared/data/news_articles.parquet" "$work/news.parquet" "$articles" "${TEXTS:-0}" <<'PY'
import json, sys, pyarrow as pa, pyarrow.parquet as pq
texts = [json.loads(l) for l in open(sys.argv[1])][: int(sys.argv[6]) or None]
pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), sys.argv[2])
news = pq.read_table(sys.argv[3]).slice(0, int(sys.argv[5]))
pq.write_table(news, sys.argv[4])
PY
model=${MODEL:-$shared/models/all-MiniLM-L6-v2}
workers=()
[[ -z ${WORKERS:-} ]] || workers=(--workers "$WORKERS")
run() { # run CORPUS BUDGET: prints "seconds peak_mib"
  local corpus=$1 budget=$2 flags
  if [[ $corpus == texts ]]; then
    flags=(--text-column text --columns id --chunking none --max-seq-length 256 --on-empty embed)
  else
    flags=(--text-template '{title}\n\n{text}' --id-column article_id --columns article_id)
  fi
  "$python" benches/peak_rss.py "$EMBEDFLOW_BIN" --progress off --summary json "${workers[@]}" \
    embed "$work/$corpus.parquet" "$work/out.parquet" --model "$model" --batch-tokens "$budget" "${flags[@]}" \
    >"$work/run.out" 2>&1 || [[ $? == 2 ]]
  awk '/command took/ { gsub("s,", "", $3); print $3, $6 }' "$work/run.out"
}
declare -A best_s best_m
for r in $(seq "$rounds"); do
  for corpus in texts news; do
    for b in $budgets; do
      read -r s m < <(run "$corpus" "$b")
      echo "round $r  $corpus  batch_tokens $b: $s s, peak $m MiB"
      k="$corpus $b"
      if [[ -z ${best_s[$k]:-} ]] || python3 -c "import sys; sys.exit(0 if $s < ${best_s[$k]} else 1)"; then
        best_s[$k]=$s best_m[$k]=$m
      fi
    done
  done
done
echo "best of $rounds (seconds, peak MiB):"
for corpus in texts news; do
  for b in $budgets; do
    k="$corpus $b"
    printf '  %-5s batch_tokens %6s: %7s s %6s MiB\n' "$corpus" "$b" "${best_s[$k]}" "${best_m[$k]}"
  done
done
