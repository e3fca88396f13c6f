"""Speed of the asymmetric scan (float query x 1-bit codes, ``planes_topk``) in one run, next to
the Hamming scan of the same codes and float dot products over the same rows.

Random 1-bit codes (one plane) of 384 and 1024 bits, N rows (default 1M), top-10, the same rows for
every engine; the float engines score the rows as float32 0/1 vectors (n x d float32: 1.5 / 4 GB):

- ``planes_topk`` with 8-bit and 4-bit query levels (popcount estimate) and exact float weights;
- ``hamming_topk`` with packed query codes;
- faiss ``IndexFlatIP`` and numpy (``rows @ w.T`` + argpartition) over the float32 rows.

One query: median over ``--latency-queries`` single-query calls (5 for the float engines); batch
of ``--batch`` queries: median of ``--runs`` calls after a warm-up (at most 3 for the exact
mode and the float engines). Ratios are time over the time of
``planes_topk`` (8-bit levels) in the same setting. All engines run on ``--threads`` threads (default:
every core). The machine may be shared: the load average is printed at the start and end.

    python benchmarks/asym_kernel.py [--n 1000000] [--batch 100] [--runs 5] [--threads T] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _timing import median_seconds

from quantsearch.kernels import get_backend, get_num_threads, hamming_topk, planes_topk, set_num_threads


def latency_ms(fn: Callable[[int], object], count: int) -> float:
    """Median of ``count`` single-query calls ``fn(i)`` after one warm-up call, in ms."""
    fn(0)
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def report(out: dict[str, Any], bits: int, name: str) -> None:
    one, batch = out[f"{bits}/{name}/one_ms"], out[f"{bits}/{name}/batch_ms"]
    print(f"  {name:<28} one {one:8.2f} ms   batch {batch:9.1f} ms", flush=True)


def numpy_topk(rows: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    scores = rows @ weights.T  # (n, nq)
    top = np.argpartition(-scores, k - 1, axis=0)[:k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=0), axis=0), axis=0).T


def section(args: argparse.Namespace, bits: int, out: dict[str, Any]) -> None:
    import faiss

    rng = np.random.default_rng(bits)
    k, nb = args.k, bits // 8
    codes = rng.integers(0, 256, (args.n, nb), dtype=np.uint8)
    weights = rng.standard_normal((max(args.batch, args.latency_queries), bits)).astype(np.float32)
    packed = np.packbits(weights > 0, axis=1)  # the sign codes of the queries, for the Hamming scan
    batch_w, batch_q = weights[: args.batch], packed[: args.batch]
    print(f"\n[{bits} bits, N={args.n:,}] {load()}", flush=True)

    engines: dict[str, tuple[Callable[[int], object], Callable[[], object]]] = {
        "planes_topk, 8-bit query": (
            lambda i: planes_topk(weights[i : i + 1], codes, k),
            lambda: planes_topk(batch_w, codes, k),
        ),
        "planes_topk, 4-bit query": (
            lambda i: planes_topk(weights[i : i + 1], codes, k, query_bits=4),
            lambda: planes_topk(batch_w, codes, k, query_bits=4),
        ),
        "planes_topk, exact float": (
            lambda i: planes_topk(weights[i : i + 1], codes, k, query_bits=None),
            lambda: planes_topk(batch_w, codes, k, query_bits=None),
        ),
        "hamming_topk": (
            lambda i: hamming_topk(packed[i : i + 1], codes, k),
            lambda: hamming_topk(batch_q, codes, k),
        ),
    }
    for name, (one, batch) in engines.items():
        out[f"{bits}/{name}/one_ms"] = latency_ms(one, args.latency_queries)
        runs = min(args.runs, 3) if "exact" in name else args.runs  # the slow scalar path
        out[f"{bits}/{name}/batch_ms"] = median_seconds(batch, runs) * 1e3
        report(out, bits, name)

    exact_rows = planes_topk(batch_w, codes, k, query_bits=None)[1]
    for bits_q in (8, 4):
        got = planes_topk(batch_w, codes, k, query_bits=bits_q)[1]
        hits = sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), exact_rows.tolist(), strict=True))
        out[f"{bits}/recall_at_{k}_of_{bits_q}bit_vs_exact"] = hits / exact_rows.size

    rows = np.unpackbits(codes, axis=1).astype(np.float32)  # the same rows as float32 0/1 vectors
    flat = faiss.IndexFlatIP(bits)
    flat.add(rows)
    _, faiss_rows = flat.search(batch_w, k)
    top1 = float(np.mean(faiss_rows[:, 0] == exact_rows[:, 0]))
    out[f"{bits}/exact_top1_agrees_with_faiss"] = top1
    float_engines: dict[str, tuple[Callable[[int], object], Callable[[], object]]] = {
        "faiss IndexFlatIP float32": (
            lambda i: flat.search(weights[i : i + 1], k),
            lambda: flat.search(batch_w, k),
        ),
        "numpy float32 matmul": (
            lambda i: numpy_topk(rows, weights[i : i + 1], k),
            lambda: numpy_topk(rows, batch_w, k),
        ),
    }
    for name, (one, batch) in float_engines.items():
        out[f"{bits}/{name}/one_ms"] = latency_ms(one, 5)
        out[f"{bits}/{name}/batch_ms"] = median_seconds(batch, min(args.runs, 3)) * 1e3
        report(out, bits, name)
    flat.reset()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="code rows (default 1M)")
    parser.add_argument("--batch", type=int, default=100, help="queries of the batched runs")
    parser.add_argument("--latency-queries", type=int, default=20, help="queries timed one by one")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5, help="timed batch calls per figure (median)")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads of every engine (default: all cores)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as a flat JSON object")
    args = parser.parse_args()
    import faiss

    if args.threads:
        set_num_threads(args.threads)
    threads = get_num_threads()
    faiss.omp_set_num_threads(threads)
    out: dict[str, Any] = {
        "n": args.n,
        "batch": args.batch,
        "k": args.k,
        "runs": args.runs,
        "threads": threads,
        "backend": get_backend(),
        "loadavg_start": list(os.getloadavg()),
    }
    print(f"benchmarks/asym_kernel.py: N={args.n:,} batch={args.batch} k={args.k}, {threads} thread(s)")
    print(f"backend {get_backend()}, {os.cpu_count()} cores, {load()}")
    for bits in (384, 1024):
        section(args, bits, out)
        gc.collect()  # the float rows of this width
    out["loadavg_end"] = list(os.getloadavg())

    ref = "planes_topk, 8-bit query"
    print(f"\nTime / time of {ref} (same bits, same setting); {load()}")
    print(f"{'engine':<28} {'384 one':>8} {'384 x100':>9} {'1024 one':>9} {'1024 x100':>10}")
    names = [n for n in dict.fromkeys(k.split("/")[1] for k in out if k.count("/") == 2)]
    for name in names:
        cells = []
        for bits in (384, 1024):
            for kind in ("one", "batch"):
                ratio = out[f"{bits}/{name}/{kind}_ms"] / out[f"{bits}/{ref}/{kind}_ms"]
                out[f"{bits}/{name}/{kind}_ratio"] = ratio
                cells.append(f"{ratio:.2f}x")
        print(f"{name:<28} {cells[0]:>8} {cells[1]:>9} {cells[2]:>9} {cells[3]:>10}")
    for bits in (384, 1024):
        print(
            f"{bits} bits: recall@{args.k} of the 8-bit / 4-bit estimate vs exact float weights "
            f"{out[f'{bits}/recall_at_{args.k}_of_8bit_vs_exact']:.3f} / "
            f"{out[f'{bits}/recall_at_{args.k}_of_4bit_vs_exact']:.3f}; exact mode top-1 = faiss top-1 in "
            f"{100 * out[f'{bits}/exact_top1_agrees_with_faiss']:.0f}% of queries"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
