"""Peak RSS and seconds of ``Index.build`` from a ``.npy`` of float32 vectors (issue 12).

The vectors (unit Gaussians, seeded) are written block by block to ``--npy`` if it does not exist,
never held in RAM. ``--mode mmap`` builds from ``np.load(path, mmap_mode="r")`` (the streaming
path), ``--mode array`` from the whole array loaded into RAM (the old way). ``--rows`` builds from
the first rows only (a memory map of the same file). Peak RSS is the process's ``ru_maxrss``; the
footprint is the RSS of a fresh process that opens the built index (codes in RAM, tiers mapped).
Not a speed benchmark (the seconds are only indicative): run it unlocked under ``nice``.

    .venv/bin/python benchmarks/build_stream.py --npy /work/scratch/ann10m/x2m.npy --n 2000000 \\
        --rows 1000000 --work-dir /work/scratch/ann10m/build
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OPEN = """
import sys
from quantsearch import Index
ix = Index.open(sys.argv[1], readonly=True)
for line in open('/proc/self/status'):
    if line.startswith('VmRSS'):
        print(int(line.split()[1]) * 1024)
"""


def write_npy(path: Path, n: int, dim: int, seed: int = 0) -> None:
    part = path.with_suffix(".part.npy")
    out = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(n, dim))
    for b, start in enumerate(range(0, n, 50_000)):
        x = np.random.default_rng([seed, b]).standard_normal((min(50_000, n - start), dim), np.float32)
        out[start : start + x.shape[0]] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    part.rename(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npy", type=Path, required=True)
    p.add_argument("--n", type=int, default=1_000_000, help="rows written when --npy does not exist")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--rows", type=int, default=None, help="build from the first ROWS rows")
    p.add_argument("--mode", choices=["mmap", "array"], default="mmap")
    p.add_argument("--candidate-stage", default=None)
    p.add_argument("--work-dir", type=Path, required=True)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if not args.npy.is_file():
        write_npy(args.npy, args.n, args.dim)
    from quantsearch import Index

    full = np.load(args.npy, mmap_mode="r")
    rows = args.rows or full.shape[0]
    header = full.offset
    vectors = np.memmap(args.npy, np.float32, "r", offset=header, shape=(rows, full.shape[1]))
    del full
    if args.mode == "array":
        vectors = np.array(vectors)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = args.work_dir / f"idx-{rows}-{args.mode}"
    shutil.rmtree(out, ignore_errors=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    Index.build(out, vectors, candidate_stage=args.candidate_stage).close()
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    footprint = int(subprocess.run([sys.executable, "-c", OPEN, str(out)], capture_output=True, text=True,
                                   check=True).stdout.split()[-1])  # fmt: skip
    result = {"rows": rows, "dim": int(vectors.shape[1]), "mode": args.mode, "stage": args.candidate_stage,
              "build_s": round(took, 1), "peak_rss_gb": round(peak / 1e9, 3),
              "rss_before_build_gb": round(before / 1e9, 3), "footprint_gb": round(footprint / 1e9, 3),
              "peak_minus_footprint_gb": round((peak - footprint) / 1e9, 3)}  # fmt: skip
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
