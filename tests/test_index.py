"""The persistent index: storage, reopen, search correctness against brute force, writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantsearch import Index, ScalarQuantizer, SearchResults
from quantsearch.exceptions import IndexLockedError, InvalidArgumentError

SRC = Path(__file__).resolve().parents[1] / "src"


# ---- brute-force references -------------------------------------------------------------------------
def hamming_reference(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Hamming distances (nq, n) between the sign bits (x > 0) of queries and vectors."""
    return np.not_equal(queries[:, None, :] > 0, vectors[None, :, :] > 0).sum(axis=2)


def expected_hamming_topk(dist: np.ndarray, live: np.ndarray, k: int) -> np.ndarray:
    """Rows (nq, k) of the k smallest distances among live rows, ties by smaller row."""
    rows = np.arange(dist.shape[1])[live]
    out = np.empty((dist.shape[0], k), np.int64)
    for q in range(dist.shape[0]):
        out[q] = rows[np.lexsort((rows, dist[q, live]))[:k]]
    return out


def assert_topk_matches(
    results: SearchResults,
    reference: np.ndarray,
    row_ids: np.ndarray,
    live: np.ndarray,
    k: int,
    atol: float = 1e-5,
) -> None:
    """Tie-aware check of a float ranking against reference scores (nq, n_rows) per row.

    The returned scores equal the k best live reference scores, each hit's score is its own
    reference score, and where a reference score is separated from its neighbours by more than
    the tolerance the hit is exactly the reference one.
    """
    row_of = {int(i): r for r, i in enumerate(row_ids)}
    assert results.ids.shape == results.scores.shape == (reference.shape[0], k)
    for q in range(reference.shape[0]):
        ref = np.where(live, reference[q], -np.inf)
        order = np.argsort(-ref, kind="stable")[:k]
        expected = ref[order]
        rows = np.array([row_of[int(i)] for i in results.ids[q]])
        assert len(set(rows.tolist())) == k and live[rows].all()
        np.testing.assert_allclose(results.scores[q], expected, rtol=0, atol=atol)
        np.testing.assert_allclose(results.scores[q], ref[rows], rtol=0, atol=atol)
        full = np.sort(ref[live])[::-1]
        for j in range(k):
            neighbours = np.delete(full, j)
            if np.min(np.abs(neighbours - expected[j])) > 2 * atol:
                assert rows[j] == order[j], (q, j)


def delete_some(index: Index, n: int, fraction: float, seed: int) -> np.ndarray:
    """Delete a seeded random subset of ids 0..n-1; return the live mask over rows."""
    rng = np.random.default_rng(seed)
    gone = rng.choice(n, size=int(n * fraction), replace=False)
    assert index.delete(gone.tolist()) == gone.size
    live = np.ones(n, bool)
    live[gone] = False
    return live


# ---- creation, payload, info --------------------------------------------------------------------------
def test_add_get_and_payload_in_results(make_index) -> None:
    index, x = make_index(n=120, dim=24, batches=4)
    assert len(index) == 120 and index.dim == 24 and index.id_type == "int"
    assert index.get(17) == {"id": 17, "text": "doc 17", "metadata": {"i": 17}}
    assert 17 in index and 500 not in index and "17" not in index
    res = index.search(x[5], k=3)  # a 1-D query still gives 2-D results
    assert res.ids.shape == (1, 3) and res.ids.dtype == np.int64 and res.scores.dtype == np.float32
    assert res.ids[0, 0] == 5
    assert res.texts[0][0] == "doc 5" and res.metadata[0][0] == {"i": 5}
    hits = res.to_list()[0]
    assert [h["id"] for h in hits] == res.ids[0].tolist() and isinstance(hits[0]["id"], int)
    assert hits[0]["text"] == "doc 5" and hits[0]["score"] == pytest.approx(float(res.scores[0, 0]))
    bare = index.search(x[5], k=3, with_payload=False)
    assert bare.texts is None and bare.metadata is None
    np.testing.assert_array_equal(bare.ids, res.ids)
    json.dumps(res.to_list())  # plain Python objects


