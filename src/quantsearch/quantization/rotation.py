"""Orthogonal rotations applied before binarization: random (Haar), fast Hadamard and ITQ learned on data.

A rotation R (d x d, orthogonal) preserves inner products, <R q, R x> = <q, x>, so a quantizer may
code ``R (x - c)`` and score the query rotated the same way. Sign bits of a rotated vector lose less
when the energy is spread evenly over the coordinates (random rotation, as in RaBitQ) or when R is
chosen to bring the data close to the corners of the hypercube (ITQ, Gong & Lazebnik 2011).
"""

from __future__ import annotations

import numpy as np

from .._validation import as_float_matrix, check_positive_int
from ..exceptions import InvalidArgumentError

__all__ = ["hadamard_signs", "hadamard_transform", "itq_rotation", "random_orthogonal"]


def random_orthogonal(dim: int, seed: int = 0) -> np.ndarray:
    """A Haar-distributed random orthogonal matrix (dim, dim) float32.

    QR of a Gaussian matrix with the signs of R's diagonal folded into Q (without that fix the
    distribution is not uniform over the orthogonal group).
    """
    dim = check_positive_int(dim, "dim")
    gauss = np.random.default_rng(seed).standard_normal((dim, dim))
    q, r = np.linalg.qr(gauss)
    return (q * np.sign(np.diag(r))).astype(np.float32)


def itq_rotation(x: np.ndarray, *, iterations: int = 50, seed: int = 0, restarts: int = 1) -> np.ndarray:
    """Iterative quantization: the rotation R minimising ||sign(V R) - V R||_F over centred data V.

    Alternates B = sign(V R) with the orthogonal Procrustes solution R = U W^T of the SVD
    V^T B = U S W^T (which maximises tr(R^T V^T B)); starts from :func:`random_orthogonal`.
    Returns R (dim, dim) float32 with columns as the new axes: codes are ``sign((x - c) @ R)``.

    The alternation finds a local optimum that depends on the start; ``restarts`` runs it from
    that many random starts (seeds ``seed``, ``seed + 1``, ...) and keeps the lowest error
    (equivalently the largest ``sum |V R|``, since ``||B||`` and ``||V R||`` are fixed).

    Parameters
    ----------
    x : ndarray of shape (n, dim)
        Centred calibration vectors.
    iterations : int
        Alternation steps (each costs one SVD of a dim x dim matrix).
    restarts : int
        Independent starts; the best is returned.
    """
    v = as_float_matrix(x, "ITQ sample").astype(np.float64)
    iterations = check_positive_int(iterations, "iterations", minimum=0)
    restarts = check_positive_int(restarts, "restarts")
    best, best_l1 = None, -np.inf
    for start in range(restarts):
        rot = random_orthogonal(v.shape[1], seed + start).astype(np.float64)
        for _ in range(iterations):
            b = np.where(v @ rot >= 0, 1.0, -1.0)
            u, _, wt = np.linalg.svd(v.T @ b)
            rot = u @ wt
        l1 = float(np.abs(v @ rot).sum())
        if l1 > best_l1:
            best, best_l1 = rot, l1
    assert best is not None
    return best.astype(np.float32)


def hadamard_signs(dim: int, seed: int = 0, rounds: int = 3) -> np.ndarray:
    """Random sign flips (2 * rounds, dim) float32 of ±1 that define a :func:`hadamard_transform`."""
    dim = check_positive_int(dim, "dim")
    rounds = check_positive_int(rounds, "rounds")
    rng = np.random.default_rng(seed)
    return np.where(rng.random((2 * rounds, dim)) < 0.5, -1.0, 1.0).astype(np.float32)


def hadamard_transform(x: np.ndarray, signs: np.ndarray, *, inverse: bool = False) -> np.ndarray:
    """A fast orthogonal rotation: rounds of random sign flips and normalised Walsh-Hadamard transforms.

    Each round flips signs, applies the FWHT to the leading power-of-two block ``[0, P)``, flips signs
    again and applies it to the trailing block ``[d - P, d)`` (``P`` the largest power of two <= d;
    the second block is skipped when ``d == P``). The blocks overlap whenever ``d`` is not a power of
    two, so every coordinate is mixed, and each step is orthogonal, so the whole map is: ``d``
    coordinates stay ``d`` coordinates and inner products are preserved. Costs O(d log d) per row.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    signs : ndarray of shape (2 * rounds, d)
        From :func:`hadamard_signs`.
    inverse : bool
        Apply the inverse (= transpose) map instead.

    Returns
    -------
    ndarray of shape (n, d), float32
        ``x @ H`` (or ``x @ H.T`` when ``inverse``) for the orthogonal matrix ``H`` the signs define.
    """
    y = np.array(x, dtype=np.float32, copy=True, ndmin=2)
    d = y.shape[1]
    if signs.ndim != 2 or signs.shape[1] != d or signs.shape[0] % 2:
        raise InvalidArgumentError(f"signs must have shape (2 * rounds, {d}), got {signs.shape}")
    p = 1 << (d.bit_length() - 1)
    steps: list[tuple[np.ndarray, slice | None]] = []
    for r in range(signs.shape[0] // 2):
        steps += [(signs[2 * r], slice(0, p)), (signs[2 * r + 1], slice(d - p, d) if p < d else None)]
    # forward: flip then transform; the inverse undoes the steps in reverse order (each is symmetric)
    for flip, block in reversed(steps) if inverse else steps:
        if not inverse:
            y *= flip
        if block is not None:
            y[:, block] = _fwht(y[:, block])
        if inverse:
            y *= flip
    return y


def _fwht(x: np.ndarray) -> np.ndarray:
    """Normalised fast Walsh-Hadamard transform of the rows of ``x`` (n, P), P a power of two."""
    n, p = x.shape
    y = np.ascontiguousarray(x, dtype=np.float32)
    h = 1
    while h < p:
        pairs = y.reshape(n, p // (2 * h), 2, h)
        y = np.stack([pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]], axis=2)
        h *= 2
    return y.reshape(n, p) * np.float32(1.0 / np.sqrt(p))
