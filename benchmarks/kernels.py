"""Speed of the Hamming and rescoring kernels next to faiss, usearch and numpy, in one run.

Same random data for every engine. Measures, each figure the median of ``--runs`` timed calls after
a warm-up (slow peers on a subset of the queries, stated in the output):

1. batched exact Hamming top-k over N codes of 1024 and 384 bits, ``--queries`` queries, 1 and
   2 threads: quantsearch, faiss IndexBinaryFlat, usearch exact b1 (brute force), numpy;
2. one query over N x 1024 bits, next to the time one core takes to read 128 MB once (a
   sequential XOR over the 128 MB of codes, and numpy's sum of them; the faster counts);
3. end to end, one query over N x 1024-d vectors: our Index (binary top 100 -> int8 rescoring
   from the memory-mapped tier -> top 10) against faiss IndexFlatIP float32 exact search; the
   int8 tier is read into the OS page cache first (a server's steady state), and a second pass
   times it evicted (candidates read from disk).

    python benchmarks/kernels.py [--n 1000000] [--queries 1000] [--runs 5] [--json FILE] [--quick]

``--json FILE`` writes every figure as one flat JSON object (keys such as
``qps_ratio_vs_faiss_1024``, ``single_query_ms_1024``, ``read_128mb_ms``, ``e2e_speedup_vs_float32``).
Needs the eval extra (faiss-cpu, usearch). The machine is shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _timing import median_seconds

from quantsearch import Index
from quantsearch.kernels import get_backend, hamming_topk, numpy_backend, set_num_threads
from quantsearch.kernels.backend import ISA, native_module

THREADS = (1, 2)


def latency_ms(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Median over single-row calls (one per query, after one warm-up call), in ms."""
    fn(queries[:1])
    times = []
    for i in range(queries.shape[0]):
        t0 = time.perf_counter()
        fn(queries[i : i + 1])
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def hamming_section(args: argparse.Namespace, bits: int, out: dict[str, Any], rows: list[tuple]) -> None:
    import faiss
    from usearch.index import MetricKind, ScalarKind
    from usearch.index import search as usearch_search

    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 256, (args.n, bits // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.queries, bits // 8), dtype=np.uint8)
    few = queries[: args.peer_queries]
    k = args.k
    print(f"\n[{bits} bits] {load()}", flush=True)

    ours: dict[int, tuple] = {}
    for t in THREADS:
        set_num_threads(t)
        ours[t] = hamming_topk(queries, codes, k)
        seconds = median_seconds(lambda: hamming_topk(queries, codes, k), args.runs)
        out[f"ours_qps_{bits}_t{t}"] = args.queries / seconds
        rows.append((bits, f"quantsearch ({get_backend()})", t, args.queries, args.queries / seconds))
    set_num_threads(None)
    assert np.array_equal(ours[1][1], ours[2][1]), "thread counts disagree"

    binary_flat = _faiss_binary(codes)
    for t in THREADS:
        faiss.omp_set_num_threads(t)
        distances, _ = binary_flat.search(queries, k)
        # faiss orders ties differently; the sorted distances must be the same
        assert np.array_equal(distances, ours[t][0]), "faiss and quantsearch distances differ"
        seconds = median_seconds(lambda: binary_flat.search(queries, k), args.runs)
        out[f"faiss_qps_{bits}_t{t}"] = args.queries / seconds
        rows.append((bits, "faiss IndexBinaryFlat", t, args.queries, args.queries / seconds))
    binary_flat.reset()  # free its copy of the codes
    out[f"faiss_agrees_{bits}"] = True

    slow_runs = min(args.runs, 3)
    for t in THREADS:
        matches = usearch_search(
            codes, few, k, MetricKind.Hamming, exact=True, threads=t, dtype=ScalarKind.B1
        )
        assert np.array_equal(np.asarray(matches.distances, np.int64), ours[1][0][: len(few)])
        seconds = median_seconds(
            lambda t=t: usearch_search(
                codes, few, k, MetricKind.Hamming, exact=True, threads=t, dtype=ScalarKind.B1
            ),
            slow_runs,
        )
        out[f"usearch_qps_{bits}_t{t}"] = len(few) / seconds
        rows.append((bits, "usearch exact b1", t, len(few), len(few) / seconds))
    seconds = median_seconds(lambda: numpy_backend.hamming_topk(few, codes, k), slow_runs)
    out[f"numpy_qps_{bits}_t1"] = len(few) / seconds
    rows.append((bits, "numpy (xor + bitwise_count)", 1, len(few), len(few) / seconds))
    for t in THREADS:
        out[f"qps_ratio_vs_faiss_{bits}_t{t}"] = out[f"ours_qps_{bits}_t{t}"] / out[f"faiss_qps_{bits}_t{t}"]
    out[f"qps_ratio_vs_faiss_{bits}"] = out[f"qps_ratio_vs_faiss_{bits}_t2"]

    if bits == 1024:
        single_query_section(args, codes, queries, out)


def _faiss_binary(codes: np.ndarray) -> Any:
    import faiss

    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    return index


def single_query_section(args: argparse.Namespace, codes: np.ndarray, queries: np.ndarray, out: dict) -> None:
    import faiss

    k = args.k
    sample = queries[: args.latency_queries]
    for t in THREADS:
        set_num_threads(t)
        out[f"single_query_ms_1024_t{t}"] = latency_ms(lambda q: hamming_topk(q, codes, k), sample)
    set_num_threads(None)
    out["single_query_ms_1024"] = min(out[f"single_query_ms_1024_t{t}"] for t in THREADS)
    binary_flat = _faiss_binary(codes)
    for t in THREADS:
        faiss.omp_set_num_threads(t)
        out[f"faiss_single_query_ms_1024_t{t}"] = latency_ms(lambda q: binary_flat.search(q, k), sample[:20])
    binary_flat.reset()

    # reading the same 128 MB once, on one core
    mb = codes.nbytes / 2**20
    native = native_module()
    runs = max(args.runs, 5)
    if native is not None:
        isa = ISA["avx512"] if native.isa_supported(ISA["avx512"]) else ISA["portable"]
        out["read_xor_ms"] = median_seconds(lambda: native.stream_xor(codes, isa), runs) * 1e3 * 128 / mb
    words = codes.view(np.uint64)
    out["read_numpy_sum_ms"] = median_seconds(lambda: words.sum(), runs) * 1e3 * 128 / mb
    out["read_128mb_ms"] = min(out.get("read_xor_ms", np.inf), out["read_numpy_sum_ms"])
    for t in THREADS:
        # scaled to 128 MB when --n is not 1M (quick runs)
        out[f"single_query_vs_read_t{t}"] = (
            out[f"single_query_ms_1024_t{t}"] * 128 / mb / out["read_128mb_ms"]
        )
    out["single_query_vs_read"] = out["single_query_ms_1024"] * 128 / mb / out["read_128mb_ms"]


def _page_cache(files: list[Path], *, keep: bool) -> None:
    """Read ``files`` once into the OS page cache, or evict them from it (they are clean)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            if keep:
                while os.read(fd, 1 << 24):
                    pass
            else:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def e2e_section(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """One query: our Index (binary x10 -> int8 from the memory map -> top 10) vs faiss flat IP."""
    import faiss

    dim, n, chunk, k = 1024, args.n, 100_000, args.k
    rng = np.random.default_rng(1)
    print(f"\n[end to end, {n:,} x {dim}-d] building... {load()}", flush=True)
    flat = faiss.IndexFlatIP(dim)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        index = Index.create(Path(tmp) / "idx", dim, rescore=("int8",))
        first: np.ndarray | None = None
        for start in range(0, n, chunk):
            x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            if first is None:
                first = x
                index.calibrate(x)
            index.add(x)
            flat.add(x)
        assert first is not None
        print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
        tier_files = sorted((Path(tmp) / "idx" / "segments").glob("*int8*"))
        _page_cache(tier_files, keep=True)  # the steady state of a server: the tier is cached by the OS
        picks = rng.choice(first.shape[0], args.latency_queries, replace=False)
        # a query near a stored vector (noise norm ~0.3 against unit vectors)
        noise = rng.standard_normal((len(picks), dim), dtype=np.float32) * np.float32(0.3 / np.sqrt(dim))
        queries = first[picks] + noise
        first = None
        gc.collect()
        stage_times: dict[str, list[float]] = {"hamming": [], "rescore:int8": []}

        def ours(q: np.ndarray) -> Any:
            res = index.search(q, k, with_payload=False)
            for name, values in stage_times.items():
                values.append(res.timings[name])
            return res

        for t in THREADS:
            set_num_threads(t)
            faiss.omp_set_num_threads(t)
            for values in stage_times.values():
                values.clear()
            out[f"e2e_ms_t{t}"] = latency_ms(ours, queries)
            out[f"e2e_hamming_ms_t{t}"] = statistics.median(stage_times["hamming"][1:])
            out[f"e2e_rescore_ms_t{t}"] = statistics.median(stage_times["rescore:int8"][1:])
            out[f"faiss_flat_ip_ms_t{t}"] = latency_ms(lambda q: flat.search(q, k), queries[:10])
            out[f"e2e_speedup_vs_float32_t{t}"] = out[f"faiss_flat_ip_ms_t{t}"] / out[f"e2e_ms_t{t}"]
        set_num_threads(None)
        # each engine at its faster thread setting
        out["e2e_ms"] = min(out[f"e2e_ms_t{t}"] for t in THREADS)
        out["faiss_flat_ip_ms"] = min(out[f"faiss_flat_ip_ms_t{t}"] for t in THREADS)
        out["e2e_speedup_vs_float32_best"] = out["faiss_flat_ip_ms"] / out["e2e_ms"]
        # cold tier: the candidates' int8 rows come from disk (evicted from the page cache)
        _page_cache(tier_files, keep=False)
        for values in stage_times.values():
            values.clear()
        cold = queries + rng.standard_normal(queries.shape, dtype=np.float32) * np.float32(0.01)
        out["e2e_cold_tier_ms"] = latency_ms(ours, cold)
        out["e2e_cold_tier_rescore_ms"] = statistics.median(stage_times["rescore:int8"][1:])
        res = index.search(queries, k, with_payload=False)
        _, exact = flat.search(queries, k)
        hits = sum(len(set(a) & set(b)) for a, b in zip(res.ids.tolist(), exact.tolist(), strict=True))
        out["e2e_recall_at_10_vs_float32"] = hits / exact.size
        # random data: past the query's source vector the exact neighbours are near-ties, so the
        # top-1 agreement is the meaningful check; recall@10 is printed for completeness
        out["e2e_top1_agreement"] = float(np.mean(res.ids[:, 0] == exact[:, 0]))
        out["e2e_speedup_vs_float32"] = out["e2e_speedup_vs_float32_best"]
        index.close()
    flat.reset()
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="codes / vectors (default 1M)")
    parser.add_argument("--queries", type=int, default=1000, help="batch size of the batched runs")
    parser.add_argument("--peer-queries", type=int, default=100, help="queries for the slow peers")
    parser.add_argument("--latency-queries", type=int, default=50, help="queries timed one by one")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--json", type=Path, help="also write the figures as a flat JSON object")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=100,000, 200 queries, 3 runs")
    parser.add_argument("--skip-e2e", action="store_true", help="leave out the end-to-end section")
    parser.add_argument("--tmp", help="directory for the end-to-end index (default: the system's)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries, args.peer_queries, args.latency_queries, args.runs = 100_000, 200, 50, 20, 3
    out: dict[str, Any] = {
        "n": args.n,
        "queries": args.queries,
        "k": args.k,
        "runs": args.runs,
        "quick": args.quick,
        "backend": get_backend(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
    }
    print(
        f"benchmarks/kernels.py: N={args.n:,} queries={args.queries} k={args.k}, median of {args.runs} runs"
    )
    print(f"backend {get_backend()}, {os.cpu_count()} cores, {load()}")
    if args.quick:
        print("QUICK RUN: N shrunk to 100,000 (a smoke test, not the issue's figures)")
    rows: list[tuple] = []
    for bits in (1024, 384):
        hamming_section(args, bits, out, rows)
        gc.collect()
    if not args.skip_e2e:
        e2e_section(args, out)
    out["loadavg_end"] = list(os.getloadavg())

    print(f"\nExact Hamming top-{args.k}, N={args.n:,} ({load()})")
    print(f"{'bits':>4}  {'engine':<28} {'thr':>3} {'queries':>7} {'QPS':>9} {'ms/query':>9} {'vs faiss':>8}")
    for bits, name, t, nq, qps in rows:
        ratio = qps / out[f"faiss_qps_{bits}_t{t}"]
        print(f"{bits:>4}  {name:<28} {t:>3} {nq:>7} {qps:>9.1f} {1e3 / qps:>9.3f} {ratio:>7.2f}x")
    print("\nOne query over N x 1024 bits (ms, median over single-query calls)")
    for t in THREADS:
        print(
            f"  {t} thread(s): quantsearch {out[f'single_query_ms_1024_t{t}']:.2f}"
            f"  faiss {out[f'faiss_single_query_ms_1024_t{t}']:.2f}"
            f"  = {out[f'single_query_vs_read_t{t}']:.2f}x the 128 MB read"
        )
    print(
        f"  read 128 MB once, one core: {out['read_128mb_ms']:.2f} ms "
        f"(sequential XOR {out.get('read_xor_ms', float('nan')):.2f}, "
        f"numpy sum {out['read_numpy_sum_ms']:.2f})"
    )
    if not args.skip_e2e:
        print(f"\nEnd to end, one query over N x 1024-d (binary x10 -> int8 from mmap -> top {args.k})")
        for t in THREADS:
            print(
                f"  {t} thread(s): quantsearch {out[f'e2e_ms_t{t}']:.2f} ms, faiss IndexFlatIP float32 "
                f"{out[f'faiss_flat_ip_ms_t{t}']:.1f} ms: {out[f'e2e_speedup_vs_float32_t{t}']:.1f}x faster"
            )
        print(
            f"  each at its faster setting: {out['e2e_ms']:.2f} ms vs {out['faiss_flat_ip_ms']:.1f} ms = "
            f"{out['e2e_speedup_vs_float32']:.1f}x; int8 tier in the page cache (read once before timing)"
        )
        print(
            f"  cold int8 tier (evicted from the page cache): {out['e2e_cold_tier_ms']:.2f} ms, "
            f"of which rescoring {out['e2e_cold_tier_rescore_ms']:.2f} ms"
        )
        print(
            f"  stages (2 threads): hamming {out['e2e_hamming_ms_t2']:.2f} ms, "
            f"int8 rescoring {out['e2e_rescore_ms_t2']:.2f} ms; "
            f"vs float32 exact: top-1 agreement {out['e2e_top1_agreement']:.2f}, "
            f"recall@{args.k} {out['e2e_recall_at_10_vs_float32']:.2f} (random data: near-ties after #1)"
        )
    print(
        f"\nheadline: batches on 2 threads {out['qps_ratio_vs_faiss_1024']:.2f}x faiss at 1024 bits, "
        f"{out['qps_ratio_vs_faiss_384']:.2f}x at 384; "
        f"best single query {out['single_query_ms_1024']:.2f} ms "
        f"= {out['single_query_vs_read']:.2f}x read_128mb"
        + ("" if args.skip_e2e else f"; end to end {out['e2e_speedup_vs_float32']:.1f}x float32")
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
