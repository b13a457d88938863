#!/usr/bin/env bash
# Two builds of embedflow side by side in one run (a refactor must not move
# the figures; the machine is shared and noisy: compare ratios). Each round
# runs every step with BEFORE's binary, then AFTER's; the best of ROUNDS of
# each is kept and AFTER / BEFORE printed.
#
#  1. embed ARTICLES news articles with all-MiniLM-L6-v2 into a Parquet
#     file (embedding throughput, chunks of 254 tokens);
#  2. the same into a Delta table (units, records, lease, commit);
#  3. the table again with 1 % of the texts changed (incremental rerun);
#  4. TWEETS health tweets with the tiny random BERT into Parquet (the
#     read, prepare and write stages, inference nearly free);
#  5. `cluster` of those vectors, k = 20, cosine, keyword topics;
#  6. `report` of the clustered table;
#  7. `sql` top-10 by cosine similarity to embed(...) over those vectors.
#
# Usage: benches/before_after.sh BEFORE_DIR AFTER_DIR
#   each DIR holds an `embedflow` release binary (build one per commit:
#   `cargo build --release --bin embedflow` and copy it out).
#   ARTICLES (default 200), TWEETS (default 20000), ROUNDS (default 3)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
scripts/setup >/dev/null
python=$(scripts/py-env)
before=${1:?BEFORE_DIR}/embedflow
after=${2:?AFTER_DIR}/embedflow
articles=${ARTICLES:-200}
tweets=${TWEETS:-20000}
rounds=${ROUNDS:-3}
shared=$root/../shared
minilm=$shared/models/all-MiniLM-L6-v2
tiny=$shared/models/tiny-bert-random-st
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" - "$shared" "$work" "$articles" "$tweets" <<'PY'
import sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
shared, work, n, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
news = pq.read_table(f"{shared}/data/news_articles.parquet").slice(0, n)
news = news.filter(pc.invert(pc.is_null(news.column("text"))))
pq.write_table(news, f"{work}/news.parquet")
texts = news.column("text").to_pylist()
texts = [s + " Updated." if i % 100 == 0 else s for i, s in enumerate(texts)]
pq.write_table(news.set_column(news.schema.get_field_index("text"), "text", pa.array(texts)),
               f"{work}/news_changed.parquet")
pq.write_table(pq.read_table(f"{shared}/data/health_tweets.parquet").slice(0, t),
               f"{work}/tweets.parquet")
PY

job() { # job NAME INPUT OUTPUT FORMAT MODEL ID
  cat >"$work/$1.toml" <<EOF
[input]
path = "$2"
text_column = "text"
id_column = "$6"
[model]
path = "$5"
[output]
path = "$3"
format = "$4"
EOF
}
job news_parquet "$work/news.parquet" "$work/out/news.parquet" parquet "$minilm" article_id
job news_delta "$work/news.parquet" "$work/out/news_table" delta "$minilm" article_id
job news_changed "$work/news_changed.parquet" "$work/out/news_table" delta "$minilm" article_id
job tweets "$work/tweets.parquet" "$work/out/tweets.parquet" parquet "$tiny" tweet_id
query="SELECT tweet_id, cosine_similarity(embedding, embed('flu vaccine side effects')) AS score FROM t ORDER BY score DESC LIMIT 10"

steps=(embed_parquet embed_delta incremental tiny_parquet cluster report sql_top10)
run_step() { # run_step BIN STEP
  local bin=$1 o=$work/out
  ef() { "$bin" --progress off -q "$@"; }
  case $2 in
    embed_parquet) ef run "$work/news_parquet.toml" ;;
    embed_delta) ef run "$work/news_delta.toml" ;;
    incremental) ef run "$work/news_changed.toml" ;;
    tiny_parquet) ef run "$work/tweets.toml" ;;
    cluster) ef cluster "$o/tweets.parquet" "$o/clustered.parquet" --k 20 --metric cosine \
      --text-column chunk_text --id-column tweet_id ;;
    report) ef report "$o/clustered.parquet" -o "$o/report.html" ;;
    sql_top10) ef sql --table "t=$o/clustered.parquet" --model "$tiny" --format csv "$query" ;;
  esac
}
declare -A best
for r in $(seq "$rounds"); do
  for side in before after; do
    bin=${!side}
    rm -rf "$work/out" && mkdir "$work/out"
    for step in "${steps[@]}"; do
      start=$(date +%s.%N)
      run_step "$bin" "$step" >/dev/null 2>"$work/err" || [[ $? == 2 ]] \
        || { cat "$work/err"; echo "$side $step failed" >&2; exit 1; }
      secs=$(python3 -c "print(f'{$(date +%s.%N) - $start:.3f}')")
      printf 'round %s %-6s %-14s %8.2f s\n' "$r" "$side" "$step" "$secs"
      key=$side/$step
      best[$key]=$(python3 -c "print(min(${best[$key]:-1e9}, $secs))")
    done
  done
done
echo
echo "best of $rounds ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores)"
printf '%-14s %10s %10s %8s\n' step before after ratio
for step in "${steps[@]}"; do
  b=${best[before/$step]} a=${best[after/$step]}
  printf '%-14s %9.2fs %9.2fs %8s\n' "$step" "$b" "$a" "$(python3 -c "print(f'{$a / $b:.3f}x')")"
done
