"""MUVERA on the shared collections: quality, memory, recall of the exact Chamfer top 10, encoding speed.

Rows, all in the same run on the same cached token vectors (benchmarks/muvera_embed.py):

* ``dense-float``      single-vector all-MiniLM-L6-v2 (shared embeddings), exact float32 scan
* ``dense-index``      our single-vector pipeline: a real Index, 1-bit candidates -> int8 rescoring
* ``chamfer``          exact brute-force Chamfer over the float token vectors
* ``muvera-float``     float32 FDE inner products alone (no codes, no rerank)
* ``muvera``           the 1-bit FDE codes alone (the candidate tier in RAM), no rerank
* ``muvera>chamfer@N`` N candidates reranked by Chamfer over int8 tokens on disk (the index's default
  int8 FDE stage picks them from the codes' 4N shortlist; before session 5: the codes' top N)
* ``fastembed-fde``    fastembed's MUVERA postprocessor (its defaults) on the same token vectors, alone

plus the recall of the exact Chamfer top 10 against the number of candidates for the FDE codes and
for the single-vector heuristic (each query token's k nearest document tokens, union of their
documents), the paper's central figure, written as a PNG.

Run under the shared lock, one collection per call (each takes a few minutes on 2 cores)::

    flock /tmp/bench.lock .venv/bin/python benchmarks/muvera.py nfcorpus --plot docs/eval/muvera

fastembed is timed in a subprocess of its own virtual environment ($MUVERA_FASTEMBED_PYTHON, default
/work/scratch/muvera/fe-venv/bin/python), because its dependencies pin other versions of the hub
client than sentence-transformers here; it reads the same token files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from quantsearch import Index
from quantsearch.datasets import load_beir
from quantsearch.evaluation.metrics import ndcg_at_k
from quantsearch.multivector import FDEConfig, FDEEncoder, MultiVectorIndex, TokenBatch
from quantsearch.multivector.chamfer import chamfer_scores, heuristic_candidates, token_neighbours
from quantsearch.multivector.tokens import TokenEmbedder, cached_tokens

ROOT = Path(__file__).resolve().parents[2] / "shared"
CACHE = Path(os.environ.get("MUVERA_CACHE", "/work/scratch/muvera"))
FE_PYTHON = os.environ.get("MUVERA_FASTEMBED_PYTHON", str(CACHE / "fe-venv" / "bin" / "python"))
CANDIDATES = (10, 20, 30, 50, 100, 200, 300, 500, 1000)
HEURISTIC_K = (1, 2, 3, 5, 8, 12, 16, 24, 32, 48, 64, 96, 128)

_FASTEMBED_SCRIPT = r"""
import sys, time, numpy as np
from fastembed.postprocess.muvera import Muvera
vec, off, out = sys.argv[1], sys.argv[2], sys.argv[3]
kind = sys.argv[4]
v = np.load(vec, mmap_mode="r"); o = np.load(off)
m = Muvera(dim=v.shape[1], k_sim=5, dim_proj=16, r_reps=20, random_seed=42)
items = [np.asarray(v[o[i]:o[i+1]], np.float32) for i in range(o.shape[0] - 1)]
t0 = time.perf_counter()
f = m.process_document if kind == "doc" else m.process_query
enc = np.stack([f(x) for x in items]).astype(np.float32)
dt = time.perf_counter() - t0
np.save(out, enc)
print(dt)
"""


def run_of(query_ids: list[str], corpus_ids: list[str], rows: np.ndarray) -> dict[str, dict[str, float]]:
    """Each system's own order: the i-th result scores k - i (as the eval harness does)."""
    k = rows.shape[1]
    return {
        q: {corpus_ids[r]: float(k - j) for j, r in enumerate(row) if r >= 0}
        for q, row in zip(query_ids, rows, strict=True)
    }


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall_of(candidates: list[np.ndarray] | np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean(
            [
                len(set(truth[i].tolist()) & set(np.asarray(c).tolist())) / truth.shape[1]
                for i, c in enumerate(candidates)
            ]
        )
    )