def test_string_ids(tmp_path, make_vectors) -> None:
    x = make_vectors(50, 16, seed=3)
    ids = [f"doc-{i}" for i in range(50)]
    with Index.create(tmp_path / "s", 16, id_type="str", calibration=x) as index:
        assert index.add(x[:30], ids=ids[:30]) == ids[:30]
        index.add(x[30:], ids=np.array(ids[30:]))
        res = index.search(x[[3, 40]], k=2, stages=())
        assert res.ids.dtype == object and res.ids[:, 0].tolist() == ["doc-3", "doc-40"]
        assert index.delete("doc-3") == 1 and "doc-3" not in index
        with pytest.raises(InvalidArgumentError, match="ids are required"):
            index.add(x[:1])
    reopened = Index.open(tmp_path / "s")
    assert reopened.search(x[3], k=1, stages=()).ids[0, 0] != "doc-3"
    assert reopened.search(x[40], k=1, stages=()).to_list()[0][0]["id"] == "doc-40"
    reopened.close()


def test_build_accepts_array_ids(tmp_path, make_vectors) -> None:
    x = make_vectors(30, 12, seed=4)
    with Index.build(tmp_path / "b", x, ids=np.arange(100, 130), batch_size=7) as index:
        assert index.info()["segments"] == 5 and index.id_type == "int"
        assert index.search(x[2], k=1, stages=()).ids[0, 0] == 102


def test_auto_ids_stay_above_every_given_id(make_index, make_vectors) -> None:
    index, _ = make_index(n=10, dim=16)  # ids 0..9
    extra = make_vectors(40, 16, seed=9)
    index.add(extra[:1], ids=[1000])
    index.add(extra[1:2], ids=[50])  # an explicit id below the largest one
    auto = index.add(extra[2:40])
    assert auto == list(range(1001, 1039))
    assert len(index) == 50


@pytest.mark.parametrize("dim", [1, 7, 8, 13, 100, 384])
def test_info_binary_ram_bytes(make_index, dim: int) -> None:
    index, _ = make_index(n=90, dim=dim, batches=3)
    index.delete([0, 1, 2])  # deleted rows keep their codes
    info = index.info()
    assert (info["count"], info["rows"], info["deleted"], info["segments"]) == (87, 90, 3, 3)
    binary, int8 = info["tiers"]
    code = -(-dim // 8)
    assert binary["name"] == "binary" and binary["storage"] == "RAM"
    assert binary["bytes_per_vector"] == code and binary["ram_bytes"] == 90 * code
    assert int8["name"] == "int8" and int8["ram_bytes"] == 0 and int8["bytes_per_vector"] == dim
    assert "memory-mapped" in int8["storage"]
    for tier, width in ((binary, code), (int8, dim)):
        files = sorted((index.path / "segments").glob(f"*.{tier['name']}.npy"))
        assert len(files) == 3
        assert tier["disk_bytes"] == sum(f.stat().st_size for f in files)
        assert tier["disk_bytes"] >= 90 * width
    assert info["float32_bytes"] == 90 * dim * 4


def test_binary_codes_in_ram_and_rescore_tiers_memory_mapped(make_index, tmp_path) -> None:
    index, x = make_index(n=80, dim=20, batches=2, rescore=("int8", "float16"))
    for idx in (index, Index.open(tmp_path / "index")):
        view = idx._state.view
        assert not isinstance(view.codes, np.memmap)
        np.testing.assert_array_equal(np.unpackbits(view.codes, axis=1, count=20), (x > 0).astype(np.uint8))
        for name in ("int8", "float16"):
            arrays = view.rescore[name].arrays
            assert len(arrays) == 2 and all(isinstance(a, np.memmap) for a in arrays)
        np.testing.assert_array_equal(np.concatenate(view.rescore["float16"].arrays), x.astype(np.float16))
        idx.close()


_RSS_CHILD = """
import glob
import os
import sys
import numpy as np
from quantsearch import Index

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

# start cold, as an index opened long after it was written: evict the tier from the page cache
# (hot page cache gets mapped in large folios around each touched row)
for path in glob.glob(sys.argv[1] + "/segments/*.int8.npy"):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
before = rss("VmRSS")
index = Index.open(sys.argv[1])
opened, file_pages = rss("VmRSS"), rss("RssFile")
# a default search: 100 scattered candidates; the tier is advised MADV_RANDOM, so the kernel
# maps the touched pages, not megabytes of read-ahead around each one
index.search(np.ones(index.dim, np.float32), k=10, stages=("int8",))
searched_file_pages = rss("RssFile")
arrays = index._state.view.rescore["int8"].arrays
print(opened - before, searched_file_pages - file_pages, sum(a.nbytes for a in arrays))
print(all(isinstance(a, np.memmap) for a in arrays))
"""


def test_open_maps_int8_tier_without_reading_it(tmp_path) -> None:
    dim, block = 1024, 10_000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((block, dim), dtype=np.float32)
    with Index.create(tmp_path / "big", dim, calibration=x[:500]) as index:
        for b in range(10):  # 100,000 x 1024 int8 codes: 102 MB on disk
            index.add(x, ids=range(b * block, (b + 1) * block))
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(tmp_path / "big")],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    open_rss, search_file_rss, mapped, all_memmap = out.stdout.split()
    assert int(mapped) == 100_000 * dim and all_memmap == "True"
    assert int(open_rss) < 30 << 20, out.stdout  # binary codes (12.8 MB) + catalog, not the int8 tier
    assert int(search_file_rss) < 16 << 20, out.stdout  # a rescoring search maps little of the 102 MB


