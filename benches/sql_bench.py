#!/usr/bin/env python3
"""Helpers for benches/sql.sh: vectors to Parquet, and the numpy / faiss
baselines for top-k search and exact neighbors.

  sql_bench.py parquet X.npy OUT.parquet [--rows N]
  sql_bench.py topk X.npy Q.npy --k 10           numpy brute force: seconds, rows/s
  sql_bench.py faiss-neighbors X.npy --rows N --k 20 --out IDS.npy
  sql_bench.py faiss-search X.npy --rows N --queries Q --k 20 --out IDS.npy
                                                  the first Q rows against the first N
  sql_bench.py agree IDS.npy OURS.parquet --k 20  share of identical neighbor lists
"""
import argparse
import json
import time

import numpy as np


def flat_index(x):
    """x normalised in place, in a faiss IndexFlatIP."""
    import faiss
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out")
    ap.add_argument("--queries", type=int)
    a = ap.parse_args()
    if a.cmd == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        x = np.load(a.paths[0], mmap_mode="r")
        n = a.rows or x.shape[0]
        d = x.shape[1]
        w = None
        for s in range(0, n, 100_000):
            e = min(n, s + 100_000)
            vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(x[s:e]).ravel(), pa.float32()), d)
            t = pa.table({"id": pa.array(np.arange(s, e, dtype=np.int64)), "embedding": vec})
            if w is None:
                w = pq.ParquetWriter(a.paths[1], t.schema, compression="zstd")
            w.write_table(t, row_group_size=8192)
        w.close()
    elif a.cmd == "topk":
        x = np.load(a.paths[0])
        q = np.load(a.paths[1]).reshape(-1)
        t = time.perf_counter()
        s = x @ q / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
        top = np.argpartition(-s, a.k)[: a.k]
        top = top[np.argsort(-s[top])]
        secs = time.perf_counter() - t
        print(json.dumps({"tool": "numpy (in memory)", "seconds": secs, "rows_per_s": len(x) / secs,
                          "top": top.tolist()}))
    elif a.cmd == "faiss-neighbors":
        x = np.ascontiguousarray(np.load(a.paths[0], mmap_mode="r")[: a.rows]).astype(np.float32)
        t = time.perf_counter()
        index = flat_index(x)
        _, ids = index.search(x, a.k + 1)
        secs = time.perf_counter() - t
        # Drop each row itself from its own list.
        out = np.array([[j for j in row if j != i][: a.k] for i, row in enumerate(ids)], dtype=np.int64)
        np.save(a.out, out)
        print(json.dumps({"tool": "faiss IndexFlatIP", "rows": len(x), "seconds": secs, "rows_per_s": len(x) / secs}))
    elif a.cmd == "faiss-search":
        x = np.ascontiguousarray(np.load(a.paths[0], mmap_mode="r")[: a.rows]).astype(np.float32)
        t = time.perf_counter()
        index = flat_index(x)
        _, ids = index.search(x[: a.queries], a.k)
        secs = time.perf_counter() - t
        np.save(a.out, ids.astype(np.int64))
        print(json.dumps({"tool": "faiss IndexFlatIP", "rows": len(x), "queries": a.queries,
                          "seconds": secs, "queries_per_s": a.queries / secs}))
    elif a.cmd == "agree":
        import pyarrow.parquet as pq
        ref = np.load(a.paths[0])
        ours = pq.read_table(a.paths[1], columns=["neighbor_ids"]).column(0).to_pylist()
        same = sum(1 for r, o in zip(ref.tolist(), ours) if r == o)
        sets = sum(1 for r, o in zip(ref.tolist(), ours) if set(r) == set(o))
        print(json.dumps({"rows": len(ours), "identical_lists": same / len(ours), "identical_sets": sets / len(ours)}))


if __name__ == "__main__":
    main()
