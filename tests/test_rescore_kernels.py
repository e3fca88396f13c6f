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
    # segments checked once are not checked again, unless their starts (or the arrays) change
    two = [full, full]
    dot_rows(two, np.array([0, 10]), rows, w)
    with pytest.raises(InvalidArgumentError, match="starts must be"):
        dot_rows(two, np.array([0, 9]), rows, w)
    with pytest.raises(InvalidArgumentError, match=r"rows must be in \[0, 20\)"):
        dot_rows(two, np.array([0, 10]), rows + 20, w)
    with pytest.raises(DimensionMismatchError, match="segment 1"):
        dot_rows([full, full[:, :4].copy()], np.array([0, 10]), rows, w)


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


# ---------------------------------------------------------------- read-ahead of mapped tiers


def test_prefetch_rows_hints_only_mapped_segments_and_keeps_scores(tmp_path) -> None:
    from quantsearch.kernels import dot_rows, prefetch_rows
    from quantsearch.kernels.prefetch import is_memory_mapped

    rng = np.random.default_rng(5)
    first = rng.integers(-128, 128, (3000, 96), dtype=np.int8)
    np.save(tmp_path / "a.npy", first)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    in_ram = rng.integers(-128, 128, (500, 96), dtype=np.int8)
    starts = np.array([0, 3000], np.int64)
    rows = rng.integers(0, 3500, (4, 30))
    rows[0, :5] = -1  # padding is skipped
    weights = rng.standard_normal((4, 96)).astype(np.float32)
    assert is_memory_mapped(mapped) and is_memory_mapped(mapped[10:20]) and not is_memory_mapped(in_ram)
    calls = prefetch_rows([mapped, in_ram], starts, rows)
    in_first = np.unique(rows[(rows >= 0) & (rows < 3000)])
    assert 1 <= calls <= in_first.size  # touching rows share a call
    assert prefetch_rows([in_ram], np.zeros(1, np.int64), np.array([[1, 2]])) == 0
    plain = dot_rows([mapped, in_ram], starts, rows, weights)
    hinted = dot_rows([mapped, in_ram], starts, rows, weights, prefetch=True)
    np.testing.assert_array_equal(hinted, plain)
    # against the numpy decode + dot
    both = np.concatenate([first, in_ram]).astype(np.float64)
    safe = np.where(rows >= 0, rows, 0)
    expected = np.einsum("qcd,qd->qc", both[safe], weights.astype(np.float64))
    np.testing.assert_allclose(
        np.where(rows >= 0, hinted, 0), np.where(rows >= 0, expected, 0), rtol=1e-4, atol=1e-3
    )
    assert np.isnan(hinted[0, :5]).all()


def _pages_of(array: np.ndarray, local_rows) -> set[int]:
    """Reference: the page-aligned addresses a set of rows of a mapped array touches."""
    import mmap

    page, row_bytes, base = mmap.PAGESIZE, array.shape[1] * array.itemsize, array.ctypes.data
    out: set[int] = set()
    for r in local_rows:
        addr = base + int(r) * row_bytes
        out.update(range(addr - addr % page, addr + row_bytes, page))
    return out


