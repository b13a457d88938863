#!/usr/bin/env bash
# The GPU check, run on the device machine after benches/gpu/stage.sh's five
# parts are unpacked under /opt/gpu (see stage.sh). One call, about 5
# minutes; results in $OUT/gpu.txt (and stdout).
#  1. fidelity on CUDA: min cosine against sentence-transformers' vectors
#     of the 200 reference texts, fp32 (goal >= 0.9999) and fp16 (>= 0.999);
#  2. whole-pipeline throughput (Parquet in, Parquet out) with --device cuda:
#     news_articles chunked at 256 tokens and the health tweets (short
#     texts), fp32 and fp16, two token budgets; once over the corpus and
#     over 8 copies (steady state, start-up amortised);
#  3. sentence-transformers on the same card, same texts (the chunk texts
#     embedflow made, and the tweets), fp16 and fp32, batch 256;
#  4. the ratios.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
log=$OUT/gpu.txt
exec > >(tee -a "$log") 2>&1
# G, DEVICE, COPIES, NEWS and TWEETS may be overridden for a dry run on a
# CPU machine (DEVICE=cpu, small inputs).
G=${G:-/opt/gpu}
DEVICE=${DEVICE:-cuda}
COPIES=${COPIES:-8}
[[ -f $G/env.sh ]] && source "$G/env.sh"
export EMBEDFLOW_ORT_CUDA_LIB=$G/libonnxruntime.so.1.31.1
export EMBEDFLOW_HOME=${EMBEDFLOW_HOME:-/tmp/efhome}
B=$G/embedflow
D=$G/data
NEWS=${NEWS:-$D/news_articles.parquet}
TWEETS=${TWEETS:-$D/health_tweets.parquet}
W=/tmp/gpu-work
rm -rf "$W" && mkdir -p "$W/news8" "$W/tweets8"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
for i in $(seq "$COPIES"); do
  ln -sf "$NEWS" "$W/news8/news$i.${NEWS##*.}"
  ln -sf "$TWEETS" "$W/tweets8/tweets$i.${TWEETS##*.}"
done

news=(--text-template $'{title}\n\n{text}' --chunking tokens --columns article_id)
tweets=(--text-column text --chunking none --columns tweet_id)

echo "== 1. fidelity"
for m in model model-fp16; do
  $B --progress off embed "$D/reference.parquet" "$W/ref-$m.parquet" --model $G/$m \
    --text-column text --columns id --chunking none --max-seq-length 256 --on-empty embed --device $DEVICE | head -2
  $B -q sql --table "r=$W/ref-$m.parquet" --format json "SELECT embedding FROM r ORDER BY id" > "$W/ref-$m.json"
  python3 - "$W/ref-$m.json" "$D/embeddings.npy" "$m" <<'PY'
import json, sys, numpy as np
got = np.array([json.loads(l)["embedding"] for l in open(sys.argv[1])], dtype=np.float64)
ref = np.load(sys.argv[2]).astype(np.float64)
c = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
print(f"fidelity {sys.argv[3]}: min cosine {c.min():.7f}, mean {c.mean():.7f}")
PY
done

echo "== 2. embedflow, whole pipeline, --device cuda"
run() { # name input model batch_tokens extra...
  local name=$1 input=$2 model=$3 bt=$4; shift 4
  local t0=$(date +%s.%N)
  $B --progress off embed "$input" "$W/$name.parquet" --model $G/$model --device $DEVICE \
    --batch-tokens "$bt" --max-batch-rows 1024 "$@" > "$W/$name.summary" || { echo "$name FAILED"; return; }
  local t1=$(date +%s.%N)
  echo "$name: wall $(python3 -c "print(f'{$t1 - $t0:.2f}')") s; $(grep -E 'chunks  |tokens  |throughput' "$W/$name.summary" | tr -s ' ' | tr '\n' ';')"
}
for model in model model-fp16; do
  for bt in 32768 131072; do
    run "news1-$model-$bt" "$NEWS" $model $bt "${news[@]}"
    run "news8-$model-$bt" "$W/news8" $model $bt "${news[@]}"
    run "tweets1-$model-$bt" "$TWEETS" $model $bt "${tweets[@]}"
    run "tweets8-$model-$bt" "$W/tweets8" $model $bt "${tweets[@]}"
  done
done

echo "== 3. sentence-transformers, same card, same texts"
$B --progress off embed "$NEWS" "$W/chunks.parquet" --model $G/model --device $DEVICE \
  "${news[@]}" --keep-chunk-text > /dev/null
$B -q sql --table "c=$W/chunks.parquet" --format json "SELECT chunk_text AS t FROM c" > "$W/news_chunks.json"
$B -q sql --table "t=$TWEETS" --format json "SELECT text AS t FROM t WHERE text IS NOT NULL AND trim(text) <> ''" > "$W/tweets.json"
python3 - "$W" "$G" <<'PY'
import json, sys, time
try:
    import torch
    from sentence_transformers import SentenceTransformer
except ImportError as e:
    sys.exit(f"sentence-transformers baseline skipped: {e}")
w = sys.argv[1]
for corpus in ("news_chunks", "tweets"):
    texts = [json.loads(l)["t"] for l in open(f"{w}/{corpus}.json")]
    for dtype in ("fp16", "fp32"):
        m = SentenceTransformer(sys.argv[2] + "/st", device="cuda")
        m.max_seq_length = 256
        m = m.half() if dtype == "fp16" else m.float()
        m.encode(texts[:2000], batch_size=256)
        torch.cuda.synchronize()
        t = time.perf_counter()
        m.encode(texts, batch_size=256, convert_to_numpy=True)
        torch.cuda.synchronize()
        s = time.perf_counter() - t
        print(f"sentence-transformers {corpus} {dtype}: {len(texts)} texts in {s:.2f} s = {len(texts) / s:,.0f} texts/s")
PY
echo "== done"
