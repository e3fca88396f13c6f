"""A fixed workload whose instruction count compares two checkouts on a loaded machine.

Wall-clock figures on a shared 2-core machine move by tens of percent with the load; instructions
counted by valgrind do not. Run the workload twice per checkout, once with ``--mode build`` (create,
calibrate, add) and once with ``--mode search`` (the same plus searches); the difference is the cost of
the searches alone (200 single queries and 5 batches of 40, binary -> int8, k=10, one thread):

    PYTHONPATH=CHECKOUT/src valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/search_instructions.py --mode search      # and --mode build

and compare ``I refs`` (search minus build) between the checkouts.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

import quantsearch as qs
from quantsearch.kernels import set_num_threads


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("build", "search"), required=True)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:200] + 0.01 * rng.standard_normal((200, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        index = qs.Index.build(d + "/index", x, batch_size=2000)
        if args.mode == "search":
            for i in range(200):
                index.search(q[i], k=10)
            for i in range(5):
                index.search(q[40 * i : 40 * i + 40], k=10)
        index.close()


if __name__ == "__main__":
    main()
