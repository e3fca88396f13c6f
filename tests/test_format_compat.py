"""Indexes written by an earlier release open unchanged and answer exactly as they did then.

tests/fixtures/v1_* were written by tests/fixtures/make_v1.py with the code of commit f054f71 (before
the index was cut into components); v1_expected.npz holds the ids and scores that code returned.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import quantsearch as qs

FIXTURES = Path(__file__).parent / "fixtures"
SEARCHES = {
    "v1_int": {"default": {}, "hamming": {"stages": ()}, "int8": {"stages": ("int8",), "oversampling": 4}},
    "v1_str": {"default": {}, "scan": {"stages": ()}},
}


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "v1_expected.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_v1_index_answers_as_before(tmp_path: Path, expected: dict[str, np.ndarray], name: str) -> None:
    path = shutil.copytree(FIXTURES / name, tmp_path / name)  # never write into the committed fixture
    with qs.Index.open(path) as index:
        index.verify()
        for search, kwargs in SEARCHES[name].items():
            res = index.search(expected["queries"], k=10, **kwargs)
            want_ids = expected[f"{name}/{search}/ids"]
            got_ids = res.ids.astype(str) if want_ids.dtype.kind == "U" else res.ids
            np.testing.assert_array_equal(got_ids, want_ids, err_msg=f"{name} {search}")
            np.testing.assert_array_equal(res.scores, expected[f"{name}/{search}/scores"], err_msg=search)


def test_v1_index_takes_writes(tmp_path: Path) -> None:
    path = shutil.copytree(FIXTURES / "v1_int", tmp_path / "v1_int")
    rng = np.random.default_rng(0)
    with qs.Index.open(path) as index:
        n = len(index)
        vector = rng.standard_normal((1, index.dim)).astype(np.float32)
        (new_id,) = index.add(vector, texts=["new"])
        assert new_id == 300  # auto ids continue after the largest id the old code handed out
        assert index.search(vector, k=1).ids[0, 0] == new_id
        assert index.compact() == 2  # the two deleted rows
        assert len(index) == n + 1
        index.verify()
    with qs.Index.open(path) as index:
        assert index.get(new_id)["text"] == "new"
        assert 3 not in index and 250 not in index
