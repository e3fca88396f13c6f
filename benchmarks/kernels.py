"""Speed of the Hamming and rescoring kernels next to faiss, usearch and numpy, in one run.

Same random data for every engine. Measures, each figure the median of ``--runs`` timed calls after
a warm-up (slow peers on a subset of the queries, stated in the output):

1. batched exact Hamming top-k over N codes of 1024 and 384 bits, ``--queries`` queries, 1 and
   2 threads: quantsearch, faiss IndexBinaryFlat, usearch exact b1 (brute force), numpy;
2. one query over N x 1024 bits on 1 and 2 threads, next to faiss and to the time one core takes
   to read 128 MB once (a sequential XOR over the 128 MB of codes, and numpy's sum of them; the
   faster counts), the four alternating query by query;
3. end to end, one query over N x 1024-d vectors: our Index (binary top 100 -> int8 rescoring
   from the memory-mapped tier -> top 10) against faiss IndexFlatIP float32 exact search; the
   int8 tier is read into the OS page cache first (a server's steady state);
4. the int8 tier truly cold: evicted per file (POSIX_FADV_DONTNEED, residency checked with
   mincore) while nothing maps it, then a fresh process opens the index and runs new queries (one
   by one, then a batch of 100), and repeats them with the tier read into the page cache.

Ours and the peer alternate run by run (A B A B), so that load from other jobs on a shared machine
lands on both alike; the load average is printed per section and stored in the JSON.

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


def abab(mine: Callable[[], object], peer: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median seconds of ``mine`` and of ``peer``, timed alternately (A B A B ...) after one warm-up
    call each: a burst of load from other jobs lands on both alike."""
    mine()
    peer()
    a, b = [], []
    for _ in range(runs):
        for fn, times in ((mine, a), (peer, b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


def latency_abab(fns: dict[str, Callable[[np.ndarray], object]], queries: np.ndarray) -> dict[str, float]:
    """Median ms per single-query call of every engine, the engines alternating query by query."""
    for fn in fns.values():
        fn(queries[:1])
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(queries.shape[0]):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(queries[i : i + 1])
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) * 1e3 for name, v in times.items()}


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
    binary_flat = _faiss_binary(codes)
    for t in THREADS:
        set_num_threads(t)
        faiss.omp_set_num_threads(t)
        ours[t] = hamming_topk(queries, codes, k)
        distances, _ = binary_flat.search(queries, k)
        # faiss orders ties differently; the sorted distances must be the same
        assert np.array_equal(distances, ours[t][0]), "faiss and quantsearch distances differ"
        # ABAB: ours and faiss alternate run by run, so that load from other jobs hits both alike
        mine, peer = abab(
            lambda: hamming_topk(queries, codes, k), lambda: binary_flat.search(queries, k), args.runs
        )
        out[f"ours_qps_{bits}_t{t}"] = args.queries / mine
        out[f"faiss_qps_{bits}_t{t}"] = args.queries / peer
        rows.append((bits, f"quantsearch ({get_backend()})", t, args.queries, args.queries / mine))
        rows.append((bits, "faiss IndexBinaryFlat", t, args.queries, args.queries / peer))
    set_num_threads(None)
    assert np.array_equal(ours[1][1], ours[2][1]), "thread counts disagree"
    binary_flat.reset()  # free its copy of the codes
    out[f"faiss_agrees_{bits}"] = True
    out[f"loadavg_{bits}"] = list(os.getloadavg())

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
    binary_flat = _faiss_binary(codes)
    mb = codes.nbytes / 2**20
    native = native_module()
    isa = ISA["portable"]
    if native is not None:
        isa = next(ISA[name] for name in ("avx512", "avx2", "portable") if native.isa_supported(ISA[name]))
    words = codes.view(np.uint64)
    # ours, faiss and one read of the codes alternate query by query (ABAB), per thread count
    for t in THREADS:
        set_num_threads(t)
        faiss.omp_set_num_threads(t)
        engines: dict[str, Callable[[np.ndarray], object]] = {
            "ours": lambda q: hamming_topk(q, codes, k),
            "faiss": lambda q: binary_flat.search(q, k),
            "read_numpy_sum": lambda q: words.sum(),
        }
        if native is not None:
            engines["read_xor"] = lambda q: native.stream_xor(codes, isa)
        ms = latency_abab(engines, sample)
        out[f"single_query_ms_1024_t{t}"] = ms["ours"]
        out[f"faiss_single_query_ms_1024_t{t}"] = ms["faiss"]
        # reading the same 128 MB once, on one core (scaled to 128 MB when --n is not 1M)
        for name in ("read_xor", "read_numpy_sum"):
            if name in ms:
                out[f"{name}_ms_t{t}"] = ms[name] * 128 / mb
    set_num_threads(None)
    binary_flat.reset()
    out["single_query_ms_1024"] = min(out[f"single_query_ms_1024_t{t}"] for t in THREADS)
    out["single_query_1t_ms_1024"] = out["single_query_ms_1024_t1"]
    out["faiss_single_query_1t_ms_1024"] = out["faiss_single_query_ms_1024_t1"]
    out["single_query_1t_vs_faiss"] = out["single_query_1t_ms_1024"] / out["faiss_single_query_1t_ms_1024"]
    reads = [v for key, v in out.items() if key.startswith("read_") and key.endswith("_ms_t1")]
    out["read_xor_ms"] = out.get("read_xor_ms_t1", float("nan"))
    out["read_numpy_sum_ms"] = out["read_numpy_sum_ms_t1"]
    out["read_128mb_ms"] = min(reads)
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
                os.fsync(fd)  # dirty pages are not dropped
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
        if args.index_dir is not None:
            # the index of benchmarks/cold_e2e.py: the same vectors (seed 1, chunks of 100k), built once
            from cold_e2e import build

            root = args.index_dir / f"cold_e2e_{n}"
            build(root, n)
            index = Index.open(root)
        else:
            root = Path(tmp) / "idx"
            index = Index.create(root, dim, rescore=("int8",))
        first: np.ndarray | None = None
        for start in range(0, n, chunk):
            x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            if first is None:
                first = x
                if args.index_dir is None:
                    index.calibrate(x)
            if args.index_dir is None:
                index.add(x)
            flat.add(x)
        assert first is not None
        print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
        tier_files = sorted((root / "segments").glob("*int8*"))
        _page_cache(tier_files, keep=True)  # the steady state of a server: the tier is cached by the OS
        picks = rng.choice(first.shape[0], args.latency_queries, replace=False)
        # a query near a stored vector (noise norm ~0.3 against unit vectors)
        noise = rng.standard_normal((len(picks), dim), dtype=np.float32) * np.float32(0.3 / np.sqrt(dim))
        queries = first[picks] + noise
        first = None
        gc.collect()
        stage_times: dict[str, list[float]] = {"hamming": [], "rescore:int8": []}

        holder = {"index": index}  # dropped before the cold section, so that nothing maps the tier

        def ours(q: np.ndarray) -> Any:
            res = holder["index"].search(q, k, with_payload=False)
            for name, values in stage_times.items():
                values.append(res.timings[name])
            return res

        for t in THREADS:
            set_num_threads(t)
            faiss.omp_set_num_threads(t)
            for values in stage_times.values():
                values.clear()
            # ABAB over the first queries (float32 exact search is slow), then ours alone on the rest
            ms = latency_abab({"ours": ours, "faiss": lambda q: flat.search(q, k)}, queries[:10])
            out[f"faiss_flat_ip_ms_t{t}"] = ms["faiss"]
            out[f"e2e_ms_t{t}"] = min(ms["ours"], latency_ms(ours, queries))
            out[f"e2e_hamming_ms_t{t}"] = statistics.median(stage_times["hamming"][1:])
            out[f"e2e_rescore_ms_t{t}"] = statistics.median(stage_times["rescore:int8"][1:])
            out[f"e2e_speedup_vs_float32_t{t}"] = out[f"faiss_flat_ip_ms_t{t}"] / out[f"e2e_ms_t{t}"]
        set_num_threads(None)
        # each engine at its faster thread setting
        out["e2e_ms"] = min(out[f"e2e_ms_t{t}"] for t in THREADS)
        out["faiss_flat_ip_ms"] = min(out[f"faiss_flat_ip_ms_t{t}"] for t in THREADS)
        out["e2e_speedup_vs_float32_best"] = out["faiss_flat_ip_ms"] / out["e2e_ms"]
        res = index.search(queries, k, with_payload=False)
        _, exact = flat.search(queries, k)
        hits = sum(len(set(a) & set(b)) for a, b in zip(res.ids.tolist(), exact.tolist(), strict=True))
        out["e2e_recall_at_10_vs_float32"] = hits / exact.size
        # random data: past the query's source vector the exact neighbours are near-ties, so the
        # top-1 agreement is the meaningful check; recall@10 is printed for completeness
        out["e2e_top1_agreement"] = float(np.mean(res.ids[:, 0] == exact[:, 0]))
        out["e2e_speedup_vs_float32"] = out["e2e_speedup_vs_float32_best"]
        index.close()
        del index, res, holder["index"]  # the closed index may still hold its maps until collected
        flat.reset()
        gc.collect()
        cold_tier_section(args, root, tier_files, dim, out)
    gc.collect()


