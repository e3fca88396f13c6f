"""Candidate stages: stage 1 of a search, the rows worth rescoring.

A :class:`CandidateStage` turns float queries into ``n`` candidate rows per query over the candidate
tier's codes in RAM, skipping rows the validity mask rules out (deleted, or outside a filter). The
exact scan is one implementation; structures over the codes (IVF lists, proximity graphs) are others:
they are named in the manifest by their config, built and kept in the index directory through the
lifecycle hooks, and need no change to :class:`~quantsearch.index.Index` or the pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..exceptions import CorruptIndexError
from ..quantization import Quantizer

__all__ = ["CandidateStage", "ExactScan", "candidate_stage_from_config"]


class CandidateStage(ABC):
    """Finds candidates for rescoring over the candidate tier's codes.

    Parameters
    ----------
    quantizer : Quantizer
        The fitted candidate-tier quantizer (it prepares the queries and owns the scan kernel).
    """

    #: registry key written into the manifest (``{"kind": ..., "params": ...}``)
    kind: ClassVar[str]
    _registry: ClassVar[dict[str, type[CandidateStage]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            CandidateStage._registry[cls.kind] = cls

    def __init__(self, quantizer: Quantizer) -> None:
        self.quantizer = quantizer

    @property
    def name(self) -> str:
        """The stage's key in a search's timings and candidate counts."""
        return self.quantizer.scan_stage

    @abstractmethod
    def search(
        self, queries: np.ndarray, codes: np.ndarray, n: int, *, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best candidates of each query.

        Parameters
        ----------
        queries : ndarray of shape (nq, dim), float32
            Raw float queries (the quantizer prepares them).
        codes : ndarray of shape (n_rows, width), uint8
            Every stored candidate code, in row order.
        n : int
            Candidates wanted per query.
        valid : ndarray of shape (n_rows,), bool
            False for rows that must never be returned (deleted; outside a filter).

        Returns
        -------
        scores, rows : ndarrays of shape (nq, n), float32 and int64
            Larger score is better; ``-1`` rows (score nan) pad when fewer rows qualify.
        """

    def params(self) -> dict[str, Any]:
        """Settings that recreate this stage (JSON-serialisable)."""
        return {}

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params()}

    # ---- lifecycle of structures kept in the index directory (the exact scan keeps none) ---------------
    def files(self) -> set[str]:
        """Paths (relative to the index) this stage's persisted structure uses; kept by orphan cleanup."""
        return set()

    def load(self, root: Path, codes: np.ndarray) -> None:  # noqa: B027 - nothing to load for exact
        """Open the persisted structure for the committed ``codes`` (n_rows, width)."""

    def added(self, root: Path, codes: np.ndarray, start: int) -> None:  # noqa: B027
        """Rows ``start:`` of ``codes`` were committed: insert them."""

    def rebuilt(self, root: Path, codes: np.ndarray) -> None:  # noqa: B027
        """A compaction renumbered every row: rebuild over ``codes``."""


class ExactScan(CandidateStage):
    """Scan every code with the candidate quantizer's own kernel (Hamming popcount for sign bits,
    the bit-plane asymmetric scan for RaBitQ-style codes). Exact, and the default."""

    kind = "exact"

    def search(
        self, queries: np.ndarray, codes: np.ndarray, n: int, *, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.quantizer.scan_topk(queries, codes, n, valid=valid)


def candidate_stage_from_config(config: dict[str, Any] | None, quantizer: Quantizer) -> CandidateStage:
    """The stage a manifest names (``None``: the exact scan, as in indexes written before stages)."""
    if config is None:
        return ExactScan(quantizer)
    try:
        cls = CandidateStage._registry[config["kind"]]
        return cls(quantizer, **dict(config.get("params", {})))
    except (KeyError, TypeError) as exc:
        raise CorruptIndexError(f"unknown candidate stage {config!r}: {exc}") from None
