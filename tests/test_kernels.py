"""The Hamming top-k kernels on every path against a brute force over unpacked bits.

Paths: the numpy reference, and the native extension's AVX-512, AVX2 and portable instruction
sets, each with its row-major ("direct") and transposed ("blocked") scan. Ties go to the smaller
row; padding is row -1 / PAD_DISTANCE.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_helpers import assert_releases_gil
from quantsearch.exceptions import DimensionMismatchError, InvalidArgumentError, InvalidDtypeError
from quantsearch.kernels import (
    PAD_DISTANCE,
    available_backends,
    gather_rows,
    get_backend,
    get_num_threads,
    hamming_distances,
    hamming_topk,
    native_backend,
    numpy_backend,
    set_num_threads,
    use_backend,
)
from quantsearch.quantization import BinaryQuantizer

ISAS = ("avx512", "avx2", "portable")
# (backend, strategy): every code path that computes a top-k
PATHS = [("numpy", None)] + [(isa, strategy) for isa in ISAS for strategy in ("direct", "blocked")]
PATH_IDS = [b if s is None else f"{b}-{s}" for b, s in PATHS]


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


def run_path(path, queries, codes, k, valid=None, *, threads=1, block_bytes=0):
    """Top-k on one code path; skips a native path this CPU cannot run."""
    backend, strategy = path
    if backend == "numpy":
        return numpy_backend.hamming_topk(queries, codes, k, valid=valid)
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available on this machine")
    return native_backend.hamming_topk(
        queries,
        codes,
        k,
        valid=valid,
        isa=backend,
        threads=threads,
        strategy=strategy,
        block_bytes=block_bytes,
    )


def assert_same(got, expected) -> None:
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[0].dtype == np.int32 and got[1].dtype == np.int64


def test_native_extension_is_built() -> None:
    # CI builds with gcc: a silent fall back to numpy would hide a broken build
    assert "portable" in available_backends(), "the C extension quantsearch.kernels._native was not built"
    assert get_backend() in available_backends()


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("dim", [8, 12, 63, 64, 65, 100, 128, 200, 384, 500, 768, 1000, 1024, 4100, 17000])
def test_topk_matches_brute_force_across_dims(path, dim: int) -> None:
    rng = np.random.default_rng(dim)
    n = 300 if dim < 4000 else 60
    codes = random_codes(rng, n, dim)
    queries = random_codes(rng, 7, dim)
    for k in (1, 5, 37, n - 1, n, n + 3):
        expected = brute_force(queries, codes, dim, k)
        assert_same(run_path(path, queries, codes, k), expected)
        # small blocks: many block boundaries, partial last block
        assert_same(run_path(path, queries, codes, k, block_bytes=200), expected)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_ties_are_broken_by_row_across_blocks_and_threads(path) -> None:
    # many identical codes: every distance ties, so order must be exactly by row index
    rng = np.random.default_rng(0)
    base = random_codes(rng, 3, 64)
    codes = np.repeat(base, 20_000, axis=0)  # spans several scan blocks and thread ranges
    expected = brute_force(base, codes, 64, 50)
    for threads in (1, 2, 3):
        got = run_path(path, base, codes, 50, threads=threads)
        assert_same(got, expected)
    assert (got[0] == 0).all()


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_k_larger_than_n_pads(path) -> None:
    rng = np.random.default_rng(1)
    codes = random_codes(rng, 5, 40)
    d, r = run_path(path, codes[:2], codes, 8)
    assert r.shape == (2, 8)
    assert (r[:, 5:] == -1).all() and (d[:, 5:] == PAD_DISTANCE).all()
    assert_same((d, r), brute_force(codes[:2], codes, 40, 8))


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_valid_mask_excludes_rows(path) -> None:
    rng = np.random.default_rng(2)
    codes = random_codes(rng, 2000, 96)
    queries = np.concatenate([codes[:4], random_codes(rng, 5, 96)])
    valid = rng.random(2000) < 0.6
    valid[:2] = False  # the queries' own rows are deleted
    for k in (10, 150, 1500):
        d, r = run_path(path, queries, codes, k, valid, threads=2)
        assert_same((d, r), brute_force(queries, codes, 96, k, valid))
        assert not np.isin(r[r >= 0], np.flatnonzero(~valid)).any()


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_all_rows_deleted_gives_padding(path) -> None:
    codes = random_codes(np.random.default_rng(3), 50, 128)
    d, r = run_path(path, codes[:3], codes, 4, np.zeros(50, bool))
    assert (r == -1).all() and (d == PAD_DISTANCE).all()


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_empty_inputs(path) -> None:
    d, r = run_path(path, np.zeros((2, 4), np.uint8), np.zeros((0, 4), np.uint8), 3)
    assert (r == -1).all() and (d == PAD_DISTANCE).all() and r.shape == (2, 3)
    d, r = run_path(path, np.zeros((0, 4), np.uint8), np.zeros((10, 4), np.uint8), 3)
    assert d.shape == (0, 3) and r.shape == (0, 3)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("strategy", ["direct", "blocked"])
def test_results_identical_for_any_thread_count(isa: str, strategy: str) -> None:
    rng = np.random.default_rng(4)
    pool = random_codes(rng, 500, 256)  # a small pool: many ties between thread ranges
    codes = pool[rng.integers(0, 500, 50_000)]
    queries = random_codes(rng, 40, 256)
    valid = rng.random(50_000) < 0.9
    one = run_path((isa, strategy), queries, codes, 25, valid, threads=1)
    assert_same(one, numpy_backend.hamming_topk(queries, codes, 25, valid=valid))
    for threads in (2, 3, 7, 64):
        assert_same(run_path((isa, strategy), queries, codes, 25, valid, threads=threads), one)


@settings(max_examples=30, deadline=None)
@given(
    dim=st.integers(8, 1100),
    n=st.integers(1, 150),
    nq=st.integers(1, 11),
    k=st.integers(1, 170),
    path=st.sampled_from(PATHS),
    threads=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_property(dim: int, n: int, nq: int, k: int, path, threads: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few distinct codes to force ties
    pool = random_codes(rng, max(1, n // 4), dim)
    codes = pool[rng.integers(0, pool.shape[0], n)]
    queries = random_codes(rng, nq, dim)
    valid = rng.random(n) < 0.8 if seed % 2 else None
    got = run_path(path, queries, codes, k, valid, threads=threads, block_bytes=int(seed % 3) * 100)
    assert_same(got, brute_force(queries, codes, dim, k, valid))


# ---------------------------------------------------------------- the public entry point


@pytest.mark.parametrize("backend", ["numpy", *ISAS])
def test_dispatch_runs_the_selected_backend(backend: str, monkeypatch) -> None:
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available on this machine")
    calls: list[str] = []
    native = native_backend.hamming_topk

    def spy(*args, **kwargs):
        calls.append(kwargs["isa"])
        return native(*args, **kwargs)

    monkeypatch.setattr(native_backend, "hamming_topk", spy)
    rng = np.random.default_rng(5)
    codes = random_codes(rng, 500, 200)
    queries = random_codes(rng, 9, 200)
    with use_backend(backend) as active:
        assert active == backend == get_backend()
        got = hamming_topk(queries, codes, 12)
    assert_same(got, brute_force(queries, codes, 200, 12))
    assert calls == ([] if backend == "numpy" else [backend])


def test_environment_selects_backend_and_threads(monkeypatch) -> None:
    monkeypatch.setenv("QUANTSEARCH_KERNEL", "portable")
    monkeypatch.setenv("QUANTSEARCH_NUM_THREADS", "3")
    assert get_backend() == "portable"
    assert get_num_threads() == 3
    with use_backend("numpy"):  # the Python-level switch wins over the environment
        assert get_backend() == "numpy"
    assert get_backend() == "portable"
    monkeypatch.setenv("QUANTSEARCH_KERNEL", "numpy")  # a parsed value is remembered, a change seen
    assert get_backend() == "numpy"
    monkeypatch.setenv("QUANTSEARCH_KERNEL", "sse9")
    with pytest.raises(InvalidArgumentError, match="QUANTSEARCH_KERNEL"):
        get_backend()
    with pytest.raises(InvalidArgumentError, match="QUANTSEARCH_KERNEL"):
        get_backend()  # every time, not only the first
    monkeypatch.setenv("QUANTSEARCH_NUM_THREADS", "2")
    assert get_num_threads() == 2
    monkeypatch.setenv("QUANTSEARCH_NUM_THREADS", "many")
    with pytest.raises(InvalidArgumentError, match="QUANTSEARCH_NUM_THREADS"):
        get_num_threads()
    monkeypatch.delenv("QUANTSEARCH_KERNEL")
    monkeypatch.delenv("QUANTSEARCH_NUM_THREADS")
    assert get_backend() == available_backends()[0]
    assert get_num_threads() >= 1


def test_set_num_threads_validates_and_resets() -> None:
    try:
        set_num_threads(2)
        assert get_num_threads() == 2
        for bad in (0, -1, 65, 1.5, True, "2"):
            with pytest.raises(InvalidArgumentError, match="num_threads"):
                set_num_threads(bad)  # type: ignore[arg-type]
    finally:
        set_num_threads(None)
    with pytest.raises(InvalidArgumentError, match="backend"):
        use_backend("gpu").__enter__()


def test_bad_inputs_raise_our_errors() -> None:
    codes = np.zeros((10, 8), np.uint8)
    with pytest.raises(InvalidDtypeError, match="codes.*uint8.*float32"):
        hamming_topk(codes[:1], codes.astype(np.float32), 1)
    with pytest.raises(InvalidDtypeError, match="queries.*uint8.*int64"):
        hamming_topk(np.zeros((1, 8), np.int64), codes, 1)
    with pytest.raises(DimensionMismatchError, match=r"codes must be 2-D.*\(80,\)"):
        hamming_topk(codes[:1], codes.ravel(), 1)
    with pytest.raises(DimensionMismatchError, match="queries have 4 bytes.*codes have 8"):
        hamming_topk(np.zeros((1, 4), np.uint8), codes, 1)
    with pytest.raises(DimensionMismatchError, match="at least one byte"):
        hamming_topk(np.zeros((1, 0), np.uint8), np.zeros((3, 0), np.uint8), 1)
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        hamming_topk(codes[:1, :4], codes[:, :4], 1)
    for k in (0, -3, 2.0, True, None):
        with pytest.raises(InvalidArgumentError, match="k must be"):
            hamming_topk(codes[:1], codes, k)  # type: ignore[arg-type]
    with pytest.raises(InvalidDtypeError, match="valid.*bool"):
        hamming_topk(codes[:1], codes, 1, valid=np.ones(10, np.uint8))
    with pytest.raises(DimensionMismatchError, match=r"valid must have shape \(10,\)"):
        hamming_topk(codes[:1], codes, 1, valid=np.ones(9, bool))
    # non-contiguous queries are copied, not rejected
    wide = np.zeros((2, 16), np.uint8)
    d, r = hamming_topk(wide[:, ::2], codes, 2)
    assert_same((d, r), brute_force(wide[:, ::2].copy(), codes, 64, 2))


def test_extension_rejects_bad_buffers_without_crashing() -> None:
    module = native_backend._module()
    codes = np.zeros((10, 8), np.uint8)
    d, r = np.empty((1, 3), np.int32), np.empty((1, 3), np.int64)
    args = [codes[:1], codes, None, 3, 0, 0, 1, 0, d, r]

    def call(**changes):
        a = list(args)
        for i, v in changes.items():
            a[int(i[1:])] = v
        module.hamming_topk(*a)

    call()  # the valid call
    for bad in (
        {"a0": codes[:1].astype(np.int8)},  # wrong format
        {"a1": codes[:, ::2]},  # not contiguous
        {"a1": np.zeros((10, 9), np.uint8)},  # width mismatch
        {"a2": np.ones(9, bool)},  # valid too short
        {"a3": 0},  # k
        {"a3": 4},  # outputs do not match k
        {"a4": 7},  # unknown isa
        {"a5": 9},  # unknown strategy
        {"a6": 0},  # threads
        {"a8": np.empty((1, 3), np.int64)},  # out_dist dtype
        {"a9": np.empty((3, 1), np.int64)},  # out_rows shape
    ):
        with pytest.raises((ValueError, TypeError)):
            call(**bad)
    readonly = np.empty((1, 3), np.int32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        call(a8=readonly)


def test_scan_releases_the_gil() -> None:
    # another Python thread must run during the middle half of a long scan (kernel_helpers)
    if "portable" not in available_backends():
        pytest.skip("the native extension is not built")
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 256, (400_000, 128), dtype=np.uint8)  # ~0.4 s on the portable path here
    queries = rng.integers(0, 256, (48, 128), dtype=np.uint8)
    assert_releases_gil(  # the slowest path
        lambda: native_backend.hamming_topk(queries, codes, 10, isa="portable", threads=1)
    )


def test_hamming_distances_exact_values() -> None:
    queries = np.array([[0b1111_0000, 0b0000_0001]], np.uint8)
    codes = np.array([[0b1111_0000, 0b0000_0001], [0b0000_1111, 0b0000_0000], [0, 0]], np.uint8)
    np.testing.assert_array_equal(hamming_distances(queries, codes), [[0, 9, 5]])


def test_gather_rows_across_segments() -> None:
    rng = np.random.default_rng(3)
    full = rng.integers(-128, 127, (100, 6), dtype=np.int8)
    arrays = [full[:30], full[30:31], full[31:]]
    starts = np.array([0, 30, 31])
    rows = np.array([99, 0, 30, 30, 5, 31, 64], np.int64)
    np.testing.assert_array_equal(gather_rows(arrays, starts, rows), full[rows])
