"""Native candidate scans of the 2-bit and ternary codes against independent float64 references.

* ``planes_topk(and_term=True)``: per-plane weights plus the AND of planes 0 and 1, on every path;
  the native paths must give exactly the numpy reference's rows, and the estimate must stay within
  ``delta / 2`` per set bit of the exact float64 sum over unpacked bits.
* ``table_topk``: per-query byte lookup tables against a float64 brute force (tie-aware).
* ``nibble_topk``: 2-bit plane, base-3 and 1-bit codes x uint8 nibble tables; the native paths must give
  exactly the numpy reference's scores and rows, and the estimate must stay within ``delta / 2``
  per table of the exact float64 sum over the decoded levels.
* ``nibble_scan``: the tables built natively from float32 queries and per-dimension level values;
  every path must give exactly ``nibble_topk`` on the numpy reference with ``values = queries x
  levels`` (float64) plus the score bias in float32.
* ``Int2Quantizer`` / ``TernaryQuantizer`` / ``RaBitQQuantizer`` ``scan_topk`` against decode + float64
  dot products, and after a refit or ``set_state`` (the scans cache per-quantizer level tables).
"""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch.exceptions import DimensionMismatchError, InvalidArgumentError, InvalidDtypeError
from quantsearch.kernels import (
    available_backends,
    nibble_scan,
    nibble_topk,
    planes_topk,
    table_topk,
    use_backend,
)
from quantsearch.kernels.numpy_backend import nibble_luts
from quantsearch.quantization import make_quantizer
from quantsearch.quantization.base import Quantizer

BACKENDS = ["numpy", "portable", "avx2", "avx512"]


def backend_or_skip(backend: str) -> None:
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available on this machine")


def two_plane_case(seed: int, n: int, dim: int, nq: int = 4):
    rng = np.random.default_rng(seed)
    nb = (dim + 7) // 8
    b0 = rng.random((n, dim)) < 0.5
    b1 = rng.random((n, dim)) < 0.5
    extra = rng.integers(0, 256, (n, 3), dtype=np.uint8)  # trailing bytes must be ignored
    codes = np.concatenate([np.packbits(b0, axis=1), np.packbits(b1, axis=1), extra], axis=1)
    assert codes.shape == (n, 2 * nb + 3)
    weights = rng.standard_normal((nq, 3, dim)).astype(np.float32)
    return codes, weights, b0.astype(np.float64), b1.astype(np.float64)


def exact_and_scores(weights, b0, b1, row_scale=None, query_offset=None):
    w = weights.astype(np.float64)
    ip = w[:, 0] @ b0.T + w[:, 1] @ b1.T + w[:, 2] @ (b0 * b1).T
    if query_offset is not None:
        ip += query_offset[:, None]
    if row_scale is not None:
        ip *= row_scale.astype(np.float64)[None, :]
    return ip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dim", [5, 64, 100, 384, 1000])
def test_and_term_matches_reference_and_bound(backend: str, dim: int) -> None:
    backend_or_skip(backend)
    codes, weights, b0, b1 = two_plane_case(dim, 700, dim)
    rng = np.random.default_rng(dim + 1)
    scale = rng.uniform(0.5, 2.0, codes.shape[0]).astype(np.float32)
    offset = rng.standard_normal(weights.shape[0])
    kw = dict(planes=2, and_term=True, row_scale=scale, query_offset=offset, query_bits=8)
    with use_backend("numpy"):
        ref = planes_topk(weights, codes, 12, **kw)
    with use_backend(backend):
        got = planes_topk(weights, codes, 12, **kw)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6, atol=1e-6)
    # the estimate of every returned row is within delta / 2 per set bit of the exact sum
    exact = exact_and_scores(weights, b0, b1, scale, offset)
    wide = np.concatenate([weights.reshape(weights.shape[0], -1), np.zeros((weights.shape[0], 1))], axis=1)
    delta = (wide.max(axis=1) - wide.min(axis=1)) / 255  # zero padding is part of the quantized vector
    setbits = b0.sum(axis=1) + b1.sum(axis=1) + (b0 * b1).sum(axis=1)
    for q in range(weights.shape[0]):
        rows = got[1][q]
        bound = delta[q] / 2 * setbits[rows] * scale[rows] + 1e-4 * (1 + np.abs(exact[q, rows]))
        assert (np.abs(got[0][q] - exact[q, rows]) <= bound).all()
        # nothing left out beats the last returned row by more than twice the bound
        worst = np.max(delta[q] / 2 * setbits * scale)
        assert np.max(exact[q]) <= exact[q, rows].max() + 2 * worst + 1e-4


