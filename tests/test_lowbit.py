"""2-bit, ternary and ggml block codes: layouts, hand-computed blocks, error bounds, index round trips."""

from __future__ import annotations

import itertools
import math
import struct

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.exceptions import (
    DimensionMismatchError,
    InvalidArgumentError,
    NonFiniteError,
    NotFittedError,
)
from quantsearch.quantization import (
    BlockQuantizer,
    Int2Quantizer,
    MatryoshkaQuantizer,
    TernaryQuantizer,
    make_quantizer,
    quantizer_from_config,
)
from quantsearch.quantization.bitplanes import pack_planes, unpack_planes
from quantsearch.quantization.lowbit import _nearest_level, pack_trits, unpack_trits


def _data(n: int = 400, dim: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32) * np.linspace(0.2, 2.0, dim, dtype=np.float32)
    return x + rng.standard_normal(dim).astype(np.float32)


# ---- ggml block formats: a per-element transcription of ggml's reference quantizers --------------------
def _f32(v: float) -> np.float32:
    return np.float32(v)


def _ref_block(format: str, block: list[float]) -> bytes:
    """One block quantized as ggml's quantize_row_*_ref does, element by element in float32."""
    x = [_f32(v) for v in block]
    if format == "q8_0":
        amax = max(abs(v) for v in x)
        d = amax / _f32(127)
        inv = _f32(1) / d if d else _f32(0)
        qs = []
        for v in x:
            t = float(v * inv)
            qs.append(int(math.copysign(math.floor(abs(t) + 0.5), t)))  # roundf: half away from zero
        return struct.pack("<e", float(d)) + struct.pack("<32b", *qs)
    if format == "q4_0":
        amax, mx = _f32(0), _f32(0)
        for v in x:
            if amax < abs(v):
                amax, mx = abs(v), v
        d = mx / _f32(-8)
        inv = _f32(1) / d if d else _f32(0)
        q = [min(15, int(float(v * inv + _f32(8.5)))) for v in x]
        return struct.pack("<e", float(d)) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    lo, hi = min(x), max(x)
    d = (hi - lo) / _f32(15)
    inv = _f32(1) / d if d else _f32(0)
    q = [min(15, int(float((v - lo) * inv + _f32(0.5)))) for v in x]
    return struct.pack("<ee", float(d), float(lo)) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))


def _ref_row(format: str, row: np.ndarray) -> bytes:
    values = [float(v) for v in row]
    out = b""
    for start in range(0, len(values), 32):
        block = values[start : start + 32]
        block += [block[0]] * (32 - len(block))  # padding: the block's first value
        out += _ref_block(format, block)
    return out


