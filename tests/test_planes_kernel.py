"""planes_topk (float query x bit-plane codes) on every path against independent references.

References: a brute force over unpacked bits in float64 that quantizes the query by the documented
rule (lo = min, delta = (max - lo) / (2^B - 1), round half up) and takes plain dot products, and
the exact float dot product, which the quantized estimate must stay within delta / 2 * popcount(b)
of. Every native path must also give exactly the rows of the numpy reference. Paths: numpy, and
the native AVX-512 / AVX2 (transposed SIMD kernel and scalar row-major kernel) and portable paths.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_helpers import assert_releases_gil
from quantsearch.exceptions import DimensionMismatchError, InvalidArgumentError, InvalidDtypeError
from quantsearch.kernels import available_backends, native_backend, numpy_backend, planes_topk, use_backend
from quantsearch.kernels.dispatch import planes_topk as dispatch_planes_topk

PATHS = [
    ("numpy", None),
    ("avx512", "blocked"),
    ("avx512", "direct"),
    ("avx2", "blocked"),
    ("avx2", "direct"),
]
PATHS += [("portable", "direct")]
PATH_IDS = [b if s is None else f"{b}-{s}" for b, s in PATHS]
DIMS = [8, 12, 63, 64, 65, 100, 384, 1000, 1500]  # 1500: wider than the AVX-512 row kernel


def full_args(nq: int, n: int, planes: int, **kw):
    """The validated keyword arguments of the backends, with the public defaults."""
    coef = kw.get("plane_coef")
    return dict(
        planes=planes,
        dim=kw["dim"],
        plane_coef=2.0 ** np.arange(planes) if coef is None else np.asarray(coef, np.float64),
        row_scale=kw.get("row_scale"),
        row_bias=kw.get("row_bias"),
        query_offset=np.zeros(nq) if kw.get("query_offset") is None else kw["query_offset"],
        valid=kw.get("valid"),
        query_bits=kw.get("query_bits", 8),
    )


def run_path(path, weights, codes, k, *, threads=1, block_bytes=0, planes=1, **kw):
    """Top-k on one code path; skips a native path this CPU cannot run."""
    backend, strategy = path
    kw.setdefault("dim", weights.shape[1])
    args = full_args(weights.shape[0], codes.shape[0], planes, **kw)
    if backend == "numpy":
        return numpy_backend.planes_topk(weights, codes, k, **args)
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available on this machine")
    return native_backend.planes_topk(
        weights, codes, k, **args, isa=backend, threads=threads, strategy=strategy, block_bytes=block_bytes
    )


def effective_weights(weights: np.ndarray, query_bits: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The documented quantization, written out independently: (lo + delta * u, delta) in float64."""
    w = weights.astype(np.float64)
    if query_bits is None:
        return w, np.zeros(w.shape[0])
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    delta = (hi - lo) / (2**query_bits - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(delta > 0, np.clip(np.floor((w - lo) / delta + 0.5), 0, 2**query_bits - 1), 0)
    return lo + delta * u, delta[:, 0]


def plane_bits(codes: np.ndarray, planes: int, dim: int) -> list[np.ndarray]:
    nb = (dim + 7) // 8
    return [
        np.unpackbits(codes[:, p * nb : (p + 1) * nb], axis=1, count=dim).astype(np.float64)
        for p in range(planes)
    ]


def brute_scores(
    weights,
    codes,
    *,
    planes=1,
    plane_coef=None,
    row_scale=None,
    row_bias=None,
    query_offset=None,
    query_bits=8,
):
    """All (nq, n) scores in float64 from unpacked bits."""
    eff, _ = effective_weights(weights, query_bits)
    coef = 2.0 ** np.arange(planes) if plane_coef is None else np.asarray(plane_coef, np.float64)
    ip = sum(c * (eff @ b.T) for c, b in zip(coef, plane_bits(codes, planes, weights.shape[1]), strict=True))
    if query_offset is not None:
        ip = ip + np.asarray(query_offset, np.float64)[:, None]
    if row_scale is not None:
        ip = ip * np.asarray(row_scale, np.float32).astype(np.float64)[None, :]
    if row_bias is not None:
        ip = ip + np.asarray(row_bias, np.float32).astype(np.float64)[None, :]
    return ip


def assert_topk(got, scores: np.ndarray, k: int, valid: np.ndarray | None = None, *, rtol=1e-5) -> None:
    """Tie-tolerant check of a top-k against all brute-force scores: the returned rows are valid and
    distinct, carry their brute-force scores, are sorted, and nothing left out scores higher."""
    got_s, got_r = got
    assert got_s.dtype == np.float32 and got_r.dtype == np.int64 and got_r.shape == (scores.shape[0], k)
    keep = np.ones(scores.shape[1], bool) if valid is None else valid
    m = min(k, int(keep.sum()))
    tol = rtol * (np.abs(scores).max() + 1.0)
    for q in range(scores.shape[0]):
        rows = got_r[q, :m]
        assert (got_r[q, m:] == -1).all() and np.isnan(got_s[q, m:]).all()
        assert (rows >= 0).all() and keep[rows].all() and len(set(rows.tolist())) == m
        np.testing.assert_allclose(got_s[q, :m], scores[q, rows], rtol=0, atol=tol)
        assert (np.diff(got_s[q, :m]) <= 0).all()
        if m:
            left_out = np.setdiff1d(np.flatnonzero(keep), rows)
            assert (scores[q, left_out] <= got_s[q, m - 1] + tol).all()


def assert_same(got, expected) -> None:
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6, atol=1e-6)
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64


