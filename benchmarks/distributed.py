"""Sharded serving and ingestion on Ray, on this machine (issue 13).

Prints, in one run on one local Ray:

1. search: p50 latency of one query and QPS (single queries, and batches of 64) for one local
   ``Index`` and for the same vectors in 1, 2 and 4 shards served by Ray actors; the fan-out +
   merge overhead is the sharded p50 minus the local index's p50 (same vectors, same k);
2. peak RSS (VmHWM) of each shard actor against its codes in RAM and an idle actor's RSS;
3. ingestion: docs/s of the Ray Data pipeline into 1, 2 and 4 shards from precomputed vectors
   (Parquet), and with the bundled model embedding text in 1 and 2 actors (parallel efficiency =
   docs/s with 2 / (2 x docs/s with 1), steady state: from the first committed batch on).

    flock /tmp/bench.lock python benchmarks/distributed.py [--n 400000] [--dim 384] [--repeats 3]

Data are seeded random unit vectors (the model is not the point of the search figures); the
text for the embedding runs is the first documents of ../shared/datasets/scifact.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from quantsearch import Index
from quantsearch.distributed import ShardedIndex, create_sharded

SHARED = Path(__file__).resolve().parents[2] / "shared"


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def p50_ms(fn, queries: np.ndarray, warm: int = 5) -> float:
    for q in queries[:warm]:
        fn(q[None, :])
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q[None, :])
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def batch_qps(fn, queries: np.ndarray, batch: int = 64) -> float:
    fn(queries[:batch])
    t0 = time.perf_counter()
    n = 0
    for s in range(0, len(queries), batch):
        fn(queries[s : s + batch])
        n += len(queries[s : s + batch])
    return n / (time.perf_counter() - t0)


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def search_part(args: argparse.Namespace, ray, work: Path) -> None:
    from quantsearch.distributed.layout import read_shard_manifest
    from quantsearch.distributed.serving import RayShardedIndex

    vectors = unit(args.n, args.dim, 0)
    queries = unit(args.queries, args.dim, 1)
    ids = list(range(args.n))
    t0 = time.perf_counter()
    single = Index.build(work / "single", vectors, ids=ids, batch_size=100_000)
    print(f"built one index of {args.n:,} x {args.dim} in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    local = {"p50": [], "qps": []}
    for _ in range(args.repeats):
        local["p50"].append(p50_ms(lambda q: single.search(q, 10, with_payload=False), queries))
        local["qps"].append(batch_qps(lambda q: single.search(q, 10, with_payload=False), queries))
    base_p50 = statistics.median(local["p50"])
    rows.append(("one local Index", base_p50, 1e3 / base_p50, statistics.median(local["qps"]), 0.0))
    rss_rows = []
    for n_shards in (1, 2, 4):
        path = work / f"s{n_shards}"
        create_sharded(path, args.dim, n_shards, calibration=vectors[:100_000])
        with ShardedIndex.open(path) as loc:
            for s in range(0, args.n, 100_000):
                loc.add(vectors[s : s + 100_000], ids[s : s + 100_000])
        served = RayShardedIndex(read_shard_manifest(path))
        p50s, qpss = [], []
        for _ in range(args.repeats):
            p50s.append(p50_ms(lambda q, s=served: s.search(q, 10, with_payload=False), queries))
            qpss.append(batch_qps(lambda q, s=served: s.search(q, 10, with_payload=False), queries))
        p50 = statistics.median(p50s)
        rows.append(
            (f"Ray, {n_shards} shard actor(s)", p50, 1e3 / p50, statistics.median(qpss), p50 - base_p50)
        )
        infos = ray.get([a.info.remote() for a in served.actors])
        pids = ray.get([a.pid.remote() for a in served.actors])
        for s, (pid, info) in enumerate(zip(pids, infos, strict=True)):
            codes = sum(t["ram_bytes"] for t in info["tiers"]) + info["valid_mask_ram_bytes"]
            rss_rows.append(
                (n_shards, s, rss_kb(pid, "VmHWM") / 1024, rss_kb(pid, "VmRSS") / 1024, codes / 2**20)
            )
        served.close()
    # an actor over an empty shard: the interpreter + numpy + quantsearch, no codes
    empty = work / "empty"
    create_sharded(empty, args.dim, 1, calibration=vectors[:1000])
    idle = RayShardedIndex(read_shard_manifest(empty))
    idle_pid = ray.get(idle.actors[0].pid.remote())
    idle_rss = rss_kb(idle_pid, "VmHWM") / 1024
    idle.close()
    single.close()

    print(
        f"\nsearch, {args.n:,} x {args.dim}-d, binary -> int8 x10, k=10, {args.queries} queries, "
        f"median of {args.repeats} runs"
    )
    print(f"{'':<28} {'p50 ms':>8} {'QPS (1 query)':>14} {'QPS (batch 64)':>15} {'overhead p50 ms':>16}")
    for name, p50, qps1, qpsb, over in rows:
        print(f"{name:<28} {p50:>8.2f} {qps1:>14.0f} {qpsb:>15.0f} {over:>16.2f}")
    print(f"\npeak RSS per shard actor (idle actor over an empty shard: {idle_rss:.0f} MiB)")
    print(
        f"{'shards':>6} {'shard':>5} {'VmHWM MiB':>10} {'VmRSS MiB':>10} {'codes MiB':>10} "
        f"{'(HWM - idle) / codes':>21}"
    )
    for n_shards, s, hwm, rss, codes in rss_rows:
        print(
            f"{n_shards:>6} {s:>5} {hwm:>10.0f} {rss:>10.0f} {codes:>10.1f} {(hwm - idle_rss) / codes:>21.2f}"
        )
    return None


def ingest_part(args: argparse.Namespace, work: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quantsearch.distributed.ingestion import ingest

    n = args.ingest_n
    vectors = unit(n, args.dim, 2)
    pq.write_table(
        pa.table({"_id": [f"d{i}" for i in range(n)], "text": [""] * n, "vector": list(vectors)}),
        work / "vectors.parquet",
        row_group_size=4096,
    )
    print(
        f"\ningestion of {n:,} precomputed {args.dim}-d vectors (Parquet), 1 worker, median of "
        f"{args.repeats} runs"
    )
    print(f"{'shards':>6} {'docs/s (wall)':>14} {'docs/s (steady)':>16}")
    for n_shards in (1, 2, 4):
        walls, steadies = [], []
        for r in range(args.repeats):
            out = work / f"ing{n_shards}-{r}"
            report = ingest(
                work / "vectors.parquet",
                out,
                n_shards=n_shards,
                vector_field="vector",
                model=None,
                calibration_size=2048,
                batch_size=1024,
                workers=1,
            )
            walls.append(n / report.seconds)
            steadies.append(report.steady_docs_per_s)
        print(f"{n_shards:>6} {statistics.median(walls):>14.0f} {statistics.median(steadies):>16.0f}")

    corpus = SHARED / "datasets" / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        print("(no ../shared/datasets/scifact: embedding runs skipped)")
        return
    lines = corpus.read_text(encoding="utf-8").splitlines()[: args.embed_n]
    (work / "text.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(
        f"\ningestion with the bundled all-MiniLM-L6-v2 ({len(lines)} scifact documents, 2 shards), "
        f"median of "
        f"{args.repeats} runs; steady = from the first committed batch on"
    )
    print(f"{'workers':>7} {'docs/s (wall)':>14} {'docs/s (steady)':>16}")
    steady = {}
    for workers in (1, 2):
        walls, steadies = [], []
        for r in range(args.repeats):
            out = work / f"emb{workers}-{r}"
            report = ingest(
                work / "text.jsonl", out, n_shards=2, calibration_size=64, batch_size=64, workers=workers
            )
            walls.append(report.added / report.seconds)
            steadies.append(report.steady_docs_per_s)
        steady[workers] = statistics.median(steadies)
        print(f"{workers:>7} {statistics.median(walls):>14.1f} {steady[workers]:>16.1f}")
    print(f"parallel efficiency 1 -> 2 workers (steady): {steady[2] / (2 * steady[1]):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ingest-n", type=int, default=50_000)
    parser.add_argument("--embed-n", type=int, default=640)
    parser.add_argument("--skip", choices=("search", "ingest"), default=None)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"Ray {ray.__version__}, {os.cpu_count()} CPUs, {sys.version.split()[0]}", flush=True)
    root = Path(args.work) if args.work else None
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        work = Path(tmp)
        if args.skip != "search":
            search_part(args, ray, work)
        if args.skip != "ingest":
            ingest_part(args, work)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
