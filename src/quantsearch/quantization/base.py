"""The quantizer interface, the precision enum and the state (de)serialisation shared by all families."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .._validation import as_float_matrix
from ..exceptions import DimensionMismatchError, InvalidArgumentError, InvalidDtypeError, NotFittedError


class Precision(str, enum.Enum):
    """Storage precision of one tier of codes."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"
    UINT8 = "uint8"
    INT4 = "int4"
    INT2 = "int2"
    TERNARY = "ternary"
    BINARY = "binary"

    @property
    def bits(self) -> int:
        """Bits per dimension."""
        return _BITS[self]


_BITS = {
    Precision.FLOAT32: 32,
    Precision.FLOAT16: 16,
    Precision.INT8: 8,
    Precision.UINT8: 8,
    Precision.INT4: 4,
    Precision.INT2: 2,
    Precision.TERNARY: 2,  # log2(3) = 1.58 bits of information, stored in at most 2
    Precision.BINARY: 1,
}

_ALIASES = {
    "float32": Precision.FLOAT32, "fp32": Precision.FLOAT32, "f32": Precision.FLOAT32,
    "float": Precision.FLOAT32, "single": Precision.FLOAT32,
    "float16": Precision.FLOAT16, "fp16": Precision.FLOAT16, "f16": Precision.FLOAT16,
    "half": Precision.FLOAT16,
    "int8": Precision.INT8, "i8": Precision.INT8, "q8": Precision.INT8,
    "uint8": Precision.UINT8, "u8": Precision.UINT8,
    "int4": Precision.INT4, "i4": Precision.INT4, "q4": Precision.INT4, "uint4": Precision.INT4,
    "int2": Precision.INT2, "i2": Precision.INT2, "2bit": Precision.INT2, "2-bit": Precision.INT2,
    "q2": Precision.INT2, "uint2": Precision.INT2,
    "ternary": Precision.TERNARY, "1.58bit": Precision.TERNARY, "trit": Precision.TERNARY,
    "binary": Precision.BINARY, "ubinary": Precision.BINARY, "bit": Precision.BINARY,
    "bits": Precision.BINARY,
    "1bit": Precision.BINARY, "1-bit": Precision.BINARY, "sign": Precision.BINARY,
}  # fmt: skip


def parse_precision(value: Any) -> Precision:
    """Normalise every accepted spelling of a precision to :class:`Precision`.

    Accepts a :class:`Precision`, a string (``"int8"``, ``"fp16"``, ``"ubinary"``, ...) in any case,
    or a numpy dtype / type (``np.float16``, ``"int8"``). This is the only place spellings are read.
    """
    if isinstance(value, Precision):
        return value
    key: str | None = None
    if isinstance(value, str):
        key = value.strip().lower().replace("_", "")
    elif isinstance(value, (np.dtype, type)):
        try:
            key = np.dtype(value).name
        except TypeError:
            key = None
    if key is not None and key in _ALIASES:
        return _ALIASES[key]
    choices = ", ".join(p.value for p in Precision)
    raise InvalidArgumentError(f"unknown precision {value!r}; expected one of: {choices}")


