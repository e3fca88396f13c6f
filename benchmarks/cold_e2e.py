"""End-to-end search with the int8 rescoring tier truly cold, with and without read-ahead.

An index of N x 1024-d random unit vectors (binary candidates in RAM, int8 tier memory-mapped:
1 GiB at 1M) is built once under ``--dir`` (reused by later runs). Each repeat then

1. evicts every file of the int8 tier from the page cache (fsync + ``POSIX_FADV_DONTNEED`` per
   file, while no process maps it; residency checked with mincore, printed);
2. starts a fresh process that opens the index and searches new random queries (a new seed per
   repeat, so no candidate row repeats across processes):
   - cold, one query at a time, read-ahead on and off alternating query by query (ABAB: each
     query's candidates are new rows, so both stay cold);
   - cold, a batch of ``--batch`` queries with read-ahead on, then another batch with it off;
   - warm: the tier read into the page cache, then new single queries (read-ahead on / off
     alternating) and two batches (on, off).

Figures: medians over the single queries of each process, then the median over ``--repeats``
processes; the ratios the issue asks for (cold single query / warm, cold batch QPS / warm).

    python benchmarks/cold_e2e.py --dir /work/scratch/kernels/e2e [--n 1000000] [--repeats 5]
        [--queries 20] [--batch 100] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM, K = 1024, 10


def build(path: Path, n: int) -> None:
    from quantsearch import Index

    if (path / "built").exists():
        return
    rng = np.random.default_rng(1)
    index = Index.create(path, DIM, rescore=("int8",))
    for start in range(0, n, 100_000):
        x = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        if start == 0:
            index.calibrate(x)
        index.add(x)
    index.close()
    (path / "built").write_text(str(n))


def tier_files(path: Path) -> list[Path]:
    return sorted((path / "segments").glob("*int8*"))


def page_cache(files: list[Path], *, keep: bool) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            if keep:
                while os.read(fd, 1 << 24):
                    pass
            else:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child(path: Path, seed: int, queries: int, batch: int) -> None:
    from quantsearch import Index
    from quantsearch.kernels.prefetch import set_read_ahead

    rng = np.random.default_rng(1000 + seed)

    def fresh(m: int) -> np.ndarray:
        x = rng.standard_normal((m, DIM), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    index = Index.open(path)
    out: dict[str, float] = {}
    for phase in ("cold", "warm"):
        if phase == "warm":
            page_cache(tier_files(path), keep=True)
        times: dict[str, list[float]] = {"on": [], "off": []}
        rescore: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(queries):
            for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                q = fresh(1)
                set_read_ahead(mode == "on")
                t0 = time.perf_counter()
                res = index.search(q, K, with_payload=False)
                times[mode].append(time.perf_counter() - t0)
                rescore[mode].append(res.timings["rescore:int8"])
        for mode in ("on", "off"):
            out[f"{phase}_single_ms_{mode}"] = statistics.median(times[mode]) * 1e3
            out[f"{phase}_rescore_ms_{mode}"] = statistics.median(rescore[mode])
        for mode in ("on", "off"):
            q = fresh(batch)
            set_read_ahead(mode == "on")
            t0 = time.perf_counter()
            res = index.search(q, K, with_payload=False)
            out[f"{phase}_batch_qps_{mode}"] = batch / (time.perf_counter() - t0)
            out[f"{phase}_batch_rescore_ms_{mode}"] = res.timings["rescore:int8"]
    set_read_ahead(True)
    index.close()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, required=True, help="where the index is built (not tmpfs)")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes, each after an eviction")
    parser.add_argument("--queries", type=int, default=20, help="single queries per mode and phase")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.dir / f"cold_e2e_{args.n}"
    if args.child is not None:
        child(path, args.child, args.queries, args.batch)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from kernels import resident_fraction

    t0 = time.perf_counter()
    build(path, args.n)
    files = tier_files(path)
    size = sum(f.stat().st_size for f in files) / 2**20
    print(
        f"cold_e2e.py: {args.n:,} x {DIM}-d, int8 tier {size:.0f} MiB in {len(files)} files "
        f"(ready in {time.perf_counter() - t0:.0f} s); load {os.getloadavg()}",
        flush=True,
    )
    runs = []
    for r in range(args.repeats):
        page_cache(files, keep=False)
        resident = max(resident_fraction(f) for f in files)
        proc = subprocess.run(
            [sys.executable, __file__, "--dir", str(args.dir), "--n", str(args.n), "--child", str(r),
             "--queries", str(args.queries), "--batch", str(args.batch)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["resident_before"] = resident
        res["load"] = os.getloadavg()[0]
        runs.append(res)
        print(
            f"  run {r} ({100 * resident:.1f}% resident before, load {res['load']:.2f}): one query cold "
            f"{res['cold_single_ms_on']:.2f} ms with read-ahead / {res['cold_single_ms_off']:.2f} without, "
            f"warm {res['warm_single_ms_on']:.2f} / {res['warm_single_ms_off']:.2f}; batch QPS cold "
            f"{res['cold_batch_qps_on']:.0f} / {res['cold_batch_qps_off']:.0f}, warm "
            f"{res['warm_batch_qps_on']:.0f} / {res['warm_batch_qps_off']:.0f}",
            flush=True,
        )
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    for r in runs:
        r["cold_single_vs_warm"] = r["cold_single_ms_on"] / r["warm_single_ms_on"]
        r["cold_batch_vs_warm"] = r["cold_batch_qps_on"] / r["warm_batch_qps_on"]
    ratios = {
        key: statistics.median(r[key] for r in runs) for key in ("cold_single_vs_warm", "cold_batch_vs_warm")
    }
    print(
        f"median of {len(runs)}: one query cold {med['cold_single_ms_on']:.2f} ms (rescoring "
        f"{med['cold_rescore_ms_on']:.2f}) vs warm {med['warm_single_ms_on']:.2f} ms = "
        f"{ratios['cold_single_vs_warm']:.2f}x (goal <= 2x; without read-ahead "
        f"{med['cold_single_ms_off']:.2f} ms, "
        f"rescoring {med['cold_rescore_ms_off']:.2f}); batch cold {med['cold_batch_qps_on']:.0f} QPS vs warm "
        f"{med['warm_batch_qps_on']:.0f} = {100 * ratios['cold_batch_vs_warm']:.0f}% (goal >= 50%; without "
        f"read-ahead {med['cold_batch_qps_off']:.0f}); warm cost of read-ahead: one query "
        f"{med['warm_single_ms_on']:.3f} vs {med['warm_single_ms_off']:.3f} ms off"
    )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": med, **ratios}, indent=1) + "\n")


if __name__ == "__main__":
    main()
