"""The row -> id map an integer-id index keeps in RAM (searches without payload read ids from it).

Every hit of a search without payload is checked against an independent reference: the document's
vector is a function of its id, so the hit's score must be the int8 score of that id's own vector
(dequantized codes, computed here in float64). A wrong row -> id mapping returns an id whose score
does not match; a stale one returns an id deleted before the search began.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from quantsearch import Index

DIM = 24
K = 5


def vector_of(doc_id: int) -> np.ndarray:
    x = np.random.default_rng(doc_id).standard_normal(DIM).astype(np.float32)
    return x / np.linalg.norm(x)


def vectors_of(ids: list[int]) -> np.ndarray:
    return np.stack([vector_of(i) for i in ids])


def reference_scores(index: Index, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Int8 scores of ``ids``' own vectors: query . dequantized code, in float64."""
    int8 = index.tiers["int8"]
    decoded = int8.decode(int8.encode(vectors_of([int(i) for i in ids]))).astype(np.float64)
    return decoded @ query.astype(np.float64)


def check_hits(index: Index, query: np.ndarray, res, gone: set[int]) -> int:
    """Every hit's score matches its id's vector; no id of ``gone`` (deleted before the search)."""
    hit = res.ids[0] >= 0
    ids = res.ids[0][hit]
    assert not set(ids.tolist()) & gone, "a search returned an id deleted before it began"
    np.testing.assert_allclose(res.scores[0][hit], reference_scores(index, query, ids), rtol=1e-4, atol=1e-4)
    return int(hit.sum())


@pytest.fixture
def index(tmp_path):
    calibration = np.stack([vector_of(10_000_000 + i) for i in range(256)])
    with Index.create(tmp_path / "idx", DIM, rescore=["int8"], calibration=calibration) as idx:
        yield idx


def test_ids_follow_adds_deletes_and_compaction(index):
    ids = list(range(0, 400, 2))  # not the row numbers
    index.add(vectors_of(ids), ids=ids)
    index.add(vectors_of(list(range(1, 200, 2))), ids=list(range(1, 200, 2)))
    index.delete(list(range(0, 100, 4)))
    gone = set(range(0, 100, 4))
    assert index._state.view.ids.dtype == np.int32  # 4 bytes a row while the ids fit
    big = [2**40, -(2**62), 2**63 - 1]
    seeds = [10**6 + j for j in range(3)]  # vectors of no other document
    index.add(vectors_of(seeds[:1]), ids=big[:1])  # widened to 8 bytes, the earlier ids kept
    index.add(vectors_of(seeds[1:]), ids=big[1:])
    for doc, vec in zip(big, seeds, strict=True):
        res = index.search(vector_of(vec), K, with_payload=False)
        assert res.ids[0, 0] == doc and res.ids.dtype == np.int64
    index.delete(big)
    for when in ("before compaction", "after compaction"):
        for doc in (2, 3, 198, 399 - 1):
            q = vector_of(doc)
            res = index.search(q, K, with_payload=False)
            assert res.ids[0, 0] == doc, when  # its own vector ranks it first
            assert "ids" in res.timings
            check_hits(index, q, res, gone)
            full = index.search(q, K, with_payload=True)  # the catalog's answer: the same ids
            np.testing.assert_array_equal(res.ids, full.ids)
        index.compact()
    index.add(vectors_of(seeds[:1]), ids=[2**40])
    with Index.open(index.path, readonly=True) as reopened:  # read at open: int64 again
        assert reopened._state.view.ids.dtype == np.int64
        assert reopened.search(vector_of(seeds[0]), K, with_payload=False).ids[0, 0] == 2**40


def reader_of(index: Index, ids: list[int]) -> Index:
    """Add ``ids`` and hand the writer lock back; a second, searching connection to the index."""
    index.add(vectors_of(ids), ids=ids)
    index.close()
    return Index.open(index.path)


def test_other_connection_deletes_are_never_returned(index):
    index = reader_of(index, list(range(100, 300)))
    with Index.open(index.path) as writer:  # another connection to the same catalog
        writer.delete([150, 151])
        writer.add(vectors_of([5000]), ids=[5000])
    for doc in (150, 151):
        res = index.search(vector_of(doc), K, with_payload=False)  # a view taken before the delete
        assert doc not in res.ids[0].tolist()
        check_hits(index, vector_of(doc), res, {150, 151})
    index.refresh()  # catches up: the delete and the add are in the new view (and its ids)
    res = index.search(vector_of(5000), K, with_payload=False)
    assert res.ids[0, 0] == 5000
    check_hits(index, vector_of(5000), res, {150, 151})
    index.close()


@pytest.mark.parametrize("writer_kind", ["same index", "other connection"])
def test_ids_stay_correct_under_concurrent_writes(index, writer_kind):
    """A writer thread adds and deletes while readers search without payload; every hit of every
    search is checked (score of the id's own vector, never an id deleted before the search)."""
    first = list(range(1000, 1300))
    if writer_kind == "same index":
        index.add(vectors_of(first), ids=first)
    else:
        index = reader_of(index, first)
    live = list(first)
    gone: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    checked = [0]

    def write(writer: Index) -> None:
        rng = np.random.default_rng(1)
        next_id = 5000
        try:
            for _ in range(25):
                new = list(range(next_id, next_id + 20))
                next_id += 20
                writer.add(vectors_of(new), ids=new)
                with lock:
                    live.extend(new)
                    drop = [live.pop(int(rng.integers(len(live)))) for _ in range(8)]
                writer.delete(drop)
                with lock:
                    gone.update(drop)  # deleted: searches starting from now must not return them
                if writer_kind == "other connection" and rng.random() < 0.3:
                    index.refresh()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            stop.set()

    def read(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with lock:
                    before = set(gone)
                    target = live[int(rng.integers(len(live)))]
                q = vector_of(target) + 0.05 * rng.standard_normal(DIM).astype(np.float32)
                res = index.search(q, K, with_payload=False)
                checked[0] += check_hits(index, q, res, before)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    other = Index.open(index.path) if writer_kind == "other connection" else None
    threads = [threading.Thread(target=read, args=(s,)) for s in (2, 3)]
    threads.append(threading.Thread(target=write, args=(other or index,)))
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if other is not None:
        other.close()
    try:
        assert not errors, errors[0]
        assert checked[0] > 0 and time.monotonic() - start < 120
        # at rest, after catching up: exactly the live documents, each found by its own vector
        index.refresh()
        assert len(index) == len(live)
        for doc in live[::40]:
            res = index.search(vector_of(doc), K, with_payload=False)
            assert res.ids[0, 0] == doc
            check_hits(index, vector_of(doc), res, gone)
    finally:
        index.close()
