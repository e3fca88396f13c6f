"""Crash safety of the service: SIGKILL the real server in the middle of adds, 20 times in a row.

Two clients post batches without pause; after a few acknowledged ones (HTTP 200) the server is
killed at a random moment, with adds in flight. Then the index must hold every acknowledged batch,
whole, and no batch in part; a restarted server must answer for all of them, search, and take new
adds on the same directory.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from quantsearch import Index
from server_helpers import ServerProcess

pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow

KILLS = 20
BATCH = 16
DIM = 40


def batch_ids(b: int) -> list[int]:
    return list(range(b * BATCH, (b + 1) * BATCH))


def batch_vectors(b: int) -> np.ndarray:
    x = np.random.default_rng([11, b]).standard_normal((BATCH, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def batch_body(b: int) -> dict[str, object]:
    docs = zip(batch_ids(b), batch_vectors(b).tolist(), strict=True)
    return {"documents": [{"id": i, "vector": v, "text": f"doc {i}", "metadata": {"b": b}} for i, v in docs]}


class Writers:
    """Clients that post batches until the server stops answering; they record what was acked."""

    def __init__(self, url: str, numbers: itertools.count[int], n_clients: int = 2) -> None:
        self.url = url
        self.numbers = numbers
        self.lock = threading.Lock()
        self.acked: set[int] = set()
        self.sent: set[int] = set()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n_clients)]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while True:
                with self.lock:
                    b = next(self.numbers)
                    self.sent.add(b)
                try:
                    r = client.post("/documents", json=batch_body(b))
                except httpx.TransportError:
                    return  # the server is gone: this batch is in flight, neither acked nor refused
                if r.status_code != 200 or r.json()["ids"] != batch_ids(b):
                    self.errors.append(f"batch {b}: {r.status_code} {r.text[:200]}")
                    return
                with self.lock:
                    self.acked.add(b)

    def join(self) -> None:
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)


def stored_batches(index: Index, batches: set[int]) -> set[int]:
    """Batches whose documents are all there; fails if one is there in part."""
    stored = set()
    for b in sorted(batches):
        there = [i in index for i in batch_ids(b)]
        assert all(there) or not any(there), f"batch {b} is partly stored: {sum(there)} of {BATCH}"
        if there[0]:
            stored.add(b)
    return stored


def check_served(server: ServerProcess, stored: set[int], sample: list[int]) -> None:
    """The restarted server counts, returns and finds the stored batches."""
    with server.client() as c:
        assert c.get("/stats").json()["count"] == BATCH * len(stored)
        for b in sample:
            i = batch_ids(b)[b % BATCH]
            assert c.get(f"/documents/{i}").json() == {"id": i, "text": f"doc {i}", "metadata": {"b": b}}
            hit = c.post("/search", json={"vector": batch_vectors(b)[b % BATCH].tolist(), "k": 1}).json()
            assert hit["hits"][0]["id"] == i


def test_sigkill_during_adds_keeps_every_acknowledged_document(tmp_path: Path) -> None:
    path, log = tmp_path / "idx", tmp_path / "server.log"
    with Index.create(
        path, DIM, calibration=np.concatenate([batch_vectors(10_000 + s) for s in range(8)])
    ) as index:
        for b in (0, 1):
            index.add(batch_vectors(b), ids=batch_ids(b), texts=[f"doc {i}" for i in batch_ids(b)],
                      metadata=[{"b": b}] * BATCH)  # fmt: skip
    numbers = itertools.count(2)
    acked, sent, stored = {0, 1}, {0, 1}, {0, 1}
    rng = np.random.default_rng(2024)
    in_flight_kept = in_flight_lost = 0
    for _ in range(KILLS):
        server = ServerProcess(path, log).start()
        check_served(
            server, stored, sorted(rng.choice(sorted(stored), size=min(4, len(stored)), replace=False))
        )

        writers = Writers(server.url, numbers)
        deadline = time.monotonic() + 30
        while len(writers.acked) < 2 and time.monotonic() < deadline and not writers.errors:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))  # a random moment, with adds in flight
        assert server.kill() == -9
        writers.join()
        assert not writers.errors, writers.errors
        assert len(writers.acked) >= 2, "the clients got no acknowledgement before the kill"

        acked |= writers.acked
        sent |= writers.sent
        with Index.open(path) as index:
            stored = stored_batches(index, sent)
            assert acked <= stored, f"acknowledged batches lost: {sorted(acked - stored)}"
            assert len(index) == BATCH * len(stored)  # nothing but whole batches
            in_flight = writers.sent - writers.acked
            in_flight_kept += len(in_flight & stored)
            in_flight_lost += len(in_flight - stored)
            new = sorted(writers.acked)
            x = np.concatenate([batch_vectors(b) for b in new])
            res = index.search(x, k=1, stages=())  # each document's own codes: distance 0
            assert res.ids[:, 0].tolist() == [i for b in new for i in batch_ids(b)]
            assert res.texts is not None and res.texts[0][0] == f"doc {batch_ids(new[0])[0]}"

    # a last restart: everything answers, and the next add leaves only committed files behind
    with ServerProcess(path, log) as server:
        check_served(server, stored, sorted(stored)[-5:])
        b = next(numbers)
        with server.client() as c:
            assert c.post("/documents", json=batch_body(b)).status_code == 200
        stored.add(b)
        check_served(server, stored, [b])
    with Index.open(path) as index:
        assert len(index) == BATCH * len(stored)
        segments = index.info()["segments"]
    assert not list(path.rglob("*.tmp")) and len(list((path / "segments").iterdir())) == 2 * segments
    print(f"{KILLS} kills: {len(acked)} batches acknowledged; in flight at a kill: "
          f"{in_flight_kept} committed, {in_flight_lost} not")  # fmt: skip