# ---- search correctness -----------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [13, 40, 64])
def test_hamming_stage_matches_brute_force(make_index, make_vectors, dim: int) -> None:
    n = 240
    index, x = make_index(n=n, dim=dim, batches=3, seed=dim)
    live = delete_some(index, n, 0.2, seed=dim)
    queries = np.concatenate([make_vectors(20, dim, seed=100 + dim), x[:5]])
    dist = hamming_reference(queries, x)
    for k in (1, 7, int(live.sum())):
        res = index.search(queries, k=k, stages=())
        rows = expected_hamming_topk(dist, live, k)
        np.testing.assert_array_equal(res.ids, rows)  # ids 0..n-1 were added in row order
        np.testing.assert_array_equal(res.scores, -np.take_along_axis(dist, rows, axis=1).astype(np.float32))
        assert res.candidates == {"hamming": n}


@pytest.mark.parametrize("precision", ["int8", "uint8", "int4"])
@pytest.mark.parametrize("dim", [13, 48])
def test_scalar_stage_matches_dequantized_brute_force(
    make_index, make_vectors, dim: int, precision: str
) -> None:
    n = 200
    index, x = make_index(n=n, dim=dim, batches=2, seed=dim, rescore=[precision])
    live = delete_some(index, n, 0.25, seed=dim)
    queries = make_vectors(25, dim, seed=7 + dim)
    tier = index.tiers[precision]
    assert tier.code_bytes == (dim * tier.precision.bits + 7) // 8
    reference = queries.astype(np.float64) @ tier.decode(tier.encode(x)).astype(np.float64).T
    for k in (1, 10, int(live.sum())):
        res = index.search(queries, k=k, oversampling=n, stages=(precision,))
        assert res.candidates[f"rescore:{precision}"] == int(live.sum())
        assert_topk_matches(res, reference, np.arange(n), live, k)


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_float_tier_matches_exact_brute_force(make_index, make_vectors, precision: str) -> None:
    n = 200
    index, x = make_index(n=n, dim=32, batches=4, rescore=(precision,))
    live = delete_some(index, n, 0.1, seed=5)
    queries = make_vectors(30, 32, seed=11)
    stored = x.astype(precision).astype(np.float64)
    reference = queries.astype(np.float64) @ stored.T
    for k in (1, 10, 50):
        res = index.search(queries, k=k, oversampling=n)
        assert_topk_matches(res, reference, np.arange(n), live, k)


