"""Sharded serving on a real local Ray (2 CPUs): one actor per shard, exact merge, actor kills."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from conftest import unit_vectors
from quantsearch import Index
from quantsearch.distributed import FaultPolicy, ShardedIndex, create_sharded
from quantsearch.exceptions import DuplicateIdError, InvalidArgumentError, ShardUnavailableError

ray = pytest.importorskip("ray")

from quantsearch.distributed.serving import RayShardedIndex, open_sharded  # noqa: E402

N, DIM, K = 1200, 32, 10


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def sharded_dir(tmp_path):
    vectors = unit_vectors(N, DIM, seed=20)
    create_sharded(tmp_path / "s", DIM, 4, calibration=vectors)
    with ShardedIndex.open(tmp_path / "s") as local:
        local.add(vectors, list(range(N)), texts=[f"doc {i}" for i in range(N)])
    return tmp_path / "s", vectors


def _kill(index: RayShardedIndex, shard: int) -> None:
    """SIGKILL the process of a shard's actor (what a crash or the OOM killer does)."""
    os.kill(ray.get(index.actors[shard].pid.remote()), signal.SIGKILL)


def _kill_mid_call(index: RayShardedIndex, shard: int, call, marker) -> threading.Thread:
    """Run ``call`` in a thread and SIGKILL ``shard``'s actor while it is inside that call."""
    pid = ray.get(index.actors[shard].pid.remote())
    ray.get(index.actors[shard].stall.remote(30.0, str(marker)))
    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 60
    while not marker.exists():  # the shard is now sleeping inside the call
        assert time.monotonic() < deadline
        time.sleep(0.01)
    marker.unlink()
    os.kill(pid, signal.SIGKILL)
    return thread


def test_ray_search_equals_one_index(ray_session, sharded_dir, tmp_path):
    path, vectors = sharded_dir
    queries = unit_vectors(6, DIM, seed=21)
    with Index.build(tmp_path / "single", vectors, ids=list(range(N))) as single:
        want = single.search(queries, K, oversampling=N / K + 1)
    with open_sharded(path) as index:
        got = index.search(queries, K, exact=True)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.texts == [[f"doc {i}" for i in row] for row in want.ids]
        assert len(index) == N and index.get(5)["text"] == "doc 5"
        # errors raised in a shard come back as our own types, not Ray's wrapper
        with pytest.raises(DuplicateIdError):
            index.add(vectors[:1], [3])
        with pytest.raises(InvalidArgumentError, match="exceeds"):
            index.search(queries, N + 1)
        assert index.info()["count"] == N


def test_kill_during_search_retries_on_restarted_actor(ray_session, sharded_dir, tmp_path):
    path, _ = sharded_dir
    queries = unit_vectors(3, DIM, seed=22)
    with open_sharded(path) as index:
        want = index.search(queries, K, exact=True)
        result: dict[str, object] = {}
        search = lambda: result.update(r=index.search(queries, K, exact=True))  # noqa: E731
        _kill_mid_call(index, 2, search, tmp_path / "in-call").join(60)
        got = result["r"]
        np.testing.assert_array_equal(got.ids, want.ids)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got.scores, want.scores)  # type: ignore[attr-defined]


def test_kill_during_search_raises_naming_the_shard(ray_session, sharded_dir, tmp_path):
    path, _ = sharded_dir
    queries = unit_vectors(2, DIM, seed=23)
    with open_sharded(path, policy=FaultPolicy(on_failure="raise")) as index:
        errors: list[BaseException] = []

        def search() -> None:
            try:
                index.search(queries, K)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                errors.append(exc)

        _kill_mid_call(index, 1, search, tmp_path / "in-call").join(60)
        assert len(errors) == 1 and isinstance(errors[0], ShardUnavailableError)
        assert errors[0].shards == (1,) and "shard 1 " in str(errors[0])
        # the actor restarts and serves again
        deadline = time.monotonic() + 30
        while True:
            try:
                assert index.search(queries, K).ids.shape == (2, K)
                break
            except ShardUnavailableError:
                assert time.monotonic() < deadline
                time.sleep(0.2)


