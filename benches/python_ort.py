#!/usr/bin/env python3
"""The plain Python way, for a side-by-side ratio: the same texts, the same
model.onnx, the same ONNX Runtime release and thread count, tokenized with the
`tokenizers` package, batched as sentence-transformers does (sorted by
character length, 32 per batch, padded to the longest), mean-pooled and
normalised with numpy. Prints sentences/s, tokens/s and peak RSS."""
import argparse, json, os, resource, time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--texts", required=True)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--max-len", type=int, default=256)
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--threads", type=int, default=os.cpu_count())
a = p.parse_args()

texts = [json.loads(l) for l in open(a.texts, encoding="utf-8")]
tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
tok.enable_truncation(a.max_len)
tok.no_padding()
so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
sess = ort.InferenceSession(os.path.join(a.model, "model.onnx"), so, providers=["CPUExecutionProvider"])
names = {i.name for i in sess.get_inputs()}

def run():
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), 384), dtype=np.float32)
    ntok = 0
    for s in range(0, len(texts), a.batch):
        idx = order[s:s + a.batch]
        enc = tok.encode_batch([texts[i] for i in idx])
        L = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), L), dtype=np.int64)
        mask = np.zeros((len(enc), L), dtype=np.int64)
        for r, e in enumerate(enc):
            ids[r, :len(e.ids)] = e.ids
            mask[r, :len(e.ids)] = 1
            ntok += len(e.ids)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        h = sess.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        v = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        v /= np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)
        out[idx] = v
    return out, ntok

run()  # warm-up
best = float("inf")
for r in range(a.rounds):
    t = time.perf_counter()
    _, ntok = run()
    s = time.perf_counter() - t
    best = min(best, s)
    print(f"round {r} python onnxruntime {s:.2f}s  {len(texts)/s:.1f} sentences/s  {ntok/s:.0f} tokens/s")
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"best: python onnxruntime {len(texts)/best:.1f} sentences/s ({ntok/best:.0f} tokens/s); peak RSS {rss:.0f} MiB")