@pytest.mark.parametrize("backend", ["portable", "avx2", "avx512"])
def test_and_term_identical_for_any_thread_count_and_block(backend: str) -> None:
    backend_or_skip(backend)
    from quantsearch.kernels import native_backend

    codes, weights, _, _ = two_plane_case(3, 5000, 384, nq=6)
    valid = np.random.default_rng(3).random(codes.shape[0]) < 0.8
    args = dict(
        planes=2, dim=384, plane_coef=np.ones(1), row_scale=None, row_bias=None,
        query_offset=np.zeros(6), valid=valid, query_bits=8,
    )  # fmt: skip
    one = native_backend.planes_topk(weights, codes, 9, **args, isa=backend, threads=1)
    for threads, block in ((2, 0), (3, 4096), (1, 512)):
        other = native_backend.planes_topk(
            weights, codes, 9, **args, isa=backend, threads=threads, block_bytes=block
        )
        np.testing.assert_array_equal(other[1], one[1])
        np.testing.assert_array_equal(other[0], one[0])
    assert valid[one[1][one[1] >= 0]].all()


def test_and_term_bad_arguments_raise() -> None:
    codes, weights, _, _ = two_plane_case(1, 50, 16)
    with pytest.raises(InvalidArgumentError, match="planes >= 2"):
        planes_topk(weights[:, :2], codes, 3, planes=1, and_term=True)
    with pytest.raises(DimensionMismatchError, match="and_term"):
        planes_topk(weights[:, :2], codes, 3, planes=2, and_term=True)
    with pytest.raises(InvalidArgumentError, match="query_bits"):
        planes_topk(weights, codes, 3, planes=2, and_term=True, query_bits=None)
    with pytest.raises(InvalidArgumentError, match="plane_coef"):
        planes_topk(weights, codes, 3, planes=2, and_term=True, plane_coef=np.ones(2))
    with pytest.raises(InvalidDtypeError, match="3-D"):
        planes_topk(weights[:, 0], codes, 3, planes=2, and_term=True)