@pytest.mark.slow
def test_twenty_kills_lose_no_acknowledged_add(ray_session, tmp_path):
    rng = np.random.default_rng(24)
    total = 20 * 25 + 200
    vectors = unit_vectors(total, DIM, seed=25)
    create_sharded(tmp_path / "s", DIM, 3, calibration=vectors)
    acked: list[int] = []
    with open_sharded(tmp_path / "s", policy=FaultPolicy(retries=20, timeout_s=120)) as index:
        index.add(vectors[:200], list(range(200)))
        acked += list(range(200))
        for kill in range(20):
            ids = list(range(200 + 25 * kill, 200 + 25 * (kill + 1)))
            victim = int(rng.integers(3))
            if kill % 2:  # kill while the add is in flight
                done: list[list[int | str]] = []
                add = lambda ids=ids, done=done: done.append(index.add(vectors[ids], ids))  # noqa: E731
                parts = {index.layout.shard_of(i) for i in ids}
                victim = sorted(parts)[victim % len(parts)]  # a shard this add writes to
                _kill_mid_call(index, victim, add, tmp_path / "in-call").join(120)
                assert done == [ids]
            else:  # kill between adds: the next add and search find a restarting actor
                _kill(index, victim)
                assert index.add(vectors[ids], ids) == ids
            acked += ids
            res = index.search(vectors[ids[:2]], 1, exact=True)
            np.testing.assert_array_equal(res.ids[:, 0], ids[:2])
        assert len(index) == len(acked)
    with ShardedIndex.open(tmp_path / "s") as local:  # from disk, without Ray
        assert len(local) == len(acked) == total
        assert all(i in local for i in acked)
        got = local.search(vectors[::50], 3, exact=True)
    with Index.build(tmp_path / "single", vectors, ids=list(range(total))) as single:
        want = single.search(vectors[::50], 3, oversampling=total / 3 + 1)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_http_service_on_a_sharded_directory(ray_session, sharded_dir):
    from fastapi.testclient import TestClient

    from quantsearch.server import create_app

    path, vectors = sharded_dir
    queries = unit_vectors(3, DIM, seed=26)
    with ShardedIndex.open(path) as local:
        want = [local.search(q, 5).to_list()[0] for q in queries]
    with TestClient(
        create_app(path), base_url="http://localhost"
    ) as client:  # shard actors on the running Ray
        for q, hits in zip(queries, want, strict=True):
            body = client.post("/search", json={"vector": q.tolist(), "k": 5}).json()
            assert [(h["id"], h["score"]) for h in body["hits"]] == [(h["id"], h["score"]) for h in hits]
        new = unit_vectors(1, DIM, seed=27)[0]
        added = client.post(
            "/documents", json={"documents": [{"id": 5000, "vector": new.tolist(), "text": "x"}]}
        )
        assert added.status_code == 200, added.text
        assert client.get("/documents/5000").json()["text"] == "x"
        hit = client.post("/search", json={"vector": new.tolist(), "k": 1}).json()["hits"][0]
        assert hit["id"] == 5000
        assert (
            client.post("/documents", json={"documents": [{"id": 5000, "vector": new.tolist()}]}).status_code
            == 409
        )
        assert client.delete("/documents/5000").status_code == 200
        assert client.get("/stats").json()["count"] == N


