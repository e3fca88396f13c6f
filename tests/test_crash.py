"""Crash safety: a writer killed with SIGKILL at random moments leaves the last committed state.

A child process (crash_child.py) adds or deletes batches in a loop and prints ``ACK b`` after each
call returns; the parent kills it at a random moment, reopens the index and checks that every
acknowledged batch is there (or gone, for deletes), that no batch is partly stored, and that the
stored vectors are searchable. The next child goes on writing to the same directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crash_child import BATCH, DIM, batch_ids, batch_metadata, batch_texts, batch_vectors
from quantsearch import Index
from quantsearch.index.lexical import LexicalTier

CHILD = Path(__file__).with_name("crash_child.py")
SRC = Path(__file__).resolve().parents[1] / "src"
ADD_KILLS = 25
DELETE_KILLS = 10
COMPACT_KILLS = 12


def run_and_kill(
    mode: str, path: Path, first: int, last: int, rng: np.random.Generator, op_s: float
) -> set[int]:
    """Start a child writing batches [first, last), kill it at a random moment, return the acked batches."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(path), str(first), str(last)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "READY\n", proc.stderr.read() if proc.stderr else ""
        complete = min(int(rng.integers(0, 3)), last - first)
        seen = [proc.stdout.readline() for _ in range(complete)]  # a few calls complete,
        time.sleep(rng.uniform(0.0, 1.2 * op_s))  # then kill at a random moment of the next one
        alive = proc.poll() is None
    finally:
        proc.kill()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()  # read(), not communicate(): readline() buffers
    proc.stdout.close()
    proc.stderr.close()
    assert alive, f"the child exited before it was killed: {err}"
    assert proc.wait(timeout=30) == -9, err
    lines = seen + out.splitlines(keepends=True)
    assert all(line.startswith("ACK ") and line.endswith("\n") for line in lines), lines
    return {int(line.split()[1]) for line in lines}


def stored_batches(index: Index, batches: range) -> set[int]:
    """Batches whose ids are all in the index; fails if a batch is only partly there."""
    stored = set()
    for b in batches:
        there = [i in index for i in batch_ids(b)]
        assert all(there) or not any(there), f"batch {b} is partly stored: {sum(there)} of {BATCH}"
        if there[0]:
            stored.add(b)
    assert len(index) == BATCH * len(stored)
    return stored


