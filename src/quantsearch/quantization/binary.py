"""1-bit codes: one sign bit per dimension, packed eight to a byte."""

from __future__ import annotations

import numpy as np

from ..kernels import hamming_topk
from .base import Precision, Quantizer

__all__ = ["BinaryQuantizer", "pack_bits"]


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a boolean matrix (n, d) into (n, ceil(d/8)) uint8, first dimension in the high bit.

    The layout matches ``np.packbits`` (and sentence-transformers' "ubinary"); the padding bits of
    the last byte are zero in every code, so they never add to a Hamming distance.
    """
    return np.packbits(bits, axis=1)


class BinaryQuantizer(Quantizer):
    """Sign binarization: bit j is 1 where ``x_j > 0``.

    No calibration is learned (``fit`` records the dimension), so codes of documents and queries
    never depend on the batch they came in. Any dim is accepted, including ``dim % 8 != 0``.
    """

    kind = "binary"

    def __init__(self) -> None:
        pass

    @property
    def precision(self) -> Precision:
        return Precision.BINARY

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return pack_bits(x > 0)

    @property
    def scan_stage(self) -> str:
        return "hamming"

    def scan_topk(
        self, queries: np.ndarray, codes: np.ndarray, k: int, *, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Symmetric Hamming scan on the popcount kernel: the query is binarized too; score = -distance."""
        distances, rows = hamming_topk(self.encode(queries), codes, k, valid=valid)
        return np.where(rows >= 0, -distances.astype(np.float32), np.float32(np.nan)), rows

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes as +-1 vectors (n, dim) float32: the centroid of each sign cell up to scale."""
        bits = np.unpackbits(codes, axis=1, count=self.code_dim)
        return bits.astype(np.float32) * np.float32(2.0) - np.float32(1.0)
