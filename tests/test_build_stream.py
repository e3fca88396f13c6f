"""Index.build from inputs larger than RAM (index/streaming.py): a .npy memory map gives the index
an in-RAM array gives, calibration on a seeded sample, page release, and a rejected batch leaves
no index behind."""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.exceptions import InvalidDtypeError, NonFiniteError
from quantsearch.index.streaming import calibration_sample, release_pages


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def same_index(a: Index, b: Index, q: np.ndarray) -> None:
    np.testing.assert_array_equal(a._state.view.codes, b._state.view.codes)
    ra, rb = a.search(q, k=5, with_payload=False), b.search(q, k=5, with_payload=False)
    np.testing.assert_array_equal(ra.ids, rb.ids)
    np.testing.assert_allclose(ra.scores, rb.scores, rtol=1e-6)


def test_a_memory_map_builds_the_index_the_array_builds(tmp_path) -> None:
    x = unit(2500, 48, 0)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    q = unit(7, 48, 1)
    with (
        Index.build(tmp_path / "a", x, batch_size=300) as a,
        Index.build(tmp_path / "m", mapped, batch_size=300) as m,
    ):
        assert len(m) == 2500
        same_index(a, m, q)
    np.testing.assert_array_equal(np.asarray(mapped), x)  # released pages read back from the file


def test_calibration_uses_a_seeded_sample_above_calibration_size(tmp_path) -> None:
    x = unit(3000, 32, 2)
    sample = calibration_sample(x, 500)
    rows = np.sort(np.random.default_rng(0).choice(3000, size=500, replace=False))
    np.testing.assert_array_equal(sample, x[rows])
    assert calibration_sample(x, 3000) is x  # all rows: small builds calibrate as before
    with (
        Index.build(tmp_path / "b", x, calibration_size=500) as built,
        Index.create(tmp_path / "r", 32, calibration=x[rows]) as ref,
    ):
        for start in range(0, 3000, 1000):
            ref.add(x[start : start + 1000])
        same_index(built, ref, unit(5, 32, 3))


def test_release_pages_only_touches_top_level_memory_maps(tmp_path) -> None:
    x = unit(4096, 64, 4)  # 1 MB: whole pages
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert float(np.asarray(mapped).sum()) == pytest.approx(float(x.sum()), rel=1e-5)  # pages resident
    release_pages(mapped, 0, 4096)
    release_pages(mapped[100:], 0, 10)  # a view: ignored
    release_pages(x, 0, 10)  # not a map: ignored
    np.testing.assert_array_equal(np.asarray(mapped), x)


def test_a_rejected_batch_leaves_no_index(tmp_path) -> None:
    x = unit(1000, 16, 5)
    sampled = set(np.random.default_rng(0).choice(1000, size=100, replace=False).tolist())
    x[max(set(range(600, 1000)) - sampled), 3] = np.nan  # in a late batch, outside the calibration sample
    with pytest.raises(NonFiniteError):
        Index.build(tmp_path / "bad", x, batch_size=300, calibration_size=100)
    assert not (tmp_path / "bad").exists()
    (tmp_path / "empty").mkdir()  # an empty directory given is left empty
    with pytest.raises(NonFiniteError):
        Index.build(tmp_path / "empty", x, batch_size=300, calibration_size=100)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    with pytest.raises(InvalidDtypeError):
        Index.build(tmp_path / "int", np.ones((10, 4), np.int64))
    assert not (tmp_path / "int").exists()