def check_searchable(index: Index, batches: set[int]) -> None:
    """Each doc's own vector finds it: at Hamming distance 0, and first after int8 rescoring."""
    if not batches:
        return
    order = sorted(batches)
    x = np.concatenate([batch_vectors(b) for b in order])
    ids = [i for b in order for i in batch_ids(b)]
    hamming = index.search(x, k=1, stages=(), with_payload=False)
    assert hamming.ids[:, 0].tolist() == ids and (hamming.scores == 0).all()
    rescored = index.search(x, k=1, stages=("int8",))
    assert rescored.ids[:, 0].tolist() == ids
    assert [t[0] for t in rescored.texts] == [t for b in order for t in batch_texts(b)]
    assert [m[0] for m in rescored.metadata] == [m for b in order for m in batch_metadata(b)]
    if index.has_lexical:  # the IVF crash test's index has no lexical tier
        check_lexical(index, ids[:: max(1, len(ids) // 40)])


def check_lexical(index: Index, present: list[int]) -> None:
    """The lexical tier holds exactly the committed documents: each one's text finds it first, with
    its own payload, and the tier counts every live document (all have texts)."""
    assert LexicalTier.count(index._catalog) == len(index)
    present = [i for i in present if i >= 10]  # "doc 7": single characters are not terms
    if not present:
        return
    res = index.search([f"doc {i}" for i in present], k=1, mode="lexical")
    assert res.ids[:, 0].tolist() == present
    assert [t[0] for t in res.texts] == [f"doc {i}" for i in present]


def create_index(
    path: Path, n_batches: int, check: Callable[[Index], None] | None = None, **options: Any
) -> float:
    """Create the index (``options`` for ``Index.create``; a lexical tier by default) with batches
    [0, n_batches), ``check`` it before closing; return the mean seconds one add took."""
    calibration = np.concatenate([batch_vectors(b) for b in range(10_000, 10_008)])
    options = options or {"lexical": {"stemmer": None}}
    with Index.create(path, DIM, calibration=calibration, **options) as index:
        t0 = time.perf_counter()
        for b in range(n_batches):
            index.add(batch_vectors(b), ids=batch_ids(b), texts=batch_texts(b), metadata=batch_metadata(b))
        add_s = (time.perf_counter() - t0) / n_batches
        if check is not None:
            check(index)
        return add_s


def present_docs(index: Index, batches: int) -> list[tuple[int, int]]:
    """(batch, position) of every document of batches [0, batches) the index holds."""
    return [(b, j) for b in range(batches) for j, i in enumerate(batch_ids(b)) if i in index]


def assert_no_leftovers(path: Path) -> None:
    """After a writer took the lock: no temp files, and only the committed segments' files."""
    with Index.open(path) as index:
        index.add(batch_vectors(99_999), ids=batch_ids(99_999))  # the writer removes crash leftovers
        segments = index.info()["segments"]
        index.verify()  # the checksums, and FTS5's integrity check of the lexical tier
    assert not [p for p in path.rglob("*.tmp")]
    assert len(list((path / "segments").iterdir())) == 2 * segments


def test_kill_during_add_keeps_every_acked_batch(tmp_path) -> None:
    path = tmp_path / "idx"
    add_s = create_index(path, 2)
    rng = np.random.default_rng(7)
    acked = {0, 1}
    next_batch = 2
    for _ in range(ADD_KILLS):
        acked |= run_and_kill("add", path, next_batch, next_batch + 100, rng, add_s)
        with Index.open(path) as index:
            stored = stored_batches(index, range(next_batch + 100))
            assert acked <= stored, f"acked batches lost: {sorted(acked - stored)}"
            assert stored == set(range(len(stored))), "batches are added in order"
            check_searchable(index, stored - set(range(next_batch - 2)))  # the new ones and a few old
        next_batch = len(stored)
    with Index.open(path) as index:
        check_searchable(index, set(range(next_batch)))
    assert_no_leftovers(path)


def test_kill_during_delete_keeps_every_acked_delete(tmp_path) -> None:
    n_batches = 4 * DELETE_KILLS + 10
    path = tmp_path / "idx"
    create_index(path, n_batches)
    with Index.open(path) as index:  # time a delete (and put the deleted batch back)
        t0 = time.perf_counter()
        index.delete(batch_ids(0))
        delete_s = time.perf_counter() - t0
        index.add(batch_vectors(0), ids=batch_ids(0), texts=batch_texts(0), metadata=batch_metadata(0))
    rng = np.random.default_rng(11)
    deleted: set[int] = set()
    next_batch = 0
    for _ in range(DELETE_KILLS):
        # at most 4 batches a round, and never the last two: the index keeps documents to search
        deleted |= run_and_kill("delete", path, next_batch, min(next_batch + 4, n_batches - 2), rng, delete_s)
        with Index.open(path) as index:
            stored = stored_batches(index, range(n_batches))
            assert not deleted & stored, f"acked deletes undone: {sorted(deleted & stored)}"
            gone = set(range(n_batches)) - stored
            assert gone == set(range(len(gone))), "batches are deleted in order"
            sample = rng.choice(sorted(stored), size=min(6, len(stored)), replace=False)
            check_searchable(index, set(sample.tolist()))
            vectors = np.concatenate([batch_vectors(b) for b in sorted(gone)[-6:]] or [batch_vectors(0)])
            for stages in ((), ("int8",)):
                hits = index.search(vectors, k=3, stages=stages, with_payload=False).ids
                assert (hits >= 0).all() and not any(int(i) // BATCH in gone for i in hits.ravel())
        next_batch = len(gone)
    with Index.open(path) as index:
        check_searchable(index, stored_batches(index, range(n_batches)))
    assert_no_leftovers(path)


def test_kill_during_compaction_loses_nothing(tmp_path) -> None:
    path = tmp_path / "idx"
    create_index(path, 2)
    with Index.open(path) as index:  # time one add + delete + compact step (batch 2)
        t0 = time.perf_counter()
        index.add(batch_vectors(2), ids=batch_ids(2), texts=batch_texts(2), metadata=batch_metadata(2))
        index.delete(batch_ids(2)[: BATCH // 2])
        index.compact()
        step_s = time.perf_counter() - t0
    rng = np.random.default_rng(13)
    acked = {2}
    next_batch = 3
    for _ in range(COMPACT_KILLS):
        acked |= run_and_kill("compact", path, next_batch, next_batch + 100, rng, step_s)
        with Index.open(path) as index:
            for b in acked:  # a finished step: the second half of the batch, and only it
                ids = batch_ids(b)
                assert not any(i in index for i in ids[: BATCH // 2]) and all(
                    i in index for i in ids[BATCH // 2 :]
                )
            present = present_docs(index, next_batch + 100)
            assert len(index) == len(present)  # every live doc is one of ours
            # every present document (any intermediate state of the interrupted step) is found by
            # its own vector with its own payload: rows and ids were renumbered consistently
            x = np.stack([batch_vectors(b)[j] for b, j in present])
            want = [batch_ids(b)[j] for b, j in present]
            res = index.search(x, k=1, stages=())
            assert res.ids[:, 0].tolist() == want and (res.scores == 0).all()
            assert [t[0] for t in res.texts] == [batch_texts(b)[j] for b, j in present]
            check_lexical(index, [batch_ids(b)[j] for b, j in present][::7])
            next_batch = max(b for b, _ in present) + 1
    with Index.open(path) as index:
        index.compact()
        assert index.info()["segments"] == 1
    assert not list(path.rglob("*.tmp")) and len(list((path / "segments").iterdir())) == 2


IVF = {"kind": "ivf", "params": {"nlist": 4, "nprobe": 4, "min_rows": 128}}


def assert_ivf_covers(index: Index) -> None:
    """The IVF stage lists every stored row, in memory and in its saved file."""
    from quantsearch.index.ivf import IVF_FILE

    n_rows = index._state.n_rows
    lists = index._state.stage._lists  # type: ignore[attr-defined]
    assert lists is not None and lists.assign.shape[0] == n_rows
    with np.load(index.path / IVF_FILE) as data:
        assert int(data["meta"][0]) == n_rows and int(data["meta"][1]) == index._state.generation


def test_kill_during_add_and_compaction_with_an_ivf_stage(tmp_path) -> None:
    """SIGKILL at random moments of add (IVF update after the commit) and of compaction (IVF rebuild
    after the commit): the index opens, holds every acked batch, and its lists catch up."""
    path = tmp_path / "idx"
    add_s = create_index(path, 3, assert_ivf_covers, candidate_stage=IVF)
    rng = np.random.default_rng(17)
    acked = {0, 1, 2}
    next_batch = 3
    for _ in range(8):
        acked |= run_and_kill("add", path, next_batch, next_batch + 100, rng, add_s)
        with Index.open(path) as index:
            stored = stored_batches(index, range(next_batch + 100))
            assert acked <= stored, f"acked batches lost: {sorted(acked - stored)}"
            assert_ivf_covers(index)
            check_searchable(index, stored - set(range(next_batch - 2)))
        next_batch = len(stored)
    for _ in range(5):
        run_and_kill("compact", path, next_batch, next_batch + 100, rng, 3 * add_s)
        with Index.open(path) as index:
            assert_ivf_covers(index)
            present = present_docs(index, next_batch + 100)
            x = np.stack([batch_vectors(b)[j] for b, j in present])
            res = index.search(x, k=1, stages=())
            assert res.ids[:, 0].tolist() == [batch_ids(b)[j] for b, j in present]
            next_batch = max(b for b, _ in present) + 1


HNSW = {"kind": "hnsw", "params": {"m": 8, "min_rows": 300, "save_fraction": 0.1}}


def assert_graph_covers(index: Index) -> None:
    """The graph holds every stored row in memory; its saved file is of this generation and covers at
    most the stored rows (the unsaved tail is inserted at open)."""
    import struct

    from quantsearch.index.graph import _HEADER, GRAPH_FILE

    stage = index._state.stage
    n_rows = index._state.n_rows
    assert stage.n_graph == n_rows  # type: ignore[attr-defined]
    data = (index.path / GRAPH_FILE).read_bytes()[: _HEADER.size]
    _magic, covered, generation, _digest, _length = struct.unpack(_HEADER.format, data)
    assert covered <= n_rows and generation == index._state.generation


def check_found_by_graph(index: Index, present: list[tuple[int, int]]) -> None:
    """Every present document is found by its own vector through the graph (ef above the row count:
    the walk reaches every node) with its own id, at Hamming distance 0."""
    x = np.stack([batch_vectors(b)[j] for b, j in present])
    res = index.search(x, k=1, stages=(), ef=4 * index._state.n_rows, with_payload=False)
    assert (res.scores == 0).all()
    got = res.ids[:, 0].tolist()
    want = [batch_ids(b)[j] for b, j in present]
    # two documents may share a 40-bit code; then either is a correct answer at distance 0
    assert np.mean([g == w for g, w in zip(got, want, strict=True)]) >= 0.99


def test_kill_during_add_build_and_compaction_with_an_hnsw_stage(tmp_path) -> None:
    """SIGKILL at random moments of add (graph insert and occasional save after the commit), of the
    first graph build (at ``min_rows``) and of compaction (rebuild after the commit): the index opens,
    holds every acked batch, and its graph catches up with the catalog."""
    path = tmp_path / "idx"

    def no_graph_yet(index: Index) -> None:  # 192 rows: below min_rows, a killed child builds it
        assert index._state.stage.n_graph == 0  # type: ignore[attr-defined]

    add_s = create_index(path, 3, no_graph_yet, candidate_stage=HNSW)
    rng = np.random.default_rng(23)
    acked = {0, 1, 2}
    next_batch = 3
    for _ in range(8):
        acked |= run_and_kill("add", path, next_batch, next_batch + 100, rng, add_s)
        with Index.open(path) as index:
            stored = stored_batches(index, range(next_batch + 100))
            assert acked <= stored, f"acked batches lost: {sorted(acked - stored)}"
            if index._state.n_rows >= 300:
                assert_graph_covers(index)
                check_found_by_graph(index, [(b, j) for b in sorted(stored) for j in range(BATCH)])
        next_batch = len(stored)
    for _ in range(5):
        run_and_kill("compact", path, next_batch, next_batch + 100, rng, 3 * add_s)
        with Index.open(path) as index:
            assert_graph_covers(index)
            present = present_docs(index, next_batch + 100)
            check_found_by_graph(index, present)
            next_batch = max(b for b, _ in present) + 1
