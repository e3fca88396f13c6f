"""Learned 1-bit codes (quantization-aware head): math, training, estimator, persistence, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.cli import main
from quantsearch.exceptions import CorruptIndexError, InvalidArgumentError, NotFittedError
from quantsearch.quantization import (
    LearnedBinaryQuantizer,
    base,
    load_quantizer,
    make_quantizer,
    quantizer_from_config,
    save_quantizer,
)

torch = pytest.importorskip("torch")
from quantsearch import training  # noqa: E402 - after the torch check

DIM = 32


def clustered(n: int, dim: int = DIM, clusters: int = 12, seed: int = 0) -> np.ndarray:
    """Unit vectors around a shared mean direction and a few cluster centres (like text embeddings)."""
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(dim) * 1.5
    centres = rng.standard_normal((clusters, dim))
    x = mean + centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_scores(q: LearnedBinaryQuantizer, queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Brute force of the estimator from the fitted arrays: alpha <D^T q, sign(f(x - c))> + <q, c>."""
    r = docs.astype(np.float64) - q.center_
    z = r @ q.encoder_.T
    if q.hidden_in_.size:
        z = z + np.maximum(r @ q.hidden_in_.T + q.hidden_bias_, 0) @ q.hidden_out_.T
    b = np.where(z > 0, 1.0, -1.0)
    alpha = np.float16((r * r).sum(1) / (r * (b @ q.decoder_.T)).sum(1)).astype(np.float64)
    return (queries @ q.decoder_) @ b.T * alpha[None, :] + (queries @ q.center_)[:, None]


# ---- math of the surrogate and of training -----------------------------------------------------------
def test_surrogate_converges_to_sign_as_the_scale_grows() -> None:
    z = torch.linspace(-3, 3, 601)
    z = z[z.abs() >= 0.05]  # away from 0, where sign jumps
    sigma = torch.tensor(1.0)
    gaps = []
    for beta in (1.0, 10.0, 100.0):
        soft = training.surrogate_sign(z, beta, sigma, straight_through=False)
        gap = float((soft - torch.sign(z)).abs().max())
        assert gap <= 2 * np.exp(-2 * beta * 0.05) + 1e-6  # |tanh(t) - sign(t)| <= 2 exp(-2|t|)
        gaps.append(gap)
    assert gaps[0] > gaps[1] > gaps[2]
    # straight-through: forward is exactly sign, gradient is the tanh surrogate's
    zg = z.clone().requires_grad_(True)
    hard = training.surrogate_sign(zg, 2.0, sigma, straight_through=True)
    torch.testing.assert_close(hard.detach(), torch.sign(z), atol=1e-6, rtol=0)  # up to rounding
    hard.sum().backward()
    expected = 2.0 * (1 - torch.tanh(2.0 * z) ** 2)
    torch.testing.assert_close(zg.grad, expected)


def test_gradients_flow_and_the_loss_decreases() -> None:
    x = clustered(400)
    init = training.initial_head(x, DIM, hidden=8, seed=0)
    trained, losses = training._train(init, x, np.arange(x.shape[0]), 8, 6, 1e-3, 0.05, 0, 1, None)
    assert losses[-1] < losses[0]
    for name in ("encoder", "decoder", "hidden_out"):
        assert not np.allclose(trained[name], init[name]), name
    np.testing.assert_array_equal(trained["center"], init["center"])


def test_training_improves_agreement_over_the_itq_start() -> None:
    x = clustered(800, seed=3)
    result = training.train_head(x, bits=DIM, epochs=20, lr=1e-3, temperature=0.1, seed=0, threads=1)
    report = result.report
    assert report["held_out"] == 80
    assert report["agreement_trained"] > report["agreement_before"] + 0.03
    assert report["kept"] == "trained"


