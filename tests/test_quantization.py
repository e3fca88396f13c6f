"""Quantizers: exact codes on hand-made inputs, saturation, round-trip bounds, scoring, state."""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch import (
    BinaryQuantizer,
    FloatQuantizer,
    MatryoshkaQuantizer,
    Precision,
    ScalarQuantizer,
    make_quantizer,
    parse_precision,
)
from quantsearch.exceptions import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidArgumentError,
    InvalidDtypeError,
    NonFiniteError,
    NotFittedError,
)
from quantsearch.quantization import quantizer_from_config
from quantsearch.quantization.scalar import pack_nibbles, unpack_nibbles


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("int8", Precision.INT8), ("INT8", Precision.INT8), ("i8", Precision.INT8), (np.int8, Precision.INT8),
        ("uint8", Precision.UINT8), (np.dtype("uint8"), Precision.UINT8),
        ("fp16", Precision.FLOAT16), ("half", Precision.FLOAT16), (np.float16, Precision.FLOAT16),
        ("float32", Precision.FLOAT32), ("fp32", Precision.FLOAT32),
        ("int4", Precision.INT4), ("binary", Precision.BINARY), ("ubinary", Precision.BINARY),
        ("1-bit", Precision.BINARY), (Precision.INT4, Precision.INT4),
    ],
)  # fmt: skip
def test_parse_precision_spellings(spelling: object, expected: Precision) -> None:
    assert parse_precision(spelling) is expected


@pytest.mark.parametrize("bad", ["int7", "", None, 8, np.complex64, "float64"])
def test_parse_precision_rejects_unknown(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown precision"):
        parse_precision(bad)


@pytest.mark.parametrize(
    "quantizer",
    [ScalarQuantizer("int8"), ScalarQuantizer("int4"), BinaryQuantizer(), FloatQuantizer("float16")],
)
def test_encode_before_fit_raises(quantizer) -> None:
    with pytest.raises(NotFittedError):
        quantizer.encode(np.zeros((1, 4), np.float32))


def test_int8_exact_codes_and_saturation() -> None:
    calib = np.array([[0.0, -1.0], [2.55, 1.0]], np.float32)  # ranges [0, 2.55] and [-1, 1]
    q = ScalarQuantizer("int8").fit(calib)
    np.testing.assert_allclose(q.scale_, [0.01, 2 / 255], rtol=1e-6)
    x = np.array([[0.0, -1.0], [2.55, 1.0], [1.0, 0.5], [-5.0, 9.0], [100.0, -100.0]], np.float32)
    codes = q.encode(x)
    # level = round((x - min) / scale), code = level - 128, clipped (never wrapped)
    np.testing.assert_array_equal(codes, [[-128, -128], [127, 127], [-28, 63], [-128, 127], [127, -128]])
    assert codes.dtype == np.int8


def test_uint8_and_int4_saturate() -> None:
    calib = np.array([[0.0], [1.5]], np.float32)
    u8 = ScalarQuantizer("uint8").fit(calib)
    np.testing.assert_array_equal(
        u8.encode(np.array([[-1.0], [0.75], [3.0]], np.float32)).ravel(), [0, 128, 255]
    )
    i4 = ScalarQuantizer("int4").fit(calib)  # 16 levels, step 0.1
    levels = unpack_nibbles(i4.encode(np.array([[-1.0], [0.74], [3.0]], np.float32)), 1).ravel()
    np.testing.assert_array_equal(levels, [0, 7, 15])


def test_pack_nibbles_layout_and_odd_dim() -> None:
    levels = np.array([[1, 2, 3], [15, 0, 9]], np.uint8)
    packed = pack_nibbles(levels)
    np.testing.assert_array_equal(packed, [[0x21, 0x03], [0x0F, 0x09]])
    np.testing.assert_array_equal(unpack_nibbles(packed, 3), levels)


@pytest.mark.parametrize("precision", ["int8", "uint8", "int4"])
@pytest.mark.parametrize("dim", [1, 7, 64, 385])
def test_roundtrip_error_bounded_by_half_step(precision: str, dim: int) -> None:
    rng = np.random.default_rng(dim)
    x = unit_rows(rng, 200, dim)
    q = ScalarQuantizer(precision).fit(x)
    assert q.encode(x).shape == (200, q.code_bytes // q.code_dtype.itemsize)
    err = np.abs(q.decode(q.encode(x)) - x)
    assert (err <= q.scale_ / 2 + 1e-6).all()


def test_constant_dimension_decodes_to_its_value() -> None:
    x = np.array([[0.5, 1.0], [0.5, 2.0]], np.float32)
    q = ScalarQuantizer("int8").fit(x)
    np.testing.assert_allclose(q.decode(q.encode(x))[:, 0], [0.5, 0.5])


def test_percentile_ranges_match_numpy() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1000, 5)).astype(np.float32)
    q = ScalarQuantizer("int8", percentile=99.0).fit(x)
    np.testing.assert_allclose(q.min_, np.percentile(x, 1.0, axis=0), rtol=1e-5)
    np.testing.assert_allclose(q.max_, np.percentile(x, 99.0, axis=0), rtol=1e-5)
    codes = q.encode(x)
    assert (codes == -128).any() and (codes == 127).any()  # outliers are clipped, not wrapped


