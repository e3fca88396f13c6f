"""Calibration samples: the one reservoir sampler the quantizers that keep rows share."""

from __future__ import annotations

import numpy as np

__all__ = ["reservoir_add"]


def reservoir_add(
    sample: np.ndarray | None, x: np.ndarray, seen: int, max_samples: int, seed: int
) -> np.ndarray:
    """Uniform reservoir sample (Algorithm R, vectorised per batch) of at most ``max_samples`` rows.

    Parameters
    ----------
    sample : ndarray of shape (m, d), float32, or None
        The reservoir after ``seen`` earlier rows (None before the first batch).
    x : ndarray of shape (n, d), float32
        The next batch.
    seen, max_samples, seed : int
        The generator is seeded by ``seed + seen``, so refits are reproducible.

    Returns
    -------
    ndarray of shape (min(seen + n, max_samples), d): the reservoir after ``x`` too.
    """
    rng = np.random.default_rng(seed + seen)
    if sample is None:
        sample = np.empty((0, x.shape[1]), np.float32)
    room = max_samples - sample.shape[0]
    take, rest = x[: max(room, 0)], x[max(room, 0) :]
    sample = np.concatenate([sample, take]) if take.shape[0] else sample
    if rest.shape[0]:
        positions = seen + take.shape[0] + np.arange(rest.shape[0])
        slots = (rng.random(rest.shape[0]) * (positions + 1)).astype(np.int64)
        keep = slots < max_samples
        sample = sample.copy()
        sample[slots[keep]] = rest[keep]
    return sample
