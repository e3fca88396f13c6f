"""The learned projection head in numpy: what encoding and scoring run at search time.

The torch trainer (:mod:`quantsearch.training`) mirrors these functions; both import them from here,
so the quantizer and the trainer do not import each other.
"""

from __future__ import annotations

import numpy as np

__all__ = ["head_factor", "head_project"]


def head_project(state: dict[str, np.ndarray], centred: np.ndarray) -> np.ndarray:
    """Pre-sign projections ``f(x - c)`` (n, bits) float32 of centred vectors."""
    z = centred @ state["encoder"].T
    if state.get("hidden_in") is not None and state["hidden_in"].size:
        hidden = np.maximum(centred @ state["hidden_in"].T + state["hidden_bias"], 0.0)
        z = z + hidden @ state["hidden_out"].T
    return np.asarray(z, np.float32)


def head_factor(centred: np.ndarray, signs: np.ndarray, decoder: np.ndarray) -> np.ndarray:
    """The unbiased per-vector factor ``||r||^2 / <r, D b>`` (n,) for residuals ``r`` and signs ``b``.

    A non-positive denominator (a code pointing away from its vector, possible only far from the
    data the head was trained on) falls back to the least-squares factor's floor of 0.
    """
    recon = signs @ decoder.T
    num = np.einsum("nd,nd->n", centred, centred)
    den = np.einsum("nd,nd->n", centred, recon)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0).astype(np.float32)
