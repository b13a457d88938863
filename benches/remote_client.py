"""The Python a user writes to embed a Parquet file through an
OpenAI-compatible API with the official `openai` client: AsyncOpenAI,
batches of BATCH texts, CONCURRENCY requests in flight (asyncio.gather
under a semaphore), vectors written back to Parquet beside the input.

Prints one JSON line: rows, tokens (the server's usage), wall seconds and
this process's own CPU seconds (user + system).

    python remote_client.py IN.parquet OUT.parquet BASE_URL MODEL CONCURRENCY [BATCH]
The key is read from OPENAI_API_KEY, as the client does.
"""
import asyncio
import json
import resource
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from openai import AsyncOpenAI


async def main(src, dst, base_url, model, concurrency, batch):
    table = pq.read_table(src)
    texts = [t for t in table.column("text").to_pylist()]
    client = AsyncOpenAI(base_url=base_url, max_retries=6, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(start):
        nonlocal tokens
        async with gate:
            r = await client.embeddings.create(model=model, input=texts[start:start + batch])
        tokens += r.usage.prompt_tokens if r.usage else 0
        return start, [d.embedding for d in sorted(r.data, key=lambda d: d.index)]

    parts = await asyncio.gather(*(one(s) for s in range(0, len(texts), batch)))
    vectors = [v for _, vs in sorted(parts) for v in vs]
    x = np.asarray(vectors, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dim = x.shape[1]
    col = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)
    pq.write_table(table.append_column("embedding", col), dst, compression="zstd")
    await client.close()
    return len(texts), tokens


if __name__ == "__main__":
    src, dst, base_url, model, conc = sys.argv[1:6]
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 512
    t = time.perf_counter()
    rows, tokens = asyncio.run(main(src, dst, base_url, model, int(conc), batch))
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rows": rows, "tokens": tokens, "wall": wall,
                      "cpu": ru.ru_utime + ru.ru_stime}))
