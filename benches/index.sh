#!/usr/bin/env bash
# ANN indexes side by side with faiss (compare ratios: the machine is
# shared and noisy), on three data sets of unit 384-dim vectors:
#   tweets   MiniLM vectors of the 63,326 health tweets (1,000 held out as queries)
#   realish  the same repeated with noise to 1M rows (index_bench.py realish says how)
#   random   1M rows of 256 Gaussian blobs (benches/kmeans.py's)
# For each: `embedflow index` (time, peak RSS, its recall curve), recall@10
# of `neighbors --queries` on the held-out queries at the index's default,
# `neighbors --k 10` of every row (time, peak RSS, recall on 1,000 rows),
# and faiss IndexIVFFlat (same nlist) and IndexHNSWFlat (M = 32) at equal
# recall. INDEX_SETS picks the sets (default: all three); INDEX_HNSW=0
# leaves HNSW out.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
scripts/setup >/dev/null
venv=$EMBEDFLOW_HOME/bench-venv
if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.4.6 faiss-cpu==1.15.1 pyarrow
py=$venv/bin/python
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
fi
bin=$CARGO_TARGET_DIR/release/embedflow
cache=$EMBEDFLOW_HOME/bench-cache
mkdir -p "$cache"
helper="$py benches/index_bench.py"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"

tweets=$cache/tweets_minilm.parquet
[[ -f $tweets ]] || "$bin" --progress off embed "$root/../shared/data/health_tweets.parquet" "$tweets" \
  --model all-MiniLM-L6-v2 --text-column text --id-column tweet_id >/dev/null

for set in ${INDEX_SETS:-tweets realish random}; do
  ds=$cache/ds_$set
  if [[ ! -f $ds/exact_sample.npy ]]; then
    case $set in
      tweets) $helper tweets "$tweets" "$ds" ;;
      realish) $helper realish "$tweets" "$ds" --n 1000000 ;;
      random) $helper random "$ds" --n 1000000 ;;
    esac
    $helper exact "$ds"
  fi
  table=$ds/table.parquet
  rm -rf "$table.index"
  echo "== $set: embedflow index"
  python3 benches/peak_rss.py "$bin" index "$table" | tee "$ds/index.txt"
  lists=$(sed -n 's/^  lists *\([0-9]*\).*/\1/p' "$ds/index.txt")
  echo "== $set: neighbors --queries (1,000 held-out rows) at the default nprobe"
  python3 benches/peak_rss.py "$bin" --progress off neighbors "$table" "$ds/ours_q.parquet" \
    --queries "$ds/queries.parquet" --k 10 --id-column id
  $helper recall "$ds/ours_q.parquet" "$ds" --of queries
  echo "== $set: neighbors --k 10 of every row at the default nprobe"
  python3 benches/peak_rss.py "$bin" --progress off neighbors "$table" "$ds/ours_all.parquet" --k 10 --id-column id
  $helper recall "$ds/ours_all.parquet" "$ds" --of sample
  echo "== $set: faiss, nlist $lists"
  if [[ ${INDEX_HNSW:-1} == 1 ]]; then hnsw=--hnsw; else hnsw=; fi
  $helper faiss "$ds" --nlist "$lists" $hnsw
done
