"""A random-weight model of a bigger size class, for speed curves only.

The batch-budget curve (benches/batch_curve.sh) should cover more than
MiniLM's 384 dims, but the shared models stop there. This rewrites
all-MiniLM-L6-v2's graph to hidden size HIDDEN (12 heads of HIDDEN/12) and
feed-forward size 4 x HIDDEN, the shape of mpnet-base / bge-base
(768, 3,072) when HIDDEN is 768, keeping its 6 layers, tokenizer and
pooling. The weights are random (normal, std 0.02; LayerNorm 1 and 0): the
vectors mean nothing, the cost per token is that of the size class.

Usage: python wide_model.py SRC_DIR OUT_DIR [--hidden 768]
(needs onnx and numpy: scripts/quantize-model's venv has both)
"""

import argparse
import json
import pathlib
import shutil

import numpy as np
import onnx
from onnx import numpy_helper

p = argparse.ArgumentParser()
p.add_argument("src")
p.add_argument("out")
p.add_argument("--hidden", type=int, default=768)
a = p.parse_args()
src, out = pathlib.Path(a.src), pathlib.Path(a.out)
old_h, old_ff, heads = 384, 1536, 12
new_h, new_ff = a.hidden, 4 * a.hidden
if new_h % heads:
    raise SystemExit(f"--hidden {new_h} is not a multiple of {heads} heads")
old_head, new_head = old_h // heads, new_h // heads
resize = {old_h: new_h, old_ff: new_ff}

m = onnx.load(src / "model.onnx")
rng = np.random.default_rng(0)
for i, init in enumerate(m.graph.initializer):
    if init.data_type != onnx.TensorProto.FLOAT:
        continue
    dims = [resize.get(d, d) for d in init.dims]
    if dims == list(init.dims):
        continue
    if len(dims) == 1:
        value = np.ones(dims, np.float32) if "LayerNorm.weight" in init.name else np.zeros(dims, np.float32)
    else:
        value = (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float32)
    m.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, init.name))
changed = 0
for node in m.graph.node:
    if node.op_type != "Constant":
        continue
    t = node.attribute[0].t
    v = numpy_helper.to_array(t)
    if v.dtype == np.int64 and v.shape == (1,) and v[0] == old_head:
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([new_head], np.int64), t.name))
        changed += 1
    elif v.dtype == np.float32 and v.shape == () and abs(v - old_head**-0.5) < 1e-6:
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(new_head**-0.5, np.float32), t.name))
        changed += 1
# Drop stale shape annotations of intermediate values.
del m.graph.value_info[:]
for o in m.graph.output:
    dims = o.type.tensor_type.shape.dim
    if dims and dims[-1].HasField("dim_value"):
        dims[-1].dim_value = resize.get(dims[-1].dim_value, dims[-1].dim_value)
onnx.checker.check_model(m)
out.mkdir(parents=True, exist_ok=True)
for f in src.rglob("*"):
    if f.is_file() and f.name != "model.onnx":
        dst = out / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
        dst.chmod(0o644)
onnx.save(m, out / "model.onnx")
cfg = json.loads((src / "config.json").read_text())
cfg.update(hidden_size=new_h, intermediate_size=new_ff)
(out / "config.json").write_text(json.dumps(cfg, indent=2))
pool = out / "1_Pooling" / "config.json"
pc = json.loads(pool.read_text())
pc["word_embedding_dimension"] = new_h
pool.write_text(json.dumps(pc, indent=2))
print(f"{out}: hidden {new_h}, feed-forward {new_ff}, {heads} heads of {new_head}, {changed} constants rewritten")