# ---------------------------------------------------------------- byte lookup tables


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nb", [1, 3, 7, 77])
def test_table_topk_matches_brute_force(backend: str, nb: int) -> None:
    backend_or_skip(backend)
    rng = np.random.default_rng(nb)
    n, nq, k = 900, 3, 15
    codes = rng.integers(0, 256, (n, nb + 4), dtype=np.uint8)
    tables = rng.standard_normal((nq, nb, 256)).astype(np.float32)
    tables[:, :, 7] = 0.25  # repeated values: ties
    codes[::50, :nb] = 7
    scale = rng.uniform(0.5, 2.0, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    offset = rng.standard_normal(nq)
    valid = rng.random(n) < 0.9
    with use_backend(backend):
        scores, rows = table_topk(
            tables, codes, k, row_scale=scale, row_bias=bias, query_offset=offset, valid=valid
        )
    t64 = tables.astype(np.float64)
    sums = np.stack([t64[q, np.arange(nb)[None, :], codes[:, :nb]].sum(axis=1) for q in range(nq)])
    brute = scale.astype(np.float64) * (sums + offset[:, None]) + bias.astype(np.float64)
    for q in range(nq):
        assert valid[rows[q]].all() and len(set(rows[q].tolist())) == k
        np.testing.assert_allclose(scores[q], brute[q, rows[q]], rtol=1e-5, atol=1e-5)
        assert (np.diff(scores[q]) <= 0).all()
        # tie-aware: nothing valid left out scores above the k-th
        left = np.setdiff1d(np.flatnonzero(valid), rows[q])
        assert (brute[q, left] <= scores[q, -1] + 1e-5).all()


def test_table_topk_pads_and_validates() -> None:
    codes = np.arange(6, dtype=np.uint8).reshape(3, 2)
    tables = np.zeros((1, 2, 256), np.float32)
    tables[0, 0, 4] = 1.0
    scores, rows = table_topk(tables, codes, 5, valid=np.array([True, False, True]))
    assert rows.tolist() == [[2, 0, -1, -1, -1]] and np.isnan(scores[0, 2:]).all()
    with pytest.raises(InvalidDtypeError):
        table_topk(np.zeros((1, 2, 255)), codes, 1)
    with pytest.raises(DimensionMismatchError):
        table_topk(np.zeros((1, 3, 256)), codes, 1)
    with pytest.raises(InvalidArgumentError):
        table_topk(np.full((1, 2, 256), np.inf), codes, 1)


# ---------------------------------------------------------------- nibble tables (2-bit planes, base 3)


def nibble_case(layout: str, seed: int, n: int, dim: int, nq: int = 3):
    """Codes, per-level query values and the (n, dim) level of every dimension, decoded independently
    of the kernels' group layout (np.unpackbits / base-3 digits)."""
    rng = np.random.default_rng(seed)
    levels = {"planes": 4, "base3": 3, "bits": 2}[layout]
    level = rng.integers(0, levels, (n, dim))
    level[::40] = level[0]  # repeated rows: ties
    if layout == "bits":
        body = np.packbits(level, axis=1)
    elif layout == "planes":
        body = np.concatenate([np.packbits(level & 1, axis=1), np.packbits(level >> 1, axis=1)], axis=1)
    else:
        groups = (dim + 4) // 5
        digits = np.ones((n, 5 * groups), np.int64)  # padding trits are 0 (digit 1)
        digits[:, :dim] = level
        body = (digits.reshape(n, groups, 5) @ 3 ** np.arange(5)).astype(np.uint8)
    extra = rng.integers(0, 256, (n, 3), dtype=np.uint8)  # trailing bytes must be ignored
    values = rng.standard_normal((nq, dim, levels))
    return np.ascontiguousarray(np.concatenate([body, extra], axis=1)), values, level


@pytest.mark.parametrize("layout", ["planes", "base3", "bits"])
@pytest.mark.parametrize("dim", [3, 8, 37, 384, 1000])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nibble_topk_matches_reference_and_bound(layout: str, dim: int, backend: str) -> None:
    backend_or_skip(backend)
    codes, values, level = nibble_case(layout, dim, 1100, dim)
    n, nq, k = codes.shape[0], values.shape[0], 15
    rng = np.random.default_rng(dim + 5)
    kw = dict(
        layout=layout, row_scale=rng.uniform(0.5, 2.0, n).astype(np.float32),
        row_bias=rng.standard_normal(n).astype(np.float32), query_offset=rng.standard_normal(nq),
        valid=rng.random(n) < 0.9,
    )  # fmt: skip
    with use_backend("numpy"):
        ref = nibble_topk(values, codes, k, **kw)
    with use_backend(backend):
        got = nibble_topk(values, codes, k, **kw)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[0], ref[0])
    # against the exact float64 sum over the decoded levels: within delta / 2 per table
    scale, bias, offset, valid = (kw[key] for key in ("row_scale", "row_bias", "query_offset", "valid"))
    exact = np.stack([values[q, np.arange(dim)[None, :], level].sum(axis=1) for q in range(nq)])
    exact = scale.astype(np.float64) * (exact + offset[:, None]) + bias.astype(np.float64)
    luts, _, delta = nibble_luts(values, layout)
    for q in range(nq):
        rows = got[1][q]
        assert valid[rows].all() and len(set(rows.tolist())) == k
        assert (np.diff(got[0][q]) <= 0).all()
        bound = delta[q] / 2 * luts.shape[1] * scale + 1e-5 * (1 + np.abs(exact[q]))
        assert (np.abs(got[0][q] - exact[q, rows]) <= bound[rows]).all()
        # nothing valid left out beats the last returned row by more than twice the bound
        left = np.setdiff1d(np.flatnonzero(valid), rows)
        assert (exact[q, left] <= exact[q, rows].min() + 2 * bound.max()).all()


