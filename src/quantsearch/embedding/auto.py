"""``backend="auto"``: the fastest backend that agrees with float32 torch on a sample of the user's corpus.

No labels are needed: agreement is measured against the reference embeddings of the same sample.

- mean cosine between each text's backend embedding and its torch float32 embedding >= 0.99;
- top-10 neighbour overlap >= 0.9: for each sample text, its 10 nearest other sample texts under the backend's
  embeddings versus under float32 (mean fraction shared).

Speed is the docs/s of each backend on the same sample, measured after a warm-up batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantsearch.embedding.backends import Backend
from quantsearch.exceptions import EmptyInputError, MissingDependencyError

logger = logging.getLogger(__name__)

#: Backends ``auto`` tries, in order; ``static`` is opt-in only (it never meets the agreement bar).
AUTO_CANDIDATES: tuple[Backend, ...] = (
    Backend.ONNX_INT8,
    Backend.OPENVINO_INT8,
    Backend.ONNX,
    Backend.OPENVINO,
)
MIN_MEAN_COSINE = 0.99
MIN_NEIGHBOUR_OVERLAP = 0.9


def neighbour_overlap(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each row's ``k`` nearest other rows shared between two embeddings of the same texts.

    Parameters
    ----------
    reference, other : ndarray of shape (n, dim) and (n, dim2), float32
        Unit-norm embeddings of the same n texts (the dimensions may differ).
    k : int
        Neighbours per row; capped at n - 1.

    Returns
    -------
    float in [0, 1]
    """
    n = reference.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return 1.0

    def top(x: np.ndarray) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, k - 1, axis=1)[:, :k]

    a, b = top(reference), top(other)
    shared = [len(np.intersect1d(a[i], b[i], assume_unique=True)) for i in range(n)]
    return float(np.mean(shared)) / k


def mean_cosine(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean cosine between matching rows (n, dim) of two embeddings; nan when the dimensions differ."""
    if reference.shape != other.shape:
        return float("nan")
    num = np.sum(reference * other, axis=1)
    den = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


@dataclass
class BackendTrial:
    """One candidate's figures on the sample."""

    backend: str
    docs_per_s: float
    mean_cosine: float
    neighbour_overlap: float
    agrees: bool
    error: str | None = None


@dataclass
class AutoChoice:
    """What :func:`select_backend` chose and why."""

    backend: str
    sample_size: int
    reference_docs_per_s: float
    trials: list[BackendTrial] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "sample_size": self.sample_size,
            "reference_docs_per_s": self.reference_docs_per_s,
            "trials": [t.__dict__ for t in self.trials],
        }


def _timed(embedder: Any, texts: list[str]) -> tuple[np.ndarray, float]:
    embedder.embed(texts[: min(8, len(texts))])  # warm-up: loads (or exports) the model, first-run costs
    t0 = time.perf_counter()
    out = embedder.embed(texts)
    return out, len(texts) / max(time.perf_counter() - t0, 1e-9)


def select_backend(
    texts: Sequence[str],
    *,
    model: str | None = None,
    candidates: Sequence[Backend | str] = AUTO_CANDIDATES,
    sample_size: int = 256,
    max_seq_length: int | None = None,
    seed: int = 0,
) -> AutoChoice:
    """Pick the fastest backend whose embeddings of a corpus sample agree with torch float32.

    Parameters
    ----------
    texts : sequence of str
        The user's documents (a random ``sample_size`` of them is used).
    model : str, optional
        The embedding model (the bundled default when None).
    candidates : sequence of Backend or str
        Backends to try; one that is not installed is skipped (recorded in the trials).
    sample_size : int, default 256
    max_seq_length : int, optional
    seed : int, default 0
        Seed of the sample choice.

    Returns
    -------
    AutoChoice
        ``backend`` is ``"torch"`` when no candidate agrees or none is faster.
    """
    from quantsearch.embed import Embedder
    from quantsearch.embedding.backends import parse_backend

    texts = list(texts)
    if not texts:
        raise EmptyInputError("select_backend needs at least one text to sample")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(texts), size=min(sample_size, len(texts)), replace=False))
    sample = [texts[i] for i in rows]
    reference_embedder = Embedder(model, backend="torch", max_seq_length=max_seq_length)
    reference, reference_speed = _timed(reference_embedder, sample)
    choice = AutoChoice("torch", len(sample), round(reference_speed, 2))
    best_speed = reference_speed
    for candidate in candidates:
        backend = parse_backend(candidate)
        try:
            out, speed = _timed(Embedder(model, backend=backend, max_seq_length=max_seq_length), sample)
        except MissingDependencyError as exc:
            choice.trials.append(BackendTrial(backend.value, 0.0, float("nan"), 0.0, False, str(exc)))
            continue
        cos = mean_cosine(reference, out)
        overlap = neighbour_overlap(reference, out)
        agrees = bool(cos >= MIN_MEAN_COSINE and overlap >= MIN_NEIGHBOUR_OVERLAP)
        choice.trials.append(
            BackendTrial(backend.value, round(speed, 2), round(cos, 5), round(overlap, 4), agrees)
        )
        logger.info(
            "auto: %s %.1f docs/s (torch %.1f), mean cosine %.4f, top-10 overlap %.3f%s",
            backend.value,
            speed,
            reference_speed,
            cos,
            overlap,
            "" if agrees else " (rejected)",
        )
        if agrees and speed > best_speed:
            best_speed, choice.backend = speed, backend.value
    return choice
