"""Run every configuration over one collection: quality, memory and latency, in one table.

All rows see the same document and query embeddings. Quality is measured on each system's own ranking
order: the run given to the metrics scores the i-th result ``k - i``, so ties are broken the way the
system broke them (not by trec_eval's document-id rule). Latency is the search alone, with the queries
already embedded: single queries one at a time (p50/p95 and QPS), and batches of ``batch_size``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch._validation import as_float_matrix, check_positive_int
from quantsearch.datasets import BeirDataset, load_beir
from quantsearch.evaluation.configs import (
    DEFAULT_CONFIGS,
    DEFAULT_PEERS,
    Config,
    Searcher,
    parse_config,
    parse_configs,
)
from quantsearch.evaluation.lexical_configs import TextConfig, TextSearcher
from quantsearch.evaluation.metrics import evaluate
from quantsearch.exceptions import DimensionMismatchError, InvalidArgumentError

__all__ = ["EvalReport", "evaluate_dataset", "run_eval"]

logger = logging.getLogger(__name__)

#: the reference every retention is relative to; always measured, first row
REFERENCE = "float32"


@dataclass
class EvalReport:
    """Rows of one evaluation, plus what is needed to reproduce and check them.

    ``rows`` follow the JSON interface: each has ``config``, ``peer``, ``ndcg@10``, ``recall@10``,
    ``recall@100``, ``mrr@10``, ``retention`` (fraction of float32 NDCG@10), ``ram_bytes_per_vector``,
    ``disk_bytes_per_vector``, ``p50_ms``, ``p95_ms``, ``qps``, ``batch_p50_ms``, ``batch_p95_ms``,
    ``batch_qps``, ``build_s`` and ``best_for_ram`` (no row with at most as much RAM retains more).
    ``runs`` maps each config to its runs at depth k and at the recall depth (``{query: {doc: score}}``).
    """

    dataset: str
    model: str | None
    split: str
    n_docs: int
    n_queries: int
    k: int
    rows: list[dict[str, Any]]
    runs: dict[str, dict[int, dict[str, dict[str, float]]]] = field(default_factory=dict, repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, config: str) -> dict[str, Any]:
        """The row of one configuration."""
        for row in self.rows:
            if row["config"] == config:
                return row
        raise KeyError(config)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "split": self.split,
            "n_docs": self.n_docs,
            "n_queries": self.n_queries,
            "k": self.k,
            **self.meta,
            "rows": self.rows,
        }


def run_eval(
    dataset: BeirDataset,
    docs: np.ndarray,
    queries: np.ndarray,
    configs: Sequence[Config | str] = DEFAULT_CONFIGS + DEFAULT_PEERS,
    *,
    model: str | None = None,
    split: str = "test",
    k: int = 10,
    recall_depth: int = 100,
    batch_size: int = 32,
    batch_repeats: int = 3,
    workdir: str | os.PathLike[str] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> EvalReport:
    """Measure every configuration over one collection with precomputed embeddings.

    Parameters
    ----------
    dataset : BeirDataset
        Corpus ids, query ids and qrels; ``docs`` and ``queries`` follow its order.
    docs : ndarray of shape (n_docs, dim), float32
        Document embeddings (also the calibration sample of every quantizer).
    queries : ndarray of shape (n_queries, dim), float32
        Query embeddings.
    configs : sequence of Config or spec str
        Rows to measure (see :mod:`quantsearch.evaluation.configs`); ``float32`` is added first if absent.
    model, split : str, optional
        Recorded in the report.
    k : int, default 10
        Cutoff of NDCG, recall, MRR and of the timed searches.
    recall_depth : int, default 100
        Depth of the second, untimed search behind ``recall@<recall_depth>``.
    batch_size, batch_repeats : int
        Queries per batched search, and passes over the query set for the batch timings.
    workdir : path-like, optional
        Where indexes are built (a temporary folder by default).
    on_row : callable, optional
        Called with each finished row (the CLI prints progress with it).

    Returns
    -------
    EvalReport
    """
    docs = as_float_matrix(docs, "docs")
    queries = as_float_matrix(queries, "queries", dim=docs.shape[1])
    if docs.shape[0] != len(dataset.corpus_ids):
        raise DimensionMismatchError(
            f"docs has {docs.shape[0]} rows but the corpus has {len(dataset.corpus_ids)} documents"
        )
    if queries.shape[0] != len(dataset.query_ids):
        raise DimensionMismatchError(
            f"queries has {queries.shape[0]} rows but the split has {len(dataset.query_ids)} queries"
        )
    k = check_positive_int(k, "k")
    recall_depth = check_positive_int(recall_depth, "recall_depth")
    batch_size = check_positive_int(batch_size, "batch_size")
    batch_repeats = check_positive_int(batch_repeats, "batch_repeats")
    if k > docs.shape[0]:
        raise InvalidArgumentError(f"k={k} exceeds the number of documents ({docs.shape[0]})")
    depth = min(max(recall_depth, k), docs.shape[0])

    parsed = [parse_config(c) if isinstance(c, str) else c for c in configs]
    if REFERENCE not in [c.name for c in parsed]:
        parsed.insert(0, parse_config(REFERENCE))
    parsed.sort(key=lambda c: c.name != REFERENCE)  # the reference first: retention needs it

    rows: list[dict[str, Any]] = []
    runs: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(dir=workdir, prefix="quantsearch-eval-") as tmp:
        for config in parsed:
            row, config_runs = _measure(
                config, dataset, docs, queries, k, depth, batch_size, batch_repeats, Path(tmp)
            )
            reference = rows[0][f"ndcg@{k}"] if rows else row[f"ndcg@{k}"]
            row["retention"] = row[f"ndcg@{k}"] / reference if reference > 0 else None
            rows.append(row)
            runs[config.name] = config_runs
            if on_row is not None:
                on_row(row)
    _mark_best_for_ram(rows)
    meta = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dim": int(docs.shape[1]),
        "recall_depth": depth,
        "batch_size": batch_size,
        "machine": _machine(),
    }
    return EvalReport(dataset.name, model, split, docs.shape[0], queries.shape[0], k, rows, runs, meta)


def _measure(
    config: Config,
    dataset: BeirDataset,
    docs: np.ndarray,
    queries: np.ndarray,
    k: int,
    depth: int,
    batch_size: int,
    batch_repeats: int,
    workdir: Path,
) -> tuple[dict[str, Any], dict[int, dict[str, dict[str, float]]]]:
    logger.info("measuring %s", config.name)
    config.warm_up()
    t0 = time.perf_counter()
    if isinstance(config, TextConfig):  # lexical, hybrid and svm rows read the texts too
        searcher: Searcher = config.build_texts(docs, dataset.corpus_texts, workdir)
    else:
        searcher = config.build(docs, workdir)
    build_s = time.perf_counter() - t0

    def search(start: int, stop: int, depth: int) -> np.ndarray:
        if isinstance(searcher, TextSearcher):
            return searcher.search_texts(queries[start:stop], dataset.query_texts[start:stop], depth)
        return searcher.search(queries[start:stop], depth)

    try:
        search(0, 1, k)  # warm-up: lazy imports, first page faults
        batch_ms: list[float] = []
        top_k = np.empty((queries.shape[0], k), np.int64)
        for _ in range(batch_repeats):
            for start in range(0, queries.shape[0], batch_size):
                stop = min(start + batch_size, queries.shape[0])
                t0 = time.perf_counter()
                top_k[start:stop] = search(start, stop, k)
                batch_ms.append((time.perf_counter() - t0) * 1e3 / (stop - start))
        single_ms = []
        for i in range(queries.shape[0]):
            t0 = time.perf_counter()
            search(i, i + 1, k)
            single_ms.append((time.perf_counter() - t0) * 1e3)
        deep = search(0, queries.shape[0], depth) if depth > k else top_k
        ram, disk = searcher.ram_bytes_per_vector, searcher.disk_bytes_per_vector
    finally:
        searcher.close()

    run_k, run_deep = _run(dataset, top_k), _run(dataset, deep)
    quality = evaluate(run_k, dataset.qrels, ks=(k,))
    quality[f"recall@{depth}"] = evaluate(run_deep, dataset.qrels, ks=(depth,))[f"recall@{depth}"]
    single = np.asarray(single_ms)
    row: dict[str, Any] = {
        "config": config.name,
        "peer": config.peer,
        **{key: quality[key] for key in (f"ndcg@{k}", f"recall@{k}", f"recall@{depth}", f"mrr@{k}")},
        "retention": None,  # filled in by the caller, relative to the reference row
        "ram_bytes_per_vector": ram,
        "disk_bytes_per_vector": disk,
        "p50_ms": float(np.percentile(single, 50)),
        "p95_ms": float(np.percentile(single, 95)),
        "qps": float(1e3 / single.mean()),
        "batch_p50_ms": float(np.percentile(batch_ms, 50)),
        "batch_p95_ms": float(np.percentile(batch_ms, 95)),
        "batch_qps": float(1e3 / np.mean(batch_ms)),
        "build_s": build_s,
        "best_for_ram": False,
    }
    return row, {k: run_k, depth: run_deep}


def _run(dataset: BeirDataset, rows: np.ndarray) -> dict[str, dict[str, float]]:
    """The run of a ranking: the i-th of n results scores n - i (the system's order, no ties)."""
    n = rows.shape[1]
    run: dict[str, dict[str, float]] = {}
    for query, ranked in zip(dataset.query_ids, rows.tolist(), strict=True):
        docs: dict[str, float] = {}
        for rank, row in enumerate(ranked):
            if row >= 0:
                docs.setdefault(dataset.corpus_ids[row], float(n - rank))
        run[query] = docs
    return run


def _mark_best_for_ram(rows: list[dict[str, Any]]) -> None:
    """Mark the rows no other row beats at the same or a smaller RAM budget (the Pareto front)."""
    for row in rows:
        row["best_for_ram"] = not any(
            other is not row
            and other["ram_bytes_per_vector"] <= row["ram_bytes_per_vector"]
            and (
                other["retention"] > row["retention"]
                or (
                    other["retention"] == row["retention"]
                    and other["ram_bytes_per_vector"] < row["ram_bytes_per_vector"]
                )
            )
            for other in rows
        )


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
    }


