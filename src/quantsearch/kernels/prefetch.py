"""Read-ahead for rescoring tiers on disk: ask the OS for every candidate row at once.

A rescoring tier is a memory map; when its pages are not in the page cache, each candidate row
costs a page fault that waits for one disk read, one after the other (100 candidates = 100 serial
reads). ``madvise(MADV_WILLNEED)`` over the candidates' pages, in ascending address order
(adjacent pages merged into one call), before they are read lets the disk serve them all
concurrently, and the gather that follows finds them cached or in flight.

- :func:`prefetch_rows` hints every candidate page (stateless; ``dot_rows(prefetch=True)``).
- :class:`ReadAhead` is what the search pipeline uses for every memory-mapped tier: it remembers
  which pages it has already hinted (one bit per page) and hints only the others, so a warm tier
  costs a few microseconds per search instead of one system call per candidate page; when a
  search takes a major page fault anyway (a remembered page was evicted), it forgets them all.
"""

from __future__ import annotations

import mmap
import resource
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from .backend import native_module


def is_memory_mapped(array: np.ndarray) -> bool:
    """True when ``array`` views a memory-mapped file (``np.memmap`` or a view of an ``mmap``)."""
    obj: object = array
    for _ in range(16):  # views of views: follow the .base chain
        if isinstance(obj, (np.memmap, mmap.mmap)):
            return True
        obj = getattr(obj, "base", None)
        if obj is None:
            return False
    return False


def _mapped(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.flags.c_contiguous and is_memory_mapped(array)


def _segments(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """(bases, nrows, row_bytes) of the segment arrays; base 0 for arrays held in RAM (skipped)."""
    bases = np.array([a.ctypes.data if _mapped(a) else 0 for a in arrays], np.uint64)
    nrows = np.array([a.shape[0] for a in arrays], np.int64)
    row_bytes = arrays[0].shape[1] * arrays[0].itemsize if arrays[0].ndim == 2 else 1
    return bases, nrows, max(int(row_bytes), 1)


def prefetch_rows(arrays: Sequence[np.ndarray], starts: np.ndarray, rows: np.ndarray) -> int:
    """Start reading the pages of the given rows of memory-mapped segment arrays, all at once.

    Arrays held in RAM are skipped; so is everything without the native extension. Errors of the
    hint are ignored: the rows are then read on first touch as usual.

    Parameters
    ----------
    arrays : sequence of ndarray of shape (n_i, width)
        Segment arrays in row order (C-contiguous), as for :func:`~quantsearch.kernels.dot_rows`.
    starts : ndarray of shape (n_segments,), int64
        First global row of each segment.
    rows : ndarray of shape (nq, c) or (m,), int64
        Global rows; ``-1`` (padding) is skipped.

    Returns
    -------
    int
        Number of ``madvise`` calls made (0 when nothing is mapped).
    """
    module = native_module()
    arrays = list(arrays)
    if module is None or not arrays:
        return 0
    bases, nrows, row_bytes = _segments(arrays)
    if not bases.any():
        return 0
    flat = np.ascontiguousarray(rows, np.int64).ravel()
    calls, _ = module.willneed_rows(
        bases, nrows, np.ascontiguousarray(starts, np.int64), row_bytes, flat, None
    )
    return calls


_enabled = True
# pages to hint that ReadAhead first checks with mincore: all cached = a warm tier, hint none
SAMPLE = 16


def set_read_ahead(enabled: bool) -> bool:
    """Turn the pipeline's read-ahead (:class:`ReadAhead`) on or off for the whole process; returns
    the previous setting. On by default; benchmarks turn it off to measure what it saves."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def _major_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


class ReadAhead:
    """Read-ahead of one memory-mapped tier across searches.

    Holds one bit per page of every mapped segment array: set once the page has been hinted
    (``madvise(WILLNEED)``), after which the page is taken to be cached and is not hinted again.
    Before hinting, :attr:`sample` (16) of the pages to hint are checked with ``mincore``: when all
    of them are cached already, the tier is warm and none is hinted (their bits are still set),
    so a warm tier costs a few ``mincore`` calls per search until its bits are set, then nothing.
    :meth:`reading` wraps a rescoring: it hints the candidates' unhinted pages first, and if the
    rescoring took a major page fault (a page thought cached was not: evicted under memory
    pressure), clears every bit so that the next searches hint again. Major faults are counted
    process-wide, so another thread's fault also clears them: the cost is a few extra hints.

    Extend it with :meth:`extended` when segments are added (the bits of the old ones carry over).
    """

    def __init__(self, arrays: Sequence[np.ndarray], bitmaps: Sequence[np.ndarray | None] = ()) -> None:
        self._arrays = list(arrays)
        segments = (
            _segments(self._arrays) if self._arrays else (np.zeros(0, np.uint64), np.zeros(0, np.int64), 1)
        )
        self._bases: np.ndarray = segments[0]
        self._nrows: np.ndarray = segments[1]
        self._row_bytes: int = segments[2]
        page = mmap.PAGESIZE
        maps: list[np.ndarray | None] = list(bitmaps)[: len(self._arrays)]
        for i in range(len(maps), len(self._arrays)):
            if self._bases[i] == 0:
                maps.append(None)
                continue
            first = int(self._bases[i]) & ~(page - 1)
            end = int(self._bases[i]) + int(self._nrows[i]) * self._row_bytes
            pages = (end - first + page - 1) // page
            maps.append(np.zeros((pages + 7) // 8, np.uint8))
        self._bitmaps = maps  # read and written by the native call with the GIL held
        self.active = native_module() is not None and bool(self._bases.any())
        self.sample = SAMPLE

    def extended(self, arrays: Sequence[np.ndarray]) -> ReadAhead:
        """The read-ahead of ``arrays``, which begin with this one's arrays (same objects)."""
        arrays = list(arrays)
        same = len(arrays) >= len(self._arrays) and all(
            a is b for a, b in zip(arrays, self._arrays, strict=False)
        )
        if same and len(arrays) == len(self._arrays):
            return self
        return ReadAhead(arrays, self._bitmaps if same else ())

    def hint(self, starts: np.ndarray, rows: np.ndarray) -> int:
        """Hint the pages of ``rows`` (global, ``-1`` skipped) not hinted before, unless the
        :attr:`sample` of them is cached; returns the number of pages hinted."""
        module = native_module()
        if not self.active or module is None:
            return 0
        flat = np.ascontiguousarray(rows, np.int64).ravel()
        _, pages = module.willneed_rows(
            self._bases,
            self._nrows,
            np.ascontiguousarray(starts, np.int64),
            self._row_bytes,
            flat,
            self._bitmaps,
            self.sample,
        )
        return pages

    def forget(self) -> None:
        """Clear every bit: the next searches hint their pages again."""
        for bits in self._bitmaps:
            if bits is not None:
                bits.fill(0)

    @contextmanager
    def reading(self, starts: np.ndarray, rows: np.ndarray) -> Iterator[int]:
        """Hint the candidates' pages, run the body (the rescoring), and forget every page if the
        body took a major page fault. Yields the number of pages hinted."""
        if not (self.active and _enabled):
            yield 0
            return
        before = _major_faults()
        yield self.hint(starts, rows)
        if _major_faults() != before:
            self.forget()