def test_compiled_graph_search_equals_plain_and_survives_a_kill(ray_session, sharded_dir, tmp_path):
    path, _ = sharded_dir
    queries = unit_vectors(4, DIM, seed=28)
    with pytest.raises(InvalidArgumentError, match="retry"):
        open_sharded(path, policy=FaultPolicy(on_failure="raise"), compiled=True)
    with open_sharded(path) as plain:
        want = [plain.search(q, K, exact=True) for q in queries]
        want_batch = plain.search(queries, K)
    with open_sharded(path, compiled=True) as index:
        for q, w in zip(queries, want, strict=True):
            got = index.search(q, K, exact=True)
            np.testing.assert_array_equal(got.ids, w.ids)
            np.testing.assert_array_equal(got.scores, w.scores)
        assert index._graph is not None  # the searches went through the graph
        got = index.search(queries, K)
        np.testing.assert_array_equal(got.ids, want_batch.ids)
        with pytest.raises(InvalidArgumentError):  # raised in the shards: our type, and the graph stays
            index.search(queries, K, stages=["no-such-tier"])
        assert index._graph is not None
        # a shard killed inside a compiled search: that search is served the ordinary way, retried
        result: dict[str, object] = {}
        search = lambda: result.update(r=index.search(queries[0], K, exact=True))  # noqa: E731
        _kill_mid_call(index, 3, search, tmp_path / "in-call").join(120)
        np.testing.assert_array_equal(result["r"].ids, want[0].ids)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60  # and the graph is compiled again once the actor is back
        while True:
            got = index.search(queries[1], K, exact=True)
            np.testing.assert_array_equal(got.ids, want[1].ids)
            if index._graph is not None:
                break
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_http_service_and_cli_with_compiled_graphs(ray_session, sharded_dir, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from quantsearch.cli import main
    from quantsearch.server import create_app

    path, vectors = sharded_dir
    queries = unit_vectors(3, DIM, seed=29)
    with ShardedIndex.open(path) as local:
        want = [local.search(q, 5).to_list()[0] for q in queries]
    app = create_app(path, compiled=True)
    with TestClient(app, base_url="http://localhost") as client:
        for q, hits in zip(queries, want, strict=True):
            body = client.post("/search", json={"vector": q.tolist(), "k": 5}).json()
            assert [(h["id"], h["score"]) for h in body["hits"]] == [(h["id"], h["score"]) for h in hits]
        assert client.get("/stats").json()["count"] == N
        served = app.state.service.index
        assert served.compiled and served._graph is not None  # the searches went through the graph
    with Index.build(tmp_path / "single", vectors[:50], ids=list(range(50))):
        pass
    with pytest.raises(InvalidArgumentError, match="not a sharded index"):
        create_app(tmp_path / "single", compiled=True)
    # the CLI: a one-line message and exit 2 on an ordinary index
    assert main(["search", str(tmp_path / "single"), "a query", "--compiled"]) == 2
    assert "not a sharded index" in capsys.readouterr().err


def test_shards_grouped_in_fewer_actors(ray_session, sharded_dir, tmp_path):
    """4 shards in 2 actors (shards 0, 2 and 1, 3): one index's exact answer, plain and compiled;
    writes reach the right shard; a killed group actor is retried, or named by all its shards."""
    path, vectors = sharded_dir
    queries = unit_vectors(3, DIM, seed=31)
    with Index.build(tmp_path / "single", vectors, ids=list(range(N))) as single:
        want = single.search(queries, K, oversampling=N / K + 1)
    with pytest.raises(InvalidArgumentError, match="exceeds"):
        open_sharded(path, actors=5)
    with open_sharded(path, actors=2) as index:
        assert index.groups == [[0, 2], [1, 3]] and len(index.actors) == 2
        got = index.search(queries, K, exact=True)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.texts == [[f"doc {i}" for i in row] for row in want.ids]
        index.add(vectors[:2] * -1, [N, N + 1], texts=["new a", "new b"])
        assert len(index) == N + 2 and index.get(N + 1)["text"] == "new b" and N in index
        assert index.delete([N, N + 1]) == 2 and len(index) == N
        # kill the actor serving shards 1 and 3 inside a search: retried on the restarted actor
        group = index.actors[1]
        pid = ray.get(group.pid.remote())
        marker = tmp_path / "in-call"
        ray.get(group.map.remote("stall", {3: (30.0, str(marker))}, {}))
        result: dict[str, object] = {}
        thread = threading.Thread(target=lambda: result.update(r=index.search(queries, K, exact=True)))
        thread.start()
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        thread.join(60)
        np.testing.assert_array_equal(result["r"].ids, want.ids)  # type: ignore[attr-defined]
    with open_sharded(path, actors=2, policy=FaultPolicy(on_failure="raise")) as index:
        os.kill(ray.get(index.actors[0].pid.remote()), signal.SIGKILL)
        with pytest.raises(ShardUnavailableError) as err:
            index.search(queries, K)
        assert err.value.shards == (0, 2) and "shards 0, 2 " in str(err.value)
    with open_sharded(path, actors=2, compiled=True) as index:
        for q in range(len(queries)):
            got = index.search(queries[q], K, exact=True)
            np.testing.assert_array_equal(got.ids[0], want.ids[q])
        assert index._graph is not None  # through the graph, one reply per shard from each group