def test_initial_head_is_itq_with_per_bit_magnitudes() -> None:
    x = clustered(300)
    for bits in (DIM // 2, DIM, 2 * DIM + 3):
        head = training.initial_head(x, bits, seed=1)
        w = head["encoder"]
        assert w.shape == (bits, DIM)
        np.testing.assert_allclose(head["center"], x.mean(0), atol=1e-6)
        # rows are orthonormal within each block of at most DIM bits
        for start in range(0, bits, DIM):
            block = w[start : start + DIM]
            np.testing.assert_allclose(block @ block.T, np.eye(block.shape[0]), atol=1e-4)
        mags = np.abs((x - head["center"]) @ w.T).mean(0)
        np.testing.assert_allclose(head["decoder"], w.T * mags, rtol=1e-5, atol=1e-7)


# ---- codes and scores ------------------------------------------------------------------------------
@pytest.mark.parametrize(("bits", "hidden"), [(None, 0), (20, 0), (70, 6)])
def test_codes_and_scores_match_the_brute_force_estimator(bits: int | None, hidden: int) -> None:
    x = clustered(300, seed=5)
    queries = clustered(7, seed=6)
    q = LearnedBinaryQuantizer(bits, hidden=hidden, epochs=2, seed=1).fit(x)
    n_bits = bits or DIM
    assert q.code_bytes == (n_bits + 7) // 8 + 2
    codes = q.encode(x)
    assert codes.shape == (300, q.code_bytes) and codes.dtype == np.uint8
    ref = reference_scores(q, queries.astype(np.float64), x)
    np.testing.assert_allclose(q.score_all(queries, codes), ref, rtol=1e-4, atol=1e-4)
    cand = np.random.default_rng(0).integers(0, 300, (7, 9))
    np.testing.assert_allclose(
        q.score(queries, codes[cand]), np.take_along_axis(ref, cand, 1), rtol=1e-4, atol=1e-4
    )
    # decode is the reconstruction whose inner product is the score
    np.testing.assert_allclose(queries @ q.decode(codes).T, ref, rtol=1e-4, atol=1e-4)
    # the candidate scan quantizes the query weights to SCAN_QUERY_BITS levels (popcount kernel):
    # each returned score is within the quantization bound of the exact estimate, and nothing left
    # out beats the k-th returned row by more than twice that bound
    w, _ = q.query_form(queries)
    delta = (w.max(1) - w.min(1)) / (2**base.SCAN_QUERY_BITS - 1)
    _, alpha = q.split_codes(codes)
    # |<w, s> - estimate| <= 2 * delta / 2 * bits for s = 2b - 1
    bound = (delta[:, None] * n_bits) * np.abs(alpha)[None, :] + 1e-4
    scores, rows = q.scan_topk(queries, codes, 5)
    got = np.take_along_axis(ref, rows, 1)
    assert (np.abs(scores - got) <= np.take_along_axis(bound, rows, 1)).all()
    assert (ref.max(1) <= got.max(1) + 2 * bound.max(1)).all()
    # with exact float weights the scan is the brute-force top-k of the estimator itself
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "SCAN_QUERY_BITS", None)
        _, rows = q.scan_topk(queries, codes, 5)
    np.testing.assert_array_equal(rows, np.argsort(-ref, axis=1, kind="stable")[:, :5])
    # the bits are the signs of the projection, packed in np.packbits order
    r = x - q.center_
    z = r @ q.encoder_.T
    if hidden:
        z = z + np.maximum(r @ q.hidden_in_.T + q.hidden_bias_, 0) @ q.hidden_out_.T
    np.testing.assert_array_equal(codes[:, : (n_bits + 7) // 8], np.packbits(z > 0, axis=1))


def test_the_estimator_is_unbiased_along_each_document() -> None:
    x = clustered(200, seed=8)
    q = LearnedBinaryQuantizer(epochs=0).fit(x)
    r = x - q.center_
    recon = q.decode(q.encode(x)) - q.center_
    # <x - c, x_hat - c> = ||x - c||^2 (up to the float16 factor)
    np.testing.assert_allclose((r * recon).sum(1), (r * r).sum(1), rtol=2e-3)


def test_learned_codes_beat_sign_bits_at_ranking() -> None:
    x = clustered(600, seed=9)
    queries = clustered(50, seed=10)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    learned = LearnedBinaryQuantizer(epochs=0).fit(x)
    _, rows = learned.scan_topk(queries, learned.encode(x), 10)
    sign = make_quantizer("binary").fit(x)
    _, sign_rows = sign.scan_topk(queries, sign.encode(x), 10)

    def overlap(a: np.ndarray) -> float:
        return float(np.mean([np.intersect1d(u, v).size for u, v in zip(a, exact, strict=True)]))

    assert overlap(rows) > overlap(sign_rows) + 1


# ---- persistence ------------------------------------------------------------------------------------
def test_saved_with_an_index_and_reopened(tmp_path: Path) -> None:
    x = clustered(300, seed=11)
    queries = clustered(5, seed=12)
    quantizer = LearnedBinaryQuantizer(epochs=1, seed=2)
    index = Index.build(tmp_path / "idx", x, binary=quantizer, rescore=None)
    before = index.search(queries, k=5, with_payload=False)
    index.close()
    reopened = Index.open(tmp_path / "idx")
    after = reopened.search(queries, k=5, with_payload=False)
    np.testing.assert_array_equal(np.asarray(before.ids), np.asarray(after.ids))
    np.testing.assert_allclose(before.scores, after.scores)
    tier = reopened.info()["tiers"][0]
    assert tier["name"] == "qat" and tier["bytes_per_vector"] == DIM // 8 + 2
    reopened.close()


def test_train_file_round_trip_and_reuse_in_an_index(tmp_path: Path) -> None:
    x = clustered(300, seed=13)
    queries = clustered(5, seed=14)
    trained = LearnedBinaryQuantizer(epochs=1, hidden=4, seed=3).fit(x)
    path = save_quantizer(trained, tmp_path / "head.npz")
    loaded = load_quantizer(path)
    assert isinstance(loaded, LearnedBinaryQuantizer) and loaded.weights == str(path)
    np.testing.assert_array_equal(loaded.encode(x), trained.encode(x))
    # the index calibrates by loading the trained head: no new training, same codes and scores
    index = Index.create(tmp_path / "idx", DIM, binary=load_quantizer(path), rescore=None, calibration=x[:50])
    index.add(x)
    res = index.search(queries, k=4, with_payload=False)
    _, rows = trained.scan_topk(queries, trained.encode(x), 4)
    np.testing.assert_array_equal(np.asarray(res.ids), rows)
    index.close()
    path.unlink()  # the index holds its own copy of the head
    reopened = Index.open(tmp_path / "idx")
    np.testing.assert_array_equal(np.asarray(reopened.search(queries, k=4, with_payload=False).ids), rows)
    reopened.close()


def test_registered_name_and_config_round_trip() -> None:
    q = make_quantizer("qat")
    assert isinstance(q, LearnedBinaryQuantizer) and q.name == "qat"
    copy = quantizer_from_config(json.loads(json.dumps(LearnedBinaryQuantizer(48, hidden=3).to_config())))
    assert copy.get_params() == LearnedBinaryQuantizer(48, hidden=3).get_params()
    assert copy.name == "qat48"


# ---- bad inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [{"bits": 0}, {"bits": 2.5}, {"hidden": -1}, {"epochs": -1}, {"lr": 0}, {"temperature": float("nan")},
     {"max_samples": 1}, {"weights": 3}],
)  # fmt: skip
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        LearnedBinaryQuantizer(**kwargs)