def test_partial_fit_minmax_equals_fit_on_concatenation() -> None:
    rng = np.random.default_rng(5)
    a, b = unit_rows(rng, 50, 16), unit_rows(rng, 70, 16) * 2
    incremental = ScalarQuantizer("int8").partial_fit(a).partial_fit(b)
    whole = ScalarQuantizer("int8").fit(np.concatenate([a, b]))
    np.testing.assert_array_equal(incremental.min_, whole.min_)
    np.testing.assert_array_equal(incremental.scale_, whole.scale_)
    assert incremental.n_samples_seen_ == 120


def test_reservoir_keeps_at_most_max_samples_and_stays_in_range() -> None:
    rng = np.random.default_rng(6)
    q = ScalarQuantizer("int8", percentile=100.0, max_samples=64)
    for _ in range(5):
        q.partial_fit(rng.standard_normal((50, 3)).astype(np.float32))
    assert q._sample.shape == (64, 3)
    assert q.n_samples_seen_ == 250


def test_query_uses_saved_calibration_not_its_own() -> None:
    calib = np.array([[-1.0, -1.0], [1.0, 1.0]], np.float32)
    q = ScalarQuantizer("int8").fit(calib)
    single = np.array([[10.0, 0.5]], np.float32)  # self-calibration would map this to the top level
    np.testing.assert_array_equal(q.encode(single), [[127, 63]])


