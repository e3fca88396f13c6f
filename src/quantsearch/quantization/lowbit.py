"""2-bit and ternary (1.58-bit) codes calibrated on data, optionally after a random rotation.

Both families code ``y = (x - c) @ R`` (``c`` the calibration mean or 0, ``R`` a random orthogonal matrix
or the identity), so ``<q, x> = <q, c> + <q @ R, y>``: a query is rotated once and scored against the
dequantized ``y``. A per-vector factor ``f`` (stored after the codes as a little-endian float32) rescales
each vector's reconstruction ``f * y_hat``; :meth:`decode` returns ``c + f * y_hat @ R.T``, so every
score is exactly the float query's dot product with the decoded vector.

Code layout (one row per vector, uint8):

* int2: two bit planes of ``ceil(d / 8)`` bytes, plane 0 holding the least significant bit of each level
  index and plane 1 the most significant, in ``np.packbits`` order (dimension 0 in the high bit of the
  first byte); then the factor (4 bytes) when ``correction`` is on. Level indices are sorted, so level
  ``l = b0 + 2 * b1`` of dimension ``j`` decodes to ``levels_[j, l] = offset_j + w0_j b0 + w1_j b1 +
  w01_j b0 b1`` (:meth:`Int2Quantizer.plane_weights`; ``w01 = 0`` for symmetric and uniform levels),
  which a bit-plane popcount kernel can fold into the query.
* ternary, ``layout="base3"``: 5 trits per byte, ``byte = sum_i (t_i + 1) * 3**i`` over dimensions
  ``5k .. 5k+4`` (``i`` = position in the group, padding trits are 0), ``ceil(d / 5)`` bytes = 1.6
  bits/dim; ``layout="planes"``: the int2 plane layout with level index ``t + 1`` (so ``t = -1 + b0 +
  2 * b1``), for the same kernel as int2; then the per-vector scale (4 bytes) with ``scale="vector"``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import numpy as np

from .._validation import check_number, check_positive_int
from ..exceptions import InvalidArgumentError
from ..kernels import nibble_scan, planes_topk, table_topk
from . import base
from .base import Precision, Quantizer, register_quantizer_name
from .bitplanes import factor_bytes, factor_from_bytes, pack_planes, unpack_planes
from .rotation import random_orthogonal
from .sampling import reservoir_add

__all__ = [
    "Int2Quantizer",
    "TernaryQuantizer",
    "pack_trits",
    "unpack_trits",
]

_FACTOR_BYTES = 4  # one float32 per vector
_LLOYD_ITERATIONS = 30


# ---- packing ------------------------------------------------------------------------------------------
_POWERS = np.array([1, 3, 9, 27, 81], np.int32)
# byte value -> its five trits in {-1, 0, +1}; only 0..242 are valid codes
_TRIT_TABLE = ((np.arange(256)[:, None] // _POWERS[None, :]) % 3 - 1).astype(np.int8)
_TRIT_LEVELS = np.array([-1.0, 0.0, 1.0])  # trit of digit 0, 1, 2


def pack_trits(trits: np.ndarray) -> np.ndarray:
    """Pack trits (n, d) in {-1, 0, +1} five to a byte: (n, ceil(d / 5)) uint8 in [0, 242]."""
    trits = np.asarray(trits)
    n, d = trits.shape
    groups = (d + 4) // 5
    digits = np.ones((n, groups * 5), np.int32)  # padding trits are 0 (digit 1)
    digits[:, :d] = trits.astype(np.int32) + 1
    return (digits.reshape(n, groups, 5) @ _POWERS).astype(np.uint8)


def unpack_trits(packed: np.ndarray, dim: int) -> np.ndarray:
    """Inverse of :func:`pack_trits`: (n, ceil(dim / 5)) bytes -> (n, dim) int8 trits."""
    n = packed.shape[0]
    return _TRIT_TABLE[packed].reshape(n, -1)[:, :dim]


def _least_squares_factor(y: np.ndarray, approx: np.ndarray) -> np.ndarray:
    """Per row, the f minimising ||y - f * approx||; 1 where approx is 0."""
    num = np.einsum("nd,nd->n", y, approx, dtype=np.float64)
    den = np.einsum("nd,nd->n", approx, approx, dtype=np.float64)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0).astype(np.float32)


# ---- shared machinery ------------------------------------------------------------------------------------
class _RotatedCodes(Quantizer):
    """Calibration sample, centre and rotation shared by the 2-bit and ternary families."""

    rotation_: np.ndarray
    center_: np.ndarray

    def __init__(self, *, rotate: bool, center: bool, max_samples: int, seed: int) -> None:
        if int(max_samples) < 1:
            raise InvalidArgumentError(f"max_samples must be >= 1, got {max_samples!r}")
        self.rotate = bool(rotate)
        self.center = bool(center)
        self.max_samples = int(max_samples)
        self.seed = int(seed)

    def _reset(self) -> None:
        super()._reset()
        self._sample: np.ndarray | None = None

    def _fit_rows(self, x: np.ndarray) -> None:
        seen = int(getattr(self, "n_samples_seen_", 0))
        self._sample = reservoir_add(getattr(self, "_sample", None), x, seen, self.max_samples, self.seed)

    def _finish_fit(self) -> None:
        sample = self._sample
        assert sample is not None
        dim = sample.shape[1]
        self.center_ = sample.mean(axis=0).astype(np.float32) if self.center else np.zeros(dim, np.float32)
        if self.rotate:
            self.rotation_ = random_orthogonal(dim, self.seed)
        else:
            self.rotation_ = np.eye(dim, dtype=np.float32)
        self._fit_rotated(self._to_rotated(sample))

    def _fit_rotated(self, y: np.ndarray) -> None:
        raise NotImplementedError

    def _to_rotated(self, x: np.ndarray) -> np.ndarray:
        y = x - self.center_
        return np.ascontiguousarray(y @ self.rotation_ if self.rotate else y, dtype=np.float32)

    # the codes live in the rotated space: the estimate is <q, c> + <q @ R, f * y_hat>
    def _rotated_estimate(self, codes: np.ndarray) -> np.ndarray:
        """``f * y_hat`` (n, d) float32 of each code, in the rotated space."""
        raise NotImplementedError

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        y = self._rotated_estimate(codes)
        x = y @ self.rotation_.T if self.rotate else y
        return np.ascontiguousarray(x + self.center_, dtype=np.float32)

    def _rotate_queries(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, np.float32)
        rotated = q @ self.rotation_ if self.rotate else q
        return np.ascontiguousarray(rotated, dtype=np.float32), (q @ self.center_).astype(np.float32)

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        nq, c, width = codes.shape
        rotated, bias = self._rotate_queries(queries)
        y = self._rotated_estimate(codes.reshape(-1, width)).reshape(nq, c, -1)
        return np.einsum("qcd,qd->qc", y, rotated, dtype=np.float32) + bias[:, None]

    def score_all(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        rotated, bias = self._rotate_queries(queries)
        scores = rotated @ self._rotated_estimate(codes).T + bias[:, None]
        return np.ascontiguousarray(scores, dtype=np.float32)

    # ---- candidate scan on nibble tables (the bit-plane popcount kernel past base.NIBBLE_DIM_MAX) ----
    def _scan_queries(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Rotated queries (nq, d) float32 and ``<q, c>`` (None without a centre): the per-query work
        of a scan, kept to one or two matrix products."""
        q = np.asarray(self.prepare_queries(queries), np.float32)
        rotated = np.ascontiguousarray(q @ self.rotation_ if self.rotate else q, dtype=np.float32)
        return rotated, ((q @ self.center_).astype(np.float32) if self.center else None)

    def _plane_scan(
        self, queries: np.ndarray, codes: np.ndarray, k: int, valid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Top-``k`` on ``nibble_scan`` where the layout allows it (None: use the default scan).

        ``<q, x> = <q, c> + f * <q R, y_hat>`` with ``y_hat_j`` a function of the two bits of dimension
        ``j`` (:meth:`_plane_form`), so the kernel scores ``<q R, y_hat>`` from per-query tables of
        every two dimensions' contribution (quantized to uint8, built in the same native call from the
        rotated query and each dimension's four level values, cached per quantizer), and ``f`` is its
        per-row scale. Codes wider than ``base.NIBBLE_DIM_MAX`` use ``planes_topk`` (popcounts, the query
        weights quantized to ``base.SCAN_QUERY_BITS`` levels); ``SCAN_QUERY_BITS = None`` turns both
        off (exact scan).
        """
        if base.SCAN_QUERY_BITS is None:
            return None
        plan = self._derived("plane_plan", self._level_sources(), self._plane_plan)
        if plan is None:
            return None
        (offset, plane_weights, factor), levels = plan
        rotated, bias = self._scan_queries(queries)
        at = codes.shape[1] - _FACTOR_BYTES if factor else None
        if self.code_dim <= base.NIBBLE_DIM_MAX:
            # the kernel reads the factor from the rows
            return nibble_scan(rotated, levels, codes, k, scale_offset=at, score_bias=bias, valid=valid)
        query_offset = rotated.astype(np.float64) @ offset.astype(np.float64)
        row_scale = factor_from_bytes(codes, at) if at is not None else None
        weights = rotated[:, None, :] * plane_weights[None, :, :]  # (nq, 3, d): plane 0, plane 1, AND
        scores, rows = planes_topk(
            weights, codes, k, planes=2, dim=self.code_dim, row_scale=row_scale,
            query_offset=query_offset, valid=valid, query_bits=base.SCAN_QUERY_BITS, and_term=True,
        )  # fmt: skip
        if bias is not None:
            scores = (scores + bias[:, None]).astype(np.float32)
        return scores, rows

    def _level_sources(self) -> tuple[Any, ...]:
        """The fitted arrays and settings :meth:`_plane_form` depends on (the scan's cache key)."""
        return ()

    def _plane_plan(self) -> tuple[tuple[np.ndarray, np.ndarray, bool], np.ndarray] | None:
        """:meth:`_plane_form` and the (d, 4) float64 value of level ``b0 + 2 b1`` of each dimension
        (``offset + w0 b0 + w1 b1 + w01 b0 b1``), or None where the codes are not bit planes."""
        form = self._plane_form()
        if form is None:
            return None
        offset, (w0, w1, w01) = form[0].astype(np.float64), form[1].astype(np.float64)
        levels = np.stack([offset, offset + w0, offset + w1, offset + w0 + w1 + w01], axis=1)
        return form, np.ascontiguousarray(levels)

    def _plane_form(self) -> tuple[np.ndarray, np.ndarray, bool] | None:
        """``(offset (d,), weights (3, d), factor)``: the rotated estimate of a plane-layout code is
        ``f * (offset + weights[0] b0 + weights[1] b1 + weights[2] b0 b1)`` (``f = 1`` without a stored
        factor); None where the codes are not bit planes."""
        return None

    def scan_topk(
        self, queries: np.ndarray, codes: np.ndarray, k: int, *, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidate scan on the bit-plane popcount kernel (plane layouts); see :meth:`_plane_scan`.
        Other layouts decode block by block (the default)."""
        found = self._plane_scan(queries, codes, k, valid)
        return found if found is not None else super().scan_topk(queries, codes, k, valid=valid)


def _nearest_level(y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index (n, d) uint8 of the nearest of each dimension's sorted levels (d, L)."""
    cuts = (levels[:, 1:] + levels[:, :-1]) / np.float32(2.0)
    index = np.zeros(y.shape, np.uint8)
    for t in range(cuts.shape[1]):
        index += y > cuts[:, t]
    return index


def _lloyd_levels(y: np.ndarray) -> np.ndarray:
    """Per-dimension 4-level Lloyd-Max quantizer (d, 4) of the sample ``y`` (n, d), started at quantiles."""
    levels = np.quantile(y, [0.125, 0.375, 0.625, 0.875], axis=0).T.astype(np.float64)
    for _ in range(_LLOYD_ITERATIONS):
        index = _nearest_level(y, levels.astype(np.float32))
        updated = levels.copy()
        for lv in range(4):
            member = index == lv
            count = member.sum(axis=0)
            total = np.where(member, y, 0).sum(axis=0, dtype=np.float64)
            updated[:, lv] = np.where(count > 0, total / np.maximum(count, 1), levels[:, lv])
        updated.sort(axis=1)
        if np.allclose(updated, levels, rtol=0, atol=1e-7):
            levels = updated
            break
        levels = updated
    return levels.astype(np.float32)


def _symmetric_levels(y: np.ndarray) -> np.ndarray:
    """Per-dimension levels ``m -+ s1, m -+ s2`` (d, 4): 2-level Lloyd-Max on ``|y - m|`` around the mean.

    Four levels symmetric about ``m`` are affine in the two bits of the index (``m - s2 + (s2 - s1) b0 +
    (s2 + s1) b1``), which keeps the codes scorable plane by plane.
    """
    mean = y.mean(axis=0, dtype=np.float64)
    dev = np.abs(y - mean)
    inner, outer = np.quantile(dev, [0.25, 0.75], axis=0).astype(np.float64)
    for _ in range(_LLOYD_ITERATIONS):
        far = dev > ((inner + outer) / 2)[None, :]
        n_far = far.sum(axis=0)
        n_near = dev.shape[0] - n_far
        new_inner = np.where(n_near > 0, np.where(far, 0, dev).sum(axis=0) / np.maximum(n_near, 1), inner)
        new_outer = np.where(n_far > 0, np.where(far, dev, 0).sum(axis=0) / np.maximum(n_far, 1), outer)
        done = np.allclose(new_inner, inner, atol=1e-7) and np.allclose(new_outer, outer, atol=1e-7)
        inner, outer = new_inner, new_outer
        if done:
            break
    return np.stack([mean - outer, mean - inner, mean + inner, mean + outer], axis=1).astype(np.float32)


# ---- 2-bit codes -----------------------------------------------------------------------------------------
class Int2Quantizer(_RotatedCodes):
    """Per-dimension 2-bit codes (4 levels per dimension) calibrated on data.

    Parameters
    ----------
    levels : {"lloyd", "symmetric", "uniform"}
        ``"lloyd"``: per-dimension 4-level Lloyd-Max (k-means in 1-d, started at quantiles);
        ``"symmetric"``: Lloyd-Max levels ``m -+ s1, m -+ s2`` around each dimension's mean;
        ``"uniform"``: 4 evenly spaced levels over each dimension's ``[100 - p, p]`` percentile range.
    percentile : float
        ``p`` of the uniform levels (ignored otherwise).
    rotate : bool
        Code ``x @ R`` for a random orthogonal ``R`` (seeded by ``seed``, saved with the index): spreads
        the energy evenly over the dimensions (MiniLM has constant ones).
    center : bool
        Subtract the calibration mean before rotating.
    correction : bool
        Store a per-vector factor ``f`` (float32) minimising ``||y - f * y_hat||``.
    refine : int
        With ``correction``, alternate this many times between re-encoding ``y / f`` and refitting ``f``
        (each step lowers the reconstruction error).
    learn_rotation : int
        With ``rotate``, learn the rotation instead of drawing it: this many alternations between
        fitting the levels to ``V R`` and the orthogonal Procrustes step ``R = U W^T`` of
        ``V^T Y_hat = U S W^T`` (ITQ, generalised from sign bits to the 2-bit levels), each lowering
        ``||V R - Y_hat||``. 0 keeps the random rotation.
    restarts : int
        With ``learn_rotation``, random starts (seeds ``seed``, ``seed + 1``, ...); the rotation with
        the lowest relative quantization error is kept (the local optimum depends on the start).
    max_samples : int
        Rows kept (uniform reservoir) to fit the levels on.
    seed : int
        Seed of the rotation and of the reservoir.
    """

    kind = "int2"
    levels_: np.ndarray
    _LEVELS: ClassVar[tuple[str, ...]] = ("symmetric", "lloyd", "uniform")

    def __init__(
        self,
        *,
        levels: str = "lloyd",
        percentile: float = 99.0,
        rotate: bool = True,
        center: bool = False,
        correction: bool = True,
        refine: int = 0,
        learn_rotation: int = 0,
        restarts: int = 1,
        max_samples: int = 20_000,
        seed: int = 0,
    ) -> None:
        super().__init__(rotate=rotate, center=center, max_samples=max_samples, seed=seed)
        self.learn_rotation = check_positive_int(learn_rotation, "learn_rotation", minimum=0)
        self.restarts = check_positive_int(restarts, "restarts")
        if levels not in self._LEVELS:
            raise InvalidArgumentError(f"levels must be one of {self._LEVELS}, got {levels!r}")
        if not (50.0 < float(percentile) <= 100.0):
            raise InvalidArgumentError(f"percentile must be in (50, 100], got {percentile!r}")
        check_positive_int(refine, "refine", minimum=0)
        self.levels = levels
        self.percentile = float(percentile)
        self.correction = bool(correction)
        self.refine = int(refine)

    @property
    def precision(self) -> Precision:
        return Precision.INT2

    @property
    def name(self) -> str:
        parts = ["int2"]
        if self.levels != "lloyd":
            parts.append(self.levels)
        if not self.rotate:
            parts.append("norot")
        elif self.learn_rotation:
            parts.append(f"itq{self.learn_rotation}x{self.restarts}")
        if self.center:
            parts.append("ctr")
        if not self.correction:
            parts.append("nofactor")
        elif self.refine:
            parts.append(f"refine{self.refine}")
        return "-".join(parts)

    @property
    def code_bytes(self) -> int:
        return 2 * ((self.code_dim + 7) // 8) + (_FACTOR_BYTES if self.correction else 0)

    def _finish_fit(self) -> None:
        super()._finish_fit()  # centre, a random rotation and the levels
        if not (self.rotate and self.learn_rotation):
            return
        assert self._sample is not None
        v = (self._sample - self.center_).astype(np.float64)
        best_error, best_rotation = np.inf, self.rotation_
        for start in range(self.restarts):
            rotation = random_orthogonal(v.shape[1], self.seed + start).astype(np.float64)
            for _ in range(self.learn_rotation):
                self._fit_rotated((v @ rotation).astype(np.float32))
                target = self._level_values(_nearest_level((v @ rotation).astype(np.float32), self.levels_))
                u, _, wt = np.linalg.svd(v.T @ target)
                rotation = u @ wt
            y = (v @ rotation).astype(np.float32)
            self._fit_rotated(y)
            error = float(
                ((y - self._level_values(_nearest_level(y, self.levels_))) ** 2).sum() / (y**2).sum()
            )
            if error < best_error:
                best_error, best_rotation = error, rotation.astype(np.float32)
        self.rotation_ = best_rotation
        self._fit_rotated(self._to_rotated(self._sample))

    def _fit_rotated(self, y: np.ndarray) -> None:
        if self.levels == "uniform":
            lo = np.percentile(y, 100.0 - self.percentile, axis=0)
            hi = np.percentile(y, self.percentile, axis=0)
            self.levels_ = (lo[:, None] + (hi - lo)[:, None] * np.arange(4)[None, :] / 3.0).astype(np.float32)
        elif self.levels == "lloyd":
            self.levels_ = _lloyd_levels(y)
        else:
            self.levels_ = _symmetric_levels(y)

    def plane_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(offset, w0, w1, w01)`` (d,) float32 with level ``b0 + 2 b1`` of dimension j equal to
        ``offset_j + w0_j b0 + w1_j b1 + w01_j b0 b1``.

        A bit-plane kernel folds these into the query: the score is ``<q, offset>`` plus weighted sums over
        plane 0, plane 1 and their AND. ``w01`` is 0 for ``"symmetric"`` and ``"uniform"`` levels.
        """
        self.check_fitted()
        lv = self.levels_.astype(np.float64)
        terms = (
            lv[:, 0],
            lv[:, 1] - lv[:, 0],
            lv[:, 2] - lv[:, 0],
            lv[:, 3] - lv[:, 2] - lv[:, 1] + lv[:, 0],
        )
        return tuple(t.astype(np.float32) for t in terms)  # type: ignore[return-value]

    def _plane_form(self) -> tuple[np.ndarray, np.ndarray, bool] | None:
        offset, w0, w1, w01 = self.plane_weights()
        return offset, np.stack([w0, w1, w01]), self.correction

    def _level_sources(self) -> tuple[Any, ...]:
        return (self.levels_, self.correction)

    def _plane_plan(self) -> tuple[tuple[np.ndarray, np.ndarray, bool], np.ndarray] | None:
        form = self._plane_form()
        assert form is not None
        return form, np.ascontiguousarray(self.levels_, dtype=np.float64)  # the level values themselves

    def _encode(self, x: np.ndarray) -> np.ndarray:
        y = self._to_rotated(x)
        index = _nearest_level(y, self.levels_)
        if not self.correction:
            return pack_planes(index, 2)
        factor = _least_squares_factor(y, self._level_values(index))
        for _ in range(self.refine):
            safe = np.where(factor > 0, factor, np.float32(1.0))[:, None]
            index = _nearest_level(y / safe, self.levels_)
            factor = _least_squares_factor(y, self._level_values(index))
        return np.concatenate([pack_planes(index, 2), factor_bytes(factor)], axis=1)

    def _level_values(self, index: np.ndarray) -> np.ndarray:
        return self.levels_[np.arange(index.shape[1])[None, :], index]

    def _rotated_estimate(self, codes: np.ndarray) -> np.ndarray:
        y = self._level_values(unpack_planes(codes, self.code_dim, 2))
        if self.correction:
            y = y * factor_from_bytes(codes, codes.shape[1] - _FACTOR_BYTES)[:, None]
        return np.ascontiguousarray(y, dtype=np.float32)


# ---- ternary codes ---------------------------------------------------------------------------------------
def _optimal_support(a: np.ndarray, axis: int) -> np.ndarray:
    """Threshold per row (axis=1) or column (axis=0) keeping the m largest ``a`` that maximise sum/sqrt(m).

    For a single scale ``alpha`` the ternary approximation ``alpha * sign(u) * [|u| >= t]`` of ``u`` removes
    ``(sum of kept |u|)^2 / m`` of its squared error, so this m is the exact optimum (ties kept together).
    """
    ordered = -np.sort(-a, axis=axis)
    counts = np.arange(1, a.shape[axis] + 1, dtype=np.float64)
    counts = counts[None, :] if axis == 1 else counts[:, None]
    gain = np.cumsum(ordered, axis=axis, dtype=np.float64) / np.sqrt(counts)
    best = np.argmax(gain, axis=axis)
    if axis == 1:
        return ordered[np.arange(a.shape[0]), best]
    return ordered[best, np.arange(a.shape[1])]


class TernaryQuantizer(_RotatedCodes):
    """Ternary codes: each dimension is -1, 0 or +1 times a scale (1.58 bits of information per dimension).

    ``u = (y - m) / s`` with ``m``, ``s`` the per-dimension mean and standard deviation of the (rotated)
    calibration sample; a dimension's trit is ``sign(u_j)`` where ``|u_j|`` clears the threshold, else 0.

    Parameters
    ----------
    scale : {"vector", "dimension"}
        ``"vector"``: the threshold and the scale ``alpha`` (float32, stored after the trits) are chosen per
        vector at encoding, decoding to ``m + s * alpha * t``; ``"dimension"``: threshold and scale per
        dimension, fitted on the calibration sample (no per-vector bytes), decoding to ``m + alpha_j t_j``.
    threshold : "optimal" or float
        ``"optimal"`` keeps the support that minimises the squared error for a single scale (exact,
        by sorting); a number ``k`` gives the TWN rule ``k * mean |u|`` (Li et al. 2016 use 0.7).
    layout : {"base3", "planes"}
        ``"base3"``: 5 trits per byte (1.6 bits/dim); ``"planes"``: the 2-bit plane layout of
        :class:`Int2Quantizer` (index ``t + 1``, 2 bits/dim), for bit-plane kernels.
    rotate, max_samples, seed
        As in :class:`Int2Quantizer`.
    """

    kind = "ternary"
    mean_: np.ndarray
    spread_: np.ndarray
    alpha_: np.ndarray
    threshold_: np.ndarray

    def __init__(
        self,
        *,
        scale: str = "vector",
        threshold: str | float = "optimal",
        layout: str = "base3",
        rotate: bool = True,
        max_samples: int = 20_000,
        seed: int = 0,
    ) -> None:
        super().__init__(rotate=rotate, center=False, max_samples=max_samples, seed=seed)
        if scale not in ("vector", "dimension"):
            raise InvalidArgumentError(f"scale must be 'vector' or 'dimension', got {scale!r}")
        if layout not in ("base3", "planes"):
            raise InvalidArgumentError(f"layout must be 'base3' or 'planes', got {layout!r}")
        if threshold != "optimal":
            threshold = check_number(threshold, "threshold ('optimal' or a number)", positive=True)
        self.scale = scale
        self.threshold = threshold
        self.layout = layout

    @property
    def precision(self) -> Precision:
        return Precision.TERNARY

    @property
    def name(self) -> str:
        parts = ["ternary"]
        if self.scale == "dimension":
            parts.append("dim")
        if self.threshold != "optimal":
            parts.append(f"twn{self.threshold:g}".replace(".", "p"))
        if not self.rotate:
            parts.append("norot")
        if self.layout == "planes":
            parts.append("planes")
        return "-".join(parts)

    @property
    def _trit_bytes(self) -> int:
        d = self.code_dim
        return 2 * ((d + 7) // 8) if self.layout == "planes" else (d + 4) // 5

    @property
    def code_bytes(self) -> int:
        return self._trit_bytes + (_FACTOR_BYTES if self.scale == "vector" else 0)

    def _fit_rotated(self, y: np.ndarray) -> None:
        self.mean_ = y.mean(axis=0).astype(np.float32)
        dev = y - self.mean_
        if self.scale == "vector":
            spread = dev.std(axis=0)
            # constant dimensions (MiniLM has some) code as 0 whatever their unit
            self.spread_ = np.where(spread > 0, spread, 1.0).astype(np.float32)
            return
        a = np.abs(dev)
        if self.threshold == "optimal":
            thr = _optimal_support(a, axis=0)
        else:
            thr = np.float32(self.threshold) * a.mean(axis=0)
        kept = a >= thr[None, :]
        count = kept.sum(axis=0)
        self.threshold_ = thr.astype(np.float32)
        self.alpha_ = np.where(count > 0, np.where(kept, a, 0).sum(axis=0) / np.maximum(count, 1), 0).astype(
            np.float32
        )

    def _trits(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        dev = y - self.mean_
        if self.scale == "dimension":
            return (np.sign(dev) * (np.abs(dev) >= self.threshold_)).astype(np.int8), None
        u = dev / self.spread_
        a = np.abs(u)
        if self.threshold == "optimal":
            thr = _optimal_support(a, axis=1)
        else:
            thr = np.float32(self.threshold) * a.mean(axis=1)
        kept = (a >= thr[:, None]) & (a > 0)
        count = kept.sum(axis=1)
        alpha = np.where(count > 0, np.where(kept, a, 0).sum(axis=1) / np.maximum(count, 1), 0)
        return (np.sign(u) * kept).astype(np.int8), alpha.astype(np.float32)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        trits, alpha = self._trits(self._to_rotated(x))
        packed = pack_planes(trits + 1, 2) if self.layout == "planes" else pack_trits(trits)
        return packed if alpha is None else np.concatenate([packed, factor_bytes(alpha)], axis=1)

    def _plane_form(self) -> tuple[np.ndarray, np.ndarray, bool] | None:
        if self.layout != "planes":
            return None
        # t = -1 + b0 + 2 b1; y_hat = mean + step * t with step = spread (times f) or alpha
        step = self.spread_ if self.scale == "vector" else self.alpha_
        zero = np.zeros_like(step)
        if self.scale == "vector":
            # f * (step * t) + mean does not factor as f * (...): the mean goes into the offset of a
            # separate, unscaled term, so scan the scaled part and add <r, mean> per query below
            return -step, np.stack([step, 2 * step, zero]), True
        return self.mean_ - step, np.stack([step, 2 * step, zero]), False

    def _level_sources(self) -> tuple[Any, ...]:
        step = self.spread_ if self.scale == "vector" else self.alpha_
        return (self.layout, self.scale, step, self.mean_)

    def _scan_queries(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        rotated, _ = super()._scan_queries(queries)
        if self.layout == "planes" and self.scale != "vector":
            return rotated, None  # the mean is in the plane form's offset
        # y_hat = f * step * t + mean: the scan scores the scaled part, <r, mean> is added per query
        return rotated, (rotated @ self.mean_).astype(np.float32)

    def _trit_levels(self) -> np.ndarray:
        """(d, 3) float64: each dimension's value at trit -1, 0, +1 (before the row's factor)."""
        step = (self.spread_ if self.scale == "vector" else self.alpha_).astype(np.float64)
        return np.ascontiguousarray(step[:, None] * _TRIT_LEVELS[None, :])

    def _plane_scan(
        self, queries: np.ndarray, codes: np.ndarray, k: int, valid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        if self.layout == "planes":
            return super()._plane_scan(queries, codes, k, valid)
        rotated, bias = self._scan_queries(queries)
        assert bias is not None
        at = codes.shape[1] - _FACTOR_BYTES if self.scale == "vector" else None
        if base.SCAN_QUERY_BITS is not None:
            # 5 trits per byte: uint8 tables of every two trits' contribution, built natively
            levels = self._derived("trit_levels", self._level_sources(), self._trit_levels)
            return nibble_scan(
                rotated, levels, codes, k, layout="base3", scale_offset=at, score_bias=bias, valid=valid
            )
        step = self.spread_ if self.scale == "vector" else self.alpha_
        row_scale = None if at is None else factor_from_bytes(codes, at)
        # exact: a float table per byte position of the query's dot product with every group of
        # five trits
        w = np.zeros((rotated.shape[0], self._trit_bytes * 5), np.float32)
        w[:, : self.code_dim] = rotated * step
        tables = w.reshape(rotated.shape[0], self._trit_bytes, 5) @ _TRIT_TABLE.T.astype(np.float32)
        scores, rows = table_topk(tables, codes, k, row_scale=row_scale, valid=valid)
        return (scores + bias[:, None]).astype(np.float32), rows

    def decode_trits(self, codes: np.ndarray) -> np.ndarray:
        """The (n, code_dim) int8 trits of stored codes."""
        codes = self._check_codes(codes)
        return self._unpack(codes)

    def _unpack(self, codes: np.ndarray) -> np.ndarray:
        if self.layout == "planes":
            return unpack_planes(codes, self.code_dim, 2).astype(np.int8) - 1
        return unpack_trits(codes[:, : self._trit_bytes], self.code_dim)

    def _rotated_estimate(self, codes: np.ndarray) -> np.ndarray:
        trits = self._unpack(codes).astype(np.float32)
        if self.scale == "dimension":
            y = trits * self.alpha_ + self.mean_
        else:
            y = (
                trits * (factor_from_bytes(codes, codes.shape[1] - _FACTOR_BYTES)[:, None] * self.spread_)
                + self.mean_
            )
        return np.ascontiguousarray(y, dtype=np.float32)


# ---- spec names (measured defaults and the variants of docs/benchmarks.md) --------------------------------
_NAMES: dict[str, dict[str, Any]] = {
    "int2": {},
    "int2-itq": {"center": True, "learn_rotation": 15, "restarts": 5},
    "int2-refine": {"refine": 3},
    "int2-symmetric": {"levels": "symmetric"},
    "int2-nofactor": {"correction": False},
    "int2-lloyd-plain": {"levels": "lloyd", "rotate": False, "correction": False},
    "int2-uniform": {"levels": "uniform", "rotate": False, "correction": False},
    "int2-uniform-rot": {"levels": "uniform", "correction": False},
}
for _name, _params in _NAMES.items():
    register_quantizer_name(_name, partial(Int2Quantizer, **_params))

_TERNARY_NAMES: dict[str, dict[str, Any]] = {
    "ternary": {},
    "ternary-planes": {"layout": "planes"},
    "ternary-twn": {"scale": "dimension", "threshold": 0.7, "rotate": False},
    "ternary-dim": {"scale": "dimension"},
}
for _name, _params in _TERNARY_NAMES.items():
    register_quantizer_name(_name, partial(TernaryQuantizer, **_params))
