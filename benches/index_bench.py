#!/usr/bin/env python3
"""Helpers for benches/index.sh: data sets, faiss side by side, recall.

A data set is a folder with table.parquet (id, embedding), queries.parquet
(held-out rows, never in the table) and sample.parquet (rows of the table,
for all-items neighbors), all unit vectors.

  index_bench.py tweets EMBEDDED.parquet DIR           the tweets, 1,000 held out
  index_bench.py realish EMBEDDED.parquet DIR --n N    the tweets repeated with noise to N rows
  index_bench.py random DIR --n N                      256 Gaussian blobs (benches/kmeans.py's)
  index_bench.py exact DIR --k 10                      exact neighbours of queries and sample (faiss flat)
  index_bench.py faiss DIR --nlist L [--hnsw]          IVFFlat (and HNSW) recall and time by nprobe / efSearch
  index_bench.py faiss-all DIR --nlist L --nprobe P    every row's neighbours with IVFFlat at P
  index_bench.py recall OURS.parquet DIR --of queries|sample
"""
import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

K = 10


def unit(x):
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def write(path, x, first_id=0):
    d = x.shape[1]
    w = None
    for s in range(0, len(x), 100_000):
        e = min(len(x), s + 100_000)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(x[s:e]).ravel(), pa.float32()), d)
        t = pa.table({"id": pa.array(np.arange(first_id + s, first_id + e, dtype=np.int64)), "embedding": vec})
        if w is None:
            # With a page index, as embedflow writes its tables: reading a
            # few rows by position then reads only their pages.
            w = pq.ParquetWriter(path, t.schema, compression="zstd", write_page_index=True)
        w.write_table(t, row_group_size=8192)
    w.close()


def read(path):
    t = pq.read_table(path, columns=["embedding"])
    col = t.column("embedding").combine_chunks()
    d = col.type.list_size if hasattr(col.type, "list_size") else len(col[0])
    x = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, d)
    return None, unit(np.array(x, dtype=np.float32, copy=True))


def finish(dirname, table, queries, seed):
    """table.parquet, queries.parquet (ids from 10^9) and 1,000 sample rows."""
    os.makedirs(dirname, exist_ok=True)
    write(f"{dirname}/table.parquet", table)
    write(f"{dirname}/queries.parquet", queries, first_id=1_000_000_000)
    rng = np.random.default_rng(seed + 7)
    pick = np.sort(rng.choice(len(table), 1000, replace=False))
    t = pa.table({"id": pa.array(pick.astype(np.int64))})
    pq.write_table(t, f"{dirname}/sample_ids.parquet")
    write(f"{dirname}/sample.parquet", table[pick])
    print(json.dumps({"rows": len(table), "queries": len(queries), "dim": table.shape[1]}))


def finish_streamed(dirname, n, draw, seed):
    """finish() for a table drawn 100,000 rows at a time, never all in memory."""
    os.makedirs(dirname, exist_ok=True)
    pick = np.sort(np.random.default_rng(seed + 7).choice(n, 1000, replace=False))
    picked = []
    w = None
    for s in range(0, n, 100_000):
        x = draw(min(100_000, n - s))
        e = s + len(x)
        picked.append(x[pick[(pick >= s) & (pick < e)] - s])
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), x.shape[1])
        t = pa.table({"id": pa.array(np.arange(s, e, dtype=np.int64)), "embedding": vec})
        if w is None:
            w = pq.ParquetWriter(f"{dirname}/table.parquet", t.schema, compression="zstd",
                                 write_page_index=True)
        w.write_table(t, row_group_size=8192)
    w.close()
    write(f"{dirname}/queries.parquet", draw(1000), first_id=1_000_000_000)
    pq.write_table(pa.table({"id": pa.array(pick.astype(np.int64))}), f"{dirname}/sample_ids.parquet")
    write(f"{dirname}/sample.parquet", np.concatenate(picked))
    print(json.dumps({"rows": n, "queries": 1000, "dim": 384}))