def fastembed_encode(docs: TokenBatch, kind: str, workdir: Path) -> tuple[np.ndarray, float] | None:
    if not Path(FE_PYTHON).is_file():
        return None
    vec, off, out = workdir / "v.npy", workdir / "o.npy", workdir / "f.npy"
    np.save(vec, np.asarray(docs.vectors, np.float32))
    np.save(off, docs.offsets)
    proc = subprocess.run(
        [FE_PYTHON, "-c", _FASTEMBED_SCRIPT, str(vec), str(off), str(out), kind],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print("fastembed failed:", proc.stderr.strip().splitlines()[-1:])
        return None
    return np.load(out), float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--candidates", default="rabitq-hadamard")
    parser.add_argument("--k-sim", type=int, default=5)
    parser.add_argument("--r-reps", type=int, default=20)
    parser.add_argument("--d-proj", type=int, default=16)
    parser.add_argument("--final-dim", type=int, default=None)
    parser.add_argument("--partition", default="kmeans", help="FDE partitions: kmeans or simhash")
    parser.add_argument("--rerank", default="50,100,200")
    parser.add_argument("--plot", default=None, help="folder for the recall-vs-candidates PNG and JSON")
    parser.add_argument("--no-fastembed", action="store_true")
    parser.add_argument("--no-heuristic", action="store_true")
    parser.add_argument(
        "--fastembed-docs",
        type=int,
        default=None,
        help="encode only the first N documents with fastembed (timing only; its quality rows need all)",
    )
    parser.add_argument("--queries", type=int, default=None, help="first N queries only (smoke tests)")
    parser.add_argument("--encode-runs", type=int, default=3, help="timed FDE encodings (median)")
    args = parser.parse_args()

    ds = load_beir(ROOT / "datasets" / args.name)
    embedder = TokenEmbedder()
    docs = cached_tokens(embedder, ds.corpus_texts, CACHE / args.name)
    queries = cached_tokens(embedder, ds.query_texts, CACHE / args.name, is_query=True)
    query_ids, qrels = ds.query_ids, ds.qrels
    if args.queries is not None:
        queries = queries.subset(np.arange(args.queries))
        query_ids = query_ids[: args.queries]
        qrels = {q: qrels[q] for q in query_ids if q in qrels}
    docs = TokenBatch(
        np.asarray(docs.vectors, np.float32), docs.offsets
    )  # float32 in RAM for the brute force
    queries = TokenBatch(np.asarray(queries.vectors, np.float32), queries.offsets)
    n, nq = docs.n, queries.n
    print(
        f"{args.name}: {n} docs, {docs.vectors.shape[0]} tokens ({docs.vectors.shape[0] / n:.0f}/doc), "
        f"{nq} queries ({queries.vectors.shape[0] / nq:.1f} tokens/query)"
    )
    rows_out: list[tuple[str, float, float, float, str]] = []

    def row(name: str, rows: np.ndarray, ram: float, disk: float, note: str = "") -> None:
        ndcg = ndcg_at_k(run_of(query_ids, ds.corpus_ids, rows), qrels, 10).mean
        rows_out.append((name, ndcg, ram, disk, note))
        print(f"{name:34s} {ndcg:8.4f} {ram:10.0f} {disk:11.0f}  {note}", flush=True)  # as it comes

    # ---- single-vector dense ----
    emb_dir = ROOT / "embeddings" / args.name
    dense_docs = np.load(emb_dir / "corpus.f16.npy").astype(np.float32)
    dense_q = np.load(emb_dir / "queries.f16.npy").astype(np.float32)[:nq]
    assert json.loads((emb_dir / "query_ids.json").read_text())[:nq] == query_ids
    row("dense-float", top_rows(dense_q @ dense_docs.T, 10), 384 * 4, 0)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        idx = Index.create(Path(tmp) / "dense", 384)
        idx.calibrate(dense_docs)
        idx.add(dense_docs, ids=np.arange(n))
        res = idx.search(dense_q, k=10)
        tiers = idx.info()["tiers"]
        ram = sum(t["ram_bytes"] for t in tiers) / n
        disk = sum(t["disk_bytes"] for t in tiers) / n
        row("dense-index (1-bit > int8)", res.ids, ram, disk)
        idx.close()

    # ---- exact Chamfer ----
    t0 = time.perf_counter()
    exact = chamfer_scores(queries, docs)
    t_exact = time.perf_counter() - t0
    truth = top_rows(exact, 10)
    row("chamfer", truth, 0, docs.vectors.shape[0] * 384 * 4 / n, f"brute force {t_exact:.1f} s")

    # ---- FDE ----
    config = FDEConfig(
        dim=384,
        k_sim=args.k_sim,
        r_reps=args.r_reps,
        d_proj=args.d_proj,
        final_dim=args.final_dim,
        partition=args.partition,
    )
    enc = FDEEncoder(config).fit(docs)  # k-means: on every document, as the index's one batch below
    t_ours = []
    for _ in range(max(1, args.encode_runs)):
        t0 = time.perf_counter()
        fde_docs = enc.encode_documents(docs)
        t_ours.append(time.perf_counter() - t0)
    fde_q = enc.encode_queries(queries)
    row("muvera-float", top_rows(fde_q @ fde_docs.T, 10), config.output_dim * 4, 0, f"{config.output_dim}-d")

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        mv = MultiVectorIndex.create(
            Path(tmp) / "mv",
            dim=384,
            embedder=embedder,
            fde=config,
            candidates=args.candidates,
            with_text=False,
        )
        mv.add(list(range(n)), tokens=docs)
        info = mv.info()
        ram, disk = info["ram_bytes_per_doc"], info["disk_bytes_per_doc"]
        res = mv.search(queries, k=10, rerank=False)
        row(f"muvera ({info['candidates']})", res.ids, ram, 0)
        for N in [int(x) for x in args.rerank.split(",")]:
            t0 = time.perf_counter()
            res = mv.search(queries, k=10, candidates=N)
            ms = (time.perf_counter() - t0) * 1e3 / nq
            row(f"muvera>chamfer@{N}", res.ids, ram, disk, f"{ms:.1f} ms/query")
        fde_recall = {}
        for N in CANDIDATES:
            if n < N:
                continue
            cand = mv.search(queries, k=N, rerank=False).ids
            fde_recall[N] = recall_of(cand, truth)
        del mv

    # ---- single-vector heuristic ----
    heur = {}
    if not args.no_heuristic:
        t0 = time.perf_counter()
        nb = token_neighbours(queries, docs, max(HEURISTIC_K))
        t_nb = time.perf_counter() - t0
        for k in HEURISTIC_K:
            cands = heuristic_candidates(nb, queries, docs, k)
            heur[k] = (float(np.mean([c.size for c in cands])), recall_of(cands, truth))
        print(f"token neighbours (exact, {max(HEURISTIC_K)} per query token): {t_nb:.1f} s")

    # ---- fastembed ----
    t_fe = t_ours_subset = None
    if not args.no_fastembed:
        m = n if args.fastembed_docs is None else min(n, args.fastembed_docs)
        subset = docs.subset(np.arange(m))
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            got = fastembed_encode(subset, "doc", Path(tmp))
            got_q = fastembed_encode(queries, "query", Path(tmp)) if got and m == n else None
        if got:
            t_fe = got[1]
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                enc.encode_documents(subset)
                times.append(time.perf_counter() - t0)
            t_ours_subset = (m, float(np.median(times)))
        if got and got_q:
            fe_docs = got[0]
            fe_est = got_q[0] @ fe_docs.T
            row(
                "fastembed-fde (float)",
                top_rows(fe_est, 10),
                fe_docs.shape[1] * 4,
                0,
                f"{fe_docs.shape[1]}-d",
            )
            fe_recall = {N: recall_of(top_rows(fe_est, N), truth) for N in CANDIDATES if n >= N}
            print("fastembed FDE recall of the Chamfer top 10 by candidates:", fe_recall)

    # ---- report ----
    print(f"\n{'config':34s} {'NDCG@10':>8s} {'RAM B/doc':>10s} {'disk B/doc':>11s}  note")
    for name, ndcg, ram, disk, note in rows_out:
        print(f"{name:34s} {ndcg:8.4f} {ram:10.0f} {disk:11.0f}  {note}")
    med = float(np.median(t_ours))
    print(f"\nFDE encoding of {n} documents: ours {med:.2f} s (median of {len(t_ours)})")
    if t_fe and t_ours_subset:
        m, ours = t_ours_subset
        print(
            f"FDE encoding of {m} documents: ours {ours:.3f} s (median of 3), fastembed {t_fe:.2f} s: "
            f"{t_fe / ours:.1f}x faster"
        )
    print("\nrecall of the exact Chamfer top 10 vs candidates")
    print("FDE codes:  " + "  ".join(f"{N}:{r:.3f}" for N, r in fde_recall.items()))
    if heur:
        print("heuristic:  " + "  ".join(f"k={k}:{c:.0f}:{r:.3f}" for k, (c, r) in heur.items()))
        need_fde = next((N for N, r in fde_recall.items() if r >= 0.95), None)
        need_h = next((c for c, r in heur.values() if r >= 0.95), None)
        print(
            f"candidates for >= 0.95 recall: FDE {need_fde}, heuristic {need_h and round(need_h)}"
            + (f" (ratio {need_h / need_fde:.1f}x)" if need_fde and need_h else "")
        )
    if args.plot:
        out = Path(args.plot)
        out.mkdir(parents=True, exist_ok=True)
        data = {"fde": fde_recall, "heuristic": heur, "rows": rows_out}
        (out / f"{args.name}.json").write_text(json.dumps(data, indent=1) + "\n")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot(list(fde_recall), list(fde_recall.values()), "o-", label=f"FDE ({args.candidates})")
        if heur:
            ax.plot(
                [c for c, _ in heur.values()],
                [r for _, r in heur.values()],
                "s-",
                label="single-vector heuristic",
            )
        ax.axhline(0.95, color="grey", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("candidates per query")
        ax.set_ylabel("recall of exact Chamfer top 10")
        ax.set_title(f"{args.name}: MiniLM token vectors")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out / f"{args.name}.png", dpi=110)


if __name__ == "__main__":
    main()
