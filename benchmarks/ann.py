"""ANN candidate stages against our exact scan and faiss's binary IVF / HNSW, same data, same run.

Data: synthetic vectors whose covariance spectrum and neighbour structure follow real embeddings
(all-MiniLM-L6-v2 over the four shared collections, ../shared/embeddings): a Gaussian mixture whose
centres and within-cluster noise split the real covariance (eigenvalues interpolated to ``--dim``,
random orthogonal basis, real mean norm), with the split chosen so that the mean cosine to the 10th
nearest neighbour matches the real corpus at the same size; then normalised. Documents are generated
block by block from per-block seeds, so nothing is kept in RAM or written except the index under
``--work-dir``; queries are drawn from the same mixture. ``--compare-real`` prints the IVF recall curve
on the real embeddings (11.7k documents, their 924 test queries) beside the curve on synthetic data of
the same size, which is how the generator is checked.

Ground truth: exact float32 top-10 by inner product, streamed over the blocks.

Every row runs the same pipeline (our ``run_pipeline``: candidate stage -> int8 rescoring from the
memory map, k=10, oversampling 10) on one index; only the candidate stage differs: our exact
Hamming scan, our IVF at several ``nprobe``, and faiss ``IndexBinaryIVF`` / ``IndexBinaryHNSW``
(over the same binary codes, wrapped as candidate stages). Per row: recall@10 after rescoring,
QPS for single queries and for one batch, build seconds of the structure (from codes in RAM), RAM
bytes per vector (codes + structure), disk bytes per vector.

    flock /tmp/bench.lock .venv/bin/python benchmarks/ann.py --n 200000 --dim 384 --queries 200 \\
        --json /work/scratch/ann/ann-200k.json
    .venv/bin/python benchmarks/ann.py --compare-real
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch import Index
from quantsearch.index.calibration import calibrate_stage
from quantsearch.index.graph import GraphStage
from quantsearch.index.ivf import IVFStage
from quantsearch.index.pipeline import run_pipeline
from quantsearch.index.stages import CandidateStage, ExactScan
from quantsearch.kernels import get_num_threads

EMBEDDINGS = Path(__file__).resolve().parents[1].parent / "shared" / "embeddings"
COLLECTIONS = ("nfcorpus", "scifact", "cranfield", "cisi")
BLOCK = 50_000
K = 10
OVERSAMPLING = 10.0  # the index's default; --oversampling changes it for every row


# ---- data -------------------------------------------------------------------------------------------
def real_embeddings() -> tuple[np.ndarray, np.ndarray]:
    docs = [np.load(EMBEDDINGS / c / "corpus.f16.npy").astype(np.float32) for c in COLLECTIONS]
    queries = [np.load(EMBEDDINGS / c / "queries.f16.npy").astype(np.float32) for c in COLLECTIONS]
    return np.concatenate(docs), np.concatenate(queries)


def knn10_cosine(x: np.ndarray, sample: int = 500, seed: int = 0) -> float:
    """Mean cosine of a sample of points to their 10th nearest neighbour (self excluded)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(x.shape[0], size=min(sample, x.shape[0]), replace=False)
    sims = x[idx] @ x.T
    sims[np.arange(idx.size), idx] = -np.inf
    return float(np.mean(np.sort(sims, axis=1)[:, -10]))