def exact_streamed(dirname):
    """The exact neighbours of the queries and the sample rows, the table
    read a batch at a time (numpy products; for tables too big for faiss
    flat in this machine's memory)."""
    _, q = read(f"{dirname}/queries.parquet")
    _, s = read(f"{dirname}/sample.parquet")
    sample = pq.read_table(f"{dirname}/sample_ids.parquet").column("id").to_numpy()
    both = np.concatenate([q, s])
    best_s = np.full((len(both), K + 1), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(both), K + 1), dtype=np.int64)
    t = time.perf_counter()
    first = 0
    f = pq.ParquetFile(f"{dirname}/table.parquet")
    groups = list(range(f.num_row_groups))
    for g in range(0, len(groups), 8):
        col = f.read_row_groups(groups[g:g + 8], columns=["embedding"]).column(0).combine_chunks()
        x = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)
        x = unit(np.array(x, dtype=np.float32))
        del col
        sc = both @ x.T
        top = np.argpartition(sc, -(K + 1), axis=1)[:, -(K + 1):]
        cand_s = np.concatenate([best_s, np.take_along_axis(sc, top, 1)], axis=1)
        cand_i = np.concatenate([best_i, top + first], axis=1)
        keep = np.argsort(-cand_s, axis=1)[:, :K + 1]
        best_s = np.take_along_axis(cand_s, keep, 1)
        best_i = np.take_along_axis(cand_i, keep, 1)
        first += len(x)
    np.save(f"{dirname}/exact_queries.npy", best_i[:len(q), :K])
    own = [[j for j in row if j != i][:K] for i, row in zip(sample, best_i[len(q):])]
    np.save(f"{dirname}/exact_sample.npy", np.array(own, dtype=np.int64))
    print(json.dumps({"tool": "numpy, streamed", "rows": first, "seconds": time.perf_counter() - t}))


