"""The one result type every search returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SearchResults"]


@dataclass(frozen=True)
class SearchResults:
    """Results of a batch of queries, always 2-D (one row per query, even for a single query).

    Attributes
    ----------
    ids : ndarray of shape (n_queries, k)
        int64 for an index with integer ids (padding ``-1``), object (``str``) for string ids
        (padding ``None``). Padding appears only when fewer than ``k`` documents exist.
    scores : ndarray of shape (n_queries, k), float32
        Higher is better: the inner product of the float query with the vectors of the last stage
        (dequantized codes), or minus the Hamming distance when no rescoring ran. ``nan`` at padding.
    texts, metadata : list of list, optional
        Payload of each hit (``None`` where absent), when requested.
    timings : dict of str to float
        Milliseconds spent in each stage for the whole batch (``embed``, ``hamming``,
        ``rescore:int8``, ..., ``payload``).
    candidates : dict of str to int
        How many candidates per query entered each stage.
    sources : list of list of list of str, optional
        Lexical and hybrid searches: the retrievers (``"dense"``, ``"lexical"``) whose lists held each
        hit (empty at padding). ``None`` for dense searches.
    """

    ids: np.ndarray
    scores: np.ndarray
    texts: list[list[str | None]] | None = None
    metadata: list[list[dict[str, Any] | None]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    candidates: dict[str, int] = field(default_factory=dict)
    sources: list[list[list[str]]] | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask (n_queries, k) of real hits (``False`` at padding)."""
        return ~np.isnan(self.scores)

    def to_list(self) -> list[list[dict[str, Any]]]:
        """Hits as plain Python objects, padding left out: ``[[{"id", "score", "text"?, "metadata"?}]]``."""
        out: list[list[dict[str, Any]]] = []
        valid = self.valid
        for q in range(len(self)):
            hits = []
            for j in np.flatnonzero(valid[q]):
                ext = self.ids[q, j]
                hit: dict[str, Any] = {
                    "id": ext.item() if isinstance(ext, np.generic) else ext,
                    "score": float(self.scores[q, j]),
                }
                if self.texts is not None:
                    hit["text"] = self.texts[q][j]
                if self.metadata is not None:
                    hit["metadata"] = self.metadata[q][j]
                if self.sources is not None:
                    hit["sources"] = self.sources[q][j]
                hits.append(hit)
            out.append(hits)
        return out
