"""TokenEmbedder on the bundled all-MiniLM-L6-v2 (offline): token vectors agree with sentence embeddings."""

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
    res = idx.search(
        ["how do I bake bread with yeast", "token level late interaction scoring"], k=2, with_text=True
    )
    assert res.ids[:, 0].tolist() == ["bread", "colbert"]
    assert res.texts is not None and res.texts[0][0] == docs[2]
    assert idx.info()["ram_bytes_per_doc"] == idx._quantizer.code_bytes
    reopened = MultiVectorIndex.open(tmp_path / "mv", embedder=tok)
    assert reopened.search(["bread"], k=1).ids[0, 0] == "bread"


def test_cli_mv_index_and_search(tmp_path, capsys) -> None:
    import json

    from quantsearch.cli import main

    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "bread", "text": "A recipe for bread: flour, water, salt and yeast."},
        {"_id": "codes", "text": "Binary codes of embeddings stay in memory for a fast Hamming scan."},
        {"_id": "tide", "text": "The tide rises twice a day under the pull of the moon."},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = tmp_path / "mv"
    assert main(["mv-index", str(corpus), "--index", str(index), "--k-sim", "3", "--r-reps", "4", "-q"]) == 0
    assert "3 documents" in capsys.readouterr().out
    assert main(["mv-search", str(index), "baking bread with yeast", "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in out["hits"]][0] == "bread" and len(out["hits"]) == 2
    # bad input: one line on stderr, exit status 2, the index unchanged
    assert main(["mv-index", str(corpus), "--index", str(index), "-q"]) == 2  # the same ids again
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already in the index" in err[0]
    assert main(["mv-search", str(tmp_path / "missing"), "x"]) == 2
    assert main(["mv-search", str(index), "bread", "-k", "0"]) == 2
    capsys.readouterr()
    assert main(["mv-search", str(index), "tide and moon", "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "tide"
    # k-means partitions from the CLI: fitted on the first batch, recorded in the manifest
    km = tmp_path / "mv-km"
    assert (
        main(["mv-index", str(corpus), "--index", str(km), "--partition", "kmeans", "--k-sim", "2", "-q"])
        == 0
    )
    assert json.loads((km / "manifest.json").read_text())["fde"]["partition"] == "kmeans"
    capsys.readouterr()
    assert main(["mv-search", str(km), "baking bread with yeast", "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "bread"
    assert (
        main(["mv-index", str(corpus), "--index", str(tmp_path / "x"), "--partition", "voronoi", "-q"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "partition" in err[0] and not (tmp_path / "x" / "manifest.json").exists()