def flat(x):
    import faiss
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nlist", type=int)
    ap.add_argument("--nprobe", type=int)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--hnsw", action="store_true")
    ap.add_argument("--of", default="queries")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    if a.cmd in ("tweets", "realish"):
        _, x = read(a.paths[0])
        held = rng.choice(len(x), 1000, replace=False)
        queries = x[held]
        base = np.delete(x, held, axis=0)
        if a.cmd == "tweets":
            return finish(a.paths[1], base, queries, a.seed)
        # Noise as large as the gap to a row's 10th neighbour: copies of a
        # tweet are near it, not each other's whole top 10.
        s10 = flat(base).search(base[:2000], K + 1)[0][:, K]
        target = float(np.median(s10))
        sigma = np.sqrt((1 / target**2 - 1) / base.shape[1])
        copies = [base]
        while sum(len(c) for c in copies) < a.n:
            noise = rng.standard_normal(base.shape, dtype=np.float32) * sigma
            copies.append(unit(base + noise))
        table = np.concatenate(copies)[: a.n]
        print(json.dumps({"median_10th_neighbour_cosine": target, "noise_sigma": float(sigma),
                          "copies": len(copies)}))
        return finish(a.paths[1], table, queries, a.seed)
    if a.cmd == "random":
        d = 384
        centres = rng.standard_normal((256, d), dtype=np.float32)
        def draw(m):
            lab = rng.integers(0, 256, m)
            return unit(centres[lab] + 1.5 * rng.standard_normal((m, d), dtype=np.float32))
        if a.n <= 2_000_000:
            table = np.concatenate([draw(min(100_000, a.n - s)) for s in range(0, a.n, 100_000)])
            return finish(a.paths[0], table, draw(1000), a.seed)
        # Past 2M rows the table is written as drawn (10M x 384 is 15 GB),
        # the same rows as above would be.
        return finish_streamed(a.paths[0], a.n, draw, a.seed)
    dirname = a.paths[0] if a.paths else None
    if a.cmd == "exact" and pq.ParquetFile(f"{dirname}/table.parquet").metadata.num_rows > 2_000_000:
        exact_streamed(dirname)
    elif a.cmd == "exact":
        _, x = read(f"{dirname}/table.parquet")
        _, q = read(f"{dirname}/queries.parquet")
        sample = pq.read_table(f"{dirname}/sample_ids.parquet").column("id").to_numpy()
        index = flat(x)
        t = time.perf_counter()
        _, ids = index.search(q, K)
        secs = time.perf_counter() - t
        np.save(f"{dirname}/exact_queries.npy", ids)
        _, ids = index.search(x[sample], K + 1)
        own = [[j for j in row if j != i][:K] for i, row in zip(sample, ids)]
        np.save(f"{dirname}/exact_sample.npy", np.array(own, dtype=np.int64))
        print(json.dumps({"tool": "faiss IndexFlatIP", "queries": len(q), "seconds": secs}))
    elif a.cmd == "faiss":
        import faiss
        _, x = read(f"{dirname}/table.parquet")
        _, q = read(f"{dirname}/queries.parquet")
        exact = np.load(f"{dirname}/exact_queries.npy")
        def recall(ids):
            return float(np.mean([len(set(r) & set(e)) / K for r, e in zip(ids, exact)]))
        def timed_search(index, setting):
            t = time.perf_counter()
            _, ids = index.search(q, K)
            batch = time.perf_counter() - t
            lat = []
            for i in range(200):
                t = time.perf_counter()
                index.search(q[i:i + 1], K)
                lat.append(time.perf_counter() - t)
            return {**setting, "recall": recall(ids), "batch_seconds": batch,
                    "p50_ms": 1000 * float(np.percentile(lat, 50)),
                    "p99_ms": 1000 * float(np.percentile(lat, 99))}
        t = time.perf_counter()
        quantizer = faiss.IndexFlatIP(x.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, x.shape[1], a.nlist, faiss.METRIC_INNER_PRODUCT)
        train = x[rng.choice(len(x), min(len(x), 64 * a.nlist), replace=False)]
        ivf.train(train)
        ivf.add(x)
        build = time.perf_counter() - t
        print(json.dumps({"tool": "faiss IndexIVFFlat", "nlist": a.nlist, "build_seconds": build}))
        for nprobe in [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]:
            if nprobe > a.nlist:
                break
            ivf.nprobe = nprobe
            r = timed_search(ivf, {"tool": "faiss IndexIVFFlat", "nprobe": nprobe})
            print(json.dumps(r), flush=True)
            if r["recall"] >= a.target:
                break
        if a.hnsw:
            t = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.add(x)
            build = time.perf_counter() - t
            print(json.dumps({"tool": "faiss IndexHNSWFlat", "M": 32, "build_seconds": build}))
            for ef in [16, 32, 64, 128, 256, 512]:
                hnsw.hnsw.efSearch = ef
                r = timed_search(hnsw, {"tool": "faiss IndexHNSWFlat", "efSearch": ef})
                print(json.dumps(r), flush=True)
                if r["recall"] >= a.target:
                    break
    elif a.cmd == "faiss-all":
        import faiss
        _, x = read(f"{dirname}/table.parquet")
        sample = pq.read_table(f"{dirname}/sample_ids.parquet").column("id").to_numpy()
        exact = np.load(f"{dirname}/exact_sample.npy")
        t = time.perf_counter()
        quantizer = faiss.IndexFlatIP(x.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, x.shape[1], a.nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(x[rng.choice(len(x), min(len(x), 64 * a.nlist), replace=False)])
        ivf.add(x)
        build = time.perf_counter() - t
        ivf.nprobe = a.nprobe
        t = time.perf_counter()
        _, ids = ivf.search(x, K + 1)
        secs = time.perf_counter() - t
        own = [[j for j in ids[i] if j != i][:K] for i in sample]
        r = float(np.mean([len(set(o) & set(e)) / K for o, e in zip(own, exact)]))
        print(json.dumps({"tool": "faiss IndexIVFFlat, every row", "nlist": a.nlist, "nprobe": a.nprobe,
                          "build_seconds": build, "search_seconds": secs, "recall_sample": r}))
    elif a.cmd == "recall":
        out = pq.read_table(a.paths[0])
        dirname = a.paths[1]
        if a.of == "sample":
            # Only the sample's rows (a 10M-row output is too big a list).
            sample_ids = pq.read_table(f"{dirname}/sample_ids.parquet").column("id")
            out = out.filter(pc.is_in(out.column("id"), value_set=sample_ids))
        ids = out.column("id").to_numpy()
        got = out.column("neighbor_ids").to_pylist()
        if a.of == "queries":
            exact = np.load(f"{dirname}/exact_queries.npy")
            rows = range(len(exact))
        else:
            exact = np.load(f"{dirname}/exact_sample.npy")
            sample = pq.read_table(f"{dirname}/sample_ids.parquet").column("id").to_numpy()
            where = {int(v): i for i, v in enumerate(ids)}
            rows = [where[int(s)] for s in sample]
        r = float(np.mean([len(set(got[i]) & set(e.tolist())) / K for i, e in zip(rows, exact)]))
        print(json.dumps({"recall_at_10": r, "of": a.of, "rows": len(exact)}))


if __name__ == "__main__":
    main()
