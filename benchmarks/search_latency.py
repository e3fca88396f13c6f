"""Search latency of the index against float32 exact search with numpy, same data.

Runs on the fastest kernel backend (``QUANTSEARCH_KERNEL=numpy`` gives the numpy baseline).

Random unit vectors (N x dim); the index keeps binary codes in RAM and an int8 tier memory-mapped.
Prints the median over several runs of: one query (ms), a batch of queries (queries/s), for the
Hamming stage alone, binary -> int8 rescoring at the default oversampling, and numpy float32
brute force (``queries @ docs.T`` + argpartition), with ratios.

    python benchmarks/search_latency.py [--n 1000000] [--dim 384] [--batch 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import median_seconds

from quantsearch import Index
from quantsearch.kernels import get_backend, get_num_threads


def float32_topk(docs: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ docs.T
    return np.argpartition(-sims, k - 1, axis=1)[:, :k]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[rng.choice(args.n, args.batch, replace=False)] + 0.05 * rng.standard_normal(
        (args.batch, args.dim), dtype=np.float32
    )
    one = queries[:1]
    print(f"N={args.n:,} dim={args.dim} k={args.k} batch={args.batch}, median of {args.runs} runs")
    print(f"kernels: {get_backend()}, {get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        index = Index.build(Path(tmp) / "idx", docs, batch_size=250_000)
        print(f"built in {time.perf_counter() - t0:.1f} s")
        rows = [
            ("float32 exact (numpy)", lambda q: float32_topk(docs, q, args.k)),
            ("binary Hamming only", lambda q: index.search(q, args.k, stages=(), with_payload=False)),
            (
                f"binary x{index.default_oversampling:g} -> int8",
                lambda q: index.search(q, args.k, with_payload=False),
            ),
        ]
        results = []
        for name, fn in rows:
            single = median_seconds(lambda fn=fn: fn(one), args.runs)
            batch = median_seconds(lambda fn=fn: fn(queries), args.runs)
            results.append((name, single, args.batch / batch))
        index.close()
    base_single, base_qps = results[0][1], results[0][2]
    print(f"{'config':<26} {'1 query ms':>10} {'speed-up':>8} {'batch QPS':>10} {'speed-up':>8}")
    for name, single, qps in results:
        speedup, qps_ratio = base_single / single, qps / base_qps
        print(f"{name:<26} {single * 1e3:>10.2f} {speedup:>7.2f}x {qps:>10.1f} {qps_ratio:>7.2f}x")


if __name__ == "__main__":
    main()
