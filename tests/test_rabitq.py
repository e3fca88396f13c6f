"""RaBitQ-style codes and the Hadamard rotation: exact estimator math, unbiasedness, layout, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch import Index, MatryoshkaQuantizer, make_quantizer
from quantsearch.exceptions import InvalidArgumentError
from quantsearch.quantization import RaBitQQuantizer, base, quantizer_from_config
from quantsearch.quantization.rotation import hadamard_signs, hadamard_transform


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Unit rows around a common direction with unequal spread per axis (like sentence embeddings)."""
    x = 0.6 * rng.standard_normal(dim) + rng.standard_normal((n, dim)) * np.geomspace(1.5, 0.2, dim)
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---- Hadamard rotation -------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 7, 8, 100, 384, 512])
def test_hadamard_transform_is_orthogonal_and_preserves_inner_products(dim: int) -> None:
    signs = hadamard_signs(dim, seed=3)
    h = hadamard_transform(np.eye(dim, dtype=np.float32), signs)  # the matrix H of x -> x @ H
    np.testing.assert_allclose(h.T @ h, np.eye(dim), atol=1e-5)
    rng = np.random.default_rng(dim)
    a, b = rng.standard_normal((5, dim)), rng.standard_normal((6, dim))
    ra, rb = hadamard_transform(a, signs), hadamard_transform(b, signs)
    np.testing.assert_allclose(ra @ rb.T, a @ b.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ra, a @ h, rtol=1e-4, atol=1e-5)  # linear: the same map row by row
    np.testing.assert_allclose(hadamard_transform(ra, signs, inverse=True), a, rtol=1e-4, atol=1e-5)


def test_hadamard_spreads_a_basis_vector_over_every_coordinate() -> None:
    # overlapping power-of-two blocks (256 of 384) must still mix all 384 coordinates
    h = hadamard_transform(np.eye(384, dtype=np.float32), hadamard_signs(384, seed=0))
    # (some entries cancel exactly to 0: they are sums of +-1 / sqrt(P) terms)
    assert np.count_nonzero(np.abs(h) > 1e-6, axis=1).min() > 300
    assert np.abs(h).max() < 0.3  # no coordinate keeps most of its energy (1/sqrt(384) = 0.05 is ideal)


def test_itq_restarts_keep_the_lowest_quantization_error() -> None:
    from quantsearch.quantization.rotation import itq_rotation

    rng = np.random.default_rng(0)
    v = (rng.standard_normal((500, 16)) * np.geomspace(3, 0.3, 16)).astype(np.float32)
    v -= v.mean(axis=0)
    single = [float(np.abs(v @ itq_rotation(v, iterations=10, seed=s)).sum()) for s in (7, 8, 9)]
    best = itq_rotation(v, iterations=10, seed=7, restarts=3)
    np.testing.assert_allclose(best.T @ best, np.eye(16), atol=1e-5)
    # ||sign(VR) - VR||^2 = const - 2 sum |VR|: the kept start has the largest L1 norm
    assert float(np.abs(v @ best).sum()) == pytest.approx(max(single), rel=1e-6)


