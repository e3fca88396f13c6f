"""Fusion of ranked lists from several retrievers (dense and lexical) into one ranking.

Two methods, both weighted:

* ``rrf``: reciprocal rank fusion, ``sum_i w_i / (rrf_k + rank_i)`` over the lists a document is in
  (ranks from 1; Cormack et al. 2009 use ``rrf_k = 60``);
* ``convex``: a convex combination of scores min-max normalised per query and per list,
  ``sum_i w_i * (s_i - min_i) / (max_i - min_i)``, 0 for a list the document is not in.

With two lists, ``weight`` is the dense list's weight and the lexical list gets ``1 - weight``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ._topk import top_k
from ._validation import check_number, check_positive_int
from .exceptions import InvalidArgumentError

__all__ = ["Fusion", "fuse", "normalise_minmax"]

FusionMethod = Literal["rrf", "convex"]


@dataclass(frozen=True)
class Fusion:
    """How a hybrid search merges its dense and lexical lists.

    Parameters
    ----------
    method : {"rrf", "convex"}
    weight : float in [0, 1]
        Weight of the dense list; the lexical list gets ``1 - weight``.
    rrf_k : float > 0
        The constant of reciprocal rank fusion.
    depth : int >= 1
        Candidates taken from each retriever before fusing.
    """

    method: FusionMethod = "rrf"
    weight: float = 0.5
    rrf_k: float = 60.0
    depth: int = 100

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "convex"):
            raise InvalidArgumentError(f"fusion method must be 'rrf' or 'convex', got {self.method!r}")
        weight = check_number(self.weight, "fusion weight", minimum=0)
        if weight > 1:
            raise InvalidArgumentError(f"fusion weight must be in [0, 1], got {self.weight!r}")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "rrf_k", check_number(self.rrf_k, "rrf_k", positive=True))
        object.__setattr__(self, "depth", check_positive_int(self.depth, "fusion depth"))

    @property
    def weights(self) -> tuple[float, float]:
        """(dense, lexical) weights."""
        return self.weight, 1.0 - self.weight

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def coerce(cls, value: Fusion | str | dict[str, Any] | None, default: Fusion | None = None) -> Fusion:
        """A Fusion from a method name, a dict of fields, a Fusion, or None (``default``)."""
        if value is None:
            return default if default is not None else cls()
        if isinstance(value, Fusion):
            return value
        if isinstance(value, str):
            base = default if default is not None and default.method == value else None
            return base if base is not None else cls(method=value)  # type: ignore[arg-type]
        if isinstance(value, dict):
            unknown = set(value) - {"method", "weight", "rrf_k", "depth"}
            if unknown:
                raise InvalidArgumentError(
                    f"fusion takes method, weight, rrf_k and depth, got {sorted(unknown)}"
                )
            return cls(**value)
        raise InvalidArgumentError(f"fusion must be 'rrf', 'convex', a dict or a Fusion, got {value!r}")


def normalise_minmax(scores: np.ndarray) -> np.ndarray:
    """Scores (nq, c) float mapped to [0, 1] per row (a constant row maps to 1); nan stays nan."""
    scores = np.asarray(scores, np.float64)
    with np.errstate(invalid="ignore", all="ignore"):
        lo = np.nanmin(np.where(np.isnan(scores), np.inf, scores), axis=1, keepdims=True)
        hi = np.nanmax(np.where(np.isnan(scores), -np.inf, scores), axis=1, keepdims=True)
        span = hi - lo
        out = np.where(span > 0, (scores - lo) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(np.isnan(scores), np.nan, out)


def fuse(
    lists: Sequence[tuple[np.ndarray, np.ndarray]],
    weights: Sequence[float],
    k: int,
    *,
    method: FusionMethod = "rrf",
    rrf_k: float = 60.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge ranked lists into the top ``k`` of each query.

    Parameters
    ----------
    lists : sequence of (rows, scores)
        Each retriever's ranking: rows of shape (nq, c_i), int64, best first, ``-1`` padding; scores
        of shape (nq, c_i), float (higher is better; used by ``convex`` only).
    weights : sequence of float
        One weight per list.
    k : int
        Results per query.

    Returns
    -------
    rows : ndarray of shape (nq, k), int64
        Fused ranking, ties to the smaller row, ``-1`` padding.
    scores : ndarray of shape (nq, k), float32
        Fused scores, ``nan`` at padding.
    found : ndarray of shape (nq, k, len(lists)), bool
        Which lists held each result.
    """
    if len(lists) != len(weights) or not lists:
        raise InvalidArgumentError(f"fuse needs one weight per list, got {len(weights)} for {len(lists)}")
    nq = lists[0][0].shape[0]
    contributions = []
    for rows, scores in lists:
        valid = rows >= 0
        if method == "rrf":
            ranks = np.arange(1, rows.shape[1] + 1, dtype=np.float64)
            part = np.broadcast_to(1.0 / (rrf_k + ranks), rows.shape)
        else:
            part = np.nan_to_num(normalise_minmax(np.where(valid, scores, np.nan)), nan=0.0)
        contributions.append((rows, np.where(valid, part, 0.0), valid))
    all_rows = np.concatenate([r for r, _, _ in contributions], axis=1)
    width = all_rows.shape[1]
    fused_rows = np.full((nq, width), -1, np.int64)
    fused_scores = np.full((nq, width), np.nan, np.float64)
    for q in range(nq):
        total: dict[int, float] = {}
        for (rows, part, valid), w in zip(contributions, weights, strict=True):
            for row, value in zip(rows[q][valid[q]].tolist(), part[q][valid[q]].tolist(), strict=True):
                total[row] = total.get(row, 0.0) + w * value
        fused_rows[q, : len(total)] = list(total)
        fused_scores[q, : len(total)] = list(total.values())
    rows_k, scores_k = top_k(fused_rows, fused_scores, min(k, width))
    if rows_k.shape[1] < k:
        pad = k - rows_k.shape[1]
        rows_k = np.pad(rows_k, ((0, 0), (0, pad)), constant_values=-1)
        scores_k = np.pad(scores_k, ((0, 0), (0, pad)), constant_values=np.nan)
    found = np.stack([(rows_k[:, :, None] == r[:, None, :]).any(axis=2) for r, _, _ in contributions], axis=2)
    found &= (rows_k >= 0)[:, :, None]
    return rows_k, scores_k.astype(np.float32), found
