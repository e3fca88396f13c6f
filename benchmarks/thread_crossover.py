"""When does a second thread pay for one query? The single-query Hamming scan by N, 1 vs 2 threads.

For every code width and N, one query at a time, alternating call by call (A B A B ...):

- ``1t``: one thread;
- ``2t``: two threads forced (the work threshold set to 0);
- ``auto``: two threads allowed, the kernel's default thread rule (what a search does);
- ``rule=X``: two threads allowed, the kernel's thread rule with X bytes of popcount work per added
  thread (``--rules``; the current default is printed), i.e. what a search does under that rule.

Prints the median ms of each and the ratios, with the load average; ``--json`` writes them.

    python benchmarks/thread_crossover.py [--bits 1024 384] [--n 25000 50000 ...] [--queries 41]
        [--rules 33554432 4194304] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from quantsearch.kernels import get_backend, hamming_topk, set_num_threads
from quantsearch.kernels.backend import native_module


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bits", type=int, nargs="+", default=[1024, 384])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000, 400_000, 1_000_000]
    )
    parser.add_argument("--queries", type=int, default=41, help="single-query calls per setting")
    parser.add_argument("--rules", type=int, nargs="*", default=[], help="thread rules to compare (bytes)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    native = native_module()
    if native is None:
        raise SystemExit("the native kernels are not built")
    default = native.thread_work_bytes()
    print(f"backend {get_backend()}, {os.cpu_count()} cores, default rule {default} bytes/thread, {load()}")
    out: dict[str, object] = {"backend": get_backend(), "default_rule": default, "rows": []}
    rng = np.random.default_rng(0)
    try:
        for bits in args.bits:
            nb = bits // 8
            big = rng.integers(0, 256, (max(args.n), nb), dtype=np.uint8)
            queries = rng.integers(0, 256, (args.queries + 1, nb), dtype=np.uint8)
            for n in args.n:
                codes = big[:n]

                # name -> (threads allowed, work threshold in bytes)
                settings = {"1t": (1, default), "2t": (2, 0), "auto": (2, default)}
                for rule in args.rules:
                    settings[f"rule={rule}"] = (2, rule)
                times: dict[str, list[float]] = {name: [] for name in settings}
                for i in range(args.queries + 1):  # the first round is a warm-up
                    q = queries[i : i + 1]
                    for name, (threads, work) in settings.items():
                        native.thread_work_bytes(work)
                        set_num_threads(threads)
                        t0 = time.perf_counter()
                        hamming_topk(q, codes, args.k)
                        times[name].append(time.perf_counter() - t0)
                ms = {name: statistics.median(v[1:]) * 1e3 for name, v in times.items()}
                row = {"bits": bits, "n": n, "mib": codes.nbytes / 2**20, "load": os.getloadavg()[0], **ms}
                out["rows"].append(row)  # type: ignore[union-attr]
                cells = "  ".join(f"{name} {v:.3f}" for name, v in ms.items())
                print(
                    f"{bits:>5} bits n={n:>9,} ({row['mib']:6.1f} MiB): {cells} ms; "
                    f"1t/2t {ms['1t'] / ms['2t']:.2f}  (load {row['load']:.2f})",
                    flush=True,
                )
    finally:
        native.thread_work_bytes(default)
        set_num_threads(None)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