@pytest.mark.parametrize("format", ["q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("dim", [32, 70, 384])
def test_block_codes_match_ggml_reference_bytes(format: str, dim: int) -> None:
    x = _data(12, dim, seed=dim)
    x[3, :32] = 0.0  # an all-zero block: d = 0
    x[4, :] = np.float32(0.75)  # constant vector: q4_1 with d = 0
    q = BlockQuantizer(format).fit(x)
    codes = q.encode(x)
    for i in range(x.shape[0]):
        assert codes[i].tobytes() == _ref_row(format, x[i]), (format, dim, i)


@pytest.mark.parametrize(("format", "per_block"), [("q8_0", 34), ("q4_0", 18), ("q4_1", 20)])
@pytest.mark.parametrize(("dim", "blocks"), [(32, 1), (33, 2), (64, 2), (384, 12)])
def test_block_code_bytes(format: str, per_block: int, dim: int, blocks: int) -> None:
    q = make_quantizer(format).fit(_data(4, dim))
    assert q.code_bytes == per_block * blocks
    assert q.encode(_data(3, dim)).shape == (3, per_block * blocks)
    assert q.bits_per_dim == pytest.approx(per_block * blocks * 8 / dim)
    assert q.name == format


def test_q8_0_hand_computed_block() -> None:
    x = np.zeros((1, 32), np.float32)
    x[0, :6] = [127.0, -2.5, 2.5, 0.4, -0.5, 3.49]  # amax 127 -> d = 1: halves round away from zero
    codes = BlockQuantizer("q8_0").fit(x).encode(x)[0]
    assert codes[:2].tobytes() == bytes([0x00, 0x3C])  # float16 1.0
    assert codes[2:8].view(np.int8).tolist() == [127, -3, 3, 0, -1, 3]
    assert not codes[8:].any()


def test_q4_0_hand_computed_block() -> None:
    x = np.zeros((1, 32), np.float32)
    # the first largest magnitude (-8, before +8) sets d = -8 / -8 = 1
    x[0, [0, 1, 2, 3, 4, 5, 16, 17]] = [-8.0, 8.0, 0.5, -0.5, 1.49, 7.4, 3.0, -3.0]
    q = BlockQuantizer("q4_0").fit(x)
    codes = q.encode(x)[0]
    assert codes[:2].tobytes() == bytes([0x00, 0x3C])
    low = [c & 0x0F for c in codes[2:]]
    high = [c >> 4 for c in codes[2:]]
    # trunc(x + 8.5), clamped to 15: +8 saturates to 15 (decodes to 7)
    assert low[:6] == [0, 15, 9, 8, 9, 15]
    assert high[:2] == [11, 5]
    assert low[6:] == [8] * 10 and high[2:] == [8] * 14
    decoded = q.decode(codes[None])[0]
    assert decoded[[0, 1, 2, 3, 4, 5, 16, 17]].tolist() == [-8.0, 7.0, 1.0, 0.0, 1.0, 7.0, 3.0, -3.0]


def test_q4_0_positive_max_gives_negative_scale() -> None:
    x = np.zeros((1, 32), np.float32)
    x[0, :2] = [4.0, -4.0]  # tie in magnitude: the first (+4) wins, d = 4 / -8 = -0.5
    q = BlockQuantizer("q4_0").fit(x)
    codes = q.encode(x)[0]
    assert codes[:2].tobytes() == bytes([0x00, 0xB8])  # float16 -0.5
    assert codes[2] & 0x0F == 0 and codes[3] & 0x0F == 15
    assert q.decode(codes[None])[0, :2].tolist() == [4.0, -3.5]


def test_q4_1_hand_computed_block() -> None:
    x = np.full((1, 32), 2.0, np.float32)
    x[0, :4] = [-1.0, 14.0, 3.5, 3.4]  # d = 15 / 15 = 1, m = -1
    q = BlockQuantizer("q4_1").fit(x)
    codes = q.encode(x)[0]
    assert codes[:4].tobytes() == bytes([0x00, 0x3C, 0x00, 0xBC])  # float16 1.0, -1.0
    assert [c & 0x0F for c in codes[4:8]] == [0, 15, 5, 4]  # trunc(x - m + 0.5)
    assert q.decode(codes[None])[0, :4].tolist() == [-1.0, 14.0, 4.0, 3.0]


@pytest.mark.parametrize("dim", [32, 100, 384])
def test_block_roundtrip_error_bounds(dim: int) -> None:
    x = _data(300, dim, seed=1) * np.float32(0.1)
    nb = -(-dim // 32)
    pad = np.concatenate([x, np.repeat(x[:, (nb - 1) * 32][:, None], nb * 32 - dim, axis=1)], axis=1)
    blocks = pad.reshape(300, nb, 32)
    fp16 = 2.0**-11  # relative rounding of a float16 scale
    for format in ("q8_0", "q4_0", "q4_1"):
        q = BlockQuantizer(format).fit(x)
        err = np.abs(q.decode(q.encode(x)) - x)
        err = np.pad(err, ((0, 0), (0, nb * 32 - dim))).reshape(300, nb, 32)
        if format == "q8_0":
            d = np.abs(blocks).max(axis=2) / 127
            bound = d / 2 + 127 * d * fp16
        elif format == "q4_0":
            # the opposite extreme saturates at level 7 (error up to d); every other element is within d/2
            d = np.abs(blocks).max(axis=2) / 8
            bound = d / 2 + 8 * d * fp16
            flip = np.abs(blocks) > 7.5 * d[:, :, None]
            assert (err[flip] <= (d[:, :, None] * (1 + 8 * fp16)).repeat(32, 2)[flip] + 1e-7).all()
            err = np.where(flip, 0, err)
        else:
            lo = blocks.min(axis=2)
            d = (blocks.max(axis=2) - lo) / 15
            bound = d / 2 + 15 * d * fp16 + np.abs(lo) * fp16
        assert (err <= bound[:, :, None] + 1e-7).all(), format


def test_block_zero_vector_decodes_to_zero() -> None:
    x = np.zeros((2, 40), np.float32)
    for format in ("q8_0", "q4_0", "q4_1"):
        q = BlockQuantizer(format).fit(x)
        assert (q.decode(q.encode(x)) == 0).all()


# ---- ternary packing ----------------------------------------------------------------------------------
def test_trit_packing_covers_every_byte_value() -> None:
    all_bytes = np.arange(243, dtype=np.uint8)[:, None]
    trits = unpack_trits(all_bytes, 5)
    assert set(np.unique(trits).tolist()) == {-1, 0, 1}
    assert (pack_trits(trits) == all_bytes).all()
    # every combination of 5 trits is one distinct byte below 243, dimension i weighs 3**i
    combos = np.array(list(itertools.product([-1, 0, 1], repeat=5)), np.int8)
    packed = pack_trits(combos)[:, 0]
    assert sorted(packed.tolist()) == list(range(243))
    assert (packed == ((combos + 1) * np.array([1, 3, 9, 27, 81])).sum(axis=1)).all()


def test_trit_packing_layout_and_padding() -> None:
    trits = np.array([[1, 0, -1, 0, 0, -1, 1]], np.int8)
    packed = pack_trits(trits)
    assert packed.tolist() == [[2 + 1 * 3 + 0 * 9 + 1 * 27 + 1 * 81, 0 + 2 * 3 + 1 * 9 + 1 * 27 + 1 * 81]]
    assert (unpack_trits(packed, 7) == trits).all()


def test_ternary_codes_layout_and_scale() -> None:
    x = _data(200, 37)
    q = TernaryQuantizer(rotate=False).fit(x)
    codes = q.encode(x)
    assert q.code_bytes == 8 + 4 and codes.shape == (200, 12)
    trits = q.decode_trits(codes)
    u = (x - q.mean_) / q.spread_
    alpha = codes[:, 8:].copy().view("<f4")[:, 0]
    # the scale is the mean |u| over the kept dimensions, and decoding is m + s * alpha * t
    kept = trits != 0
    assert np.allclose(alpha, np.where(kept, np.abs(u), 0).sum(1) / kept.sum(1), rtol=1e-5)
    assert (np.sign(u)[kept] == trits[kept]).all()
    expected = q.mean_ + q.spread_ * alpha[:, None] * trits
    assert np.allclose(q.decode(codes), expected, atol=1e-6)


def test_ternary_optimal_support_beats_every_other_size() -> None:
    x = _data(60, 24, seed=3)
    q = TernaryQuantizer(rotate=False).fit(x)
    trits = q.decode_trits(q.encode(x))
    u = (x - q.mean_) / q.spread_
    for i in range(x.shape[0]):
        a = np.sort(np.abs(u[i]))[::-1]
        # best squared error over every support size m: ||u||^2 - (sum of the m largest |u|)^2 / m
        best = min(float((a**2).sum() - a[:m].sum() ** 2 / m) for m in range(1, 25))
        alpha = np.abs(u[i][trits[i] != 0]).mean()
        assert float(((u[i] - alpha * trits[i]) ** 2).sum()) <= best + 1e-5


def test_ternary_per_dimension_twn_rule() -> None:
    x = _data(500, 16)
    q = TernaryQuantizer(scale="dimension", threshold=0.7, rotate=False).fit(x)
    dev = x - x.mean(0)
    assert np.allclose(q.threshold_, 0.7 * np.abs(dev).mean(0), rtol=1e-5)
    trits = q.decode_trits(q.encode(x))
    assert (trits == np.sign(dev) * (np.abs(dev) >= q.threshold_)).all()
    assert q.code_bytes == 4  # no per-vector bytes
    assert np.allclose(q.decode(q.encode(x)), q.mean_ + q.alpha_ * trits, atol=1e-6)


def test_ternary_planes_layout_matches_base3() -> None:
    x = _data(50, 20)
    a, b = TernaryQuantizer(), TernaryQuantizer(layout="planes")
    a.fit(x), b.fit(x)
    ca, cb = a.encode(x), b.encode(x)
    assert (a.decode_trits(ca) == b.decode_trits(cb)).all()
    assert (unpack_planes(cb, 20, 2).astype(np.int8) - 1 == b.decode_trits(cb)).all()
    assert np.allclose(a.decode(ca), b.decode(cb))


# ---- 2-bit codes ----------------------------------------------------------------------------------------
def test_plane_layout() -> None:
    levels = np.array([[0, 1, 2, 3, 3, 2, 1, 0, 1]], np.uint8)
    packed = pack_planes(levels, 2)
    # plane 0 (low bits) 0 1 0 1 1 0 1 0 | 1 ; plane 1 (high bits) 0 0 1 1 1 1 0 0 | 0
    assert packed.tolist() == [[0b01011010, 0b10000000, 0b00111100, 0b00000000]]
    assert (unpack_planes(packed, 9, 2) == levels).all()


def test_int2_uniform_levels_and_nearest_codes() -> None:
    x = _data(1000, 12)
    q = Int2Quantizer(levels="uniform", percentile=99.0, rotate=False, correction=False).fit(x)
    lo, hi = np.percentile(x, 1.0, axis=0), np.percentile(x, 99.0, axis=0)
    assert np.allclose(q.levels_, lo[:, None] + (hi - lo)[:, None] * np.arange(4) / 3, rtol=1e-5, atol=1e-6)
    codes = q.encode(x)
    assert codes.shape == (1000, 4)
    index = unpack_planes(codes, 12, 2)
    assert (index == np.abs(x[:, :, None] - q.levels_[None]).argmin(axis=2)).all()
    assert np.allclose(q.decode(codes), q.levels_[np.arange(12), index], atol=1e-6)


@pytest.mark.parametrize("levels", ["symmetric", "lloyd"])
def test_int2_lloyd_levels_are_centroids_of_their_cells(levels: str) -> None:
    x = _data(3000, 6, seed=5)
    q = Int2Quantizer(levels=levels, rotate=False, correction=False).fit(x)
    lv = q.levels_
    assert (np.diff(lv, axis=1) >= 0).all()
    index = unpack_planes(q.encode(x), 6, 2)
    for j in range(6):
        if levels == "lloyd":  # every level is the mean of its cell
            for k in range(4):
                assert lv[j, k] == pytest.approx(x[index[:, j] == k, j].mean(), abs=1e-4)
        else:  # m -+ s1, m -+ s2: s1 and s2 are the mean deviations of the inner and outer cells
            m = x[:, j].mean()
            assert lv[j, 0] + lv[j, 3] == pytest.approx(2 * m, abs=1e-5)
            assert lv[j, 1] + lv[j, 2] == pytest.approx(2 * m, abs=1e-5)
            dev = np.abs(x[:, j] - m)
            inner = (index[:, j] == 1) | (index[:, j] == 2)
            assert m + dev[inner].mean() == pytest.approx(lv[j, 2], abs=1e-4)
            assert m + dev[~inner].mean() == pytest.approx(lv[j, 3], abs=1e-4)


@pytest.mark.parametrize("levels", ["lloyd", "symmetric", "uniform"])
def test_int2_plane_weights_reproduce_levels(levels: str) -> None:
    x = _data(500, 10)
    q = Int2Quantizer(levels=levels, rotate=False).fit(x)
    offset, w0, w1, w01 = q.plane_weights()
    for b0, b1 in itertools.product([0, 1], repeat=2):
        assert np.allclose(offset + w0 * b0 + w1 * b1 + w01 * b0 * b1, q.levels_[:, b0 + 2 * b1], atol=1e-6)
    if levels != "lloyd":  # levels symmetric about a centre need no AND term
        assert np.allclose(w01, 0, atol=1e-6)


def test_int2_rotation_and_factor() -> None:
    x = _data(400, 24)
    q = Int2Quantizer(center=True, levels="symmetric").fit(x)
    codes = q.encode(x)
    assert codes.shape == (400, 2 * 3 + 4)
    assert np.allclose(q.rotation_ @ q.rotation_.T, np.eye(24), atol=1e-5)
    y = (x - x.mean(0)) @ q.rotation_
    index = unpack_planes(codes, 24, 2)
    approx = q.levels_[np.arange(24), index]
    factor = codes[:, -4:].copy().view("<f4")[:, 0]
    assert np.allclose(factor, (y * approx).sum(1) / (approx * approx).sum(1), rtol=1e-4)
    assert np.allclose(q.decode(codes), (factor[:, None] * approx) @ q.rotation_.T + x.mean(0), atol=1e-5)


def test_int2_refine_never_increases_error() -> None:
    x = _data(300, 32)
    err = {}
    for refine in (0, 3):
        q = Int2Quantizer(refine=refine).fit(x)
        err[refine] = ((q.decode(q.encode(x)) - x) ** 2).sum(1)
    assert (err[3] <= err[0] + 1e-5).all()
    assert err[3].sum() < err[0].sum()


def test_int2_constant_dimensions_decode_to_their_value() -> None:
    x = _data(200, 8)
    x[:, 3] = 0.0
    x[:, 5] = 0.25
    for levels in ("symmetric", "lloyd", "uniform"):
        q = Int2Quantizer(levels=levels, rotate=False, correction=False).fit(x)
        decoded = q.decode(q.encode(x))
        assert np.isfinite(decoded).all()
        assert np.allclose(decoded[:, 3], 0.0, atol=1e-7) and np.allclose(decoded[:, 5], 0.25, atol=1e-6)


# ---- every family: scoring, state, index --------------------------------------------------------------
ALL_SPECS = ["q8_0", "q4_0", "q4_1", "int2", "int2-symmetric", "int2-uniform", "ternary", "ternary-planes",
             "ternary-twn"]  # fmt: skip


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_score_equals_decode_dot_product(spec: str) -> None:
    x, queries = _data(300, 70), _data(5, 70, seed=9)
    q = make_quantizer(spec).fit(x)
    codes = q.encode(x)
    expected = queries @ q.decode(codes).T
    prepared = q.prepare_queries(queries)
    assert np.allclose(q.score_all(prepared, codes), expected, atol=1e-4)
    rows = np.random.default_rng(0).integers(0, 300, (5, 11))
    assert np.allclose(q.score(prepared, codes[rows]), np.take_along_axis(expected, rows, 1), atol=1e-4)
    scores, top = q.scan_topk(queries, codes, 4)
    if spec.startswith(("int2", "ternary")):
        # 2-bit and ternary scans: the query's tables are quantized to 8 bits (nibble_topk), so the
        # estimates are near the exact scores and near ties may swap (tests/test_code_scans.py)
        tol = 0.03 * np.abs(expected).max()
        assert np.allclose(scores, np.take_along_axis(expected, top, 1), atol=tol)
        assert (
            np.take_along_axis(expected, top, 1).min(axis=1) >= np.sort(expected, axis=1)[:, -4] - 2 * tol
        ).all()
    else:
        assert (top == np.argsort(-expected, axis=1, kind="stable")[:, :4]).all()


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_state_roundtrip_gives_identical_codes(spec: str) -> None:
    x = _data(200, 40)
    q = make_quantizer(spec).fit(x)
    clone = quantizer_from_config(q.to_config()).set_state(q.get_state())
    assert clone.name == q.name
    assert (clone.encode(x) == q.encode(x)).all()
    assert np.array_equal(clone.decode(q.encode(x)), q.decode(q.encode(x)))


@pytest.mark.parametrize("spec", ["q4_0", "q8_0", "int2", "ternary"])
def test_matryoshka_wrapping(spec: str) -> None:
    x = _data(100, 256)
    q = make_quantizer(spec, truncate_dim=128).fit(x)
    assert isinstance(q, MatryoshkaQuantizer)
    codes = q.encode(x)
    assert codes.shape == (100, q.code_bytes) and q.code_bytes == q.base.code_bytes
    if spec == "q4_0":
        assert q.code_bytes == 4 * 18
    decoded = q.decode(codes)
    assert decoded.shape == (100, 128)
    queries = _data(3, 256, seed=4)
    prepared = q.prepare_queries(queries)
    assert np.allclose(q.score_all(prepared, codes), prepared @ decoded.T, atol=1e-4)


def test_index_with_lowbit_tiers_survives_reopen(tmp_path) -> None:
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((300, 64)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:7] + 0.05 * rng.standard_normal((7, 64)).astype(np.float32)
    path = tmp_path / "idx"
    index = Index.build(path, docs, rescore=["q4_0", "q4_1", "q8_0"], binary="int2")
    try:
        first = index.search(queries, k=5, with_payload=False)
        assert index.rescore_tiers == ("q4_0", "q4_1", "q8_0")
        # the last stage is q8_0: its scores are the float queries' dot products with the decoded codes
        q8 = make_quantizer("q8_0").fit(docs)
        expected = queries @ q8.decode(q8.encode(docs)).T
        ids = np.asarray(first.ids)
        assert np.allclose(np.asarray(first.scores), np.take_along_axis(expected, ids, 1), atol=1e-4)
        assert (ids[:, 0] == np.arange(7)).all()
    finally:
        index.close()
    reopened = Index.open(path)
    try:
        again = reopened.search(queries, k=5, with_payload=False)
        assert np.array_equal(np.asarray(again.ids), np.asarray(first.ids))
        assert np.allclose(np.asarray(again.scores), np.asarray(first.scores))
    finally:
        reopened.close()


@pytest.mark.parametrize("candidates", ["ternary", "int2-nofactor"])
def test_index_lowbit_candidate_stage_without_rescoring(tmp_path, candidates: str) -> None:
    docs = _data(250, 40)
    queries = _data(4, 40, seed=2)
    index = Index.build(tmp_path / "idx", docs, rescore=None, binary=candidates, truncate_dim=32)
    try:
        res = index.search(queries, k=6, with_payload=False)
        q = make_quantizer(candidates, truncate_dim=32).fit(docs)
        expected = q.score_all(q.prepare_queries(queries), q.encode(docs))
        ids = np.asarray(res.ids)
        if candidates == "ternary":  # exact byte tables
            assert (ids == np.argsort(-expected, axis=1, kind="stable")[:, :6]).all()
        else:  # 2-bit planes scanned with 8-bit query levels: near ties may swap
            tol = 0.03 * np.abs(expected).max()
            got = np.take_along_axis(expected, ids, 1)
            assert (got.min(axis=1) >= np.sort(expected, axis=1)[:, -6] - 2 * tol).all()
            assert np.allclose(np.asarray(res.scores), got, atol=tol)
    finally:
        index.close()


# ---- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build",
    [
        lambda: BlockQuantizer("q5_k"),
        lambda: BlockQuantizer(4),
        lambda: Int2Quantizer(levels="kmeans"),
        lambda: Int2Quantizer(percentile=20.0),
        lambda: Int2Quantizer(refine=-1),
        lambda: Int2Quantizer(max_samples=0),
        lambda: TernaryQuantizer(scale="block"),
        lambda: TernaryQuantizer(threshold=-0.7),
        lambda: TernaryQuantizer(threshold="twn"),
        lambda: TernaryQuantizer(layout="base4"),
    ],
)
def test_bad_parameters_raise(build) -> None:
    with pytest.raises(InvalidArgumentError):
        build()


@pytest.mark.parametrize("spec", ["q4_1", "int2", "ternary"])
def test_bad_input_raises(spec: str) -> None:
    q = make_quantizer(spec)
    with pytest.raises(NotFittedError):
        q.encode(_data(2, 40))
    q.fit(_data(50, 40))
    with pytest.raises(DimensionMismatchError):
        q.encode(_data(2, 41))
    bad = _data(2, 40)
    bad[0, 1] = np.nan
    with pytest.raises(NonFiniteError):
        q.encode(bad)
    codes = q.encode(_data(2, 40))
    with pytest.raises(DimensionMismatchError):
        q.decode(codes[:, :-1])


def test_precision_spellings_reach_the_lowbit_families() -> None:
    assert isinstance(make_quantizer("2bit"), Int2Quantizer)
    assert isinstance(make_quantizer("1.58bit"), TernaryQuantizer)
    assert make_quantizer("Q4_0").name == "q4_0"


def test_int2_learned_rotation_is_orthogonal_and_lowers_the_quantization_error() -> None:
    """ITQ generalised to 2-bit levels: R stays orthogonal, the kept start has the lowest relative
    error, and it quantizes the centred sample better than the random rotation it started from."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((1500, 24)) * np.geomspace(3, 0.1, 24)).astype(np.float32)

    def error(q: Int2Quantizer) -> float:
        y = (x - q.center_) @ q.rotation_
        levels = q.levels_[np.arange(24)[None, :], _nearest_level(y.astype(np.float32), q.levels_)]
        return float(((y - levels) ** 2).sum() / (y**2).sum())

    start = Int2Quantizer(center=True, seed=7).fit(x)
    learned = Int2Quantizer(center=True, learn_rotation=10, restarts=3, seed=7).fit(x)
    np.testing.assert_allclose(learned.rotation_.T @ learned.rotation_, np.eye(24), atol=1e-4)
    assert error(learned) < error(start)
    singles = [Int2Quantizer(center=True, learn_rotation=10, seed=7 + s).fit(x) for s in range(3)]
    assert error(learned) <= min(error(q) for q in singles) + 1e-6
    assert learned.name == "int2-itq10x3-ctr"
    codes = learned.encode(x[:50])
    np.testing.assert_allclose(learned.score_all(x[:3], codes), x[:3] @ learned.decode(codes).T, atol=1e-4)
    with pytest.raises(InvalidArgumentError):
        Int2Quantizer(learn_rotation=-1)
    with pytest.raises(InvalidArgumentError):
        Int2Quantizer(restarts=0)
