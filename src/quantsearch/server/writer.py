"""Group commit: concurrent add requests are merged into one ``Index.add``.

Every ``Index.add`` writes a segment (one file per tier, fsynced) and commits one SQLite
transaction; under load the writer, not the searches, becomes the bottleneck. Requests that
arrive while a commit is running wait, and the next commit takes all of them at once (as
databases do with their logs). Each request stays atomic: a merged add is all or nothing, so
each of its batches is too, and a request is answered only after the commit that holds it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import InvalidArgumentError
from ..index import Index

__all__ = ["GroupCommitter"]


@dataclass
class _Request:
    vectors: np.ndarray  # (n, dim)
    ids: list[int | str] | None
    texts: list[str | None]
    metadata: list[dict[str, Any] | None]
    done: bool = False
    result: list[int | str] = field(default_factory=list)
    error: BaseException | None = None

    def finish(self, result: list[int | str] | None = None, error: BaseException | None = None) -> None:
        self.result = result or []
        self.error = error
        self.done = True


class GroupCommitter:
    """Add batches to ``index`` from many threads; concurrent batches share one commit.

    Parameters
    ----------
    index : Index
        The open index (its own lock still serialises every write).
    max_rows : int
        Most documents merged into one commit.
    """

    def __init__(self, index: Index, max_rows: int) -> None:
        self.index = index
        self.max_rows = max_rows
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._leading = False  # a thread is committing a group
        self.commits = 0  # number of Index.add calls made (tests and logs read it)

    @property
    def pending(self) -> int:
        """Requests waiting for a commit."""
        with self._cond:
            return len(self._queue)

    def add(
        self,
        vectors: np.ndarray,
        ids: Sequence[int | str] | None,
        texts: Sequence[str | None],
        metadata: Sequence[dict[str, Any] | None],
    ) -> list[int | str]:
        """Add one batch atomically; returns its ids once it is committed (durable and searchable).

        Raises what ``Index.add`` raises for this batch alone; another request's bad batch never
        fails this one.
        """
        request = _Request(vectors, None if ids is None else list(ids), list(texts), list(metadata))
        with self._cond:
            self._queue.append(request)
        while True:
            with self._cond:
                while not request.done and self._leading:
                    self._cond.wait()
                if request.done:
                    break
                # nobody is committing: this thread commits what is queued (its own request may be
                # behind max_rows of others, then it loops and leads again)
                self._leading = True
                group = self._take()
            try:
                self._commit(group)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.result

    def _take(self) -> list[_Request]:
        group: list[_Request] = []
        rows = 0
        while self._queue and (not group or rows + len(self._queue[0].vectors) <= self.max_rows):
            request = self._queue.pop(0)
            group.append(request)
            rows += len(request.vectors)
        return group

    def _commit(self, group: list[_Request]) -> None:
        try:
            # requests with ids and requests asking for new int ids cannot share one add
            for part in ([r for r in group if r.ids is not None], [r for r in group if r.ids is None]):
                if len(part) == 1:
                    self._add_one(part[0])
                elif part:
                    self._add_merged(part)
        except BaseException as exc:  # never leave a waiting request without an answer
            for request in group:
                if not request.done:
                    request.finish(error=exc)
            raise

    def _add_merged(self, part: list[_Request]) -> None:
        try:
            ids = self.index.add(
                np.concatenate([r.vectors for r in part]),
                ids=None if part[0].ids is None else [i for r in part for i in r.ids or ()],
                texts=[t for r in part for t in r.texts],
                metadata=[m for r in part for m in r.metadata],
            )
        except InvalidArgumentError:
            # a bad batch (duplicate id, NaN, ...) fails the whole merged add before anything is
            # written: add each batch alone, so that only the bad one gets the error
            for request in part:
                self._add_one(request)
            return
        except Exception as exc:  # storage failure: nothing was committed (Index.add's guarantee)
            for request in part:
                request.finish(error=exc)
            return
        self.commits += 1
        start = 0
        for request in part:
            n = len(request.vectors)
            request.finish(result=ids[start : start + n])
            start += n

    def _add_one(self, request: _Request) -> None:
        try:
            ids = self.index.add(
                request.vectors, ids=request.ids, texts=request.texts, metadata=request.metadata
            )
        except Exception as exc:
            request.finish(error=exc)
            return
        self.commits += 1
        request.finish(result=ids)
