"""Group commit: concurrent add requests share one Index.add, and each stays atomic on its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from quantsearch import DuplicateIdError, Index
from quantsearch.exceptions import NonFiniteError

pytest.importorskip("fastapi")

from quantsearch.server.writer import GroupCommitter  # noqa: E402

DIM = 32


def batch(b: int, n: int = 5, *, ids: bool = True) -> dict[str, Any]:
    x = np.random.default_rng([5, b]).standard_normal((n, DIM)).astype(np.float32)
    return {
        "vectors": x / np.linalg.norm(x, axis=1, keepdims=True),
        "ids": [1000 + b * 100 + j for j in range(n)] if ids else None,
        "texts": [f"batch {b} doc {j}" for j in range(n)],
        "metadata": [{"b": b, "j": j} for j in range(n)],
    }


def run_held(index: Index, committer: GroupCommitter, batches: list[dict[str, Any]]) -> list[Any]:
    """Submit every batch from its own thread while the first commit is held, so that the others
    queue up behind it; returns each thread's ids or exception."""
    release = threading.Event()
    original = index.add
    calls = {"n": 0}

    def held_add(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            assert release.wait(30)
        return original(*args, **kwargs)

    index.add = held_add  # type: ignore[method-assign]
    out: list[Any] = [None] * len(batches)

    def submit(i: int) -> None:
        try:
            out[i] = committer.add(**batches[i])
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=submit, args=(0,))]
    threads[0].start()
    while calls["n"] == 0:  # the first request is inside its (held) commit
        time.sleep(0.005)
    threads += [threading.Thread(target=submit, args=(i,)) for i in range(1, len(batches))]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 30
    while committer.pending < len(batches) - 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for t in threads:
        t.join(30)
    index.add = original  # type: ignore[method-assign]
    return out


def stored(index: Index, b: dict[str, Any], ids: list[Any]) -> None:
    """Every document of batch ``b`` is there under ``ids``, with its payload, found by its vector."""
    for j, doc_id in enumerate(ids):
        assert index.get(doc_id) == {"id": doc_id, "text": b["texts"][j], "metadata": b["metadata"][j]}
    hits = index.search(b["vectors"], k=1, stages=(), with_payload=False).ids[:, 0]
    assert hits.tolist() == list(ids)


@pytest.fixture
def index(make_index: Callable[..., tuple[Index, np.ndarray]]) -> Index:
    return make_index(n=60, dim=DIM)[0]


def test_queued_batches_share_one_commit(index: Index) -> None:
    committer = GroupCommitter(index, max_rows=1000)
    batches = [batch(b) for b in range(10)]
    out = run_held(index, committer, batches)
    assert out == [b["ids"] for b in batches]
    assert committer.commits == 2  # the held one, then the nine that queued behind it
    assert index.info()["segments"] == 3 + 2 and len(index) == 60 + 50
    for b, ids in zip(batches, out, strict=True):
        stored(index, b, ids)


def test_a_bad_batch_fails_alone(index: Index) -> None:
    committer = GroupCommitter(index, max_rows=1000)
    batches = [batch(b) for b in range(8)]
    batches[2]["ids"][3] = 7  # already in the index
    batches[4]["vectors"][1, 5] = np.nan
    batches[6]["ids"][0] = batches[5]["ids"][0]  # two requests of one group want the same id
    out = run_held(index, committer, batches)
    assert isinstance(out[2], DuplicateIdError) and "id 7 is already in the index" in str(out[2])
    assert isinstance(out[4], NonFiniteError)
    assert out[5] == batches[5]["ids"]
    assert isinstance(out[6], DuplicateIdError)
    for i in (0, 1, 3, 5, 7):
        stored(index, batches[i], out[i])
    # nothing of a refused batch is stored (but the ids it shares with others, which are theirs)
    for doc_id in [
        *batches[2]["ids"][:3],
        *batches[2]["ids"][4:],
        *batches[4]["ids"],
        *batches[6]["ids"][1:],
    ]:
        assert doc_id not in index
    assert len(index) == 60 + 5 * 5


def test_new_int_ids_are_split_per_request(index: Index) -> None:
    committer = GroupCommitter(index, max_rows=1000)
    batches = [batch(b, n=3 + b, ids=False) for b in range(6)]
    out = run_held(index, committer, batches)
    flat = [i for ids in out for i in ids]
    assert [len(ids) for ids in out] == [3 + b for b in range(6)]
    assert len(set(flat)) == len(flat) and min(flat) >= 60  # new, distinct, above the existing ids
    for b, ids in zip(batches, out, strict=True):
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        stored(index, b, ids)
    assert committer.commits == 2


def test_a_group_is_bounded_by_max_rows(index: Index) -> None:
    committer = GroupCommitter(index, max_rows=12)
    batches = [batch(b) for b in range(7)]  # 5 rows each: the queued six make 3 groups of two
    out = run_held(index, committer, batches)
    assert out == [b["ids"] for b in batches] and committer.commits == 4
