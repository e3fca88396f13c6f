"""Shared fixtures: seeded data and small indexes built under ``tmp_path``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from quantsearch import Index

# tests write only to temporary directories: no hypothesis files in the working directory
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="quantsearch-hypothesis-"))
settings.register_profile("quantsearch", database=None, deadline=None)
settings.load_profile("quantsearch")


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors of shape (n, dim), float32, from a seeded generator."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def nested_dict(depth: int) -> dict[str, Any]:
    """A dict nested ``depth`` levels deep (the outer dict is level 1): ``{"a": {"a": ... {}}}``."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture
def make_vectors() -> Callable[..., np.ndarray]:
    """``make_vectors(n, dim, seed=0)``: seeded random unit vectors (n, dim) float32."""
    return unit_vectors


@pytest.fixture
def make_index(tmp_path) -> Iterator[Callable[..., tuple[Index, np.ndarray]]]:
    """``make_index(n=300, dim=40, batches=3, seed=0, name="index", **create_kwargs)``.

    Builds an index under ``tmp_path / name``, calibrated on its own vectors, with ``n`` documents
    added in ``batches`` batches: integer ids ``0..n-1``, texts ``"doc <id>"``, metadata
    ``{"i": <id>}``. Returns ``(index, vectors)``; the index is closed at teardown.
    """
    opened: list[Index] = []

    def make(
        n: int = 300,
        dim: int = 40,
        *,
        batches: int = 3,
        seed: int = 0,
        name: str = "index",
        **create_kwargs: Any,
    ) -> tuple[Index, np.ndarray]:
        vectors = unit_vectors(n, dim, seed)
        index = Index.create(tmp_path / name, dim, calibration=vectors, **create_kwargs)
        opened.append(index)
        for chunk in np.array_split(np.arange(n), batches):
            index.add(
                vectors[chunk],
                ids=chunk.tolist(),
                texts=[f"doc {i}" for i in chunk],
                metadata=[{"i": int(i)} for i in chunk],
            )
        return index, vectors

    yield make
    for index in opened:
        index.close()
