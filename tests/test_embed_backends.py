"""Embedding backends (onnx, onnx-int8, openvino, openvino-int8, static, auto) against torch float32.

The reference is the shared all-MiniLM-L6-v2 embeddings (made with sentence-transformers + torch, which
test_embed checks our torch embedder reproduces). Exports are built once per session into a temporary cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("onnxruntime")

from quantsearch.cli import main  # noqa: E402
from quantsearch.embed import Embedder, EmbeddingCache  # noqa: E402
from quantsearch.embedding import BACKENDS, Backend, parse_backend  # noqa: E402
from quantsearch.embedding.auto import mean_cosine, neighbour_overlap, select_backend  # noqa: E402
from quantsearch.embedding.backends import exported_model, model_fingerprint  # noqa: E402
from quantsearch.exceptions import InvalidArgumentError  # noqa: E402

pytestmark = pytest.mark.embed

SHARED = Path(__file__).resolve().parents[2] / "shared"
NFCORPUS = SHARED / "datasets" / "nfcorpus"
EMBEDDINGS = SHARED / "embeddings" / "nfcorpus"
needs_shared = pytest.mark.skipif(not EMBEDDINGS.is_dir(), reason="shared embeddings not available")


@pytest.fixture(scope="module", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One export cache for the module: every backend is exported once, not per test."""
    root = tmp_path_factory.mktemp("qs-cache")
    old = os.environ.get("QUANTSEARCH_CACHE")
    os.environ["QUANTSEARCH_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("QUANTSEARCH_CACHE", None)
    else:
        os.environ["QUANTSEARCH_CACHE"] = old


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], np.ndarray]:
    """The first 96 nfcorpus documents and their shared (torch float32) embeddings."""
    texts = []
    with (NFCORPUS / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts.append(f"{row['title']} {row['text']}" if row.get("title") else row["text"])
            if len(texts) == 96:
                break
    reference = np.load(EMBEDDINGS / "corpus.f16.npy", mmap_mode="r")[:96].astype(np.float32)
    return texts, reference / np.linalg.norm(reference, axis=1, keepdims=True)


# ---- names ------------------------------------------------------------------------------------------
def test_parse_backend_names_and_errors() -> None:
    assert parse_backend(None) is Backend.TORCH
    assert [parse_backend(b).value for b in BACKENDS] == list(BACKENDS)
    assert parse_backend("ONNX-qint8") is Backend.ONNX_INT8
    assert parse_backend("model2vec") is Backend.STATIC
    with pytest.raises(InvalidArgumentError, match="backend must be one of"):
        parse_backend("tensorrt")
    with pytest.raises(InvalidArgumentError, match="backend must be a str"):
        parse_backend(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="backend"):
        Embedder(backend="nope")
    with pytest.raises(InvalidArgumentError, match="cpu only"):
        Embedder(backend="onnx", device="cuda")
    with pytest.raises(InvalidArgumentError, match="threads"):
        Embedder(backend="onnx", threads=0)


# ---- the export cache -------------------------------------------------------------------------------
def test_exported_model_builds_once_and_keys_on_content(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x01" * 100)
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "model.onnx").write_bytes(b"exported")

    root = tmp_path / "cache"
    first = exported_model(model, Backend.ONNX, build, packages=("numpy",), root=root)
    again = exported_model(model, Backend.ONNX, build, packages=("numpy",), root=root)
    assert first == again and len(calls) == 1
    assert (first / "model.onnx").read_bytes() == b"exported"
    assert json.loads((first / "export.json").read_text())["backend"] == "onnx"
    # other versions, another backend, other weights: each is a new export
    assert exported_model(model, Backend.ONNX, build, packages=("numpy", "pytest"), root=root) != first
    assert exported_model(model, Backend.ONNX_INT8, build, packages=("numpy",), root=root) != first
    before = model_fingerprint(model)
    (model / "weights.bin").write_bytes(b"\x02" * 101)
    assert model_fingerprint(model) != before
    assert exported_model(model, Backend.ONNX, build, packages=("numpy",), root=root) != first
    assert len(calls) == 4


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "w").write_bytes(b"w")

    def broken(out: Path) -> None:
        (out / "half.onnx").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        exported_model(model, Backend.ONNX, broken, packages=(), root=tmp_path / "cache")
    assert [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


# ---- agreement measures -----------------------------------------------------------------------------
def test_neighbour_overlap_and_mean_cosine() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    rotated = (x @ q).astype(np.float32)  # same geometry, other coordinates
    assert neighbour_overlap(x, rotated) == pytest.approx(1.0)
    assert mean_cosine(x, x) == pytest.approx(1.0)
    assert mean_cosine(x, rotated) < 0.9
    other = rng.standard_normal((60, 16)).astype(np.float32)
    assert neighbour_overlap(x, other) < 0.5  # about k / (n - 1) by chance
    assert np.isnan(mean_cosine(x, x[:, :8]))
    # brute force on a tiny case: rows 0..3 on a line, k=1
    line = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    line /= np.linalg.norm(line, axis=1, keepdims=True)
    swapped = line[:, ::-1].copy()
    assert neighbour_overlap(line, swapped, k=1) == 1.0
    assert neighbour_overlap(line, line[[0, 2, 1, 3]], k=1) == 0.0


# ---- the exported backends against torch ------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize(
    ("backend", "min_mean", "min_each"),
    [
        ("onnx", 0.9999, 0.999),
        ("onnx-int8", 0.99, 0.97),
        ("openvino", 0.9999, 0.999),
        ("openvino-int8", 0.995, 0.98),
    ],
)
def test_backend_agrees_with_torch(backend: str, min_mean: float, min_each: float, corpus) -> None:
    pytest.importorskip("openvino" if backend.startswith("openvino") else "onnxruntime")
    texts, reference = corpus
    emb = Embedder(backend=backend, batch_size=16)
    out = emb.embed(texts)
    assert out.shape == (len(texts), 384) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cos = np.sum(out * reference, axis=1)
    assert cos.mean() >= min_mean and cos.min() >= min_each, (cos.mean(), cos.min())
    assert neighbour_overlap(reference, out) >= 0.9
    # length-sorted batches are put back in input order: one text alone gives its own row (int8 activations
    # are quantized per batch, so there a text's vector depends slightly on its batch mates)
    alone = emb.embed([texts[37]])
    assert float(alone[0] @ out[37]) > (0.99 if backend == "onnx-int8" else 0.999)
    assert float(alone[0] @ out[36]) < 0.95
    assert float(alone[0] @ reference[37]) >= min_each  # the one-text path (no padding, plain mean) is right
    assert emb.backend == backend and emb.dim == 384
    assert emb.embed_query("low fat diet").shape == (1, 384)


