"""Candidate stages: stage 1 of a search, the rows worth rescoring.

A :class:`CandidateStage` turns float queries into ``n`` candidate rows per query over the candidate
tier's codes in RAM, skipping rows the validity mask rules out (deleted, or outside a filter). The
exact scan is one implementation; structures over the codes (IVF lists, proximity graphs) are others:
they are named in the manifest by their config, built and kept in the index directory through the
lifecycle hooks, and need no change to :class:`~quantsearch.index.Index` or the pipeline.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._validation import check_positive_int
from ..exceptions import CorruptIndexError, InvalidArgumentError, StorageError
from ..quantization import Quantizer
from . import layout

__all__ = [
    "CandidateStage",
    "ExactScan",
    "candidate_stage_from_config",
    "check_stage_config",
    "filter_widening",
    "scan_rows",
]

#: Under a filter that admits a share ``s`` of the live rows, stages and the pipeline widen their
#: search by ``1 / sqrt(s)``, at most this many times: the pipeline passes ``k x oversampling /
#: sqrt(s)`` candidates to rescoring, the IVF stage walks lists until it has seen that factor, raised
#: to ``ivf.FILTER_PROBE_POWER``, times the valid rows an unfiltered probe scans. The true neighbours
#: inside a narrow filter sit further from the query, where the 1-bit ranking is noisier and the
#: lists probed are fewer of the right ones (recall at 50/10/1%: docs/benchmarks.md).
FILTER_WIDEN_MAX = 10.0


def filter_widening(share: float) -> float:
    """``min(FILTER_WIDEN_MAX, 1 / sqrt(share))`` for a filter admitting ``share`` of the live rows."""
    return min(FILTER_WIDEN_MAX, float(np.sqrt(1.0 / max(share, 1e-12))))


logger = logging.getLogger(__name__)


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

    def ram_bytes(self) -> int:
        """Bytes of RAM the stage's structure holds beyond the codes (0 for the exact scan)."""
        return 0

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params()}

    # ---- lifecycle of structures kept in the index directory (the exact scan keeps none) ---------------
    def files(self) -> set[str]:
        """Paths (relative to the index) this stage's persisted structure uses; kept by orphan cleanup."""
        return set() if self.calibration_file is None else {self.calibration_file}

    def load(self, root: Path, codes: np.ndarray, *, generation: int = 0) -> None:  # noqa: B027
        """Open the persisted structure for the committed ``codes`` (n_rows, width) of catalog
        ``generation`` (bumped by every compaction); catch up with rows it does not cover yet."""

    def added(self, root: Path, codes: np.ndarray, start: int) -> None:  # noqa: B027
        """Rows ``start:`` of ``codes`` were committed: insert them."""

    def rebuilt(self, root: Path, codes: np.ndarray, *, generation: int = 0) -> None:  # noqa: B027
        """A compaction renumbered every row (now catalog ``generation``): rebuild over ``codes``."""

    # ---- target recall (calibrated when the structure is built; see calibration.py) ------------------
    #: the search setting a target recall is mapped to (``"ef"``, ``"nprobe"``); None: exact stages
    knob: ClassVar[str | None] = None
    #: the stage's calibration file (relative to the index), if it keeps one
    calibration_file: ClassVar[str | None] = None
    _calibration: list[tuple[int, float]] | None = None
    _calibrated_at: tuple[int, int] | None = None  # (generation, rows) measured at

    def calibration_grid(self) -> list[int]:
        """Settings of the stage's search knob, cheapest first, that a calibration measures (empty:
        the stage is exact and needs none)."""
        return []

    def calibration_due(self) -> bool:
        """Whether the structure changed enough since the last calibration to measure it again."""
        return False

    @property
    def calibration(self) -> list[tuple[int, float]] | None:
        """The measured ``(setting, recall)`` pairs, cheapest first (``None``: not calibrated)."""
        return self._calibration

    def set_calibration(self, root: Path, table: list[tuple[int, float]], rows: int, generation: int) -> None:
        """Keep the measured ``(setting, recall)`` pairs and save them (a failure is logged: the
        table is measured again at the next open that finds it missing)."""
        self._calibration = [(int(s), float(r)) for s, r in table]
        self._calibrated_at = (int(generation), int(rows))
        if self.calibration_file is None:
            return
        body = json.dumps({"table": self._calibration, "generation": generation, "rows": rows}).encode()
        try:
            layout.atomic_write(root / self.calibration_file, lambda f: f.write(body))
        except StorageError as exc:
            logger.warning("stage calibration not saved (%s)", exc)

    def _load_calibration(self, root: Path) -> None:
        self._calibration, self._calibrated_at = None, None
        if self.calibration_file is None or not (root / self.calibration_file).is_file():
            return
        try:
            data = json.loads((root / self.calibration_file).read_text())
            table = [(int(s), float(r)) for s, r in data["table"]]
            at = (int(data["generation"]), int(data["rows"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("stage calibration %s cannot be read (%s): measuring again", root, exc)
            return
        self._calibration, self._calibrated_at = table, at

    def resolve_setting(self, value: int | None, target: float | None, default: int) -> int | None:
        """The knob's value for one search: explicit, from a target recall, or the default; ``None``
        when no calibrated setting reaches the target recall (the stage then scans exactly)."""
        name = self.knob or "setting"
        if target is not None:
            if value is not None:
                raise InvalidArgumentError(f"give {name} or target_recall, not both")
            if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
                raise InvalidArgumentError(f"target_recall must be a number in (0, 1], got {target!r}")
            if not self._calibration:
                return default
            return self.setting_for_recall(float(target))
        return default if value is None else check_positive_int(value, name)

    def setting_for_recall(self, target: float) -> int | None:
        """The cheapest calibrated setting whose measured recall reaches ``target``; ``None`` when
        none does (or there is no calibration): only the exact scan is known to reach it."""
        for setting, recall in self._calibration or []:
            if recall >= target:
                return setting
        return None


class ExactScan(CandidateStage):
    """Scan every code with the candidate quantizer's own kernel (Hamming popcount for sign bits,
    the bit-plane asymmetric scan for RaBitQ-style codes). Exact, and the default."""

    kind = "exact"

    def search(
        self,
        queries: np.ndarray,
        codes: np.ndarray,
        n: int,
        *,
        valid: np.ndarray,
        target_recall: float | None = None,
        **options: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every valid row is scored; a ``target_recall`` is always met (checked, then ignored)."""
        self.check_options(options)
        self.resolve_setting(None, target_recall, 0)
        return self.quantizer.scan_topk(queries, codes, n, valid=valid)


def scan_rows(
    quantizer: Quantizer, queries: np.ndarray, codes: np.ndarray, rows: np.ndarray, n: int, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scan of the given ascending ``rows``' codes; returns global rows (ties to the smaller row),
    padded with ``-1`` / nan to ``n`` columns. Stages use it when a filter leaves few rows."""
    nq = queries.shape[0]
    if rows.size == 0:
        return np.full((nq, n), np.nan, np.float32), np.full((nq, n), -1, np.int64)
    sub_valid = valid[rows]
    scores, local = quantizer.scan_topk(queries, np.ascontiguousarray(codes[rows]), min(n, rows.size),
                                        valid=sub_valid)  # fmt: skip
    found = np.where(local >= 0, rows[np.maximum(local, 0)].astype(np.int64), -1)
    if found.shape[1] < n:
        pad = n - found.shape[1]
        found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=np.nan)
    return scores, found


def _register_kinds() -> None:
    """Import the modules that define stage kinds (they import this module, so not at the top)."""
    from . import graph, ivf  # noqa: F401


def candidate_stage_from_config(config: dict[str, Any] | None, quantizer: Quantizer) -> CandidateStage:
    """The stage a manifest names (``None``: the exact scan, as in indexes written before stages)."""
    if config is None:
        return ExactScan(quantizer)
    _register_kinds()

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
    _register_kinds()

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
