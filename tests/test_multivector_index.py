"""MultiVectorIndex: persistence, search against a brute-force Chamfer, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quantsearch.exceptions import (
    CorruptIndexError,
    DimensionMismatchError,
    DuplicateIdError,
    IndexExistsError,
    InvalidArgumentError,
)
from quantsearch.multivector import (
    FDEConfig,
    MultiVectorIndex,
    as_token_batch,
    chamfer_scores,
    quantize_tokens,
)

DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _corpus(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    # documents mix a few of 12 topics, so some documents are clearly closer to a query than others
    topics = _unit(rng.standard_normal((12, DIM)))
    docs = []
    for _ in range(n):
        picks = rng.choice(12, 3, replace=False)
        length = int(rng.integers(3, 25))
        base = topics[rng.choice(picks, length)]
        docs.append(_unit(base + 0.6 * rng.standard_normal((length, DIM))))
    return docs


def _queries(rng: np.random.Generator, docs: list[np.ndarray], nq: int) -> list[np.ndarray]:
    out = []
    for i in rng.choice(len(docs), nq, replace=False):
        toks = docs[i][rng.choice(docs[i].shape[0], min(4, docs[i].shape[0]), replace=False)]
        out.append(_unit(toks + 0.3 * rng.standard_normal(toks.shape)))
    return out


def _dequantized(docs: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for d in docs:
        codes, scales = quantize_tokens(d)
        out.append(codes.astype(np.float32) * scales[:, None])
    return out


def _create(path, **kwargs) -> MultiVectorIndex:
    fde = kwargs.pop("fde", FDEConfig(dim=DIM, k_sim=3, r_reps=10, d_proj=8))
    return MultiVectorIndex.create(path, dim=DIM, fde=fde, embedder=_NoModel(), **kwargs)  # type: ignore[arg-type]


class _NoModel:
    """Stands in for a TokenEmbedder in tests that pass token arrays (no model is loaded)."""

    name = "none"
    normalize = True
    max_seq_length = None

    def identity(self) -> dict:
        return {"model": None, "backend": "sentence-transformers", "normalize": True, "max_seq_length": None}


def test_search_with_every_candidate_equals_brute_force_chamfer(tmp_path) -> None:
    rng = np.random.default_rng(0)
    docs = _corpus(rng, 120)
    queries = _queries(rng, docs, 8)
    idx = _create(tmp_path / "mv")
    idx.add([f"d{i}" for i in range(70)], tokens=docs[:70])
    idx.add([f"d{i}" for i in range(70, 120)], tokens=docs[70:])  # two segments
    assert len(idx) == 120
    res = idx.search(queries, k=10, candidates=120)
    exact = chamfer_scores(as_token_batch(queries), as_token_batch(_dequantized(docs)))
    order = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    assert res.ids.tolist() == [[f"d{j}" for j in row] for row in order]
    np.testing.assert_allclose(res.scores, np.take_along_axis(exact, order, axis=1), rtol=1e-5)
    # reopened from disk: the same answers
    again = MultiVectorIndex.open(tmp_path / "mv", embedder=_NoModel())
    res2 = again.search(queries, k=10, candidates=120)
    assert res2.ids.tolist() == res.ids.tolist()
    np.testing.assert_array_equal(res2.scores, res.scores)
    # brute force over every document's int8 tokens: the same top 10
    exact_res = again.search_exact(queries, k=10)
    assert exact_res.ids.tolist() == res.ids.tolist()
    np.testing.assert_allclose(exact_res.scores, res.scores, rtol=1e-6)
    assert again.get("d3") == {"id": "d3", "text": None, "metadata": None}
    assert again.ids[:2] == ["d0", "d1"] and again.id_type == "str" and again.segments == 2


def test_chamfer_rerank_hints_the_candidates_token_pages(tmp_path, monkeypatch) -> None:
    from quantsearch.kernels.backend import native_module

    if native_module() is None:
        pytest.skip("read-ahead needs the native kernels")
    rng = np.random.default_rng(3)
    docs = _corpus(rng, 60)
    idx = _create(tmp_path / "mv")
    idx.add(list(range(60)), tokens=docs)
    tier = idx._view.tier
    assert tier.readahead.active  # the int8 token codes are memory-mapped
    hinted: list[np.ndarray] = []
    original = type(tier.readahead).hint

    def spy(self, starts, rows):  # type: ignore[no-untyped-def]
        hinted.append(np.array(rows))
        return original(self, starts, rows)

    monkeypatch.setattr(type(tier.readahead), "hint", spy)
    res = idx.search(_queries(rng, docs, 2), k=5, candidates=7)
    assert len(hinted) == 2  # one hint per query: its candidates' token rows
    for rows in hinted:
        lengths = np.diff(tier.offsets[0])
        assert rows.size == sum(lengths[np.unique(np.searchsorted(tier.offsets[0], rows, side="right") - 1)])
    assert res.ids.shape == (2, 5)


def test_fde_candidates_find_the_chamfer_top10(tmp_path) -> None:
    rng = np.random.default_rng(1)
    docs = _corpus(rng, 300)
    sources = rng.choice(300, 20, replace=False)
    queries = []
    for i in sources:  # a few tokens of one document, lightly perturbed
        toks = docs[i][rng.choice(docs[i].shape[0], min(4, docs[i].shape[0]), replace=False)]
        queries.append(_unit(toks + 0.1 * rng.standard_normal(toks.shape)))
    idx = _create(tmp_path / "mv", fde=FDEConfig(dim=DIM, k_sim=3, r_reps=20, d_proj=None))
    idx.add(list(range(300)), tokens=docs)
    exact = chamfer_scores(as_token_batch(queries), as_token_batch(_dequantized(docs)))
    top10 = np.argsort(-exact, axis=1, kind="stable")[:, :10]

    def recall(res) -> float:
        return float(np.mean([len(set(top10[i]) & set(res.ids[i])) / 10 for i in range(20)]))

    assert res_ids_dtype(idx.search(queries, k=10, candidates=10)) == np.int64
    by_n = [recall(idx.search(queries, k=10, candidates=n)) for n in (10, 60, 150, 300)]
    # a fifth of the corpus holds well over twice the chance share (0.2) of the exact top 10
    assert by_n[1] >= 0.45
    assert by_n == sorted(by_n) and by_n[-1] == 1.0
    # the document each query was cut from is among the 60 candidates (Chamfer ranks it first)
    res = idx.search(queries, k=1, candidates=60)
    assert (res.ids[:, 0] == sources).mean() >= 0.9
    # the FDE scan alone, without the rerank, still beats chance by far
    assert recall(idx.search(queries, k=10, rerank=False)) > 0.1


def res_ids_dtype(res) -> np.dtype:
    return res.ids.dtype


def test_info_bytes_and_padding(tmp_path) -> None:
    rng = np.random.default_rng(2)
    docs = _corpus(rng, 5)
    idx = _create(tmp_path / "mv")
    assert idx.search(_queries(rng, docs, 2), k=3).ids.tolist() == [[-1] * 3] * 2
    idx.add([1, 2, 3, 4, 5], tokens=docs)
    info = idx.info()
    tokens = sum(d.shape[0] for d in docs)
    assert info["tokens"] == tokens
    fde_dim = idx.fde_config.output_dim
    assert info["disk_bytes"] == tokens * (DIM + 4) + 6 * 8 + 5 * fde_dim  # tokens, offsets, int8 FDE
    assert info["fde8_disk_bytes"] == 5 * fde_dim and info["rescore"] == "int8"
    assert info["ram_bytes"] == 5 * idx._quantizer.code_bytes
    res = idx.search(_queries(rng, docs, 2), k=8)
    assert res.ids.shape == (2, 8)
    assert (res.ids[:, 5:] == -1).all() and np.isnan(res.scores[:, 5:]).all()


def test_bad_input_leaves_the_index_unchanged(tmp_path) -> None:
    rng = np.random.default_rng(3)
    docs = _corpus(rng, 10)
    idx = _create(tmp_path / "mv")
    idx.add(list(range(10)), tokens=docs)
    before = (tmp_path / "mv" / "manifest.json").read_bytes()
    with pytest.raises(DuplicateIdError):
        idx.add([3], tokens=docs[:1])
    with pytest.raises(DuplicateIdError):
        idx.add([11, 11], tokens=docs[:2])
    with pytest.raises(DimensionMismatchError):
        idx.add([12], tokens=[np.ones((2, DIM + 1), np.float32)])
    with pytest.raises(InvalidArgumentError):
        idx.add(["x"], tokens=docs[:1])  # str ids into an int-id index
    with pytest.raises(InvalidArgumentError):
        idx.add([12, 13], tokens=docs[:1])
    with pytest.raises(InvalidArgumentError):
        idx.search("a single string")
    with pytest.raises(InvalidArgumentError):
        idx.search(_queries(rng, docs, 1), k=0)
    assert (tmp_path / "mv" / "manifest.json").read_bytes() == before
    assert len(MultiVectorIndex.open(tmp_path / "mv", embedder=_NoModel())) == 10
    with pytest.raises(IndexExistsError):
        _create(tmp_path / "mv")


def test_crash_before_commit_and_tampering(tmp_path) -> None:
    rng = np.random.default_rng(4)
    docs = _corpus(rng, 10)
    idx = _create(tmp_path / "mv")
    idx.add(list(range(5)), tokens=docs[:5])
    # a crash after the segment files but before the manifest: files of segment 1 without a commit
    seg = tmp_path / "mv" / "segments"
    (seg / "00000001.fde.npy").write_bytes(b"half")
    assert len(MultiVectorIndex.open(tmp_path / "mv", embedder=_NoModel())) == 5
    idx.add(list(range(5, 10)), tokens=docs[5:])  # the next writer removes the orphan, reuses the id
    assert len(MultiVectorIndex.open(tmp_path / "mv", embedder=_NoModel())) == 10
    # hand edits of the manifest and damaged codes are detected
    manifest = tmp_path / "mv" / "manifest.json"
    body = json.loads(manifest.read_text())
    body["dim"] = 7
    manifest.write_text(json.dumps(body))
    with pytest.raises(CorruptIndexError):
        MultiVectorIndex.open(tmp_path / "mv", embedder=_NoModel())


def test_open_without_a_recorded_model_refuses_text(tmp_path) -> None:
    # a 384-d index built from token arrays records no model: reopening it must not fall back to the
    # bundled MiniLM (384-d too, so its query vectors would be accepted and silently score garbage)
    rng = np.random.default_rng(5)
    docs = [_unit(rng.standard_normal((int(rng.integers(3, 9)), 384))) for _ in range(12)]
    fde = FDEConfig(dim=384, k_sim=2, r_reps=4, d_proj=8)
    MultiVectorIndex.create(tmp_path / "mv", dim=384, fde=fde, embedder=_NoModel()).add(  # type: ignore[arg-type]
        list(range(12)), tokens=docs
    )
    before = (tmp_path / "mv" / "manifest.json").read_bytes()
    idx = MultiVectorIndex.open(tmp_path / "mv")
    assert idx.model is None
    with pytest.raises(InvalidArgumentError, match="records no token model"):
        idx.search(["which document?"], k=3)
    with pytest.raises(InvalidArgumentError, match="records no token model"):
        idx.add([99], texts=["a new document"])
    with pytest.raises(InvalidArgumentError, match="records no token model"):
        idx.search_exact(["which document?"], k=3)
    assert (tmp_path / "mv" / "manifest.json").read_bytes() == before
    # token-array queries still work: the top 3 of a brute-force Chamfer over the int8 tokens
    query = [docs[4][:2]]
    exact = chamfer_scores(as_token_batch(query), as_token_batch(_dequantized(docs)))[0]
    expected = np.argsort(-exact, kind="stable")[:3].tolist()
    assert idx.search(query, k=3, candidates=12).ids[0].tolist() == expected


def test_kmeans_partitions_are_fitted_on_the_first_batch_and_saved(tmp_path) -> None:
    rng = np.random.default_rng(6)
    docs = _corpus(rng, 90)
    queries = _queries(rng, docs, 6)
    fde = FDEConfig(dim=DIM, k_sim=3, r_reps=10, d_proj=8, partition="kmeans")
    idx = _create(tmp_path / "mv", fde=fde)
    assert idx.search(queries, k=3).ids.tolist() == [[-1] * 3] * 6  # empty and unfitted: no error
    idx.add(list(range(50)), tokens=docs[:50])
    idx.add(list(range(50, 90)), tokens=docs[50:])  # encoded with the first batch's centroids
    manifest = json.loads((tmp_path / "mv" / "manifest.json").read_text())
    states = sorted(p.name for p in (tmp_path / "mv" / "state").iterdir())
    assert [p for p in states if p.startswith("fde")] == [manifest["fde_state"]["path"].split("/")[-1]]
    # the saved centroids are those of a fit on the first batch alone
    from quantsearch.multivector import FDEEncoder

    expected = FDEEncoder(fde).fit(docs[:50]).centroids_
    np.testing.assert_array_equal(idx._encoder.centroids_, expected)
    res = idx.search(queries, k=10, candidates=90)
    exact = chamfer_scores(as_token_batch(queries), as_token_batch(_dequantized(docs)))
    order = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    assert res.ids.tolist() == order.tolist()
    again = MultiVectorIndex.open(tmp_path / "mv", embedder=_NoModel())
    assert (
        again.search(queries, k=5, candidates=20).ids.tolist()
        == idx.search(queries, k=5, candidates=20).ids.tolist()
    )
    np.testing.assert_array_equal(
        again.search(queries, k=10, rerank=False).scores, idx.search(queries, k=10, rerank=False).scores
    )


def test_int8_fde_stage_keeps_the_best_of_the_shortlist(tmp_path) -> None:
    rng = np.random.default_rng(7)
    docs = _corpus(rng, 120)
    queries = _queries(rng, docs, 8)
    with_stage = _create(tmp_path / "a")
    without = _create(tmp_path / "b", rescore=None)
    for idx in (with_stage, without):
        idx.add(list(range(70)), tokens=docs[:70])
        idx.add(list(range(70, 120)), tokens=docs[70:])
    # shortlist 30 x 4 = every document: the int8 FDE picks the 30 that reach Chamfer; numpy reference
    # of that stage: float query FDE against the dequantized int8 FDE of every document
    res = with_stage.search(queries, k=5, candidates=30, shortlist=4)
    assert res.candidates == {"scan": 120, "fde8": 120, "chamfer": 30}
    enc = with_stage._encoder
    fq = enc.encode_queries(as_token_batch(queries))
    fd = enc.encode_documents(as_token_batch(docs))
    int8 = with_stage._view.rescorer
    est = fq @ int8.decode(int8.encode(fd)).T
    kept = np.argsort(-est, axis=1, kind="stable")[:, :30]
    exact = chamfer_scores(as_token_batch(queries), as_token_batch(_dequantized(docs)))
    for i in range(len(queries)):
        best = kept[i][np.argsort(-exact[i, kept[i]], kind="stable")[:5]]
        assert res.ids[i].tolist() == best.tolist()
    # without the stage the scan's own top 30 reach Chamfer
    assert without.search(queries, k=5, candidates=30).candidates == {"scan": 120, "chamfer": 30}
    assert without.info()["fde8_disk_bytes"] == 0
    again = MultiVectorIndex.open(tmp_path / "a", embedder=_NoModel())
    assert again.search(queries, k=5, candidates=30).ids.tolist() == res.ids.tolist()
