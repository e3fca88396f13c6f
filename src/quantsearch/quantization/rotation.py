"""Orthogonal rotations applied before binarization: random (Haar) and ITQ learned on calibration data.

A rotation R (d x d, orthogonal) preserves inner products, <R q, R x> = <q, x>, so a quantizer may
code ``R (x - c)`` and score the query rotated the same way. Sign bits of a rotated vector lose less
when the energy is spread evenly over the coordinates (random rotation, as in RaBitQ) or when R is
chosen to bring the data close to the corners of the hypercube (ITQ, Gong & Lazebnik 2011).
"""

from __future__ import annotations

import numpy as np

from .._validation import as_float_matrix, check_positive_int
from ..exceptions import InvalidArgumentError

__all__ = ["itq_rotation", "random_orthogonal"]


def random_orthogonal(dim: int, seed: int = 0) -> np.ndarray:
    """A Haar-distributed random orthogonal matrix (dim, dim) float32.

    QR of a Gaussian matrix with the signs of R's diagonal folded into Q (without that fix the
    distribution is not uniform over the orthogonal group).
    """
    dim = check_positive_int(dim, "dim")
    gauss = np.random.default_rng(seed).standard_normal((dim, dim))
    q, r = np.linalg.qr(gauss)
    return (q * np.sign(np.diag(r))).astype(np.float32)


def itq_rotation(x: np.ndarray, *, iterations: int = 50, seed: int = 0) -> np.ndarray:
    """Iterative quantization: the rotation R minimising ||sign(V R) - V R||_F over centred data V.

    Alternates B = sign(V R) with the orthogonal Procrustes solution R = U W^T of the SVD
    V^T B = U S W^T (which maximises tr(R^T V^T B)); starts from :func:`random_orthogonal`.
    Returns R (dim, dim) float32 with columns as the new axes: codes are ``sign((x - c) @ R)``.

    Parameters
    ----------
    x : ndarray of shape (n, dim)
        Centred calibration vectors.
    iterations : int
        Alternation steps (each costs one SVD of a dim x dim matrix).
    """
    v = as_float_matrix(x, "ITQ sample").astype(np.float64)
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise InvalidArgumentError(f"iterations must be an integer >= 0, got {iterations!r}")
    rot = random_orthogonal(v.shape[1], seed).astype(np.float64)
    for _ in range(iterations):
        b = np.where(v @ rot >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ b)
        rot = u @ wt
    return rot.astype(np.float32)
