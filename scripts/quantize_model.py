"""The Python half of scripts/quantize-model: an int8 variant of a
sentence-transformers ONNX folder with ONNX Runtime's quantization tools,
and the quality gate, printed and written to quantization.json beside the
graph (embedflow records that file in every output's lineage).

Modes:
  dynamic  weights int8 per channel, activations quantized per batch at run
           time (MatMulInteger; VNNI on this CPU).
  static   QDQ: weights int8 per channel, activation ranges calibrated on
           real texts (--calibration, a Parquet file with a text column).
  nbits    weight-only MatMulNBits (--bits 8 or 4, symmetric, blocks of
           --block-size along K); with --accuracy-level 4 ONNX Runtime
           computes in int8, quantizing activations per block of K at run
           time (finer than dynamic's one scale per tensor).
--nbits-nodes REGEX (dynamic): the MatMuls whose names match get nbits
           (per --bits, --block-size, --accuracy-level) instead of dynamic
           int8: the sensitive ones finer, the rest as fast as dynamic.
--exclude REGEX keeps the MatMul nodes whose names match in fp32 (e.g.
'/output/dense/' for each layer's feed-forward down projection).

Gate: min and mean cosine of int8 against fp32 on --gate-texts (JSON lines),
and, on --gate-chunks (Parquet, chunk_text), the mean share of each chunk's
top-10 cosine neighbours (itself left out) that int8 keeps, and the share of
chunks whose nearest neighbour is unchanged.
"""
import argparse, json, os, re, shutil, sys, tempfile, time

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow.parquet as pq
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_dynamic, quantize_static)
from tokenizers import Tokenizer

p = argparse.ArgumentParser()
p.add_argument("src")
p.add_argument("dst")
p.add_argument("--mode", choices=["dynamic", "static", "nbits"], default="dynamic")
p.add_argument("--bits", type=int, choices=[4, 8], default=8)
p.add_argument("--block-size", type=int, default=32)
p.add_argument("--accuracy-level", type=int, choices=[0, 1, 2, 3, 4], default=4)
p.add_argument("--exclude", default="", help="regex of MatMul node names kept in fp32")
p.add_argument("--nbits-nodes", default="", help="dynamic mode: regex of MatMul node names given nbits instead")
p.add_argument("--calibration", help="Parquet file whose text column calibrates static ranges")
p.add_argument("--calibration-column", default="chunk_text")
p.add_argument("--calibration-rows", type=int, default=256)
p.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="percentile")
p.add_argument("--gate-texts", required=True)
p.add_argument("--gate-chunks", required=True)
p.add_argument("--max-len", type=int, default=256)
a = p.parse_args()

tok = Tokenizer.from_file(os.path.join(a.src, "tokenizer.json"))
tok.enable_truncation(a.max_len)
tok.no_padding()


def feeds(texts, names):
    enc = tok.encode_batch(texts)
    L = max(1, max(len(e.ids) for e in enc))
    ids = np.zeros((len(enc), L), dtype=np.int64)
    mask = np.zeros((len(enc), L), dtype=np.int64)
    for r, e in enumerate(enc):
        ids[r, : len(e.ids)] = e.ids
        mask[r, : len(e.ids)] = 1
    f = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        f["token_type_ids"] = np.zeros_like(ids)
    return f


def embed(path, texts, batch=16):
    so = ort.SessionOptions()
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), 0), dtype=np.float32)
    parts = {}
    for b in range(0, len(texts), batch):
        idx = order[b : b + batch]
        f = feeds([texts[i] for i in idx], names)
        h = s.run(None, f)[0]
        m = f["attention_mask"][:, :, None].astype(np.float32)
        v = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        for i, row in zip(idx, v):
            parts[i] = row
    out = np.stack([parts[i] for i in range(len(texts))])
    n = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.clip(n, 1e-12, None)


src_graph = os.path.join(a.src, "model.onnx")
model = onnx.load(src_graph)
matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
# Only MatMuls with a weight (an initializer) are worth int8; the attention
# score products of two activations stay fp32 under dynamic quantization.
inits = {i.name for i in model.graph.initializer}
weighted = [n.name for n in model.graph.node if n.op_type == "MatMul" and any(x in inits for x in n.input)]
excluded = [n for n in matmuls if a.exclude and re.search(a.exclude, n)]
finer = [n for n in weighted if a.nbits_nodes and re.search(a.nbits_nodes, n) and n not in excluded]
if finer and a.mode != "dynamic":
    sys.exit("quantize-model: --nbits-nodes goes with --mode dynamic")
