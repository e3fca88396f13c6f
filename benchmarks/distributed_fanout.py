"""Where a 4-shard fan-out over Ray spends its time (issue 13): interleaved variants of the call path.

8 rounds of 40 calls of each variant, interleaved, p50 over all: one local Index; the fan-out as it
was (numpy array and five options as arguments, a SearchResults pickled back); the wire path (one
argument of bytes and numbers, bytes back: ShardServer.search_wire); the full
RayShardedIndex.search (wire + merge); Ray no-op calls to 1, 2, 4 actors; then the wire search
through a compiled graph. Run it twice to compare Ray's default worker niceness (15) with 0:

    flock /tmp/bench.lock python benchmarks/distributed_fanout.py 100000
    flock /tmp/bench.lock env RAY_worker_niceness=0 python benchmarks/distributed_fanout.py 100000
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from quantsearch import Index
from quantsearch.distributed import ShardedIndex, create_sharded
from quantsearch.distributed.layout import read_shard_manifest
from quantsearch.distributed.serving import RayShardedIndex
from quantsearch.distributed.shard import search_request
from quantsearch.distributed.sharded import ShardedBase

DIM = 384


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def times(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def show(name: str, t: list[float]) -> None:
    t = sorted(t)
    print(f"{name:<45} p50 {statistics.median(t) * 1e3:7.3f} ms  p90 {t[int(0.9 * len(t))] * 1e3:7.3f}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    nice = os.environ.get("RAY_worker_niceness", "15")  # noqa: SIM112 - Ray's own spelling
    print("load", os.getloadavg(), "worker niceness", nice, flush=True)
    work = Path(tempfile.mkdtemp())
    vec, q = unit(n, DIM, 0), unit(64, DIM, 1)
    single = Index.build(work / "single", vec, ids=list(range(n)), batch_size=100_000)
    create_sharded(work / "s4", DIM, 4, calibration=vec[:50_000])
    with ShardedIndex.open(work / "s4") as loc:
        loc.add(vec, list(range(n)))
    served = RayShardedIndex(read_shard_manifest(work / "s4"))
    actors = served.actors
    i = [0]

    def nextq() -> np.ndarray:
        i[0] = (i[0] + 1) % len(q)
        return q[i[0] : i[0] + 1]

    variants = {
        "local Index": lambda: single.search(nextq(), 10, with_payload=False),
        "old fan-out (ndarray args, SearchResults)": lambda: ShardedBase._search_shards(
            served, nextq(), 10, None, None, False, False
        ),
        "wire fan-out (bytes + numbers)": lambda: served._search_shards(
            nextq(), 10, None, None, False, False
        ),
        "RayShardedIndex.search (wire + merge)": lambda: served.search(nextq(), 10, with_payload=False),
        "ping x1": lambda: ray.get(actors[0].ping.remote()),
        "ping x2": lambda: ray.get([a.ping.remote() for a in actors[:2]]),
        "ping x4": lambda: ray.get([a.ping.remote() for a in actors]),
    }
    for fn in variants.values():
        times(fn, 20)
    res: dict[str, list[float]] = {name: [] for name in variants}
    loads = []
    for _ in range(8):
        loads.append(os.getloadavg()[0])
        for name, fn in variants.items():
            res[name] += times(fn, 40)
    print(f"N={n}, 4 shards, 8 interleaved rounds x 40 calls, load avg {min(loads):.2f}-{max(loads):.2f}")
    for name, t in res.items():
        show(name, t)
    try:
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as inp:
            dag = MultiOutputNode([a.search_wire.bind(inp) for a in actors])
        graph = dag.experimental_compile()

        def compiled() -> None:
            ray.get(graph.execute(search_request(nextq(), 10, None, None, False, False)))

        times(compiled, 20)
        show("compiled graph search_wire x4", times(compiled, 200))
        graph.teardown()
    except Exception as exc:  # noqa: BLE001 - report and go on
        print("compiled graph failed:", type(exc).__name__, str(exc)[:300])
    served.close()
    single.close()
    ray.shutdown()
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