# ---- estimator math -----------------------------------------------------------------------------------
def test_one_bit_estimate_matches_the_rabitq_formula() -> None:
    """score = ||x - c|| <R q, b> / <b, R (x - c) / ||x - c||> + <q, c> with b = sign(R (x - c))/sqrt(d)."""
    rng = np.random.default_rng(0)
    docs, queries = clustered(rng, 300, 48), unit_rows(rng, 7, 48)
    quantizer = RaBitQQuantizer(bits=1, rotation="random", seed=4).fit(docs)
    c, r = docs.mean(axis=0), quantizer.rotation_
    y = (docs - c) @ r
    norm = np.linalg.norm(y, axis=1)
    b = np.where(y >= 0, 1.0, -1.0) / np.sqrt(48)
    expected = (
        norm * ((queries @ r) @ b.T) / np.einsum("nd,nd->n", b, y / norm[:, None]) + (queries @ c)[:, None]
    )
    got = quantizer.score_all(queries, quantizer.encode(docs))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_estimator_is_unbiased_over_random_rotations(bits: int) -> None:
    """Averaged over Haar rotations the estimate of <q, x> has mean error 0 (RaBitQ's theorem; the
    proof only needs the code to be a function of the rotated vector, so ex-codes are unbiased too).

    Tolerance: |mean error| <= 4 standard errors of the mean, for each of 5 x 6 query/document pairs.
    """
    rng = np.random.default_rng(bits)
    dim, trials = 32, 400
    sample, docs, queries = clustered(rng, 100, dim), clustered(rng, 6, dim), unit_rows(rng, 5, dim)
    exact = queries @ docs.T
    errors = np.empty((trials, *exact.shape))
    for t in range(trials):
        quantizer = RaBitQQuantizer(bits=bits, rotation="random", seed=1000 + t).fit(sample)
        errors[t] = quantizer.score_all(queries, quantizer.encode(docs)) - exact
    mean, sem = errors.mean(axis=0), errors.std(axis=0) / np.sqrt(trials)
    assert np.all(np.abs(mean) <= 4 * sem + 1e-6), (mean, sem)
    assert errors.std() > 1e-3  # the estimate does vary with the rotation (1 to 3 bits lose information)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_ex_codes_are_within_the_uniform_grid_bound(bits: int) -> None:
    """The chosen grid is at least as close (in angle) to y = R (x - c) as the unclipped grid of step
    2 max|y| / 2^B, whose error per coordinate is at most max|y| / 2^B, so
    sin(angle) <= sqrt(d) max|y| / (2^B ||y||). One more bit is much closer."""
    rng = np.random.default_rng(bits)
    docs = clustered(rng, 400, 64)
    sines = {}
    for b in (bits - 1, bits):
        quantizer = RaBitQQuantizer(bits=b, rotation="random", seed=2).fit(docs)
        codes = quantizer.encode(docs)
        r, c = quantizer.rotation_, quantizer.center_
        y = (docs - c) @ r
        u = (quantizer.decode(codes) - c) @ r  # the code vector in the rotated frame, times the factor
        cos = np.einsum("nd,nd->n", u, y) / (np.linalg.norm(u, axis=1) * np.linalg.norm(y, axis=1))
        sines[b] = np.sqrt(np.clip(1 - cos**2, 0, None))
    bound = np.sqrt(64) * np.abs(y).max(axis=1) / (2**bits * np.linalg.norm(y, axis=1))
    assert np.all(sines[bits] <= bound + 1e-5)
    assert sines[bits].mean() < 0.7 * sines[bits - 1].mean()


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_code_layout_planes_then_float32_factor(bits: int) -> None:
    rng = np.random.default_rng(5)
    docs = clustered(rng, 50, 37)  # 37 dims: 5 bytes per plane, 3 padding bits
    quantizer = RaBitQQuantizer(bits=bits, rotation="hadamard").fit(docs)
    codes = quantizer.encode(docs)
    assert (
        codes.dtype == np.uint8 and codes.shape == (50, bits * 5 + 4) and quantizer.code_bytes == bits * 5 + 4
    )
    planes = np.unpackbits(codes[:, : bits * 5].reshape(50, bits, 5), axis=2)
    assert not planes[:, :, 37:].any()  # padding bits are zero
    levels = sum(planes[:, p, :37].astype(np.int64) << p for p in range(bits))
    y = hadamard_transform(docs - docs.mean(axis=0), quantizer.signs_)
    u = 2 * levels - (2**bits - 1)
    np.testing.assert_array_equal(np.sign(u), np.where(y >= 0, 1, -1))  # every level keeps the sign
    factor = codes[:, bits * 5 :].copy().view("<f4")[:, 0]
    np.testing.assert_allclose(factor, (y * y).sum(1) / (u * y).sum(1), rtol=1e-5)
    form = quantizer.bit_plane_form(docs[:3], codes)
    np.testing.assert_allclose(form.row_scale, factor)
    manual = (
        form.row_scale[None, :]
        * (
            sum(form.plane_coefs[p] * (form.weights @ planes[:, p, :37].T) for p in range(bits))
            + form.query_offset[:, None]
        )
        + form.row_bias[None, :]
        + form.query_bias[:, None]
    )
    np.testing.assert_allclose(quantizer.score_all(docs[:3], codes), manual, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        {"bits": 1, "rotation": "none", "center": False, "correct": False},
        {"bits": 1, "rotation": "itq", "magnitudes": True, "itq_iterations": 5, "itq_restarts": 2},
        {"bits": 2, "rotation": "random"},
        {"bits": 3, "rotation": "hadamard", "correct": False},
        {"bits": 4, "rotation": "itq", "itq_iterations": 3},
    ],
)
def test_decode_score_and_scan_agree(params: dict) -> None:
    """decode gives the vector whose dot with a query is the estimate; score (gathered codes) and
    scan_topk (exact top-k of score_all, ties to the smaller row) agree with it."""
    rng = np.random.default_rng(1)
    docs, queries = clustered(rng, 120, 45), clustered(rng, 4, 45)
    quantizer = RaBitQQuantizer(**params).fit(docs)
    codes = quantizer.encode(docs)
    reference = queries @ quantizer.decode(codes).T
    all_scores = quantizer.score_all(queries, codes)
    np.testing.assert_allclose(all_scores, reference, rtol=1e-4, atol=1e-5)
    pick = rng.integers(0, 120, (4, 9))
    np.testing.assert_allclose(
        quantizer.score(queries, codes[pick]), np.take_along_axis(reference, pick, 1), rtol=1e-4, atol=1e-5
    )
    valid = rng.random(120) > 0.2
    with pytest.MonkeyPatch.context() as mp:  # exact float weights: the scan is the brute force
        mp.setattr(base, "SCAN_QUERY_BITS", None)
        scores, rows = quantizer.scan_topk(queries, codes, 10, valid=valid)
    masked = np.where(valid, all_scores, -np.inf)
    for i in range(4):
        order = np.lexsort((np.arange(120), -masked[i].astype(np.float64)))[:10]
        np.testing.assert_array_equal(rows[i], order)
        np.testing.assert_allclose(scores[i], masked[i, order], rtol=1e-5, atol=1e-6)
    # the default popcount scan (8-bit query levels) returns estimates within the quantization bound
    scores8, rows8 = quantizer.scan_topk(queries, codes, 10, valid=valid)
    assert valid[rows8].all()
    form = quantizer.bit_plane_form(queries, codes)
    delta = (form.weights.max(1) - form.weights.min(1)) / 255
    bound = delta * quantizer.code_dim * form.plane_coefs.sum() * np.abs(form.row_scale).max() / 2
    exact = np.take_along_axis(all_scores, rows8, 1)
    assert (np.abs(scores8 - exact) <= bound[:, None] + 1e-5).all()


