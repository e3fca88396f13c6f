"""The inverted-file kernels (``ivf_probe``, ``ivf_scan``) on every path against brute forces: the
list choice against sorting float64 centroid scores, the list scan against an exact Hamming scan
over the rows of the probed lists (ties to the smaller row, deleted / filtered / newer rows skipped,
queries grouped per list in a batch giving the same answer as one at a time)."""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch.exceptions import DimensionMismatchError, InvalidArgumentError
from quantsearch.kernels import (
    PAD_DISTANCE,
    available_backends,
    hamming_distances,
    hamming_topk,
    ivf_probe,
    ivf_scan,
    use_backend,
)

BACKENDS = ["numpy", *(b for b in ("avx512", "avx2", "portable") if b in available_backends())]


def lists_of(assign: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(assign, kind="stable").astype(np.int32)
    offsets = np.zeros(nlist + 1, np.int64)
    np.cumsum(np.bincount(assign, minlength=nlist), out=offsets[1:])
    return order, offsets


def scan_reference(q, codes, assign, probes, k, valid=None, n_rows=None):
    """Exact Hamming top-k over the rows whose list is probed, by (distance, row)."""
    n_rows = codes.shape[0] if n_rows is None else n_rows
    dist = np.full((q.shape[0], k), PAD_DISTANCE, np.int64)
    rows = np.full((q.shape[0], k), -1, np.int64)
    for i in range(q.shape[0]):
        keep = np.isin(assign[:n_rows], probes[i][probes[i] >= 0])
        if valid is not None:
            keep &= valid[:n_rows]
        r = np.flatnonzero(keep)
        d = hamming_distances(q[i : i + 1], codes[r])[0]
        top = np.lexsort((r, d))[:k]
        dist[i, : top.size], rows[i, : top.size] = d[top], r[top]
    return dist, rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nb", [1, 16, 19, 128])
def test_scan_matches_the_exact_scan_of_the_probed_lists(backend: str, nb: int) -> None:
    rng = np.random.default_rng(nb)
    n, nlist = 3000, 37
    codes = rng.integers(0, 256, (n, nb), dtype=np.uint8)
    codes[10:60] = codes[5]  # many ties
    assign = rng.integers(0, nlist, n).astype(np.int32)
    order, offsets = lists_of(assign, nlist)
    q = rng.integers(0, 256, (9, nb), dtype=np.uint8)
    q[0] = codes[5]
    probes = rng.integers(-1, nlist, (9, 6)).astype(np.int32)
    probes[1, :3] = probes[1, 0]  # a list probed twice counts once
    valid = rng.random(n) < 0.6
    with use_backend(backend):
        for v, n_rows, k in ((None, n, 7), (valid, n, 40), (valid, 2500, 300), (None, 100, 50)):
            got = ivf_scan(q, codes, order, offsets, probes, k, valid=v, n_rows=n_rows)
            want = scan_reference(q, codes, assign, probes, k, v, n_rows)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            for i in range(q.shape[0]):  # one query (its own path: histogram, not heap) = the batch's
                one = ivf_scan(q[i : i + 1], codes, order, offsets, probes[i : i + 1], k,
                               valid=v, n_rows=n_rows)  # fmt: skip
                np.testing.assert_array_equal(one[0], want[0][i : i + 1])
                np.testing.assert_array_equal(one[1], want[1][i : i + 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_of_every_list_equals_hamming_topk(backend: str) -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    assign = rng.integers(0, 11, 2000)
    order, offsets = lists_of(assign, 11)
    q = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    probes = np.tile(np.arange(11, dtype=np.int32), (4, 1))
    with use_backend(backend):
        got = ivf_scan(q, codes, order, offsets, probes, 25)
        want = hamming_topk(q, codes, 25)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_takes_the_best_lists_and_walks_until_enough_valid_rows(backend: str) -> None:
    rng = np.random.default_rng(18)
    nlist, dim = 50, 40
    cent = rng.integers(-127, 128, (nlist, dim)).astype(np.int8)
    scale = rng.uniform(0.5, 2, nlist).astype(np.float32)
    q = rng.standard_normal((6, dim)).astype(np.float32)
    scores = (q.astype(np.float64) @ cent.T.astype(np.float64)) * scale
    best = np.argsort(-scores, axis=1, kind="stable")
    counts = rng.integers(0, 5, nlist)
    counts[best[0, :10]] = 0  # query 0's ten best lists hold no valid row
    with use_backend(backend):
        plain = ivf_probe(q, cent, scale, 5)
        walked = ivf_probe(q, cent, scale, 5, counts=counts, want=20)
        everything = ivf_probe(q, cent, scale, 5, counts=counts, want=10**9)
    assert plain.shape == (6, 5)
    np.testing.assert_array_equal(plain, best[:, :5])
    for i in range(6):
        # the shortest prefix of the score order holding 20 valid rows, and at least 5 lists
        stop = max(5, int(np.searchsorted(np.cumsum(counts[best[i]]), 20)) + 1)
        np.testing.assert_array_equal(walked[i, :stop], best[i, :stop])
        assert (walked[i, stop:] == -1).all()
        assert counts[walked[i, :stop]].sum() >= 20
    assert (walked[0] >= 0).sum() > 10
    np.testing.assert_array_equal(everything, best)


def test_bad_arguments_raise_our_errors() -> None:
    codes = np.zeros((10, 4), np.uint8)
    order, offsets = lists_of(np.zeros(10, np.int64), 2)
    probes = np.zeros((1, 1), np.int32)
    with pytest.raises(DimensionMismatchError):
        ivf_scan(np.zeros((1, 5), np.uint8), codes, order, offsets, probes, 3)
    with pytest.raises(InvalidArgumentError):
        ivf_scan(np.zeros((1, 4), np.uint8), codes, order, offsets[::-1].copy(), probes, 3)
    with pytest.raises(InvalidArgumentError):
        ivf_scan(np.zeros((1, 4), np.uint8), codes, order, offsets, probes, 3, n_rows=11)
    with pytest.raises(DimensionMismatchError):
        ivf_probe(np.zeros((1, 3), np.float32), np.zeros((2, 4), np.int8), np.ones(2), 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_shortlist_scores_only_the_lists_nearest_in_hamming(backend: str) -> None:
    rng = np.random.default_rng(3)
    nlist, dim = 200, 64
    cent = rng.integers(-127, 128, (nlist, dim)).astype(np.int8)
    scale = np.ones(nlist, np.float32)
    q = rng.standard_normal((5, dim)).astype(np.float32)
    qbits, cbits = np.packbits(q > 0, axis=1), np.packbits(cent > 0, axis=1)
    with use_backend(backend):
        got = ivf_probe(q, cent, scale, 4, query_bits=qbits, centroid_bits=cbits, shortlist=30)
        full = ivf_probe(q, cent, scale, 4, query_bits=qbits, centroid_bits=cbits, shortlist=nlist)
    d = hamming_distances(qbits, cbits)
    scores = q.astype(np.float64) @ cent.T.astype(np.float64)
    for i in range(5):
        near = np.lexsort((np.arange(nlist), d[i]))[:30]
        best = near[np.argsort(-scores[i, near], kind="stable")[:4]]
        np.testing.assert_array_equal(got[i], best)
    np.testing.assert_array_equal(full, np.argsort(-scores, axis=1, kind="stable")[:, :4])


@pytest.mark.parametrize("backend", BACKENDS)
def test_trusted_calls_give_the_checked_calls_results(backend: str) -> None:
    # the IVF stage's calls skip the Python checks (its arrays are built once); same answers
    rng = np.random.default_rng(9)
    n, nlist, dim = 1500, 23, 64
    codes = rng.integers(0, 256, (n, dim // 8), dtype=np.uint8)
    order, offsets = lists_of(rng.integers(0, nlist, n), nlist)
    cent = rng.integers(-127, 128, (nlist, dim)).astype(np.int8)
    scale = rng.uniform(0.5, 2, nlist).astype(np.float32)
    q = rng.standard_normal((3, dim)).astype(np.float32)
    qbits, cbits = np.packbits(q > 0, axis=1), np.packbits(cent > 0, axis=1)
    valid = rng.random(n) < 0.7
    with use_backend(backend):
        for kw in ({}, {"query_bits": qbits, "centroid_bits": cbits, "shortlist": 8}):
            probes = ivf_probe(q, cent, scale, 3, **kw)
            np.testing.assert_array_equal(ivf_probe(q, cent, scale, 3, trusted=True, **kw), probes)
        counts = np.bincount(np.repeat(np.arange(nlist), np.diff(offsets)), minlength=nlist)
        walked = ivf_probe(q, cent, scale, 3, counts=counts, want=200)
        again = ivf_probe(q, cent, scale, 3, counts=counts, want=200, trusted=True)
        np.testing.assert_array_equal(again, walked)
        for v in (None, valid):
            want = ivf_scan(qbits, codes, order, offsets, probes, 20, valid=v, n_rows=1400)
            got = ivf_scan(qbits, codes, order, offsets, probes, 20, valid=v, n_rows=1400, trusted=True)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        if backend != "numpy":  # the native layer still refuses what would read out of bounds
            with pytest.raises(InvalidArgumentError):
                ivf_scan(qbits, codes, order, offsets[::-1].copy(), probes, 20, trusted=True)
            with pytest.raises(InvalidArgumentError):
                ivf_probe(q[:, :-1].copy(), cent, scale, 3, trusted=True)
