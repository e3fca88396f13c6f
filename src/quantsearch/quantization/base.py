"""The quantizer interface, the precision enum and the state (de)serialisation shared by all families."""

from __future__ import annotations

import enum
import inspect
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from .._topk import topk_blocks
from .._validation import as_float_matrix
from ..exceptions import DimensionMismatchError, InvalidArgumentError, InvalidDtypeError, NotFittedError
from ..kernels import gather_rows


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
    @classmethod
    def _param_names(cls) -> list[str]:
        """Names of the constructor's parameters (scikit-learn's rule: each is stored under its name)."""
        signature = inspect.signature(cls.__init__)
        return [
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-serialisable) that recreate an unfitted copy.

        Read from the attributes named like the ``__init__`` parameters; enums are written by
        value and nested quantizers as their config.
        """
        params: dict[str, Any] = {}
        for name in self._param_names():
            value = getattr(self, name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, Quantizer):
                value = value.to_config()
            params[name] = value
        return params

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

    def rescore(
        self, prepared: np.ndarray, arrays: Sequence[np.ndarray], starts: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Scores of each query against its candidates, read from segment arrays (a rescoring stage).

        Parameters
        ----------
        prepared : ndarray of shape (nq, dim), float32
            Queries passed through :meth:`prepare_queries`.
        arrays : sequence of ndarrays of shape (n_i, width), ``code_dtype``
            The tier's codes, one array (usually a memory map) per segment.
        starts : ndarray of shape (n_segments,), int64
            Global row of the first code of each array.
        rows : ndarray of shape (nq, c), int64
            Candidate rows per query; ``-1`` pads.

        Returns
        -------
        scores : ndarray of shape (nq, c), float32, nan at padding

        The default gathers only the candidates' codes and scores them with :meth:`score`, in query
        chunks so the gathered codes and the float work array stay within a fixed budget; families
        with a fused gather + dot kernel override it.
        """
        nq, c = rows.shape
        per_query = max(1, c * max(self.code_bytes, self.code_dim * 4))
        chunk = max(1, _RESCORE_CHUNK_BYTES // per_query)
        scores = np.full((nq, c), np.nan, np.float32)
        for q0 in range(0, nq, chunk):
            block_rows = rows[q0 : q0 + chunk]
            present = block_rows >= 0
            unique, inverse = np.unique(block_rows[present], return_inverse=True)
            if unique.size == 0:
                continue
            codes = gather_rows(list(arrays), starts, unique)  # only the candidates are read from disk
            index = np.zeros(block_rows.shape, np.int64)
            index[present] = inverse
            block = self.score(prepared[q0 : q0 + chunk], codes[index])  # codes[index]: (chunk, c, width)
            scores[q0 : q0 + chunk] = np.where(present, block, np.float32(np.nan))
        return scores

    def _derived(self, name: str, sources: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """``build()``, cached on the quantizer until one of ``sources`` (fitted arrays, settings) is
        replaced by another object (a refit, :meth:`set_state`): per-query scans reuse constants."""
        cache = self.__dict__.setdefault("_derived_cache", {})
        entry = cache.get(name)
        if entry is None or len(entry[0]) != len(sources) or any(map(operator.is_not, entry[0], sources)):
            entry = cache[name] = (sources, build())
        return entry[1]

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
#: widest codes the candidate scans read through nibble tables (``kernels.nibble_scan``: the AVX2
#: kernel's limit of 256 bytes a plane); wider ones use the popcount scan
NIBBLE_DIM_MAX = 2048

# bound on the float32 work array of one rescoring chunk (queries x candidates x dim)
_RESCORE_CHUNK_BYTES = 32 << 20