def random_case(seed: int, n: int, dim: int, planes: int, extra: int = 0, nq: int = 5):
    rng = np.random.default_rng(seed)
    nb = (dim + 7) // 8
    bits = rng.random((n, planes, dim)) < 0.5
    codes = np.concatenate(
        [np.packbits(bits[:, p], axis=1) for p in range(planes)]
        + [rng.integers(0, 256, (n, extra), dtype=np.uint8)],
        axis=1,
    )
    assert codes.shape == (n, planes * nb + extra)
    weights = rng.standard_normal((nq, dim)).astype(np.float32)
    return np.ascontiguousarray(codes), weights


# ---------------------------------------------------------------- every path, every width


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("dim", DIMS)
def test_topk_matches_references_across_dims(path, dim: int) -> None:
    planes = 1 + DIMS.index(dim) % 4
    n = 300 if dim < 500 else 120
    codes, weights = random_case(dim, n, dim, planes, extra=dim % 5)
    scores = brute_scores(weights, codes, planes=planes)
    for k in (1, 7, n, n + 3):
        got = run_path(path, weights, codes, k, planes=planes)
        assert_topk(got, scores, k)
        assert_same(got, numpy_backend.planes_topk(weights, codes, k, **full_args(5, n, planes, dim=dim)))
        if path[0] != "numpy":  # small blocks: many block boundaries, partial last block
            assert_same(run_path(path, weights, codes, k, planes=planes, block_bytes=300), got)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("query_bits", [1, 2, 3, 4, 5, 8])
