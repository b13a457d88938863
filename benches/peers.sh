#!/usr/bin/env bash
# embedflow against its peers on the CPU (issue 17), whole processes, in one
# run, interleaved within each round so that machine noise hits them alike:
#
#   embedflow   its defaults (embed ... --chunking none --max-seq-length 256)
#   embedflow-1 the same with --workers 1: one ONNX Runtime session on both
#               threads (the default before embed.workers)
#   embedflow-q=DIR  embedflow on a quantized model folder (QUANTIZED="DIR ...")
#   user        the Python a user writes (benches/peers.py user: batches of
#               32 sorted by length, as sentence-transformers)
#   tuned       hand-tuned Python (benches/peers.py tuned: length-sorted,
#               1,024-token budget, as embedflow)
#   fastembed   fastembed 0.9.1 on the same model folder (FASTEMBED=1; once,
#               bench_texts only: it took 249 s and 18 GB in the issue's run)
#
# on the 2,000 texts of bench_texts.jsonl and on the chunks of the first
# ARTICLES news articles (embedflow chunks them at 256 tokens; the Python
# peers get embedflow's chunk_text, the same texts). Wall, texts/s, tokens/s
# (embedflow's token count, the same texts for all), peak RSS (getrusage of
# the child), best of ROUNDS; then each peer's min and mean cosine against
# sentence-transformers on the 200 reference texts (texts.jsonl), and the
# FLOP rate of embedflow's best run against the two cores' fp32 peak.
# Usage: benches/peers.sh [ROUNDS] [ARTICLES]
#   EMBEDFLOW_BIN  the binary to measure (default: a release build)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
rounds=${1:-2}
articles=${2:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z ${EMBEDFLOW_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
  EMBEDFLOW_BIN=$CARGO_TARGET_DIR/release/embedflow
fi
# The peers' Python: the same ONNX Runtime release as embedflow's, pinned.
venv=$EMBEDFLOW_HOME/bench-venv
want="onnxruntime==1.31.1 tokenizers==0.23.3 numpy==2.4.6 pyarrow==26.0.1 fastembed==0.9.1 onnx==1.20.0"
if [[ ! -x $venv/bin/python || $(cat "$venv/.embedflow-requirements" 2>/dev/null || true) != "$want" ]]; then
  say "installing $want into $venv (once per machine)"
  python3 -m venv "$venv" >&2
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
  echo "$want" >"$venv/.embedflow-requirements"
fi
py=$venv/bin/python
shared=$root/../shared
model=$shared/models/all-MiniLM-L6-v2
"$py" - "$shared/reference/bench_texts.jsonl" "$work/texts.parquet" \
  "$shared/reference/texts.jsonl" "$work/ref.parquet" \
  "$shared/data/news_articles.parquet" "$work/news.parquet" "$articles" <<'PY'
import json, sys, pyarrow as pa, pyarrow.parquet as pq
for src, dst in [(sys.argv[1], sys.argv[2]), (sys.argv[3], sys.argv[4])]:
    texts = [json.loads(l) for l in open(src)]
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), dst)
pq.write_table(pq.read_table(sys.argv[5]).slice(0, int(sys.argv[7])), sys.argv[6])
PY
# The news chunks as embedflow cuts them, for the Python peers.
"$EMBEDFLOW_BIN" embed "$work/news.parquet" "$work/chunks-embedded.parquet" --model "$model" \
  --text-template '{title}\n\n{text}' --id-column article_id --columns article_id \
  --progress off -q || [[ $? == 2 ]]
"$py" - "$work/chunks-embedded.parquet" "$work/chunks.parquet" <<'PY'
import sys, pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1], columns=["chunk_text"])
pq.write_table(pa.table({"id": list(range(t.num_rows)), "text": t.column("chunk_text")}), sys.argv[2])
PY

