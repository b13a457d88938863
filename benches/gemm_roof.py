"""The fp32 GEMM roof of this machine as ONNX Runtime reaches it (issue 17).

A nominal peak (cores x FLOPs a cycle x clock) depends on a clock a VM may
not report and on how wide the FMA units really are; this measures instead
what ONNX Runtime's own fp32 GEMM (MLAS) does on the machine, in the shapes
an embedding model runs: MiniLM's feed-forward up projection
([M, 384] x [384, 1536]) over M = 4,096 tokens, on THREADS threads in one
session, best of ROUNDS. Prints one line: "<GFLOP/s>".

Usage: python gemm_roof.py [--threads 2] [--rounds 20] [--m 4096] [--k 384] [--n 1536]
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--rounds", type=int, default=20)
p.add_argument("--m", type=int, default=4096)
p.add_argument("--k", type=int, default=384)
p.add_argument("--n", type=int, default=1536)
a = p.parse_args()

rng = np.random.default_rng(0)
w = rng.standard_normal((a.k, a.n), dtype=np.float32) * 0.02
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["y"])],
    "gemm",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", a.k])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", a.n])],
    [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.tobytes(), raw=True)],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
x = rng.standard_normal((a.m, a.k), dtype=np.float32)
sess.run(None, {"x": x})
best = float("inf")
for _ in range(a.rounds):
    t = time.perf_counter()
    sess.run(None, {"x": x})
    best = min(best, time.perf_counter() - t)
print(f"{2 * a.m * a.k * a.n / best / 1e9:.1f}")
