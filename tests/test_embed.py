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

from quantsearch.embed import DEFAULT_MODEL, Embedder, EmbeddingCache  # noqa: E402
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
    assert Embedder("default").name == DEFAULT_MODEL  # the name an index records for the bundled model
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
    with pytest.raises(InvalidArgumentError, match="threads"):
        Embedder(threads=True)
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


# ---- the embedding cache ----------------------------------------------------------------------------
class CountingEmbedder(Embedder):
    """The real embedder, counting the texts it actually runs through the model."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__()
        self._model = inner.model
        self.embedded = 0

    def embed(self, texts, *, progress: bool = False):  # type: ignore[override]
        self.embedded += len(texts)
        return super().embed(texts, progress=progress)


TEXTS = ["binary codes in RAM", "int8 codes on disk", "rescoring recovers quality", "ünïcödé ✓"]


def test_cache_computes_once_then_reuses(embedder: Embedder, tmp_path) -> None:
    counting = CountingEmbedder(embedder)
    cache = EmbeddingCache(tmp_path / "cache")
    first, hit = cache.embed(counting, TEXTS)
    assert not hit and counting.embedded == len(TEXTS)
    np.testing.assert_allclose(first, embedder.embed(TEXTS), atol=1e-6)
    stored = cache.path(cache.key(counting, TEXTS))
    mtime = stored.stat().st_mtime_ns
    second, hit = cache.embed(counting, TEXTS)
    assert hit and counting.embedded == len(TEXTS)  # nothing re-embedded
    np.testing.assert_array_equal(first, second)
    assert stored.stat().st_mtime_ns == mtime
    meta = json.loads(stored.with_suffix(".json").read_text())
    assert meta["model"] == DEFAULT_MODEL and meta["n"] == len(TEXTS) and meta["dim"] == 384


def test_cache_key_follows_texts_and_model_settings(embedder: Embedder, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = cache.key(embedder, TEXTS)
    assert cache.key(embedder, list(TEXTS)) == key
    assert cache.key(embedder, TEXTS[:-1] + ["other"]) != key  # content
    assert cache.key(embedder, TEXTS[::-1]) != key  # order
    assert cache.key(embedder, ["ab", "c"]) != cache.key(embedder, ["a", "bc"])  # boundaries
    assert cache.key(Embedder(normalize=False), TEXTS) != key
    assert cache.key(Embedder(max_seq_length=32), TEXTS) != key
    assert cache.key(Embedder("some/other-model"), TEXTS) != key


@pytest.mark.parametrize("damage", ["truncate", "wrong_rows", "nan"])
def test_a_damaged_cache_entry_is_recomputed(embedder: Embedder, tmp_path, damage: str) -> None:
    counting = CountingEmbedder(embedder)
    cache = EmbeddingCache(tmp_path)
    good, _ = cache.embed(counting, TEXTS)
    path = cache.path(cache.key(counting, TEXTS))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "wrong_rows":
        np.save(path, good[:2])
    else:
        bad = good.copy()
        bad[1, 3] = np.nan
        np.save(path, bad)
    again, hit = cache.embed(counting, TEXTS)
    assert not hit and counting.embedded == 2 * len(TEXTS)
    np.testing.assert_allclose(again, good, atol=1e-6)
    assert cache.load(cache.key(counting, TEXTS), len(TEXTS)) is not None  # repaired


def test_cache_that_cannot_be_written_still_returns_embeddings(embedder: Embedder, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    vectors, hit = EmbeddingCache(blocker / "cache").embed(embedder, TEXTS[:2])
    assert not hit and vectors.shape == (2, 384)
