#!/usr/bin/env bash
# Peak memory of one 20 MB document against 1M tweets, side by side in one
# run (issue 12: a long document must not need more memory than a long
# table). Both go through the whole pipeline with default columns and the
# tiny random BERT (the model's own memory is the same in both; MiniLM would
# take hours on 1M rows here), measured with /usr/bin/time -v.
#  - 20 MB: news articles joined into one document (~5M tokens, ~20k chunks);
#  - 1M tweets: health_tweets.parquet 16 times (1,013,216 rows, ids made unique).
# Usage: benches/long_document.sh [DOC_MB] [TWEET_COPIES]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
scripts/py-env >/dev/null
doc_mb=${1:-20}
copies=${2:-16}
shared=$root/../shared
model=$shared/models/tiny-bert-random-st
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --locked --quiet --bin embedflow
bin=$CARGO_TARGET_DIR/release/embedflow

"$EMBEDFLOW_HOME/test-venv/bin/python" - "$shared" "$work" "$doc_mb" "$copies" <<'PY'
import sys
import pyarrow as pa, pyarrow.parquet as pq
shared, work, mb, copies = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = [t for t in pq.read_table(f"{shared}/data/news_articles.parquet").column("text").to_pylist() if t]
parts, n, i = [], 0, 0
while n < mb * 1_000_000:
    parts.append(texts[i % len(texts)]); n += len(texts[i % len(texts)]) + 2; i += 1
doc = "\n\n".join(parts)[: mb * 1_000_000]
pq.write_table(pa.table({"id": ["doc"], "text": [doc]}), f"{work}/doc.parquet")
tw = pq.read_table(f"{shared}/data/health_tweets.parquet")
ids = tw.column("tweet_id").to_pylist()
pq.write_table(pa.concat_tables(
    tw.set_column(0, "tweet_id", pa.array([f"{k}-{x}" for x in ids])) for k in range(copies)
), f"{work}/tweets.parquet")
PY

peak() { # NAME INPUT: runs embed, prints wall seconds and peak RSS (KiB)
  local log=$work/$1.time
  /usr/bin/time -v "$bin" --progress off embed "$2" "$work/$1.out.parquet" \
    --model "$model" --text-column text 2>"$log" >/dev/null \
    || die "the $1 run failed" "see its log:$(printf '\n%s' "$(tail -20 "$log")")"
  local rss wall
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  printf '%-8s wall %s, peak RSS %d MiB\n' "$1" "$wall" $((rss / 1024)) >&2
  echo "$rss"
}
doc_rss=$(peak doc "$work/doc.parquet")
tweets_rss=$(peak tweets "$work/tweets.parquet")
"$EMBEDFLOW_HOME/test-venv/bin/python" - "$work/doc.out.parquet" "$work/tweets.out.parquet" <<'PY'
import sys, pyarrow.parquet as pq
for p in sys.argv[1:]:
    m = pq.ParquetFile(p).metadata
    print(f"{p.rsplit('/', 1)[1]}: {m.num_rows} rows, {m.num_row_groups} row groups", file=sys.stderr)
PY
awk -v d="$doc_rss" -v t="$tweets_rss" 'BEGIN { printf "20 MB document / 1M tweets peak RSS: %.2f (goal: at most 1.2)\n", d / t }'
