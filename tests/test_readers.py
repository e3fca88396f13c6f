"""Streaming Parquet/CSV/JSONL readers against the data written with pyarrow / the csv and json modules."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from quantsearch.exceptions import DuplicateIdError, InvalidArgumentError
from quantsearch.readers import Document, iter_documents

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta, with a comma", 'quote "q"', "line\nbreak", "ünïcødé"]
    return [
        {
            "doc": f"d{i}",
            "body": " ".join(rng.choice(words, size=int(rng.integers(1, 6)))),
            "score": float(rng.random()),
            "tag": str(rng.choice(["x", "y"])),
        }
        for i in range(n)
    ]


def _flatten(path: Path, **kwargs) -> tuple[list[list[Document]], list[Document]]:
    batches = list(iter_documents(path, **kwargs))
    return batches, [d for b in batches for d in b]


def test_parquet_streams_in_batches(tmp_path: Path) -> None:
    rows = _rows(1000)
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=128)
    batches, docs = _flatten(path, text_field="body", id_field="doc", batch_size=300)
    assert [len(b) for b in batches] == [300, 300, 300, 100]
    assert [d.id for d in docs] == [r["doc"] for r in rows]
    assert [d.text for d in docs] == [r["body"] for r in rows]
    assert [d.metadata for d in docs] == [{"score": r["score"], "tag": r["tag"]} for r in rows]


def test_parquet_is_read_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(1000)), path, row_group_size=100)
    read = []
    original = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            read.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    first = next(iter_documents(path, text_field="body", id_field="doc", batch_size=100))
    assert len(first) == 100 and sum(read) <= 200  # not the whole file for the first batch


def test_csv_and_tsv_match_the_csv_module(tmp_path: Path) -> None:
    rows = _rows(257, seed=1)
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        path = tmp_path / f"c{suffix}"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
        with path.open(newline="", encoding="utf-8") as f:
            expected = list(csv.DictReader(f, delimiter=delimiter))
        batches, docs = _flatten(path, text_field="body", id_field="doc", batch_size=100)
        assert [len(b) for b in batches] == [100, 100, 57]
        assert [(d.id, d.text) for d in docs] == [(r["doc"], r["body"]) for r in expected]
        assert [d.metadata["tag"] for d in docs] == [r["tag"] for r in expected]
        np.testing.assert_allclose([d.metadata["score"] for d in docs], [float(r["score"]) for r in expected])


def test_jsonl_title_and_row_number_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"text": "one", "title": "T"}, {"text": "two"}, {"text": "3", "title": ""}]
        )
        + "\n",
        encoding="utf-8",
    )
    _, docs = _flatten(path)
    assert [(d.id, d.text) for d in docs] == [("1", "T one"), ("2", "two"), ("3", "3")]
    assert docs[0].metadata == {"title": "T"}


def test_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]), path)
    with pytest.raises(DuplicateIdError, match="duplicate id 'a'"):
        list(iter_documents(path, id_field="id"))
    with pytest.raises(InvalidArgumentError, match="no text column 'body'"):
        list(iter_documents(path, text_field="body"))
    with pytest.raises(InvalidArgumentError, match="not found"):
        list(iter_documents(tmp_path / "missing.csv"))
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(InvalidArgumentError, match="unsupported file type"):
        list(iter_documents(tmp_path / "c.xlsx"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InvalidArgumentError, match="not a readable Parquet"):
        list(iter_documents(tmp_path / "bad.parquet"))
    nulls = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": ["a", None]}), nulls)
    with pytest.raises(InvalidArgumentError, match="must be a string"):
        list(iter_documents(nulls))
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        list(iter_documents(nulls, batch_size=0))