def resident_fraction(path: Path) -> float:
    """Fraction of a file's pages in the OS page cache (mincore over a fresh read-only map)."""
    import ctypes
    import mmap

    size = path.stat().st_size
    if size == 0:
        return 0.0
    page = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return float("nan")
        pages = (size + page - 1) // page
        vec = ctypes.create_string_buffer(pages)
        rc = libc.mincore(ctypes.c_void_p(addr), size, vec)
        libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)
    if rc != 0:
        return float("nan")
    return sum(b & 1 for b in vec.raw) / pages


def cold_tier_section(
    args: argparse.Namespace, path: Path, tier_files: list[Path], dim: int, out: dict
) -> None:
    """The int8 tier truly cold: evicted per file (POSIX_FADV_DONTNEED, checked with mincore) while
    no process maps it, then a fresh process opens the index and searches with new queries; the
    same process then reads the tier into the page cache and repeats them warm."""
    import subprocess
    import sys

    gc.collect()  # drop any map of the tier this process still holds: mapped pages are not evicted
    with open("/proc/self/maps") as maps:
        out["cold_tier_maps_in_parent"] = sum(str(path) in line for line in maps)
    _page_cache(tier_files, keep=False)
    out["cold_tier_resident_before"] = max(resident_fraction(f) for f in tier_files)
    if out["cold_tier_resident_before"] > 0.05:
        print(
            f"WARNING: the int8 tier stayed {100 * out['cold_tier_resident_before']:.0f}% cached", flush=True
        )
    child = subprocess.run(
        [sys.executable, __file__, "--cold-child", str(path), "--n", str(args.n), "-k", str(args.k),
         "--latency-queries", str(args.latency_queries)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(child.stdout.strip().splitlines()[-1])
    out.update(result)
    out["e2e_cold_tier_ms"] = result["cold_single_ms"]
    out["cold_single_vs_warm"] = result["cold_single_ms"] / result["warm_single_ms"]
    out["cold_batch_qps_vs_warm"] = result["cold_batch_qps"] / result["warm_batch_qps"]


def cold_child(path: Path, args: argparse.Namespace) -> None:
    """Runs in a fresh process (see cold_tier_section); prints one JSON line."""
    dim, k = 1024, args.k
    rng = np.random.default_rng(12345)  # new queries: none of the parent's
    single = rng.standard_normal((args.latency_queries, dim), dtype=np.float32)
    batch = rng.standard_normal((200, dim), dtype=np.float32)
    index = Index.open(path)
    result: dict[str, float] = {}
    tier_files = sorted((path / "segments").glob("*int8*"))
    for phase in ("cold", "warm"):
        if phase == "warm":
            _page_cache(tier_files, keep=True)
        rescore: list[float] = []
        times = []
        for i in range(single.shape[0]):
            t0 = time.perf_counter()
            res = index.search(single[i : i + 1], k, with_payload=False)
            times.append(time.perf_counter() - t0)
            rescore.append(res.timings["rescore:int8"])
        result[f"{phase}_single_ms"] = statistics.median(times) * 1e3
        result[f"{phase}_single_rescore_ms"] = statistics.median(rescore)
        t0 = time.perf_counter()
        index.search(batch[:100] if phase == "cold" else batch[100:], k, with_payload=False)
        result[f"{phase}_batch_qps"] = 100 / (time.perf_counter() - t0)
    index.close()
    print(json.dumps(result))


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
    parser.add_argument(
        "--index-dir",
        type=Path,
        help="reuse (build once) the end-to-end index of benchmarks/cold_e2e.py under this directory",
    )
    parser.add_argument("--cold-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_child:
        cold_child(args.cold_child, args)
        return
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
    print(
        "\nOne query over N x 1024 bits (ms, median over single-query calls, ours / faiss / read alternating)"
    )
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
            f"  cold int8 tier (evicted per file, {100 * out['cold_tier_resident_before']:.1f}% resident, "
            "fresh "
            f"process, new queries): one query {out['cold_single_ms']:.2f} ms (rescoring "
            f"{out['cold_single_rescore_ms']:.2f}) vs warm {out['warm_single_ms']:.2f} ms "
            f"= {out['cold_single_vs_warm']:.2f}x; batch of 100 {out['cold_batch_qps']:.0f} QPS vs warm "
            f"{out['warm_batch_qps']:.0f} = {100 * out['cold_batch_qps_vs_warm']:.0f}%"
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
        f"one query on 1 thread {out['single_query_1t_ms_1024']:.2f} ms vs faiss "
        f"{out['faiss_single_query_1t_ms_1024']:.2f} ms, {out['single_query_vs_read_t1']:.2f}x read_128mb; "
        f"best single query {out['single_query_ms_1024']:.2f} ms "
        f"= {out['single_query_vs_read']:.2f}x read_128mb"
        + ("" if args.skip_e2e else f"; end to end {out['e2e_speedup_vs_float32']:.1f}x float32")
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