# run PEER CORPUS OUT: one whole process; prints "seconds peak_mib"
run() {
  local peer=$1 corpus=$2 out=$3
  local cmd
  case $peer in
    embedflow*)
      local m=$model extra=()
      case $peer in
        embedflow-1) extra=(--workers 1) ;;
        embedflow-q=*) m=${peer#embedflow-q=} ;;
      esac
      cmd=("$EMBEDFLOW_BIN" --progress off --summary json "${extra[@]}" embed "$work/$corpus.parquet" "$out"
        --model "$m" --text-column text --columns id --chunking none --max-seq-length 256 --on-empty embed) ;;
    user | tuned | fastembed) cmd=("$py" benches/peers.py "$peer" --model "$model" --input "$work/$corpus.parquet"
      --output "$out" --max-len 256) ;;
  esac
  "$py" benches/peak_rss.py "${cmd[@]}" >"$work/run.out" 2>&1 || { cat "$work/run.out" >&2; return 1; }
  if [[ $peer == embedflow ]]; then
    "$py" -c 'import json,sys
for l in open(sys.argv[1]):
    if l.startswith("{"): print(json.loads(l)["tokens"], file=open(sys.argv[2], "w"))' "$work/run.out" "$work/tokens-$corpus"
  fi
  awk '/command took/ { gsub("s,", "", $3); print $3, $6 }' "$work/run.out"
}

peers=(embedflow embedflow-1 user tuned)
# QUANTIZED="DIR ...": embedflow with these (int8) model folders too.
for q in ${QUANTIZED:-}; do peers+=("embedflow-q=$q"); done
declare -A best_s best_m
for r in $(seq "$rounds"); do
  for corpus in texts chunks; do
    for peer in "${peers[@]}"; do
      read -r s m < <(run "$peer" "$corpus" "$work/out.parquet")
      echo "round $r $corpus $peer: ${s}s ${m} MiB"
      k="$corpus/$peer"
      if [[ -z ${best_s[$k]:-} ]] || python3 -c "import sys; sys.exit(0 if $s < ${best_s[$k]} else 1)"; then best_s[$k]=$s; fi
      if [[ -z ${best_m[$k]:-} ]] || ((m > best_m[$k])); then best_m[$k]=$m; fi
    done
  done
done
if [[ ${FASTEMBED:-0} == 1 ]]; then
  read -r s m < <(run fastembed texts "$work/out.parquet")
  echo "fastembed texts: ${s}s ${m} MiB"
  best_s[texts/fastembed]=$s
  best_m[texts/fastembed]=$m
  peers+=(fastembed)
fi

echo
echo "| corpus | peer | wall (best of $rounds) | texts/s | tokens/s | peak RSS (max) | vs user | vs tuned |"
echo "|---|---|---|---|---|---|---|---|"
for corpus in texts chunks; do
  n=$("$py" -c "import pyarrow.parquet as pq,sys; print(pq.read_metadata(sys.argv[1]).num_rows)" "$work/$corpus.parquet")
  tok=$(cat "$work/tokens-$corpus")
  for peer in "${peers[@]}"; do
    k="$corpus/$peer"
    [[ -n ${best_s[$k]:-} ]] || continue
    python3 - "$corpus" "$peer" "${best_s[$k]}" "${best_m[$k]}" "$n" "$tok" "${best_s[$corpus/user]}" "${best_s[$corpus/tuned]}" <<'PY'
import sys
c, p, s, m, n, tok, user, tuned = sys.argv[1:]
s, n, tok, user, tuned = float(s), int(n), int(tok), float(user), float(tuned)
print(f"| {c} | {p} | {s:.2f} s | {n/s:.0f} | {tok/s:.0f} | {m} MiB | {user/s:.2f}x | {tuned/s:.2f}x |")
PY
  done
done

