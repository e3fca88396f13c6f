"""Candidate scans of every code family against exact float32 search, one query at a time.

For N random unit vectors of 384 dimensions (MiniLM's width), each family is fitted on 2,000 of
them and encodes all N; then single queries run through each family's ``scan_topk`` (the candidate
stage of an Index: Hamming for sign bits, the bit-plane popcount kernel for RaBitQ, nibble tables
(``nibble_topk``, fast-scan style) for int2 / int2-itq / ternary in both layouts, decode + matmul
for the block formats) and through
exact float32 search (faiss IndexFlatIP, and numpy: one BLAS matvec + argpartition), all on one
thread, the engines alternating query by query. Figures: median ms per query, and each family's
ratio to the 1-bit Hamming scan and to float32 exact (faiss).

    OPENBLAS_NUM_THREADS=1 python benchmarks/code_scans.py [--n 5000 20000 100000] [--queries 30] [--cpu-time]

``--cpu-time`` times each call by the calling thread's CPU time (``time.thread_time``) instead of the
wall clock: on a loaded machine a scan longer than a scheduler slice waits for a core, which the
wall clock counts and CPU time does not (every engine here runs on the calling thread).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from quantsearch.kernels import get_backend, hamming_topk, set_num_threads  # noqa: E402
from quantsearch.quantization import make_quantizer  # noqa: E402

FAMILIES = ("rabitq", "int2", "int2-itq", "ternary", "ternary-planes", "q8_0", "q4_0")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("-k", type=int, default=100, help="candidates per query (the candidate stage's k)")
    parser.add_argument("--cpu-time", action="store_true", help="time by the thread's CPU time")
    args = parser.parse_args()
    clock = time.thread_time if args.cpu_time else time.perf_counter
    import faiss

    faiss.omp_set_num_threads(1)
    set_num_threads(1)
    dim = 384
    print(
        f"code_scans.py: dim {dim}, k={args.k}, backend {get_backend()}, 1 thread, "
        f"{'CPU time' if args.cpu_time else 'wall clock'}, load {os.getloadavg()}"
    )
    for n in args.n:
        rng = np.random.default_rng(n)
        x = rng.standard_normal((n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        queries = x[: args.queries] + 0.05 * rng.standard_normal((args.queries, dim)).astype(np.float32)
        k = min(args.k, n)
        flat = faiss.IndexFlatIP(dim)
        flat.add(x)
        signs = np.packbits(x > 0, axis=1)
        engines: dict[str, Callable[[np.ndarray], object]] = {
            "float32 faiss": lambda q, flat=flat, k=k: flat.search(q, k),
            "float32 numpy": lambda q, x=x, k=k: np.argpartition(-(x @ q[0]), k - 1)[:k],
            "hamming 1-bit": lambda q, signs=signs, k=k: hamming_topk(np.packbits(q > 0, axis=1), signs, k),
        }
        for name in FAMILIES:
            quantizer = make_quantizer(name).fit(x[:2000])
            codes = quantizer.encode(x)
            engines[name] = lambda q, quantizer=quantizer, codes=codes, k=k: quantizer.scan_topk(q, codes, k)
        for fn in engines.values():
            fn(queries[:1])
        times: dict[str, list[float]] = {name: [] for name in engines}
        for i in range(args.queries):
            for name, fn in engines.items():
                t0 = clock()
                fn(queries[i : i + 1])
                times[name].append(clock() - t0)
        ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        print(f"\nN = {n:,} (load {os.getloadavg()[0]:.2f})")
        print(f"  {'engine':<16} {'ms/query':>9} {'vs 1-bit':>9} {'vs float32':>10}")
        for name, value in ms.items():
            print(
                f"  {name:<16} {value:>9.3f} {value / ms['hamming 1-bit']:>8.1f}x "
                f"{ms['float32 faiss'] / value:>9.1f}x faster"
            )


if __name__ == "__main__":
    main()
