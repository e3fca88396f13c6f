"""Ingestion as a Ray Data pipeline: read JSONL / Parquet, embed in an actor pool, route, write shards.

```
ray.data.read_json / read_parquet
  -> map_batches(_normalise)                    id (str), text, metadata (JSON), [vector]
  -> map_batches(EmbedWriter, actor pool)       per batch: ask the shards which ids they hold,
                                                embed only the others (model loaded once per
                                                actor), split by id hash, add each part to its
                                                shard's writer actor (in parallel), answer counts
  -> driver iterates the counts                 progress bar, on_batch callback
```

Each shard has one writer, a :class:`~.shard.ShardServer` actor (an index has one writer per
directory); quantization happens there, in ``Index.add``. A part is acknowledged after its
shard's ``Index.add`` returned (durable). The pipeline is **resumable**: a rerun after a crash asks
each shard which ids it already holds and skips them before embedding, so committed batches cost
one id lookup and nothing is added twice.

A new sharded index is calibrated on the first ``calibration_size`` documents, embedded once in
the driver and added there before the pipeline starts (the pipeline then skips them).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import InvalidArgumentError
from .faults import FaultPolicy, gather
from .layout import is_sharded, read_shard_manifest, route
from .serving import RayShardedIndex, ensure_ray
from .sharded import ShardedIndex, create_sharded

__all__ = ["ingest", "IngestReport", "input_files"]

logger = logging.getLogger(__name__)

# largest block Ray Data makes when reading (bytes): a few batches of documents, not 128 MiB
_BLOCK_BYTES = 4 << 20


@dataclass(frozen=True)
class IngestReport:
    """What one :func:`ingest` run did.

    Attributes
    ----------
    added : int
        Documents written by this run (the calibration head included).
    skipped : int
        Documents already in the index (committed by an earlier, interrupted run), not re-embedded.
    seconds : float
        Wall time of the pipeline (reading, embedding, writing), without creating the index.
    n_shards : int
    workers : int
        Embedding actors.
    steady_docs_per_s : float
        Documents per second once the pipeline runs: for each embedding actor, the documents of its
        batches after its first one over the time from its first commit to its last (actor start-up
        and model loading left out), summed over the actors; nan when no actor did two batches.
    """

    added: int
    skipped: int
    seconds: float
    n_shards: int
    workers: int
    steady_docs_per_s: float = float("nan")

    @property
    def docs_per_s(self) -> float:
        """Documents through the pipeline (added + skipped) per second."""
        return (self.added + self.skipped) / self.seconds if self.seconds > 0 else float("nan")


def input_files(source: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """``("json" | "parquet", files)`` of an input: a .jsonl/.json/.parquet file, a BEIR folder
    (``corpus.jsonl``), or a folder of .parquet or .jsonl files."""
    path = Path(source)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        corpus = path / "corpus.jsonl"
        files = (
            [corpus] if corpus.is_file() else sorted(path.glob("*.parquet")) or sorted(path.glob("*.jsonl"))
        )
        if not files:
            raise InvalidArgumentError(f"{path} holds no corpus.jsonl, .parquet or .jsonl files")
    else:
        raise InvalidArgumentError(f"input not found: {path}")
    kinds = {
        "parquet" if f.suffix == ".parquet" else "json" if f.suffix in (".jsonl", ".json") else "?"
        for f in files
    }
    if kinds == {"?"} or len(kinds) != 1:
        raise InvalidArgumentError(
            f"input must be .jsonl/.json or .parquet files, got {[f.name for f in files]}"
        )
    return kinds.pop(), [str(f.resolve()) for f in files]


def _normaliser(
    text_field: str, id_field: str, title_field: str | None, vector_field: str | None
) -> Callable:
    """The batch function that turns input rows into ``id``, ``text``, ``metadata`` [and ``vector``]."""

    def normalise(batch: Any) -> dict[str, Any]:
        # batch: pandas DataFrame of the input's columns
        if id_field not in batch.columns:
            raise InvalidArgumentError(
                f"the input has no id field {id_field!r} (columns: {list(batch.columns)})"
            )
        if vector_field is None and text_field not in batch.columns:
            raise InvalidArgumentError(
                f"the input has no text field {text_field!r} (columns: {list(batch.columns)})"
            )
        ids = [str(v) for v in batch[id_field].tolist()]
        n = len(ids)
        raw = batch[text_field].tolist() if text_field in batch.columns else [None] * n
        titles = batch[title_field].tolist() if title_field and title_field in batch.columns else [None] * n
        texts = []
        for t, title in zip(raw, titles, strict=True):
            t = "" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t)
            texts.append(f"{title} {t}" if isinstance(title, str) and title else t)
        skip = {id_field, text_field, vector_field}
        other = [c for c in batch.columns if c not in skip]
        metadata = [
            json.dumps({c: _plain(batch[c].iloc[i]) for c in other}, default=str) if other else ""
            for i in range(n)
        ]
        out: dict[str, Any] = {"id": ids, "text": texts, "metadata": metadata}
        if vector_field is not None:
            if vector_field not in batch.columns:
                raise InvalidArgumentError(f"the input has no vector field {vector_field!r}")
            rows = [np.asarray(v, np.float32) for v in batch[vector_field].tolist()]
            dims = {r.shape for r in rows}
            if len(dims) != 1 or len(next(iter(dims))) != 1:
                raise InvalidArgumentError(
                    f"vector field {vector_field!r} must hold vectors of one length, "
                    f"got shapes {sorted(dims)}"
                )
            out["vector"] = np.stack(rows)
        return out

    return normalise


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


class EmbedWriter:
    """One actor of the embedding pool: skip committed ids, embed the rest, add them to their shards.

    Parameters
    ----------
    writers : list of ray.actor.ActorHandle
        The shards' writer actors (:class:`~.shard.ShardServer`), in shard order.
    model : str or None
        Embedding model, loaded once when the actor starts; None when batches carry vectors.
    policy : FaultPolicy
        What a write does when a shard's writer dies (retried with ``resume``: nothing twice).
    threads : int
        torch threads of the model.
    """

    def __init__(self, writers: list[Any], model: str | None, policy: FaultPolicy, threads: int = 1) -> None:
        self.writers = writers
        self.token = int.from_bytes(os.urandom(7), "little")  # names this actor in the batch reports
        self.policy = policy
        self.embedder = None
        if model is not None:
            import torch

            from ..embed import Embedder

            torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor, not every core
            self.embedder = Embedder(model)
            self.embedder.embed(["warm-up"])  # load the model now, once per actor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [str(i) for i in batch["id"]]
        n_shards = len(self.writers)
        shard = route(ids, n_shards)
        parts = {int(s): np.flatnonzero(shard == s) for s in np.unique(shard)}
        absent = gather(
            lambda s, _retry: self.writers[s].missing.remote([ids[j] for j in parts[s]]),
            parts,
            self.policy,
            what="ingest lookup",
        )
        todo_set = {i for s in absent for i in absent[s]}
        todo = np.array([j for j, i in enumerate(ids) if i in todo_set], np.int64)
        if todo.size == 0:
            return {
                "added": np.array([0]),
                "skipped": np.array([len(ids)]),
                "finished_at": np.array([time.time()]),
                "actor": np.array([self.token]),
            }
        texts = [str(batch["text"][j]) for j in todo]
        if "vector" in batch:
            vectors = np.asarray(batch["vector"], np.float32)[todo]
        else:
            if self.embedder is None:
                raise InvalidArgumentError("the input has no vectors and no model was given")
            vectors = self.embedder.embed(texts)
        metadata = [json.loads(m) if m else None for m in (batch["metadata"][j] for j in todo)]
        todo_ids = [ids[j] for j in todo]
        sub = route(todo_ids, n_shards)
        calls = {}
        for s in np.unique(sub):
            pos = np.flatnonzero(sub == s)
            calls[int(s)] = (
                vectors[pos],
                [todo_ids[j] for j in pos],
                [texts[j] for j in pos],
                [metadata[j] for j in pos],
                True,  # resume: a part whose answer was lost is not added twice
            )
        gather(lambda s, _retry: self.writers[s].add.remote(*calls[s]), calls, self.policy, what="ingest add")
        return {
            "added": np.array([todo.size]),
            "skipped": np.array([len(ids) - todo.size]),
            "finished_at": np.array([time.time()]),  # wall clock: the steady rate is measured across actors
            "actor": np.array([self.token]),
        }


def ingest(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    n_shards: int | None = None,
    model: str | None = "default",
    text_field: str = "text",
    id_field: str = "_id",
    title_field: str | None = "title",
    vector_field: str | None = None,
    batch_size: int = 1024,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    calibration_size: int = 20_000,
    rescore: Sequence[str] = ("int8",),
    binary: Any = None,
    truncate_dim: int | None = None,
    ray_address: str | None = None,
    policy: FaultPolicy | None = None,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Index a JSONL or Parquet collection into a sharded index with a Ray Data pipeline.

    Parameters
    ----------
    source : path-like
        A .jsonl / .json / .parquet file, a BEIR folder (``corpus.jsonl``), or a folder of
        .parquet or .jsonl files. One row per document.
    path : path-like
        The sharded index directory: created (with ``n_shards`` shards) if it does not exist,
        else extended, and after an interrupted run, completed.
    n_shards : int, optional
        Shards of a new index (required then; must match, or be None, for an existing one).
    model : str or None
        Embedding model (``"default"``: the bundled all-MiniLM-L6-v2), loaded once per actor.
        Ignored with ``vector_field`` (the vectors are given); recorded in a new index.
    text_field, id_field, title_field : str
        Input columns; ids are converted to ``str``; a non-empty title is prepended to the text.
    vector_field : str, optional
        A column of precomputed float vectors (then nothing is embedded).
    batch_size : int
        Rows per pipeline batch (one lookup, one embedding call, one add per shard).
    workers : int
        Embedding actors (each with its own copy of the model).
    cpus_per_worker : float
        CPUs Ray reserves for each embedding actor (torch uses that many threads).
    calibration_size : int
        Documents the quantizers of a new index are fitted on (the first ones of the input).
    rescore, binary, truncate_dim
        Tiers of a new index, as :meth:`Index.create`.
    ray_address : str, optional
        Cluster to run on; default the running Ray session, else a local one.
    policy : FaultPolicy, optional
        What a write does when a shard writer dies (default: retry on the restarted actor).
    progress : bool
        Show Ray Data's progress bars and a bar of documents written.
    on_batch : callable (added, skipped) -> None, optional
        Called in the driver after each batch is committed (progress reporting).

    Returns
    -------
    IngestReport
    """
    from ..quantization import make_quantizer

    kind, files = input_files(source)
    root = Path(path)
    for name, value in (
        ("batch_size", batch_size),
        ("workers", workers),
        ("calibration_size", calibration_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    for spec in rescore:  # fail on a bad option before starting anything
        make_quantizer(spec, truncate_dim=truncate_dim)
    exists = is_sharded(root)
    if exists:
        layout = read_shard_manifest(root)
        if n_shards is not None and n_shards != layout.n_shards:
            raise InvalidArgumentError(f"{root} has {layout.n_shards} shards, not {n_shards}")
        if vector_field is None and layout.model is None:
            raise InvalidArgumentError(f"{root} records no embedding model: give vector_field")
        model = layout.model if vector_field is None else None
    elif n_shards is None:
        raise InvalidArgumentError(f"{root} is not a sharded index yet: give n_shards to create it")
    policy = policy if policy is not None else FaultPolicy()
    ray = ensure_ray(ray_address)
    import ray.data  # noqa: F811 - the submodule, on the module ensure_ray returned

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    # small blocks, so that one input file is cut into many and every embedding actor gets work
    ctx.target_max_block_size = min(ctx.target_max_block_size or _BLOCK_BYTES, _BLOCK_BYTES)
    reader = ray.data.read_parquet if kind == "parquet" else ray.data.read_json
    # reading is I/O: it takes no CPU slot, else the embedding actors (one CPU each) can hold every
    # slot of a small cluster and the reads never run; the file listing still needs one, so the
    # actors leave one CPU of the cluster free
    normalise = _normaliser(text_field, id_field, title_field, vector_field)
    ds = reader(files, num_cpus=0).map_batches(
        normalise,
        batch_format="pandas",
        batch_size=batch_size,
    )
    added = head = 0
    if not exists:
        first = _read_head(kind, files, calibration_size)
        added = head = _create_from_head(
            normalise(first),
            root,
            n_shards,
            model if vector_field is None else None,
            rescore=list(rescore),
            binary=binary,
            truncate_dim=truncate_dim,
            record_model=model,
        )
        layout = read_shard_manifest(root)
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    if workers * cpus_per_worker > cluster_cpus - 1:
        fitted = max(0.05, (cluster_cpus - 1) / workers)
        logger.info(
            "%d workers x %g CPUs do not fit in %g CPUs with one free for reading: %g each",
            workers,
            cpus_per_worker,
            cluster_cpus,
            fitted,
        )
        cpus_per_worker = fitted
    t0 = time.perf_counter()
    writers = RayShardedIndex(layout, policy=policy)
    try:
        embedded = ds.map_batches(
            EmbedWriter,
            fn_constructor_kwargs={
                "writers": writers.actors,
                "model": None if vector_field is not None else model,
                "policy": policy,
                "threads": max(1, round(cpus_per_worker)),
            },
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=workers,
            num_cpus=cpus_per_worker,
        )
        skipped = 0
        finished: list[tuple[int, float, int]] = []
        bar = _bar(progress)
        for out in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            finished.extend(
                zip(
                    out["actor"].tolist(),
                    out["finished_at"].tolist(),
                    (out["added"] + out["skipped"]).tolist(),
                    strict=True,
                )
            )
            a, s = int(np.sum(out["added"])), int(np.sum(out["skipped"]))
            added += a
            skipped += s
            bar.update(a + s)
            if on_batch is not None:
                on_batch(a, s)
        bar.close()
    finally:
        writers.close()
    seconds = time.perf_counter() - t0
    logger.info("ingested %d documents (%d already there) in %.1f s", added, skipped, seconds)
    # the calibration head was added by the driver before the pipeline, which then skipped it
    return IngestReport(added, skipped - head, seconds, layout.n_shards, workers, steady_rate(finished))


def steady_rate(finished: Sequence[tuple[int, float, int]]) -> float:
    """Documents per second of a pipeline from its batch reports ``(actor, finished_at, docs)``.

    Each actor's rate is the documents of its batches after its first over the time from its
    first to its last commit (start-up left out); the pipeline's rate is their sum. (One window
    over all actors would count the other actors' first batches, which finish at about the same
    time as the very first one, and overstate the rate of several actors.)
    """
    by_actor: dict[int, list[tuple[float, int]]] = {}
    for actor, at, docs in finished:
        by_actor.setdefault(actor, []).append((at, docs))
    rates = []
    for batches in by_actor.values():
        batches.sort()
        if len(batches) > 1 and batches[-1][0] > batches[0][0]:
            rates.append(sum(d for _, d in batches[1:]) / (batches[-1][0] - batches[0][0]))
    return float(sum(rates)) if rates else float("nan")


def _read_head(kind: str, files: list[str], n: int) -> Any:
    """The first ``n`` rows of the input, in input order, as a pandas DataFrame (read here, without
    a Ray Data run: the calibration sample must be known before the pipeline starts)."""
    import pandas as pd

    rows: list[Any] = []
    for file in files:
        if kind == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(file).iter_batches(batch_size=max(1, n - len(rows))):
                rows.append(batch.to_pandas())
                if sum(len(r) for r in rows) >= n:
                    break
        else:
            records = []
            with open(file, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        try:
                            records.append(json.loads(line))
                        except ValueError as exc:
                            raise InvalidArgumentError(f"{file}: a line is not JSON: {exc}") from None
                    if sum(len(r) for r in rows) + len(records) >= n:
                        break
            rows.append(pd.DataFrame.from_records(records))
        if sum(len(r) for r in rows) >= n:
            break
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return frame.iloc[:n]


def _create_from_head(
    head: dict[str, Any],
    root: Path,
    n_shards: int | None,
    model: str | None,
    *,
    record_model: str | None,
    **create_kwargs: Any,
) -> int:
    """Create the sharded index calibrated on the first documents, and add those; return how many."""
    ids = [str(i) for i in head["id"]]
    texts = [str(t) for t in head["text"]]
    if not ids:
        raise InvalidArgumentError("the input holds no documents")
    if "vector" in head:
        vectors = np.asarray(head["vector"], np.float32)
        name = record_model
    else:
        from ..embed import Embedder

        embedder = Embedder(model)
        vectors = embedder.embed(texts)
        name = embedder.name
    assert n_shards is not None
    create_sharded(
        root, vectors.shape[1], n_shards, calibration=vectors, id_type="str", model=name, **create_kwargs
    )
    with ShardedIndex.open(root) as index:
        metadata = [json.loads(m) if m else None for m in head["metadata"]]
        index.add(vectors, ids, texts, metadata)
    logger.info("created %s (%d shards) calibrated on the first %d documents", root, n_shards, len(ids))
    return len(ids)


def _bar(enabled: bool) -> Any:
    if enabled:
        try:
            import sys

            from tqdm.auto import tqdm

            return tqdm(desc="indexed", unit="doc", file=sys.stderr)
        except ImportError:
            pass

    class _Silent:
        def update(self, n: int = 1) -> None: ...
        def close(self) -> None: ...

    return _Silent()
