"""One shard's operations, in plain Python: run in-process, or wrapped as a Ray actor by :mod:`.serving`.

A :class:`ShardServer` opens one ordinary index directory with the public :class:`~quantsearch.Index`
API and answers the calls a sharded index fans out (search, add, delete, ...). It checks at open
that the shard's fitted quantizers are the ones the shard manifest records, so that scores of
different shards compare.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import CorruptIndexError
from ..index import Index
from ..quantization import Quantizer
from ..results import SearchResults
from .layout import calibration_fingerprint

__all__ = [
    "ShardGroup",
    "ShardServer",
    "ThreadFanout",
    "index_fingerprint",
    "search_request",
    "decode_search_reply",
]


def index_fingerprint(index: Index) -> str:
    """:func:`~.layout.calibration_fingerprint` of an open index's fitted tiers."""
    return calibration_fingerprint({name: q.get_state() for name, q in index.tiers.items()})


def search_request(
    queries: np.ndarray,
    k: int,
    oversampling: float | None,
    stages: Sequence[str] | None,
    with_payload: bool,
    exact: bool,
) -> tuple[Any, ...]:
    """The one argument of :meth:`ShardServer.search_wire`: the float32 queries as bytes and the options."""
    q = np.ascontiguousarray(queries, np.float32)
    return (
        q.tobytes(),
        int(q.shape[0]),
        int(q.shape[1]),
        int(k),
        None if oversampling is None else float(oversampling),
        None if stages is None else list(stages),
        bool(with_payload),
        bool(exact),
    )


def decode_search_reply(reply: tuple[Any, ...], nq: int) -> tuple[SearchResults, int]:
    """``(SearchResults, n_live)`` from :meth:`ShardServer.search_wire`'s answer."""
    raw_ids, raw_scores, k, n_live, texts, metadata, timings, candidates = reply
    if isinstance(raw_ids, bytes):
        ids = np.frombuffer(raw_ids, np.int64).reshape(nq, k)
    else:
        ids = np.empty((nq, k), object)
        for q, row in enumerate(raw_ids):
            ids[q, : len(row)] = row
    scores = np.frombuffer(raw_scores, np.float32).reshape(nq, k)
    return SearchResults(ids, scores, texts, metadata, dict(timings), dict(candidates)), int(n_live)


