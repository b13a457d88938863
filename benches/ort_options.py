#!/usr/bin/env python3
"""Which ONNX Runtime CPU session options matter (issue 17)? The texts of
bench_texts.jsonl through all-MiniLM-L6-v2 with the same release of ONNX
Runtime that embedflow loads, batched as embedflow batches them (sorted by
token length, padded-token budget), once per variant of the session options,
variants interleaved within each round so that machine noise hits them
alike. Prints each variant's best seconds and its ratio to the defaults.
With --graph NAME=DIR (repeated): the same for model folders (fp32 against
int8 variants), the first one the base.

The last three variants run batches at once (what embed.workers does):
several single-thread sessions, or one session called from several threads.

  benches/ort_options.py --model DIR --texts bench_texts.jsonl [--rounds 3]
"""
import argparse, json, os, time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--texts", required=True)
p.add_argument("--budget", type=int, default=1024)
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--graph", action="append", default=[], metavar="NAME=MODEL_DIR",
               help="compare these model folders' graphs (default options) instead of the options")
a = p.parse_args()

texts = [json.loads(l) for l in open(a.texts, encoding="utf-8")]
tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
tok.enable_truncation(256)
tok.no_padding()
enc = tok.encode_batch(texts)
order = sorted(range(len(enc)), key=lambda i: -len(enc[i].ids))
batches, cur, longest = [], [], 0
for i in order:
    n = len(enc[i].ids)
    if cur and (len(cur) + 1) * max(longest, n) > a.budget:
        batches.append(cur)
        cur, longest = [], 0
    cur.append(i)
    longest = max(longest, n)
batches.append(cur)
feeds = []
for b in batches:
    L = max(len(enc[i].ids) for i in b)
    ids = np.zeros((len(b), L), dtype=np.int64)
    mask = np.zeros((len(b), L), dtype=np.int64)
    for r, i in enumerate(b):
        ids[r, : len(enc[i].ids)] = enc[i].ids
        mask[r, : len(enc[i].ids)] = 1
    feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})


def session(path=None, **kw):
    so = ort.SessionOptions()
    so.intra_op_num_threads = kw.pop("threads", a.threads)
    so.graph_optimization_level = kw.pop("level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.enable_cpu_mem_arena = kw.pop("arena", True)
    so.enable_mem_pattern = kw.pop("pattern", True)
    for k, v in kw.items():
        so.add_session_config_entry(k, v)
    return ort.InferenceSession(os.path.join(path or a.model, "model.onnx"), so, providers=["CPUExecutionProvider"])


def sequential(s):
    return lambda fs: [s.run(None, f) for f in fs]


def concurrent(sessions):
    """Batches at once: each calling thread takes the next batch and runs it
    on its session (a session may be shared: ONNX Runtime runs are
    thread-safe)."""
    from concurrent.futures import ThreadPoolExecutor
    from itertools import count

    def run(fs):
        nxt = count()
        def worker(s):
            for k in iter(lambda: next(nxt), None):
                if k >= len(fs):
                    return
                s.run(None, fs[k])
        with ThreadPoolExecutor(len(sessions)) as pool:
            list(pool.map(worker, sessions))
    return run


graphs = {g.split("=", 1)[0]: sequential(session(g.split("=", 1)[1])) for g in a.graph}
one = dict(threads=1)
shared = session(**one) if not graphs else None
variants = graphs or {
    "defaults (as embedflow: level 3, arena, pattern, spinning)": sequential(session()),
    "no intra-op spinning": sequential(session(**{"session.intra_op.allow_spinning": "0"})),
    "no memory arena": sequential(session(arena=False)),
    "no memory pattern": sequential(session(pattern=False)),
    "optimisation level 2 (extended)": sequential(session(level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)),
    "optimisation level 1 (basic)": sequential(session(level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)),
    "dynamic block base 4": sequential(session(**{"session.dynamic_block_base": "4"})),
    "1 thread (one core's rate)": sequential(session(**one)),
    f"{a.threads} sessions x 1 thread, batches at once": concurrent([session(**one) for _ in range(a.threads)]),
    f"1 session x 1 thread, {a.threads} batches at once": concurrent([shared] * a.threads),
}
best = {k: float("inf") for k in variants}
for run in variants.values():  # warm-up
    run(feeds[:4])
for r in range(a.rounds):
    for k, run in variants.items():
        t = time.perf_counter()
        run(feeds)
        best[k] = min(best[k], time.perf_counter() - t)
        print(f"round {r} {k}: {best[k]:.2f}s", flush=True)
base = best[next(iter(variants))]
print(f"{len(texts)} texts, {len(batches)} batches of <= {a.budget} padded tokens, {a.threads} threads, best of {a.rounds}:")
for k, s in best.items():
    print(f"  {k:62s} {s:6.2f} s  {base / s:5.3f}x")
