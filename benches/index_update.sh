#!/usr/bin/env bash
# Updating an index against building it again (issue 30: "after a run that
# changes 1 % of rows, the index update takes <= 10 % of a full build and
# recall stays >= 0.95"). A job with [index] embeds N texts (default 1M:
# the health tweets, each followed by three seeded words; potion-base-8M,
# a static model, so that embedding a million rows takes minutes) into a
# Delta table and builds its index; 1 % of the input then changes (half
# edited, a quarter deleted, a quarter new) and the job runs again: the
# index is updated. Then `embedflow index --rebuild` builds the same
# version's index from scratch. Recall@10 of `neighbors --queries` (1,000
# held-out texts) against --exact, for the updated and the rebuilt index.
# The update is timed twice: inside the job, just after its commit (the
# table's new version is still being flushed to disk while the index's
# file is synced), and on its own after `sync`, as the rebuild is.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
scripts/setup >/dev/null 2>&1
venv=$EMBEDFLOW_HOME/bench-venv
if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow
py="$venv/bin/python $root/benches/index_update.py"
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
fi
bin=$CARGO_TARGET_DIR/release/embedflow
n=${INDEX_UPDATE_ROWS:-1000000}
work=$EMBEDFLOW_HOME/bench-cache/index_update_$n
rm -rf "$work" && mkdir -p "$work" && cd "$work"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $n rows"
$py make "$root/../shared/data/health_tweets.parquet" "$n" texts.parquet queries_in.parquet
cp texts.parquet in.parquet
cat > job.toml <<JOB
[input]
path = "in.parquet"
text_column = "text"
id_column = "id"
[model]
path = "potion-base-8M"
[chunking]
mode = "none"
[output]
path = "table"
format = "delta"
[index]
JOB
"$bin" --progress off embed queries_in.parquet queries.parquet --model potion-base-8M \
  --text-column text --id-column id >/dev/null
echo "== first run: embed $n rows, build the index"
python3 "$root/benches/peak_rss.py" "$bin" --progress off run job.toml | grep -E "wrote|index|seconds|incremental|command took"
$py change texts.parquet in.parquet --fraction 0.01
echo "== second run: 1 % changed, the index updated"
python3 "$root/benches/peak_rss.py" "$bin" --progress off run job.toml | grep -E "wrote|index|from|since|seconds|incremental|command took"
echo "== the same update again on its own: v1's index removed, the disk synced, \`embedflow index table\`"
rm -rf table/_embedflow/index/v1 && sync
python3 "$root/benches/peak_rss.py" "$bin" index table | grep -E "^[0-9.]+ s:|updated|seconds|command took"
nn() { "$bin" --progress off neighbors table "$1" --queries queries.parquet --k 10 --id-column id "${@:2}" >/dev/null; }
nn exact.parquet --exact
nn updated.parquet
echo -n "updated index: " && $py recall updated.parquet exact.parquet
echo "== the same version's index built from scratch"
sync
python3 "$root/benches/peak_rss.py" "$bin" --progress off index table --rebuild | grep -E "wrote|seconds|command took"
nn rebuilt.parquet
echo -n "rebuilt index: " && $py recall rebuilt.parquet exact.parquet