def test_estimates_rank_better_with_more_bits() -> None:
    rng = np.random.default_rng(9)
    docs, queries = clustered(rng, 500, 64), clustered(rng, 20, 64)
    exact = queries @ docs.T
    errors = []
    for bits in (1, 2, 3, 4):
        quantizer = RaBitQQuantizer(bits=bits).fit(docs)
        errors.append(np.abs(quantizer.score_all(queries, quantizer.encode(docs)) - exact).mean())
    assert all(a > 1.5 * b for a, b in zip(errors, errors[1:], strict=False)), errors


# ---- composition and persistence ----------------------------------------------------------------------
def test_index_saves_and_reloads_rabitq_tier(tmp_path) -> None:
    rng = np.random.default_rng(2)
    docs, queries = clustered(rng, 400, 48), clustered(rng, 5, 48)
    with Index.build(tmp_path / "i", docs, binary="rabitq", rescore=["int8"]) as index:
        scan = index.search(queries, k=8, stages=())
        full = index.search(queries, k=8)
        state = index.tiers
    quantizer = next(q for q in state.values() if isinstance(q, RaBitQQuantizer))
    expected_rows = quantizer.scan_topk(queries, quantizer.encode(docs), 8)[1]
    np.testing.assert_array_equal(scan.ids, expected_rows)  # ids default to row numbers
    with Index.open(tmp_path / "i") as reopened:
        again = reopened.search(queries, k=8, stages=())
        np.testing.assert_array_equal(again.ids, scan.ids)
        np.testing.assert_allclose(again.scores, scan.scores, rtol=1e-6)
        np.testing.assert_array_equal(reopened.search(queries, k=8).ids, full.ids)


def test_named_configurations_fit_and_round_trip_their_config() -> None:
    rng = np.random.default_rng(3)
    docs = clustered(rng, 200, 40)
    names = ["sign-asym", "itq", "rabitq", "rabitq-hadamard", "rabitq-itq", "rabitq2", "rabitq3", "rabitq4"]
    tiers = set()
    for name in names:
        quantizer = make_quantizer(name)
        assert isinstance(quantizer, RaBitQQuantizer)
        tiers.add(quantizer.name)
        copy = quantizer_from_config(quantizer.to_config())
        assert copy.get_params() == quantizer.get_params()
    assert len(tiers) == len(names)  # distinct configurations, distinct tier names
    sign = make_quantizer("sign-asym").fit(docs)
    queries = clustered(rng, 3, 40)
    ranks = np.argsort(-sign.score_all(queries, sign.encode(docs)), axis=1, kind="stable")
    expected = np.argsort(-(queries @ np.where(docs >= 0, 1.0, -1.0).T), axis=1, kind="stable")
    np.testing.assert_array_equal(ranks[:, :20], expected[:, :20])  # float query . sign(x)


def test_matryoshka_wrapper() -> None:
    rng = np.random.default_rng(4)
    docs, queries = clustered(rng, 150, 256), clustered(rng, 3, 256)
    wrapped = make_quantizer("rabitq", truncate_dim=128)
    assert isinstance(wrapped, MatryoshkaQuantizer)
    wrapped.fit(docs)
    codes = wrapped.encode(docs)
    assert codes.shape == (150, 128 // 8 + 4)
    head = docs[:, :128] / np.linalg.norm(docs[:, :128], axis=1, keepdims=True)
    qhead = queries[:, :128] / np.linalg.norm(queries[:, :128], axis=1, keepdims=True)
    alone = make_quantizer("rabitq").fit(head)
    np.testing.assert_array_equal(codes, alone.encode(head))
    np.testing.assert_allclose(
        wrapped.scan_topk(queries, codes, 5)[0], alone.scan_topk(qhead, codes, 5)[0], rtol=1e-6
    )
    restored = quantizer_from_config(wrapped.to_config()).set_state(wrapped.get_state())
    np.testing.assert_array_equal(restored.encode(docs), codes)


@pytest.mark.parametrize(
    "params",
    [
        {"bits": 0},
        {"bits": 5},
        {"bits": True},
        {"bits": "2"},
        {"rotation": "dct"},
        {"center": "yes"},
        {"correct": 1},
        {"magnitudes": None},
        {"itq_iterations": -1},
        {"itq_restarts": 0},
        {"seed": 1.5},
        {"max_samples": 0},
    ],
)
def test_bad_parameters_raise(params: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        RaBitQQuantizer(**params)
