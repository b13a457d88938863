#!/usr/bin/env bash
# Delta Lake tables, side by side in one run (issue 14; compare ratios):
#  1. resume bookkeeping: the same job (all-MiniLM-L6-v2, chunks of 254
#     tokens) on the first ARTICLES articles of news_articles.parquet, as one
#     Parquet file and as a Delta table (units, part files, records, lease,
#     commit), alternating, best of ROUNDS;
#  2. incremental rerun: 1 % of the articles' texts changed, the Delta job
#     run again (keys, comparison, copy of the unchanged rows, embedding of
#     the changed), against the full run's time;
#  3. memory of an incremental run (tiny random BERT, 1 % changed) over 1M
#     rows against 100k rows (health tweets repeated), peak RSS.
# Usage: benches/tables.sh [ARTICLES] [ROUNDS]
#   EMBEDFLOW_BIN  the binary to measure (default: a release build)
#   SECTIONS       which of the three to run (default "1 2 3"; 2 needs 1)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
python=$(scripts/py-env)
articles=${1:-600}
rounds=${2:-2}
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
sections=${SECTIONS:-1 2 3}
section() { [[ " $sections " == *" $1 "* ]]; }

"$python" - "$shared" "$work" "$articles" <<'PY'
import sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
shared, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
news = pq.read_table(f"{shared}/data/news_articles.parquet").slice(0, n)
news = news.filter(pc.invert(pc.is_null(news.column("text"))))
pq.write_table(news, f"{work}/news.parquet")
# 1 % of the texts changed (every 100th article gets a sentence more).
texts = news.column("text").to_pylist()
texts = [t + " Updated." if i % 100 == 0 else t for i, t in enumerate(texts)]
pq.write_table(news.set_column(news.schema.get_field_index("text"), "text", pa.array(texts)),
               f"{work}/news_changed.parquet")
tw = pq.read_table(f"{shared}/data/health_tweets.parquet")
ids = tw.column("tweet_id").to_pylist()
def tweets(rows, changed):
    copies = -(-rows // tw.num_rows)
    t = pa.concat_tables(tw.set_column(0, "tweet_id", pa.array([f"{k}-{x}" for x in ids]))
                         for k in range(copies)).slice(0, rows)
    if changed:
        tx = t.column("text").to_pylist()
        tx = [s + " (edited)" if i % 100 == 0 else s for i, s in enumerate(tx)]
        t = t.set_column(t.schema.get_field_index("text"), "text", pa.array(tx))
    return t
# Row groups of 64k rows, as warehouse files have (pyarrow's default is one
# group of up to 1M rows, which a reader holds whole).
for rows in (100_000, 1_000_000):
    pq.write_table(tweets(rows, False), f"{work}/tweets_{rows}.parquet", row_group_size=65536)
    pq.write_table(tweets(rows, True), f"{work}/tweets_{rows}_changed.parquet", row_group_size=65536)
PY

job() { # job NAME INPUT OUTPUT FORMAT MODEL ID TEXT
  cat >"$work/$1.toml" <<EOF
[input]
path = "$2"
text_column = "$7"
id_column = "$6"
[model]
path = "$5"
[output]
path = "$3"
format = "$4"
EOF
}
timed() { # timed LABEL ARGS... : prints "LABEL seconds peak_MiB"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin" --progress off -q "$@" || [[ $? == 2 ]]
  # /usr/bin/time says "Command exited with non-zero status 2" first when
  # a row was skipped (exit 2): the figures are on the last line.
  read -r secs kib < <(tail -n 1 "$work/time")
  printf '%-34s %8.2f s %7.0f MiB\n' "$label" "$secs" "$((kib / 1024))"
  echo "$secs" >"$work/last"
}

if section 1; then
echo "== 1. resume bookkeeping: Parquet file vs Delta table ($articles articles, MiniLM)"
job parquet "$work/news.parquet" "$work/news_out.parquet" parquet "$minilm" article_id text
best_p=999999 best_d=999999
for r in $(seq "$rounds"); do
  rm -rf "$work/news_table" "$work/news_out.parquet"
  job delta "$work/news.parquet" "$work/news_table" delta "$minilm" article_id text
  timed "round $r: Parquet file" run "$work/parquet.toml"
  best_p=$(python3 -c "print(min($best_p, $(cat "$work/last")))")
  timed "round $r: Delta table (full)" run "$work/delta.toml"
  best_d=$(python3 -c "print(min($best_d, $(cat "$work/last")))")
done
python3 -c "print(f'Delta / Parquet, best of $rounds: {$best_d / $best_p:.3f}x')"

fi
if section 2; then
echo "== 2. incremental rerun, 1 % of the texts changed"
job delta "$work/news_changed.parquet" "$work/news_table" delta "$minilm" article_id text
timed "incremental rerun (1 % changed)" run "$work/delta.toml"
python3 -c "print(f'incremental / full: {$(cat "$work/last") / $best_d * 100:.1f} %')"

fi
if section 3; then
echo "== 3. incremental memory, tiny model: 100k rows vs 1M rows (1 % changed)"
for rows in 100000 1000000; do
  job "t$rows" "$work/tweets_$rows.parquet" "$work/tweets_table_$rows" delta "$tiny" tweet_id text
  timed "first run, $rows rows" run "$work/t$rows.toml"
  job "t$rows" "$work/tweets_${rows}_changed.parquet" "$work/tweets_table_$rows" delta "$tiny" tweet_id text
  timed "incremental run, $rows rows" run "$work/t$rows.toml"
done
fi
