"""The HTTP API over a multi-vector (MUVERA) index, checked against brute-force Chamfer in numpy.

The index holds 40 cisi documents token-embedded by the bundled MiniLM when the module starts; the
reference scores are computed here from float32 token vectors of the same model (the index keeps
int8 tokens, so scores agree to the int8 rounding and near-ties may swap).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.embed

from fastapi.testclient import TestClient  # noqa: E402

from quantsearch.multivector import MultiVectorIndex, TokenEmbedder  # noqa: E402
from quantsearch.server import create_app  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
N_DOCS = 40
QUERY = "the use of computers for information retrieval in libraries"


def _corpus() -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with (SHARED / "datasets" / "cisi" / "corpus.jsonl").open() as f:
        for line in f:
            doc = json.loads(line)
            ids.append(doc["_id"])
            texts.append(f"{doc.get('title', '')} {doc['text']}".strip()[:600])
            if len(ids) == N_DOCS:
                break
    return ids, texts


def _chamfer(query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    """Brute-force Chamfer: for every query token the best document token, summed."""
    return np.array([float((query @ d.T).max(axis=1).sum()) for d in docs])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("server-mv")
    ids, texts = _corpus()
    embedder = TokenEmbedder()
    idx = MultiVectorIndex.create(root / "mv", embedder=embedder)
    idx.add(ids[:30], texts=texts[:30])
    idx.add(ids[30:], texts=texts[30:])  # two segments
    docs = embedder.embed(texts)
    doc_tokens = [np.asarray(docs.item(i), np.float32) for i in range(docs.n)]
    query = np.asarray(embedder.embed([QUERY], is_query=True).item(0), np.float32)
    app = create_app(root / "mv", allowed_hosts=["localhost"])
    with TestClient(app, base_url="http://localhost") as client:
        yield {
            "client": client,
            "ids": ids,
            "texts": texts,
            "embedder": embedder,
            "docs": doc_tokens,
            "query": query,
            "ref": _chamfer(query, doc_tokens),
        }


def _check_against_reference(hits: list[dict[str, Any]], ids: list[str], ref: np.ndarray, tol: float) -> None:
    k = len(hits)
    order = np.argsort(-ref, kind="stable")
    kth = ref[order[k - 1]]
    for hit in hits:
        score = ref[ids.index(hit["id"])]
        assert hit["score"] == pytest.approx(score, abs=tol)
        assert score >= kth - 2 * tol  # in the exact top k, up to int8 near-ties
    top = [ids[i] for i in order[:k] if ref[i] > ref[order[k]] + 2 * tol]
    assert set(top) <= {h["id"] for h in hits}  # every clear top-k document is found


def test_search_by_text_matches_brute_force_chamfer(setup: dict[str, Any]) -> None:
    client, ids, ref = setup["client"], setup["ids"], setup["ref"]
    tol = 0.01 * setup["query"].shape[0]
    # every document a candidate: the rerank is brute-force Chamfer over the int8 tokens
    res = client.post("/search", json={"query": QUERY, "k": 10, "oversampling": 10}).json()
    assert res["k"] == 10 and len(res["hits"]) == 10
    _check_against_reference(res["hits"], ids, ref, tol)
    scores = [h["score"] for h in res["hits"]]
    assert scores == sorted(scores, reverse=True)
    first = res["hits"][0]
    assert first["text"] == setup["texts"][ids.index(first["id"])]
    assert set(res["timings_ms"]) >= {"embed", "fde", "scan", "chamfer", "total"}
    assert res["candidates"] == {"scan": N_DOCS, "fde8": N_DOCS, "chamfer": N_DOCS}

    # the default: 100 candidates (all 40 here); compare adds the exact brute force and the overlap
    res = client.post("/search", json={"query": QUERY, "k": 5, "compare": True}).json()
    _check_against_reference(res["hits"], ids, ref, tol)
    exact = res["exact"]
    assert exact["tier"] == "chamfer:int8" and exact["overlap_k"] == 5
    _check_against_reference(exact["hits"], ids, ref, tol)
    assert exact["overlap"] == 1.0  # every document was a candidate: the same top 5
    assert [h["id"] for h in exact["hits"]] == [h["id"] for h in res["hits"]]


def test_fde_candidates_and_fde_alone(setup: dict[str, Any]) -> None:
    client, ids, ref = setup["client"], setup["ids"], setup["ref"]
    tol = 0.01 * setup["query"].shape[0]
    # 15 FDE candidates reranked: every hit carries its exact (int8) Chamfer score
    res = client.post("/search", json={"query": QUERY, "k": 5, "oversampling": 3}).json()
    # the 1-bit scan shortlists 4 x 15 (all 40 here), the int8 FDE codes keep 15 for Chamfer
    assert res["candidates"] == {"scan": N_DOCS, "fde8": N_DOCS, "chamfer": 15}
    for hit in res["hits"]:
        assert hit["score"] == pytest.approx(ref[ids.index(hit["id"])], abs=tol)
    # the FDE codes alone: no Chamfer stage, scores are FDE inner-product estimates
    res = client.post("/search", json={"query": QUERY, "k": 5, "stages": []}).json()
    assert "chamfer" not in res["timings_ms"] and res["candidates"] == {"scan": N_DOCS}
    assert len(res["hits"]) == 5
    # the FDE estimate ranks the best Chamfer document near the top
    best = ids[int(np.argmax(ref))]
    res = client.post("/search", json={"query": QUERY, "k": 10, "stages": []}).json()
    assert best in [h["id"] for h in res["hits"]]


def test_stats_page_and_documents(setup: dict[str, Any]) -> None:
    client = setup["client"]
    stats = client.get("/stats").json()
    assert stats["multivector"] is True and stats["count"] == N_DOCS and stats["segments"] == 2
    tokens = sum(d.shape[0] for d in setup["docs"])
    assert stats["tokens"] == tokens and stats["dim"] == 384 and stats["fde_dim"] == 10240
    ram, disk = stats["tiers"]
    assert ram["name"] == "fde" and ram["storage"] == "ram"
    assert ram["bytes_per_vector"] == 1284  # 10,240 bits + a float32
    assert stats["ram_bytes"] == N_DOCS * 1284
    assert disk["name"] == "chamfer" and disk["disk_bytes"] >= tokens * (384 + 4)
    assert (
        ram["quantizer"]["shortlist_rescore"]["disk_bytes"] == N_DOCS * 10240
    )  # the int8 FDE codes, on disk
    assert stats["float32_bytes"] == tokens * 384 * 4
    assert stats["text_queries"] is True and stats["model"]
    page = client.get("/")
    assert page.status_code == 200 and b"app.js" in page.content

    doc = client.get(f"/documents/{setup['ids'][3]}").json()
    assert doc["text"] == setup["texts"][3]
    assert client.get("/documents/no-such-id").status_code == 404

    # an added document is found by its own text, with its brute-force Chamfer score
    text = "Parallel sorting networks for bitonic merging on graphics processors"
    res = client.post("/documents", json={"documents": [{"id": "new-1", "text": text}]}).json()
    assert res == {"ids": ["new-1"], "count": N_DOCS + 1}
    hits = client.post("/search", json={"query": text, "k": 3}).json()["hits"]
    assert hits[0]["id"] == "new-1"
    emb = setup["embedder"]
    q = np.asarray(emb.embed([text], is_query=True).item(0), np.float32)
    d = np.asarray(emb.embed([text]).item(0), np.float32)
    assert hits[0]["score"] == pytest.approx(_chamfer(q, [d])[0], abs=0.01 * q.shape[0])


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"vector": [0.1] * 384}, 400, "searched by text"),
        ({"query": "x", "mode": "lexical"}, 400, "no lexical tier"),
        ({"query": "x", "stages": ["int8"]}, 400, "chamfer"),
        ({"query": "x", "filter": {"a": 1}}, 400, "filter"),
        ({"query": "x", "k": 5000}, 422, "max_k"),
    ],
)
def test_bad_requests(setup: dict[str, Any], body: dict[str, Any], status: int, needle: str) -> None:
    res = setup["client"].post("/search", json=body)
    assert res.status_code == status, res.text
    assert needle in res.json()["error"]["message"] or needle == "max_k"


def test_unsupported_writes(setup: dict[str, Any]) -> None:
    client = setup["client"]
    before = client.get("/stats").json()["count"]
    res = client.delete(f"/documents/{setup['ids'][0]}")
    assert res.status_code == 400 and "deletes" in res.json()["error"]["message"]
    res = client.post("/documents", json={"documents": [{"id": "v", "vector": [0.0] * 384}]})
    assert res.status_code == 400 and "text" in res.json()["error"]["message"]
    assert client.get("/stats").json()["count"] == before


def test_index_without_a_token_model_refuses_texts(tmp_path: Path) -> None:
    class NoModel:  # an index built from token arrays records no model
        name = "none"

        def identity(self) -> dict[str, Any]:
            return {"model": None, "backend": "sentence-transformers", "normalize": True}

    rng = np.random.default_rng(0)
    idx = MultiVectorIndex.create(tmp_path / "mv", dim=8, embedder=NoModel())  # type: ignore[arg-type]
    idx.add([1, 2], tokens=[rng.standard_normal((3, 8)), rng.standard_normal((4, 8))])
    with TestClient(create_app(tmp_path / "mv"), base_url="http://localhost") as client:
        stats = client.get("/stats").json()
        assert stats["text_queries"] is False and stats["count"] == 2 and stats["id_type"] == "int"
        res = client.post("/search", json={"query": "anything"})
        assert res.status_code == 400 and "no token model" in res.json()["error"]["message"]
        assert client.get("/documents/2").json() == {"id": 2, "text": None, "metadata": None}
        assert client.get("/documents/x").status_code == 400  # not an int id