os.makedirs(a.dst, exist_ok=True)
for f in os.listdir(a.src):
    if f in ("model.onnx", "onnx", "quantization.json"):
        continue
    s = os.path.join(a.src, f)
    (shutil.copytree if os.path.isdir(s) else shutil.copy2)(s, os.path.join(a.dst, f), **({"dirs_exist_ok": True} if os.path.isdir(s) else {}))
dst_graph = os.path.join(a.dst, "model.onnx")
tmp = dst_graph + ".part"
started = time.time()


def nbits(graph, out, include=None):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(graph, bits=a.bits, block_size=a.block_size, is_symmetric=True,
                             accuracy_level=a.accuracy_level, nodes_to_exclude=excluded,
                             nodes_to_include=include, op_types_to_quantize=("MatMul",))
    q.process()
    q.model.save_model_to_file(out, use_external_data_format=False)


if a.mode == "dynamic":
    quantize_dynamic(src_graph, tmp, per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded + finer)
    if finer:
        nbits(onnx.load(tmp), tmp, include=finer)
elif a.mode == "nbits":
    nbits(model, tmp)
else:
    if not a.calibration:
        sys.exit("quantize-model: --mode static needs --calibration FILE.parquet")
    texts = [t for t in pq.read_table(a.calibration, columns=[a.calibration_column])
             .column(0).to_pylist() if t][: a.calibration_rows]
    names = {i.name for i in model.graph.input}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([feeds(texts[i : i + 8], names) for i in range(0, len(texts), 8)])

        def get_next(self):
            return next(self.batches, None)

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[a.method]
    # The QDQ graph quantizes the weighted MatMuls' inputs; the scores
    # products (two activations) stay fp32.
    quantize_static(src_graph, tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"],
                    nodes_to_exclude=excluded + [n for n in matmuls if n not in weighted],
                    calibrate_method=method,
                    extra_options={"CalibPercentile": 99.999, "WeightSymmetric": True,
                                   "ActivationSymmetric": False})
os.replace(tmp, dst_graph)
seconds = time.time() - started

gate_texts = [json.loads(l) for l in open(a.gate_texts, encoding="utf-8")]
chunks = [t or "" for t in pq.read_table(a.gate_chunks, columns=["chunk_text"]).column(0).to_pylist()]
f32, i8 = embed(src_graph, gate_texts), embed(dst_graph, gate_texts)
keep = np.linalg.norm(f32, axis=1) > 0
cos = (f32[keep] * i8[keep]).sum(1)
c32, c8 = embed(src_graph, chunks), embed(dst_graph, chunks)


def top(v, k=10):
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


t32, t8 = top(c32), top(c8)
overlap = float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(t32, t8)]))
top1 = float(np.mean(t32[:, 0] == t8[:, 0]))
ccos = (c32 * c8).sum(1)
gate = {
    "texts": os.path.basename(a.gate_texts),
    "min_cosine": round(float(cos.min()), 6),
    "mean_cosine": round(float(cos.mean()), 6),
    "chunks": len(chunks),
    "chunks_mean_cosine": round(float(ccos.mean()), 6),
    "top10_overlap": round(overlap, 4),
    "top1_same": round(top1, 4),
}
activations = {"dynamic": "uint8, per batch at run time" + (
                   f"; int8 per block of {a.block_size} for the nbits MatMuls" if finer else ""),
               "nbits": f"int8 per block of {a.block_size} at run time (accuracy_level {a.accuracy_level})"
               if a.accuracy_level == 4 else f"fp32 (accuracy_level {a.accuracy_level})",
               "static": f"uint8, calibrated ({a.method}) on {a.calibration_rows} texts"}[a.mode]
info = {
    "precision": f"int{a.bits}" if a.mode == "nbits" else "int8",
    "mode": a.mode,
    "per_channel": a.mode != "nbits",
    "weights": f"int{a.bits} symmetric, blocks of {a.block_size}" if a.mode == "nbits" else "int8 symmetric",
    "activations": activations,
    "fp32_matmuls": excluded,
    "nbits_matmuls": finer,
    "source_graph": src_graph,
    "onnxruntime": ort.__version__,
    "gate": gate,
}
with open(os.path.join(a.dst, "quantization.json"), "w") as fh:
    json.dump(info, fh, indent=1)
print(f"quantize-model: wrote {dst_graph} ({os.path.getsize(dst_graph) / 1e6:.1f} MB, {a.mode}, "
      f"{len(excluded)} MatMuls kept fp32, {len(finer)} nbits) in {seconds:.1f} s")
print("quantize-model: gate: " + json.dumps(gate))
