#!/usr/bin/env bash
# What the part proofs of issue 27 cost a Delta run, side by side in one run
# (compare ratios): a unit's part hashed (SHA-256) as it is written, parts
# and records fsynced, every part checked at the commit, and, on a resume,
# every finished part read back and hashed again.
#  1. a whole run: the tiny random BERT over ROWS health tweets (repeated)
#     into a Delta table in units of 2,048 rows, the binary before the
#     proofs (OLD_BIN) and after (EMBEDFLOW_BIN), alternating, best of ROUNDS;
#  2. a resume: each binary's run killed (-9) once half its units are
#     recorded, then the rerun timed (the new one re-hashes the done parts).
# Usage: OLD_BIN=path benches/part_proofs.sh [ROWS] [ROUNDS]
#   EMBEDFLOW_BIN  the binary to measure (default: a release build)
#   OLD_BIN        the binary before the proofs (e.g. built at 0cf718d)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null 2>&1
python=$(scripts/py-env)
rows=${1:-200000}
rounds=${2:-2}
[[ -n ${OLD_BIN:-} ]] || die "OLD_BIN is not set" "build the binary before the proofs (git worktree add /tmp/old 0cf718d; cargo build there) and point OLD_BIN at it"
shared=$root/../shared
tiny=$shared/models/tiny-bert-random-st
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z ${EMBEDFLOW_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
  EMBEDFLOW_BIN=$CARGO_TARGET_DIR/release/embedflow
fi

"$python" - "$shared" "$work" "$rows" <<'PY'
import sys
import pyarrow as pa, pyarrow.parquet as pq
shared, work, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
tw = pq.read_table(f"{shared}/data/health_tweets.parquet")
ids = tw.column("tweet_id").to_pylist()
copies = -(-rows // tw.num_rows)
t = pa.concat_tables(tw.set_column(0, "tweet_id", pa.array([f"{k}-{x}" for x in ids]))
                     for k in range(copies)).slice(0, rows)
pq.write_table(t, f"{work}/tweets.parquet", row_group_size=65536)
PY
cat >"$work/job.toml" <<EOF
[input]
path = "$work/tweets.parquet"
text_column = "text"
id_column = "tweet_id"
[model]
path = "$tiny"
[output]
path = "$work/table"
format = "delta"
mode = "full"
unit_rows = 2048
EOF
units=$(( (rows + 2047) / 2048 ))
records() { find "$work/table/_embedflow/runs" -path '*/units/*.json' 2>/dev/null | wc -l; }
timed() { # timed BIN: prints seconds
  /usr/bin/time -f "%e" -o "$work/time" "$1" --progress off -q run "$work/job.toml"
  tail -n 1 "$work/time"
}

echo "== 1. a whole run into a Delta table ($rows rows, $units units), best of $rounds"
best_old=999999 best_new=999999
for r in $(seq "$rounds"); do
  rm -rf "$work/table"; s=$(timed "$OLD_BIN"); echo "round $r: before the proofs $s s"
  best_old=$(python3 -c "print(min($best_old, $s))")
  rm -rf "$work/table"; s=$(timed "$EMBEDFLOW_BIN"); echo "round $r: with the proofs   $s s"
  best_new=$(python3 -c "print(min($best_new, $s))")
done
python3 -c "print(f'with / before, best of $rounds: {$best_new / $best_old:.3f}x')"

echo "== 2. a resume after kill -9 at half the units"
for which in OLD_BIN EMBEDFLOW_BIN; do
  bin=${!which}
  rm -rf "$work/table"
  "$bin" --progress off -q run "$work/job.toml" & pid=$!
  while (( $(records) < units / 2 )) && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  done_units=$(records)
  s=$(timed "$bin")
  echo "$which: resumed with $done_units of $units units done: $s s"
done
du -sh "$work/table" | sed 's/^/table size: /'