def test_estimate_within_quantization_bound_of_exact_dot(path, query_bits: int) -> None:
    # every row scored (k = n): |estimate - <w, b>| <= sum_p |coef_p| * delta / 2 * popcount(b_p)
    dim, planes, n = 100, 3, 200
    codes, weights = random_case(7, n, dim, planes, extra=4)
    coef = np.array([1.0, -0.5, 2.0])
    got_s, got_r = run_path(path, weights, codes, n, planes=planes, plane_coef=coef, query_bits=query_bits)
    bits = plane_bits(codes, planes, dim)
    exact = sum(c * (weights.astype(np.float64) @ b.T) for c, b in zip(coef, bits, strict=True))
    _, delta = effective_weights(weights, query_bits)
    pops = sum(abs(c) * b.sum(axis=1) for c, b in zip(coef, bits, strict=True))
    for q in range(weights.shape[0]):
        error = np.abs(got_s[q] - exact[q, got_r[q]])
        bound = delta[q] / 2 * pops[got_r[q]] + 1e-4
        assert (error <= bound).all(), (error - bound).max()
        # not a vacuous bound: the coarse levels do move the scores
        assert query_bits > 4 or error.max() > 1e-3


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("dim", [12, 65, 384])
def test_exact_mode_matches_float_dot(path, dim: int) -> None:
    codes, weights = random_case(dim + 1, 250, dim, 2, extra=3)
    scores = brute_scores(weights, codes, planes=2, query_bits=None)
    for k in (1, 10, 260):
        got = run_path(path, weights, codes, k, planes=2, query_bits=None)
        assert_topk(got, scores, k, rtol=1e-6)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_row_factors_query_offsets_and_coefficients(path) -> None:
    dim, planes, n = 63, 2, 400
    codes, weights = random_case(11, n, dim, planes, extra=8)
    rng = np.random.default_rng(12)
    kw = dict(
        plane_coef=np.array([0.75, -1.25]),
        row_scale=rng.uniform(-2, 2, n).astype(np.float32),
        row_bias=rng.standard_normal(n).astype(np.float32),
        query_offset=rng.standard_normal(5),
    )
    for query_bits in (8, 3, None):
        scores = brute_scores(weights, codes, planes=planes, query_bits=query_bits, **kw)
        got = run_path(path, weights, codes, 25, planes=planes, query_bits=query_bits, **kw)
        assert_topk(got, scores, 25)
        if query_bits is not None:
            ref = numpy_backend.planes_topk(
                weights, codes, 25, **full_args(5, n, planes, dim=dim, query_bits=query_bits, **kw)
            )
            assert_same(got, ref)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_padding_bits_and_trailing_bytes_are_ignored(path) -> None:
    dim, planes = 12, 3  # 2 bytes per plane, 4 padding bits each
    codes, weights = random_case(13, 150, dim, planes, extra=5)
    dirty = codes.copy()
    dirty[:, 1::2][:, :planes] |= 0x0F  # the low nibble of each plane's second byte is padding
    dirty[:, planes * 2 :] = 0xFF
    for query_bits in (8, None):
        assert_same(
            run_path(path, weights, dirty, 20, planes=planes, query_bits=query_bits),
            run_path(path, weights, codes, 20, planes=planes, query_bits=query_bits),
        )


# ---------------------------------------------------------------- ties, deletions, padding, threads


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_ties_are_broken_by_row_across_blocks_and_threads(path) -> None:
    codes, weights = random_case(14, 3, 64, 1)
    many = np.repeat(codes, 20_000, axis=0)  # spans several blocks and thread shares
    for query_bits in (8, None):
        best = np.argmax(brute_scores(weights[:2], codes, query_bits=query_bits), axis=1)
        for threads in (1, 2, 3):
            s, r = run_path(path, weights[:2], many, 40, threads=threads, query_bits=query_bits)
            for q in range(2):  # all 40 are copies of the best of the 3 codes, in row order
                np.testing.assert_array_equal(r[q], np.arange(best[q] * 20_000, best[q] * 20_000 + 40))
                assert (s[q] == s[q, 0]).all()


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_deleted_rows_and_k_beyond_valid_rows(path) -> None:
    dim, n = 100, 600
    codes, weights = random_case(15, n, dim, 2, extra=1)
    rng = np.random.default_rng(16)
    valid = rng.random(n) < 0.3
    scores = brute_scores(weights, codes, planes=2)
    for k in (5, 150, 700):  # 700 > n > number of valid rows
        got = run_path(path, weights, codes, k, planes=2, valid=valid, threads=2)
        assert_topk(got, scores, k, valid)
    got = run_path(path, weights, codes, 4, planes=2, valid=np.zeros(n, bool))
    assert (got[1] == -1).all() and np.isnan(got[0]).all()


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_empty_inputs(path) -> None:
    s, r = run_path(path, np.ones((2, 16), np.float32), np.zeros((0, 2), np.uint8), 3)
    assert (r == -1).all() and np.isnan(s).all() and r.shape == (2, 3)
    s, r = run_path(path, np.ones((0, 16), np.float32), np.zeros((10, 2), np.uint8), 3)
    assert s.shape == (0, 3) and r.shape == (0, 3)


