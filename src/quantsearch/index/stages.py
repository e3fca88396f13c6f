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

from ..exceptions import CorruptIndexError, InvalidArgumentError
from ..quantization import Quantizer

__all__ = ["CandidateStage", "ExactScan", "candidate_stage_from_config", "check_stage_config"]


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
        self, queries: np.ndarray, codes: np.ndarray, n: int, *, valid: np.ndarray, **options: Any
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
        **options
            Per-search settings of this kind of stage (``nprobe`` for IVF); a stage rejects the
            ones it does not know with :meth:`check_options`.

        Returns
        -------
        scores, rows : ndarrays of shape (nq, n), float32 and int64
            Larger score is better; ``-1`` rows (score nan) pad when fewer rows qualify.
        """

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise :class:`InvalidArgumentError` for search settings this stage does not take."""
        given = sorted(k for k, v in options.items() if v is not None)
        if given:
            raise InvalidArgumentError(
                f"search setting {given[0]!r} does not apply to this index's {self.kind!r} candidate stage"
            )

    def params(self) -> dict[str, Any]:
        """Settings that recreate this stage (JSON-serialisable)."""
        return {}

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params()}

    # ---- lifecycle of structures kept in the index directory (the exact scan keeps none) ---------------
    def files(self) -> set[str]:
        """Paths (relative to the index) this stage's persisted structure uses; kept by orphan cleanup."""
        return set()

    def load(self, root: Path, codes: np.ndarray, *, generation: int = 0) -> None:  # noqa: B027
        """Open the persisted structure for the committed ``codes`` (n_rows, width) of catalog
        ``generation`` (bumped by every compaction); catch up with rows it does not cover yet."""

    def added(self, root: Path, codes: np.ndarray, start: int) -> None:  # noqa: B027
        """Rows ``start:`` of ``codes`` were committed: insert them."""

    def rebuilt(self, root: Path, codes: np.ndarray, *, generation: int = 0) -> None:  # noqa: B027
        """A compaction renumbered every row (now catalog ``generation``): rebuild over ``codes``."""


class ExactScan(CandidateStage):
    """Scan every code with the candidate quantizer's own kernel (Hamming popcount for sign bits,
    the bit-plane asymmetric scan for RaBitQ-style codes). Exact, and the default."""

    kind = "exact"

    def search(
        self, queries: np.ndarray, codes: np.ndarray, n: int, *, valid: np.ndarray, **options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        self.check_options(options)
        return self.quantizer.scan_topk(queries, codes, n, valid=valid)


def candidate_stage_from_config(config: dict[str, Any] | None, quantizer: Quantizer) -> CandidateStage:
    """The stage a manifest names (``None``: the exact scan, as in indexes written before stages)."""
    if config is None:
        return ExactScan(quantizer)
    from . import ivf  # noqa: F401 - registers the "ivf" kind (imported here: ivf imports this module)

    try:
        cls = CandidateStage._registry[config["kind"]]
        return cls(quantizer, **dict(config.get("params", {})))
    except (KeyError, TypeError, InvalidArgumentError) as exc:
        raise CorruptIndexError(f"unknown candidate stage {config!r}: {exc}") from None


def check_stage_config(spec: str | dict[str, Any] | None, quantizer: Quantizer) -> dict[str, Any] | None:
    """Normalise the ``candidate_stage`` argument of :meth:`Index.create` into a manifest config.

    ``None`` or ``"exact"``: the exact scan (``None``, nothing written to the manifest); a kind name
    (``"ivf"``) or ``{"kind": ..., "params": {...}}``. Raises :class:`InvalidArgumentError` naming
    the problem.
    """
    if spec is None or spec == "exact" or (isinstance(spec, dict) and spec.get("kind") == "exact"):
        return None
    config = {"kind": spec, "params": {}} if isinstance(spec, str) else spec
    if not isinstance(config, dict) or set(config) - {"kind", "params"}:
        raise InvalidArgumentError(
            f'candidate_stage must be a kind name or {{"kind", "params"}}, got {spec!r}'
        )
    from . import ivf  # noqa: F401 - registers the "ivf" kind

    cls = CandidateStage._registry.get(config.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise InvalidArgumentError(
            f"unknown candidate stage {config.get('kind')!r}; known: {sorted(CandidateStage._registry)}"
        )
    params = config.get("params", {})
    if not isinstance(params, dict):
        raise InvalidArgumentError(f"candidate_stage params must be a dict, got {params!r}")
    try:
        stage = cls(quantizer, **params)
    except TypeError as exc:
        raise InvalidArgumentError(f"invalid candidate_stage params {params!r}: {exc}") from None
    return stage.to_config()
