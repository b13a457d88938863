#!/usr/bin/env bash
# embedflow against the Python a user writes with the official `openai`
# client (benches/remote_client.py: AsyncOpenAI, batches of 512,
# asyncio.gather of CONCURRENCY), both embedding the same Parquet file
# into Parquet through the same local OpenAI-compatible server
# (scripts/embedding-server: llama.cpp's, all-MiniLM-L6-v2), interleaved
# in each round; and the server's own ceiling: its throughput with 32
# clients in flight (the Python client at concurrency 32, nothing
# written). Reports rows/s, the client's own CPU seconds per million
# tokens (the server is shared; the client's cost is ours), best of ROUNDS.
#
# Then pacing: embedflow with embed.tokens_per_minute set to PACE_SHARE of
# the server's measured ceiling, through a limiter that enforces that very
# limit as OpenAI does (benches/limit_proxy.py), for about PACE_SECONDS;
# reports the share of the limit used and the 429s the limiter answered.
#
# Usage: benches/remote.sh [ROUNDS] [ROWS]
#   CONCURRENCY (8), PACE_SECONDS (300), PACE_SHARE (0.5), EMBEDFLOW_BIN
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/lib.sh
source scripts/env.sh
scripts/setup >/dev/null
rounds=${1:-3}
rows=${2:-5000}
conc=${CONCURRENCY:-8}
pace_seconds=${PACE_SECONDS:-300}
pace_share=${PACE_SHARE:-0.5}
work=$(mktemp -d)
if [[ -z ${EMBEDFLOW_BIN:-} ]]; then
  cargo build --release --locked --quiet --bin embedflow
  EMBEDFLOW_BIN=$CARGO_TARGET_DIR/release/embedflow
fi
venv=$EMBEDFLOW_HOME/remote-bench-venv
want="openai==3.63.0 numpy==2.4.6 pyarrow==26.0.1"
if [[ ! -x $venv/bin/python || $(cat "$venv/.want" 2>/dev/null) != "$want" ]]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install --quiet $want && echo "$want" >"$venv/.want" ||
    die "pip install $want failed (above)" "check that pip reaches its index"
fi
py=$venv/bin/python
exports=$(scripts/embedding-server) || die "the embedding server did not start (above)" "run scripts/embedding-server to see why"
eval "$exports"
trap 'kill "$EMBEDFLOW_TEST_EMBED_PID" 2>/dev/null || true; rm -rf "$work"' EXIT
export OPENAI_API_KEY=$EMBEDFLOW_TEST_EMBED_KEY
url=$EMBEDFLOW_TEST_EMBED_URL model=$EMBEDFLOW_TEST_EMBED_MODEL
minilm=$root/../shared/models/all-MiniLM-L6-v2
"$py" - "$root/../shared/data/health_tweets.parquet" "$work/in.parquet" "$rows" <<'PY'
import sys, pyarrow.parquet as pq, pyarrow.compute as pc
t = pq.read_table(sys.argv[1])
t = t.filter(pc.invert(pc.is_null(t["text"]))).slice(0, int(sys.argv[3]))
pq.write_table(t.select(["tweet_id", "text"]), sys.argv[2])
PY
# embedflow ARGS...: one run; prints the same JSON line as remote_client.py.
embedflow_run() {
  "$py" - "$EMBEDFLOW_BIN" "$@" <<'PY'
import json, resource, subprocess, sys, time
t = time.perf_counter()
out = subprocess.run(sys.argv[1:] + ["--progress", "off", "--summary", "json"],
                     check=True, capture_output=True, text=True).stdout
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
s = json.loads(out)
print(json.dumps({"rows": s["rows_embedded"], "tokens": s["api"]["tokens_billed"],
                  "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
                  "requests": s["api"]["requests"], "seconds": s["seconds"]}))
PY
}
ef_args=(embed "$work/in.parquet" "$work/ef.parquet" --provider openai --model "$model"
  --base-url "$url" --tokenizer "$minilm" --text-column text --id-column tweet_id
  --chunking none --normalize true --max-batch-rows 512 --concurrency "$conc"
  --set model.max_input_tokens=256)
