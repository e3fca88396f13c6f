"""Fused gather + dot rescoring on every backend: against a float64 brute force, against the
quantizers' own ``score`` (the pipeline's reference path), and through the Index."""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch.exceptions import DimensionMismatchError, InvalidArgumentError, InvalidDtypeError
from quantsearch.index.pipeline import TierView, score_candidates
from quantsearch.kernels import (
    available_backends,
    dot_rows,
    native_backend,
    set_num_threads,
    use_backend,
)
from quantsearch.quantization import (
    FloatQuantizer,
    MatryoshkaQuantizer,
    PCAQuantizer,
    Quantizer,
    ScalarQuantizer,
)
from quantsearch.quantization.scalar import pack_nibbles

BACKENDS = ["numpy", "avx512", "avx2", "portable"]
DIMS = [1, 7, 15, 16, 17, 31, 32, 33, 64, 100, 384, 1000]


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param not in available_backends():
        pytest.skip(f"{request.param} is not available on this machine")
    with use_backend(request.param):
        yield request.param


def split(full: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Cut (n, w) into 3 segments (one of a single row) and their start rows."""
    n = full.shape[0]
    a, b = sorted(rng.choice(np.arange(1, n - 1), 2, replace=False))
    parts = [
        np.ascontiguousarray(full[:a]),
        np.ascontiguousarray(full[a : a + 1]),
        np.ascontiguousarray(full[a + 1 :]),
    ]
    return parts, np.array([0, a, a + 1], np.int64)


def candidate_rows(rng: np.random.Generator, nq: int, c: int, n: int) -> np.ndarray:
    rows = rng.integers(0, n, (nq, c))
    rows[rng.random((nq, c)) < 0.15] = -1  # padding
    rows[0, :2] = [0, n - 1]  # first and last row
    return rows


def check_scores(got: np.ndarray, values: np.ndarray, rows: np.ndarray, weights: np.ndarray) -> None:
    """``got`` against the float64 dot of ``values`` (n, dim) rows; error bound relative to sum |terms|."""
    assert got.dtype == np.float32 and got.shape == rows.shape
    present = rows >= 0
    assert np.isnan(got[~present]).all()
    v = values[np.where(present, rows, 0)].astype(np.float64)  # (nq, c, dim)
    w = weights.astype(np.float64)[:, None, :]
    exact = (v * w).sum(axis=2)
    scale = np.abs(v * w).sum(axis=2) + 1e-30
    err = np.abs(got.astype(np.float64) - exact)[present] / scale[present]
    assert err.max(initial=0.0) < 2e-6, err.max()


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "float16", "float32"])
def test_dot_rows_matches_float64(backend, dim: int, dtype: str) -> None:
    rng = np.random.default_rng(dim)
    n = 60
    if dtype in ("int8", "uint8"):
        info = np.iinfo(dtype)
        full = rng.integers(info.min, info.max, (n, dim), endpoint=True).astype(dtype)
    else:
        full = (rng.standard_normal((n, dim)) * 3).astype(dtype)
    arrays, starts = split(full, rng)
    rows = candidate_rows(rng, 5, 9, n)
    weights = rng.standard_normal((5, dim)).astype(np.float32)
    offsets = (0, 128, -3) if dtype in ("int8", "uint8") else (0,)
    for offset in offsets:
        got = dot_rows(arrays, starts, rows, weights, offset=offset)
        values = full.astype(np.float64) + offset
        check_scores(got, values, rows, weights)


@pytest.mark.parametrize("dim", DIMS)
def test_dot_rows_nibbles(backend, dim: int) -> None:
    rng = np.random.default_rng(100 + dim)
    n = 40
    levels = rng.integers(0, 16, (n, dim)).astype(np.uint8)
    arrays, starts = split(pack_nibbles(levels), rng)
    rows = candidate_rows(rng, 4, 11, n)
    weights = rng.standard_normal((4, dim)).astype(np.float32)
    for offset in (0, 5):
        got = dot_rows(arrays, starts, rows, weights, offset=offset, nibbles=True)
        check_scores(got, levels.astype(np.float64) + offset, rows, weights)


def test_float16_conversion_is_exact_for_every_value(backend) -> None:
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(-1, 1)
    rows = np.arange(1 << 16, dtype=np.int64)[None, :]
    got = dot_rows([halves], np.zeros(1, np.int64), rows, np.ones((1, 1), np.float32))[0]
    expected = halves[:, 0].astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    # exact, subnormals and infinities included (-0.0 comes back as 0.0: a sum starts at +0)
    np.testing.assert_array_equal(got[finite], expected[finite])


def test_dot_rows_reads_memory_maps(backend, tmp_path) -> None:
    rng = np.random.default_rng(7)
    full = rng.integers(-128, 128, (500, 96)).astype(np.int8)
    maps = []
    for i, part in enumerate(np.array_split(full, 4)):
        np.save(tmp_path / f"s{i}.npy", part)
        maps.append(np.load(tmp_path / f"s{i}.npy", mmap_mode="r"))
    starts = np.cumsum([0] + [m.shape[0] for m in maps[:-1]])
    rows = candidate_rows(rng, 6, 30, 500)
    weights = rng.standard_normal((6, 96)).astype(np.float32)
    check_scores(dot_rows(maps, starts, rows, weights, offset=128), full + 128.0, rows, weights)


def test_threads_give_identical_scores() -> None:
    if "portable" not in available_backends():
        pytest.skip("the native extension is not built")
    rng = np.random.default_rng(8)
    full = rng.integers(-128, 128, (3000, 512)).astype(np.int8)
    rows = candidate_rows(rng, 300, 100, 3000)  # ~15M multiply-adds: split over threads
    weights = rng.standard_normal((300, 512)).astype(np.float32)
    starts = np.zeros(1, np.int64)
    try:
        set_num_threads(1)
        one = dot_rows([full], starts, rows, weights, offset=128)
        set_num_threads(4)
        four = dot_rows([full], starts, rows, weights, offset=128)
    finally:
        set_num_threads(None)
    np.testing.assert_array_equal(one, four)


def test_dot_rows_bad_inputs() -> None:
    full = np.zeros((10, 8), np.int8)
    w = np.ones((2, 8), np.float32)
    rows = np.zeros((2, 3), np.int64)
    starts = np.zeros(1, np.int64)
    with pytest.raises(InvalidArgumentError, match=r"rows must be in \[0, 10\)"):
        dot_rows([full], starts, rows + 10, w)
    with pytest.raises(InvalidArgumentError, match=r"rows must be in"):
        dot_rows([full], starts, rows - 2, w)
    with pytest.raises(DimensionMismatchError, match=r"segment 0 must be int8\(n, 8\).*\(10, 4\)"):
        dot_rows([full[:, :4].copy()], starts, rows, w)
    with pytest.raises(DimensionMismatchError, match="segment 1"):
        dot_rows([full, full.astype(np.uint8)], np.array([0, 10]), rows, w)
    with pytest.raises(InvalidArgumentError, match="starts must be"):
        dot_rows([full, full], np.array([0, 9]), rows, w)
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        dot_rows([np.zeros((10, 16), np.int8)[:, ::2]], starts, rows, w)
    with pytest.raises(InvalidDtypeError, match="int8, uint8, float16 or float32"):
        dot_rows([full.astype(np.int64)], starts, rows, w)
    with pytest.raises(InvalidDtypeError, match="nibbles"):
        dot_rows([full], starts, rows, w, nibbles=True)
    with pytest.raises(InvalidDtypeError, match="weights"):
        dot_rows([full], starts, rows, w.astype(np.int32))
    with pytest.raises(DimensionMismatchError, match=r"rows must have shape \(2, c\)"):
        dot_rows([full], starts, rows[:1], w)
    with pytest.raises(InvalidDtypeError, match="rows must be integers"):
        dot_rows([full], starts, rows.astype(np.float64), w)
    with pytest.raises(InvalidArgumentError, match="offset"):
        dot_rows([full], starts, rows, w, offset=True)
    with pytest.raises(InvalidArgumentError, match="at least one segment"):
        dot_rows([], starts, rows, w)


def test_extension_rejects_out_of_range_rows() -> None:
    # the extension checks again: a bad call raises instead of reading outside a segment
    if "portable" not in available_backends():
        pytest.skip("the native extension is not built")
    module = native_backend._module()
    full = np.zeros((10, 8), np.int8)
    out = np.empty((1, 1), np.float32)
    w = np.ones((1, 8), np.float32)
    with pytest.raises(ValueError, match="outside"):
        module.rescore([full], np.zeros(1, np.int64), np.array([[10]]), w, 0, 0, 0, 1, out)
    with pytest.raises(ValueError, match="starts"):
        module.rescore([full], np.ones(1, np.int64), np.array([[1]]), w, 0, 0, 0, 1, out)
    with pytest.raises(ValueError, match="bytes"):
        module.rescore(
            [full], np.zeros(1, np.int64), np.array([[1]]), np.ones((1, 9), np.float32), 0, 0, 0, 1, out
        )


# ---------------------------------------------------------------- the pipeline's rescoring stage


def quantizers():
    return [
        ScalarQuantizer("int8"),
        ScalarQuantizer("int8", percentile=99.0),
        ScalarQuantizer("uint8"),
        ScalarQuantizer("int4"),
        FloatQuantizer("float16"),
        FloatQuantizer("float32"),
        MatryoshkaQuantizer(40, ScalarQuantizer("int8", percentile=99.9)),
        MatryoshkaQuantizer(33, ScalarQuantizer("int4")),
        PCAQuantizer(20, ScalarQuantizer("int8", percentile=99.9)),
        PCAQuantizer(65, FloatQuantizer("float16")),
    ]


@pytest.mark.parametrize("quantizer", quantizers(), ids=repr)
def test_fused_rescoring_matches_quantizer_score(backend, quantizer, make_vectors) -> None:
    docs = make_vectors(700, 65, seed=3)
    queries = make_vectors(9, 65, seed=4)
    quantizer.fit(docs)
    codes = quantizer.encode(docs)
    tier = TierView("t", quantizer, tuple(np.array_split(codes, [100, 101, 450])))
    starts = np.array([0, 100, 101, 450], np.int64)
    rows = candidate_rows(np.random.default_rng(5), 9, 60, 700)
    fused = score_candidates(tier, starts, queries, rows)
    # the generic path of the base class: gather the codes, then the quantizer's own score()
    reference = Quantizer.rescore(quantizer, quantizer.prepare_queries(queries), tier.arrays, starts, rows)
    np.testing.assert_array_equal(np.isnan(fused), rows < 0)
    np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-5)


def test_index_search_runs_on_the_native_kernels(make_index, monkeypatch) -> None:
    if "portable" not in available_backends():
        pytest.skip("the native extension is not built")
    index, vectors = make_index(n=400, dim=48, rescore=["int8", "float16"])
    queries = vectors[:6] + 0.01
    with use_backend("numpy"):
        reference = index.search(queries, k=7)
    calls: list[str] = []
    for name in ("hamming_topk", "dot_rows"):
        original = getattr(native_backend, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(native_backend, name, spy)
    with use_backend(available_backends()[0]):
        native = index.search(queries, k=7)
    assert calls == ["hamming_topk", "dot_rows", "dot_rows"]  # one scan, one call per rescoring stage
    np.testing.assert_array_equal(native.ids, reference.ids)
    np.testing.assert_allclose(native.scores, reference.scores, rtol=1e-5, atol=1e-6)
