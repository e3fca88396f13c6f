"""TokenEmbedder on the bundled all-MiniLM-L6-v2 (offline): token vectors agree with the sentence embedding."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from quantsearch.embed import Embedder  # noqa: E402
from quantsearch.exceptions import EmptyInputError, InvalidArgumentError  # noqa: E402
from quantsearch.multivector.tokens import TokenEmbedder, cached_tokens  # noqa: E402

TEXTS = ["Compressed retrieval keeps one bit per dimension.", "late interaction", "a b c d e f g h i j k l"]


@pytest.fixture(scope="module")
def raw() -> TokenEmbedder:
    return TokenEmbedder(normalize=False)


def test_mean_of_token_vectors_is_the_sentence_embedding(raw: TokenEmbedder) -> None:
    batch = raw.embed(TEXTS)
    assert batch.n == 3 and batch.vectors.dtype == np.float32 and batch.vectors.shape[1] == 384
    sentence = Embedder().embed(TEXTS)  # MiniLM = mean pooling of the token embeddings, normalised
    for i in range(3):
        pooled = batch.item(i).mean(axis=0)
        pooled /= np.linalg.norm(pooled)
        assert float(pooled @ sentence[i]) > 0.9999
    # padding removed: each text keeps exactly its tokenizer length ([CLS] ... [SEP])
    tokenizer = raw._st.model.tokenizer
    assert batch.lengths.tolist() == [len(tokenizer(t)["input_ids"]) for t in TEXTS]


def test_normalised_tokens_and_cache(tmp_path) -> None:
    tok = TokenEmbedder()
    batch = tok.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    first = cached_tokens(tok, TEXTS, tmp_path)
    np.testing.assert_allclose(np.asarray(first.vectors, np.float32), batch.vectors, atol=2e-3)  # float16
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.iterdir()) == ["offsets.npy", "vectors.npy"]
    again = cached_tokens(tok, TEXTS, tmp_path)  # read back, not recomputed
    np.testing.assert_array_equal(np.asarray(again.vectors), np.asarray(first.vectors))
    np.testing.assert_array_equal(again.offsets, batch.offsets)
    with pytest.raises(InvalidArgumentError):
        tok.embed("one string")
    with pytest.raises(EmptyInputError):
        tok.embed([])
    with pytest.raises(InvalidArgumentError):
        TokenEmbedder(backend="colbert")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        TokenEmbedder(backend="pylate")


def test_index_searches_by_text(tmp_path) -> None:
    from quantsearch.multivector import FDEConfig, MultiVectorIndex

    tok = TokenEmbedder()
    docs = [
        "The binary codes of the embeddings stay in memory.",
        "Rescoring reads int8 vectors from a memory-mapped file.",
        "A recipe for bread: flour, water, salt and yeast.",
        "Late interaction models score every query token against every document token.",
    ]
    idx = MultiVectorIndex.create(tmp_path / "mv", embedder=tok, fde=FDEConfig(dim=384, k_sim=3, r_reps=8))
    idx.add(["bin", "int8", "bread", "colbert"], texts=docs)
    res = idx.search(["how do I bake bread with yeast", "token level late interaction scoring"], k=2, with_text=True)
    assert res.ids[:, 0].tolist() == ["bread", "colbert"]
    assert res.texts is not None and res.texts[0][0] == docs[2]
    assert idx.info()["ram_bytes_per_doc"] == idx._quantizer.code_bytes
    reopened = MultiVectorIndex.open(tmp_path / "mv", embedder=tok)
    assert reopened.search(["bread"], k=1).ids[0, 0] == "bread"