@pytest.mark.parametrize("path", [p for p in PATHS if p[0] != "numpy"], ids=PATH_IDS[1:])
def test_results_identical_for_any_thread_count(path) -> None:
    rng = np.random.default_rng(17)
    pool, weights = random_case(18, 400, 384, 1, extra=2, nq=30)
    codes = np.ascontiguousarray(pool[rng.integers(0, 400, 60_000)])  # many ties between thread shares
    valid = rng.random(60_000) < 0.9
    one = run_path(path, weights, codes, 25, valid=valid, threads=1)
    assert_same(
        one, numpy_backend.planes_topk(weights, codes, 25, **full_args(30, 60_000, 1, dim=384, valid=valid))
    )
    for threads in range(2, 9):
        assert_same(run_path(path, weights, codes, 25, valid=valid, threads=threads), one)


def test_constant_query_and_one_bit_levels() -> None:
    # delta = 0: every weight is lo, the estimate is exact: lo * popcount
    codes, _ = random_case(19, 50, 20, 1)
    weights = np.full((1, 20), 0.5, np.float32)
    for backend in available_backends():
        with use_backend(backend):
            s, r = planes_topk(weights, codes, 50)
        pops = np.unpackbits(codes, axis=1, count=20).sum(axis=1)
        np.testing.assert_allclose(s[0], 0.5 * pops[r[0]])


# ---------------------------------------------------------------- the public entry point


@pytest.mark.parametrize("backend", ["numpy", "avx512", "avx2", "portable"])
def test_dispatch_runs_the_selected_backend(backend: str, monkeypatch) -> None:
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available on this machine")
    calls: list[str] = []
    native = native_backend.planes_topk

    def spy(*args, **kwargs):
        calls.append(kwargs["isa"])
        return native(*args, **kwargs)

    monkeypatch.setattr(native_backend, "planes_topk", spy)
    codes, weights = random_case(20, 500, 200, 2, extra=3)
    with use_backend(backend):
        got = planes_topk(weights, codes, 12, planes=2, query_bits=6)
    assert_topk(got, brute_scores(weights, codes, planes=2, query_bits=6), 12)
    assert calls == ([] if backend == "numpy" else [backend])