echo
echo "fidelity against sentence-transformers (../shared/reference/texts.jsonl, 200 texts):"
for peer in "${peers[@]}"; do
  run "$peer" ref "$work/ref-${peer//\//_}.parquet" >/dev/null
  printf '  %-10s ' "$peer"
  "$py" benches/peers.py check --input "$work/ref-${peer//\//_}.parquet" --reference "$shared/reference/embeddings.npy"
done

# FLOPs: all-MiniLM-L6-v2 has 6 layers of 4·384² (attention projections)
# + 2·384·1536 (feed-forward) weights: 2 FLOPs per weight per token, plus
# attention scores and mixing (4·L·384 per layer per token, L the padded
# length, taken as the corpus' mean tokens per text). Peak: 2 cores × fp32
# FLOPs per cycle × the max clock lscpu reports (else the clock
# /proc/cpuinfo reports). FLOPs per cycle: 64 where AVX-512 runs on two
# 512-bit FMA units (Intel Xeon, AMD Zen 5: family 26), 32 where it runs on
# two 256-bit ones (AMD Zen 4: family 25) or with AVX2 only, 16 on AMD Zen 1
# (family 23 below model 0x30: 128-bit FMA units). A VM may hide
# both the clock and the core (QEMU's generic "AMD EPYC" is family 23 on any
# host), so the roof that counts is measured too: ONNX Runtime's own fp32
# GEMM on both threads in MiniLM's feed-forward shape (benches/gemm_roof.py).
ghz=$(lscpu | awk -F: '/CPU max MHz/ { printf "%.2f", $2/1000 }')
[[ -n $ghz ]] || ghz=$(awk -F: '/^cpu MHz/ { printf "%.2f", $2/1000; exit }' /proc/cpuinfo)
vendor=$(awk -F': ' '/^vendor_id/ { print $2; exit }' /proc/cpuinfo)
family=$(awk -F': ' '/^cpu family/ { print $2; exit }' /proc/cpuinfo)
cpu_model=$(awk -F': ' '/^model\t/ { print $2; exit }' /proc/cpuinfo)
flops_per_cycle=32
if [[ $vendor == AuthenticAMD ]] && ((family == 23 && cpu_model < 48)); then
  flops_per_cycle=16
fi
if grep -qw avx512f /proc/cpuinfo && { [[ $vendor == GenuineIntel ]] || ((family >= 26)); }; then
  flops_per_cycle=64
fi
echo "peak: $vendor family $family, $flops_per_cycle fp32 FLOPs a cycle a core at $ghz GHz"
roof=$("$py" benches/gemm_roof.py --threads 2)
echo "measured roof: ONNX Runtime fp32 GEMM [4096,384]x[384,1536] on 2 threads, $roof GFLOP/s"
for corpus in texts chunks; do
  n=$("$py" -c "import pyarrow.parquet as pq,sys; print(pq.read_metadata(sys.argv[1]).num_rows)" "$work/$corpus.parquet")
  python3 - "$corpus" "$(cat "$work/tokens-$corpus")" "$n" "${best_s[$corpus/embedflow]}" "$ghz" "$flops_per_cycle" "$roof" "${best_s[$corpus/user]}" <<'PY'
import sys
c, tok, n, s, ghz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5] or 0)
per_cycle, roof, user = int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
L = tok / n
per_token = 6 * (2 * (4 * 384 * 384 + 2 * 384 * 1536) + 4 * L * 384)
g = tok * per_token / s / 1e9
peak = 2 * per_cycle * ghz
print(f"{c}: {tok} tokens, {L:.0f} per text: embedflow {g:.0f} GFLOP/s" +
      (f" = {g / peak:.2f} of the 2 cores' nominal fp32 peak ({peak:.0f} GFLOP/s at {ghz} GHz)" if peak else "") +
      f"; {g / roof:.2f} of the measured GEMM roof; the user Python {g * s / user / roof:.2f} of it," +
      f" so fp32 at the roof would be {roof / (g * s / user):.2f}x the user Python at most")
PY
done
