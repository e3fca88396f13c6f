"""Sharded serving and ingestion on Ray, on this machine (issue 13).

Prints, in one run on one local Ray (workers at nice 0, see ``serving.LOCAL_RAY_SYSTEM_CONFIG``):

1. ``search``: p50 latency of one query and QPS (single queries, and batches of 64) for one local
   ``Index``, the same vectors in 4 shards searched in this process (``ShardedIndex``, no Ray; one
   thread, and one thread per core), and in 1, 2 and 4 shards served by Ray actors (4 also through
   a compiled graph, ``compiled=True``, and grouped in 2 actors, ``actors=2``, plain and compiled;
   compiled graphs are torn down after their turn, as their actors poll and would slow the others);
   the fan-out + merge overhead is the sharded p50 minus
   the local index's p50 (same vectors, same k), and the Ray no-op call floors (1, 2, 4 actors);
2. ``rss``: peak RSS (VmHWM) of one shard actor over a shard big enough for the codes to dominate
   (``--rss-n`` x ``--rss-dim``), against its codes in RAM and an idle actor's RSS;
3. ``ingest``: docs/s of the Ray Data pipeline into 1, 2 and 4 shards from precomputed vectors;
4. ``embed``: docs/s with the bundled model embedding text in 1 and 2 actors of one torch thread
   each, runs interleaved 1, 2, 1, 2, ... (parallel efficiency = steady docs/s with 2 / (2 x with
   1), per pair; steady = each actor from its first committed batch on, summed).

    flock /tmp/bench.lock python benchmarks/distributed.py [--only search] [--n 400000] [--repeats 3]
    python benchmarks/distributed.py --only rss [--rss-shard DIR]   (a memory figure: no lock needed)

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


def search_part(args: argparse.Namespace, ray, work: Path) -> None:
    from quantsearch.distributed.layout import read_shard_manifest
    from quantsearch.distributed.serving import RayShardedIndex

    vectors = unit(args.n, args.dim, 0)
    queries = unit(args.queries, args.dim, 1)
    ids = list(range(args.n))
    t0 = time.perf_counter()
    single = Index.build(work / "single", vectors, ids=ids, batch_size=100_000)
    served = {}
    for n_shards in (1, 2, 4):
        path = work / f"s{n_shards}"
        create_sharded(path, args.dim, n_shards, calibration=vectors[:100_000])
        with ShardedIndex.open(path) as loc:
            for s in range(0, args.n, 100_000):
                loc.add(vectors[s : s + 100_000], ids[s : s + 100_000])
        served[n_shards] = RayShardedIndex(read_shard_manifest(path))
    s4 = read_shard_manifest(work / "s4")
    compiled = RayShardedIndex(s4, compiled=True)
    grouped = RayShardedIndex(s4, actors=2)
    grouped_compiled = RayShardedIndex(s4, actors=2, compiled=True)
    graphs = [compiled, grouped_compiled]
    in_process = ShardedIndex.open(work / "s4")  # shards on parallel threads (one per core)
    in_process_seq = ShardedIndex.open(work / "s4", threads=1)
    print(f"built and opened the indexes of {args.n:,} x {args.dim} in {time.perf_counter() - t0:.0f} s")

    def search(index):
        return lambda q: index.search(q, 10, with_payload=False)

    variants = {
        "one local Index": search(single),
        "4 shards in this process, 1 thread": search(in_process_seq),
        f"4 shards in this process, {in_process.threads} thr": search(in_process),
        **{f"Ray, {n} shard actor(s)": search(served[n]) for n in (1, 2, 4)},
        "Ray, 4 shards in 2 actors": search(grouped),
        "Ray, 4 shards, compiled graph": search(compiled),
        "Ray, 4 shards in 2 actors, compiled": search(grouped_compiled),
    }
    actors = served[4].actors
    floors = {
        f"Ray no-op call, {n} actor(s)": (lambda q, a=actors[:n]: ray.get([x.ping.remote() for x in a]))
        for n in (1, 2, 4)
    }
    p50s: dict[str, list[float]] = {name: [] for name in [*variants, *floors]}
    qps: dict[str, list[float]] = {name: [] for name in variants}
    split: list[float] = []  # 4 Ray shards: fan-out wall minus the slowest shard's own search time
    loads = []
    idle_cpu: list[float] = []  # CPU the 4 actors of a live compiled graph burn between searches
    pids = ray.get([a.pid.remote() for a in compiled.actors])
    for _ in range(args.repeats):  # interleaved: every variant once per round
        loads.append(os.getloadavg()[0])
        for name, fn in variants.items():
            p50s[name].append(p50_ms(fn, queries))
            qps[name].append(batch_qps(fn, queries))
            if name == "Ray, 4 shards, compiled graph":
                before = sum(cpu_s(p) for p in pids)
                time.sleep(1.0)
                idle_cpu.append(sum(cpu_s(p) for p in pids) - before)
            for index in graphs:  # a live graph's actors poll their channels and take the cores
                index.release_graph()  # from the other variants; the next search compiles again
        for name, fn in floors.items():
            p50s[name].append(p50_ms(fn, queries))
        gaps = []
        for q in queries:
            t = served[4].search(q[None, :], 10, with_payload=False).timings
            gaps.append(t["fanout"] - t["shard"])
        split.append(statistics.median(gaps))
    for index in [*served.values(), compiled, grouped, grouped_compiled]:
        index.close()
    in_process.close()
    in_process_seq.close()
    single.close()

    base = statistics.median(p50s["one local Index"])
    print(
        f"\nsearch, {args.n:,} x {args.dim}-d, binary -> int8 x10, k=10, {args.queries} queries, "
        f"median of {args.repeats} interleaved rounds (load average {min(loads):.2f}-{max(loads):.2f})"
    )
    print(f"{'':<37} {'p50 ms':>8} {'QPS (1 query)':>14} {'QPS (batch 64)':>15} {'overhead p50 ms':>16}")
    for name in variants:
        p50 = statistics.median(p50s[name])
        print(
            f"{name:<37} {p50:>8.2f} {1e3 / p50:>14.0f} {statistics.median(qps[name]):>15.0f} "
            f"{p50 - base:>16.2f}   ({' '.join(f'{x:.2f}' for x in p50s[name])})"
        )
    for name in floors:
        print(f"{name:<37} {statistics.median(p50s[name]):>8.2f}")
    print(
        f"4 actors of a live compiled graph, idle for 1 s: {statistics.median(idle_cpu):.2f} s of CPU "
        f"(rounds: {' '.join(f'{x:.2f}' for x in idle_cpu)})"
    )
    print(
        f"4 Ray shards: fan-out wall minus the slowest shard's own search, p50: "
        f"{statistics.median(split):.2f} ms (submit, transport, (de)serialization, waiting for a core)"
    )


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0])
    return out


def rss_part(args: argparse.Namespace, ray, work: Path) -> None:
    """Peak RSS of one shard actor over a shard big enough for the fixed cost not to dominate."""
    from quantsearch.distributed.layout import read_shard_manifest
    from quantsearch.distributed.serving import RayShardedIndex

    n, dim = args.rss_n, args.rss_dim
    path = Path(args.rss_shard) if args.rss_shard else work / "rss"
    step = 100_000
    if (path / "shards.json").is_file():  # kept from an earlier run (--rss-shard)
        with ShardedIndex.open(path) as loc:
            if len(loc) != n or loc.dim != dim:
                raise SystemExit(f"{path} holds {len(loc):,} x {loc.dim}, not {n:,} x {dim}")
        print(f"\nreusing the shard of {n:,} x {dim} in {path}", flush=True)
    else:
        t0 = time.perf_counter()
        create_sharded(path, dim, 1, calibration=unit(50_000, dim, 3))
        with ShardedIndex.open(path) as loc:
            for s in range(0, n, step):
                loc.add(unit(min(step, n - s), dim, 100 + s // step), list(range(s, min(n, s + step))))
        print(f"\nbuilt one shard of {n:,} x {dim} in {time.perf_counter() - t0:.0f} s", flush=True)
    # the shard's files were just written and sit in the page cache; drop them from it (these files
    # only), as for a server whose int8 tier is not cached: otherwise every rescoring page fault
    # maps up to 16 cached neighbours ("fault-around") and most of the tier shows up in RSS
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    empty = work / "rss-empty"
    create_sharded(empty, dim, 1, calibration=unit(1000, dim, 4))
    idle = RayShardedIndex(read_shard_manifest(empty))
    idle_kb = status_kb(ray.get(idle.actors[0].pid.remote()))
    idle.close()
    served = RayShardedIndex(read_shard_manifest(path))
    pid = ray.get(served.actors[0].pid.remote())
    opened = status_kb(pid)
    queries = unit(args.queries, dim, 5)
    for s in range(0, len(queries), 8):
        served.search(queries[s : s + 8], 10, with_payload=False)
    for q in queries:
        served.search(q[None, :], 10, with_payload=False)
    after = status_kb(pid)
    info = ray.get(served.actors[0].info.remote())
    served.close()
    codes = (sum(t["ram_bytes"] for t in info["tiers"]) + info["valid_mask_ram_bytes"]) / 2**20
    mib = {k: v / 1024 for k, v in after.items()}
    print(
        f"peak RSS of one shard actor, {n:,} x {dim}-d (binary codes in RAM, int8 tier memory-mapped), "
        f"{len(queries)} single + batched queries"
    )
    print(f"  codes in RAM (binary + deleted-row mask): {codes:.0f} MiB")
    print(
        f"  idle actor (empty shard): VmHWM {idle_kb['VmHWM'] / 1024:.0f} MiB "
        f"(RssAnon {idle_kb['RssAnon'] / 1024:.0f}, RssFile {idle_kb['RssFile'] / 1024:.0f})"
    )
    print(f"  after open:      VmHWM {opened['VmHWM'] / 1024:.0f} MiB")
    print(
        f"  after searches:  VmHWM {mib['VmHWM']:.0f} MiB, VmRSS {mib['VmRSS']:.0f} "
        f"(RssAnon {mib['RssAnon']:.0f}, RssFile {mib['RssFile']:.0f}: mapped int8 pages + libraries)"
    )
    print(
        f"  VmHWM / codes = {mib['VmHWM'] / codes:.2f} (goal <= 1.5; no model in a search actor); "
        f"(VmHWM - idle) / codes = {(mib['VmHWM'] - idle_kb['VmHWM'] / 1024) / codes:.2f}"
    )


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


def embed_part(args: argparse.Namespace, work: Path) -> None:
    """Parallel efficiency of the embedding pool: 1 and 2 actors, interleaved (1, 2, 1, 2, ...)."""
    from quantsearch.distributed.ingestion import ingest

    corpus = SHARED / "datasets" / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        print("(no ../shared/datasets/scifact: embedding runs skipped)")
        return
    lines = corpus.read_text(encoding="utf-8").splitlines()[: args.embed_n + 64]
    (work / "text.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(
        f"\ningestion with the bundled all-MiniLM-L6-v2 ({args.embed_n} scifact documents after a "
        f"64-document calibration head, 2 shards, batches of {args.embed_batch}, 1 torch thread per "
        f"actor), runs interleaved 1, 2, 1, 2, ...; steady = per actor from its first committed batch "
        f"on, summed over actors",
        flush=True,
    )
    print(f"{'pair':>4} {'workers':>7} {'docs/s (wall)':>14} {'docs/s (steady)':>16} {'load avg':>9}")
    steady: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.repeats):
        for workers in (1, 2):
            out = work / f"emb{workers}-{r}"
            report = ingest(
                work / "text.jsonl",
                out,
                n_shards=2,
                calibration_size=64,
                batch_size=args.embed_batch,
                workers=workers,
            )
            steady[workers].append(report.steady_docs_per_s)
            print(
                f"{r:>4} {workers:>7} {report.added / report.seconds:>14.1f} "
                f"{report.steady_docs_per_s:>16.1f} {os.getloadavg()[0]:>9.2f}",
                flush=True,
            )
    ratios = [b / (2 * a) for a, b in zip(steady[1], steady[2], strict=True)]
    print(
        f"parallel efficiency 1 -> 2 workers (steady, per pair): {' '.join(f'{x:.2f}' for x in ratios)}; "
        f"median {statistics.median(ratios):.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ingest-n", type=int, default=50_000)
    parser.add_argument("--embed-n", type=int, default=640)
    parser.add_argument("--embed-batch", type=int, default=32)
    parser.add_argument("--rss-n", type=int, default=2_500_000, help="documents of the RSS shard")
    parser.add_argument("--rss-dim", type=int, default=1024)
    parser.add_argument(
        "--rss-shard", default=None, help="build the RSS shard here and keep it (reused when it exists)"
    )
    parser.add_argument(
        "--only",
        choices=("search", "rss", "ingest", "embed"),
        action="append",
        default=None,
        help="run only these parts (repeatable; default: search, rss, ingest, embed)",
    )
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import ray

    from quantsearch.distributed.serving import ensure_ray

    ensure_ray(num_cpus=os.cpu_count())  # workers at nice 0 (LOCAL_RAY_SYSTEM_CONFIG)
    print(f"Ray {ray.__version__}, {os.cpu_count()} CPUs, {sys.version.split()[0]}", flush=True)
    root = Path(args.work) if args.work else None
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        work = Path(tmp)
        parts = args.only or ["search", "rss", "ingest", "embed"]
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        if "search" in parts:
            search_part(args, ray, work)
        if "rss" in parts:
            rss_part(args, ray, work)
        if "ingest" in parts:
            ingest_part(args, work)
        if "embed" in parts:
            embed_part(args, work)
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
