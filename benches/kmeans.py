#!/usr/bin/env python3
"""k-means side by side (benches/kmeans.sh drives it): test data, the
scikit-learn and faiss runs from the same starting centres for the same
number of iterations, and one inertia computation for every tool's centres.

  kmeans.py gen OUT.npy --n N --d D [--seed S]      mixture of 256 Gaussian blobs, unit rows
  kmeans.py init X.npy OUT.npy --k K [--seed S]     k distinct rows of X
  kmeans.py sklearn X.npy INIT.npy --iters 20 --out CENTRES.npy
  kmeans.py faiss   X.npy INIT.npy --iters 20 --out CENTRES.npy
  kmeans.py inertia X.npy CENTRES.npy               sum of squared distances to the nearest centre
  kmeans.py ari LABELLED.parquet --label outlet --cluster cluster_id
"""
import argparse
import json
import resource
import sys
import time

import numpy as np


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--n", type=int)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out")
    ap.add_argument("--label")
    ap.add_argument("--cluster")
    a = ap.parse_args()

    if a.cmd == "gen":
        rng = np.random.default_rng(a.seed)
        centres = rng.standard_normal((256, a.d), dtype=np.float32)
        x = np.empty((a.n, a.d), dtype=np.float32)
        step = 100_000
        for s in range(0, a.n, step):
            m = min(step, a.n - s)
            lab = rng.integers(0, 256, m)
            x[s:s + m] = centres[lab] + 1.5 * rng.standard_normal((m, a.d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(a.paths[0], x)
    elif a.cmd == "init":
        x = np.load(a.paths[0], mmap_mode="r")
        idx = np.random.default_rng(a.seed).choice(x.shape[0], a.k, replace=False)
        np.save(a.paths[1], np.ascontiguousarray(x[np.sort(idx)]))
    elif a.cmd in ("sklearn", "faiss"):
        x = np.load(a.paths[0])
        c = np.load(a.paths[1])
        n, d = x.shape
        k = c.shape[0]
        t = time.perf_counter()
        if a.cmd == "sklearn":
            from sklearn.cluster import KMeans
            m = KMeans(n_clusters=k, init=c, n_init=1, max_iter=a.iters, tol=0.0, algorithm="lloyd").fit(x)
            centres, iters, threads = m.cluster_centers_.astype(np.float32), int(m.n_iter_), None
        else:
            import faiss
            km = faiss.Kmeans(d, k, niter=a.iters, nredo=1, verbose=False, seed=1,
                              max_points_per_centroid=n, min_points_per_centroid=1)
            km.train(x, init_centroids=c)
            centres, iters, threads = km.centroids, a.iters, faiss.omp_get_max_threads()
        secs = time.perf_counter() - t
        np.save(a.out, centres)
        flops = 2.0 * n * k * d * (iters + 1)
        print(json.dumps({"tool": "scikit-learn" if a.cmd == "sklearn" else "faiss", "n": n, "d": d, "k": k,
                          "seconds": round(secs, 4), "iterations": iters, "gflops": round(flops / secs / 1e9, 2),
                          "peak_rss_mib": round(rss_mib()), "threads": threads}))
    elif a.cmd == "inertia":
        import faiss
        x = np.load(a.paths[0])
        c = np.load(a.paths[1]).astype(np.float32)
        index = faiss.IndexFlatL2(c.shape[1])
        index.add(c)
        dist, _ = index.search(x, 1)
        print(float(dist.astype(np.float64).sum()))
    elif a.cmd == "ari":
        import pyarrow.parquet as pq
        from sklearn.metrics import adjusted_rand_score
        t = pq.read_table(a.paths[0], columns=[a.label, a.cluster])
        print(adjusted_rand_score(t.column(a.label).to_pylist(), t.column(a.cluster).to_pylist()))
    else:
        sys.exit(f"unknown command {a.cmd}")


if __name__ == "__main__":
    main()
