#!/usr/bin/env bash
# The HTML report (issue 18) on big tables: time and peak memory of
# `embedflow report` over 100k and 1M rows, the file's size with 20k and 50k
# points on the map, and the seconds until headless Chromium has drawn every
# chart of the 1M-row report.
#
# The rows: the 63,326 health tweets embedded with the tiny random BERT
# (128 dims; the issue allows tiny-model vectors), repeated to N rows with a
# little noise (renormalised), clustered (k = 20, cosine) with keyword topics
# by `embedflow cluster`.
# Usage: benches/report.sh
#   EMBEDFLOW_BIN  the binary to measure (default: a release build)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
python=$(scripts/py-env)
chromium=$(scripts/browser)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z ${EMBEDFLOW_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
  EMBEDFLOW_BIN=$CARGO_TARGET_DIR/release/embedflow
fi
ef() { "$EMBEDFLOW_BIN" "$@"; }
tiny="$root/../shared/models/tiny-bert-random-st"
ef embed "$root/../shared/data/health_tweets.parquet" "$work/tweets.parquet" --model "$tiny" \
  --text-column text --id-column tweet_id --columns tweet_id,text --chunking none \
  --progress off -q || [[ $? == 2 ]]
for n in 100000 1000000; do
  "$python" - "$work/tweets.parquet" "$work/rows-$n.parquet" "$n" <<'PY'
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = pq.read_table(src)
x = np.array(t.column("embedding").to_pylist(), dtype=np.float32)
texts = t.column("text").to_pylist()
rng = np.random.default_rng(0)
dim = x.shape[1]
w = pq.ParquetWriter(out, pa.schema([("id", pa.int64()), ("text", pa.string()),
                                     ("embedding", pa.list_(pa.float32(), dim))]))
for start in range(0, n, 100_000):
    m = min(100_000, n - start)
    idx = rng.integers(0, len(x), m)
    v = x[idx] + rng.normal(0, 0.02, (m, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    w.write_table(pa.table({
        "id": pa.array(np.arange(start, start + m)),
        "text": pa.array([texts[i] for i in idx]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim)}))
w.close()
PY
  ef cluster "$work/rows-$n.parquet" "$work/clustered-$n.parquet" --k 20 --metric cosine \
    --id-column id --text-column text --topics "$work/topics-$n.parquet" --stop-words english -q
done
measure() { # NAME ARGS...: wall and peak RSS of one report
  local name=$1
  shift
  local line
  line=$("$python" benches/peak_rss.py "$EMBEDFLOW_BIN" report "$@" -q | tail -1)
  echo "$name: $line"
}
measure "100k rows, 20k points" "$work/clustered-100000.parquet" -o "$work/r100k.html"
measure "1M rows, 20k points" "$work/clustered-1000000.parquet" -o "$work/r1m.html"
measure "1M rows, 50k points" "$work/clustered-1000000.parquet" -o "$work/r1m-50k.html" --max-points 50000
for f in r100k r1m r1m-50k; do
  echo "$f.html: $(stat -c %s "$work/$f.html" | awk '{printf "%.1f MB", $1/1e6}')"
done
for f in r1m r1m-50k; do
  "$python" tests/report_browser.py "$chromium" "$work/$f.html" "$work/$f.png" |
    "$python" -c "import json,sys; d=json.load(sys.stdin); print(f\"$f.html in Chromium: drawn in {d['seconds_to_drawn']:.2f} s, {len(d['errors'])} console errors\")"
done