@pytest.mark.parametrize("dim", [1, 5, 8, 9, 13, 64, 100, 384])
def test_binary_codes_match_sign_bits(dim: int) -> None:
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((10, dim)).astype(np.float32)
    q = BinaryQuantizer().fit(x)
    codes = q.encode(x)
    assert codes.shape == (10, (dim + 7) // 8) and q.code_bytes == (dim + 7) // 8
    np.testing.assert_array_equal(np.unpackbits(codes, axis=1, count=dim), (x > 0).astype(np.uint8))
    if dim % 8:
        assert (np.unpackbits(codes, axis=1)[:, dim:] == 0).all()  # padding never adds distance


def test_binary_exact_bytes() -> None:
    x = np.array([[1, -1, 1, 1, -1, -1, -1, 1, 0.5, -0.1, 0.0]], np.float32)
    q = BinaryQuantizer().fit(x)
    np.testing.assert_array_equal(q.encode(x), [[0b10110001, 0b10000000]])


@pytest.mark.parametrize(
    "quantizer",
    [
        ScalarQuantizer("int8"),
        ScalarQuantizer("uint8", percentile=99.5),
        ScalarQuantizer("int4"),
        FloatQuantizer("float16"),
        FloatQuantizer("float32"),
        MatryoshkaQuantizer(24, ScalarQuantizer("int8")),
    ],
    ids=repr,
)
def test_asymmetric_score_is_query_dot_dequantized(quantizer) -> None:
    rng = np.random.default_rng(7)
    docs, queries = unit_rows(rng, 100, 37), unit_rows(rng, 4, 37)
    quantizer.fit(docs)
    codes = quantizer.encode(docs)
    prepared = quantizer.prepare_queries(queries)
    candidates = rng.integers(0, 100, (4, 9))
    got = quantizer.score(prepared, codes[candidates])
    deq = quantizer.decode(codes)
    want = np.einsum("qcd,qd->qc", deq[candidates].astype(np.float64), prepared.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_float16_saturates_instead_of_inf() -> None:
    q = FloatQuantizer("float16").fit(np.zeros((1, 2), np.float32))
    codes = q.encode(np.array([[1e6, -1e6]], np.float32))
    assert np.isfinite(codes.astype(np.float32)).all()
    np.testing.assert_array_equal(codes.astype(np.float32), [[65504.0, -65504.0]])


def test_matryoshka_truncates_and_renormalises() -> None:
    rng = np.random.default_rng(8)
    x = unit_rows(rng, 20, 64)
    q = MatryoshkaQuantizer(16, BinaryQuantizer()).fit(x)
    assert q.code_bytes == 2 and q.code_dim == 16
    np.testing.assert_array_equal(q.encode(x), np.packbits(x[:, :16] > 0, axis=1))
    f = MatryoshkaQuantizer(16, FloatQuantizer("float32")).fit(x)
    head = x[:, :16] / np.linalg.norm(x[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(f.encode(x), head, rtol=1e-6)
    with pytest.raises(DimensionMismatchError):
        MatryoshkaQuantizer(100, BinaryQuantizer()).fit(x)


@pytest.mark.parametrize(
    "quantizer",
    [
        ScalarQuantizer("int8", percentile=99.0),
        ScalarQuantizer("int4"),
        BinaryQuantizer(),
        FloatQuantizer("float16"),
        MatryoshkaQuantizer(32, ScalarQuantizer("uint8")),
    ],
    ids=repr,
)
def test_state_roundtrip_gives_identical_codes(quantizer) -> None:
    rng = np.random.default_rng(9)
    x = unit_rows(rng, 300, 48)
    quantizer.fit(x)
    clone = quantizer_from_config(quantizer.to_config())
    with pytest.raises(NotFittedError):
        clone.encode(x)
    clone.set_state(quantizer.get_state())
    np.testing.assert_array_equal(clone.encode(x), quantizer.encode(x))


def test_make_quantizer_defaults() -> None:
    q = make_quantizer("int8")
    assert isinstance(q, ScalarQuantizer) and q.percentile == 99.9
    assert isinstance(make_quantizer("binary"), BinaryQuantizer)
    wrapped = make_quantizer("fp16", truncate_dim=8)
    assert isinstance(wrapped, MatryoshkaQuantizer) and wrapped.precision is Precision.FLOAT16


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.zeros((0, 4), np.float32), EmptyInputError),
        (np.zeros((2, 4), np.int32), InvalidDtypeError),
        (np.array([["a", "b"]]), InvalidDtypeError),
        (np.array([[1.0, np.nan, 0, 0]], np.float32), NonFiniteError),
        (np.array([[1.0, np.inf, 0, 0]], np.float32), NonFiniteError),
        (np.zeros((2, 2, 4), np.float32), DimensionMismatchError),
    ],
)
def test_fit_rejects_bad_input(bad: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error):
        ScalarQuantizer("int8").fit(bad)


def test_encode_rejects_wrong_dim() -> None:
    q = ScalarQuantizer("int8").fit(np.zeros((2, 4), np.float32))
    with pytest.raises(DimensionMismatchError, match="dimension 5, expected 4"):
        q.encode(np.zeros((1, 5), np.float32))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ScalarQuantizer("binary"), "int8, uint8 or int4"),
        (lambda: FloatQuantizer("int8"), "float32 or float16"),
        (lambda: ScalarQuantizer("int8", percentile=20), "percentile"),
        (lambda: MatryoshkaQuantizer(0, BinaryQuantizer()), "must be >= 1"),
    ],
)
def test_bad_parameters(factory, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        factory()


@pytest.mark.parametrize("k", [1, 7, 300])
def test_default_scan_topk_is_the_exact_brute_force_top_k(k: int) -> None:
    """The generic candidate scan (decode + matmul, blocked) equals a full sort, deleted rows skipped."""
    from quantsearch._topk import topk_blocks

    rng = np.random.default_rng(3)
    docs = rng.standard_normal((250, 24)).astype(np.float32)
    queries = rng.standard_normal((5, 24)).astype(np.float32)
    valid = rng.random(250) > 0.3
    q = ScalarQuantizer("int8").fit(docs)
    codes = q.encode(docs)
    exact = queries @ q.decode(codes).T
    scores, rows = q.scan_topk(queries, codes, k, valid=valid)
    # a small block size exercises the merge across blocks
    scores_b, rows_b = topk_blocks(
        lambda a, b: q.score_all(queries, codes[a:b]), 5, 250, k, valid=valid, block=16
    )
    live = np.flatnonzero(valid)
    for i in range(5):
        order = live[np.lexsort((live, -exact[i, live]))][:k]
        want = np.pad(order, (0, k - order.size), constant_values=-1)
        np.testing.assert_array_equal(rows[i], want)
        np.testing.assert_array_equal(rows_b[i], want)
        np.testing.assert_allclose(scores[i, : order.size], exact[i, order], rtol=1e-5, atol=1e-5)
        assert np.isnan(scores[i, order.size :]).all()


# ---- rotations ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 7, 64, 384])
def test_random_rotation_is_orthogonal_and_seeded(dim: int) -> None:
    from quantsearch.quantization.rotation import random_orthogonal

    r = random_orthogonal(dim, seed=5)
    np.testing.assert_allclose(r.T @ r, np.eye(dim), atol=1e-5)
    np.testing.assert_array_equal(r, random_orthogonal(dim, seed=5))
    assert not np.array_equal(r, random_orthogonal(dim, seed=6)) or dim == 1


def test_itq_is_orthogonal_and_lowers_the_quantization_error() -> None:
    """ITQ's objective ||sign(VR) - VR||_F never exceeds the random start's, and R stays orthogonal."""
    from quantsearch.quantization.rotation import itq_rotation, random_orthogonal

    rng = np.random.default_rng(0)
    # anisotropic data: a few strong directions, where a learned rotation matters
    v = (rng.standard_normal((2000, 32)) * np.geomspace(4, 0.2, 32)).astype(np.float32)
    v -= v.mean(0)

    def loss(r: np.ndarray) -> float:
        p = v @ r
        return float(np.linalg.norm(np.where(p >= 0, 1.0, -1.0) * np.abs(p).mean() - p))

    def itq_loss(r: np.ndarray) -> float:
        p = v @ r
        return float(np.linalg.norm(np.where(p >= 0, 1.0, -1.0) - p))

    r = itq_rotation(v, iterations=30, seed=1)
    np.testing.assert_allclose(r.T @ r, np.eye(32), atol=1e-4)
    start = random_orthogonal(32, seed=1)
    assert itq_loss(r) < itq_loss(start)
    assert loss(r) < loss(start)
    np.testing.assert_array_equal(itq_rotation(v, iterations=0, seed=1), start)


# ---- PCA (LeanVec-style) reduction ------------------------------------------------------------------
def test_pca_projection_is_orthonormal_ordered_and_optimal() -> None:
    from quantsearch.quantization.reduction import pca_projection

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 16)) @ rng.standard_normal((16, 16))).astype(np.float32)
    p, values = pca_projection(x, 5)
    np.testing.assert_allclose(p.T @ p, np.eye(5), atol=1e-5)
    assert (np.diff(values) <= 1e-9).all()
    # the energy kept equals the top eigenvalues' sum, and beats random orthonormal projections
    kept = float(((x @ p) ** 2).sum(1).mean())
    np.testing.assert_allclose(kept, values[:5].sum(), rtol=1e-4)
    for seed in range(5):
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((16, 5)))
        assert float(((x @ q) ** 2).sum(1).mean()) <= kept + 1e-3