def test_two_rescoring_stages_candidate_counts(make_index) -> None:
    index, x = make_index(n=150, dim=32, rescore=("int8", "float32"))
    res = index.search(x[:4], k=5, oversampling=3)
    assert res.candidates == {"hamming": 150, "rescore:int8": 15, "rescore:float32": 10}
    assert set(res.timings) == {"hamming", "rescore:int8", "rescore:float32", "payload"}
    np.testing.assert_array_equal(res.ids[:, 0], np.arange(4))
    np.testing.assert_allclose(res.scores[:, 0], 1.0, atol=1e-5)  # float32 self-similarity of unit vectors


def test_matryoshka_truncation_end_to_end(make_index, make_vectors) -> None:
    n, dim, cut = 160, 256, 128
    index, x = make_index(n=n, dim=dim, batches=2, truncate_dim=cut)
    binary, int8 = index.info()["tiers"]
    assert binary["name"] == "binary@128" and binary["bytes_per_vector"] == 16
    assert binary["ram_bytes"] == n * 16 and binary["code_dim"] == cut
    assert int8["name"] == "int8@128" and int8["bytes_per_vector"] == cut
    queries = make_vectors(12, dim, seed=21)
    live = np.ones(n, bool)
    dist = hamming_reference(queries[:, :cut], x[:, :cut])
    res = index.search(queries, k=8, stages=())
    np.testing.assert_array_equal(res.ids, expected_hamming_topk(dist, live, 8))
    head = queries[:, :cut].astype(np.float64)
    head /= np.linalg.norm(head, axis=1, keepdims=True)
    tier = index.tiers["int8@128"]
    reference = head @ tier.decode(tier.encode(x)).astype(np.float64).T
    assert_topk_matches(index.search(queries, k=8, oversampling=n), reference, np.arange(n), live, 8)


# ---- deletes, reopen ------------------------------------------------------------------------------------
def test_deleted_docs_never_returned(make_index, make_vectors, tmp_path) -> None:
    n = 120
    index, x = make_index(n=n, dim=24)
    live = delete_some(index, n, 0.5, seed=2)
    queries = np.concatenate([x[~live][:10], make_vectors(10, 24, seed=8)])  # deleted docs as queries too
    n_live = int(live.sum())
    assert len(index) == n_live
    reopened = Index.open(tmp_path / "index")
    for idx in (index, reopened):
        for stages in ((), ("int8",)):
            res = idx.search(queries, k=n_live, stages=stages, oversampling=n)
            for row in res.ids:
                assert sorted(row.tolist()) == np.flatnonzero(live).tolist()
        with pytest.raises(InvalidArgumentError, match=f"k={n_live + 1} exceeds .*{n_live}"):
            idx.search(queries, k=n_live + 1)
    reopened.close()


def test_readd_deleted_id(make_index, make_vectors, tmp_path) -> None:
    index, x = make_index(n=60, dim=24)
    new = make_vectors(1, 24, seed=99)
    assert index.delete([7]) == 1 and 7 not in index
    assert index.add(new, ids=[7], texts=["again"]) == [7]
    assert index.get(7) == {"id": 7, "text": "again", "metadata": None}
    assert len(index) == 60 and index.info()["rows"] == 61
    index.close()
    with Index.open(tmp_path / "index") as reopened:
        assert reopened.search(new, k=1).ids[0, 0] == 7
        res = reopened.search(x[7], k=60, stages=())
        assert res.ids[0].tolist().count(7) == 1  # the old row of id 7 stays deleted
        assert reopened.get(7)["text"] == "again"


def test_reopen_gives_bitwise_identical_results(make_index, make_vectors, tmp_path) -> None:
    index, x = make_index(n=200, dim=40, batches=4, rescore=("int8", "float16"))
    delete_some(index, 200, 0.15, seed=1)
    index.add(make_vectors(30, 40, seed=5), ids=range(500, 530), texts=["late"] * 30)
    index.delete([500, 501])
    queries = make_vectors(16, 40, seed=6)
    configs = [
        {"stages": ()},
        {"stages": ("int8",)},
        {"stages": ("float16",), "oversampling": 4},
        {},
        {"oversampling": 50},
    ]
    before = [index.search(queries, k=9, **c) for c in configs]
    index.close()
    with Index.open(tmp_path / "index") as reopened:
        assert len(reopened) == 200 - 30 + 28
        for res, config in zip(before, configs, strict=True):
            again = reopened.search(queries, k=9, **config)
            np.testing.assert_array_equal(again.ids, res.ids)
            assert again.scores.tobytes() == res.scores.tobytes()
            assert again.texts == res.texts and again.metadata == res.metadata