@pytest.mark.parametrize("layout", ["planes", "base3", "bits"])
@pytest.mark.parametrize("backend", ["portable", "avx2", "avx512"])
def test_nibble_topk_identical_for_any_thread_count_and_block(layout: str, backend: str) -> None:
    backend_or_skip(backend)
    from quantsearch.kernels import native_backend

    codes, values, _ = nibble_case(layout, 4, 5003, 384, nq=5)
    valid = np.random.default_rng(3).random(codes.shape[0]) < 0.8
    luts, lo, delta = nibble_luts(values, layout)
    args = dict(
        lo=lo,
        delta=delta,
        row_scale=None,
        row_bias=None,
        query_offset=np.zeros(5),
        valid=valid,
        layout=layout,
    )
    one = native_backend.nibble_topk(luts, codes, 9, **args, isa=backend, threads=1)
    for threads, block in ((2, 0), (3, 4096), (1, 1000)):
        other = native_backend.nibble_topk(
            luts, codes, 9, **args, isa=backend, threads=threads, block_bytes=block
        )
        np.testing.assert_array_equal(other[1], one[1])
        np.testing.assert_array_equal(other[0], one[0])
    assert valid[one[1][one[1] >= 0]].all()


@pytest.mark.parametrize("layout", ["planes", "base3", "bits"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nibble_topk_reads_the_scale_from_the_rows(layout: str, backend: str) -> None:
    backend_or_skip(backend)
    codes, values, _ = nibble_case(layout, 9, 700, 100)
    scale = np.random.default_rng(2).uniform(-1.0, 2.0, codes.shape[0]).astype("<f4")
    stored = np.ascontiguousarray(np.concatenate([codes, scale[:, None].view(np.uint8)], axis=1))
    with use_backend(backend):
        from_rows = nibble_topk(values, stored, 20, layout=layout, scale_offset=codes.shape[1])
        given = nibble_topk(values, stored, 20, layout=layout, row_scale=scale)
    np.testing.assert_array_equal(from_rows[1], given[1])
    np.testing.assert_array_equal(from_rows[0], given[0])
    with pytest.raises(InvalidArgumentError, match="scale_offset"):
        nibble_topk(values, stored, 1, layout=layout, scale_offset=stored.shape[1] - 3)


def test_nibble_topk_pads_and_validates() -> None:
    codes, values, _ = nibble_case("planes", 1, 5, 16, nq=1)
    scores, rows = nibble_topk(values, codes, 8, valid=np.array([True, False, True, True, False]))
    assert sorted(rows[0, :3].tolist()) == [0, 2, 3] and (rows[0, 3:] == -1).all()
    assert np.isnan(scores[0, 3:]).all()
    with pytest.raises(InvalidArgumentError, match="layout"):
        nibble_topk(values, codes, 1, layout="base5")
    with pytest.raises(InvalidDtypeError):
        nibble_topk(values[:, :, :3], codes, 1)
    with pytest.raises(DimensionMismatchError):
        nibble_topk(np.zeros((1, 80, 4)), codes, 1)
    with pytest.raises(InvalidArgumentError):
        nibble_topk(np.full((1, 16, 4), np.nan), codes, 1)


@pytest.mark.parametrize("layout", ["planes", "base3", "bits"])
@pytest.mark.parametrize("dim", [1, 3, 8, 37, 384, 1000])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nibble_scan_matches_tables_from_numpy(layout: str, dim: int, backend: str) -> None:
    backend_or_skip(backend)
    codes, _, _ = nibble_case(layout, dim + 11, 900, dim)
    rng = np.random.default_rng(dim)
    nq, nlev = 3, {"planes": 4, "base3": 3, "bits": 2}[layout]
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    queries[1, : dim // 2] = 0.0  # zero contributions: ties between table entries
    levels = rng.standard_normal((dim, nlev))
    levels[::3, 1] = levels[::3, 0]  # equal levels
    scale = rng.uniform(-1.0, 2.0, codes.shape[0]).astype("<f4")
    stored = np.ascontiguousarray(np.concatenate([codes, scale[:, None].view(np.uint8)], axis=1))
    valid = rng.random(codes.shape[0]) < 0.9
    bias = rng.standard_normal(nq).astype(np.float32)
    values = queries.astype(np.float64)[:, :, None] * levels[None, :, :]
    for k in (1, 17, 950):
        with use_backend("numpy"):
            scores, rows = nibble_topk(
                values, stored, k, layout=layout, scale_offset=codes.shape[1], valid=valid
            )
        ref = ((scores + bias[:, None]).astype(np.float32), rows)
        with use_backend(backend):
            got = nibble_scan(
                queries, levels, stored, k, layout=layout, scale_offset=codes.shape[1], score_bias=bias,
                valid=valid,
            )  # fmt: skip
            plain = nibble_scan(queries, levels, stored, k, layout=layout)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])
        with use_backend("numpy"):
            ref_plain = nibble_topk(values, stored, k, layout=layout)
        np.testing.assert_array_equal(plain[1], ref_plain[1])
        np.testing.assert_array_equal(plain[0], ref_plain[0])
    # all-zero queries: every table is flat (delta 0), every score 0 + bias, ties to the smaller row
    with use_backend(backend):
        flat = nibble_scan(
            np.zeros((1, dim), np.float32), levels, stored, 5, layout=layout, score_bias=bias[:1]
        )
    np.testing.assert_array_equal(flat[1][0], np.arange(5))
    np.testing.assert_array_equal(flat[0][0], np.full(5, bias[0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nibble_scan_validates(backend: str) -> None:
    backend_or_skip(backend)
    codes, _, _ = nibble_case("planes", 1, 5, 16, nq=1)
    q, lv = np.ones((1, 16), np.float32), np.ones((16, 4))
    with use_backend(backend):
        with pytest.raises(InvalidArgumentError, match="finite"):
            nibble_scan(np.full((1, 16), np.nan, np.float32), lv, codes, 1)
        with pytest.raises(InvalidArgumentError, match="finite"):
            nibble_scan(q, np.full((16, 4), np.inf), codes, 1)
        with pytest.raises(DimensionMismatchError):
            nibble_scan(q, np.ones((16, 3)), codes, 1)
        with pytest.raises(DimensionMismatchError):
            nibble_scan(np.ones((1, 80), np.float32), np.ones((80, 4)), codes, 1)
        with pytest.raises(InvalidArgumentError, match="layout"):
            nibble_scan(q, lv, codes, 1, layout="base5")
        with pytest.raises(InvalidArgumentError, match="scale_offset"):
            nibble_scan(q, lv, codes, 1, scale_offset=codes.shape[1] - 3)
        with pytest.raises(DimensionMismatchError):
            nibble_scan(q, lv, codes, 1, score_bias=np.zeros(2, np.float32))


# ---------------------------------------------------------------- quantizers


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "spec",
    ["int2", "int2-nofactor", "int2-uniform", "ternary-planes", "ternary", "rabitq", "sign-asym"],
)
@pytest.mark.parametrize("backend", ["numpy", "avx2", "avx512", "portable"])
def test_quantizer_scan_agrees_with_decoded_dot_products(spec: str, backend: str) -> None:
    backend_or_skip(backend)
    rng = np.random.default_rng(7)
    x = unit_rows(rng, 1500, 96)
    queries = x[:6] + 0.1 * unit_rows(rng, 6, 96)
    quantizer = make_quantizer(spec).fit(x[:800])
    codes = quantizer.encode(x)
    exact = queries.astype(np.float64) @ quantizer.decode(codes).astype(np.float64).T
    valid = rng.random(x.shape[0]) < 0.9
    with use_backend(backend):
        scores, rows = quantizer.scan_topk(queries, codes, 10, valid=valid)
    assert rows.shape == (6, 10) and valid[rows].all()
    tol = 0.02  # the scans quantize the query's tables
    for q in range(6):
        np.testing.assert_allclose(scores[q], exact[q, rows[q]], atol=tol)
        best = np.sort(exact[q, valid])[::-1][:10]
        assert exact[q, rows[q]].min() >= best[-1] - 2 * tol
    # same rows as the default decode-and-multiply scan, up to near ties
    base_scores, base_rows = Quantizer.scan_topk(quantizer, queries, codes, 10, valid=valid)
    overlap = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), base_rows.tolist(), strict=True)]
    )
    assert overlap >= 0.8


