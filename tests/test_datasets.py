from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

import quantsearch.datasets as ds
from quantsearch.datasets import BeirDataset, load_beir, read_jsonl_texts
from quantsearch.exceptions import DuplicateIdError, InvalidArgumentError

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.mark.parametrize(
    ("name", "n_docs", "n_queries"),
    [("nfcorpus", 3633, 323), ("scifact", 5183, 300), ("cranfield", 1400, 225), ("cisi", 1460, 76)],
)
def test_real_datasets(name: str, n_docs: int, n_queries: int) -> None:
    folder = SHARED / "datasets" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    data = load_beir(folder)
    assert isinstance(data, BeirDataset) and data.name == name
    assert len(data.corpus_ids) == len(data.corpus_texts) == len(data.corpus_titles) == n_docs
    assert len(data.query_ids) == len(data.query_texts) == n_queries
    assert set(data.qrels) == set(data.query_ids)
    emb = SHARED / "embeddings" / name
    assert data.corpus_ids == json.loads((emb / "corpus_ids.json").read_text())
    assert data.query_ids == json.loads((emb / "query_ids.json").read_text())
    for title, text in zip(data.corpus_titles, data.corpus_texts, strict=True):
        assert text.startswith(title + " ") if title else True
    assert all(isinstance(r, int) for rels in data.qrels.values() for r in rels.values())


def _write_beir(root: Path, corpus: list[str] | None = None, queries: list[str] | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = corpus or [
        json.dumps({"_id": "d1", "title": "Title", "text": "body one"}),
        json.dumps({"_id": "d2", "title": "", "text": "body two"}),
        json.dumps({"_id": "d3", "text": "body three"}),
    ]
    queries = queries or [
        json.dumps({"_id": "q3", "text": "third"}),
        json.dumps({"_id": "q1", "text": "first"}),
        json.dumps({"_id": "q2", "text": "unjudged"}),
    ]
    (root / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\td2\t2\nq3\td3\t0\n")
    return root


def test_small_dataset(tmp_path: Path) -> None:
    data = load_beir(_write_beir(tmp_path / "tiny"))
    assert data.name == "tiny"
    assert data.corpus_ids == ["d1", "d2", "d3"]
    assert data.corpus_texts == ["Title body one", "body two", "body three"]
    assert data.corpus_titles == ["Title", "", ""]
    assert data.query_ids == ["q3", "q1"]  # queries.jsonl order, judged only
    assert data.query_texts == ["third", "first"]
    assert data.qrels == {"q1": {"d1": 1}, "q3": {"d2": 2, "d3": 0}}


def test_missing_files(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "x")
    with pytest.raises(InvalidArgumentError, match="dev.tsv"):
        load_beir(root, split="dev")
    (root / "queries.jsonl").unlink()
    with pytest.raises(InvalidArgumentError, match="queries.jsonl"):
        load_beir(root)


def test_unknown_name_or_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="no-such-dataset"):
        load_beir("no-such-dataset")
    with pytest.raises(InvalidArgumentError, match="missing"):
        load_beir(tmp_path / "missing")
    with pytest.raises(InvalidArgumentError, match="split"):
        load_beir(tmp_path, split="../x")


@pytest.mark.parametrize(
    ("corpus", "match"),
    [
        (['{"_id": "d1", "text": "ok"}', '{"_id": "d2", "text": '], r"corpus.jsonl:2: malformed JSON"),
        (['{"_id": "d1", "text": "ok"}', "[1, 2]"], r"corpus.jsonl:2: expected a JSON object"),
        (['{"_id": "d1", "text": "ok"}', '{"text": "no id"}'], r"corpus.jsonl:2: missing field '_id'"),
        (['{"_id": "d1"}'], r"corpus.jsonl:1: missing field 'text'"),
        (['{"_id": "d1", "text": 5}'], r"corpus.jsonl:1: field 'text' must be a string"),
    ],
)
def test_malformed_corpus(tmp_path: Path, corpus: list[str], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        load_beir(_write_beir(tmp_path / "bad", corpus=corpus))


def test_duplicate_and_bad_qrels(tmp_path: Path) -> None:
    dup = ['{"_id": "d1", "text": "a"}', '{"_id": "d1", "text": "b"}']
    with pytest.raises(DuplicateIdError, match="d1"):
        load_beir(_write_beir(tmp_path / "dup", corpus=dup))
    root = _write_beir(tmp_path / "qrels")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(InvalidArgumentError, match=r"test.tsv:2: score must be an integer"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    with pytest.raises(InvalidArgumentError, match=r"test.tsv:2: expected 3"):
        load_beir(root)


def test_read_jsonl_texts(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [
        {"_id": "a", "title": "T", "text": "one", "url": "u"},
        {"text": "two"},
        {"_id": 7, "body": "x", "text": "three"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ids, texts, meta = read_jsonl_texts(path)
    assert ids == ["a", "2", "7"]
    assert texts == ["T one", "two", "three"]
    assert meta == [{"title": "T", "url": "u"}, {}, {"body": "x"}]
    ids, texts, _ = read_jsonl_texts(path, title_field=None)
    assert texts == ["one", "two", "three"]
    ids, _, _ = read_jsonl_texts(path, id_field="nope")
    assert ids == ["1", "2", "3"]
    with pytest.raises(InvalidArgumentError, match=r"docs.jsonl:1: missing field 'body'"):
        read_jsonl_texts(path, text_field="body")
    path.write_text('{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(InvalidArgumentError, match=r"docs.jsonl:2: malformed JSON"):
        read_jsonl_texts(path)
    path.write_text('{"_id": "x", "text": "a"}\n{"_id": "x", "text": "b"}\n')
    with pytest.raises(DuplicateIdError, match="'x'"):
        read_jsonl_texts(path)
    with pytest.raises(InvalidArgumentError, match="not a file"):
        read_jsonl_texts(tmp_path / "absent.jsonl")


def test_download_from_local_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _write_beir(tmp_path / "src" / "scifact")
    archive = tmp_path / "mirror" / "scifact.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in source.rglob("*"):
            zf.write(f, f.relative_to(source.parent).as_posix())
    monkeypatch.setattr(ds, "BEIR_URL", (tmp_path / "mirror").as_uri() + "/{name}.zip")
    monkeypatch.setenv("QUANTSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # "scifact" must not resolve to a directory of the working directory

    data = load_beir("scifact")
    assert data.name == "scifact" and data.query_ids == ["q3", "q1"]
    cached = tmp_path / "cache" / "beir" / "scifact"
    assert (cached / "corpus.jsonl").is_file()
    assert [p.name for p in cached.parent.iterdir()] == ["scifact"]  # no temporary leftovers

    archive.unlink()  # a second load uses the cache
    assert load_beir("scifact", cache_dir=tmp_path / "cache" / "beir").corpus_ids == data.corpus_ids


def test_download_failure_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "BEIR_URL", (tmp_path / "nowhere").as_uri() + "/{name}.zip")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"could not download BEIR dataset 'fiqa'.*local dir"):
        load_beir("fiqa", cache_dir=tmp_path / "cache")
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "fiqa.zip").write_bytes(b"not a zip")
    with pytest.raises(InvalidArgumentError, match="could not download"):
        load_beir("fiqa", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "fiqa").exists()