def test_unnormalised_and_truncated(corpus) -> None:
    texts, _ = corpus
    # the model ends with a Normalize module: sentence-transformers returns unit vectors anyway, and so do we
    plain = Embedder(backend="onnx", normalize=False).embed(texts[:4])
    torch_plain = Embedder(normalize=False).embed(texts[:4])
    np.testing.assert_allclose(plain, torch_plain, rtol=1e-3, atol=1e-4)
    short = Embedder(backend="onnx", max_seq_length=8).embed(texts[:1])
    torch_short = Embedder(max_seq_length=8).embed(texts[:1])
    assert float(short[0] @ torch_short[0]) > 0.999
    assert float(short[0] @ Embedder(backend="onnx").embed(texts[:1])[0]) < 0.99


def test_the_export_is_reused(export_cache: Path) -> None:
    Embedder(backend="onnx").embed(["warm"])
    folders = sorted(p for p in (export_cache / "models").iterdir() if p.name.startswith("onnx-"))
    stamp = {p: (p / "export.json").stat().st_mtime_ns for p in folders}
    Embedder(backend="onnx").embed(["again"])  # a new embedder: no new export
    assert sorted(p for p in (export_cache / "models").iterdir() if p.name.startswith("onnx-")) == folders
    assert {p: (p / "export.json").stat().st_mtime_ns for p in folders} == stamp


