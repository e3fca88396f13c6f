"""Read-ahead for rescoring tiers on disk: ask the OS for every candidate row at once.

A rescoring tier is a memory map; when its pages are not in the page cache, each candidate row
costs a page fault that waits for one disk read, one after the other (100 candidates = 100 serial
reads). :func:`prefetch_rows` issues ``madvise(MADV_WILLNEED)`` over the candidates' pages in
ascending address order (touching pages merged into one call) before they are read, so the disk
serves them all concurrently and the gather that follows finds them cached or in flight.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

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
    flat = np.asarray(rows, np.int64).ravel()
    flat = np.unique(flat[flat >= 0])  # sorted: ascending addresses within a segment
    starts = np.asarray(starts, np.int64)
    seg = np.searchsorted(starts, flat, side="right") - 1
    calls = 0
    for i, array in enumerate(arrays):
        if not (array.flags.c_contiguous and array.ndim == 2 and is_memory_mapped(array)):
            continue
        local = flat[seg == i] - starts[i]
        local = local[local < array.shape[0]]
        if local.size == 0:
            continue
        row_bytes = array.shape[1] * array.itemsize
        addresses = np.uint64(array.ctypes.data) + local.astype(np.uint64) * np.uint64(row_bytes)
        calls += module.willneed(addresses, row_bytes)
    return calls
