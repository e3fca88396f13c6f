"""The command line, with the real bundled model (small inputs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.cli import main

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.embed

SHARED = Path(__file__).resolve().parents[2] / "shared"
SRC = Path(__file__).resolve().parents[1] / "src"

DOCS = {
    "cats.txt": "Cats are small domesticated felines that purr and chase mice.",
    "python.md": "# Python\nPython is a programming language with dynamic typing and a big standard library.",
    "bread.txt": "To bake bread, knead flour, water, yeast and salt, let the dough rise, then bake it.",
    "sub/rivers.txt": "The Nile and the Amazon are the longest rivers on Earth.",
    "sub/guitar.md": "A guitar has six strings; chords are played by pressing strings against frets.",
}


@pytest.fixture
def text_folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_folder_search_and_info(tmp_path: Path, text_folder: Path, capsys) -> None:
    index_dir = tmp_path / "idx"
    code, out, _ = run_cli(capsys, "index", str(text_folder), "--index", str(index_dir), "--quiet")
    assert code == 0 and "indexed 5 documents" in out

    code, out, _ = run_cli(capsys, "search", str(index_dir), "a kitten playing", "-k", "2", "--json")
    assert code == 0
    hits = json.loads(out)
    assert hits["hits"][0]["id"] == "cats.txt"
    assert set(hits["timings_ms"]) >= {"embed", "hamming", "rescore:int8", "payload"}

    code, out, _ = run_cli(capsys, "search", str(index_dir), "how do I make a loaf", "-k", "1")
    assert code == 0 and "bread.txt" in out and "timings:" in out

    code, out, _ = run_cli(capsys, "info", str(index_dir), "--json")
    info = json.loads(out)
    binary, int8 = info["tiers"]
    assert info["count"] == 5 and info["dim"] == 384
    assert binary["ram_bytes"] == 5 * 48 and binary["storage"] == "RAM"
    assert int8["ram_bytes"] == 0 and "memory-mapped" in int8["storage"]
    code, out, _ = run_cli(capsys, "info", str(index_dir), "--verify")
    assert code == 0 and "binary" in out and "memory-mapped" in out and "checksum" in out


def test_index_beir_corpus_matches_shared_embeddings(tmp_path: Path, capsys) -> None:
    # the first 40 scifact documents as a BEIR corpus.jsonl; the stored codes must equal the codes of
    # the shared (independently computed) embeddings of the same documents
    lines = (SHARED / "datasets" / "scifact" / "corpus.jsonl").read_text().splitlines()[:40]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    index_dir = tmp_path / "idx"
    assert run_cli(capsys, "index", str(corpus), "--index", str(index_dir), "-q")[0] == 0
    shared = np.load(SHARED / "embeddings" / "scifact" / "corpus.f16.npy")[:40].astype(np.float32)
    ids = [json.loads(line)["_id"] for line in lines]
    with Index.open(index_dir) as index:
        results = index.search(shared, k=1, stages=())
        hits = results.ids[:, 0].tolist()
    # near-identical vectors land on themselves
    assert sum(a == b for a, b in zip(hits, ids, strict=True)) >= 38


def test_append_and_duplicate_ids(tmp_path: Path, text_folder: Path, capsys) -> None:
    index_dir = tmp_path / "idx"
    assert run_cli(capsys, "index", str(text_folder), "--index", str(index_dir), "-q")[0] == 0
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "x1", "text": "Volcanoes erupt lava and ash."}) + "\n")
    assert run_cli(capsys, "index", str(more), "--index", str(index_dir), "-q")[0] == 0
    code, _, err = run_cli(capsys, "index", str(more), "--index", str(index_dir), "-q")
    assert code == 2 and "already in" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "index", str(more), "--index", str(index_dir), "--model", "other/model")
    assert code == 2 and "was built with model" in err
    with Index.open(index_dir) as index:
        assert len(index) == 6
    code, _, _ = run_cli(capsys, "delete", str(index_dir), "x1")
    with Index.open(index_dir) as index:
        assert len(index) == 5 and "x1" not in index
        assert index.info()["segments"] == 2 and index.info()["deleted"] == 1
    code, out, _ = run_cli(capsys, "compact", str(index_dir))
    assert code == 0 and "1 deleted rows reclaimed, 2 -> 1 segments, 5 documents" in out
    code, out, _ = run_cli(capsys, "search", str(index_dir), "a kitten playing", "-k", "1")
    assert code == 0 and "cats.txt" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "{missing}", "query"], "not found"),
        (["info", "{missing}"], "not found"),
        (["search", "{index}", "query", "-k", "0"], "k must be >= 1"),
        (["search", "{index}", "query", "-k", "1000000000"], "exceeds the number of documents"),
        (["search", "{index}", "query", "--stages", "float16"], "unknown stage"),
        (["index", "{missing}", "--index", "{tmp}/new"], "input not found"),
        (["delete", "{index}", "nope"], "not in the index"),
        (["index", "{index}/../docs", "--index", "{tmp}/new", "--rescore", "int7"], "unknown precision"),
        (["index", "{index}/../docs", "--index", "{tmp}/new", "--truncate-dim", "0"], "must be >= 1"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path: Path, text_folder: Path, capsys, args, message) -> None:
    index_dir = tmp_path / "idx"
    assert run_cli(capsys, "index", str(text_folder), "--index", str(index_dir), "-q")[0] == 0
    before = {p: p.read_bytes() for p in index_dir.rglob("*") if p.is_file() and "catalog" not in p.name}
    fmt = {"missing": str(tmp_path / "missing"), "index": str(index_dir), "tmp": str(tmp_path)}
    code, _, err = run_cli(capsys, *[a.format(**fmt) for a in args])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    after = {p: p.read_bytes() for p in index_dir.rglob("*") if p.is_file() and "catalog" not in p.name}
    assert before == after
    with Index.open(index_dir) as index:
        assert len(index) == 5


def test_subprocess_usage_and_corrupt_index(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    bad = subprocess.run(
        [sys.executable, "-m", "quantsearch", "frobnicate"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    index_dir = tmp_path / "idx"
    Index.create(index_dir, 8).close()
    manifest = index_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"dim": 8', '"dim": 9'))
    res = subprocess.run(
        [sys.executable, "-m", "quantsearch", "info", str(index_dir)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 2 and "checksum" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_demo_runs_offline(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "demo", "--limit", "300", "--index", str(tmp_path / "demo"), "-q")
    assert code == 0
    assert (
        "query: compress data with gzip" in out and "gzip" in out.split("query: compress data with gzip")[1]
    )
    assert "hamming" in out and "rescore:int8" in out
    assert "float32" in out and "RAM total" in out


# ---- quantsearch eval ---------------------------------------------------------------------------------
@pytest.fixture
def mini_beir(tmp_path: Path) -> Path:
    """A small BEIR folder cut from scifact: 15 judged queries, their relevant documents, 200 documents."""
    src = SHARED / "datasets" / "scifact"
    qrels_lines = (src / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = qrels_lines[0], [line.split("\t") for line in qrels_lines[1:]]
    queries = list(dict.fromkeys(q for q, _, _ in rows))[:15]
    kept = [r for r in rows if r[0] in queries]
    relevant = {d for _, d, _ in kept}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    docs = [d for d in corpus if d["_id"] in relevant]
    docs += [d for d in corpus if d["_id"] not in relevant][: 200 - len(docs)]
    root = tmp_path / "mini"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    all_queries = [json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()]
    (root / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in all_queries if q["_id"] in queries)
    )
    (root / "qrels" / "test.tsv").write_text("\n".join([header] + ["\t".join(r) for r in kept]) + "\n")
    return root


def test_eval_writes_the_report_and_reuses_embeddings(tmp_path, mini_beir, capsys, monkeypatch) -> None:
    from quantsearch.embed import Embedder

    embedded: list[int] = []
    real_embed = Embedder.embed

    def counting_embed(self, texts, *, progress=False):
        embedded.append(len(texts))
        return real_embed(self, texts, progress=progress)

    monkeypatch.setattr(Embedder, "embed", counting_embed)
    args = [
        "eval", str(mini_beir), "--cache-dir", str(tmp_path / "cache"),
        "--configs", "float32", "binary", "binary>int8@4", "--peers", "st-faiss-ubinary@4",
    ]  # fmt: skip
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "r1"))
    assert code == 0, err
    assert sum(embedded) == 200 + 15  # corpus and queries embedded once
    assert "computed and cached" in err
    assert "binary>int8@4" in out and "st-faiss-ubinary@4" in out and "peer" in out
    files = {p.name for p in (tmp_path / "r1").iterdir()}
    assert {"results.json", "results.md", "retention_vs_bytes.png", "retention_vs_latency.png"} <= files
    first = json.loads((tmp_path / "r1" / "results.json").read_text())
    assert first["dataset"] == "mini" and first["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert [r["config"] for r in first["rows"]] == [
        "float32",
        "binary",
        "binary>int8@4",
        "st-faiss-ubinary@4",
    ]
    assert first["embeddings"]["corpus_cached"] is False

    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    assert sum(embedded) == 200 + 15, "the second run re-embedded"
    assert "reused from the cache" in err
    second = json.loads(out)
    assert second["embeddings"]["corpus_cached"] is True and second["embeddings"]["queries_cached"] is True
    for a, b in zip(first["rows"], second["rows"], strict=True):  # same embeddings, same quality
        assert (
            a["config"] == b["config"] and a["ndcg@10"] == b["ndcg@10"] and a["recall@100"] == b["recall@100"]
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "{mini}", "--configs", "binary>int7"], "unknown precision"),
        (["eval", "{mini}", "--peers", "st-faiss-ubinary@x"], "must be a number"),
        (["eval", "{tmp}/nowhere"], "neither a directory nor a known BEIR dataset"),
        (["eval", "{mini}", "--split", "dev"], "has no qrels/dev.tsv"),
        (["eval", "{mini}", "-k", "0"], "k must be >= 1"),
    ],
)
def test_eval_errors_are_one_line(tmp_path, mini_beir, capsys, args, message) -> None:
    fmt = {"mini": str(mini_beir), "tmp": str(tmp_path)}
    code, _, err = run_cli(capsys, *[a.format(**fmt) for a in args], "--cache-dir", str(tmp_path / "c"), "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_search_with_a_metadata_filter(tmp_path: Path, text_folder: Path, capsys) -> None:
    index_dir = tmp_path / "idx"
    assert run_cli(capsys, "index", str(text_folder), "--index", str(index_dir), "--quiet")[0] == 0
    # without a filter the kitten query finds cats.txt; restricted to sub/, only those two files
    only_sub = json.dumps({"path": {"in": ["sub/rivers.txt", "sub/guitar.md"]}})
    code, out, _ = run_cli(capsys, "search", str(index_dir), "a kitten", "--filter", only_sub, "--json")
    assert code == 0
    assert sorted(h["id"] for h in json.loads(out)["hits"]) == ["sub/guitar.md", "sub/rivers.txt"]
    code, out, _ = run_cli(
        capsys, "search", str(index_dir), "a kitten", "-k", "1", "--filter", '{"path": "bread.txt"}', "--json"
    )
    assert code == 0 and [h["id"] for h in json.loads(out)["hits"]] == ["bread.txt"]
    for bad, message in (("{not json", "--filter is not valid JSON"), ('{"path": {"near": 1}}', "operator")):
        code, out, err = run_cli(capsys, "search", str(index_dir), "a kitten", "--filter", bad)
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "search", str(index_dir), "a kitten", "--nprobe", "4")
    assert code == 2 and "nprobe" in err  # the exact stage takes no nprobe
    code, _, err = run_cli(capsys, "search", str(index_dir), "a kitten", "--ef", "4")
    assert code == 2 and "ef" in err and len(err.strip().splitlines()) == 1


def test_index_with_an_ivf_stage_and_search_with_nprobe(tmp_path: Path, text_folder: Path, capsys) -> None:
    ivf_dir, exact_dir = tmp_path / "ivf", tmp_path / "exact"
    stage = '{"kind": "ivf", "params": {"nlist": 2, "min_rows": 1}}'
    assert (
        run_cli(capsys, "index", str(text_folder), "--index", str(ivf_dir), "-q", "--candidate-stage", stage)[
            0
        ]
        == 0
    )
    assert run_cli(capsys, "index", str(text_folder), "--index", str(exact_dir), "-q")[0] == 0
    assert json.loads((ivf_dir / "manifest.json").read_text())["candidate_stage"]["kind"] == "ivf"
    # both lists probed: the same hits as the exact scan
    code, out, _ = run_cli(capsys, "search", str(ivf_dir), "a kitten", "--nprobe", "2", "--json")
    _, want, _ = run_cli(capsys, "search", str(exact_dir), "a kitten", "--json")
    assert code == 0 and json.loads(out)["hits"] == json.loads(want)["hits"]
    code, _, err = run_cli(
        capsys, "index", str(text_folder), "--index", str(tmp_path / "x"), "--candidate-stage", "hnswx"
    )
    assert code == 2 and "unknown candidate stage" in err and not (tmp_path / "x").exists()


def test_index_with_an_hnsw_stage_and_search_with_ef(tmp_path: Path, text_folder: Path, capsys) -> None:
    graph_dir, exact_dir = tmp_path / "hnsw", tmp_path / "exact"
    stage = '{"kind": "hnsw", "params": {"min_rows": 1}}'
    code, _, err = run_cli(
        capsys, "index", str(text_folder), "--index", str(graph_dir), "-q", "--candidate-stage", stage
    )
    assert code == 0, err
    assert run_cli(capsys, "index", str(text_folder), "--index", str(exact_dir), "-q")[0] == 0
    assert json.loads((graph_dir / "manifest.json").read_text())["candidate_stage"]["kind"] == "hnsw"
    _, want, _ = run_cli(capsys, "search", str(exact_dir), "a kitten", "--json")
    # a handful of documents: the walk with a wide ef reaches every node, as the exact scan does
    for option in (("--ef", "64"), ("--target-recall", "0.95")):
        code, out, _ = run_cli(capsys, "search", str(graph_dir), "a kitten", *option, "--json")
        assert code == 0 and json.loads(out)["hits"] == json.loads(want)["hits"]
    for bad, message in ((("--ef", "0"), "ef"), (("--target-recall", "2"), "target_recall"),
                         (("--ef", "8", "--target-recall", "0.9"), "not both")):  # fmt: skip
        code, out, err = run_cli(capsys, "search", str(graph_dir), "a kitten", *bad)
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
