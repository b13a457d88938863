#!/usr/bin/env bash
# SQL and neighbors, side by side in one run (compare ratios; the machine
# is shared and noisy):
#  1. top-10 semantic search over N vectors (default 1M x 384) with
#     `embedflow sql` (Parquet on disk, embed() of the query, DataFusion
#     TopK), against numpy brute force on the same vectors in memory;
#  2. exact 20 nearest neighbors of every row of M vectors (default 100k)
#     with `embedflow neighbors` against faiss IndexFlatIP, and how often
#     the two lists agree;
#  3. the same at 1M vectors for Q query rows (default 10k; every row of
#     1M would take hours on 2 cores): `neighbors --queries` against faiss
#     searching the same rows.
# Vectors: the unit-norm test vectors of benches/kmeans.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
scripts/setup >/dev/null
rows=${SQL_ROWS:-1000000}
nrows=${NEIGHBOR_ROWS:-100000}
qrows=${NEIGHBOR_QUERIES:-10000}
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
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
x=$cache/kmeans_x_1000000.npy
[[ -f $x ]] || "$py" benches/kmeans.py gen "$x" --n 1000000 --d 384
table=$cache/vectors_${rows}.parquet
[[ -f $table ]] || "$py" benches/sql_bench.py parquet "$x" "$table" --rows "$rows"

echo "== 1. top-10 search over $rows vectors"
query="SELECT id, cosine_similarity(embedding, embed('central bank raises interest rates')) AS score FROM t ORDER BY score DESC LIMIT 10"
"$bin" -q sql --table "t=$table" --model all-MiniLM-L6-v2 --format csv "EXPLAIN $query" | grep -o 'SortExec: TopK(fetch=10)' | head -1
python3 benches/peak_rss.py "$bin" -q sql --table "t=$table" --model all-MiniLM-L6-v2 --format csv "$query" >"$work/top.txt"
cat "$work/top.txt"
secs=$(awk '/command took/ {sub("s,", "", $3); print $3}' "$work/top.txt")
python3 -c "print(f'embedflow sql: {$rows / $secs:,.0f} rows/s (whole command: start, model load, Parquet scan, TopK)')"
# The same query vector for numpy.
"$bin" -q sql --model all-MiniLM-L6-v2 --format csv "SELECT embed('central bank raises interest rates') AS q" \
  | tail -1 | tr -d '"[]' | "$py" -c "import sys, numpy as np; np.save('$work/q.npy', np.array([float(v) for v in sys.stdin.read().split(',')], dtype=np.float32))"
"$py" benches/sql_bench.py topk "$x" "$work/q.npy" --k 10

echo "== 2. exact 20 nearest neighbors of $nrows rows"
items=$cache/vectors_${nrows}.parquet
[[ -f $items ]] || "$py" benches/sql_bench.py parquet "$x" "$items" --rows "$nrows"
python3 benches/peak_rss.py "$bin" --progress off neighbors "$items" "$work/nn.parquet" --k 20
"$py" benches/sql_bench.py faiss-neighbors "$x" --rows "$nrows" --k 20 --out "$work/faiss.npy"
"$py" benches/sql_bench.py agree "$work/faiss.npy" "$work/nn.parquet" --k 20

echo "== 3. exact 20 nearest neighbors in $rows vectors of $qrows query rows"
queries=$cache/vectors_${qrows}.parquet
[[ -f $queries ]] || "$py" benches/sql_bench.py parquet "$x" "$queries" --rows "$qrows"
python3 benches/peak_rss.py "$bin" --progress off neighbors "$table" "$work/qnn.parquet" --queries "$queries" --k 20
"$py" benches/sql_bench.py faiss-search "$x" --rows "$rows" --queries "$qrows" --k 20 --out "$work/faiss_q.npy"
"$py" benches/sql_bench.py agree "$work/faiss_q.npy" "$work/qnn.parquet" --k 20
