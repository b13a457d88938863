#!/usr/bin/env bash
# SQL top-10 through a table's index against the exact scan, whole
# command (start, model load, embed(), index head, probed lists, rows read
# by position), on a data set of benches/index.sh (default realish, its
# index built): p50/p99 over 20 query texts, with and without a WHERE
# that keeps 10 % of rows, and recall@10 against the exact scan.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
bin=$CARGO_TARGET_DIR/release/embedflow
ds=$EMBEDFLOW_HOME/bench-cache/ds_${1:-realish}
table=$ds/table.parquet
[[ -f $table.index/index.json ]] || "$bin" index "$table" >/dev/null
texts=("flu vaccine" "ebola outbreak" "healthy diet" "cancer research" "mental health of teenagers"
  "hospital waiting times" "obesity in children" "new drug approved" "heart disease risk" "sleep and memory"
  "measles cases rise" "smoking ban" "air pollution deaths" "alzheimer study" "diabetes treatment"
  "zika virus" "antibiotic resistance" "nurses strike" "fitness trackers" "sugar tax")
query() { echo "SELECT id, cosine_similarity(embedding, embed('$1')) AS score FROM t $2 ORDER BY score DESC LIMIT 10"; }
run() { "$bin" -q sql --table "t=$table" --model all-MiniLM-L6-v2 --format csv "$1" | tail -n +2 | cut -d, -f1 | sort; }
for filter in "" "WHERE id % 10 = 0"; do
  echo "== top-10${filter:+ $filter}"
  times=()
  found=0 wanted=0
  for i in "${!texts[@]}"; do
    q=$(query "${texts[$i]}" "$filter")
    s=$(date +%s.%N); run "$q" >"$ds/ann.txt"; e=$(date +%s.%N)
    times+=("$(echo "$e - $s" | bc)")
    if (( i < 5 )); then
      s=$(date +%s.%N); run "SET embedflow.exact_search = true; $q" >"$ds/exact.txt"; e=$(date +%s.%N)
      echo "  exact scan: $(echo "$e - $s" | bc) s"
      wanted=$((wanted + $(wc -l <"$ds/exact.txt")))
      found=$((found + $(comm -12 "$ds/ann.txt" "$ds/exact.txt" | wc -l)))
    fi
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "  index: p50 %.2f s, p99 %.2f s (whole command, %d queries)\n", a[int((NR+1)/2)], a[NR], NR}'
  echo "  recall@10 against the exact scan: $found of $wanted"
done
"$bin" -q sql --table "t=$table" --model all-MiniLM-L6-v2 --format csv "EXPLAIN $(query "flu vaccine" "WHERE id % 10 = 0")" | grep -o 'IndexScanExec[^"]*'
