"""Building from inputs larger than RAM: batches read from an array or a ``.npy`` memory map.

:meth:`Index.build` used to validate and calibrate on the whole input at once: ``as_float_matrix``
(an ``isfinite`` mask and an ``abs`` copy of every value) and the quantizers' ``fit`` over all rows.
From a 1M x 1024 float32 array that peaked at 5.5 GB RSS, and a 10M memory map (40 GB) cannot be
built at all. Now the input is checked for shape and dtype only, each batch is validated by ``add``,
the quantizers are calibrated on a seeded sample of at most ``calibration_size`` rows (all rows
below that, so small builds are unchanged), and the pages of a memory map that a batch has been read
from are handed back (``madvise(MADV_DONTNEED)``; the file stays in the page cache, but no longer
counts in the process's resident set).
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

from .._validation import as_float_matrix

__all__ = ["calibration_sample", "check_rows", "release_pages"]

#: sample rows copied between two releases of a memory map's pages
_SAMPLE_CHUNK = 4096


def check_rows(vectors: Any, dim: int | None = None) -> np.ndarray:
    """``vectors`` as a 2-D float array without reading it all: an ndarray (a memory map stays one)
    is checked for dtype and shape on its first row; anything else is converted and validated whole."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[0] == 0:
        return as_float_matrix(vectors, "vectors", dim=dim)
    as_float_matrix(vectors[:1], "vectors", dim=dim)  # dtype and dimension errors, as for the whole
    return vectors


def calibration_sample(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """All rows when there are at most ``size``, else a copy of ``size`` seeded random rows (in row
    order, so a memory map is read forward; its pages are released as the copy advances)."""
    n = vectors.shape[0]
    if n <= size:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    out = np.empty((size, vectors.shape[1]), vectors.dtype)
    for a in range(0, size, _SAMPLE_CHUNK):  # a memory map is released a span at a time: reading one
        part = rows[a : a + _SAMPLE_CHUNK]  # row maps its neighbours too (the kernel's fault-around)
        out[a : a + part.size] = vectors[part]
        release_pages(vectors, int(part[0]), int(part[-1]) + 1)
    return out


def release_pages(vectors: np.ndarray, start: int, stop: int) -> None:
    """Drop rows ``start:stop`` of a top-level ``np.memmap`` (as ``np.load(mmap_mode="r")`` returns)
    from the resident set; anything else (an ordinary array, a view of a memmap) is left alone."""
    base = getattr(vectors, "base", None)
    if not (isinstance(vectors, np.memmap) and isinstance(base, mmap.mmap) and vectors.flags.c_contiguous):
        return
    if not hasattr(base, "madvise"):  # pragma: no cover - Python < 3.8 or a platform without it
        return
    row_bytes = vectors.strides[0]
    lead = vectors.offset % mmap.ALLOCATIONGRANULARITY  # np.memmap maps from an aligned offset
    page = mmap.PAGESIZE
    first = (lead + start * row_bytes) // page * page
    last = min((lead + stop * row_bytes) // page * page, len(base))
    if last > first:
        base.madvise(mmap.MADV_DONTNEED, first, last - first)
