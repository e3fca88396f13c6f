"""Linear dimension reduction before quantization: a LeanVec-style PCA projection fitted on calibration data.

Matryoshka truncation keeps the leading coordinates, which only works for models trained for it. A
projection onto the top principal directions of the documents works for any model: with P (D, r)
the top-r eigenvectors of the (uncentred) second moment E[x x^T], <q, x> ~ <P^T q, P^T x>, and no
other projection of rank r loses less of the documents' energy, so inner products with queries
from the same distribution are preserved best in the least-squares sense (LeanVec, Tepper et al.
2023, in-distribution case). The second moment is uncentred on purpose: then the estimate needs
no per-query constant and every quantizer can code the projected vectors unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_float_matrix
from ..exceptions import DimensionMismatchError, InvalidArgumentError
from .base import Precision, Quantizer

__all__ = ["PCAQuantizer", "pca_projection"]


def pca_projection(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``dim`` eigenvectors (D, dim) float32 of the second moment of ``x`` (n, D) and all eigenvalues.

    Eigenvalues are returned in descending order (length D); the columns follow them. Signs are
    fixed (largest-magnitude entry of each column positive) so that the result is deterministic.
    """
    x64 = np.asarray(x, np.float64)
    moment = x64.T @ x64 / max(x64.shape[0], 1)
    values, vectors = np.linalg.eigh(moment)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order[:dim]]
    flip = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return (vectors * np.where(flip == 0, 1.0, flip)).astype(np.float32), values


class PCAQuantizer(Quantizer):
    """Project onto the top ``dim`` principal directions of the calibration documents, then apply ``base``.

    Parameters
    ----------
    dim : int
        Dimensions kept (at most the input dimension).
    base : Quantizer
        Quantizer of the projected vectors, fitted on the projected calibration sample.

    The projection is learned by the first :meth:`fit` / :meth:`partial_fit` call and kept by later
    ``partial_fit`` calls (which only update ``base``), so codes written earlier stay valid.
    """

    kind = "pca"
    components_: np.ndarray  # (D, dim)
    explained_: np.ndarray  # fraction of the second moment kept, a scalar

    def __init__(self, dim: int, base: Quantizer) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 1:
            raise InvalidArgumentError(f"PCA dim must be a positive integer, got {dim!r}")
        if not isinstance(base, Quantizer) or isinstance(base, PCAQuantizer):
            raise InvalidArgumentError(f"base must be a (non-PCA) Quantizer, got {base!r}")
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
        return self.base.code_bytes

    @property
    def name(self) -> str:
        return f"{self.base.name}-pca{self.dim}"

    @property
    def scan_stage(self) -> str:
        return self.base.scan_stage

    def get_params(self) -> dict[str, Any]:
        return {"dim": self.dim, "base": self.base.to_config()}

    def _reset(self) -> None:
        super()._reset()
        self.base._reset()

    def partial_fit(self, x: np.ndarray) -> PCAQuantizer:
        x = as_float_matrix(x, "calibration sample", dim=getattr(self, "dim_", None))
        if x.shape[1] < self.dim:
            raise DimensionMismatchError(
                f"PCA dim {self.dim} is larger than the input dimension {x.shape[1]}"
            )
        if not hasattr(self, "components_"):
            self.components_, values = pca_projection(x, self.dim)
            total = float(values.sum())
            self.explained_ = np.float32(values[: self.dim].sum() / total if total > 0 else 1.0)
        self.base.partial_fit(self._project(x))
        self.dim_ = x.shape[1]
        self.n_samples_seen_ = getattr(self, "n_samples_seen_", 0) + x.shape[0]
        return self

    def _project(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x @ self.components_, dtype=np.float32)

    def prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        return self.base.prepare_queries(self._project(queries))

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.base._encode(self._project(x))

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self.base._decode(codes)

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.base.score(queries, codes)

    def score_all(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.base.score_all(queries, codes)

    def scan_topk(
        self, queries: np.ndarray, codes: np.ndarray, k: int, *, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.base.scan_topk(self._project(queries), codes, k, valid=valid)

    def get_state(self) -> dict[str, np.ndarray]:
        state = {k: np.asarray(v) for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}
        state.update({f"base.{k}": v for k, v in self.base.get_state().items()})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> PCAQuantizer:
        own = {k: v for k, v in state.items() if not k.startswith("base.")}
        super().set_state(own)
        self.base.set_state({k[5:]: v for k, v in state.items() if k.startswith("base.")})
        return self
