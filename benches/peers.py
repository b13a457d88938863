#!/usr/bin/env python3
"""The peers of benches/peers.sh, each a whole process: read a Parquet file
(id, text), embed the texts with all-MiniLM-L6-v2, write a Parquet file
(id, embedding as fixed_size_list<float32>[384]).

  user       the Python a user writes: the same model.onnx and ONNX Runtime
             release, `tokenizers`, batches of 32 sorted by character length
             as sentence-transformers does, numpy mean pooling + normalise.
  tuned      hand-tuned Python: sorted by token length, packed under a
             padded-token budget (rows x longest <= --budget), as embedflow
             does.
  fastembed  fastembed's TextEmbedding on the same local model folder, its
             defaults (batch 256; it truncates at 512, not at the model's
             max_seq_length 256).
  check      min and mean cosine of a vectors file against a reference .npy
             (row i of the .npy is id i).
"""
import argparse, os, sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["user", "tuned", "fastembed", "check"])
p.add_argument("--model")
p.add_argument("--input")
p.add_argument("--output")
p.add_argument("--max-len", type=int, default=256)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--budget", type=int, default=1024)
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--reference")
a = p.parse_args()


def write(ids, vectors):
    dim = vectors.shape[1]
    flat = pa.array(vectors.astype(np.float32).ravel(), pa.float32())
    emb = pa.FixedSizeListArray.from_arrays(flat, dim)
    pq.write_table(pa.table({"id": ids, "embedding": emb}), a.output)


if a.mode == "check":
    t = pq.read_table(a.input)
    ids = t.column("id").to_numpy()
    v = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float64)
    ref = np.load(a.reference).astype(np.float64)[ids]
    keep = np.linalg.norm(ref, axis=1) > 0
    v, ref = v[keep], ref[keep]
    cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"min cosine {cos.min():.7f} mean {cos.mean():.7f} (row {ids[keep][cos.argmin()]}, {keep.sum()} rows)")
    sys.exit(0)

table = pq.read_table(a.input, columns=["id", "text"])
ids = table.column("id")
texts = [t or "" for t in table.column("text").to_pylist()]
del table

if a.mode == "fastembed":
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    TextEmbedding.add_custom_model(
        model="local/all-MiniLM-L6-v2",
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf="local/all-MiniLM-L6-v2"),
        dim=384,
        model_file="model.onnx",
    )
    m = TextEmbedding("local/all-MiniLM-L6-v2", specific_model_path=a.model, threads=a.threads)
    write(ids, np.stack(list(m.embed(texts))))
    sys.exit(0)

import onnxruntime as ort
from tokenizers import Tokenizer

tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
tok.enable_truncation(a.max_len)
tok.no_padding()
so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
sess = ort.InferenceSession(os.path.join(a.model, "model.onnx"), so, providers=["CPUExecutionProvider"])
names = {i.name for i in sess.get_inputs()}


def embed(enc):
    L = max(len(e.ids) for e in enc)
    ids_ = np.zeros((len(enc), L), dtype=np.int64)
    mask = np.zeros((len(enc), L), dtype=np.int64)
    for r, e in enumerate(enc):
        ids_[r, : len(e.ids)] = e.ids
        mask[r, : len(e.ids)] = 1
    feed = {"input_ids": ids_, "attention_mask": mask}
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.zeros_like(ids_)
    h = sess.run(None, feed)[0]
    m = mask[:, :, None].astype(np.float32)
    v = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


out = np.zeros((len(texts), 384), dtype=np.float32)
if a.mode == "user":
    order = np.argsort([-len(t) for t in texts], kind="stable")
    for s in range(0, len(texts), a.batch):
        idx = order[s : s + a.batch]
        out[idx] = embed(tok.encode_batch([texts[i] for i in idx]))
else:
    enc = tok.encode_batch(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(enc[i].ids))
    batch, longest = [], 0
    for i in order + [None]:
        n = 0 if i is None else max(len(enc[i].ids), 1)
        if batch and (i is None or (len(batch) + 1) * max(longest, n) > a.budget):
            out[batch] = embed([enc[j] for j in batch])
            batch, longest = [], 0
        if i is not None:
            batch.append(i)
            longest = max(longest, n)
write(ids, out)
