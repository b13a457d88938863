#!/usr/bin/env python3
"""Data for benches/index_update.sh: a table of N distinct texts made from
the health tweets (each tweet followed by three words drawn from the
corpus, seeded), 1,000 held-out texts as queries, one percent of the rows
changed, and recall@10 of one `neighbors` output against another.

  make TWEETS N TABLE QUERIES    texts for the table and the queries
  change TABLE OUT --fraction F  F/2 of the rows edited, F/4 deleted, F/4 new
  recall GOT EXACT               recall@10 of GOT's neighbour ids
"""
import argparse
import random

import pyarrow as pa
import pyarrow.parquet as pq


def texts(tweets, n, seed):
    rows = pq.read_table(tweets, columns=["text"]).column("text").to_pylist()
    rows = [t for t in rows if t]
    words = sorted({w for t in rows[:5000] for w in t.split() if w.isalpha() and len(w) > 3})
    rng = random.Random(seed)
    return [f"{rows[i % len(rows)]} {' '.join(rng.sample(words, 3))}" for i in range(n)]


def write(path, ids, texts):
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "text": texts}), path)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("tweets")
    m.add_argument("n", type=int)
    m.add_argument("table")
    m.add_argument("queries")
    c = sub.add_parser("change")
    c.add_argument("table")
    c.add_argument("out")
    c.add_argument("--fraction", type=float, default=0.01)
    r = sub.add_parser("recall")
    r.add_argument("got")
    r.add_argument("exact")
    a = ap.parse_args()
    if a.cmd == "make":
        all_texts = texts(a.tweets, a.n + 1000, seed=7)
        write(a.table, list(range(a.n)), all_texts[: a.n])
        write(a.queries, list(range(a.n, a.n + 1000)), all_texts[a.n :])
    elif a.cmd == "change":
        t = pq.read_table(a.table)
        ids, txt = t.column("id").to_pylist(), t.column("text").to_pylist()
        rng = random.Random(11)
        k = int(len(ids) * a.fraction)
        picked = rng.sample(range(len(ids)), k)
        edited, gone = picked[: k // 2], set(picked[k // 2 : 3 * k // 4])
        for i in edited:
            txt[i] = f"{txt[i]} (edited)"
        keep = [i for i in range(len(ids)) if i not in gone]
        new_ids = [ids[i] for i in keep] + [max(ids) + 1 + j for j in range(k - 3 * k // 4)]
        new_txt = [txt[i] for i in keep] + [f"new: {txt[j]}" for j in range(k - 3 * k // 4)]
        write(a.out, new_ids, new_txt)
        print(f"{len(edited)} rows edited, {len(gone)} deleted, {k - 3 * k // 4} new of {len(ids)}")
    else:
        got = pq.read_table(a.got, columns=["id", "neighbor_ids"]).to_pydict()
        exact = pq.read_table(a.exact, columns=["id", "neighbor_ids"]).to_pydict()
        by_id = dict(zip(got["id"], got["neighbor_ids"]))
        hits = total = 0
        for i, e in zip(exact["id"], exact["neighbor_ids"]):
            hits += len(set(e) & set(by_id[i]))
            total += len(e)
        print(f"recall@10 {hits / total:.4f} over {len(exact['id'])} queries")


if __name__ == "__main__":
    main()
