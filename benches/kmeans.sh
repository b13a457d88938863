#!/usr/bin/env bash
# k-means side by side in one run (the machine is shared and noisy: compare
# ratios): embedflow (benches/kmeans.rs), scikit-learn KMeans(lloyd) and
# faiss Kmeans, each in its own process, from the same starting centres for
# the same number of iterations (tol 0), on the same unit-norm vectors.
# Inertia is recomputed for every tool's final centres in one way (faiss
# IndexFlatL2 search). Then an adjusted Rand index of `embedflow cluster`
# against the outlet labels of news_articles (a smoke figure).
#
#   benches/kmeans.sh                      # n = 100k and 1M, k = 16, 100, 1000
#   KMEANS_SIZES=100000 KMEANS_KS="16 100" benches/kmeans.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
scripts/setup >/dev/null
sizes=${KMEANS_SIZES:-100000 1000000}
ks=${KMEANS_KS:-16 100 1000}
iters=${KMEANS_ITERS:-20}
venv=$EMBEDFLOW_HOME/bench-venv
if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.4.6 scikit-learn==1.9.1 faiss-cpu==1.15.1 pyarrow
py=$venv/bin/python
# BENCH_SKIP_BUILD=1: use the release binaries already built.
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  cargo build --release --locked --quiet --features bench --bin embedflow-kmeans-bench --bin embedflow
fi
bin=$CARGO_TARGET_DIR/release
cache=$EMBEDFLOW_HOME/bench-cache
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mhz=$(awk -F: '/cpu MHz/ {print $2; exit}' /proc/cpuinfo)
cores=$(nproc)
# AVX2 + FMA: 2 FMA units x 8 f32 lanes x 2 flops per cycle per core.
peak=$(python3 -c "print(round($cores * 32 * $mhz / 1000, 1))")
echo "machine: $cores cores at $(echo $mhz) MHz (nominal; turbo runs higher, so %peak can pass 100), f32 FMA peak ~ $peak GFLOP/s; $iters iterations"
printf '%-9s %5s %-13s %9s %6s %8s %6s %17s %9s\n' n k tool seconds it/s GFLOP/s %peak inertia "peak RSS"
for n in $sizes; do
  x=$cache/kmeans_x_${n}.npy
  [[ -f $x ]] || "$py" benches/kmeans.py gen "$x" --n "$n" --d 384
  for k in $ks; do
    c=$work/init_${n}_${k}.npy
    "$py" benches/kmeans.py init "$x" "$c" --k "$k" --seed 1
    declare -A secs=()
    for tool in embedflow sklearn faiss; do
      out=$work/centres_${tool}.npy
      if [[ $tool == embedflow ]]; then
        json=$("$bin/embedflow-kmeans-bench" "$x" "$c" --iters "$iters" --out "$out")
      else
        json=$("$py" benches/kmeans.py "$tool" "$x" "$c" --iters "$iters" --out "$out")
      fi
      inertia=$("$py" benches/kmeans.py inertia "$x" "$out")
      read -r s it gf rss < <(python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(j['seconds'], j['iterations'], j['gflops'], j['peak_rss_mib'])" "$json")
      secs[$tool]=$s
      printf '%-9s %5s %-13s %9.2f %6.2f %8.1f %5.0f%% %17.4f %6s MiB\n' "$n" "$k" "$tool" "$s" \
        "$(python3 -c "print($it/$s)")" "$gf" "$(python3 -c "print(100*$gf/$peak)")" "$inertia" "$rss"
    done
    python3 -c "e=${secs[embedflow]}; print(f'          speed-up: {${secs[sklearn]}/e:.2f}x scikit-learn, {${secs[faiss]}/e:.2f}x faiss')"
  done
done

echo "== adjusted Rand index vs outlet, news_articles (k = 9, cosine, first 256 tokens of title + text)"
news=$cache/news_articles_truncated.parquet
if [[ ! -f $news ]]; then
  "$bin/embedflow" --progress off -q embed "$root/../shared/data/news_articles.parquet" "$news" \
    --model all-MiniLM-L6-v2 --text-template '{title}\n\n{text}' --chunking none \
    --columns article_id,outlet --on-empty embed
fi
"$bin/embedflow" -q cluster "$news" "$work/clustered.parquet" --k 9 --metric cosine --seed 0
printf 'ARI %.4f\n' "$("$py" benches/kmeans.py ari "$work/clustered.parquet" --label outlet --cluster cluster_id)"
