"""Rescoring from a cold int8 tier: the fused gather + dot with and without read-ahead.

A 1M x 1024 int8 tier (1 GiB, under --dir) is evicted from the page cache (fsync +
POSIX_FADV_DONTNEED; its residency is checked with mincore), then a fresh process maps it and
rescores batches of ``--candidates`` random rows (new rows every time, so nothing is cached):
``dot_rows`` plain (one page fault after another) and ``dot_rows(prefetch=True)``
(``madvise(WILLNEED)`` over every candidate's page first), alternating (ABAB). Then the same
rows again with the tier cached, for the cost of the hint when it is not needed.

    python benchmarks/cold_tier.py --dir /work/scratch/kernels [--rounds 20] [--candidates 100]
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

N, DIM = 1_000_000, 1024


def make_tier(path: Path) -> None:
    if path.exists() and path.stat().st_size >= N * DIM:
        return
    tier = np.lib.format.open_memmap(path, "w+", np.int8, (N, DIM))
    for start in range(0, N, 100_000):
        tier[start : start + 100_000] = np.random.default_rng(start).integers(
            -128, 128, (100_000, DIM), np.int8
        )
    tier.flush()
    del tier


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def child(path: Path, rounds: int, candidates: int, seed: int) -> None:
    from quantsearch.kernels import dot_rows

    tier = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((1, DIM)).astype(np.float32)
    starts = np.zeros(1, np.int64)
    cold: dict[str, list[float]] = {"plain": [], "prefetch": []}
    used = []
    for _ in range(rounds):
        for mode, times in cold.items():
            rows = rng.choice(N, (1, candidates), replace=False)
            used.append(rows)
            t0 = time.perf_counter()
            dot_rows([tier], starts, rows, weights, prefetch=mode == "prefetch")
            times.append(time.perf_counter() - t0)
    warm: dict[str, list[float]] = {"plain": [], "prefetch": []}
    for rows in used:  # now cached
        for mode, times in warm.items():
            t0 = time.perf_counter()
            dot_rows([tier], starts, rows, weights, prefetch=mode == "prefetch")
            times.append(time.perf_counter() - t0)
    out = {f"cold_{m}_ms": statistics.median(v) * 1e3 for m, v in cold.items()}
    out.update({f"warm_{m}_ms": statistics.median(v) * 1e3 for m, v in warm.items()})
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, required=True, help="where the 1 GiB tier file goes (not tmpfs)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes (each after an eviction)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.dir / "cold_tier_int8.npy"
    if args.child:
        child(path, args.rounds, args.candidates, args.seed)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from kernels import resident_fraction

    make_tier(path)
    print(
        f"cold_tier.py: {N:,} x {DIM} int8 ({path}), {args.candidates} candidates per call, "
        f"load {os.getloadavg()}"
    )
    results = []
    for r in range(args.repeats):
        evict(path)
        resident = resident_fraction(path)
        run = subprocess.run(
            [sys.executable, __file__, "--dir", str(args.dir), "--child", "--seed", str(r),
             "--rounds", str(args.rounds), "--candidates", str(args.candidates)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        res = json.loads(run.stdout.strip().splitlines()[-1])
        results.append(res)
        print(
            f"  run {r}: {100 * resident:.1f}% resident before; cold plain {res['cold_plain_ms']:.2f} ms, "
            f"prefetch {res['cold_prefetch_ms']:.2f} ms "
            f"({res['cold_plain_ms'] / res['cold_prefetch_ms']:.1f}x); "
            f"warm plain {res['warm_plain_ms']:.3f} ms, prefetch {res['warm_prefetch_ms']:.3f} ms"
        )
    med = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print(
        f"median of {args.repeats}: cold {med['cold_plain_ms']:.2f} -> {med['cold_prefetch_ms']:.2f} ms "
        f"({med['cold_plain_ms'] / med['cold_prefetch_ms']:.1f}x); warm {med['warm_plain_ms']:.3f} -> "
        f"{med['warm_prefetch_ms']:.3f} ms; load {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
