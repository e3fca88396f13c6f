"""Bounded load test: 32 concurrent clients against the real server on loopback for 60 s.

Each client sends 90% searches and 10% adds (batches of 10 new documents) on its own keep-alive
connection, as fast as the server answers. Zero errors are allowed: every response must be 200,
every hit must carry its own payload, every add must return its ids; afterwards every
acknowledged document is counted, readable and found by its own vector. p50/p99 latencies are
printed (and saved to artifacts/server_load.json); docs/benchmarks.md quotes them.

``QUANTSEARCH_LOAD_SECONDS`` / ``QUANTSEARCH_LOAD_CLIENTS`` shorten or shrink it while developing.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import unit_vectors
from quantsearch import Index
from server_helpers import HOST, ServerProcess, artifacts_dir

pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("QUANTSEARCH_LOAD_SECONDS", "60"))
CLIENTS = int(os.environ.get("QUANTSEARCH_LOAD_CLIENTS", "32"))
N_DOCS = 20_000
DIM = 384
ADD_BATCH = 10
SEARCH_SHARE = 0.9


@dataclass
class ClientLog:
    search_ms: list[float] = field(default_factory=list)
    add_ms: list[float] = field(default_factory=list)
    added: list[tuple[int, list[float]]] = field(default_factory=list)  # (id, vector) acknowledged
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("server-load")
    vectors = unit_vectors(N_DOCS, DIM, seed=3)
    Index.build(
        root / "idx", vectors, ids=list(range(N_DOCS)), texts=[f"doc {i}" for i in range(N_DOCS)]
    ).close()
    with ServerProcess(root / "idx", root / "server.log") as server:
        yield server


def _json_vector(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def client(port: int, number: int, deadline: float, log: ClientLog) -> None:
    """One client: its own connection, its own seeded stream of operations, until the deadline."""
    rng = np.random.default_rng([7, number])
    queries = [f'{{"vector":{_json_vector(q)},"k":10}}' for q in unit_vectors(64, DIM, seed=1000 + number)]
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    next_id = 1_000_000 + number * 100_000
    try:
        while time.monotonic() < deadline:
            if rng.random() < SEARCH_SHARE:
                body, kind = queries[int(rng.integers(len(queries)))], "search"
                path = "/search"
            else:
                ids = list(range(next_id, next_id + ADD_BATCH))
                next_id += ADD_BATCH
                vecs = rng.standard_normal((ADD_BATCH, DIM))
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                vecs = np.round(vecs, 6)
                docs = ",".join(
                    f'{{"id":{i},"vector":{_json_vector(v)},"text":"doc {i}"}}'
                    for i, v in zip(ids, vecs, strict=True)
                )
                body, kind, path = f'{{"documents":[{docs}]}}', "add", "/documents"
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                log.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
                continue
            ms = (time.perf_counter() - t0) * 1e3
            if response.status != 200:
                log.errors.append(f"{kind}: HTTP {response.status}: {payload[:200]!r}")
                continue
            data = json.loads(payload)
            if kind == "search":
                log.search_ms.append(ms)
                hits = data["hits"]
                if len(hits) != 10 or any(h["text"] != f"doc {h['id']}" for h in hits):
                    log.errors.append(f"search: inconsistent hits {hits[:3]}")
            else:
                log.add_ms.append(ms)
                if data["ids"] != ids:
                    log.errors.append(f"add: returned ids {data['ids'][:3]}..., sent {ids[:3]}...")
                else:
                    log.added += [(i, v.tolist()) for i, v in zip(ids, vecs, strict=True)]
    finally:
        conn.close()


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


def test_32_clients_for_60_s_with_zero_errors(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = [ClientLog() for _ in range(CLIENTS)]
    t_start = time.monotonic()
    deadline = t_start + SECONDS
    threads = [
        threading.Thread(target=client, args=(server.port, n, deadline, logs[n]), daemon=True)
        for n in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 120)
    elapsed = time.monotonic() - t_start
    assert not any(t.is_alive() for t in threads), "a client hung"

    errors = [e for log in logs for e in log.errors]
    search_ms = [x for log in logs for x in log.search_ms]
    add_ms = [x for log in logs for x in log.add_ms]
    added = [doc for log in logs for doc in log.added]
    report = {
        "clients": CLIENTS,
        "seconds": round(elapsed, 1),
        "index": f"{N_DOCS} docs x {DIM}-d, binary -> int8",
        "errors": len(errors),
        "requests_per_s": round((len(search_ms) + len(add_ms)) / elapsed, 1),
        "search_ms": percentiles(search_ms),
        "add_ms": percentiles(add_ms),
        "all_ms": percentiles(search_ms + add_ms),
        "documents_added": len(added),
    }
    (artifacts_dir() / "server_load.json").write_text(json.dumps(report, indent=2))
    with capsys.disabled():
        print(
            f"\nload test: {CLIENTS} clients, {elapsed:.1f} s, {report['requests_per_s']} req/s, "
            f"{len(errors)} errors\n"
            + "\n".join(
                f"  {kind:<7} n={p['n']:>6}  p50 {p['p50']:8.2f} ms  p99 {p['p99']:8.2f} ms"
                for kind, p in (
                    ("search", report["search_ms"]),
                    ("add", report["add_ms"]),
                    ("all", report["all_ms"]),
                )
            )
        )
    assert not errors, errors[:10]
    # every client got work done, both kinds of operation ran
    assert all(len(log.search_ms) >= 5 for log in logs) and len(add_ms) >= CLIENTS

    # every acknowledged document is there: counted, readable, and found by its own vector
    with server.client() as c:
        assert c.get("/stats").json()["count"] == N_DOCS + len(added)
        rng = np.random.default_rng(0)
        for j in rng.choice(len(added), size=min(100, len(added)), replace=False):
            doc_id, vector = added[j]
            assert c.get(f"/documents/{doc_id}").json()["text"] == f"doc {doc_id}"
            assert c.post("/search", json={"vector": vector, "k": 1}).json()["hits"][0]["id"] == doc_id
    with Index.open(Path(server.index_dir)) as index:
        assert len(index) == N_DOCS + len(added)
