"""Regression tests of issue 18 against the real server: poison documents, Host check, idle
connections under a small descriptor limit, stale and read-only indexes, OpenAPI and 405."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import nested_dict, unit_vectors
from quantsearch import Index
from server_helpers import HOST, ServerProcess

pytest.importorskip("fastapi")

DIM = 16
N = 60


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    vectors = unit_vectors(N, DIM, seed=2)
    Index.build(
        tmp_path / "idx", vectors, ids=list(range(N)), metadata=[{"i": i} for i in range(N)], batch_size=30
    ).close()
    return tmp_path / "idx"


@pytest.fixture
def server(index_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(index_dir, tmp_path / "server.log") as proc:
        yield proc


def test_poison_documents_are_refused_and_searches_stay_200(server: ServerProcess) -> None:
    vector = unit_vectors(1, DIM, seed=9)[0].tolist()
    with server.client() as c:
        for depth in (33, 256, 900):
            r = c.post("/documents", json={"documents": [{"vector": vector, "metadata": nested_dict(depth)}]})
            assert r.status_code in (400, 422), (depth, r.status_code)
            assert "nested" in r.text or "depth" in r.text.lower() or r.status_code == 422
        r = c.post("/documents", json={"documents": [{"vector": [3e38] * DIM}]})
        assert r.status_code == 400 and "overflow float32" in r.json()["error"]["message"]
        r = c.post("/search", json={"vector": [3e38] * DIM, "k": 3})
        assert r.status_code == 400 and "overflow float32" in r.json()["error"]["message"]
        r = c.post("/documents", json={"documents": [{"vector": vector, "metadata": nested_dict(32)}]})
        assert r.status_code == 200
        new_id = r.json()["ids"][0]
        assert c.get(f"/documents/{new_id}").json()["metadata"] == nested_dict(32)
        hits = c.post("/search", json={"vector": vector, "k": N}).json()["hits"]
        assert hits[0]["id"] == new_id and all(isinstance(h["score"], float) for h in hits)
        assert c.get("/stats").json()["count"] == N + 1


def test_auto_id_overflow_is_400_and_not_permanent(server: ServerProcess) -> None:
    vector = unit_vectors(1, DIM, seed=8)[0].tolist()
    with server.client() as c:
        assert (
            c.post("/documents", json={"documents": [{"id": 2**63 - 1, "vector": vector}]}).status_code == 200
        )
        r = c.post("/documents", json={"documents": [{"vector": vector}]})
        assert r.status_code == 400 and "no automatic ids are left" in r.json()["error"]["message"]
        assert c.post("/documents", json={"documents": [{"id": 5000, "vector": vector}]}).status_code == 200


def test_host_header_is_checked(server: ServerProcess) -> None:
    cases = [("evil.example", 400), ("evil.example:8000", 400), ("localhost", 200),
             (f"127.0.0.1:{server.port}", 200), ("[::1]:80", 200), ("LOCALHOST", 200)]  # fmt: skip
    for host, status in cases:
        r = httpx.get(f"{server.url}/healthz", headers={"Host": host}, timeout=10)
        assert r.status_code == status, host
        if status == 400:
            assert r.json()["error"]["type"] == "InvalidHost"


def test_allowed_hosts_option(index_dir: Path, tmp_path: Path) -> None:
    args = ["--allowed-hosts", "search.example"]
    with ServerProcess(index_dir, tmp_path / "log", extra_args=args) as proc:
        assert httpx.get(f"{proc.url}/healthz", headers={"Host": "search.example"}).status_code == 200
        assert httpx.get(f"{proc.url}/healthz").status_code == 400  # 127.0.0.1 was not listed


def test_openapi_documents_errors_and_405_lists_every_method(server: ServerProcess) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
        for path, method in [("/documents", "post"), ("/documents/{doc_id}", "delete")]:
            assert {"404", "409", "507"} <= set(spec["paths"][path][method]["responses"])
        r = c.put("/documents/3", json={})
        assert r.status_code == 405
        assert set(r.headers["allow"].split(", ")) >= {"GET", "DELETE"}


def _idle_sockets(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=10)
        out.append(s)
    return out


def test_idle_connections_cannot_stop_the_service(index_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with ServerProcess(index_dir, log, fd_limit=256, extra_args=["--idle-timeout", "30"]) as proc:
        sockets = _idle_sockets(proc.port, 300)  # more than the descriptor limit allows
        try:
            t0 = time.monotonic()
            r = httpx.get(f"{proc.url}/stats", timeout=10)
            assert r.status_code == 200 and r.json()["count"] == N
            assert time.monotonic() - t0 < 5  # served at once, not after the idle timeout
            # the oldest idle connections were closed to make room
            sockets[0].settimeout(5)
            assert sockets[0].recv(1) == b""
        finally:
            for s in sockets:
                s.close()
    assert log.stat().st_size < 100_000  # no flood of "Too many open files"


def test_idle_and_slow_connections_time_out(index_dir: Path, tmp_path: Path) -> None:
    with ServerProcess(index_dir, tmp_path / "log", extra_args=["--idle-timeout", "1"]) as proc:
        idle, slow = _idle_sockets(proc.port, 2)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # headers that never finish
        for s in (idle, slow):
            s.settimeout(10)
            t0 = time.monotonic()
            assert s.recv(1) == b"" and time.monotonic() - t0 < 5
            s.close()
        # a client that keeps its connection busy is not cut
        with httpx.Client(base_url=proc.url) as c:
            for _ in range(3):
                assert c.get("/healthz").status_code == 200
                time.sleep(0.5)


def test_stats_after_another_process_compacts(server: ServerProcess, index_dir: Path) -> None:
    with server.client() as c:
        assert c.get("/stats").json()["segments"] == 2
        with Index.open(index_dir) as writer:  # the server has not written: the lock is free
            writer.delete(list(range(10)))
            writer.compact()
        r = c.get("/stats")
        assert r.status_code == 200
        assert r.json()["count"] == N - 10 and r.json()["segments"] == 1
        r = c.post("/search", json={"vector": unit_vectors(N, DIM, seed=2)[20].tolist(), "k": 1})
        assert r.status_code == 200 and r.json()["hits"][0]["id"] == 20


def test_busy_port_is_one_line_exit_2(index_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from server_helpers import SRC

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "quantsearch", "serve", str(index_dir), "--port", str(port)],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
            timeout=120,
        )
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "address already in use" in res.stderr.lower()


def test_server_on_a_read_only_index(index_dir: Path, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from quantsearch.server import create_app

    monkeypatch.setattr("quantsearch.index.lifecycle.os.access", lambda p, mode: False)
    vectors = unit_vectors(N, DIM, seed=2)
    with TestClient(create_app(index_dir), base_url="http://localhost") as c:
        r = c.post("/search", json={"vector": vectors[7].tolist(), "k": 2})
        assert r.status_code == 200 and r.json()["hits"][0]["id"] == 7
        assert c.get("/stats").json()["count"] == N
        r = c.post("/documents", json={"documents": [{"vector": vectors[0].tolist()}]})
        assert r.status_code == 409 and r.json()["error"]["type"] == "ReadOnlyIndexError"
        assert c.delete("/documents/3").status_code == 409
        assert c.get("/documents/3").json()["metadata"] == {"i": 3}


def test_scores_are_finite_numbers_in_json(server: ServerProcess) -> None:
    rng = np.random.default_rng(4)
    with server.client() as c:
        for _ in range(5):
            q = (rng.standard_normal(DIM) * 1e17).tolist()
            r = c.post("/search", json={"vector": q, "k": 5})
            assert r.status_code == 200
            assert all(isinstance(h["score"], float) for h in r.json()["hits"])
