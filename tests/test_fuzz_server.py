"""A bounded schemathesis run against the real server (``quantsearch serve`` in a subprocess).

Every operation of the OpenAPI schema gets generated requests (valid and invalid), with and without
the API key; no response may be a 5xx, and every error body has our shape. Afterwards every document
the server accepted can be read back and found by a search (no poison document got in).
The budget is bounded (``FUZZ_EXAMPLES`` per operation and key mode, well under a minute here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import requests
from hypothesis import HealthCheck, given, settings

from conftest import unit_vectors
from quantsearch import Index
from server_helpers import ServerProcess

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

DIM = 8
N = 30
KEY = "fuzz-key-0123456789"
FUZZ_EXAMPLES = int(os.environ.get("QUANTSEARCH_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz-server")
    Index.build(
        root / "idx", unit_vectors(N, DIM, seed=1), texts=[f"doc {i}" for i in range(N)], rescore=["int8"]
    ).close()
    with ServerProcess(root / "idx", root / "server.log", api_key=KEY) as server:
        yield server
    log = (root / "server.log").read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def _operations(server: ServerProcess) -> list[object]:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_no_5xx_under_schemathesis(served: ServerProcess, with_key: bool) -> None:
    headers = {"Authorization": f"Bearer {KEY}"} if with_key else {}
    statuses: dict[int, int] = {}
    operations = _operations(served)
    assert {op.path for op in operations} >= {"/search", "/documents", "/documents/{doc_id}", "/stats"}
    cases = 0
    session = requests.Session()  # one connection for the whole run
    for operation in operations:

        @settings(
            max_examples=FUZZ_EXAMPLES,
            suppress_health_check=list(HealthCheck),
            deadline=None,
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case: object) -> None:
            nonlocal cases
            response = case.call(  # type: ignore[attr-defined]
                base_url=served.url, headers=headers, session=session, timeout=30
            )
            cases += 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case, response.status_code, response.text[:500])
            content_type = response.headers.get("content-type") or [""]  # header -> list of values
            if response.status_code >= 400 and content_type[0].startswith("application/json"):
                body = response.json()
                assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}

        run()
    print(f"schemathesis: {cases} cases, statuses {sorted(statuses.items())}")
    assert cases >= len(operations)
    if not with_key:  # nothing but the health check and the page answers without the key
        assert set(statuses) <= {200, 400, 401, 404, 405, 413, 422}
    # every document accepted is readable and searchable (poison documents were refused)
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
        count = c.get("/stats").json()["count"]
        hits = c.post("/search", json={"vector": [0.5] * DIM, "k": count}).json()["hits"]
        assert len(hits) == count
        for hit in hits:
            assert c.get(f"/documents/{hit['id']}").status_code == 200