@pytest.mark.skipif(not available_backends()[1:], reason="needs the native extension")
def test_read_ahead_hints_each_page_once_until_a_major_fault(tmp_path, monkeypatch) -> None:
    from quantsearch.kernels import prefetch

    rng = np.random.default_rng(6)
    # rows of 1000 bytes behind the 128-byte .npy header: some rows straddle two pages
    np.save(tmp_path / "a.npy", rng.integers(-128, 128, (2000, 1000), dtype=np.int8))
    np.save(tmp_path / "b.npy", rng.integers(-128, 128, (900, 1000), dtype=np.int8))
    a = np.load(tmp_path / "a.npy", mmap_mode="r")
    b = np.load(tmp_path / "b.npy", mmap_mode="r")
    in_ram = rng.integers(-128, 128, (100, 1000), dtype=np.int8)
    starts = np.array([0, 2000, 2900], np.int64)
    rows = rng.integers(0, 3000, (5, 40))
    rows[1, :7] = -1
    ahead = prefetch.ReadAhead([a, b, in_ram])
    assert ahead.active
    ahead.sample = 0  # count every hint (the files were just written: their pages are cached)
    flat = rows[rows >= 0]
    expected = len(_pages_of(a, flat[flat < 2000])) + len(
        _pages_of(b, flat[(flat >= 2000) & (flat < 2900)] - 2000)
    )
    assert ahead.hint(starts, rows) == expected
    assert ahead.hint(starts, rows) == 0  # remembered
    more = rng.integers(0, 2000, 30)
    new = _pages_of(a, more) - _pages_of(a, flat[flat < 2000])
    assert ahead.hint(starts, more) == len(new)
    # a major fault inside reading() forgets every page; none: nothing is forgotten
    faults = iter([10, 10, 10, 11])
    monkeypatch.setattr(prefetch, "_major_faults", lambda: next(faults))
    with ahead.reading(starts, rows) as hinted:
        assert hinted == 0
    with ahead.reading(starts, rows) as hinted:
        assert hinted == 0
    assert ahead.hint(starts, rows) == expected
    # a segment added later: the old segments' pages stay remembered
    grown = ahead.extended([a, b, in_ram, b])
    grown.sample = 0
    assert ahead.extended([a, b, in_ram]) is ahead
    starts4 = np.array([0, 2000, 2900, 3000], np.int64)
    assert grown.hint(starts4, rows) == 0
    assert grown.hint(starts4, np.array([3000, 3001])) == len(_pages_of(b, [0, 1]))
    assert not prefetch.ReadAhead([in_ram]).active


def test_read_ahead_hints_nothing_for_a_cached_tier_and_everything_for_an_evicted_one(tmp_path) -> None:
    import os

    from quantsearch.kernels import prefetch

    rng = np.random.default_rng(8)
    np.save(tmp_path / "a.npy", rng.integers(-128, 128, (4000, 2048), dtype=np.int8))
    path = tmp_path / "a.npy"
    a = np.load(path, mmap_mode="r")
    rows = rng.choice(4000, (2, 60), replace=False)
    expected = len(_pages_of(a, rows.ravel()))
    with open(path, "rb") as f:  # cached: every sampled page is resident, nothing is hinted
        f.read()
    warm = prefetch.ReadAhead([a])
    assert warm.hint(np.zeros(1, np.int64), rows) == 0
    warm.sample = 0
    assert warm.hint(np.zeros(1, np.int64), rows) == 0  # ...but the pages are remembered
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    cold = prefetch.ReadAhead([a])
    hinted = cold.hint(np.zeros(1, np.int64), rows)
    # the eviction is advice too; where it took, every page is hinted (16 sampled: one missing is enough)
    assert hinted in (0, expected)
    if hinted == 0:
        pytest.skip("the OS kept the file cached")


@pytest.mark.skipif(not available_backends()[1:], reason="needs the native extension")
def test_willneed_rows_refuses_bad_arguments(tmp_path) -> None:
    from quantsearch.kernels.backend import native_module

    module = native_module()
    np.save(tmp_path / "a.npy", np.zeros((100, 4096), np.int8))
    a = np.load(tmp_path / "a.npy", mmap_mode="r")
    bases = np.array([a.ctypes.data], np.uint64)
    nrows, starts, rows = np.array([100], np.int64), np.zeros(1, np.int64), np.arange(5, dtype=np.int64)
    with pytest.raises(ValueError, match="bitmap"):
        module.willneed_rows(bases, nrows, starts, 4096, rows, [np.zeros(2, np.uint8)])
    with pytest.raises(ValueError, match="same length"):
        module.willneed_rows(bases, np.array([100, 1], np.int64), starts, 4096, rows, None)
    with pytest.raises(ValueError, match="row_bytes"):
        module.willneed_rows(bases, nrows, starts, 0, rows, None)
    with pytest.raises(ValueError, match="int64"):
        module.willneed_rows(bases, nrows, starts, 4096, rows.astype(np.int32), None)
    # rows past the segment and padding are skipped, not read
    calls, pages = module.willneed_rows(
        bases, nrows, starts, 4096, np.array([-1, 100, 10**9], np.int64), None
    )
    assert (calls, pages) == (0, 0)


