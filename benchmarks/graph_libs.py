"""Which HNSW library to wrap for the graph stage: faiss ``IndexBinaryHNSW`` vs usearch (b1, Hamming).

Same codes (the first ``--rows`` binary codes of the collection ``benchmarks/ann.py`` prepared), same
queries (its queries, binarized), same graph degree and insertion effort; per setting: build seconds
(both with every thread), recall@10 of the graph against the exact Hamming top 10 (faiss
``IndexBinaryFlat``), single-query QPS (one thread, as the stage runs one query), and RAM bytes per
vector. The graph stage's own rows (after rescoring) are in benchmarks/ann.py.

    flock /tmp/bench.lock .venv/bin/python benchmarks/graph_libs.py --rows 200000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from quantsearch import Index


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / t.size for f, t in pairs]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/scratch/ann/n1000000-d1024-q200-s0"))
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--m", type=int, nargs="+", default=[16, 32])
    p.add_argument("--expansion-add", type=int, nargs="+", default=[40, 128])
    p.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import faiss
    from usearch.index import Index as UsearchIndex

    with Index.open(args.data / "idx", readonly=True) as index:
        quantizer = index._state.view.stage.quantizer
        codes = np.ascontiguousarray(index._state.view.codes[: args.rows])
        with np.load(args.data / "truth.npz") as f:
            q = np.ascontiguousarray(quantizer.encode(f["queries"]))
    bits = codes.shape[1] * 8
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(codes)
    _, truth = flat.search(q, 10)
    print(f"{args.rows:,} codes of {bits} bits, {q.shape[0]} queries; recall@10 vs exact Hamming")

    def report(name: str, build_s: float, ram: float, search) -> None:  # type: ignore[no-untyped-def]
        for ef in args.ef:
            ids = search(q, ef)
            t0 = time.perf_counter()
            for i in range(q.shape[0]):
                search(q[i : i + 1], ef)
            qps = q.shape[0] / (time.perf_counter() - t0)
            print(f"{name:34s} build {build_s:6.1f} s  ram {ram:5.0f} B/vec  ef={ef:<4d} "
                  f"recall {recall(ids, truth):.3f}  qps {qps:6.0f}", flush=True)  # fmt: skip

    for m in args.m:
        for ea in args.expansion_add:
            faiss.omp_set_num_threads(args.threads)
            graph = faiss.IndexBinaryHNSW(bits, m)
            graph.hnsw.efConstruction = ea
            t0 = time.perf_counter()
            graph.add(codes)
            build_s = time.perf_counter() - t0
            ram = faiss.serialize_index_binary(graph).nbytes / args.rows

            def f_search(x: np.ndarray, ef: int, graph=graph) -> np.ndarray:  # type: ignore[no-untyped-def]
                params = faiss.SearchParametersHNSW()
                params.efSearch = ef
                faiss.omp_set_num_threads(min(args.threads, x.shape[0]))
                return graph.search(x, 10, params=params)[1]

            report(f"faiss IndexBinaryHNSW M={m} efC={ea}", build_s, ram, f_search)
            del graph
            u = UsearchIndex(ndim=bits, metric="hamming", dtype="b1", connectivity=m, expansion_add=ea)
            t0 = time.perf_counter()
            u.add(np.arange(args.rows), codes, threads=args.threads)
            build_s = time.perf_counter() - t0

            def u_search(x: np.ndarray, ef: int, u=u) -> np.ndarray:  # type: ignore[no-untyped-def]
                u.expansion_search = ef
                res = u.search(x, 10, threads=min(args.threads, x.shape[0]))
                return np.asarray(res.keys).reshape(x.shape[0], -1)

            report(f"usearch b1 M={m} expansion_add={ea}", build_s, u.memory_usage / args.rows, u_search)
            del u


if __name__ == "__main__":
    main()
