"""Lexical and hybrid modes through the HTTP API and the CLI: the same hits as the library, with the
retrievers that found each one."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.cli import main

pytest.importorskip("fastapi")

DIM = 16
TEXTS = [
    "vitamin d and bone density", "bone fractures in the elderly", "vitamin c and colds",
    "density functional theory", "cold fusion claims", "elderly patients and falls",
    "sunlight makes vitamin d", "calcium intake and bones",
]  # fmt: skip


class HashEmbedder:
    """A deterministic stand-in for a model: unit vectors seeded by each text's hash."""

    name = "hash-embedder"

    def embed(self, texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


@pytest.fixture
def served(tmp_path):
    from fastapi.testclient import TestClient

    from quantsearch.server import create_app

    embedder = HashEmbedder()
    Index.build(
        tmp_path / "idx", embedder.embed(TEXTS), texts=TEXTS, lexical=True, model="hash-embedder",
        rescore=["float32"],
    ).close()  # fmt: skip
    app = create_app(tmp_path / "idx")
    app.state.service.index.embedder = embedder
    with TestClient(app, base_url="http://localhost") as client:
        yield client, tmp_path / "idx", embedder


def test_http_lexical_and_hybrid_match_the_library(served) -> None:
    client, path, embedder = served
    assert client.get("/stats").json()["lexical"] is True
    with Index.open(path) as index:
        index.embedder = embedder
        for mode in ("lexical", "hybrid"):
            for fusion in ("rrf", "convex"):
                body = client.post(
                    "/search", json={"query": "vitamin d bones", "k": 4, "mode": mode, "fusion": fusion}
                ).json()
                want = index.search("vitamin d bones", k=4, mode=mode, fusion=fusion).to_list()[0]
                assert [h["id"] for h in body["hits"]] == [h["id"] for h in want]
                assert [h["sources"] for h in body["hits"]] == [h["sources"] for h in want]
                assert all(h["sources"] for h in body["hits"])
                if mode == "lexical":
                    assert all(h["sources"] == ["lexical"] for h in body["hits"])
                    assert "embed" not in body["timings_ms"]  # BM25 needs no embedding
    dense = client.post("/search", json={"query": "vitamin d bones", "k": 3}).json()
    assert all(h.get("sources") is None for h in dense["hits"])
    bad = client.post("/search", json={"query": "x", "mode": "sparse"})
    assert bad.status_code == 422


def test_http_lexical_mode_without_a_lexical_tier_is_a_400(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from quantsearch.server import create_app

    Index.build(tmp_path / "idx", HashEmbedder().embed(TEXTS), texts=TEXTS).close()
    with TestClient(create_app(tmp_path / "idx"), base_url="http://localhost") as client:
        assert client.get("/stats").json()["lexical"] is False
        r = client.post("/search", json={"query": "vitamin", "mode": "lexical"})
        assert r.status_code == 400 and "lexical tier" in r.text


def test_cli_search_modes(tmp_path, capsys) -> None:
    Index.build(tmp_path / "idx", HashEmbedder().embed(TEXTS), texts=TEXTS, lexical=True).close()
    assert main(["search", str(tmp_path / "idx"), "sunlight", "-k", "2", "--mode", "lexical", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [(h["id"], h["sources"]) for h in hits] == [(6, ["lexical"])]  # one document holds the term
    assert main(["search", str(tmp_path / "idx"), "vitamin d", "--mode", "lexical"]) == 0
    assert "[lexical]" in capsys.readouterr().out
    Index.build(tmp_path / "plain", HashEmbedder().embed(TEXTS), texts=TEXTS).close()
    assert main(["search", str(tmp_path / "plain"), "vitamin", "--mode", "lexical"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lexical tier" in err and len(err.splitlines()) == 1