def test_cache_keys_differ_by_backend(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    texts = ["a", "b"]
    torch_key = cache.key(Embedder(), texts)
    assert cache.key(Embedder(backend="onnx-int8"), texts) != torch_key
    assert cache.key(Embedder(backend="torch"), texts) == torch_key
    with pytest.raises(InvalidArgumentError, match="settled backend"):
        cache.key(Embedder(backend="auto"), texts)


# ---- auto -------------------------------------------------------------------------------------------
@needs_shared
def test_auto_picks_an_agreeing_backend(corpus) -> None:
    texts, _ = corpus
    choice = select_backend(texts, candidates=("onnx-int8", "onnx"), sample_size=64)
    assert choice.sample_size == 64 and [t.backend for t in choice.trials] == ["onnx-int8", "onnx"]
    for trial in choice.trials:
        assert trial.agrees == (trial.mean_cosine >= 0.99 and trial.neighbour_overlap >= 0.9)
    agreeing = [t for t in choice.trials if t.agrees and t.docs_per_s > choice.reference_docs_per_s]
    expected = max(agreeing, key=lambda t: t.docs_per_s).backend if agreeing else "torch"
    assert choice.backend == expected


def test_auto_rejects_a_backend_that_disagrees(corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    texts, _ = corpus
    real = Embedder.embed

    def scrambled(self, batch, *, progress=False):  # onnx that returns another text's vector
        out = real(self, batch, progress=progress)
        return out[::-1].copy() if self.backend == "onnx" and len(batch) > 8 else out

    monkeypatch.setattr(Embedder, "embed", scrambled)
    choice = select_backend(texts, candidates=("onnx",), sample_size=32)
    assert choice.backend == "torch" and not choice.trials[0].agrees
    assert choice.trials[0].mean_cosine < 0.9


def test_embedder_auto_resolves_on_first_texts(corpus) -> None:
    texts, reference = corpus
    emb = Embedder(backend="auto")
    out = emb.embed(texts[:48])
    assert emb.backend in ("torch", "onnx-int8", "openvino-int8", "onnx", "openvino")
    assert emb.auto_choice is not None and emb.auto_choice.backend == emb.backend
    assert np.sum(out * reference[:48], axis=1).mean() >= 0.99


# ---- static (model2vec) -----------------------------------------------------------------------------
@pytest.mark.slow
@needs_shared
def test_static_backend(corpus) -> None:
    pytest.importorskip("model2vec")
    pytest.importorskip("skeletoken")
    texts, reference = corpus
    emb = Embedder(backend="static")
    out = emb.embed(texts)
    assert out.shape == (len(texts), 256) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # independent check: a text's vector is the normalised mean of its tokens' rows in the distilled table
    runner = emb._get_runner()
    table = np.asarray(runner.model.embedding, dtype=np.float32)
    ids = runner.model.tokenizer.encode(texts[3], add_special_tokens=False).ids
    manual = table[ids].mean(axis=0)
    np.testing.assert_allclose(out[3], manual / np.linalg.norm(manual), atol=1e-4)
    # weaker than torch, but still about the same texts: neighbours overlap well above chance (10/95)
    assert 0.2 < neighbour_overlap(reference, out) < 0.95


# ---- the CLI ----------------------------------------------------------------------------------------
def test_cli_backend_on_index_and_search(tmp_path: Path, capsys) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    docs = {
        "doc_id": ["a", "b", "c", "d"],
        "body": [
            "The mitochondria is the powerhouse of the cell.",
            "Binary quantization keeps one bit per dimension.",
            "Paris is the capital of France.",
            "Whole grains and fibre lower cholesterol.",
        ],
        "year": [2001, 2002, 2003, 2004],
    }
    source = tmp_path / "docs.parquet"
    pq.write_table(pa.table(docs), source)
    index_dir = tmp_path / "idx"
    code = main(
        [
            "index",
            str(source),
            "--index",
            str(index_dir),
            "--text-field",
            "body",
            "--id-field",
            "doc_id",
            "--backend",
            "onnx-int8",
            "-q",
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["search", str(index_dir), "capital city of France", "--backend", "onnx-int8", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["id"] == "c" and hits[0]["metadata"]["year"] == 2003


def test_cli_unknown_backend_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["index", str(tmp_path), "--index", str(tmp_path / "i"), "--backend", "tensorrt"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backend" in err[0]