def evaluate_dataset(
    path_or_name: str | os.PathLike[str],
    configs: Sequence[Config | str] | None = None,
    *,
    peers: Sequence[str] | None = DEFAULT_PEERS,
    split: str = "test",
    model: str | None = None,
    embedder: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    k: int = 10,
    progress: bool = False,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> EvalReport:
    """Load a BEIR collection, embed it (once: the embeddings are cached) and run :func:`run_eval`.

    Parameters
    ----------
    path_or_name : str or path-like
        A BEIR-layout folder, or a public BEIR dataset name (downloaded when online).
    configs : sequence of Config or spec str, optional
        Our rows; :data:`~quantsearch.evaluation.configs.DEFAULT_CONFIGS` by default.
    peers : sequence of str, optional
        Peer rows (:data:`~quantsearch.evaluation.configs.DEFAULT_PEERS` by default; ``()`` for none).
    split : str, default "test"
        Which qrels to evaluate on.
    model : str, optional
        Embedding model (the bundled all-MiniLM-L6-v2 by default); ignored when ``embedder`` is given.
    embedder : Embedder, optional
        A ready embedder.
    cache_dir : path-like, optional
        Embedding cache folder (see :class:`~quantsearch.embed.EmbeddingCache`).
    k : int, default 10
    progress : bool
        Progress bar while embedding.
    on_row : callable, optional
        Called with each finished row.
    """
    from quantsearch.embed import Embedder, EmbeddingCache

    k = check_positive_int(k, "k")  # bad arguments fail before the (long) embedding
    specs = list(DEFAULT_CONFIGS if configs is None else configs) + list(peers or ())
    parsed = parse_configs([s for s in specs if isinstance(s, str)])  # a typo fails before embedding
    parsed += [c for c in specs if not isinstance(c, str)]
    dataset = load_beir(path_or_name, split)
    embedder = embedder if embedder is not None else Embedder(model)
    cache = EmbeddingCache(cache_dir)
    t0 = time.perf_counter()
    docs, docs_hit = cache.embed(embedder, dataset.corpus_texts, progress=progress)
    queries, queries_hit = cache.embed(embedder, dataset.query_texts)
    embed_s = time.perf_counter() - t0
    specs = list(DEFAULT_CONFIGS if configs is None else configs) + list(peers or ())
    report = run_eval(dataset, docs, queries, specs, model=embedder.name, split=split, k=k, on_row=on_row)
    report.meta["embeddings"] = {
        "cache": str(cache.root),
        "corpus_cached": docs_hit,
        "queries_cached": queries_hit,
        "seconds": round(embed_s, 3),
    }
    return report
