"""A sharded index: documents routed by id hash to N ordinary indexes that share one calibration.

:func:`create_sharded` lays out the directory; :class:`ShardedIndex` searches and writes it in this
process (the reference, and the no-Ray path); :class:`~.serving.RayShardedIndex` does the same with
one Ray actor per shard. Both derive from :class:`ShardedBase`, which validates at the public
boundary, routes writes, fans searches out and merges the shards' top-k on the caller's side.

Merged results are exact: each shard returns its own best ``k`` (a document in the global top-k is
in its shard's top-k), and the caller keeps the ``k`` best of the union by score. With
``exact=True`` every shard rescores all its live documents, and the merged ids and scores are
those of one index over the same vectors searched with every document as a candidate.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import as_float_matrix, check_positive_int
from ..exceptions import (
    DuplicateIdError,
    IndexExistsError,
    InvalidArgumentError,
    UnknownIdError,
)
from ..index import Index
from ..index.documents import as_id_list, check_id
from ..kernels import get_num_threads
from ..quantization import Quantizer
from ..results import SearchResults
from .layout import (
    ShardLayout,
    check_n_shards,
    read_shard_manifest,
    shard_dir_name,
    write_shard_manifest,
)
from .shard import ShardServer, ThreadFanout, index_fingerprint

__all__ = ["ShardedBase", "ShardedIndex", "create_sharded", "merge_results"]

logger = logging.getLogger(__name__)


# ---- creation -------------------------------------------------------------------------------------------
def create_sharded(
    path: str | os.PathLike[str],
    dim: int,
    n_shards: int,
    *,
    calibration: np.ndarray,
    **create_kwargs: Any,
) -> ShardLayout:
    """Create a sharded index directory: N empty, identically calibrated shards and the shard manifest.

    The quantizers are fitted once, on ``calibration``, in shard 0; the other shards are copies of
    that empty calibrated directory, so every shard holds byte-identical fitted state (checked
    through the fingerprint recorded in the manifest).

    Parameters
    ----------
    path : path-like
        A directory that does not exist yet or is empty.
    dim : int
    n_shards : int
    calibration : ndarray of shape (n, dim), float
        Sample of document vectors the quantizers are fitted on.
    **create_kwargs
        Passed to :meth:`Index.create` (``rescore``, ``binary``, ``truncate_dim``, ``id_type``,
        ``model``, ``oversampling``).

    Returns
    -------
    ShardLayout
    """
    root = Path(path)
    n_shards = check_n_shards(n_shards)
    dim = check_positive_int(dim, "dim")
    calibration = as_float_matrix(calibration, "calibration", dim=dim)
    if "calibration" in create_kwargs:
        raise InvalidArgumentError("pass the calibration sample once, as calibration=")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise IndexExistsError(f"{root} already exists and is not an empty directory")
    root.mkdir(parents=True, exist_ok=True)
    try:
        first = root / shard_dir_name(0)
        with Index.create(first, dim, calibration=calibration, **create_kwargs) as index:
            fingerprint = index_fingerprint(index)
            id_type, model = index.id_type, index.model
        for i in range(1, n_shards):  # copies of the closed, empty, calibrated shard: one fit for all
            shutil.copytree(first, root / shard_dir_name(i))
        for i in range(n_shards):
            with Index.open(root / shard_dir_name(i)) as shard:
                if index_fingerprint(shard) != fingerprint:  # pragma: no cover - a copy that differs
                    raise InvalidArgumentError(f"shard {i} did not get the shared calibration")
        # the manifest is written last: it marks a complete sharded index
        layout = write_shard_manifest(
            root, n_shards=n_shards, dim=dim, id_type=id_type, model=model, fingerprint=fingerprint
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)  # nothing half-made stays behind
        raise
    logger.info("created %d shards in %s (calibrated on %d vectors)", n_shards, root, calibration.shape[0])
    return layout


# ---- merging --------------------------------------------------------------------------------------------
def merge_results(parts: Sequence[SearchResults], k: int, id_type: str) -> SearchResults:
    """Keep the ``k`` best hits per query of several shards' results.

    Parameters
    ----------
    parts : sequence of SearchResults
        One per shard, each (n_queries, k_s) with scores descending per row; ``nan`` is padding.
    k : int
    id_type : {"int", "str"}

    Returns
    -------
    SearchResults
        ids and scores (n_queries, k); ties keep the order of ``parts`` (then each part's rank);
        padding (``-1`` / ``None``, score ``nan``) only when fewer than ``k`` hits exist. Timings
        are the slowest shard's per stage, candidates the sum over shards.
    """
    if not parts:
        raise InvalidArgumentError("merge_results needs at least one part")
    nq = len(parts[0])
    ids = np.concatenate([p.ids for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1).astype(np.float32)
    key = np.where(np.isnan(scores), np.inf, -scores)  # padding sorts last
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    at = np.arange(nq)[:, None]  # fancy indexing: cheaper than take_along_axis for small arrays
    out_ids = ids[at, order]
    out_scores = scores[at, order]
    have = order.shape[1]
    if have < k:
        pad = k - have
        fill: Any = -1 if id_type == "int" else None
        out_ids = np.concatenate([out_ids, np.full((nq, pad), fill, out_ids.dtype)], axis=1)
        out_scores = np.concatenate([out_scores, np.full((nq, pad), np.nan, np.float32)], axis=1)
        order = np.concatenate([order, np.full((nq, pad), -1, order.dtype)], axis=1)
    invalid = np.isnan(out_scores)
    if id_type == "int":
        out_ids = np.where(invalid, -1, out_ids).astype(np.int64)
    else:
        out_ids = out_ids.astype(object)
        out_ids[invalid] = None

    def pick(column: str) -> list[list[Any]] | None:
        if any(getattr(p, column) is None for p in parts):
            return None
        rows: list[list[Any]] = [sum((getattr(p, column)[q] for p in parts), []) for q in range(nq)]
        return [
            [rows[q][j] if j >= 0 and not invalid[q, c] else None for c, j in enumerate(order[q])]
            for q in range(nq)
        ]

    timings: dict[str, float] = {}
    candidates: dict[str, int] = {}
    for p in parts:
        for name, ms in p.timings.items():
            timings[name] = max(timings.get(name, 0.0), ms)
        for name, n in p.candidates.items():
            candidates[name] = candidates.get(name, 0) + n
    return SearchResults(out_ids, out_scores, pick("texts"), pick("metadata"), timings, candidates)


# ---- the shared front end -------------------------------------------------------------------------------
class ShardedBase(ABC):
    """What every sharded index does on the caller's side: validate, route, fan out, merge.

    Subclasses say how a call reaches a shard (:meth:`_map`). The public methods mirror
    :class:`~quantsearch.Index` (``search``, ``add``, ``delete``, ``get``, ``info``, ``compact``,
    ``len``, ``in``), so the CLI and the HTTP service use either.
    """

    def __init__(self, layout: ShardLayout) -> None:
        self.layout = layout
        self.path = layout.root
        self._embedder: Any = None
        self._settings: dict[str, Any] | None = None

    # ---- how calls reach the shards ------------------------------------------------------------------------
    @abstractmethod
    def _map(self, method: str, calls: dict[int, tuple[Any, ...]], **kwargs: Any) -> dict[int, Any]:
        """Call ``method(*calls[s], **kwargs)`` on every shard ``s`` of ``calls``; return each answer."""

    def _search_shards(
        self,
        vectors: np.ndarray,
        k: int,
        oversampling: float | None,
        stages: Sequence[str] | None,
        with_payload: bool,
        exact: bool,
    ) -> list[tuple[SearchResults, int]]:
        """Every shard's ``(results, n_live)`` for one search (:meth:`ShardServer.search`)."""
        return self._all(
            "search", vectors, k, oversampling, None if stages is None else list(stages), with_payload, exact
        )

    def _all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        answers = self._map(method, {s: args for s in range(self.n_shards)}, **kwargs)
        return [answers[s] for s in range(self.n_shards)]

    # ---- properties ---------------------------------------------------------------------------------------
    @property
    def n_shards(self) -> int:
        return self.layout.n_shards

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def id_type(self) -> str:
        return self.layout.id_type

    @property
    def model(self) -> str | None:
        return self.layout.model

    def _shard_settings(self) -> dict[str, Any]:
        if self._settings is None:
            self._settings = self._map("settings", {0: ()})[0]
        return self._settings

    @property
    def tiers(self) -> dict[str, Quantizer]:
        """Quantizer of each tier (the same fitted state in every shard)."""
        return dict(self._shard_settings()["tiers"])

    @property
    def rescore_tiers(self) -> tuple[str, ...]:
        return tuple(self._shard_settings()["rescore_tiers"])

    @property
    def default_oversampling(self) -> float:
        return float(self._shard_settings()["default_oversampling"])

    @property
    def embedder(self) -> Any:
        """The :class:`~quantsearch.embed.Embedder` for text queries (created on first use, on the caller)."""
        if self._embedder is None:
            if self.model is None:
                raise InvalidArgumentError("this index records no embedding model; search with vectors")
            from ..embed import Embedder

            self._embedder = Embedder(self.model)
        return self._embedder

    @embedder.setter
    def embedder(self, value: Any) -> None:
        self._embedder = value

    def __len__(self) -> int:
        return int(sum(self._all("count")))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, n_shards={self.n_shards}, dim={self.dim})"

    def __enter__(self) -> ShardedBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    # ---- validation ----------------------------------------------------------------------------------------
    def _check_id(self, value: Any, name: str) -> int | str:
        return check_id(value, self.id_type, name)  # type: ignore[arg-type]

    def _split(self, ids: Sequence[int | str]) -> dict[int, np.ndarray]:
        """Positions (int64) of ``ids`` per shard, for the shards that get any."""
        shard = self.layout.route(ids)
        return {int(s): np.flatnonzero(shard == s) for s in np.unique(shard)}

    # ---- writes -------------------------------------------------------------------------------------------
    def add(
        self,
        vectors: np.ndarray,
        ids: Sequence[int | str] | np.ndarray,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[int | str]:
        """Add a batch of documents, each to the shard its id routes to; returns the ids.

        Parameters
        ----------
        vectors : ndarray of shape (n, dim), float
        ids : sequence of n ints or strs
            Required (placement is by id) and new: an id already in the index raises
            :class:`DuplicateIdError` before anything is written.
        texts, metadata : sequences of n, optional

        Every shard's part is committed atomically (``Index.add``) and is durable when this
        returns. A batch spanning shards is not atomic across them: if a shard fails for good,
        the error is raised and the other shards' parts stay; adding the same batch again
        completes it (:meth:`_map` retries with ``resume``, which skips what a shard holds).
        """
        vectors = as_float_matrix(vectors, "vectors", dim=self.dim)
        n = vectors.shape[0]
        if ids is None:
            raise InvalidArgumentError("a sharded index places documents by id: ids are required")
        id_list = [self._check_id(v, f"ids[{i}]") for i, v in enumerate(list(ids))]
        for name, column in (("ids", id_list), ("texts", texts), ("metadata", metadata)):
            if column is not None and len(column) != n:
                raise InvalidArgumentError(f"{name} has {len(column)} entries for {n} vectors")
        if len(set(id_list)) != n:
            seen: set[int | str] = set()
            dup = next(i for i in id_list if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise DuplicateIdError(f"id {dup!r} appears twice in the batch")
        parts = self._split(id_list)
        absent = self._map("missing", {s: ([id_list[j] for j in pos],) for s, pos in parts.items()})
        for s, pos in parts.items():
            if len(absent[s]) != len(pos):
                taken = next(i for i in (id_list[j] for j in pos) if i not in set(absent[s]))
                raise DuplicateIdError(f"id {taken!r} is already in the index (shard {s})")
        calls = {
            s: (
                vectors[pos],
                [id_list[j] for j in pos],
                None if texts is None else [texts[j] for j in pos],
                None if metadata is None else [metadata[j] for j in pos],
            )
            for s, pos in parts.items()
        }
        self._map("add", calls)
        return id_list

    def delete(self, ids: Sequence[int | str] | int | str) -> int:
        """Delete documents by id (all or nothing: an unknown id raises before any shard deletes)."""
        id_list = list(dict.fromkeys(as_id_list(ids, self.id_type)))  # type: ignore[arg-type]
        parts = self._split(id_list)
        calls = {s: ([id_list[j] for j in pos],) for s, pos in parts.items()}
        absent = self._map("missing", calls)
        unknown = [i for s in sorted(absent) for i in absent[s]]
        if unknown:
            raise UnknownIdError(f"id {unknown[0]!r} is not in the index ({len(unknown)} unknown)")
        return int(sum(self._map("delete", calls).values()))

    def compact(self) -> int:
        """Compact every shard; returns the rows reclaimed in all."""
        return int(sum(self._all("compact")))

    # ---- reads --------------------------------------------------------------------------------------------
    def get(self, doc_id: int | str) -> dict[str, Any]:
        """The stored payload of one document (asks only its shard)."""
        doc_id = self._check_id(doc_id, "id")
        s = self.layout.shard_of(doc_id)
        return dict(self._map("get", {s: (doc_id,)})[s])

    def __contains__(self, doc_id: object) -> bool:
        try:
            checked = self._check_id(doc_id, "id")
        except InvalidArgumentError:
            return False
        s = self.layout.shard_of(checked)
        return not self._map("missing", {s: ([checked],)})[s]

    def search(
        self,
        queries: np.ndarray | str | Sequence[str],
        k: int = 10,
        *,
        oversampling: float | None = None,
        stages: Sequence[str] | None = None,
        with_payload: bool = True,
        exact: bool = False,
        filter: dict[str, Any] | None = None,  # noqa: A002 - Index.search's name
        nprobe: int | None = None,
        ef: int | None = None,
        target_recall: float | None = None,
        mode: str = "dense",
        fusion: Any = None,
        query_texts: Sequence[str] | None = None,
    ) -> SearchResults:
        """Search every shard and merge their top-k.

        Takes :meth:`Index.search`'s keywords; ``filter``, ``nprobe``, ``ef``, ``target_recall``,
        ``fusion``, ``query_texts`` and
        modes other than ``"dense"`` are not supported across shards yet and raise
        :class:`InvalidArgumentError` when set.

        Parameters
        ----------
        queries : ndarray of shape (n_queries, dim) or (dim,), float; or str / list of str
            Texts are embedded once, here, with the index's model.
        k : int
            1 <= k <= number of documents in all shards.
        oversampling, stages, with_payload
            As :meth:`Index.search`, applied in every shard.
        exact : bool
            Every live document is a rescoring candidate in its shard: the merged ids and scores
            equal one index over the same vectors searched with ``oversampling >= n / k``.

        Returns
        -------
        SearchResults
            (n_queries, k). Never fewer hits than a full answer would have: a shard that does not
            answer raises (:class:`~quantsearch.exceptions.ShardUnavailableError`) or is retried,
            per the fault policy. ``timings["fanout"]`` is the wall time of the fan-out,
            ``timings["merge"]`` of the merge, and ``timings["shard"]`` the slowest shard's own
            time in its search call, in ms (fan-out minus shard: the cost of reaching the shards).
        """
        unsupported = {"filter": filter, "nprobe": nprobe, "ef": ef, "target_recall": target_recall,
                       "fusion": fusion, "query_texts": query_texts}  # fmt: skip
        unsupported["mode"] = None if mode == "dense" else mode
        named = [name for name, value in unsupported.items() if value is not None]
        if named:
            raise InvalidArgumentError(f"a sharded index does not support {named[0]!r} in search yet")
        k = check_positive_int(k, "k")
        timings: dict[str, float] = {}
        if isinstance(queries, str) or (
            isinstance(queries, Sequence) and queries and isinstance(queries[0], str)
        ):
            t0 = time.perf_counter()
            texts = [queries] if isinstance(queries, str) else list(queries)
            vectors = self.embedder.embed(texts)
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        else:
            vectors = queries
        vectors = np.ascontiguousarray(as_float_matrix(vectors, "queries", dim=self.dim), np.float32)
        if oversampling is not None and not (isinstance(oversampling, (int, float)) and oversampling >= 1):
            raise InvalidArgumentError(f"oversampling must be a number >= 1, got {oversampling!r}")
        t0 = time.perf_counter()
        answers = self._search_shards(vectors, k, oversampling, stages, with_payload, exact)
        t1 = time.perf_counter()
        total = sum(n for _, n in answers)
        if k > total:
            raise InvalidArgumentError(f"k={k} exceeds the number of documents in the index ({total})")
        merged = merge_results([res for res, _ in answers], k, self.id_type)
        t2 = time.perf_counter()
        timings.update(merged.timings)
        timings["fanout"] = (t1 - t0) * 1e3
        timings["merge"] = (t2 - t1) * 1e3
        return SearchResults(
            merged.ids, merged.scores, merged.texts, merged.metadata, timings, merged.candidates
        )

    def verify(self) -> None:
        """:meth:`Index.verify` on every shard (reads every file)."""
        self._all("verify")

    def info(self) -> dict[str, Any]:
        """:meth:`Index.info` summed over the shards (same keys), plus ``n_shards`` and ``shards``."""
        parts = self._all("info")
        first = parts[0]
        out = dict(first)
        out["path"] = str(self.path)
        for key in (
            "count",
            "rows",
            "deleted",
            "segments",
            "catalog_bytes",
            "valid_mask_ram_bytes",
            "float32_bytes",
        ):
            out[key] = int(sum(p[key] for p in parts))
        stage_ram = [p.get("candidate_stage_ram_bytes") for p in parts]
        out["candidate_stage_ram_bytes"] = None if None in stage_ram else int(sum(stage_ram))
        tiers = []
        for j, tier in enumerate(first["tiers"]):
            tiers.append(
                {
                    **tier,
                    "ram_bytes": int(sum(p["tiers"][j]["ram_bytes"] for p in parts)),
                    "disk_bytes": int(sum(p["tiers"][j]["disk_bytes"] for p in parts)),
                }
            )
        out["tiers"] = tiers
        out["n_shards"] = self.n_shards
        out["shards"] = [{"shard": s, "count": p["count"], "rows": p["rows"]} for s, p in enumerate(parts)]
        return out


# ---- in-process -----------------------------------------------------------------------------------------
class ShardedIndex(ShardedBase):
    """A sharded index searched and written in this process (no Ray): every shard opened here.

    It is the reference the Ray serving path is compared with, and what a machine without Ray uses.
    Open with :meth:`open`; create with :meth:`create` (or :func:`create_sharded`).
    """

    def __init__(self, layout: ShardLayout, *, threads: int | None = None) -> None:
        super().__init__(layout)
        self._shards: list[ShardServer] = []
        wanted = get_num_threads() if threads is None else check_positive_int(threads, "threads")
        self.threads = min(layout.n_shards, wanted)
        self._fanout = ThreadFanout(self.threads)
        try:
            for d in layout.shard_dirs:
                self._shards.append(ShardServer(d, layout.fingerprint))
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, threads: int | None = None) -> ShardedIndex:
        """Open the sharded index at ``path`` (checks the manifest and every shard's calibration).

        ``threads``: shards searched at once (default: one per core, at most one per shard; 1 =
        one after the other). The kernels release the GIL, so shards scan on several cores.
        """
        return cls(read_shard_manifest(path), threads=threads)

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], dim: int, n_shards: int, *, calibration: np.ndarray, **kwargs: Any
    ) -> ShardedIndex:
        """:func:`create_sharded`, then open it here."""
        return cls(create_sharded(path, dim, n_shards, calibration=calibration, **kwargs))

    def _map(self, method: str, calls: dict[int, tuple[Any, ...]], **kwargs: Any) -> dict[int, Any]:
        return {s: getattr(self._shards[s], method)(*args, **kwargs) for s, args in calls.items()}

    def _search_shards(
        self,
        vectors: np.ndarray,
        k: int,
        oversampling: float | None,
        stages: Sequence[str] | None,
        with_payload: bool,
        exact: bool,
    ) -> list[tuple[SearchResults, int]]:
        # the shards search on parallel threads (ThreadFanout): their kernels release the GIL
        args = (vectors, k, oversampling, None if stages is None else list(stages), with_payload, exact)
        return self._fanout.map(lambda shard: shard.search(*args), self._shards)

    def shard(self, i: int) -> Index:
        """The open :class:`Index` of shard ``i``."""
        return self._shards[i].index

    def close(self) -> None:
        self._fanout.close()  # no search still running in a shard about to close
        for shard in self._shards:
            shard.close()
        self._shards = []