# ---- writers ----------------------------------------------------------------------------------------------
def test_second_writer_locked_out_until_first_closes(make_index, make_vectors, tmp_path) -> None:
    first, x = make_index(n=100, dim=24)
    second = Index.open(tmp_path / "index")  # opened before the first writer's later commits
    extra = make_vectors(70, 24, seed=12)
    first.add(extra[:30], ids=range(1000, 1030))
    with pytest.raises(IndexLockedError, match="another writer holds the lock"):
        second.add(extra[30:60], ids=range(2000, 2030))
    with pytest.raises(IndexLockedError):
        second.delete([0])
    first.delete([1, 2])
    first.add(extra[60:], ids=range(1030, 1040))
    first.close()
    assert second.add(extra[30:60], ids=range(2000, 2030)) == list(range(2000, 2030))
    second.delete([3, 1000])
    assert len(second) == 100 + 40 + 30 - 4
    everything = np.concatenate([x, extra[:30], extra[60:], extra[30:60]])
    ids = list(range(100)) + list(range(1000, 1040)) + list(range(2000, 2030))
    gone = {1, 2, 3, 1000}
    with Index.open(tmp_path / "index") as reopened:
        assert len(reopened) == len(second)
        for idx in (second, reopened):
            res = idx.search(everything, k=1, stages=())
            for i, hit, score in zip(ids, res.ids[:, 0], res.scores[:, 0], strict=True):
                if i not in gone:
                    assert hit == i and score == 0
                else:
                    assert hit not in gone
        queries = make_vectors(8, 24, seed=13)
        a, b = second.search(queries, k=5), reopened.search(queries, k=5)
        np.testing.assert_array_equal(a.ids, b.ids)
        assert a.scores.tobytes() == b.scores.tobytes()
    second.close()


def test_binary_only_index(make_index, make_vectors) -> None:
    index, x = make_index(n=90, dim=19, rescore=None)
    assert index.rescore_tiers == () and [t["name"] for t in index.info()["tiers"]] == ["binary"]
    queries = make_vectors(10, 19, seed=4)
    res = index.search(queries, k=6)  # default stages: none, the Hamming ranking
    dist = hamming_reference(queries, x)
    np.testing.assert_array_equal(res.ids, expected_hamming_topk(dist, np.ones(90, bool), 6))
    with pytest.raises(InvalidArgumentError, match="unknown stage 'int8'; this index has \\[\\]"):
        index.search(queries, k=6, stages=("int8",))


def test_reader_opened_before_a_delete_shows_no_deleted_hit(make_index, tmp_path) -> None:
    writer, x = make_index(n=50, dim=24)
    reader = Index.open(tmp_path / "index")  # a snapshot: it does not see later commits
    writer.delete([5])
    res = reader.search(x[5], k=3, stages=())
    assert res.ids[0, 0] == -1 and np.isnan(res.scores[0, 0])  # the deleted row's slot is padding
    assert not res.valid[0, 0] and res.valid[0, 1:].all()
    assert [h["id"] for h in res.to_list()[0]] == res.ids[0, 1:].tolist()
    reader.close()


def test_refresh_shows_other_writers_commits(make_index, make_vectors) -> None:
    index, _ = make_index(n=50, dim=24)
    reader = Index.open(index.path)
    extra = make_vectors(5, 24, seed=99)
    index.add(extra, ids=[1000, 1001, 1002, 1003, 1004])
    index.delete([0, 1])
    assert len(reader) == 50  # an open index is a snapshot for searching
    assert reader.search(extra, k=1, stages=()).ids[:, 0].tolist() != [1000, 1001, 1002, 1003, 1004]
    reader.refresh()
    assert len(reader) == 53
    assert reader.search(extra, k=1).ids[:, 0].tolist() == [1000, 1001, 1002, 1003, 1004]
    reader.close()


