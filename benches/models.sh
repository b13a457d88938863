#!/usr/bin/env bash
# Model families side by side in one run (issue 16): the 2,000 texts of
# ../shared/reference/bench_texts.jsonl through the whole pipeline (Parquet
# in and out, chunking off, each model's own max length), with
# potion-base-8M (static), all-MiniLM-L6-v2 and multilingual-e5-small-q4
# (passage prompt); texts/s and tokens/s from each summary, best of ROUNDS,
# and the ratios.
# Usage: benches/models.sh [ROUNDS]
#   EMBEDFLOW_BIN  the binary to measure (default: a release build)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
python=$(scripts/py-env)
rounds=${1:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z ${EMBEDFLOW_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
  EMBEDFLOW_BIN=$CARGO_TARGET_DIR/release/embedflow
fi
bin=$EMBEDFLOW_BIN
"$python" - "$root/../shared/reference/bench_texts.jsonl" "$work/texts.parquet" <<'PY'
import json, sys, pyarrow as pa, pyarrow.parquet as pq
texts = [json.loads(l) for l in open(sys.argv[1])]
pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), sys.argv[2])
PY
run() { # run LABEL MODEL [FLAGS...]: prints "LABEL texts/s tokens/s seconds"
  local label=$1 model=$2; shift 2
  "$bin" embed "$work/texts.parquet" "$work/out.parquet" --model "$model" --text-column text \
    --columns id --chunking none --on-empty embed --progress off --summary json "$@" >"$work/summary.json"
  "$python" - "$label" "$work/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
print(f"{sys.argv[1]:<28} {s['rows_read'] / s['seconds']:10.1f} texts/s {s['tokens'] / s['seconds']:12.0f} tokens/s {s['seconds']:8.2f} s")
PY
}
declare -A best
for r in $(seq "$rounds"); do
  for m in potion-base-8M all-MiniLM-L6-v2 multilingual-e5-small-q4; do
    flags=()
    [[ $m == multilingual-e5-small-q4 ]] && flags=(--prompt-name passage)
    line=$(run "round $r: $m" "$m" "${flags[@]}")
    echo "$line"
    tps=$(awk '{print $(NF-5)}' <<<"$line")
    if [[ -z ${best[$m]:-} ]] || python3 -c "import sys; sys.exit(0 if $tps > ${best[$m]} else 1)"; then
      best[$m]=$tps
    fi
  done
done
python3 - "${best[potion-base-8M]}" "${best[all-MiniLM-L6-v2]}" "${best[multilingual-e5-small-q4]}" <<'PY'
import sys
potion, minilm, e5 = map(float, sys.argv[1:])
print(f"best texts/s: potion {potion:.1f}, MiniLM {minilm:.1f}, e5-small {e5:.1f}")
print(f"potion / MiniLM: {potion / minilm:.1f}x   e5-small / MiniLM: {e5 / minilm:.2f}x (texts/s)")
PY
