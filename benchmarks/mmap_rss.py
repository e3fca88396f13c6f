"""How much of a memory-mapped int8 tier a rescoring search pulls into the process.

Builds a 100,000 x 1024 index (102 MB int8 tier), evicts the tier from the page cache (as for an
index opened long after it was written), then in a fresh process opens it and runs one default
search (k=10, x10 oversampling -> 100 scattered candidates), with and without the MADV_RANDOM
advice the index gives its memory maps. Prints the growth of VmRSS at open and of RssFile after the
search, median of several runs.

    python benchmarks/mmap_rss.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from quantsearch import Index

CHILD = """
import glob, os, sys
import numpy as np
import quantsearch.index.index as module
if sys.argv[2] == "off":
    module._map_random = lambda array: array
from quantsearch import Index

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

for path in glob.glob(sys.argv[1] + "/segments/*.int8.npy"):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
before = rss("VmRSS")
index = Index.open(sys.argv[1])
opened, file_before = rss("VmRSS"), rss("RssFile")
index.search(np.random.default_rng(int(sys.argv[3])).standard_normal(index.dim).astype(np.float32), k=10)
print(opened - before, rss("RssFile") - file_before)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    src = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((10_000, 1024), dtype=np.float32)
        with Index.create(Path(tmp) / "idx", 1024, calibration=x[:1000]) as index:
            for b in range(10):
                index.add(x, ids=range(b * 10_000, (b + 1) * 10_000))
            tier_mb = index.info()["tiers"][1]["disk_bytes"] / 1e6
        print(f"int8 tier: {tier_mb:.0f} MB on disk; binary tier in RAM: {100_000 * 128 / 1e6:.1f} MB")
        for mode in ("on", "off"):
            opens, searches = [], []
            for run in range(args.runs):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(Path(tmp) / "idx"), mode, str(run)],
                    capture_output=True, text=True, check=True, env={"PYTHONPATH": str(src)},
                )  # fmt: skip
                opened, searched = map(int, out.stdout.split())
                opens.append(opened)
                searches.append(searched)
            print(
                f"MADV_RANDOM {mode:>3}: VmRSS growth at open {statistics.median(opens) / 2**20:6.1f} MiB, "
                f"RssFile growth after one search {statistics.median(searches) / 2**20:5.1f} MiB "
                f"(median of {args.runs})"
            )


if __name__ == "__main__":
    main()