@dataclasses.dataclass
class Generator:
    """Two-level Gaussian mixture fitted to real embeddings: x = normalise(mean + basis (sd * z)) with
    z = sqrt(between / 2) (coarse centre + fine centre) + sqrt(1 - between) noise, and queries mixed
    with extra noise (``query_noise``), as real queries sit further from the corpus than documents
    sit from each other."""

    dim: int
    mean: np.ndarray  # (dim,)
    basis: np.ndarray  # (dim, dim) orthogonal
    sd: np.ndarray  # (dim,) sqrt of the covariance eigenvalues
    between: float  # share of the variance between cluster centres
    query_noise: float  # share of a query's variance replaced by fresh noise
    seed: int
    fine_size: int = 16  # documents per fine cluster (on average)
    coarse_size: int = 1000  # documents per coarse cluster

    @classmethod
    def fit(cls, real: np.ndarray, real_queries: np.ndarray, dim: int, seed: int = 0) -> Generator:
        mu = real.mean(axis=0)
        cov = np.cov(real - mu, rowvar=False)
        eig = np.sort(np.linalg.eigvalsh(cov))[::-1].clip(min=1e-12)
        # the spectrum on a normalised index, interpolated (log-linear) to the wanted dimension
        src = (np.arange(eig.size) + 0.5) / eig.size
        dst = (np.arange(dim) + 0.5) / dim
        spec = np.exp(np.interp(dst, src, np.log(eig))) * (eig.size / dim)
        rng = np.random.default_rng([seed, 1])
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        mean = rng.standard_normal(dim)
        mean *= np.linalg.norm(mu) / np.linalg.norm(mean)
        gen = cls(dim, mean.astype(np.float32), basis.astype(np.float32), np.sqrt(spec).astype(np.float32),
                  0.5, 0.0, seed)  # fmt: skip
        n = real.shape[0]
        target = knn10_cosine(real)
        grid = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
        between = min(grid, key=lambda b: abs(knn10_cosine(gen.with_(between=b).block(0, n, n)) - target))
        gen = gen.with_(between=between)
        docs = gen.block(0, n, n)
        q_target = float(np.mean(np.sort(real_queries @ real.T, axis=1)[:, -10]))

        def q_cos(g: float) -> float:
            qs = gen.with_(query_noise=g).block(0, 300, n, queries=True)
            return float(np.mean(np.sort(qs @ docs.T, axis=1)[:, -10]))

        return gen.with_(
            query_noise=min((0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6), key=lambda g: abs(q_cos(g) - q_target))
        )

    def with_(self, **changes: float) -> Generator:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def _centres(self, level: int, ids: np.ndarray) -> np.ndarray:
        """Centre vectors (len(ids), dim) of one level, each from its own seed (nothing stored)."""
        return np.stack(
            [np.random.default_rng([self.seed, level, int(c)]).standard_normal(self.dim) for c in ids]
        )

    def block(self, b: int, size: int, n_total: int, *, queries: bool = False) -> np.ndarray:
        """Block ``b`` (size, dim) float32 of a collection of ``n_total`` vectors (seeded per block)."""
        n_fine = max(1, n_total // self.fine_size)
        n_coarse = max(1, n_total // self.coarse_size)
        rng = np.random.default_rng([self.seed, 3 if queries else 4, b])
        fine = rng.integers(0, n_fine, size)
        uniq, inv = np.unique(fine, return_inverse=True)
        parents = np.unique(uniq % n_coarse, return_inverse=True)
        coarse = self._centres(6, parents[0])[parents[1]]
        centre = (coarse + self._centres(5, uniq)) / np.sqrt(2)
        z = np.sqrt(self.between) * centre[inv] + np.sqrt(1 - self.between) * rng.standard_normal(
            (size, self.dim)
        )
        if queries:
            z = np.sqrt(1 - self.query_noise) * z + np.sqrt(self.query_noise) * rng.standard_normal(
                (size, self.dim)
            )
        x = self.mean + (z.astype(np.float32) * self.sd) @ self.basis.T
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def blocks(self, n: int, first: int = 0):
        """(start, block) over the collection, from the block holding row ``first`` on."""
        for b, start in enumerate(range(0, n, BLOCK)):
            if start + BLOCK > first:
                yield start, self.block(b, min(BLOCK, n - start), n)


SELECTIVITIES = (0.5, 0.1, 0.01)


def filter_masks(n: int, seed: int) -> dict[float, np.ndarray]:
    """Random row masks keeping 50%, 10% and 1% of the documents (independent of the vectors)."""
    u = np.random.default_rng([seed, 9]).random(n)
    return {sel: u < sel for sel in SELECTIVITIES}


def ground_truth(
    gen: Generator, n: int, q: np.ndarray, k: int = K, mask: np.ndarray | None = None
) -> np.ndarray:
    """Exact float32 top-k rows (nq, k) streamed over the generated blocks (only rows in ``mask``)."""
    best_s = np.full((q.shape[0], 0), -np.inf, np.float32)
    best_r = np.zeros((q.shape[0], 0), np.int64)
    for start, x in gen.blocks(n):
        sims = q @ x.T
        if mask is not None:
            sims[:, ~mask[start : start + x.shape[0]]] = -np.inf
        s = np.concatenate([best_s, sims], axis=1)
        r = np.concatenate(
            [best_r, np.broadcast_to(np.arange(start, start + x.shape[0]), (q.shape[0], x.shape[0]))], axis=1
        )
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(s, top, 1), np.take_along_axis(r, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_r, order, 1)


# ---- peers as candidate stages ----------------------------------------------------------------------
class FaissStage(CandidateStage):
    """A faiss binary index over the same codes, returning ``n`` candidates (rows) per query."""

    kind = "bench-faiss"

    def __init__(self, quantizer: Any, index: Any, set_param: Any) -> None:
        super().__init__(quantizer)
        self.index = index
        self.set_param = set_param

    def search(self, queries, codes, n, *, valid, **options):  # type: ignore[no-untyped-def]
        import faiss

        self.set_param(int(options.get("setting") or 0), n)
        faiss.omp_set_num_threads(min(get_num_threads(), queries.shape[0]))  # as our graph stage does
        d, rows = self.index.search(self.quantizer.encode(queries), n)
        return np.where(rows >= 0, -d.astype(np.float32), np.nan), rows.astype(np.int64)


class UsearchStage(CandidateStage):
    """A usearch b1 / Hamming HNSW over the same codes (keys = rows)."""

    kind = "bench-usearch"

    def __init__(self, quantizer: Any, index: Any) -> None:
        super().__init__(quantizer)
        self.index = index

    def search(self, queries, codes, n, *, valid, **options):  # type: ignore[no-untyped-def]
        self.index.expansion_search = max(int(options.get("setting") or 0), n)
        m = self.index.search(
            self.quantizer.encode(queries), n, threads=min(get_num_threads(), queries.shape[0])
        )
        keys = np.asarray(m.keys, np.int64).reshape(queries.shape[0], -1)
        dist = np.asarray(m.distances, np.float32).reshape(queries.shape[0], -1)
        counts = np.asarray(m.counts).reshape(-1, 1) if hasattr(m, "counts") else None
        if counts is not None:
            keys = np.where(np.arange(keys.shape[1]) < counts, keys, -1)
        return np.where(keys >= 0, -dist, np.nan), keys


# ---- measurement ------------------------------------------------------------------------------------
def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean(
            [
                len(set(f.tolist()) & set(t.tolist())) / truth.shape[1]
                for f, t in zip(found, truth, strict=True)
            ]
        )
    )


_oversampling = [OVERSAMPLING]


def measure(view: Any, stage: CandidateStage, q: np.ndarray, truth: np.ndarray, options: dict[str, Any],
            runs: int, valid: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    v = dataclasses.replace(view, stage=stage)
    mask = None if valid is None else valid & view.valid

    def once(batch: np.ndarray) -> np.ndarray:
        return run_pipeline(
            v, batch, K, oversampling=_oversampling[0], stages=("int8",), stage_options=options, valid=mask
        ).rows

    rows = once(q)
    batch_t = []
    single_t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        once(q)
        batch_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(q.shape[0]):
            once(q[i : i + 1])
        single_t.append(time.perf_counter() - t0)
    return {
        "recall_at_10": recall_at(rows, truth),
        "qps": q.shape[0] / float(np.median(single_t)),
        "batch_qps": q.shape[0] / float(np.median(batch_t)),
    }


def prepare(args: argparse.Namespace, data: Path) -> None:
    """One pass over the generated blocks: the index (exact stage, binary + int8) and the ground truth
    (unfiltered and at each selectivity), saved under ``data`` for every later run.

    Resumable (a 10M prepare takes hours on a loaded 2-core machine): every block is one atomic
    ``Index.add`` into ``idx.tmp``, and the ground-truth heaps are saved (atomically) after it with
    the rows they cover; a new run continues from the rows the index holds, regenerating (without
    adding) any block the saved heaps miss. Peak RSS and seconds of each run go to ``prepare.log``."""
    real, real_q = real_embeddings()
    gen = Generator.fit(real, real_q, args.dim, seed=args.seed)
    n = args.n
    q = gen.block(0, args.queries, n, queries=True)
    masks = filter_masks(n, args.seed)
    tmp = data / "idx.tmp"
    ckpt = data / "heaps.tmp.npz"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    heaps: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    heap_rows = 0
    if (tmp / "manifest.json").is_file():
        index = Index.open(tmp)
        if ckpt.is_file():
            with np.load(ckpt) as f:
                heap_rows = int(f["rows"])
                heaps = {float(k[2:]): (f[k], f["r_" + k[2:]]) for k in f.files if k.startswith("s_")}
        print(f"resuming: index holds {len(index):,} rows, ground truth covers {heap_rows:,}", flush=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        index = Index.create(tmp, args.dim, calibration=gen.block(10_000, 20_000, n))
    done = len(index)
    for start, x in gen.blocks(n, first=min(done, heap_rows)):
        if start >= done:
            index.add(x)
        sims = q @ x.T
        for key, mask in [(1.0, None), *masks.items()]:
            s = sims if mask is None else np.where(mask[start : start + x.shape[0]], sims, -np.inf)
            best_s, best_r = heaps.get(key, (np.full((q.shape[0], 0), -np.inf, np.float32),
                                             np.zeros((q.shape[0], 0), np.int64)))  # fmt: skip
            s = np.concatenate([best_s, s], axis=1)
            r = np.concatenate(
                [best_r, np.broadcast_to(np.arange(start, start + x.shape[0]), (q.shape[0], x.shape[0]))], 1
            )
            top = np.argpartition(-s, K - 1, axis=1)[:, :K]
            heaps[key] = (np.take_along_axis(s, top, 1), np.take_along_axis(r, top, 1))
        arrays = {f"s_{k}": v[0] for k, v in heaps.items()} | {f"r_{k}": v[1] for k, v in heaps.items()}
        np.savez(data / "heaps.part.npz", rows=start + x.shape[0], **arrays)
        (data / "heaps.part.npz").replace(ckpt)
        if (start // BLOCK) % 20 == 19:
            print(f"{start + x.shape[0]:,} rows, {time.perf_counter() - t0:.0f} s", flush=True)
    index.close()
    truth = {}
    for key, (best_s, best_r) in heaps.items():
        truth[f"truth_{key}"] = np.take_along_axis(best_r, np.argsort(-best_s, axis=1), 1)
    np.savez(data / "truth.npz", queries=q, **truth)
    (data / "idx").exists() and shutil.rmtree(data / "idx")
    tmp.rename(data / "idx")
    ckpt.unlink(missing_ok=True)
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with open(data / "prepare.log", "a") as log:
        log.write(f"run from {min(done, heap_rows):,} rows: {took:.1f} s, peak RSS {peak:.2f} GB\n")
    if not (data / "index_build_s.txt").is_file() or min(done, heap_rows) == 0:
        (data / "index_build_s.txt").write_text(f"{took:.1f}\n")
    print(f"prepared {n:,} x {args.dim} in {took:.1f} s (peak RSS {peak:.2f} GB) under {data}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = args.data_dir / f"n{args.n}-d{args.dim}-q{args.queries}-s{args.seed}"
    if not (data / "truth.npz").is_file():
        prepare(args, data)
        if args.prepare_only:
            return {}
    with np.load(data / "truth.npz") as f:
        q = f["queries"]
        truth = f["truth_1.0"]
        filtered = {sel: f[f"truth_{sel}"] for sel in SELECTIVITIES}
    return _run(args, q, truth, filtered, data)


def _run(
    args: argparse.Namespace, q: np.ndarray, truth: np.ndarray, filtered_truth: dict[float, np.ndarray],
    data: Path,
) -> dict[str, Any]:  # fmt: skip
    n, dim = args.n, args.dim
    nlist = args.nlist or int(round(2 * np.sqrt(n)))
    index = Index.open(data / "idx", readonly=True)
    index_s = float((data / "index_build_s.txt").read_text())
    view = index._state.view
    quantizer = view.stage.quantizer
    codes = view.codes
    disk = sum(p.stat().st_size for p in (data / "idx").rglob("*") if p.is_file()) / n
    code_b = codes.shape[1]
    work = Path(tempfile.mkdtemp(prefix="ann-", dir=args.work_dir))
    masks = filter_masks(n, args.seed)
    want = set(args.rows)
    rows: list[dict[str, Any]] = []

    def add_row(name: str, stage: CandidateStage, options: dict[str, Any], build_s: float, ram: float,
                sel: float = 1.0, extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        if sel < 1.0:
            m = measure(view, stage, q, filtered_truth[sel], options, args.runs, valid=masks[sel])
        else:
            m = measure(view, stage, q, truth, options, args.runs)
        row = {"name": name, **m, "build_s": round(build_s, 2), "ram_bytes_per_vector": round(ram, 1),
               "disk_bytes_per_vector": round(disk, 1), **(extra or {})}  # fmt: skip
        if sel < 1.0:
            row["filter_selectivity"] = sel
        rows.append(row)
        print(
            f"{name:34s} recall@10 {m['recall_at_10']:.4f}  qps {m['qps']:7.0f}  batch {m['batch_qps']:7.0f}"
            f"  build {build_s:7.1f} s  ram {ram:6.1f} B/vec",
            flush=True,
        )
        return row

    try:
        if "exact" in want:
            add_row("quantsearch exact", ExactScan(quantizer), {}, 0.0, code_b)
            for sel in SELECTIVITIES:
                add_row(f"quantsearch exact filter {sel:.0%}", ExactScan(quantizer), {}, 0.0, code_b, sel)
        if "ivf" in want:
            ivf = IVFStage(quantizer, nlist=nlist, min_rows=1)
            i_root = data / f"ivf-{nlist}"  # built once and reused like the data
            if (i_root / "build_s.txt").is_file():
                ivf.load(i_root, codes, generation=0)
                ivf_build = float((i_root / "build_s.txt").read_text())
            else:
                t0 = time.perf_counter()
                ivf.rebuilt(i_root, codes, generation=0)
                ivf_build = time.perf_counter() - t0
                (i_root / "build_s.txt").write_text(f"{ivf_build:.1f}\n")
            # codes + list id + row order + centroids (float32, int8 and sign bits for the probe)
            ivf_ram = code_b + 4 + 4 + nlist * (dim * 4 + dim + dim / 8 + 4 + 8) / n
            ivf_rows = [
                add_row(f"quantsearch ivf nprobe={p}", ivf, {"nprobe": p}, ivf_build, ivf_ram)
                for p in args.nprobe
            ]
            good = [p for p, r in zip(args.nprobe, ivf_rows, strict=True) if r["recall_at_10"] >= 0.95]
            f_nprobe = min(good) if good else max(args.nprobe)
            for sel in SELECTIVITIES:
                add_row(f"quantsearch ivf nprobe={f_nprobe} filter {sel:.0%}", ivf, {"nprobe": f_nprobe},
                        ivf_build, ivf_ram, sel)  # fmt: skip
            del ivf
        if "hnsw" in want:
            graph = GraphStage(quantizer, m=args.m, min_rows=1)
            g_root = data / f"hnsw-m{args.m}"  # the graph is built once and reused like the data
            if (g_root / "build_s.txt").is_file():
                graph.load(g_root, codes, generation=0)
                g_build = float((g_root / "build_s.txt").read_text())
            else:
                t0 = time.perf_counter()
                graph.rebuilt(g_root, codes, generation=0)
                g_build = time.perf_counter() - t0
                (g_root / "build_s.txt").write_text(f"{g_build:.1f}\n")
            g_ram = code_b + faiss_bytes(graph._graph) / n  # our codes + faiss's graph (with its copy)
            g_rows = [
                add_row(f"quantsearch hnsw m={args.m} ef={ef}", graph, {"ef": ef}, g_build, g_ram)
                for ef in args.ef
            ]
            t0 = time.perf_counter()
            g_view = dataclasses.replace(view, stage=graph)
            table = calibrate_stage(g_view, work, oversampling=_oversampling[0])
            cal_s = time.perf_counter() - t0
            print(f"calibration {cal_s:.1f} s: {table}")
            for target in args.target_recall:
                ef = graph.setting_for_recall(target)
                add_row(f"quantsearch hnsw target_recall={target}", graph, {"target_recall": target}, g_build,
                        g_ram, extra={"chosen_ef": ef, "calibration_s": round(cal_s, 1)})  # fmt: skip
            good = [ef for ef, r in zip(args.ef, g_rows, strict=True) if r["recall_at_10"] >= 0.95]
            f_ef = min(good) if good else max(args.ef)
            for sel in SELECTIVITIES:
                name = f"quantsearch hnsw ef={f_ef} filter {sel:.0%}"
                add_row(name, graph, {"ef": f_ef}, g_build, g_ram, sel)
            del graph
        if want & {"faiss-ivf", "faiss-hnsw", "usearch"}:
            import faiss

            faiss.omp_set_num_threads(get_num_threads())
        bits = code_b * 8
        if "faiss-ivf" in want:
            f_path = data / f"faiss-ivf-{nlist}.index"  # built once and reused, like our lists
            if f_path.is_file() and not args.prepare_only:
                fivf = faiss.read_index_binary(str(f_path))
                fivf_build = float(f_path.with_suffix(".build_s").read_text())
            else:
                fq = faiss.IndexBinaryFlat(bits)
                fivf = faiss.IndexBinaryIVF(fq, bits, nlist)
                t0 = time.perf_counter()
                sample = codes[np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)]
                fivf.train(sample)
                fivf.add(codes)
                fivf_build = time.perf_counter() - t0
                faiss.write_index_binary(fivf, str(f_path))
                f_path.with_suffix(".build_s").write_text(f"{fivf_build:.1f}\n")
                if args.prepare_only:
                    return {}
            fivf_ram = faiss_bytes(fivf) / n

            def set_nprobe(v: int, n: int) -> None:
                fivf.nprobe = v

            for p in args.nprobe:
                add_row(f"faiss IndexBinaryIVF nprobe={p}", FaissStage(quantizer, fivf, set_nprobe),
                        {"setting": p}, fivf_build, fivf_ram)  # fmt: skip
            del fivf
        if "faiss-hnsw" in want:
            hnsw = faiss.IndexBinaryHNSW(bits, args.peer_m)
            t0 = time.perf_counter()
            hnsw.add(codes)
            hnsw_build = time.perf_counter() - t0
            hnsw_ram = faiss_bytes(hnsw) / n

            def set_ef(v: int, n: int) -> None:
                hnsw.hnsw.efSearch = max(v, n)  # as our stage: at least the candidates wanted

            for ef in args.ef:
                add_row(f"faiss IndexBinaryHNSW M={args.peer_m} ef={ef}", FaissStage(quantizer, hnsw, set_ef),
                        {"setting": ef}, hnsw_build, hnsw_ram)  # fmt: skip
            del hnsw
        if "usearch" in want:
            from usearch.index import Index as UsearchIndex

            uidx = UsearchIndex(ndim=bits, metric="hamming", dtype="b1", connectivity=args.m,
                                expansion_add=args.usearch_expansion_add)  # fmt: skip
            t0 = time.perf_counter()
            uidx.add(np.arange(n), codes, threads=get_num_threads())
            u_build = time.perf_counter() - t0
            u_ram = uidx.memory_usage / n
            for ef in args.ef:
                add_row(f"usearch b1 M={args.m} ef={ef}", UsearchStage(quantizer, uidx), {"setting": ef},
                        u_build, u_ram)  # fmt: skip
            del uidx
    finally:
        index.close()
        shutil.rmtree(work, ignore_errors=True)
    return summarise(args, rows, index_s, nlist, q)


def crossover(args: argparse.Namespace) -> None:
    """Single-query QPS of the exact pipeline vs an ANN stage (``--crossover-stage``: the IVF at each
    ``--nprobe``, automatic ``nlist``, or the HNSW at each ``--ef``) on the first N rows of the
    prepared collection, for each N of ``--crossover``: where the stage starts to pay (the default
    ``min_rows``). Recall is against the exact pipeline on the same rows. The IVF lists are built
    once per N under the data directory (``--prepare-only`` builds them and measures nothing)."""
    data = args.data_dir / f"n{args.n}-d{args.dim}-q{args.queries}-s{args.seed}"
    with np.load(data / "truth.npz") as f:
        q = f["queries"]
    index = Index.open(data / "idx", readonly=True)
    view = index._state.view
    quantizer = view.stage.quantizer
    work = Path(tempfile.mkdtemp(prefix="ann-x-", dir=args.work_dir))
    kind = args.crossover_stage
    settings = args.nprobe if kind == "ivf" else args.ef
    if not args.prepare_only:
        print(f"rows       exact qps   {kind} qps (setting)   ratio   recall vs exact pipeline")
    try:
        for n in args.crossover:
            sub = dataclasses.replace(view, codes=view.codes[:n], valid=view.valid[:n], n_live=n)
            stage: CandidateStage
            if kind == "ivf":
                stage = IVFStage(quantizer, min_rows=1)
                root = data / f"ivf-x{n}"
                if (root / "built").is_file():
                    stage.load(root, view.codes[:n], generation=0)
                else:
                    stage.rebuilt(root, view.codes[:n], generation=0)
                    (root / "built").write_text("")
            else:
                stage = GraphStage(quantizer, m=args.m, min_rows=1)
                stage.rebuilt(work, view.codes[:n], generation=0)
            if args.prepare_only:
                continue
            want = run_pipeline(sub, q, K, oversampling=_oversampling[0], stages=("int8",)).rows
            e = measure(sub, ExactScan(quantizer), q, want, {}, args.runs)
            for value in settings:
                g = measure(sub, stage, q, want, {stage.knob or "": value}, args.runs)
                print(f"{n:>9,d}  {e['qps']:9.0f}  {g['qps']:9.0f} ({value:4d})  {g['qps'] / e['qps']:6.2f}"
                      f"   {g['recall_at_10']:.3f}", flush=True)  # fmt: skip
            del stage
    finally:
        index.close()
        shutil.rmtree(work, ignore_errors=True)


def faiss_bytes(index: Any) -> int:
    import faiss

    return int(faiss.serialize_index_binary(index).nbytes)


def summarise(args: argparse.Namespace, rows: list[dict[str, Any]], index_s: float, nlist: int,
              q: np.ndarray) -> dict[str, Any]:  # fmt: skip
    plain = [r for r in rows if "filter_selectivity" not in r]
    exact = [r for r in plain if r["name"] == "quantsearch exact"]
    exact_qps = exact[0]["qps"] if exact else None
    ours = [
        r
        for r in plain
        if r["name"].startswith("quantsearch ")
        and "target_recall" not in r["name"]  # may have fallen back to the exact scan
        and r["recall_at_10"] >= 0.95
    ]
    peers = [r for r in plain if not r["name"].startswith("quantsearch") and r["recall_at_10"] >= 0.95]
    result = {
        "n": args.n, "dim": args.dim, "queries": int(q.shape[0]), "threads": get_num_threads(),
        "nlist": nlist, "oversampling": _oversampling[0], "index_build_s": round(index_s, 1),
        "exact_qps": exact_qps,
        "best_qps_at_recall_095": max((r["qps"] for r in ours if r["name"] != "quantsearch exact"),
                                      default=None),
        "best_peer_qps_at_recall_095": max((r["qps"] for r in peers), default=None),
        "rows": rows,
    }  # fmt: skip
    best = result["best_qps_at_recall_095"]
    if best and exact_qps:
        print(f"best ANN qps at recall >= 0.95: {best:.0f} = {best / exact_qps:.1f}x our exact scan")
    if best and result["best_peer_qps_at_recall_095"]:
        print(f"  vs best peer at recall >= 0.95: {best / result['best_peer_qps_at_recall_095']:.2f}x")
    return result


def compare_real(args: argparse.Namespace) -> None:
    """IVF recall@10 (after int8 rescoring) vs nprobe on the real embeddings and on synthetic data of
    the same size and dimension."""
    real, real_q = real_embeddings()
    gen = Generator.fit(real, real_q, real.shape[1], seed=args.seed)
    n = real.shape[0]
    synth = np.concatenate([x for _, x in gen.blocks(n)])
    synth_q = gen.block(0, real_q.shape[0], n, queries=True)
    print(f"real: {n} docs, {real_q.shape[0]} queries; synthetic between={gen.between} "
          f"query noise {gen.query_noise}; "
          f"knn10 cosine real {knn10_cosine(real):.3f} synthetic {knn10_cosine(synth):.3f}")  # fmt: skip
    nlist = int(round(2 * np.sqrt(n)))
    curves = {}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for name, x, q in (("real", real, real_q), ("synthetic", synth, synth_q)):
            truth = np.argsort(-(q @ x.T), axis=1)[:, :K]
            params = {"nlist": nlist, "min_rows": 1}
            with Index.build(Path(tmp) / name, x, candidate_stage={"kind": "ivf", "params": params}) as index:
                curves[name] = [
                    recall_at(index.search(q, k=K, nprobe=p, with_payload=False).ids, truth)
                    for p in args.nprobe
                ]
    print(f"nlist={nlist}")
    print("nprobe     " + " ".join(f"{p:7d}" for p in args.nprobe))
    for name, curve in curves.items():
        print(f"{name:10s} " + " ".join(f"{r:7.3f}" for r in curve))


def ndcg(args: argparse.Namespace) -> None:
    """NDCG@10 on the four shared collections: the exact pipeline vs the IVF stage forced on
    (``min_rows=1``, automatic ``nlist``) at several ``nprobe``; binary -> int8 x10 in both."""
    from quantsearch.datasets import load_beir
    from quantsearch.evaluation.metrics import ndcg_at_k, run_from_results

    print("collection   exact   " + " ".join(f"nprobe={p:<3d}" for p in args.nprobe) + "  (NDCG@10 x 100)")
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for name in COLLECTIONS:
            data = load_beir(EMBEDDINGS.parent / "datasets" / name)
            x = np.load(EMBEDDINGS / name / "corpus.f16.npy").astype(np.float32)
            q = np.load(EMBEDDINGS / name / "queries.f16.npy").astype(np.float32)
            if json.loads((EMBEDDINGS / name / "corpus_ids.json").read_text()) != data.corpus_ids:
                raise SystemExit(f"{name}: corpus ids differ from the dataset's")

            def score(index: Index, q: np.ndarray = q, data: Any = data, **options: Any) -> float:
                res = index.search(q, k=K, with_payload=False, **options)
                run = run_from_results(data.query_ids, res.ids, res.scores, doc_id_map=data.corpus_ids)
                return 100 * ndcg_at_k(run, data.qrels, 10).mean

            with Index.build(Path(tmp) / f"{name}-e", x) as exact:
                base = score(exact)
            params = {"min_rows": 1}
            with Index.build(
                Path(tmp) / f"{name}-i", x, candidate_stage={"kind": "ivf", "params": params}
            ) as ivf:
                nlist = ivf._state.stage._lists.nlist  # type: ignore[attr-defined]
                row = [score(ivf, nprobe=p) for p in args.nprobe]
            print(
                f"{name:10s} {base:7.2f}  "
                + " ".join(f"{v:7.2f}({v - base:+.2f})" for v in row)
                + f"  nlist={nlist}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--nlist", type=int, default=None, help="default: 2 sqrt(n)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    p.add_argument("--ef", type=int, nargs="+", default=[100, 128, 192, 256, 384])
    p.add_argument("--m", type=int, default=16, help="our graph's degree (and usearch's)")
    p.add_argument("--peer-m", type=int, default=32, help="faiss IndexBinaryHNSW's M")
    p.add_argument("--usearch-expansion-add", type=int, default=40)
    p.add_argument("--target-recall", type=float, nargs="*", default=[0.9, 0.95])
    every = ["exact", "ivf", "hnsw", "faiss-ivf", "faiss-hnsw", "usearch"]
    p.add_argument(
        "--rows",
        nargs="+",
        default=every,
        help="which rows to run (split a large run into several under the lock)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/work/scratch/ann"),
        help="the index and ground truth are built once here and reused",
    )
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument(
        "--crossover",
        type=int,
        nargs="*",
        default=None,
        help="exact vs an ANN stage's single-query QPS on the first N rows of the prepared data",
    )
    p.add_argument("--crossover-stage", choices=["ivf", "hnsw"], default="ivf")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--oversampling", type=float, default=OVERSAMPLING, help="candidates = k x this, every row"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None, help="where the index is built (default: the temp dir)")
    p.add_argument("--compare-real", action="store_true")
    p.add_argument("--ndcg", action="store_true", help="NDCG@10 on the shared collections, IVF vs exact")
    args = p.parse_args()
    _oversampling[0] = args.oversampling
    if args.compare_real:
        compare_real(args)
        return
    if args.ndcg:
        ndcg(args)
        return
    if args.crossover:
        crossover(args)
        return
    result = run(args)
    if args.json and result:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
