"""Matryoshka truncation: keep the first ``dim`` dimensions, renormalise, then apply any quantizer."""

from __future__ import annotations

import numpy as np

from .reducing import ReducingQuantizer

__all__ = ["MatryoshkaQuantizer", "truncate"]


def truncate(x: np.ndarray, dim: int) -> np.ndarray:
    """First ``dim`` columns of ``x`` (n, D) float32, each row rescaled to unit L2 norm (zero rows stay 0)."""
    head = np.ascontiguousarray(x[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return head / np.where(norms > 0, norms, np.float32(1.0))


class MatryoshkaQuantizer(ReducingQuantizer):
    """Truncate to ``dim`` dimensions and renormalise, then encode with ``base``.

    Models trained with Matryoshka representation learning keep most of their quality in the
    leading dimensions; composing truncation with binary or int8 codes multiplies the savings.

    Parameters
    ----------
    dim : int
        Number of leading dimensions kept.
    base : Quantizer
        Quantizer applied to the truncated vectors (fitted on truncated calibration vectors).
    """

    kind = "matryoshka"
    label = "Matryoshka"

    def _reduce(self, x: np.ndarray) -> np.ndarray:
        return truncate(x, self.dim)

    @property
    def name(self) -> str:
        return f"{self.base.name}@{self.dim}"
