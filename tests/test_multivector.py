"""Multi-vector retrieval: FDE encoding against a per-token reference, Chamfer against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch.exceptions import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidArgumentError,
    NonFiniteError,
)
from quantsearch.multivector.chamfer import (
    TokenTier,
    chamfer_rerank,
    chamfer_scores,
    chamfer_topk,
    heuristic_candidates,
    quantize_tokens,
    token_neighbours,
)
from quantsearch.multivector.fde import FDEConfig, FDEEncoder
from quantsearch.multivector.tokens import TokenBatch, as_token_batch


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _token_sets(rng: np.random.Generator, n: int, d: int, lo: int = 1, hi: int = 30) -> list[np.ndarray]:
    return [_unit(rng, int(rng.integers(lo, hi + 1)), d) for _ in range(n)]


def _reference_fde(enc: FDEEncoder, tokens: np.ndarray, *, document: bool) -> np.ndarray:
    """The paper's construction, one token and one partition at a time (no vectorisation)."""
    c = enc.config
    out = np.zeros(c.raw_dim, np.float64)
    for r in range(c.r_reps):
        planes = enc.simhash_[:, r * c.k_sim : (r + 1) * c.k_sim]
        proj = (
            tokens
            if enc.projection_ is None
            else tokens @ enc.projection_[:, r * c.d_proj : (r + 1) * c.d_proj]
        )
        codes = []
        for i, t in enumerate(tokens):
            if c.partition == "kmeans":  # the nearest centroid of the projected token
                assert enc.centroids_ is not None
                codes.append(int(np.argmin([np.sum((proj[i] - m) ** 2) for m in enc.centroids_[r]])))
                continue
            code = 0
            for j in range(c.k_sim):
                code = code * 2 + int(t @ planes[:, j] > 0)
            codes.append(code)
        for b in range(c.partitions):
            members = [i for i, code in enumerate(codes) if code == b]
            lo = (r * c.partitions + b) * c.block_dim
            if members:
                block = proj[members].sum(axis=0)
                out[lo : lo + c.block_dim] = block / len(members) if document else block
            elif document and c.fill_empty and c.k_sim > 0 and c.partition == "kmeans":
                # the first token of the non-empty partition whose centroid is nearest
                assert enc.centroids_ is not None
                cents = enc.centroids_[r]
                near = min(set(codes), key=lambda p: float(np.sum((cents[p] - cents[b]) ** 2)))
                out[lo : lo + c.block_dim] = proj[codes.index(near)]
            elif document and c.fill_empty and c.k_sim > 0:
                dists = [bin(code ^ b).count("1") for code in codes]
                out[lo : lo + c.block_dim] = proj[int(np.argmin(dists))]  # first token on ties
    if enc.sketch_index_ is not None:
        final = np.zeros(c.final_dim or 0, np.float64)
        for j in range(c.raw_dim):
            final[enc.sketch_index_[j]] += enc.sketch_sign_[j] * out[j]
        return final
    return out


