"""Sharded indexes in one process: layout, routing, shared calibration, exact merge (no Ray needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import unit_vectors
from quantsearch import Index, SearchResults
from quantsearch.distributed import ShardedIndex, create_sharded, merge_results, read_shard_manifest, shard_of
from quantsearch.distributed.layout import SHARD_MANIFEST
from quantsearch.distributed.shard import index_fingerprint
from quantsearch.exceptions import (
    CorruptIndexError,
    DuplicateIdError,
    IndexExistsError,
    InvalidArgumentError,
    UnknownIdError,
)


def _exact_reference(tmp_path, vectors, ids, **kwargs):
    """One ordinary index over the same vectors: the reference every sharded search is checked against."""
    return Index.build(tmp_path / "single", vectors, ids=ids, **kwargs)


@pytest.mark.parametrize("n_shards", [1, 3, 4])
@pytest.mark.parametrize("rescore", [("int8",), ("int8", "float16")])
def test_exact_merge_equals_one_index(tmp_path, n_shards, rescore):
    n, dim, k = 900, 48, 10
    vectors = unit_vectors(n, dim, seed=1)
    queries = unit_vectors(7, dim, seed=2)
    ids = [f"doc-{i}" for i in range(n)]
    single = _exact_reference(tmp_path, vectors, ids, rescore=list(rescore))
    with ShardedIndex.create(
        tmp_path / "sharded", dim, n_shards, calibration=vectors, id_type="str", rescore=list(rescore)
    ) as sharded:
        for chunk in np.array_split(np.arange(n), 4):
            sharded.add(vectors[chunk], [ids[i] for i in chunk], texts=[f"t{i}" for i in chunk])
        assert len(sharded) == n
        got = sharded.search(queries, k, exact=True)
        want = single.search(queries, k, oversampling=n / k + 1)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)  # bit-identical, not approximately
        assert got.texts == [[f"t{ids.index(i)}" for i in row] for row in got.ids]
    single.close()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_shard_search_equals_one_index(tmp_path, threads):
    """Shards searched on several threads (the kernels release the GIL) give one index's answer,
    payload included, for single queries and batches, and the pool closes with the index."""
    n, dim, k = 1000, 32, 10
    vectors = unit_vectors(n, dim, seed=11)
    queries = unit_vectors(9, dim, seed=12)
    single = _exact_reference(tmp_path, vectors, list(range(n)))
    create_sharded(tmp_path / "sharded", dim, 4, calibration=vectors)
    with ShardedIndex.open(tmp_path / "sharded", threads=threads) as sharded:
        assert sharded.threads == threads
        sharded.add(vectors, list(range(n)), texts=[f"t{i}" for i in range(n)])
        want = single.search(queries, k, oversampling=n / k + 1)
        for q in queries:  # one query at a time, as a server sees them
            got = sharded.search(q, k, exact=True)
            one = single.search(q, k, oversampling=n / k + 1)
            np.testing.assert_array_equal(got.ids, one.ids)
            np.testing.assert_array_equal(got.scores, one.scores)
        got = sharded.search(queries, k, exact=True)
        np.testing.assert_array_equal(got.ids, want.ids)
        assert got.texts == [[f"t{i}" for i in row] for row in want.ids]
        with pytest.raises(InvalidArgumentError):  # a shard's error comes back from its thread
            sharded.search(queries, k, stages=["no-such-tier"])
        # searches from several caller threads at once share the pool and keep their answers apart
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as callers:
            answers = list(callers.map(lambda q: sharded.search(q, k, exact=True).ids[0], list(queries) * 3))
        for q, ids in enumerate(answers):
            np.testing.assert_array_equal(ids, want.ids[q % len(queries)])
    assert sharded._fanout._pool is None
    with pytest.raises(InvalidArgumentError):
        ShardedIndex.open(tmp_path / "sharded", threads=0)
    single.close()


def test_exact_merge_matches_float_brute_force_order(tmp_path):
    # an independent reference: with a float32 last stage the exact merged ranking is the float ranking
    n, dim, k = 600, 32, 5
    vectors = unit_vectors(n, dim, seed=3)
    queries = unit_vectors(4, dim, seed=4)
    with ShardedIndex.create(tmp_path / "s", dim, 3, calibration=vectors, rescore=["float32"]) as sharded:
        sharded.add(vectors, list(range(n)))
        got = sharded.search(queries, k, exact=True)
    brute = queries @ vectors.T
    want = np.argsort(-brute, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(got.ids, want)
    np.testing.assert_allclose(got.scores, np.take_along_axis(brute, want, axis=1), rtol=1e-5, atol=1e-6)


def test_shards_share_one_calibration_and_open_alone(tmp_path):
    vectors = unit_vectors(400, 24, seed=5)
    layout = create_sharded(tmp_path / "s", 24, 3, calibration=vectors, rescore=["int8"])
    prints = set()
    for d in layout.shard_dirs:
        with Index.open(d) as shard:  # an ordinary index directory
            assert shard.is_calibrated and len(shard) == 0
            prints.add(index_fingerprint(shard))
    assert prints == {layout.fingerprint}
    # the fitted int8 ranges are those of one fit on the sample
    with Index.open(layout.shard_dirs[2]) as shard:
        from quantsearch.quantization import quantizer_from_config

        ref = quantizer_from_config(shard.tiers["int8"].to_config()).fit(vectors)
        for key, value in ref.get_state().items():
            np.testing.assert_array_equal(shard.tiers["int8"].get_state()[key], value)


def test_routing_is_stable_and_balanced(tmp_path):
    vectors = unit_vectors(2000, 16, seed=6)
    ids = list(range(2000))
    with ShardedIndex.create(tmp_path / "s", 16, 4, calibration=vectors) as sharded:
        sharded.add(vectors, ids)
        for s in range(4):
            held = sharded.shard(s)
            assert all(shard_of(i, 4) == s for i in ids[:200] if i in held)
            assert all((i in held) == (shard_of(i, 4) == s) for i in ids[:200])
            assert 400 < len(held) < 600  # a hash spreads 2000 ids evenly (expected 500 +- 19)
    assert shard_of("7", 4) == shard_of("7", 4) and shard_of(7, 1) == 0
    # typed ids: the int 7 and the str "7" are different keys (so they may land apart)
    assert shard_of(7, 1 << 30) != shard_of("7", 1 << 30)


def test_approximate_search_merges_each_shards_best(tmp_path):
    # with rescoring, the merged top-k equals the top-k of the union of every shard's own answer
    n, dim, k = 800, 40, 8
    vectors = unit_vectors(n, dim, seed=7)
    queries = unit_vectors(5, dim, seed=8)
    with ShardedIndex.create(tmp_path / "s", dim, 4, calibration=vectors) as sharded:
        sharded.add(vectors, list(range(n)))
        got = sharded.search(queries, k, oversampling=2)
        parts = [sharded.shard(s).search(queries, k, oversampling=2) for s in range(4)]
    all_ids = np.concatenate([p.ids for p in parts], axis=1)
    all_scores = np.concatenate([p.scores for p in parts], axis=1)
    for q in range(len(queries)):
        order = np.argsort(-all_scores[q], kind="stable")[:k]
        np.testing.assert_array_equal(got.ids[q], all_ids[q, order])
        np.testing.assert_array_equal(got.scores[q], all_scores[q, order])


def test_merge_results_pads_and_keeps_payload():
    a = SearchResults(
        np.array([[3, 1]]), np.array([[0.9, 0.2]], np.float32), [["a3", "a1"]], [[None, {"x": 1}]]
    )
    b = SearchResults(np.array([[7]]), np.array([[0.5]], np.float32), [["b7"]], [[None]])
    empty = SearchResults(np.zeros((1, 0), np.int64), np.zeros((1, 0), np.float32), [[]], [[]])
    out = merge_results([a, empty, b], 4, "int")
    np.testing.assert_array_equal(out.ids, [[3, 7, 1, -1]])
    np.testing.assert_array_equal(out.scores[:, :3], np.array([[0.9, 0.5, 0.2]], np.float32))
    assert np.isnan(out.scores[0, 3])
    assert out.texts == [["a3", "b7", "a1", None]] and out.metadata == [[None, None, {"x": 1}, None]]
    assert out.to_list()[0][-1]["id"] == 1 and len(out.to_list()[0]) == 3


def test_writes_validate_before_anything_is_stored(tmp_path):
    vectors = unit_vectors(300, 16, seed=9)
    with ShardedIndex.create(tmp_path / "s", 16, 3, calibration=vectors) as sharded:
        sharded.add(vectors[:100], list(range(100)))
        with pytest.raises(DuplicateIdError, match="already in the index"):
            sharded.add(vectors[100:200], list(range(95, 195)))
        with pytest.raises(DuplicateIdError, match="twice"):
            sharded.add(vectors[:2], [500, 500])
        with pytest.raises(InvalidArgumentError, match="ids are required"):
            sharded.add(vectors[:2], None)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="must be an int"):
            sharded.add(vectors[:1], ["x"])
        assert len(sharded) == 100  # nothing of the refused batches was stored
        with pytest.raises(UnknownIdError):
            sharded.delete([1, 2, 10_000])
        assert len(sharded) == 100
        assert sharded.delete([1, 2, 3]) == 3 and 2 not in sharded and 4 in sharded
        assert sharded.get(4)["id"] == 4
        with pytest.raises(InvalidArgumentError, match="exceeds"):
            sharded.search(vectors[:1], 98)
        assert sharded.compact() == 3
        res = sharded.search(vectors[4], 1, exact=True)
        assert res.ids[0, 0] == 4
        info = sharded.info()
        assert info["count"] == 97 and info["n_shards"] == 3 and sum(s["count"] for s in info["shards"]) == 97


def test_manifest_errors(tmp_path):
    vectors = unit_vectors(50, 8, seed=10)
    create_sharded(tmp_path / "s", 8, 2, calibration=vectors)
    with pytest.raises(IndexExistsError):
        create_sharded(tmp_path / "s", 8, 2, calibration=vectors)
    with pytest.raises(InvalidArgumentError, match="n_shards"):
        create_sharded(tmp_path / "t", 8, 0, calibration=vectors)
    assert not (tmp_path / "t").exists()
    manifest = tmp_path / "s" / SHARD_MANIFEST
    body = json.loads(manifest.read_text())
    body["n_shards"] = 3
    manifest.write_text(json.dumps(body))
    with pytest.raises(CorruptIndexError, match="checksum"):
        read_shard_manifest(tmp_path / "s")


def test_shard_with_other_calibration_is_refused(tmp_path):
    vectors = unit_vectors(200, 8, seed=11)
    layout = create_sharded(tmp_path / "s", 8, 2, calibration=vectors)
    other = layout.shard_dirs[1]
    import shutil

    shutil.rmtree(other)
    Index.create(other, 8, calibration=vectors[:50]).close()  # fitted on another sample
    with pytest.raises(CorruptIndexError, match="different calibration"):
        ShardedIndex.open(tmp_path / "s")


def test_steady_rate_sums_each_actors_own_rate():
    from quantsearch.distributed.ingestion import steady_rate

    # actor 7: 10 docs every 0.5 s from t=3 (20 docs/s); actor 9: 10 docs every 1 s from t=5 (10 docs/s)
    reports = [(7, 3.0 + 0.5 * j, 10) for j in range(9)] + [(9, 5.0 + 1.0 * j, 10) for j in range(5)]
    assert steady_rate(sorted(reports, key=lambda r: -r[1])) == pytest.approx(30.0)
    # two actors at the same pace finishing their first batches together: 2 x the one-actor rate
    one = [(1, 2.0 + j, 64) for j in range(6)]
    two = one + [(2, 2.0 + j + 1e-3, 64) for j in range(6)]
    assert steady_rate(two) == pytest.approx(2 * steady_rate(one), rel=1e-3)
    assert np.isnan(steady_rate([(1, 2.0, 64), (2, 2.5, 64)]))  # no actor did two batches


@pytest.mark.parametrize("id_type", ["int", "str"])
def test_search_wire_round_trip_equals_search(tmp_path, id_type):
    from quantsearch.distributed.shard import ShardServer, decode_search_reply, search_request

    vectors = unit_vectors(300, 24, seed=30)
    ids = list(range(300)) if id_type == "int" else [f"d{i}" for i in range(300)]
    create_sharded(tmp_path / "s", 24, 2, calibration=vectors, id_type=id_type)
    with ShardedIndex.open(tmp_path / "s") as local:
        local.add(
            vectors[:200],
            ids[:200],
            texts=[f"t{i}" for i in range(200)],
            metadata=[{"i": i} for i in range(200)],
        )
    queries = unit_vectors(3, 24, seed=31)
    for shard in (0, 1):
        server = ShardServer(tmp_path / "s" / f"shard-{shard:04d}")
        for args in (
            (10, None, None, True, False),
            (7, 3.0, None, False, True),
            (500, None, None, True, False),
        ):
            want, n_want = server.search(queries, *args)
            got, n_got = decode_search_reply(server.search_wire(search_request(queries, *args)), len(queries))
            assert n_got == n_want and got.ids.dtype == want.ids.dtype
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(got.scores, want.scores)
            assert (got.texts, got.metadata, got.candidates) == (want.texts, want.metadata, want.candidates)
        server.close()
    empty = tmp_path / "e"
    create_sharded(empty, 24, 1, calibration=vectors, id_type=id_type)
    server = ShardServer(empty / "shard-0000")
    got, n = decode_search_reply(server.search_wire(search_request(queries, 5, None, None, True, False)), 3)
    assert n == 0 and got.ids.shape == (3, 0) and got.scores.shape == (3, 0) and got.texts == [[], [], []]
    server.close()
