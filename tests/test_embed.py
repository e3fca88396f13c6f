from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from quantsearch.embed import DEFAULT_MODEL, Embedder  # noqa: E402
from quantsearch.exceptions import (  # noqa: E402
    EmptyInputError,
    InvalidArgumentError,
    MissingDependencyError,
)

pytestmark = pytest.mark.embed

SHARED = Path(__file__).resolve().parents[2] / "shared"
NFCORPUS = SHARED / "datasets" / "nfcorpus"
EMBEDDINGS = SHARED / "embeddings" / "nfcorpus"


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("network access attempted while loading the bundled model")


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    emb = Embedder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        _ = emb.model  # the bundled default loads without touching the network
    yield emb


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    b = b.astype(np.float32)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.skipif(not EMBEDDINGS.is_dir(), reason="shared embeddings not available")
def test_reproduces_shared_corpus_embeddings(embedder: Embedder) -> None:
    texts, ids = [], []
    with (NFCORPUS / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["_id"])
            texts.append(f"{row['title']} {row['text']}" if row.get("title") else row["text"])
            if len(texts) == 64:
                break
    assert ids == json.loads((EMBEDDINGS / "corpus_ids.json").read_text())[:64]
    reference = np.load(EMBEDDINGS / "corpus.f16.npy", mmap_mode="r")[:64]

    out = embedder.embed(texts)
    assert out.shape == (64, 384) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert _cosines(out, reference).min() > 0.999


@pytest.mark.skipif(not EMBEDDINGS.is_dir(), reason="shared embeddings not available")
def test_embed_query_matches_shared_query(embedder: Embedder) -> None:
    first_id = json.loads((EMBEDDINGS / "query_ids.json").read_text())[0]
    with (NFCORPUS / "queries.jsonl").open(encoding="utf-8") as f:
        text = next(r["text"] for r in map(json.loads, f) if r["_id"] == first_id)
    q = embedder.embed_query(text)
    assert q.shape == (1, 384) and q.dtype == np.float32
    assert _cosines(q, np.load(EMBEDDINGS / "queries.f16.npy")[:1])[0] > 0.999


def test_dim_and_name(embedder: Embedder) -> None:
    assert embedder.dim == 384
    assert embedder.name == DEFAULT_MODEL == "sentence-transformers/all-MiniLM-L6-v2"
    assert Embedder("some/local-model").name == "some/local-model"
    assert Embedder(Path("models") / "m").name == str(Path("models") / "m")


def test_bad_input(embedder: Embedder) -> None:
    with pytest.raises(EmptyInputError):
        embedder.embed([])
    with pytest.raises(InvalidArgumentError, match=r"texts\[1\].*int"):
        embedder.embed(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="single string"):
        embedder.embed("not a list")
    with pytest.raises(InvalidArgumentError, match="text must be a str"):
        embedder.embed_query(["a"])  # type: ignore[arg-type]


def test_bad_constructor_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        Embedder(batch_size=0)
    with pytest.raises(InvalidArgumentError, match="max_seq_length"):
        Embedder(max_seq_length=-1)
    with pytest.raises(InvalidArgumentError, match="model"):
        Embedder("")


def test_max_seq_length(embedder: Embedder) -> None:
    short = Embedder(max_seq_length=16)
    assert short.model.max_seq_length == 16
    text = "word " * 100
    out = short.embed([text])
    assert _cosines(out, embedder.embed([text]))[0] < 0.9999  # truncation changed the embedding


def test_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingDependencyError, match=r"quantsearch\[embed\]"):
        _ = Embedder().model


def test_construction_is_lazy() -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    code = (
        "import sys; from quantsearch.embed import Embedder; e = Embedder(); "
        "assert e.name; assert 'sentence_transformers' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(src)}, timeout=60)


def test_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(InvalidArgumentError, match="could not load embedding model"):
        Embedder(str(tmp_path)).embed(["x"])
