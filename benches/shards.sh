#!/usr/bin/env bash
# Sharded runs, measured here and scaled on paper (issue 15):
#  1. per-shard fixed cost: a MiniLM shard that owns no unit (start, model
#     load, input listing and footers, the plan, leases, marker), best of 3;
#  2. per-unit cost: one MiniLM shard of 1 over the first ARTICLES articles
#     of news_articles.parquet (chunks of 254 tokens), per input row;
#  3. commit of 10,240 units: a 10,485,760-row input (unit_rows = 1024), 4
#     shards of the tiny model keeping one row per unit (input.filter), so
#     the commit checks 10,240 unit records and writes 10,240 parts into one
#     version; the commit alone is timed.
# From them, benches/README.md predicts 50 M documents on 8, 64 and 512
# shards. Usage: benches/shards.sh [ARTICLES]
#   EMBEDFLOW_BIN  the binary to measure (default: a release build)
#   BIG_ROWS       rows of the commit input (default 10485760: 10,240 units);
#                  smaller for a dry run of the script
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
python=$(scripts/py-env)
articles=${1:-200}
shared=$root/../shared
minilm=$shared/models/all-MiniLM-L6-v2
tiny=$shared/models/tiny-bert-random-st
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z ${EMBEDFLOW_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
  EMBEDFLOW_BIN=$CARGO_TARGET_DIR/release/embedflow
fi
bin=$EMBEDFLOW_BIN

big_rows=${BIG_ROWS:-10485760}
"$python" - "$shared" "$work" "$articles" "$big_rows" <<'PY'
import sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
shared, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
news = pq.read_table(f"{shared}/data/news_articles.parquet").slice(0, n)
news = news.filter(pc.invert(pc.is_null(news.column("text"))))
pq.write_table(news, f"{work}/news.parquet")
rows = int(sys.argv[4])
ids = pa.array(range(rows), pa.int64())
text = pc.binary_join_element_wise("document ", pc.cast(ids, pa.string()), "")
pq.write_table(pa.table({"id": ids, "text": text}), f"{work}/big.parquet", row_group_size=65536)
PY

job() { # job NAME INPUT OUTPUT MODEL UNIT_ROWS EXTRA
  cat >"$work/$1.toml" <<EOF
[input]
path = "$2"
text_column = "text"
$6
[model]
path = "$4"
[output]
path = "$3"
format = "delta"
mode = "full"
unit_rows = $5
EOF
}
timed() { # timed LABEL ARGS... : prints "LABEL seconds peak_MiB"
  local label=$1; shift
  # Exit 2: some rows had empty text and were skipped; the run is whole.
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin" --progress off -q "$@" || [[ $? == 2 ]]
  read -r secs kib < <(tail -n 1 "$work/time")
  printf '%-44s %8.2f s %7.0f MiB\n' "$label" "$secs" "$((kib / 1024))"
  echo "$secs" >"$work/last"
}
best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }

echo "== 1. per-shard fixed cost (MiniLM, a shard with no unit)"
job fixed "$work/news.parquet" "$work/fixed_table" "$minilm" 16384 ""
runs=()
for r in 1 2 3; do
  timed "round $r: shard 7 of 8 (no unit)" run "$work/fixed.toml" --shard 7/8
  runs+=("$(cat "$work/last")")
done
fixed=$(best "${runs[@]}")
echo "fixed cost, best of 3: $fixed s"

echo "== 2. per-unit cost (MiniLM, one shard of 1 over $articles articles)"
job unit "$work/news.parquet" "$work/unit_table" "$minilm" 16384 ""
timed "1 shard of 1, $articles articles" run "$work/unit.toml" --shard 0/1
whole=$(cat "$work/last")
rows=$("$python" -c "import pyarrow.parquet as pq; print(pq.read_metadata('$work/news.parquet').num_rows)")
per_row=$(python3 -c "print(($whole - $fixed) / $rows)")
echo "per input row (whole - fixed) / rows: $per_row s"

units=$((big_rows / 1024))
echo "== 3. commit of $units units (tiny model, one row kept per unit)"
job big "$work/big.parquet" "$work/big_table" "$tiny" 1024 'filter = "id % 1024 = 0"'
for i in 0 1 2 3; do
  timed "shard $i of 4" run "$work/big.toml" --shard "$i/4"
done
timed "commit ($units units, $units parts)" commit "$work/big.toml"
commit=$(cat "$work/last")

python3 - "$fixed" "$per_row" "$commit" "$units" <<'PY'
import sys, math
fixed, per_row, commit_m, measured = map(float, sys.argv[1:])
docs, unit_rows = 50_000_000, 16384
units = math.ceil(docs / unit_rows)
t_unit = per_row * unit_rows
commit = commit_m * units / measured
one = fixed + units * t_unit + commit
print(f"== prediction: 50 M documents, unit_rows {unit_rows} ({units} units), one shard per machine like this one")
print(f"   per unit {t_unit:.1f} s, fixed {fixed:.2f} s, commit {commit:.1f} s ({measured:.0f} units: {commit_m:.2f} s)")
print(f"   1 shard: {one / 3600:.1f} h")
for n in (8, 64, 512):
    wall = fixed + math.ceil(units / n) * t_unit + commit
    print(f"   {n:4d} shards: {wall / 3600:7.2f} h wall, efficiency {one / (n * wall) * 100:5.1f} %")
PY