declare -A best
keep() { # keep NAME JSON
  best[$1]=$("$py" -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2] or 'null'); print(json.dumps(a if b is None or a['wall']<b['wall'] else b))" "$2" "${best[$1]:-}")
}
for r in $(seq "$rounds"); do
  line=$(embedflow_run "${ef_args[@]}"); echo "round $r embedflow $line"; keep embedflow "$line"
  line=$("$py" benches/remote_client.py "$work/in.parquet" "$work/py.parquet" "$url" "$model" "$conc")
  echo "round $r python   $line"; keep python "$line"
  line=$("$py" benches/remote_client.py "$work/in.parquet" "$work/ceil.parquet" "$url" "$model" 32)
  echo "round $r ceiling  $line"; keep ceiling "$line"
done
echo
echo "best of $rounds, $rows tweets, concurrency $conc ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; the server shares them)"
printf '%-10s %9s %9s %10s %16s\n' client wall rows/s tokens "CPU s/M tokens"
for k in embedflow python ceiling; do
  "$py" -c "import json,sys; b=json.loads(sys.argv[2]); print(f\"{sys.argv[1]:<10} {b['wall']:8.2f}s {b['rows']/b['wall']:9.1f} {b['tokens']:10d} {b['cpu']/b['tokens']*1e6:16.2f}\")" "$k" "${best[$k]}"
done
"$py" -c "
import json,sys
e,p,c=(json.loads(x) for x in sys.argv[1:4])
print(f'embedflow / python rows/s: {p[\"wall\"]/e[\"wall\"]:.3f}x; embedflow / ceiling: {c[\"wall\"]/e[\"wall\"]:.3f}x; client CPU per token, embedflow / python: {(e[\"cpu\"]/e[\"tokens\"])/(p[\"cpu\"]/p[\"tokens\"]):.3f}')
" "${best[embedflow]}" "${best[python]}" "${best[ceiling]}"

# Pacing: a limit under the server's ceiling, enough rows for PACE_SECONDS.
ceiling_tpm=$("$py" -c "import json,sys; b=json.loads(sys.argv[1]); print(int(b['tokens']/b['wall']*60))" "${best[ceiling]}")
limit=$("$py" -c "print(int($ceiling_tpm * $pace_share))")
per_row=$("$py" -c "import json,sys; b=json.loads(sys.argv[1]); print(b['tokens']/b['rows'])" "${best[embedflow]}")
pace_rows=$("$py" -c "print(int($limit / 60 * $pace_seconds / $per_row))")
"$py" - "$root/../shared/data/health_tweets.parquet" "$work/pace.parquet" "$pace_rows" <<'PY'
import sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc
t = pq.read_table(sys.argv[1]); t = t.filter(pc.invert(pc.is_null(t["text"]))).select(["tweet_id", "text"])
n = int(sys.argv[3]); reps = n // t.num_rows + 1
t = pa.concat_tables([t] * reps).slice(0, n)
t = t.set_column(0, "tweet_id", pa.array(range(n), pa.int64()))
pq.write_table(t, sys.argv[2])
PY
# In front of the server, a limiter as OpenAI's (benches/limit_proxy.py: a
# bucket of `limit` tokens refilled at `limit` a minute, 429 when empty).
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$py" benches/limit_proxy.py "$proxy_port" "$url" "$limit" "$work/limits.json" &
proxy_pid=$!
trap 'kill "$EMBEDFLOW_TEST_EMBED_PID" "$proxy_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1
line=$(embedflow_run embed "$work/pace.parquet" "$work/pace_out.parquet" --provider openai --model "$model" \
  --base-url "http://127.0.0.1:$proxy_port/v1" --tokenizer "$minilm" --text-column text --id-column tweet_id --chunking none \
  --concurrency "$conc" --set model.max_input_tokens=256 --set "embed.tokens_per_minute=$limit")
echo "limiter: $(cat "$work/limits.json") (limited = 429s answered)"
"$py" -c "
import json,sys
b=json.loads(sys.argv[1]); limit=int(sys.argv[2])
used=b['tokens']/b['seconds']*60
print(f'pacing: tokens_per_minute = {limit} (ceiling {int(sys.argv[3])}); {b[\"rows\"]} rows, {b[\"tokens\"]} tokens in {b[\"seconds\"]:.0f} s: {used:.0f} tokens/min, {used/limit:.1%} of the limit')
" "$line" "$limit" "$ceiling_tpm"