@pytest.mark.parametrize(
    "config",
    [
        {"k_sim": 3, "r_reps": 4, "d_proj": 8},
        {"k_sim": 4, "r_reps": 2, "d_proj": None},
        {"k_sim": 0, "r_reps": 3, "d_proj": 4},
        {"k_sim": 3, "r_reps": 3, "d_proj": 8, "final_dim": 50},
        {"k_sim": 5, "r_reps": 2, "d_proj": 4, "fill_empty": False},
        {"k_sim": 3, "r_reps": 3, "d_proj": 8, "partition": "kmeans"},
        {"k_sim": 2, "r_reps": 2, "d_proj": None, "partition": "kmeans"},
        {"k_sim": 4, "r_reps": 2, "d_proj": 4, "partition": "kmeans", "fill_empty": False},
    ],
)
@pytest.mark.parametrize("backend", [None, "numpy"])  # native partition sums (when built), numpy's
def test_fde_matches_per_token_reference(config: dict, backend: str | None) -> None:
    from quantsearch.kernels import use_backend

    rng = np.random.default_rng(0)
    d = 24
    sets = _token_sets(rng, 7, d, 1, 12)
    enc = FDEEncoder(FDEConfig(dim=d, seed=3, **config)).fit(sets)  # fit: k-means partitions only
    with use_backend(backend):
        docs = enc.encode_documents(sets)
        queries = enc.encode_queries(sets)
    assert docs.shape == queries.shape == (7, enc.output_dim)
    assert docs.dtype == np.float32
    for i, s in enumerate(sets):
        np.testing.assert_allclose(docs[i], _reference_fde(enc, s, document=True), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(queries[i], _reference_fde(enc, s, document=False), rtol=1e-4, atol=1e-5)


def test_native_scatter_add_rows_checks_bounds() -> None:
    from quantsearch.kernels.backend import native_module

    native = native_module()
    if native is None:
        pytest.skip("native kernels not built")
    src = np.arange(12, dtype=np.float32)
    dst = np.zeros((2, 4), np.float32)
    native.scatter_add_rows(src, np.array([0, 4, 8, 8]), np.array([1, 0, 1, 1]), dst)
    np.testing.assert_array_equal(dst, [[4, 5, 6, 7], [16, 19, 22, 25]])
    for offsets, rows in (([9], [0]), ([-1], [0]), ([0], [2]), ([0, 1], [0])):
        with pytest.raises(ValueError):
            native.scatter_add_rows(src, np.array(offsets), np.array(rows), dst)
    np.testing.assert_array_equal(dst, [[4, 5, 6, 7], [16, 19, 22, 25]])  # nothing written


def test_native_nearest_blocks_matches_float64_argmax_and_checks_shapes() -> None:
    """The k-means assignment in C: every (token, repetition) block goes to the centroid a float64
    argmax picks (wherever the best two differ by more than float32 noise), exact ties to the smaller
    centroid, and shapes that disagree are refused before anything is written."""
    from quantsearch.kernels.backend import native_module

    native = native_module()
    if native is None:
        pytest.skip("native kernels not built")
    rng = np.random.default_rng(7)
    t, reps, parts, width, first = 500, 5, 16, 8, 3
    y = rng.standard_normal((t, first + reps * width + 2), dtype=np.float32)
    centroids = rng.standard_normal((reps, parts, width), dtype=np.float32)
    centroids[:, 9] = centroids[:, 4]  # exact ties: 4 wins over 9
    half = (0.5 * np.einsum("rpd,rpd->rp", centroids, centroids)).astype(np.float32)
    out = np.full((t, reps), -1, np.int64)
    native.nearest_blocks(y, first, np.ascontiguousarray(centroids.transpose(0, 2, 1)), half, out)
    blocks = y[:, first : first + reps * width].reshape(t, reps, width).astype(np.float64)
    scores = np.einsum("trd,rpd->trp", blocks, centroids.astype(np.float64)) - half[None].astype(np.float64)
    top2 = np.sort(scores, axis=2)[:, :, -2:]
    clear = (top2[:, :, 1] - top2[:, :, 0]) > 1e-4
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(out[clear], scores.argmax(axis=2)[clear])
    assert not np.any(out == 9) and np.any(out == 4)
    centroids_t = np.ascontiguousarray(centroids.transpose(0, 2, 1))
    for args in (
        (y, first + 3, centroids_t, half),  # blocks run past the row
        (y, first, centroids_t, half[:, :-1]),
        (y, first, centroids_t[:-1], half),
    ):
        bad = np.full((t, reps), -1, np.int64)
        with pytest.raises(ValueError):
            native.nearest_blocks(*args, bad)
        assert (bad == -1).all()


def test_fde_chunks_do_not_change_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    import quantsearch.multivector.fde as fde

    rng = np.random.default_rng(1)
    sets = _token_sets(rng, 40, 16, 1, 20)
    enc = FDEEncoder(FDEConfig(dim=16, k_sim=3, r_reps=2, d_proj=4))
    whole = enc.encode_documents(sets)
    monkeypatch.setattr(fde, "_CHUNK_VALUES", 8 * 2 * 5)  # a few texts per chunk, some alone
    np.testing.assert_allclose(enc.encode_documents(sets), whole, rtol=1e-5, atol=1e-6)  # BLAS blocking


def test_fde_inner_product_tracks_chamfer() -> None:
    rng = np.random.default_rng(2)
    d = 32
    # documents: clusters around a few centres, queries: noisy copies of some document's tokens
    docs = [_unit(rng, 20, d) for _ in range(60)]
    queries = [
        docs[i][rng.choice(20, 5, replace=False)] + 0.05 * rng.standard_normal((5, d)).astype(np.float32)
        for i in range(0, 60, 6)
    ]
    queries = [q / np.linalg.norm(q, axis=1, keepdims=True) for q in queries]
    qb, db = as_token_batch(queries), as_token_batch(docs)
    exact = chamfer_scores(qb, db)
    enc = FDEEncoder(FDEConfig(dim=d, k_sim=4, r_reps=20, d_proj=None))
    approx = enc.encode_queries(qb) @ enc.encode_documents(db).T
    corr = [np.corrcoef(exact[i], approx[i])[0, 1] for i in range(exact.shape[0])]
    assert np.median(corr) > 0.8
    # the document each query was cut from is the FDE's top hit
    assert (approx.argmax(axis=1) == np.arange(0, 60, 6)).mean() >= 0.9


def test_fde_config_validation() -> None:
    with pytest.raises(InvalidArgumentError, match="k_sim"):
        FDEConfig(dim=8, k_sim=13)
    with pytest.raises(InvalidArgumentError, match="d_proj"):
        FDEConfig(dim=8, d_proj=0)
    with pytest.raises(InvalidArgumentError):
        FDEConfig.from_dict({"dim": 8, "bogus": 1})
    assert FDEConfig.from_dict(FDEConfig(dim=8, final_dim=64).to_dict()) == FDEConfig(dim=8, final_dim=64)
    assert FDEConfig(dim=384).output_dim == 20 * 32 * 16
    enc = FDEEncoder(FDEConfig(dim=8))
    with pytest.raises(DimensionMismatchError):
        enc.encode_documents([np.ones((3, 9), np.float32)])
    with pytest.raises(EmptyInputError):
        enc.encode_queries([np.ones((3, 8), np.float32), np.ones((0, 8), np.float32)])
    with pytest.raises(NonFiniteError):
        enc.encode_queries([np.full((2, 8), np.nan, np.float32)])
    with pytest.raises(InvalidArgumentError, match="offsets"):
        enc.encode_queries((np.ones((4, 8), np.float32), np.array([0, 2, 5])))


def _chamfer_loop(q: list[np.ndarray], d: list[np.ndarray]) -> np.ndarray:
    return np.array([[float(np.max(qi @ dj.T, axis=1).sum()) for dj in d] for qi in q])


def test_chamfer_scores_and_topk_match_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import quantsearch.multivector.chamfer as ch

    rng = np.random.default_rng(3)
    qs, ds = _token_sets(rng, 6, 16, 1, 8), _token_sets(rng, 50, 16, 1, 25)
    ref = _chamfer_loop(qs, ds)
    qb, db = as_token_batch(qs), as_token_batch(ds)
    np.testing.assert_allclose(chamfer_scores(qb, db), ref, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(ch, "_BLOCK_VALUES", 100)  # many small blocks, some single documents
    np.testing.assert_allclose(chamfer_scores(qb, db), ref, rtol=1e-5, atol=1e-5)
    scores, rows = chamfer_topk(qb, db, 5)
    np.testing.assert_array_equal(rows, np.argsort(-ref, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(scores, np.sort(ref, axis=1)[:, ::-1][:, :5], rtol=1e-5)


def test_int8_rerank_close_to_exact_and_reads_only_candidates() -> None:
    rng = np.random.default_rng(4)
    qs, ds = _token_sets(rng, 5, 32, 2, 8), _token_sets(rng, 40, 32, 1, 20)
    qb, db = as_token_batch(qs), as_token_batch(ds)
    codes, scales = quantize_tokens(db.vectors)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127
    rows = np.array([rng.choice(40, 6, replace=False) for _ in range(5)])
    rows[1, 4:] = -1
    got = chamfer_rerank(qb, TokenTier([codes], [scales], [db.offsets]), rows)
    ref = _chamfer_loop(qs, ds)
    expect = np.take_along_axis(ref, np.maximum(rows, 0), axis=1)
    np.testing.assert_allclose(got[rows >= 0], expect[rows >= 0], atol=0.02)
    assert np.isnan(got[1, 4:]).all()
    # corrupting tokens of documents that are not candidates changes nothing
    others = np.setdiff1d(np.arange(40), rows[rows >= 0])
    spoiled = codes.copy()
    for j in others:
        spoiled[db.offsets[j] : db.offsets[j + 1]] = 127
    np.testing.assert_array_equal(chamfer_rerank(qb, TokenTier([spoiled], [scales], [db.offsets]), rows), got)
    # the same documents cut into three segments score the same
    cuts = [0, 13, 14, 40]
    tier = TokenTier(
        [codes[db.offsets[a] : db.offsets[b]] for a, b in zip(cuts, cuts[1:], strict=False)],
        [scales[db.offsets[a] : db.offsets[b]] for a, b in zip(cuts, cuts[1:], strict=False)],
        [db.offsets[a : b + 1] - db.offsets[a] for a, b in zip(cuts, cuts[1:], strict=False)],
    )
    np.testing.assert_allclose(chamfer_rerank(qb, tier, rows), got, rtol=1e-6)


def test_heuristic_candidates_are_documents_of_nearest_tokens() -> None:
    rng = np.random.default_rng(5)
    qs, ds = _token_sets(rng, 3, 16, 2, 5), _token_sets(rng, 30, 16, 1, 10)
    qb, db = as_token_batch(qs), as_token_batch(ds)
    nb = token_neighbours(qb, db, 4)
    sims = qb.vectors @ db.vectors.T
    np.testing.assert_array_equal(nb, np.argsort(-sims, axis=1, kind="stable")[:, :4])
    owner = np.repeat(np.arange(30), db.lengths)
    cands = heuristic_candidates(nb, qb, db, 2)
    for i in range(3):
        expect = np.unique(owner[nb[qb.offsets[i] : qb.offsets[i + 1], :2]])
        np.testing.assert_array_equal(cands[i], expect)
    with pytest.raises(InvalidArgumentError):
        heuristic_candidates(nb, qb, db, 5)


def test_token_batch_subset_and_validation() -> None:
    rng = np.random.default_rng(6)
    sets = _token_sets(rng, 5, 8)
    batch = as_token_batch(sets)
    sub = batch.subset(np.array([3, 0]))
    np.testing.assert_array_equal(sub.item(0), sets[3])
    np.testing.assert_array_equal(sub.item(1), sets[0])
    same = as_token_batch((batch.vectors, batch.offsets))
    assert isinstance(same, TokenBatch) and same.n == 5
    with pytest.raises(EmptyInputError):
        as_token_batch([])
    with pytest.raises(InvalidArgumentError):
        as_token_batch("text")


def _anisotropic(rng: np.random.Generator, d: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token sets sharing a strong common direction (as a sentence-transformers model's tokens do)."""
    common = _unit(rng, 1, d)[0]
    topics = _unit(rng, 40, d)
    docs = []
    for _ in range(300):
        mine = topics[rng.choice(40, 4, replace=False)]
        length = int(rng.integers(20, 60))
        x = 1.2 * common + mine[rng.integers(0, 4, length)] + 0.8 * rng.standard_normal((length, d))
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    queries = []
    for i in rng.choice(300, 40, replace=False):
        x = docs[i][rng.choice(docs[i].shape[0], 6, replace=False)] + 0.5 * rng.standard_normal((6, d))
        queries.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return docs, queries


@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_partitions_rank_chamfer_better_on_anisotropic_tokens(seed: int) -> None:
    rng = np.random.default_rng(seed)
    docs, queries = _anisotropic(rng, 48)
    qb, db = as_token_batch(queries), as_token_batch(docs)
    truth = np.argsort(-chamfer_scores(qb, db), axis=1)[:, :10]
    recall = {}
    for partition in ("simhash", "kmeans"):
        enc = FDEEncoder(FDEConfig(dim=48, k_sim=4, r_reps=10, d_proj=8, partition=partition, seed=seed))
        enc.fit(db)
        top = np.argsort(-(enc.encode_queries(qb) @ enc.encode_documents(db).T), axis=1)[:, :30]
        recall[partition] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, top, strict=True)])
    assert recall["kmeans"] >= recall["simhash"] + 0.03, recall


def test_kmeans_partitions_need_a_fit_and_old_configs_read_as_simhash() -> None:
    from quantsearch.exceptions import NotFittedError

    enc = FDEEncoder(FDEConfig(dim=8, k_sim=2, r_reps=2, d_proj=4, partition="kmeans"))
    assert not enc.is_fitted
    with pytest.raises(NotFittedError):
        enc.encode_queries([np.ones((2, 8), np.float32)])
    # fewer tokens than partitions: duplicated starts, every token still lands in a partition
    enc.fit([_unit(np.random.default_rng(0), 3, 8)])
    assert enc.is_fitted and enc.centroids_ is not None and enc.centroids_.shape == (2, 4, 4)
    assert np.isfinite(enc.encode_documents([_unit(np.random.default_rng(1), 5, 8)])).all()
    with pytest.raises(InvalidArgumentError, match="partition"):
        FDEConfig(dim=8, partition="voronoi")
    saved = {k: v for k, v in FDEConfig(dim=8).to_dict().items() if k != "partition"}
    assert FDEConfig.from_dict(saved).partition == "simhash"
