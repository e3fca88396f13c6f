"""Indexes written by an earlier release open unchanged and answer exactly as they did then.

tests/fixtures/v1_* were written by tests/fixtures/make_v1.py with the code of commit f054f71 (before
the index was cut into components); v1_expected.npz holds the ids and scores that code returned.
Every search through a rescoring tier must answer exactly as then. A candidate-only search of a
RaBitQ tier ranks by an estimate whose query quantization is the kernel's business (issue 19 moved
1-bit RaBitQ scans to 4-dimension uint8 tables): there each id's score may move by ESTIMATE_TOL,
and only ids that old code scored within that of the 10th may leave the top 10.
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
ESTIMATES = {("v1_str", "scan")}  # candidate-only rankings by a RaBitQ estimate
ESTIMATE_TOL = 0.01  # scores are inner products of unit vectors, ~0.5 here


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
            want_scores = expected[f"{name}/{search}/scores"]
            got_ids = res.ids.astype(str) if want_ids.dtype.kind == "U" else res.ids
            if (name, search) in ESTIMATES:
                _assert_same_estimate(got_ids, res.scores, want_ids, want_scores)
                continue
            np.testing.assert_array_equal(got_ids, want_ids, err_msg=f"{name} {search}")
            np.testing.assert_array_equal(res.scores, want_scores, err_msg=search)


def _assert_same_estimate(
    got_ids: np.ndarray, got_scores: np.ndarray, want_ids: np.ndarray, want_scores: np.ndarray
) -> None:
    """Each id found by both scores within ESTIMATE_TOL of its old score (so two ids can only swap
    when the old scores were that close); an old hit that is gone was within it of the old 10th."""
    for i in range(len(want_ids)):
        old = dict(zip(want_ids[i].tolist(), want_scores[i].tolist(), strict=True))
        new = dict(zip(got_ids[i].tolist(), got_scores[i].tolist(), strict=True))
        for doc in old.keys() & new.keys():
            assert abs(new[doc] - old[doc]) <= ESTIMATE_TOL, (i, doc, old[doc], new[doc])
        for doc in old.keys() - new.keys():
            assert old[doc] <= want_scores[i, -1] + ESTIMATE_TOL, (i, doc, old[doc])


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