def test_pca_quantizer_scores_approximate_inner_products_within_the_residual() -> None:
    """Full-rank PCA with float32 codes is an exact rotation; rank r errs by at most |q| |x - P P^T x|."""
    from quantsearch.quantization import FloatQuantizer, PCAQuantizer

    rng = np.random.default_rng(1)
    docs = (rng.standard_normal((500, 12)) * np.geomspace(3, 0.1, 12)).astype(np.float32)
    queries = rng.standard_normal((4, 12)).astype(np.float32)
    full = PCAQuantizer(12, FloatQuantizer("float32")).fit(docs)
    codes = full.encode(docs)
    np.testing.assert_allclose(
        full.score_all(full.prepare_queries(queries), codes), queries @ docs.T, atol=1e-4
    )
    low = PCAQuantizer(4, FloatQuantizer("float32")).fit(docs)
    est = low.score_all(low.prepare_queries(queries), low.encode(docs))
    p = low.components_
    residual = np.linalg.norm(docs - docs @ p @ p.T, axis=1)
    bound = np.linalg.norm(queries, axis=1)[:, None] * residual[None, :]
    assert (np.abs(est - queries @ docs.T) <= bound + 1e-4).all()
    assert 0.9 < float(low.explained_) <= 1.0


def test_pca_tiers_survive_an_index_round_trip(tmp_path) -> None:
    from quantsearch import Index
    from quantsearch.quantization import PCAQuantizer, make_quantizer

    rng = np.random.default_rng(2)
    docs = rng.standard_normal((300, 32)).astype(np.float32)
    index = Index.build(
        tmp_path / "ix",
        docs,
        binary=PCAQuantizer(16, make_quantizer("binary")),
        rescore=[PCAQuantizer(16, make_quantizer("int8"))],
    )
    before = index.search(docs[:5], k=5, with_payload=False)
    index.close()
    again = Index.open(tmp_path / "ix")
    after = again.search(docs[:5], k=5, with_payload=False)
    np.testing.assert_array_equal(before.ids, after.ids)
    assert [t["name"] for t in again.info()["tiers"]] == ["binary-pca16", "int8-pca16"]
    again.close()
    with pytest.raises(DimensionMismatchError):
        PCAQuantizer(40, make_quantizer("int8")).fit(docs)
    with pytest.raises(InvalidArgumentError):
        PCAQuantizer(0, make_quantizer("int8"))