@pytest.mark.parametrize("spec", ["int2", "ternary-dim", "ternary-planes", "ternary", "rabitq", "sign-asym"])
def test_quantizer_scan_follows_a_refit_and_a_loaded_state(spec: str) -> None:
    # the scan keeps per-quantizer level tables: a refit or set_state must not reuse stale ones
    rng = np.random.default_rng(3)
    x, y = unit_rows(rng, 600, 64), 3.0 * unit_rows(rng, 600, 64) + 0.5
    queries = x[:4]
    quantizer = make_quantizer(spec).fit(x)
    quantizer.scan_topk(queries, quantizer.encode(x), 5)  # fills the cache
    quantizer.fit(y)
    fresh = make_quantizer(spec).fit(y)
    codes = fresh.encode(y)
    np.testing.assert_array_equal(quantizer.encode(y), codes)
    for got, want in zip(
        quantizer.scan_topk(queries, codes, 5), fresh.scan_topk(queries, codes, 5), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    loaded = make_quantizer(spec).fit(x)
    loaded.scan_topk(queries, loaded.encode(x), 5)
    loaded.set_state(fresh.get_state())
    for got, want in zip(
        loaded.scan_topk(queries, codes, 5), fresh.scan_topk(queries, codes, 5), strict=True
    ):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- ggml block formats


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("dim", [32, 70, 384])
@pytest.mark.parametrize("backend", BACKENDS)
def test_blocks_topk_ranks_the_rescoring_scores(fmt: str, dim: int, backend: str) -> None:
    backend_or_skip(backend)
    from quantsearch.kernels import blocks_topk, dot_rows_blocks
    from quantsearch.quantization import BlockQuantizer

    rng = np.random.default_rng(dim)
    x = rng.standard_normal((900, dim)).astype(np.float32)
    x[::50] = x[0]  # repeated rows: equal scores, ties to the smaller row
    quantizer = BlockQuantizer(fmt).fit(x)
    codes = quantizer.encode(x)
    queries = rng.standard_normal((4, dim)).astype(np.float32)
    valid = rng.random(900) < 0.9
    every = np.ascontiguousarray(np.broadcast_to(np.arange(900, dtype=np.int64), (4, 900)))
    with use_backend(backend):
        scores = dot_rows_blocks([codes], np.zeros(1, np.int64), every, queries, format=fmt)
        for k in (1, 25, 900):
            got = quantizer.scan_topk(queries, codes, k, valid=valid)
            # the kernel's own scores, ranked independently (descending, ties to the smaller row)
            key = np.where(valid[None, :], scores.astype(np.float64), -np.inf)
            for q in range(4):
                order = np.lexsort((np.arange(900), -key[q]))[: min(k, int(valid.sum()))]
                np.testing.assert_array_equal(got[1][q, : len(order)], order)
                np.testing.assert_array_equal(got[0][q, : len(order)], scores[q, order])
                assert (got[1][q, len(order) :] == -1).all() and np.isnan(got[0][q, len(order) :]).all()
    # against float64 decode + dot: the same top rows up to float32 rounding
    exact = queries.astype(np.float64) @ quantizer.decode(codes).astype(np.float64).T
    np.testing.assert_allclose(
        got[0][:, :10], np.take_along_axis(exact, got[1][:, :10], axis=1), rtol=1e-4, atol=1e-3
    )
    with pytest.raises(DimensionMismatchError):
        blocks_topk(queries, codes[:, :-1], 3, format=fmt)
    with pytest.raises(InvalidArgumentError):
        blocks_topk(np.full_like(queries, np.nan), codes, 3, format=fmt)
    with pytest.raises(InvalidArgumentError):
        blocks_topk(queries, codes, 3, format="q2_k")
