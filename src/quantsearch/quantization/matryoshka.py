"""Matryoshka truncation: keep the first ``dim`` dimensions, renormalise, then apply any quantizer."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_float_matrix
from ..exceptions import DimensionMismatchError, InvalidArgumentError
from .base import Precision, Quantizer

__all__ = ["MatryoshkaQuantizer", "truncate"]


def truncate(x: np.ndarray, dim: int) -> np.ndarray:
    """First ``dim`` columns of ``x`` (n, D) float32, each row rescaled to unit L2 norm (zero rows stay 0)."""
    head = np.ascontiguousarray(x[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return head / np.where(norms > 0, norms, np.float32(1.0))


class MatryoshkaQuantizer(Quantizer):
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

    def __init__(self, dim: int, base: Quantizer) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 1:
            raise InvalidArgumentError(f"Matryoshka dim must be a positive integer, got {dim!r}")
        if not isinstance(base, Quantizer) or isinstance(base, MatryoshkaQuantizer):
            raise InvalidArgumentError(f"base must be a (non-Matryoshka) Quantizer, got {base!r}")
        self.dim = int(dim)
        self.base = base

    @property
    def precision(self) -> Precision:
        return self.base.precision

    @property
    def code_dtype(self) -> np.dtype:
        return self.base.code_dtype

    @property
    def code_dim(self) -> int:
        self.check_fitted()
        return self.dim

    @property
    def code_bytes(self) -> int:
        # the base's own count: codes may carry extra bytes (block scales, per-vector factors)
        return self.base.code_bytes

    def get_params(self) -> dict[str, Any]:
        return {"dim": self.dim, "base": self.base.to_config()}

    def _reset(self) -> None:
        super()._reset()
        self.base._reset()

    def partial_fit(self, x: np.ndarray) -> MatryoshkaQuantizer:
        x = as_float_matrix(x, "calibration sample", dim=getattr(self, "dim_", None))
        if x.shape[1] < self.dim:
            raise DimensionMismatchError(
                f"Matryoshka dim {self.dim} is larger than the input dimension {x.shape[1]}"
            )
        self.base.partial_fit(truncate(x, self.dim))
        self.dim_ = x.shape[1]
        self.n_samples_seen_ = getattr(self, "n_samples_seen_", 0) + x.shape[0]
        return self

    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        return truncate(queries, self.dim)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.base._encode(truncate(x, self.dim))

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self.base._decode(codes)

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.base.score(queries, codes)

    @property
    def name(self) -> str:
        return f"{self.base.name}@{self.dim}"

    @property
    def scan_stage(self) -> str:
        return self.base.scan_stage

    def scan_topk(
        self, queries: np.ndarray, codes: np.ndarray, k: int, *, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.base.scan_topk(self.prepare_queries(queries), codes, k, valid=valid)

    def score_all(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.base.score_all(queries, codes)

    def get_state(self) -> dict[str, np.ndarray]:
        state = {k: np.asarray(v) for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}
        state.update({f"base.{k}": v for k, v in self.base.get_state().items()})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> MatryoshkaQuantizer:
        own = {k: v for k, v in state.items() if not k.startswith("base.")}
        super().set_state(own)
        self.base.set_state({k[5:]: v for k, v in state.items() if k.startswith("base.")})
        return self
