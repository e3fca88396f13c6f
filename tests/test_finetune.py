"""Training for 1-bit codes (issue 17): pairs, the Hamming surrogate, the code head, the saved model, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from quantsearch.cli import main  # noqa: E402
from quantsearch.exceptions import InvalidArgumentError  # noqa: E402
from quantsearch.finetune import (  # noqa: E402
    TRAINING_REPORT,
    FinetuneConfig,
    HeadConfig,
    code_similarity,
    finetune,
    head_positives,
    inverse_cloze_pairs,
    save_with_head,
    soft_code_similarity,
    train_code_head,
    training_pairs,
)

TOPICS = {
    "astronomy": "Stars form in clouds of gas. Telescopes observe distant galaxies. Planets orbit the sun.",
    "cooking": "Bread needs flour and yeast. Ovens bake the dough slowly. Salt improves every recipe.",
    "sailing": "Boats use wind in their sails. Sailors read the weather carefully. Harbours shelter ships.",
    "music": "Pianos have eighty eight keys. Orchestras play symphonies together. Drums keep the rhythm.",
    "gardening": "Tomatoes need sun and water. Compost feeds the soil well. Weeds compete with young plants.",
    "chess": "Bishops move along diagonals. Rooks control open files. A king in check must move away.",
}


def _beir(root: Path, *, train: bool) -> Path:
    """A small BEIR folder: one doc per topic (two for some), test qrels, and train qrels when asked."""
    root.mkdir()
    docs = []
    for i, (title, text) in enumerate(TOPICS.items()):
        docs.append({"_id": f"d{i}", "title": title.title(), "text": text})
        docs.append({"_id": f"e{i}", "title": "", "text": text.split(". ")[1] + " Another sentence here ok."})
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    queries = [{"_id": f"q{i}", "text": f"questions about {t}"} for i, t in enumerate(TOPICS)]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
    if train:
        rows = [f"q{i}\td{i}\t1" for i in range(len(TOPICS))] + ["q2\te2\t1"]
        (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return root


# ---- pairs ------------------------------------------------------------------------------------------
def test_inverse_cloze_pairs_take_a_sentence_out_of_its_passage() -> None:
    texts = ["T One two three four. Five six seven eight. Nine ten eleven twelve.", "Short one."]
    pairs = inverse_cloze_pairs(texts, titles=["T", ""], per_doc=2, keep_sentence=0.0, seed=3)
    assert pairs.source == "inverse-cloze"
    assert len(pairs) == 2  # the one-sentence document gives none
    assert set(pairs.doc_groups.tolist()) == {0}
    for q, pos in zip(pairs.query_texts, pairs.positives, strict=True):
        doc = pairs.doc_texts[int(pos[0])]
        assert q in texts[0] and q not in doc  # removed from its passage
        assert doc.startswith("T ")  # the title stays
    again = inverse_cloze_pairs(texts, titles=["T", ""], per_doc=2, keep_sentence=0.0, seed=3)
    assert again.query_texts == pairs.query_texts
    kept = inverse_cloze_pairs(texts, titles=["T", ""], per_doc=1, keep_sentence=1.0, seed=0)
    assert kept.query_texts[0] in kept.doc_texts[0]
    with pytest.raises(InvalidArgumentError, match="per_doc"):
        inverse_cloze_pairs(texts, per_doc=0)


def test_inverse_cloze_pairs_drop_repeats_and_can_use_titles() -> None:
    texts = [
        "wing flow at speed . wing flow at speed . The lift rises with the angle. "
        "Drag grows near the stall point.",
        "Other title Drag grows near the stall point! Shock waves form at high speed here.",
    ]
    titles = ["wing flow at speed .", "Other title"]
    every = inverse_cloze_pairs(texts, titles=titles, per_doc=None, keep_sentence=0.0)
    assert "wing flow at speed ." in every.query_texts  # the body repeats its title: a copy pair
    assert every.query_texts.count("Drag grows near the stall point!") == 1
    clean = inverse_cloze_pairs(texts, titles=titles, per_doc=None, keep_sentence=0.0, drop_duplicates=True)
    assert sorted(clean.query_texts) == sorted(
        [
            "The lift rises with the angle.",
            "Drag grows near the stall point.",
            "Shock waves form at high speed here.",
        ]
    )  # no title copy, and doc 1's repeat of doc 0's sentence is gone
    assert clean.doc_groups.tolist() == [0, 0, 1]
    titled = inverse_cloze_pairs(
        texts, titles=["wing flow over the slats", "Other title"], per_doc=1, title_queries=True
    )
    assert titled.query_texts[0] == "wing flow over the slats"  # >= 4 words; "Other title" is too short
    assert titled.doc_groups.tolist() == [0, 0, 1]
    with pytest.raises(InvalidArgumentError, match="per_doc"):
        inverse_cloze_pairs(texts, per_doc=True)


def test_head_recipe_follows_the_kind_of_pairs() -> None:
    from quantsearch.finetune.config import CORPUS_ONLY_RECIPE

    assert HeadConfig.for_pairs("qrels:train") == HeadConfig()
    cloze = HeadConfig.for_pairs("inverse-cloze", seed=3)
    assert all(getattr(cloze, k) == v for k, v in CORPUS_ONLY_RECIPE.items()) and cloze.seed == 3
    assert HeadConfig.for_pairs("inverse-cloze", epochs=2).epochs == 2  # the user's value wins
    with pytest.raises(InvalidArgumentError, match="ema"):
        HeadConfig(ema=1.0).validate()


def test_training_pairs_use_train_qrels_and_never_test_queries(tmp_path: Path) -> None:
    root = _beir(tmp_path / "ds", train=True)
    pairs = training_pairs(root)
    assert pairs.source == "qrels:train"
    # q0 and q1 are judged in the test split: dropped although train.tsv lists them
    assert sorted(pairs.query_texts) == sorted(f"questions about {t}" for t in list(TOPICS)[2:])
    i = pairs.query_texts.index("questions about sailing")
    assert sorted(head_positives(pairs)[i].tolist()) == [4, 5]  # d2 and e2 (corpus rows)
    cloze = training_pairs(root, pairs="cloze")
    assert cloze.source == "inverse-cloze" and len(cloze) > 0


def test_training_pairs_fall_back_to_inverse_cloze_and_validate(tmp_path: Path) -> None:
    root = _beir(tmp_path / "ds", train=False)
    assert training_pairs(root).source == "inverse-cloze"
    with pytest.raises(InvalidArgumentError, match="train.tsv"):
        training_pairs(root, pairs="qrels")
    with pytest.raises(InvalidArgumentError, match="pairs"):
        training_pairs(root, pairs="bogus")
    with pytest.raises(InvalidArgumentError, match="not a BEIR folder"):
        training_pairs(tmp_path)
    with pytest.raises(InvalidArgumentError, match="differ"):
        training_pairs(root, train_split="test")


# ---- the surrogate ----------------------------------------------------------------------------------
def test_soft_code_similarity_tends_to_the_hamming_similarity() -> None:
    import torch

    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 70)).astype(np.float32)
    d = rng.standard_normal((9, 70)).astype(np.float32)
    bits_q = np.packbits(q > 0, axis=1)
    bits_d = np.packbits(d > 0, axis=1)
    hamming = np.bitwise_count(bits_q[:, None, :] ^ bits_d[None, :, :]).sum(-1)  # independent reference
    exact = 1.0 - 2.0 * hamming / 70
    errors = []
    for beta in (1.0, 10.0, 1000.0):
        soft = soft_code_similarity(torch, torch.from_numpy(q), torch.from_numpy(d), beta).numpy()
        errors.append(np.abs(soft - exact).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1 / 70  # less than one bit of difference


def test_straight_through_is_exact_forward_and_asymmetric_scores_the_float_query() -> None:
    import torch

    rng = np.random.default_rng(1)
    q = rng.standard_normal((4, 37)).astype(np.float32)
    d = rng.standard_normal((6, 37)).astype(np.float32)
    hamming = np.bitwise_count(np.packbits(q > 0, axis=1)[:, None] ^ np.packbits(d > 0, axis=1)[None]).sum(-1)
    qt = torch.from_numpy(q).requires_grad_(True)
    ste = code_similarity(torch, qt, torch.from_numpy(d), 2.0, surrogate="ste")
    np.testing.assert_allclose(ste.detach().numpy(), 1.0 - 2.0 * hamming / 37, atol=1e-6)
    ste.sum().backward()  # the gradient flows through the tanh although the forward is the sign
    assert qt.grad is not None and float(qt.grad.abs().sum()) > 0
    asym = code_similarity(
        torch, torch.from_numpy(q), torch.from_numpy(d), 2.0, surrogate="ste", asymmetric=True
    )
    unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    expected = unit @ np.where(d > 0, 1.0, -1.0).T / np.sqrt(37)  # float query x sign bits
    np.testing.assert_allclose(asym.numpy(), expected, atol=1e-6)


# ---- the code head ----------------------------------------------------------------------------------
def _planted(seed: int, n_docs: int = 400, n_queries: int = 600, dim: int = 32):
    """Docs in clusters; a query is relevant to one doc and points along a direction that the corpus
    geometry (and so ITQ) does not favour: a learned map helps, a rotation alone does not."""
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n_docs, dim)).astype(np.float32)
    docs[:, :4] *= 6.0  # the corpus varies mostly in 4 directions; relevance lives in the others
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    target = rng.integers(0, n_docs, n_queries)
    mix = rng.standard_normal((dim, dim)).astype(np.float32) * 0.3 + np.eye(dim, dtype=np.float32)
    queries = docs[target] @ mix.T + 0.6 * rng.standard_normal((n_queries, dim)).astype(np.float32) / np.sqrt(
        dim
    )
    queries[:, :4] = rng.standard_normal((n_queries, 4)) * 0.5  # the dominant directions carry no signal
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return docs, queries.astype(np.float32), [np.array([t]) for t in target]


def _hamming_ndcg(docs, queries, positives, weight, bias) -> float:
    cd = np.packbits(docs @ weight.T + bias > 0, axis=1)
    cq = np.packbits(queries @ weight.T + bias > 0, axis=1)
    dist = np.bitwise_count(cq[:, None, :] ^ cd[None, :, :]).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :10]
    gains = [
        sum(1.0 / np.log2(r + 2) for r, doc in enumerate(row) if doc in pos)
        for row, pos in zip(order, positives, strict=True)
    ]
    return float(np.mean(gains))


def test_code_head_beats_its_itq_start_on_held_out_queries() -> None:
    docs, queries, positives = _planted(0)
    train, test = slice(0, 450), slice(450, 600)
    head = train_code_head(docs, queries[train], positives[train], HeadConfig(epochs=15, seed=0))
    start = head.report["epochs"][0]
    assert head.report["kept_epoch"] > 0
    assert head.report["val_ndcg@10_kept"] > start["val_ndcg@10"]
    # the ITQ start as an independent baseline: codes sign((x - mean) @ R) (epoch 0 of the head)
    from quantsearch.quantization.rotation import itq_rotation

    center = docs.mean(axis=0)
    rot = itq_rotation(docs - center, seed=0, restarts=3)
    itq = _hamming_ndcg(docs, queries[test], positives[test], rot.T, -(rot.T @ center))
    trained = _hamming_ndcg(docs, queries[test], positives[test], head.weight, head.bias)
    assert trained > itq + 0.05
    out = head.apply(docs)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out > 0, docs @ head.weight.T + head.bias > 0)


def test_code_head_anchor_keeps_it_near_its_itq_start() -> None:
    docs, queries, positives = _planted(3, n_docs=120, n_queries=200)
    free = train_code_head(docs, queries, positives, HeadConfig(epochs=4, lr=3e-3, seed=0))
    held = train_code_head(
        docs, queries, positives, HeadConfig(epochs=4, lr=3e-3, anchor_weight=1000.0, seed=0)
    )
    # the start, recomputed independently: rotation rows centred on the corpus mean
    from quantsearch.quantization.rotation import itq_rotation

    center = docs.mean(axis=0)
    w0 = itq_rotation(docs - center, seed=0, restarts=3).T
    start = np.concatenate([w0.ravel(), -(w0 @ center)])

    def drift(head) -> float:
        moved = np.concatenate([head.weight.ravel(), head.bias]) - start
        return float(np.linalg.norm(moved) / np.linalg.norm(start))

    for head in (free, held):
        assert head.report["kept_epoch"] > 0
        assert head.report["drift"] == pytest.approx(drift(head), abs=2e-3)
    assert 0 < drift(held) < 0.5 * drift(free)
    with pytest.raises(InvalidArgumentError, match="anchor_weight"):
        HeadConfig(anchor_weight=-1.0).validate()


def test_code_head_validates_its_input() -> None:
    docs, queries, positives = _planted(1, n_docs=50, n_queries=30)
    with pytest.raises(InvalidArgumentError, match="positives"):
        train_code_head(docs, queries, positives[:-1])
    with pytest.raises(InvalidArgumentError, match="epochs"):
        train_code_head(docs, queries, positives, HeadConfig(epochs=0))
    with pytest.raises(InvalidArgumentError, match="dim|dimension"):
        train_code_head(docs, queries[:, :10], positives)
    with pytest.raises(InvalidArgumentError, match="surrogate"):
        train_code_head(docs, queries, positives, HeadConfig(surrogate="sigmoid"))
    with pytest.raises(InvalidArgumentError, match="bits"):
        train_code_head(docs, queries, positives, HeadConfig(bits=0))


def test_code_head_wider_code_starts_at_itq_plus_extra_bits_and_trains() -> None:
    docs, queries, positives = _planted(2, n_docs=120, n_queries=200)
    head = train_code_head(docs, queries, positives, HeadConfig(epochs=3, bits=40, surrogate="ste"))
    assert head.weight.shape == (40, 32) and head.bias.shape == (40,)
    assert head.apply(docs).shape == (120, 40)
    narrow = train_code_head(docs, queries, positives, HeadConfig(epochs=1, bits=16, asymmetric=True))
    assert narrow.weight.shape == (16, 32)


# ---- the saved model (real MiniLM: embed extra) --------------------------------------------------------
@pytest.mark.embed
def test_saved_model_outputs_the_head_codes(tmp_path: Path) -> None:
    from quantsearch.embed import Embedder

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((384, 384)).astype(np.float32) / np.sqrt(384)
    bias = rng.standard_normal(384).astype(np.float32) * 0.01
    from quantsearch.finetune import CodeHead

    head = CodeHead(weight, bias, {"kept_epoch": 0})
    out = save_with_head(head, tmp_path / "model")
    assert json.loads((out / TRAINING_REPORT).read_text())["head"] == {"kept_epoch": 0}
    texts = ["binary codes in memory", "a recipe for bread"]
    base = Embedder().embed(texts)
    tuned = Embedder(str(out)).embed(texts)
    expected = head.apply(base)
    np.testing.assert_allclose(tuned, expected, atol=2e-5)
    with pytest.raises(InvalidArgumentError, match="not an empty folder"):
        save_with_head(head, out)


@pytest.mark.embed
def test_end_to_end_finetune_moves_the_encoder_and_saves_a_model(tmp_path: Path) -> None:
    from quantsearch.embed import Embedder

    pairs = training_pairs(_beir(tmp_path / "ds", train=False))
    seen: list[int] = []

    def on_checkpoint(step: int, model) -> dict:
        seen.append(step)
        return {"norm": float(np.linalg.norm(model.encode(["probe"])))}

    config = FinetuneConfig(steps=2, batch_size=4, lr=1e-4, max_seq_length=32, distill_weight=1.0)
    result = finetune(pairs, tmp_path / "m", config=config, checkpoints=[0, 2], on_checkpoint=on_checkpoint)
    assert seen == [0, 2]
    assert len(result.report["loss"]) == 1 and np.isfinite(result.report["loss"][0]["loss"])
    texts = ["stars and galaxies", "bread and yeast"]
    moved = Embedder(str(result.path)).embed(texts)
    base = Embedder().embed(texts)
    assert np.abs(moved - base).max() > 1e-4  # the weights changed
    assert (moved * base).sum(1).min() > 0.9  # but only a little (low LR, two steps)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        finetune(pairs, tmp_path / "m2", config=FinetuneConfig(batch_size=1))


@pytest.mark.embed
def test_cli_train_then_index_and_search_with_the_model(tmp_path: Path, capsys) -> None:
    root = _beir(tmp_path / "ds", train=True)
    model = tmp_path / "model"
    cache = str(tmp_path / "cache")
    args = ["--epochs", "3", "--surrogate", "ste", "--cache-dir", cache, "-q"]
    assert main(["train", str(root), "--out", str(model), *args]) == 0
    out = capsys.readouterr().out
    assert "qrels:train" in out and f"--model {model}" in out
    report = json.loads((model / TRAINING_REPORT).read_text())
    assert report["pairs"]["source"] == "qrels:train" and report["head"]["epochs"][0]["epoch"] == 0
    index = tmp_path / "idx"
    assert main(["index", str(root), "--index", str(index), "--model", str(model), "-q"]) == 0
    capsys.readouterr()
    assert main(["search", str(index), "bread dough and yeast", "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 2
    # the index searched with the trained model: the same ranking as its sign bits by brute force
    from quantsearch.embed import Embedder

    emb = Embedder(str(model))
    texts = [json.loads(line) for line in (root / "corpus.jsonl").read_text().splitlines()]
    docs = emb.embed([f"{d['title']} {d['text']}" if d["title"] else d["text"] for d in texts])
    q = emb.embed(["bread dough and yeast"])
    assert hits[0]["id"] == texts[int(np.argmax(docs @ q[0]))]["_id"]
    # errors: one line, exit 2, nothing written
    assert main(["train", str(root), "--out", str(model), "--cache-dir", cache, "-q"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "m2"), "-q"]) == 2
    assert not (tmp_path / "m2").exists()
    assert main(["train", str(root), "--out", str(tmp_path / "m3"), "--bits", "0", "-q"]) == 2
    assert "bits must be" in capsys.readouterr().err
    assert not (tmp_path / "m3").exists()


def test_embedding_cache_key_follows_a_retrained_model_folder(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from quantsearch.embed import EmbeddingCache

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")
    cache = EmbeddingCache(tmp_path / "cache")
    fake = SimpleNamespace(name=str(folder), normalize=True, max_seq_length=None)
    first = cache.key(fake, ["a text"])
    assert cache.key(fake, ["a text"]) == first
    (folder / "model.safetensors").write_bytes(b"weights v2, retrained")
    assert cache.key(fake, ["a text"]) != first  # new weights, new key: no stale vectors
    hub = SimpleNamespace(name="org/some-model", normalize=True, max_seq_length=None)
    assert cache.key(hub, ["a text"]) == cache.key(hub, ["a text"])


# ---- fine-tuning only the top layers (cached frozen prefix) -----------------------------------------
def _tiny_bert(root: Path) -> Path:
    """A randomly initialised 2-layer, 32-d BERT with a word-level vocabulary of the topics' words,
    as a sentence-transformers folder (mean pooling, normalised)."""
    import re

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizer

    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # older sentence-transformers
        from sentence_transformers.models import Normalize, Pooling, Transformer

    words = sorted({w for t in list(TOPICS.values()) + list(TOPICS) for w in re.findall(r"\w+", t.lower())})
    hf = root / "hf"
    hf.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(hf)
    BertTokenizer(str(hf / "vocab.txt")).save_pretrained(hf)
    transformer = Transformer(str(hf), max_seq_length=32)
    modules = [transformer, Pooling(32, pooling_mode="mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(root / "st"))
    return root / "st"


@pytest.mark.embed
def test_prefix_cache_gives_the_models_own_embeddings(tmp_path: Path) -> None:
    import torch

    from quantsearch.embed import Embedder
    from quantsearch.finetune.prefix import PrefixCache

    model = Embedder(str(_tiny_bert(tmp_path))).model
    texts = [*TOPICS.values(), "stars", "bread and yeast in the oven"]  # lengths differ: padding
    expected = model.encode(texts, convert_to_numpy=True)
    for n_layers in (1, 2):
        cache = PrefixCache(torch, model, texts, n_layers, batch_size=3)
        with torch.no_grad():
            got = cache.encode(model, [7, 0, 6, 3]).numpy()
        np.testing.assert_allclose(got, expected[[7, 0, 6, 3]], atol=2e-3)  # float16 cache


@pytest.mark.embed
def test_finetune_top_layers_trains_only_them(tmp_path: Path) -> None:
    import torch

    from quantsearch.embed import Embedder

    base_dir = _tiny_bert(tmp_path / "tiny")
    pairs = training_pairs(_beir(tmp_path / "ds", train=False))
    config = FinetuneConfig(steps=3, batch_size=4, lr=1e-2, max_seq_length=16, unfreeze_layers=1)
    result = finetune(pairs, tmp_path / "m", model=str(base_dir), config=config)
    assert np.isfinite(result.report["loss"][-1]["loss"])
    base = Embedder(str(base_dir)).model[0].auto_model.state_dict()
    saved = Embedder(str(result.path)).model
    assert saved.max_seq_length == 32  # trained on 16 tokens, keeps the base model's length
    tuned = saved[0].auto_model.state_dict()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)
    assert any(k.startswith("encoder.layer.1.") for k in changed)
    for bad in (0, 3, True):
        with pytest.raises(InvalidArgumentError, match="unfreeze_layers"):
            bad_config = FinetuneConfig(unfreeze_layers=bad)
            finetune(pairs, tmp_path / f"bad{bad}", model=str(base_dir), config=bad_config)