def test_bad_arguments_raise_our_errors() -> None:
    codes = np.zeros((10, 8), np.uint8)
    w = np.zeros((2, 64), np.float32)
    with pytest.raises(InvalidDtypeError, match="codes.*uint8"):
        planes_topk(w, codes.astype(np.int8), 1)
    with pytest.raises(InvalidDtypeError, match="weights"):
        planes_topk(w.astype(complex), codes, 1)
    with pytest.raises(InvalidDtypeError, match="weights"):
        planes_topk(w[0], codes, 1)
    with pytest.raises(InvalidArgumentError, match="finite"):
        planes_topk(np.full((1, 64), np.nan, np.float32), codes, 1)
    with pytest.raises(DimensionMismatchError, match="need 16"):
        planes_topk(w, codes, 1, planes=2)
    with pytest.raises(DimensionMismatchError, match="dim is 60"):
        planes_topk(w, codes, 1, dim=60)
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        planes_topk(w[:, :32], np.zeros((10, 16), np.uint8)[:, ::2], 1)
    for k in (0, -1, 1.5, True, None):
        with pytest.raises(InvalidArgumentError, match="k must be"):
            planes_topk(w, codes, k)  # type: ignore[arg-type]
    for planes in (0, 9, 1.0, True):
        with pytest.raises(InvalidArgumentError, match="planes"):
            planes_topk(w, codes, 1, planes=planes)  # type: ignore[arg-type]
    for bits in (0, 9, 2.0, False):
        with pytest.raises(InvalidArgumentError, match="query_bits"):
            planes_topk(w, codes, 1, query_bits=bits)  # type: ignore[arg-type]
    with pytest.raises(DimensionMismatchError, match="plane_coef"):
        planes_topk(w, codes, 1, plane_coef=[1.0, 2.0])
    with pytest.raises(InvalidArgumentError, match="plane_coef must be finite"):
        planes_topk(w, codes, 1, plane_coef=[np.inf])
    with pytest.raises(DimensionMismatchError, match="row_scale"):
        planes_topk(w, codes, 1, row_scale=np.ones(9))
    with pytest.raises(InvalidDtypeError, match="row_bias"):
        planes_topk(w, codes, 1, row_bias=np.array(["a"] * 10))
    with pytest.raises(DimensionMismatchError, match="query_offset"):
        planes_topk(w, codes, 1, query_offset=np.zeros(3))
    with pytest.raises(InvalidDtypeError, match="valid.*bool"):
        planes_topk(w, codes, 1, valid=np.ones(10, np.uint8))
    with pytest.raises(DimensionMismatchError, match="valid must have shape"):
        planes_topk(w, codes, 1, valid=np.ones(9, bool))
    assert dispatch_planes_topk is planes_topk


def test_extension_rejects_bad_buffers_without_crashing() -> None:
    module = native_backend._module()
    codes = np.zeros((10, 8), np.uint8)
    w = np.zeros((1, 64), np.float32)
    one, zero = np.ones(1), np.zeros(1)
    planes_u8 = np.zeros((1, 2, 8), np.uint8)
    s, r = np.empty((1, 3), np.float32), np.empty((1, 3), np.int64)
    args = [codes, None, 3, 1, 64, w, 2, planes_u8, zero, one, one, None, None, zero, 0, 0, 1, 0, False, s, r]

    def call(**changes):
        a = list(args)
        for i, v in changes.items():
            a[int(i[1:])] = v
        module.planes_topk(*a)

    call()  # the valid call
    for bad in (
        {"a0": codes[:, ::2]},  # not contiguous
        {"a0": np.zeros((10, 7), np.uint8)},  # rows too short for the plane
        {"a1": np.ones(9, bool)},  # valid too short
        {"a2": 0},  # k
        {"a2": 4},  # outputs do not match k
        {"a3": 2},  # two planes need 16 bytes
        {"a3": 9},  # too many planes
        {"a4": 63},  # weights do not match dim
        {"a6": 3},  # query planes do not match the bits
        {"a6": 0},  # exact mode with query planes given
        {"a6": 9},  # too many bits
        {"a7": np.zeros((1, 2, 7), np.uint8)},
        {"a10": np.ones(2)},  # plane_coef length
        {"a11": np.ones(9, np.float32)},  # row_scale length
        {"a13": np.zeros(1, np.float32)},  # query_offset dtype
        {"a14": 7},  # unknown isa
        {"a15": 9},  # unknown strategy
        {"a16": 0},  # threads
        {"a18": True},  # the AND term needs two planes
        {"a19": np.empty((1, 3), np.float64)},  # out_scores dtype
        {"a20": np.empty((3, 1), np.int64)},  # out_rows shape
    ):
        with pytest.raises((ValueError, TypeError)):
            call(**bad)


def test_scan_releases_the_gil() -> None:
    # another Python thread must run during the middle half of a long scan (kernel_helpers)
    if "portable" not in available_backends():
        pytest.skip("the native extension is not built")
    rng = np.random.default_rng(21)
    codes = rng.integers(0, 256, (200_000, 48), dtype=np.uint8)
    weights = rng.standard_normal((4, 384)).astype(np.float32)
    assert_releases_gil(lambda: run_path(("portable", "direct"), weights, codes, 10))  # the slowest path