class ShardServer:
    """The operations on one shard directory.

    Parameters
    ----------
    path : path-like
        An ordinary index directory (one shard).
    fingerprint : str, optional
        Expected calibration fingerprint (from the shard manifest); a mismatch raises
        :class:`CorruptIndexError` at open.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: str | None = None) -> None:
        self.path = Path(path)
        self._stall: tuple[float, str | None] | None = None
        self.index = Index.open(self.path)
        if fingerprint is not None and index_fingerprint(self.index) != fingerprint:
            self.index.close()
            raise CorruptIndexError(
                f"shard {self.path} holds a different calibration than its shard manifest records"
            )

    # ---- reads ---------------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        oversampling: float | None = None,
        stages: Sequence[str] | None = None,
        with_payload: bool = True,
        exact: bool = False,
    ) -> tuple[SearchResults, int]:
        """Search this shard for its best ``min(k, len(shard))`` documents.

        Parameters
        ----------
        queries : ndarray of shape (n_queries, dim), float32
        k : int
        exact : bool
            Rescore every live document of the shard (the candidate stage keeps them all), so
            that merged results equal one index searched the same way.

        Returns
        -------
        (results, n_live) : (SearchResults, int)
            The shard's hits and how many documents it held; results have ``min(k, n_live)``
            columns (0 for an empty shard). ``timings["shard"]`` is the whole call's time in ms.
        """
        t0 = time.perf_counter()
        self._pause()
        n_live = len(self.index)
        k_here = min(int(k), n_live)
        if k_here == 0:
            nq = int(np.shape(queries)[0])
            ids = np.full((nq, 0), -1 if self.index.id_type == "int" else None, object)
            empty = SearchResults(
                ids.astype(np.int64) if self.index.id_type == "int" else ids,
                np.empty((nq, 0), np.float32),
                [[] for _ in range(nq)] if with_payload else None,
                [[] for _ in range(nq)] if with_payload else None,
            )
            return empty, 0
        if exact:
            oversampling = n_live / k_here + 1.0  # every live row is a candidate
        res = self.index.search(
            queries, k_here, oversampling=oversampling, stages=stages, with_payload=with_payload
        )
        res.timings["shard"] = (time.perf_counter() - t0) * 1e3
        return res, n_live

    def search_wire(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        """:meth:`search` with its arguments and answer as plain bytes, numbers, lists and dicts.

        What a Ray caller uses: Ray serializes those with msgpack, and pickles numpy arrays with
        out-of-band buffers, which costs a sizeable share of a small call (docs/benchmarks.md,
        issue 13). ``request`` is :func:`search_request`'s tuple; the answer is decoded by
        :func:`decode_search_reply`.
        """
        raw, nq, dim, k, oversampling, stages, with_payload, exact = request
        queries = np.frombuffer(raw, np.float32).reshape(nq, dim)
        res, n_live = self.search(queries, k, oversampling, stages, with_payload, exact)
        ids = res.ids.tobytes() if res.ids.dtype == np.int64 else res.ids.tolist()
        return (
            ids,
            res.scores.astype(np.float32, copy=False).tobytes(),
            int(res.ids.shape[1]),
            n_live,
            res.texts,
            res.metadata,
            {name: float(ms) for name, ms in res.timings.items()},
            {name: int(n) for name, n in res.candidates.items()},
        )

    def missing(self, ids: Sequence[int | str]) -> list[int | str]:
        """The ids of ``ids`` that this shard does not hold, in order."""
        return [i for i in ids if i not in self.index]

    def get(self, doc_id: int | str) -> dict[str, Any]:
        return self.index.get(doc_id)

    def count(self) -> int:
        return len(self.index)

    def info(self) -> dict[str, Any]:
        return self.index.info()

    def verify(self) -> None:
        self.index.verify()

    def tiers(self) -> dict[str, Quantizer]:
        return self.index.tiers

    def settings(self) -> dict[str, Any]:
        """What a caller needs to act like an :class:`~quantsearch.Index`: tiers and search defaults."""
        return {
            "tiers": self.index.tiers,
            "rescore_tiers": self.index.rescore_tiers,
            "default_oversampling": self.index.default_oversampling,
        }

    # ---- writes --------------------------------------------------------------------------------------
    def add(
        self,
        vectors: np.ndarray,
        ids: Sequence[int | str],
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        resume: bool = False,
    ) -> int:
        """Add a batch atomically (``Index.add``); returns how many documents were added.

        ``resume=True`` (a retry after a failure, or a resumed ingestion) first drops the ids
        the shard already holds: the earlier attempt may have committed before its answer was
        lost, and ``Index.add`` is all-or-nothing, so the rest was not stored.
        """
        self._pause()
        if resume:
            present = set(ids) - set(self.missing(ids))
            if present:
                keep = [j for j, i in enumerate(ids) if i not in present]
                vectors = np.asarray(vectors)[keep]
                ids = [ids[j] for j in keep]
                texts = None if texts is None else [texts[j] for j in keep]
                metadata = None if metadata is None else [metadata[j] for j in keep]
            if not ids:
                return 0
        self.index.add(vectors, ids=ids, texts=texts, metadata=metadata)
        return len(ids)

    def delete(self, ids: Sequence[int | str]) -> int:
        return self.index.delete(list(ids))

    def compact(self) -> int:
        return self.index.compact()

    def refresh(self) -> None:
        self.index.refresh()

    # ---- process --------------------------------------------------------------------------------------
    def pid(self) -> int:
        """The id of the process serving this shard (tests kill it)."""
        return os.getpid()

    def node_id(self) -> str | None:
        """The Ray node this shard runs on (None outside Ray)."""
        try:
            import ray
        except ImportError:
            return None
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None

    def ping(self) -> bool:
        return True

    def stall(self, seconds: float, started: str | None = None) -> None:
        """Fault injection: the next ``search`` or ``add`` sleeps ``seconds`` inside the call (after
        creating the file ``started``, if given), so that a test can kill the process mid-call."""
        self._stall = (float(seconds), started)

    def _pause(self) -> None:
        if self._stall is not None:
            (seconds, started), self._stall = self._stall, None
            if started is not None:
                Path(started).touch()
            time.sleep(seconds)

    def close(self) -> None:
        self.index.close()


class ThreadFanout:
    """Runs one function over several shards on up to ``threads`` threads, the caller's included.

    The kernels of a search (scan, rescoring) release the GIL, so shards searched on separate
    threads use separate cores; a shard small enough to scan on one thread would otherwise leave
    the other cores idle. Each thread takes the next shard not yet taken, so no shard waits for a
    helper thread that has not started. The pool is created on first use and shut down by
    :meth:`close`.
    """

    def __init__(self, threads: int) -> None:
        self.threads = int(threads)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, computed on up to :attr:`threads` threads; re-raises an error."""
        if self.threads <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        out: list[Any] = [None] * len(items)
        errors: list[BaseException] = []
        turn = itertools.count()  # next item to take; next() is atomic under the GIL
        left = [len(items)]
        lock = threading.Lock()
        finished = threading.Event()

        def work() -> None:
            while (i := next(turn)) < len(out):
                try:
                    out[i] = fn(items[i])
                except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
                    errors.append(exc)
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        finished.set()

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="quantsearch-shard")
            pool = self._pool
        for _ in range(min(self.threads, len(items)) - 1):
            pool.submit(work)
        work()
        # wait only for items a helper is running: a helper still queued behind another search's
        # work finds nothing left when it starts
        finished.wait()
        if errors:
            raise errors[0]
        return out

    def close(self) -> None:
        """Wait for running calls and stop the threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class ShardGroup:
    """Several shards served by one process (one Ray actor), searched on parallel threads.

    On a node with fewer cores than shards, one actor per shard means more processes on the
    latency path than cores to run them: each Ray call and each wake-up of an actor then waits for a
    core. A group answers for all its shards in one call (:meth:`search_wire` returns one reply
    per shard, in ``shards`` order) and runs any :class:`ShardServer` method on a subset (:meth:`map`).

    Parameters
    ----------
    shards : sequence of int
        The shard numbers served here.
    paths : sequence of path-like
        Their directories, in the same order.
    fingerprint : str, optional
        Expected calibration fingerprint of every shard.
    threads : int, optional
        Shards searched at once (default: every core this process may use, at most one per shard).
    """

    def __init__(
        self,
        shards: Sequence[int],
        paths: Sequence[str | os.PathLike[str]],
        fingerprint: str | None = None,
        threads: int | None = None,
    ) -> None:
        from ..kernels import get_num_threads

        self.shards = [int(s) for s in shards]
        self.servers: dict[int, ShardServer] = {}
        try:
            for s, path in zip(self.shards, paths, strict=True):
                self.servers[s] = ShardServer(path, fingerprint)
        except BaseException:
            self.close()
            raise
        wanted = get_num_threads() if threads is None else int(threads)
        self._fanout = ThreadFanout(min(len(self.shards), max(1, wanted)))

    def search_wire(self, request: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """:meth:`ShardServer.search_wire` on every shard of the group, on parallel threads."""
        return self._fanout.map(lambda s: self.servers[s].search_wire(request), self.shards)

    def map(self, method: str, calls: dict[int, tuple[Any, ...]], kwargs: dict[str, Any]) -> dict[int, Any]:
        """``method(*calls[s], **kwargs)`` of :class:`ShardServer` on each shard ``s`` of ``calls``."""
        return {s: getattr(self.servers[s], method)(*args, **kwargs) for s, args in calls.items()}

    def pid(self) -> int:
        """The id of the process serving these shards (tests kill it)."""
        return os.getpid()

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        fanout = getattr(self, "_fanout", None)
        if fanout is not None:
            fanout.close()
        for server in self.servers.values():
            server.close()
