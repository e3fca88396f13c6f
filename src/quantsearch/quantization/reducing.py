"""The shared shape of quantizers that reduce the dimension first and leave the codes to another one."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .._validation import as_float_matrix, check_positive_int
from ..exceptions import DimensionMismatchError, InvalidArgumentError
from .base import Precision, Quantizer

__all__ = ["ReducingQuantizer"]


class ReducingQuantizer(Quantizer):
    """Map vectors (and queries) to ``dim`` dimensions with :meth:`_reduce`, then code them with ``base``.

    Codes, precision, byte counts, scoring and the candidate scan are the base's; queries are reduced
    the same way before the base prepares them. Fitted state of both is saved (the base's under
    ``base.``). Subclasses define :meth:`_reduce` and may learn it in :meth:`_learn`.

    Parameters
    ----------
    dim : int
        Dimensions kept.
    base : Quantizer
        Quantizer of the reduced vectors (fitted on the reduced calibration sample).
    """

    #: what the reduction is called in error messages
    label: ClassVar[str]

    def __init__(self, dim: int, base: Quantizer) -> None:
        dim = check_positive_int(dim, f"{self.label} dim")
        if not isinstance(base, Quantizer) or isinstance(base, type(self)):
            raise InvalidArgumentError(f"base must be a (non-{self.label}) Quantizer, got {base!r}")
        self.dim = int(dim)
        self.base = base

    @abstractmethod
    def _reduce(self, x: np.ndarray) -> np.ndarray:
        """(n, D) float32 -> (n, dim) float32."""

    def _learn(self, x: np.ndarray) -> None:  # noqa: B027 - fixed reductions learn nothing
        """Fit the reduction on the first calibration batch (validated, dim checked)."""

    # ---- the base's codes ---------------------------------------------------------------------
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

    @property
    def scan_stage(self) -> str:
        return self.base.scan_stage

    # ---- fitting and coding -------------------------------------------------------------------
    def _reset(self) -> None:
        super()._reset()
        self.base._reset()

    def partial_fit(self, x: np.ndarray) -> ReducingQuantizer:
        x = as_float_matrix(x, "calibration sample", dim=getattr(self, "dim_", None))
        if x.shape[1] < self.dim:
            raise DimensionMismatchError(
                f"{self.label} dim {self.dim} is larger than the input dimension {x.shape[1]}"
            )
        self._learn(x)
        self.base.partial_fit(self._reduce(x))
        self.dim_ = x.shape[1]
        self.n_samples_seen_ = getattr(self, "n_samples_seen_", 0) + x.shape[0]
        return self

    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        return self.base.prepare_queries(self._reduce(queries))

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.base._encode(self._reduce(x))

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self.base._decode(codes)

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.base.score(queries, codes)

    def score_all(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.base.score_all(queries, codes)

    def rescore(
        self, prepared: np.ndarray, arrays: Sequence[np.ndarray], starts: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        return self.base.rescore(prepared, arrays, starts, rows)  # the queries are already reduced

    def scan_topk(
        self, queries: np.ndarray, codes: np.ndarray, k: int, *, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        # the base prepares the reduced queries itself
        return self.base.scan_topk(self._reduce(queries), codes, k, valid=valid)

    # ---- persistence --------------------------------------------------------------------------
    def get_state(self) -> dict[str, np.ndarray]:
        state = {k: np.asarray(v) for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}
        state.update({f"base.{k}": v for k, v in self.base.get_state().items()})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> ReducingQuantizer:
        own = {k: v for k, v in state.items() if not k.startswith("base.")}
        super().set_state(own)
        self.base.set_state({k[5:]: v for k, v in state.items() if k.startswith("base.")})
        return self