def test_search_hints_the_mapped_tier_and_keeps_results(tmp_path) -> None:
    from quantsearch import Index

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    index = Index.create(tmp_path / "idx", 64, rescore=("int8",))
    index.calibrate(x)
    index.add(x[:2000])
    ahead = index._state.view.rescore["int8"].readahead
    assert ahead is not None and ahead.active
    index.add(x[2000:])  # a second segment: the read-ahead carries over, extended
    view = index._state.view
    tier = view.rescore["int8"]
    assert tier.readahead is not None and tier.readahead is not ahead and tier.readahead.active
    q = x[:5] + 0.01
    first = index.search(q, 10, with_payload=False)
    assert (first.ids[:, 0] == np.arange(5)).all()
    # the search hinted every candidate page of the int8 tier: all 3000 rows' pages now hint nothing
    # new only if they were all candidates; the first rows' pages were
    assert tier.readahead.hint(view.starts, np.arange(5)) == 0
    second = index.search(q, 10, with_payload=False)
    np.testing.assert_array_equal(first.ids, second.ids)
    np.testing.assert_array_equal(first.scores, second.scores)
    # the pipeline's scores with read-ahead equal those without
    plain = TierView(tier.name, tier.quantizer, tier.arrays)
    rows = rng.integers(0, 3000, (5, 50))
    np.testing.assert_array_equal(
        score_candidates(tier, view.starts, q, rows), score_candidates(plain, view.starts, q, rows)
    )
    index.close()


# ---------------------------------------------------------------- ggml block formats


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("dim", [32, 70, 384])
@pytest.mark.parametrize("backend", ["numpy", "portable", "avx2", "avx512"])
def test_block_rescore_matches_decode_and_dot(tmp_path, fmt: str, dim: int, backend: str) -> None:
    from quantsearch.kernels import available_backends, use_backend
    from quantsearch.quantization import BlockQuantizer

    if backend not in available_backends():
        pytest.skip(f"{backend} is not available on this machine")
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((700, dim)).astype(np.float32)
    quantizer = BlockQuantizer(fmt).fit(x)
    codes = quantizer.encode(x)
    np.save(tmp_path / "seg0.npy", codes[:400])
    arrays = [np.load(tmp_path / "seg0.npy", mmap_mode="r"), np.ascontiguousarray(codes[400:])]
    starts = np.array([0, 400], np.int64)
    queries = rng.standard_normal((5, dim)).astype(np.float32)
    rows = rng.integers(0, 700, (5, 40))
    rows[1, -7:] = -1
    prepared = quantizer.prepare_queries(queries)
    with use_backend(backend):
        got = quantizer.rescore(prepared, arrays, starts, rows)
    assert got.dtype == np.float32 and got.shape == (5, 40)
    decoded = quantizer.decode(codes).astype(np.float64)  # the numpy decode, independent of the kernel
    expected = np.einsum("qcd,qd->qc", decoded[np.where(rows >= 0, rows, 0)], prepared.astype(np.float64))
    assert np.isnan(got[rows < 0]).all()
    np.testing.assert_allclose(got[rows >= 0], expected[rows >= 0], rtol=1e-4, atol=1e-3)
    # the pipeline's score path agrees too
    scored = quantizer.score(prepared, codes[np.where(rows >= 0, rows, 0)])
    np.testing.assert_allclose(got[rows >= 0], scored[rows >= 0], rtol=1e-4, atol=1e-3)


def test_block_rescore_rejects_bad_input() -> None:
    from quantsearch.exceptions import DimensionMismatchError, InvalidArgumentError
    from quantsearch.kernels import dot_rows_blocks

    codes = np.zeros((10, 34), np.uint8)
    first_rows = np.zeros((1, 2), np.int64)

    def call(array=codes, rows=first_rows, dim=32, fmt="q8_0"):
        weights = np.ones((1, dim), np.float32)
        return dot_rows_blocks([array], np.zeros(1, np.int64), rows, weights, format=fmt)

    assert call().shape == (1, 2)  # the valid call
    for error, bad in (
        (InvalidArgumentError, dict(fmt="q5_k")),
        (DimensionMismatchError, dict(array=np.ascontiguousarray(codes[:, :33]))),  # not whole blocks
        (DimensionMismatchError, dict(dim=33)),  # weights wider than the blocks
        (InvalidArgumentError, dict(rows=np.full((1, 2), 10))),  # row out of range
    ):
        with pytest.raises(error):
            call(**bad)