def test_recalibration_before_first_add_replaces_state_files(tmp_path, make_vectors) -> None:
    x = make_vectors(100, 16, seed=3)
    with Index.create(tmp_path / "idx", 16, calibration=x) as index:
        first = sorted(p.name for p in (tmp_path / "idx" / "state").iterdir())
        index.calibrate(x * 2)
        second = sorted(p.name for p in (tmp_path / "idx" / "state").iterdir())
        assert len(first) == len(second) == 2 and not set(first) & set(second)  # old files removed
        doubled = ScalarQuantizer("int8", percentile=99.9).fit(2 * x)
        np.testing.assert_array_equal(index.tiers["int8"].max_, doubled.max_)
        index.add(x)
        with pytest.raises(InvalidArgumentError, match="before the first add"):
            index.calibrate(x)
    with Index.open(tmp_path / "idx") as reopened:
        np.testing.assert_array_equal(reopened.tiers["int8"].max_, index.tiers["int8"].max_)


def test_rescoring_in_query_chunks_gives_the_same_results(make_index, make_vectors, monkeypatch) -> None:
    from quantsearch.quantization import base

    # int2 has no fused kernel: its tier rescored through the generic gather + score, in query chunks
    index, _ = make_index(n=200, dim=24, batches=4, rescore=["int2", "float16"])
    queries = make_vectors(37, 24, seed=5)
    whole = index.search(queries, k=7)
    monkeypatch.setattr(base, "_RESCORE_CHUNK_BYTES", 1)  # one query per chunk
    chunked = index.search(queries, k=7)
    np.testing.assert_array_equal(chunked.ids, whole.ids)
    np.testing.assert_array_equal(chunked.scores, whole.scores)


# ---- compaction -------------------------------------------------------------------------------------
def test_compact_keeps_results_and_reclaims_rows(make_index, make_vectors) -> None:
    index, x = make_index(n=300, dim=40, batches=5, rescore=["int8", "float16"])
    live = delete_some(index, 300, 0.4, seed=3)
    queries = np.concatenate([make_vectors(20, 40, seed=8), x[live][:10]])
    searches = [{"stages": ()}, {}, {"stages": ("int8",), "oversampling": 3}, {"oversampling": 300}]
    before = [index.search(queries, k=8, **kw) for kw in searches]
    info = index.info()
    assert info["segments"] == 5 and info["deleted"] == 300 - live.sum()

    assert index.compact(chunk_rows=7) == 300 - live.sum()  # small chunks: exercise the streaming copy
    after = [index.search(queries, k=8, **kw) for kw in searches]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.texts == b.texts and a.metadata == b.metadata
    info = index.info()
    assert info["segments"] == 1 and info["rows"] == info["count"] == live.sum() and info["deleted"] == 0
    assert info["tiers"][0]["ram_bytes"] == live.sum() * 5
    assert len(list((index.path / "segments").iterdir())) == 3  # binary, int8, float16 of one segment
    assert index.compact() == 0  # nothing left to do
    index.verify()
    path = index.path
    index.close()
    with Index.open(path) as reopened:
        again = [reopened.search(queries, k=8, **kw) for kw in searches]
        for b, a in zip(before, again, strict=True):
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)
        new = make_vectors(3, 40, seed=9)
        reopened.add(new, ids=[1000, 1001, 1002])  # rows continue after the compacted segment
        assert len(reopened) == live.sum() + 3
        assert reopened.search(new, k=1, stages=()).ids[:, 0].tolist() == [1000, 1001, 1002]


def test_reader_opened_before_a_compaction_still_returns_the_right_ids(make_index, make_vectors) -> None:
    index, x = make_index(n=120, dim=24, batches=3)
    reader = Index.open(index.path)
    live = delete_some(index, 120, 0.5, seed=1)
    index.compact()  # renumbers rows: the reader's row numbers now name other documents
    own = x[live][:15]
    res = reader.search(own, k=1, stages=())
    assert res.ids[:, 0].tolist() == np.flatnonzero(live)[:15].tolist()
    assert len(reader) == live.sum()  # the search caught up with the compaction
    reader.close()
