#!/usr/bin/env bash
# sgemm candidates for the exact kernels (k-means, neighbours, IVF lists):
# matrixmultiply as embedflow builds it, matrixmultiply with its AVX-512
# kernels (the `avx512` feature, Rust >= 1.89), the gemm crate, and numpy's
# BLAS (OpenBLAS, as faiss-cpu bundles) on the same shapes, in one run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
venv=$EMBEDFLOW_HOME/bench-venv
if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.4.6
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; AVX-512: $(grep -c avx512f /proc/cpuinfo | head -1 | sed 's/^0$/no/;s/^[1-9].*/yes/')"
manifest=benches/sgemm/Cargo.toml
target=$CARGO_TARGET_DIR/sgemm-bench
cargo build --quiet --release --manifest-path "$manifest" --target-dir "$target/plain"
cargo build --quiet --release --manifest-path "$manifest" --target-dir "$target/avx512" --features avx512
"$target/plain/release/sgemm-bench"
"$target/avx512/release/sgemm-bench" | grep -o 'threads.*matrixmultiply+avx512 [0-9.]* GFLOP/s' | sed 's/^/  with AVX-512: /'
"$venv/bin/python" - <<'PY'
import time, numpy as np, os
for m, k, n in [(4096, 384, 1000), (2048, 384, 4096), (2048, 384, 1000)]:
    x = np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)
    c = np.random.default_rng(1).standard_normal((n, k), dtype=np.float32)
    best = min((lambda t: (x @ c.T, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
    print(f"{m}x{k}x{n}: numpy (its BLAS, all cores) {2 * m * k * n / best / 1e9:.1f} GFLOP/s")
PY