class Quantizer(ABC):
    """Base class of all quantizers (scikit-learn style).

    ``__init__`` stores parameters only. ``fit``/``partial_fit`` learn the calibration from sample
    vectors and return ``self``; fitted state ends in ``_`` (``dim_``, ``min_``, ...). ``encode`` maps
    float vectors to codes with the saved calibration (a query is never calibrated on itself) and
    raises :class:`NotFittedError` before fit.

    Subclasses implement ``_fit_rows`` (accumulating calibration), ``_finish_fit``, ``_encode`` and
    the scoring hooks; this class does validation and state (de)serialisation.
    """

    #: registry key written into the index manifest
    kind: ClassVar[str]
    _registry: ClassVar[dict[str, type[Quantizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Quantizer._registry[cls.kind] = cls

    # ---- parameters -------------------------------------------------------------------------
    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-serialisable) that recreate an unfitted copy."""

    @property
    @abstractmethod
    def precision(self) -> Precision:
        """Precision of the codes this quantizer produces."""

    # ---- fitting ----------------------------------------------------------------------------
    def fit(self, x: np.ndarray) -> Quantizer:
        """Calibrate on sample vectors, discarding any earlier calibration.

        Parameters
        ----------
        x : ndarray of shape (n, dim), float
            Calibration sample (documents, not queries).
        """
        self._reset()
        return self.partial_fit(x)

    def partial_fit(self, x: np.ndarray) -> Quantizer:
        """Update the calibration with another batch of sample vectors (same dim as before)."""
        dim = getattr(self, "dim_", None)
        x = as_float_matrix(x, "calibration sample", dim=dim)
        self.dim_ = x.shape[1]
        self._fit_rows(x)
        self._finish_fit()
        self.n_samples_seen_ = getattr(self, "n_samples_seen_", 0) + x.shape[0]
        return self

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "dim_")

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted; call fit(sample) with calibration vectors first"
            )

    def _reset(self) -> None:
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)

    def _fit_rows(self, x: np.ndarray) -> None:  # noqa: B027 - stateless quantizers need nothing
        """Accumulate calibration statistics from validated rows."""

    def _finish_fit(self) -> None:  # noqa: B027
        """Turn accumulated statistics into the fitted state."""

    # ---- encoding ---------------------------------------------------------------------------
    @property
    def code_dim(self) -> int:
        """Dimensions actually encoded (smaller than ``dim_`` for Matryoshka truncation)."""
        self.check_fitted()
        return int(self.dim_)

    @property
    def code_bytes(self) -> int:
        """Bytes per encoded vector."""
        return (self.code_dim * self.precision.bits + 7) // 8

    @property
    def name(self) -> str:
        """Short name of the codes, used as the index tier name (file-name safe, unique per family)."""
        return self.precision.value

    @property
    def bits_per_dim(self) -> float:
        """Stored bits per input dimension, overheads (scales, corrective factors) included."""
        self.check_fitted()
        return self.code_bytes * 8 / int(self.dim_)

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Encode vectors with the fitted calibration.

        Parameters
        ----------
        x : ndarray of shape (n, dim), float

        Returns
        -------
        codes : ndarray of shape (n, code_bytes // itemsize), dtype ``code_dtype``
        """
        self.check_fitted()
        x = as_float_matrix(x, "vectors", dim=self.dim_, allow_empty=True)
        return self._encode(x)

    @abstractmethod
    def _encode(self, x: np.ndarray) -> np.ndarray: ...

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Map codes back to float32 vectors of shape (n, code_dim) (the dequantized values)."""
        self.check_fitted()
        codes = self._check_codes(codes)
        return self._decode(codes)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no decode")

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.dtype != self.code_dtype:
            raise InvalidDtypeError(f"codes must have dtype {self.code_dtype}, got {codes.dtype}")
        width = self.code_bytes // self.code_dtype.itemsize
        if codes.ndim != 2 or codes.shape[1] != width:
            raise DimensionMismatchError(f"codes must have shape (n, {width}), got {codes.shape}")
        return codes

    # ---- scoring ----------------------------------------------------------------------------
    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        """Map float queries into the space the codes live in (e.g. truncate + renormalise).

        Identity for most quantizers; validation is the caller's job.
        """
        return queries

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Asymmetric inner products: float queries against dequantized codes.

        Parameters
        ----------
        queries : ndarray of shape (nq, dim), float32
            Already passed through :meth:`prepare_queries`.
        codes : ndarray of shape (nq, c, width), ``code_dtype``
            ``c`` candidate codes per query.

        Returns
        -------
        scores : ndarray of shape (nq, c), float32
        """
        vectors = self._decode(codes.reshape(-1, codes.shape[-1])).reshape(codes.shape[0], codes.shape[1], -1)
        return np.einsum("qcd,qd->qc", vectors, queries, dtype=np.float32)

    @property
    def scan_stage(self) -> str:
        """Name of this quantizer's candidate stage in timings and candidate counts."""
        return f"scan:{self.name}"

    def scan_topk(
        self, queries: np.ndarray, codes: np.ndarray, k: int, *, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive candidate stage: the ``k`` best rows of ``codes`` for each float query.

        Parameters
        ----------
        queries : ndarray of shape (nq, dim), float32
            Raw float queries (this method prepares them).
        codes : ndarray of shape (n, width), ``code_dtype``
            Every stored code, in RAM.
        k : int
        valid : ndarray of shape (n,), bool, optional
            False for rows that must never be returned (deleted).

        Returns
        -------
        scores, rows : ndarrays of shape (nq, k)
            Larger score is better; ties go to the smaller row; ``-1`` rows (score nan) pad
            when fewer than ``k`` rows are valid.

        The default decodes ``codes`` block by block and scores them with :meth:`score_all`;
        families with a faster kernel (Hamming popcount, bit-plane asymmetric scans) override it.
        """
        prepared = np.ascontiguousarray(self.prepare_queries(queries), dtype=np.float32)
        nq, n = prepared.shape[0], codes.shape[0]
        return topk_blocks(lambda a, b: self.score_all(prepared, codes[a:b]), nq, n, k, valid=valid)

    def score_all(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Scores (nq, n) of prepared queries against every code of a block (n, width)."""
        return np.ascontiguousarray(queries @ self._decode(codes).T, dtype=np.float32)

    # ---- persistence ------------------------------------------------------------------------
    def get_state(self) -> dict[str, np.ndarray]:
        """Fitted arrays (names ending in ``_``) to save with an index."""
        self.check_fitted()
        return {k: np.asarray(v) for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def set_state(self, state: dict[str, np.ndarray]) -> Quantizer:
        for key, value in state.items():
            arr = np.asarray(value)
            setattr(self, key, arr.item() if arr.ndim == 0 else arr)
        return self

    def to_config(self) -> dict[str, Any]:
        """JSON description (kind + params) written into the manifest."""
        return {"kind": self.kind, "params": self.get_params()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


#: Named quantizers beyond the plain precisions (``"rabitq"``, ``"q4_0"``, ...): name -> factory of an
#: unfitted quantizer with the measured defaults. Families register their names at import.
_NAMED: dict[str, Callable[[], Quantizer]] = {}


def register_quantizer_name(name: str, factory: Callable[[], Quantizer]) -> None:
    """Make ``name`` (any case) usable wherever a precision spelling is accepted (tiers, eval specs)."""
    key = name.strip().lower()
    if key in _NAMED:
        raise InvalidArgumentError(f"quantizer name {key!r} is registered twice")
    _NAMED[key] = factory


def quantizer_names() -> list[str]:
    """Every name :func:`make_quantizer` accepts besides the precision spellings."""
    return sorted(_NAMED)


def quantizer_from_config(config: dict[str, Any]) -> Quantizer:
    """Recreate an unfitted quantizer from :meth:`Quantizer.to_config` output."""
    try:
        cls = Quantizer._registry[config["kind"]]
        params = dict(config.get("params", {}))
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown quantizer config {config!r}") from None
    if "base" in params and isinstance(params["base"], dict):
        params["base"] = quantizer_from_config(params["base"])
    return cls(**params)


#: query levels of the popcount candidate scans of asymmetric bit-plane codes (RaBitQ, learned): the
#: query weights are quantized to 8 bits so the scan runs on popcounts, which keeps ~98% of the exact
#: scan's top-10 (docs/benchmarks.md); rescoring (``score``) always uses the exact float weights.
#: ``None`` makes the scans exact (byte lookup tables, ~5x slower).
SCAN_QUERY_BITS: int | None = 8

# rows scored per block in a default scan: bounds the (nq, block) work arrays whatever n is
_SCAN_BLOCK = 8192


def topk_blocks(
    score_block: Any, nq: int, n: int, k: int, *, valid: np.ndarray | None = None, block: int = _SCAN_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores descending, ties to the smaller row) over ``n`` rows scored in blocks.

    ``score_block(start, stop)`` returns the (nq, stop - start) float32 scores of those rows.
    Rows with ``valid[row] == False`` are skipped; missing results are row -1, score nan.
    """
    best_rows = np.empty((nq, 0), np.int64)
    best_scores = np.empty((nq, 0), np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = np.asarray(score_block(start, stop), np.float32)
        rows = np.broadcast_to(np.arange(start, stop, dtype=np.int64), scores.shape)
        if valid is not None:
            scores = np.where(valid[start:stop][None, :], scores, -np.inf)
        best_rows, best_scores = merge_top(
            np.concatenate([best_rows, rows], axis=1), np.concatenate([best_scores, scores], axis=1), k
        )
    found = np.isfinite(best_scores)
    best_rows = np.where(found, best_rows, -1)
    best_scores = np.where(found, best_scores, np.float32(np.nan)).astype(np.float32)
    if best_rows.shape[1] < k:
        pad = k - best_rows.shape[1]
        best_rows = np.pad(best_rows, ((0, 0), (0, pad)), constant_values=-1)
        best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=np.nan)
    return best_scores, best_rows


def merge_top(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` per query by score descending, ties to the smaller row (exact)."""
    if scores.shape[1] > k:
        # everything scoring at least the k-th best survives, ties included, then an exact sort
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
        keep = scores >= kth
        width = int(keep.sum(axis=1).max())
        order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
        rows = np.take_along_axis(rows, order, axis=1)
        scores = np.where(
            np.take_along_axis(keep, order, axis=1), np.take_along_axis(scores, order, axis=1), -np.inf
        )
    order = np.lexsort((rows, -scores.astype(np.float64)), axis=-1)[:, :k]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)
