"""The Hamming kernel against a brute force over unpacked bits (ties: smaller row first)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantsearch.kernels import PAD_DISTANCE, gather_rows, hamming_distances, hamming_topk
from quantsearch.quantization import BinaryQuantizer


def brute_force(queries: np.ndarray, codes: np.ndarray, dim: int, k: int, valid: np.ndarray | None = None):
    """Distances from unpacked bits; order by (distance, row); pad with -1 / PAD_DISTANCE."""
    qb = np.unpackbits(queries, axis=1, count=dim).astype(np.int64)
    cb = np.unpackbits(codes, axis=1, count=dim).astype(np.int64)
    dist = (qb[:, None, :] != cb[None, :, :]).sum(axis=2)
    rows_all = np.arange(codes.shape[0])
    out_d = np.full((queries.shape[0], k), PAD_DISTANCE, np.int64)
    out_r = np.full((queries.shape[0], k), -1, np.int64)
    for i in range(queries.shape[0]):
        keep = rows_all if valid is None else rows_all[valid]
        order = keep[np.lexsort((keep, dist[i, keep]))][:k]
        out_d[i, : len(order)] = dist[i, order]
        out_r[i, : len(order)] = order
    return out_d, out_r


def random_codes(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    quantizer = BinaryQuantizer().fit(np.ones((1, dim), np.float32))
    return quantizer.encode(rng.standard_normal((n, dim)).astype(np.float32))


@pytest.mark.parametrize("dim", [8, 12, 63, 64, 65, 100, 128, 200, 384, 500, 768, 1000, 1024])
def test_topk_matches_brute_force_across_dims(dim: int) -> None:
    rng = np.random.default_rng(dim)
    codes = random_codes(rng, 300, dim)
    queries = random_codes(rng, 7, dim)
    for k in (1, 5, 37, 299, 300):
        d, r = hamming_topk(queries, codes, k)
        bd, br = brute_force(queries, codes, dim, k)
        np.testing.assert_array_equal(d, bd)
        np.testing.assert_array_equal(r, br)


def test_ties_are_broken_by_row_across_blocks() -> None:
    # many identical codes: every distance ties, so order must be exactly by row index
    rng = np.random.default_rng(0)
    base = random_codes(rng, 3, 64)
    codes = np.repeat(base, 20_000, axis=0)  # spans several scan blocks
    d, r = hamming_topk(base[:1], codes, 50)
    bd, br = brute_force(base[:1], codes, 64, 50)
    np.testing.assert_array_equal(r, br)
    np.testing.assert_array_equal(d, bd)
    assert (d[0] == 0).all()


def test_k_larger_than_n_pads() -> None:
    rng = np.random.default_rng(1)
    codes = random_codes(rng, 5, 40)
    d, r = hamming_topk(codes[:2], codes, 8)
    assert r.shape == (2, 8)
    assert (r[:, 5:] == -1).all() and (d[:, 5:] == PAD_DISTANCE).all()
    bd, br = brute_force(codes[:2], codes, 40, 8)
    np.testing.assert_array_equal(r, br)


def test_valid_mask_excludes_rows() -> None:
    rng = np.random.default_rng(2)
    codes = random_codes(rng, 200, 96)
    queries = codes[:4]
    valid = rng.random(200) < 0.6
    valid[:2] = False  # the queries' own rows are deleted
    d, r = hamming_topk(queries, codes, 150, valid=valid)
    bd, br = brute_force(queries, codes, 96, 150, valid)
    np.testing.assert_array_equal(r, br)
    np.testing.assert_array_equal(d, bd)
    assert not np.isin(r[r >= 0], np.flatnonzero(~valid)).any()


def test_empty_database() -> None:
    d, r = hamming_topk(np.zeros((2, 4), np.uint8), np.zeros((0, 4), np.uint8), 3)
    assert (r == -1).all() and (d == PAD_DISTANCE).all()


def test_hamming_distances_exact_values() -> None:
    queries = np.array([[0b1111_0000, 0b0000_0001]], np.uint8)
    codes = np.array([[0b1111_0000, 0b0000_0001], [0b0000_1111, 0b0000_0000], [0, 0]], np.uint8)
    np.testing.assert_array_equal(hamming_distances(queries, codes), [[0, 9, 5]])


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(8, 1024),
    n=st.integers(1, 120),
    nq=st.integers(1, 5),
    k=st.integers(1, 140),
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_property(dim: int, n: int, nq: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few distinct codes to force ties
    pool = random_codes(rng, max(1, n // 4), dim)
    codes = pool[rng.integers(0, pool.shape[0], n)]
    queries = random_codes(rng, nq, dim)
    d, r = hamming_topk(queries, codes, k)
    bd, br = brute_force(queries, codes, dim, k)
    np.testing.assert_array_equal(d, bd)
    np.testing.assert_array_equal(r, br)


def test_gather_rows_across_segments() -> None:
    rng = np.random.default_rng(3)
    full = rng.integers(-128, 127, (100, 6), dtype=np.int8)
    arrays = [full[:30], full[30:31], full[31:]]
    starts = np.array([0, 30, 31])
    rows = np.array([99, 0, 30, 30, 5, 31, 64], np.int64)
    np.testing.assert_array_equal(gather_rows(arrays, starts, rows), full[rows])
