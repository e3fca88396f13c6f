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

import numpy as np

from .reducing import ReducingQuantizer

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


class PCAQuantizer(ReducingQuantizer):
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
    label = "PCA"
    components_: np.ndarray  # (D, dim)
    explained_: np.ndarray  # fraction of the second moment kept, a scalar

    def _learn(self, x: np.ndarray) -> None:
        if not hasattr(self, "components_"):  # later batches only update the base: old codes stay valid
            self.components_, values = pca_projection(x, self.dim)
            total = float(values.sum())
            self.explained_ = np.float32(values[: self.dim].sum() / total if total > 0 else 1.0)

    def _reduce(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x @ self.components_, dtype=np.float32)

    @property
    def name(self) -> str:
        return f"{self.base.name}-pca{self.dim}"
