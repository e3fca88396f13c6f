"""Scalar quantizers: float32/float16 storage and calibrated int8 / uint8 / int4 codes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..exceptions import InvalidArgumentError
from ..kernels import dot_rows
from .base import Precision, Quantizer, parse_precision
from .sampling import reservoir_add

__all__ = ["FloatQuantizer", "ScalarQuantizer", "pack_nibbles", "unpack_nibbles"]


class FloatQuantizer(Quantizer):
    """Stores vectors as float32 or float16 (no calibration; ``fit`` only records the dim).

    Parameters
    ----------
    precision : {"float32", "float16"} or any spelling :func:`parse_precision` accepts
    """

    kind = "float"

    def __init__(self, precision: str | Precision = "float16") -> None:
        self._precision = parse_precision(precision)
        if self._precision not in (Precision.FLOAT32, Precision.FLOAT16):
            raise InvalidArgumentError(
                f"FloatQuantizer precision must be float32 or float16, got {precision!r}"
            )

    @property
    def precision(self) -> Precision:
        return self._precision

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(self._precision.value)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        if self._precision is Precision.FLOAT16:
            # float16 overflows to inf beyond 65504: saturate instead of storing non-finite codes
            x = np.clip(x, -65504.0, 65504.0)
        return x.astype(self.code_dtype)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float32)

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return np.einsum("qcd,qd->qc", codes.astype(np.float32), queries, dtype=np.float32)

    def rescore(
        self, prepared: np.ndarray, arrays: Sequence[np.ndarray], starts: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """The fused gather + dot kernel: each candidate row is read straight from its memory map."""
        return dot_rows(arrays, starts, rows, np.ascontiguousarray(prepared, dtype=np.float32))


class ScalarQuantizer(Quantizer):
    """Per-dimension affine codes with ranges calibrated on data, saturating (never wrapping).

    Each dimension ``j`` maps ``[lo_j, hi_j]`` onto ``L = 2**bits`` evenly spaced levels;
    values outside the range clip to the end levels. ``decode`` returns the level centres, so the
    rescoring score is an exact inner product of the float query with the dequantized vector.

    Parameters
    ----------
    precision : {"int8", "uint8", "int4"}
        int8 stores level - 128 as a signed byte; uint8 the level; int4 two levels per byte
        (low nibble = even dimension).
    percentile : float or None
        ``None`` uses min/max. A value such as ``99.9`` uses the (100 - p) and p percentiles of
        each dimension instead, clipping outliers to win resolution for the bulk.
    max_samples : int
        With ``percentile`` set, ``partial_fit`` keeps a uniform reservoir of at most this many
        rows to compute percentiles from (min/max needs no sample).
    seed : int
        Seed of the reservoir sampler.
    """

    kind = "scalar"
    # fitted state (annotations only: the attributes exist after fit)
    min_: np.ndarray
    max_: np.ndarray
    scale_: np.ndarray

    def __init__(
        self,
        precision: str | Precision = "int8",
        *,
        percentile: float | None = None,
        max_samples: int = 100_000,
        seed: int = 0,
    ) -> None:
        self._precision = parse_precision(precision)
        if self._precision not in (Precision.INT8, Precision.UINT8, Precision.INT4):
            raise InvalidArgumentError(
                f"ScalarQuantizer precision must be int8, uint8 or int4, got {precision!r}"
            )
        if percentile is not None and not (50.0 < float(percentile) <= 100.0):
            raise InvalidArgumentError(f"percentile must be in (50, 100], got {percentile!r}")
        if int(max_samples) < 1:
            raise InvalidArgumentError(f"max_samples must be >= 1, got {max_samples!r}")
        self.percentile = None if percentile is None else float(percentile)
        self.max_samples = int(max_samples)
        self.seed = int(seed)

    @property
    def precision(self) -> Precision:
        return self._precision

    @property
    def levels(self) -> int:
        return 1 << self._precision.bits

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.int8 if self._precision is Precision.INT8 else np.uint8)

    # ---- calibration ----------------------------------------------------------------------------
    def _reset(self) -> None:
        super()._reset()
        self._sample: np.ndarray | None = None

    def _fit_rows(self, x: np.ndarray) -> None:
        if self.percentile is None:
            lo: np.ndarray = x.min(axis=0)
            hi: np.ndarray = x.max(axis=0)
            if hasattr(self, "min_"):
                lo, hi = np.minimum(lo, self.min_), np.maximum(hi, self.max_)
            self.min_, self.max_ = lo.astype(np.float32), hi.astype(np.float32)
            return
        self._reservoir_add(x)
        assert self._sample is not None
        q = self.percentile
        self.min_ = np.percentile(self._sample, 100.0 - q, axis=0).astype(np.float32)
        self.max_ = np.percentile(self._sample, q, axis=0).astype(np.float32)

    def _reservoir_add(self, x: np.ndarray) -> None:
        self._sample = reservoir_add(
            getattr(self, "_sample", None),
            x,
            int(getattr(self, "n_samples_seen_", 0)),
            self.max_samples,
            self.seed,
        )

    def _finish_fit(self) -> None:
        span = (self.max_ - self.min_).astype(np.float32)
        # a constant dimension gets step 1 so that it encodes to level 0 and decodes to its value
        self.scale_ = np.where(span > 0, span / np.float32(self.levels - 1), np.float32(1.0)).astype(
            np.float32
        )

    # ---- codes ----------------------------------------------------------------------------------
    def _levels(self, x: np.ndarray) -> np.ndarray:
        """Level index in [0, L-1] of each value (rounded to nearest, saturated)."""
        idx = np.rint((x - self.min_) / self.scale_)
        return np.clip(idx, 0, self.levels - 1).astype(np.int16)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        lv = self._levels(x)
        if self._precision is Precision.INT8:
            return (lv - 128).astype(np.int8)
        if self._precision is Precision.UINT8:
            return lv.astype(np.uint8)
        return pack_nibbles(lv.astype(np.uint8))

    def _levels_from_codes(self, codes: np.ndarray) -> np.ndarray:
        """float32 level indices (n, code_dim) from stored codes."""
        if self._precision is Precision.INT8:
            return codes.astype(np.float32) + np.float32(128.0)
        if self._precision is Precision.UINT8:
            return codes.astype(np.float32)
        return unpack_nibbles(codes, self.code_dim).astype(np.float32)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self._levels_from_codes(codes) * self.scale_ + self.min_

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        # q . (level * scale + min) = level . (q * scale) + q . min: fold the calibration into the query
        nq, c, width = codes.shape
        levels = self._levels_from_codes(codes.reshape(-1, width)).reshape(nq, c, -1)
        weights = queries * self.scale_
        bias = queries @ self.min_
        return np.einsum("qcd,qd->qc", levels, weights, dtype=np.float32) + bias[:, None]

    def rescore(
        self, prepared: np.ndarray, arrays: Sequence[np.ndarray], starts: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """The fused gather + dot kernel with the calibration folded into the query:
        ``q . (level * scale + min) = (code + offset) . (q * scale) + q . min``, offset 128 for int8."""
        weights = np.ascontiguousarray(prepared * self.scale_, dtype=np.float32)
        bias = (prepared @ self.min_).astype(np.float32)
        offset = 128 if self._precision is Precision.INT8 else 0
        nibbles = self._precision is Precision.INT4
        scores = dot_rows(arrays, starts, rows, weights, offset=offset, nibbles=nibbles)
        return scores + bias[:, None]


def pack_nibbles(levels: np.ndarray) -> np.ndarray:
    """Pack 4-bit values (n, d) uint8 in [0, 15] into (n, ceil(d/2)) bytes, even dim in the low nibble."""
    n, d = levels.shape
    if d % 2:
        levels = np.concatenate([levels, np.zeros((n, 1), np.uint8)], axis=1)
    return (levels[:, 0::2] | (levels[:, 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, dim: int) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`: (n, ceil(dim/2)) bytes -> (n, dim) uint8 values."""
    out = np.empty((packed.shape[0], packed.shape[1] * 2), np.uint8)
    out[:, 0::2] = packed & 0x0F
    out[:, 1::2] = packed >> 4
    return out[:, :dim]
