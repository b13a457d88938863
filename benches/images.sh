#!/usr/bin/env bash
# Images with the tiny CLIP (issue 16): the 12 test images of
# ../shared/models/tiny-clip-random repeated to N rows of a Parquet file,
# through the whole pipeline (`embed --image-column image`: read, decode,
# resize, crop, normalise, vision graph, write), best of ROUNDS; then the
# stages alone (benches/images.rs), to say how much of the time is
# decoding.
# Usage: benches/images.sh [N] [ROUNDS]
#   EMBEDFLOW_BIN  the binary to measure (default: a release build)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
python=$(scripts/py-env)
n=${1:-2400}
rounds=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --locked --quiet --features bench --bin embedflow-images-bench
if [[ -z ${EMBEDFLOW_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
  EMBEDFLOW_BIN=$CARGO_TARGET_DIR/release/embedflow
fi
clip="$root/../shared/models/tiny-clip-random"
"$python" - "$clip/images.parquet" "$work/images.parquet" "$n" <<'PY'
import sys, pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
n = int(sys.argv[3])
images = t.column("image").to_pylist()
pq.write_table(pa.table({"id": list(range(n)), "image": pa.array([images[i % len(images)] for i in range(n)], pa.binary())}), sys.argv[2])
PY
best=
for r in $(seq "$rounds"); do
  "$EMBEDFLOW_BIN" embed "$work/images.parquet" "$work/out.parquet" --model "$clip" \
    --image-column image --columns id --progress off --summary json >"$work/summary.json"
  ips=$("$python" -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"{s['rows_read']/s['seconds']:.1f}\")" "$work/summary.json")
  echo "pipeline round $r: $ips images/s"
  if [[ -z $best ]] || python3 -c "import sys; sys.exit(0 if $ips > $best else 1)"; then best=$ips; fi
done
echo "pipeline best: $best images/s ($n images, $(nproc) cores)"
"$CARGO_TARGET_DIR/release/embedflow-images-bench" --images "$n" --rounds "$rounds"
