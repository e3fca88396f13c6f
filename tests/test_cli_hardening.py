"""Regression tests of issue 18 in the command line: one line on stderr and exit 2 for every error a
user can cause, and `quantsearch index` all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import nested_dict, unit_vectors
from quantsearch import Index
from quantsearch.cli import main
from test_index_errors import snapshot


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # a usage error, from argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def int_index(tmp_path: Path) -> Path:
    Index.build(tmp_path / "idx", unit_vectors(10, 8), ids=list(range(10))).close()
    return tmp_path / "idx"


def test_non_utf8_jsonl_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"_id": "a", "text": "fine"}\n{"_id": "b", "text": "caf\xe9"}\n')
    code, _, err = run_cli(capsys, "index", str(corpus), "--index", str(tmp_path / "new"), "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "corpus.jsonl:2: not UTF-8" in err
    assert not (tmp_path / "new").exists()


def test_deeply_nested_jsonl_line_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    code, _, err = run_cli(capsys, "index", str(corpus), "--index", str(tmp_path / "new"), "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nested too deeply" in err


@pytest.mark.parametrize("bad", ["abc", "1.5", "0x10", ""])
def test_delete_non_integer_id_on_int_index(int_index: Path, capsys, bad: str) -> None:
    before = snapshot(int_index)
    code, _, err = run_cli(capsys, "delete", str(int_index), "3", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "are integers" in err
    assert snapshot(int_index) == before
    code, out, _ = run_cli(capsys, "delete", str(int_index), "3", "4")
    assert code == 0 and "deleted 2" in out


@pytest.mark.parametrize("name", ["new\nline", "carriage\rreturn", "sep\u2028arator", "tab\x0bvertical"])
def test_paths_with_line_breaks_give_one_line(tmp_path: Path, capsys, name: str) -> None:
    code, _, err = run_cli(capsys, "info", str(tmp_path / name))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not found" in err
    code, _, err = run_cli(capsys, "search", str(tmp_path / name), "q", "-k", "nope\nx")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_info_on_corrupt_catalog_json_is_exit_2(int_index: Path, capsys) -> None:
    import sqlite3

    db = sqlite3.connect(int_index / "catalog.sqlite")
    with db:
        db.execute("UPDATE segments SET files = '{{{' ")
    db.close()
    for args in (
        ["info", str(int_index)],
        ["info", str(int_index), "--verify"],
        ["search", str(int_index), "q"],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "catalog" in err, args


# ---- `quantsearch index`: all or nothing (needs the bundled model) ------------------------------------
def _jsonl(path: Path, docs: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.mark.embed
def test_failed_index_run_leaves_indexes_as_they_were(tmp_path: Path, capsys) -> None:
    pytest.importorskip("sentence_transformers")
    good = _jsonl(
        tmp_path / "good.jsonl", [{"_id": f"g{i}", "text": f"document number {i}"} for i in range(3)]
    )
    # the third document is refused by Index.add (metadata nested too deep), after two batches of one
    docs = [{"_id": f"b{i}", "text": f"another text {i}"} for i in range(4)]
    docs[2]["meta"] = nested_dict(40)
    bad = _jsonl(tmp_path / "bad.jsonl", docs)
    target = tmp_path / "idx"
    assert run_cli(capsys, "index", str(good), "--index", str(target), "-q")[0] == 0
    before_ids = ["g0", "g1", "g2"]

    code, _, err = run_cli(capsys, "index", str(bad), "--index", str(target), "-q", "--batch-size", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nested more than 32" in err
    with Index.open(target) as index:
        assert len(index) == 3 and all(i in index for i in before_ids) and "b0" not in index

    fresh = tmp_path / "fresh"
    code, _, err = run_cli(capsys, "index", str(bad), "--index", str(fresh), "-q", "--batch-size", "1")
    assert code == 2 and not fresh.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no build dir left

    code, _, err = run_cli(capsys, "index", str(good), "--index", str(fresh), "-q", "--batch-size", "0")
    assert code == 2 and "batch_size must be >= 1" in err and not fresh.exists()


@pytest.mark.embed
def test_skip_existing_resumes_an_interrupted_append(tmp_path: Path, capsys) -> None:
    pytest.importorskip("sentence_transformers")
    topics = [
        "volcanoes erupt lava",
        "chess openings",
        "baking sourdough bread",
        "jazz saxophone",
        "orbital mechanics",
    ]
    docs = [{"_id": f"d{i}", "text": t} for i, t in enumerate(topics)]
    first = _jsonl(tmp_path / "first.jsonl", docs[:2])
    everything = _jsonl(tmp_path / "all.jsonl", docs)
    target = tmp_path / "idx"
    assert run_cli(capsys, "index", str(first), "--index", str(target), "-q")[0] == 0
    code, _, err = run_cli(capsys, "index", str(everything), "--index", str(target), "-q")
    assert code == 2 and "already in" in err
    code, out, _ = run_cli(capsys, "index", str(everything), "--index", str(target), "-q", "--skip-existing")
    assert code == 0
    with Index.open(target) as index:
        assert len(index) == 5 and all(f"d{i}" in index for i in range(5))
        hit = index.search("a saxophone solo in a jazz club", k=1)
        assert hit.ids[0, 0] == "d3"
