"""Byte layout shared by the bit-plane code families (RaBitQ, 2-bit/ternary, learned heads).

A code row is ``bits`` packed bit planes, each ``ceil(d / 8)`` bytes in ``np.packbits`` order (first
dimension in the high bit of the first byte, zero padding), plane ``p`` holding bit ``p`` of the level
index (plane 0 least significant); then, for the corrected families, one little-endian float
per-vector factor. The popcount kernels (``kernels.planes_topk``) read exactly this layout.
"""

from __future__ import annotations

import numpy as np

__all__ = ["factor_bytes", "factor_from_bytes", "pack_planes", "plane_bytes", "unpack_plane", "unpack_planes"]


def plane_bytes(dim: int) -> int:
    """Bytes of one packed bit plane of ``dim`` dimensions."""
    return (dim + 7) // 8


def pack_planes(levels: np.ndarray, bits: int) -> np.ndarray:
    """Pack level indices (n, d) in [0, 2^bits) as ``bits`` bit planes: (n, bits * ceil(d / 8)) uint8."""
    levels = np.asarray(levels, np.uint8)
    return np.concatenate([np.packbits((levels >> p) & 1, axis=1) for p in range(bits)], axis=1)


def unpack_plane(codes: np.ndarray, plane: int, dim: int) -> np.ndarray:
    """Bit plane ``plane`` of codes (n, width) as (n, dim) uint8 0/1."""
    width = plane_bytes(dim)
    return np.unpackbits(codes[:, plane * width : (plane + 1) * width], axis=1, count=dim)


def unpack_planes(codes: np.ndarray, dim: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_planes`: (n, dim) uint8 level indices from the first ``bits`` planes."""
    levels = unpack_plane(codes, 0, dim)
    for p in range(1, bits):
        levels |= unpack_plane(codes, p, dim) << p
    return levels


def factor_bytes(factor: np.ndarray, dtype: str = "<f4") -> np.ndarray:
    """Per-vector factors (n,) as (n, itemsize) uint8, little-endian ``dtype`` (float32 or float16)."""
    kind = np.dtype(dtype)
    return np.ascontiguousarray(factor, dtype=kind).view(np.uint8).reshape(-1, kind.itemsize)


def factor_from_bytes(codes: np.ndarray, start: int, dtype: str = "<f4") -> np.ndarray:
    """Per-vector factors (n,) float32 stored in codes (n, width) at byte ``start``."""
    kind = np.dtype(dtype)
    raw = np.ascontiguousarray(codes[:, start : start + kind.itemsize])
    return raw.view(kind)[:, 0].astype(np.float32)
