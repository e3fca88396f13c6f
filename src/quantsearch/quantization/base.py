"""The quantizer interface, the precision enum and the state (de)serialisation shared by all families."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
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
