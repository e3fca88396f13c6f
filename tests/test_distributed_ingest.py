"""The Ray Data ingestion pipeline on a real local Ray: Parquet / JSONL, resumable, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import unit_vectors
from quantsearch import Index
from quantsearch.distributed import ShardedIndex
from quantsearch.exceptions import InvalidArgumentError

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

from quantsearch.distributed.ingestion import ingest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
N, DIM = 900, 32


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _reference(tmp_path, vectors, ids, head):
    """One ordinary index calibrated on the same head sample as the pipeline, holding every vector."""
    index = Index.create(tmp_path / "single", vectors.shape[1], calibration=vectors[:head], id_type="str")
    index.add(vectors, ids=ids)
    return index


def _check_exact(sharded_path, single, queries, k=10):
    with ShardedIndex.open(sharded_path) as sharded:
        got = sharded.search(queries, k, exact=True)
    want = single.search(queries, k, oversampling=len(single) / k + 1)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_parquet_with_vectors(ray_session, tmp_path):
    vectors = unit_vectors(N, DIM, seed=30)
    ids = [f"p{i}" for i in range(N)]
    table = pa.table(
        {
            "_id": ids,
            "text": [f"text {i}" for i in range(N)],
            "vector": list(vectors),
            "source": ["a" if i % 2 else "b" for i in range(N)],
        }
    )
    pq.write_table(table, tmp_path / "docs.parquet", row_group_size=300)
    report = ingest(
        tmp_path / "docs.parquet",
        tmp_path / "s",
        n_shards=3,
        vector_field="vector",
        model=None,
        calibration_size=400,
        batch_size=200,
        workers=2,
    )
    assert (report.added, report.skipped, report.n_shards) == (N, 0, 3)
    with ShardedIndex.open(tmp_path / "s") as sharded:
        assert len(sharded) == N
        assert sharded.get("p7") == {"id": "p7", "text": "text 7", "metadata": {"source": "a"}}
        assert all(len(sharded.shard(s)) > 0 for s in range(3))
    with _reference(tmp_path, vectors, ids, 400) as single:
        _check_exact(tmp_path / "s", single, unit_vectors(5, DIM, seed=31))


def test_jsonl_resume_after_interruption_adds_nothing_twice(ray_session, tmp_path):
    vectors = unit_vectors(N, DIM, seed=32)
    ids = [f"j{i}" for i in range(N)]

    def write(bad_row: int | None) -> None:
        with open(tmp_path / "docs.jsonl", "w") as f:
            for i in range(N):
                vector = vectors[i].tolist()[: 5 if i == bad_row else DIM]
                f.write(
                    json.dumps({"_id": ids[i], "title": "T", "text": f"body {i}", "vector": vector}) + "\n"
                )

    write(bad_row=700)  # the run dies at the batch holding row 700: later batches never commit
    with pytest.raises(Exception, match="one length"):
        ingest(
            tmp_path / "docs.jsonl",
            tmp_path / "s",
            n_shards=2,
            vector_field="vector",
            model=None,
            calibration_size=300,
            batch_size=150,
            workers=1,
        )
    with ShardedIndex.open(tmp_path / "s") as sharded:
        committed = len(sharded)
    assert 300 <= committed < N
    write(bad_row=None)  # fixed input: the rerun completes the index
    report = ingest(tmp_path / "docs.jsonl", tmp_path / "s", vector_field="vector", batch_size=150, workers=2)
    assert report.skipped >= committed - 300 and report.added == N - committed
    with ShardedIndex.open(tmp_path / "s") as sharded:
        assert len(sharded) == N  # every document once: Index.add refuses a duplicate id
        assert sharded.get("j3")["text"] == "T body 3"
    with _reference(tmp_path, vectors, ids, 300) as single:
        _check_exact(tmp_path / "s", single, unit_vectors(5, DIM, seed=33))


def test_ingest_validates_before_starting(ray_session, tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InvalidArgumentError, match="jsonl"):
        ingest(tmp_path / "x.csv", tmp_path / "s", n_shards=2)
    with pytest.raises(InvalidArgumentError, match="not found"):
        ingest(tmp_path / "missing.jsonl", tmp_path / "s", n_shards=2)
    (tmp_path / "d.jsonl").write_text('{"_id": "1", "text": "a"}\n')
    with pytest.raises(InvalidArgumentError, match="n_shards"):
        ingest(tmp_path / "d.jsonl", tmp_path / "s")
    with pytest.raises(InvalidArgumentError, match="workers"):
        ingest(tmp_path / "d.jsonl", tmp_path / "s", n_shards=2, workers=0)
    assert not (tmp_path / "s").exists()


@pytest.mark.embed
def test_cli_shards_with_the_model_in_an_actor_pool(ray_session, tmp_path, capsys):
    # real text, the bundled model loaded once per embedding actor; checked against the shared
    # precomputed embeddings of the same documents (an independent run of the same model)
    from quantsearch.cli import main

    dataset = SHARED / "datasets" / "scifact"
    emb = SHARED / "embeddings" / "scifact"
    if not (dataset / "corpus.jsonl").is_file() or not (emb / "corpus.f16.npy").is_file():
        pytest.skip("shared scifact data not present")
    n = 160
    lines = (dataset / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rc = main(
        [
            "index",
            str(tmp_path / "corpus.jsonl"),
            "--index",
            str(tmp_path / "s"),
            "--shards",
            "2",
            "--workers",
            "2",
            "--batch-size",
            "40",
            "-q",
        ]
    )
    assert rc == 0
    assert "indexed 160 documents" in capsys.readouterr().out
    ids = [json.loads(line)["_id"] for line in lines]
    all_ids = json.loads((emb / "corpus_ids.json").read_text())
    rows = [all_ids.index(i) for i in ids]
    reference = np.load(emb / "corpus.f16.npy")[rows].astype(np.float32)
    with ShardedIndex.open(tmp_path / "s") as sharded:
        assert len(sharded) == n
        res = sharded.search(reference[:20], 1, exact=True)
    assert [r[0] for r in res.ids.tolist()] == ids[:20]  # each document finds itself
    assert np.all(res.scores[:, 0] > 0.98)  # its stored int8 code ~ the reference embedding
    rc = main(["search", str(tmp_path / "s"), json.loads(lines[0])["title"], "-k", "3", "--json"])
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert rc == 0 and hits[0]["id"] == ids[0]
    # on Ray actors through a compiled graph: the same hits
    rc = main(
        ["search", str(tmp_path / "s"), json.loads(lines[0])["title"], "-k", "3", "--json", "--compiled"]
    )
    compiled = json.loads(capsys.readouterr().out)["hits"]
    assert rc == 0
    assert [(h["id"], h["score"]) for h in compiled] == [(h["id"], h["score"]) for h in hits]