def test_bad_use(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        LearnedBinaryQuantizer().encode(np.ones((1, 4), np.float32))
    with pytest.raises(InvalidArgumentError):
        load_quantizer(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CorruptIndexError):
        load_quantizer(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(CorruptIndexError):
        load_quantizer(tmp_path / "other.npz")
    path = save_quantizer(LearnedBinaryQuantizer(epochs=0).fit(clustered(50)), tmp_path / "h.npz")
    with pytest.raises(InvalidArgumentError, match="takes 32-d"):
        LearnedBinaryQuantizer(weights=str(path)).fit(np.ones((5, 8), np.float32))


# ---- command line -----------------------------------------------------------------------------------
def test_cli_train_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = clustered(300, seed=15)
    np.save(tmp_path / "docs.npy", x)
    out = tmp_path / "head.npz"
    code = main(["train", str(tmp_path / "docs.npy"), "--out", str(out), "--epochs", "2", "--bits", "40"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "loss" in text and "agreement" in text and "wrote" in text
    quantizer = load_quantizer(out)
    assert quantizer.n_bits_ == 40 and quantizer.code_bytes == 5 + 2
    code = main(
        ["train", str(tmp_path / "docs.npy"), "--out", str(tmp_path / "h2.npz"), "--epochs", "0", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["kept"] == "itq" and report["code_bytes"] == DIM // 8 + 2
    from quantsearch.ingest import candidate_quantizer

    assert isinstance(candidate_quantizer(str(out)), LearnedBinaryQuantizer)
    assert candidate_quantizer("qat").name == "qat"


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["missing.npy", "--out", "h.npz"], "not found"),
        ("docs.npy", ["docs.npy", "--out", "h.txt"], ".npz"),
        ("docs.npy", ["docs.npy", "--out", "nowhere/h.npz"], "does not exist"),
        ("docs.npy", ["docs.npy", "--out", "h.npz", "--bits", "0"], "bits"),
        ("docs.npy", ["docs.npy", "--out", "h.npz", "--lr", "-1"], "lr"),
        ("ints.npy", ["ints.npy", "--out", "h.npz"], "floating"),
        ("flat.npy", ["flat.npy", "--out", "h.npz"], "2-D"),
        ("bad.npy", ["bad.npy", "--out", "h.npz"], "npy"),
    ],
)
def test_cli_train_bad_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, setup, args, message
) -> None:
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "docs.npy", clustered(30))
    np.save(tmp_path / "ints.npy", np.ones((5, 4), np.int64))
    np.save(tmp_path / "flat.npy", np.ones(8, np.float32))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    code = main(["train", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "h.npz").exists()
