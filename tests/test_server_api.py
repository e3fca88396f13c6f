"""The HTTP API against the real server (``quantsearch serve`` on a loopback port).

Results are checked against brute force over the vectors the index was built from, and against
the library searching the same directory in-process; every bad request gets its status and a
message naming the problem, and leaves the index exactly as it was.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import unit_vectors
from quantsearch import Index
from server_helpers import ServerProcess

pytest.importorskip("fastapi")

DIM = 64
N = 400
KEY = "test-key-0123456789"


@dataclass
class Served:
    server: ServerProcess
    path: Path
    vectors: np.ndarray  # (N, DIM) float32, row i is document i

    def client(self) -> httpx.Client:
        return self.server.client()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An int-id index with int8 and float32 rescoring tiers, served with an API key."""
    root = tmp_path_factory.mktemp("server-api")
    vectors = unit_vectors(N, DIM, seed=1)
    Index.build(
        root / "idx",
        vectors,
        ids=list(range(N)),
        texts=[f"doc {i}" for i in range(N)],
        metadata=[{"i": i} for i in range(N)],
        rescore=["int8", "float32"],
        batch_size=150,
    ).close()
    with ServerProcess(root / "idx", root / "server.log", api_key=KEY) as server:
        yield Served(server, root / "idx", vectors)


@pytest.fixture(scope="module")
def open_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A str-id index with only an int8 tier and no model, served without a key."""
    root = tmp_path_factory.mktemp("server-open")
    vectors = unit_vectors(50, DIM, seed=2)
    ids = [f"dir/doc-{i}.txt" for i in range(50)]
    Index.build(root / "idx", vectors, ids=ids, texts=[f"text {i}" for i in range(50)]).close()
    with ServerProcess(root / "idx", root / "server.log") as server:
        yield Served(server, root / "idx", vectors)


def probe(served: Served) -> list[list[float]]:
    return unit_vectors(3, DIM, seed=99).tolist()


def snapshot(served: Served) -> dict[str, Any]:
    """What must not change after a refused request: counts, segment files, and search results."""
    with served.client() as c:
        stats = c.get("/stats").json()
        results = [c.post("/search", json={"vector": v, "k": 10}).json()["hits"] for v in probe(served)]
    files = sorted((p.name, p.stat().st_size) for p in (served.path / "segments").iterdir())
    manifest = (served.path / "manifest.json").read_bytes()
    keep = ("count", "rows", "deleted", "segments", "disk_bytes")
    return {"stats": {k: stats[k] for k in keep}, "results": results, "files": files, "manifest": manifest}


# ---- searches ---------------------------------------------------------------------------------------------
def test_vector_search_matches_the_library_and_brute_force(served: Served) -> None:
    queries = unit_vectors(20, DIM, seed=5)
    with served.client() as c, Index.open(served.path) as index:
        for q in queries:
            body = c.post("/search", json={"vector": q.tolist(), "k": 10}).json()
            want = index.search(q, k=10)
            assert [h["id"] for h in body["hits"]] == want.ids[0].tolist()
            np.testing.assert_allclose([h["score"] for h in body["hits"]], want.scores[0], rtol=1e-6)
            assert [h["text"] for h in body["hits"]] == [f"doc {i}" for i in want.ids[0]]
            assert [h["metadata"] for h in body["hits"]] == [{"i": int(i)} for i in want.ids[0]]
            assert body["k"] == 10 and body["candidates"]["hamming"] == N
            assert set(body["timings_ms"]) >= {
                "hamming",
                "rescore:int8",
                "rescore:float32",
                "payload",
                "total",
            }
            assert all(ms >= 0 for ms in body["timings_ms"].values())
        # the last stage is float32 (the stored vectors): each document's own vector finds it first
        for i in (0, 17, 399):
            hit = c.post("/search", json={"vector": served.vectors[i].tolist(), "k": 1}).json()["hits"][0]
            assert hit["id"] == i and hit["score"] == pytest.approx(1.0, abs=1e-5)


def test_hamming_only_scores_are_brute_force_distances(served: Served) -> None:
    q = unit_vectors(1, DIM, seed=6)[0]
    with served.client() as c:
        body = c.post("/search", json={"vector": q.tolist(), "k": 15, "stages": []}).json()
    distances = ((served.vectors > 0) != (q > 0)).sum(axis=1)  # sign bits differing
    order = np.lexsort((np.arange(N), distances))[:15]  # ties by smaller row = smaller id here
    assert [h["id"] for h in body["hits"]] == order.tolist()
    assert [h["score"] for h in body["hits"]] == (-distances[order]).tolist()
    assert "rescore:int8" not in body["timings_ms"]


def test_compare_returns_exact_float32_results_and_overlap(served: Served) -> None:
    for seed in range(5):
        q = unit_vectors(1, DIM, seed=100 + seed)[0]
        with served.client() as c:
            body = c.post("/search", json={"vector": q.tolist(), "k": 10, "oversampling": 1, "compare": True})
        body = body.json()
        exact = body["exact"]
        scores = served.vectors @ q
        want = np.argsort(-scores, kind="stable")[:10]
        assert exact["tier"] == "float32" and exact["overlap_k"] == 10
        assert [h["id"] for h in exact["hits"]] == want.tolist()
        np.testing.assert_allclose([h["score"] for h in exact["hits"]], scores[want], rtol=1e-5)
        found = {h["id"] for h in body["hits"]}
        assert exact["overlap"] == len(found & set(want.tolist())) / 10


def test_k_is_capped_at_the_number_of_documents(open_served: Served) -> None:
    with open_served.client() as c:
        body = c.post("/search", json={"vector": open_served.vectors[3].tolist(), "k": 500}).json()
    assert body["k"] == 50 and len(body["hits"]) == 50 and body["hits"][0]["id"] == "dir/doc-3.txt"


# ---- documents ---------------------------------------------------------------------------------------------
def test_add_get_search_delete_roundtrip(served: Served) -> None:
    new = unit_vectors(3, DIM, seed=7)
    docs = [
        {"id": 5000 + j, "vector": new[j].tolist(), "text": f"new {j}", "metadata": {"tag": "x", "j": j}}
        for j in range(3)
    ]
    with served.client() as c:
        before = c.get("/stats").json()["count"]
        added = c.post("/documents", json={"documents": docs})
        assert added.status_code == 200, added.text
        assert added.json() == {"ids": [5000, 5001, 5002], "count": before + 3}
        assert c.get("/documents/5001").json() == {
            "id": 5001,
            "text": "new 1",
            "metadata": {"tag": "x", "j": 1},
        }
        hit = c.post("/search", json={"vector": new[2].tolist(), "k": 1}).json()["hits"][0]
        assert hit["id"] == 5002 and hit["text"] == "new 2"

        gone = c.delete("/documents/5002")
        assert gone.status_code == 200 and gone.json() == {"deleted": 5002, "count": before + 2}
        assert c.get("/documents/5002").status_code == 404
        hits = c.post("/search", json={"vector": new[2].tolist(), "k": 5}).json()["hits"]
        assert 5002 not in [h["id"] for h in hits]
        for j in (0, 1):
            assert c.delete(f"/documents/{5000 + j}").status_code == 200
        assert c.get("/stats").json()["count"] == before
    with Index.open(served.path) as index:  # what the server acknowledged is on disk
        assert 5000 not in index and 5002 not in index and len(index) == before


def test_add_without_ids_assigns_new_int_ids(served: Served) -> None:
    with served.client() as c:
        body = c.post("/documents", json={"documents": [{"vector": unit_vectors(1, DIM, 8)[0].tolist()}] * 2})
        ids = body.json()["ids"]
        assert body.status_code == 200 and ids[1] == ids[0] + 1 and ids[0] > 5002
        assert c.get(f"/documents/{ids[0]}").json() == {"id": ids[0], "text": None, "metadata": None}
        for i in ids:
            c.delete(f"/documents/{i}")


def test_str_ids_with_slashes_are_ids_not_paths(open_served: Served) -> None:
    with open_served.client() as c:
        assert c.get("/documents/dir/doc-7.txt").json()["text"] == "text 7"
        # never a file: the catalog has no such id, whatever the path looks like
        for raw in ("..%2Fmanifest.json", "../../manifest.json", "%2Fetc%2Fpasswd", "manifest.json"):
            r = c.get(f"/documents/{raw}")
            assert r.status_code == 404 and r.json()["error"]["type"] in ("UnknownIdError", "NotFound"), raw
        added = c.post("/documents", json={"documents": [{"id": "a/b", "vector": [0.5] * DIM, "text": "t"}]})
        assert added.status_code == 200 and c.get("/documents/a/b").json()["text"] == "t"
        assert c.delete("/documents/a/b").status_code == 200


def test_stats_reports_memory_per_tier(served: Served) -> None:
    with served.client() as c:
        stats = c.get("/stats").json()
    binary, int8, f32 = stats["tiers"]
    rows = stats["rows"]
    assert (binary["name"], binary["storage"], binary["bytes_per_vector"]) == ("binary", "ram", DIM // 8)
    assert binary["ram_bytes"] == rows * DIM // 8
    assert (int8["storage"], int8["ram_bytes"], int8["bytes_per_vector"]) == ("disk", 0, DIM)
    assert int8["disk_bytes"] >= rows * DIM and f32["disk_bytes"] >= rows * DIM * 4
    assert stats["float32_bytes"] == rows * DIM * 4
    assert stats["ram_bytes"] == binary["ram_bytes"] + rows  # + the deleted-row mask
    assert stats["disk_bytes"] == sum(t["disk_bytes"] for t in stats["tiers"]) + stats["catalog_bytes"]
    assert stats["exact_tier"] == "float32" and stats["text_queries"] is False
    assert int8["quantizer"]["params"]["precision"] == "int8"
    assert stats["limits"]["max_k"] == 1000
    assert str(served.path) not in json.dumps(stats)  # the server's filesystem layout is not exposed


# ---- security, docs, page ---------------------------------------------------------------------------------
def test_api_key_in_either_header_and_healthz_open(served: Served) -> None:
    url = served.server.url
    q = {"vector": served.vectors[0].tolist(), "k": 1}
    assert httpx.post(f"{url}/search", json=q, headers={"X-API-Key": KEY}).status_code == 200
    assert httpx.post(f"{url}/search", json=q, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "auth": True}
    assert httpx.get(f"{url}/").status_code == 200  # the page holds no data; its API calls need the key


def test_page_and_docs_load_nothing_from_elsewhere(served: Served) -> None:
    with httpx.Client(base_url=served.server.url) as c:
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert 'src="/static/app.js"' in page.text and "http" not in page.text.replace("http-equiv", "")
        for name, kind in (("app.js", "javascript"), ("style.css", "css")):
            r = c.get(f"/static/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"] and "http" not in r.text
        docs = c.get("/docs")
        assert docs.status_code == 200 and "//" not in docs.text.replace("<!DOCTYPE", "")
        assert c.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
        spec = c.get("/openapi.json").json()
        assert {"/search", "/documents", "/documents/{doc_id}", "/stats", "/healthz"} <= set(spec["paths"])
        for traversal in (
            "/static/../pyproject.toml",
            "/static/%2e%2e/manifest.json",
            "/static/index.html/..",
        ):
            r = c.get(traversal)
            assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound", traversal


def test_serve_binds_loopback_by_default() -> None:
    from quantsearch.cli import make_parser

    args = make_parser().parse_args(["serve", "some-index"])
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 8000, None)


# ---- bad requests ------------------------------------------------------------------------------------------
def _raw(body: str) -> dict[str, Any]:
    return {"content": body.encode(), "headers": {"Content-Type": "application/json"}}


def _vec(n: int, value: float = 0.1) -> list[float]:
    return [value] * n


# fmt: off
BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str, str]] = [
    # (name, method, path, httpx kwargs, status, error type, message part)
    ("malformed JSON", "POST", "/search", _raw('{"k": 3, "vector": [0.1,'), 400, "MalformedJSON", "not valid JSON"),  # noqa: E501
    ("malformed JSON add", "POST", "/documents", _raw('{"documents": [}'), 400, "MalformedJSON", "not valid JSON"),  # noqa: E501
    ("not UTF-8", "POST", "/search", {"content": b'{"query": "\xff\xfe"}', "headers": {"Content-Type": "application/json"}}, 400, "BadRequest", "error parsing the body"),  # noqa: E501
    ("body is a list", "POST", "/search", {"json": [1, 2]}, 422, "ValidationError", "valid dictionary"),
    ("wrong dim search", "POST", "/search", {"json": {"vector": _vec(63)}}, 400, "DimensionMismatchError", "63 dimensions, expected 64"),  # noqa: E501
    ("wrong dim add", "POST", "/documents", {"json": {"documents": [{"id": 9001, "vector": _vec(65)}]}}, 400, "DimensionMismatchError", "documents[0].vector has 65 dimensions"),  # noqa: E501
    ("NaN search", "POST", "/search", _raw('{"vector": [NaN' + ", 0.1" * 63 + "]}"), 400, "NonFiniteError", "NaN"),  # noqa: E501
    ("NaN add", "POST", "/documents", _raw('{"documents": [{"id": 9002, "vector": [0.1' + ", NaN" * 63 + "]}]}"), 400, "NonFiniteError", "NaN"),  # noqa: E501
    ("inf add", "POST", "/documents", _raw('{"documents": [{"id": 9003, "vector": [Infinity' + ", 0.1" * 63 + "]}]}"), 400, "NonFiniteError", "inf"),  # noqa: E501
    ("overflow to inf", "POST", "/search", {"json": {"vector": [1e300] + _vec(63)}}, 400, "NonFiniteError", "inf"),  # noqa: E501
    ("NaN metadata", "POST", "/documents", _raw('{"documents": [{"id": 9004, "vector": [0.1' + ", 0.1" * 63 + '], "metadata": {"x": NaN}}]}'), 400, "InvalidArgumentError", "metadata[0]"),  # noqa: E501
    ("k=0", "POST", "/search", {"json": {"vector": _vec(64), "k": 0}}, 422, "ValidationError", "k: Input should be greater than or equal to 1 (got 0)"),  # noqa: E501
    ("k=10^9", "POST", "/search", {"json": {"vector": _vec(64), "k": 10**9}}, 422, "LimitError", "k must be <= 1000 (this server's limit), got 1000000000"),  # noqa: E501
    ("k not an int", "POST", "/search", {"json": {"vector": _vec(64), "k": "ten"}}, 422, "ValidationError", "k: "),  # noqa: E501
    ("oversampling < 1", "POST", "/search", {"json": {"vector": _vec(64), "oversampling": 0.5}}, 422, "ValidationError", "oversampling"),  # noqa: E501
    ("oversampling over limit", "POST", "/search", {"json": {"vector": _vec(64), "oversampling": 1e6}}, 422, "LimitError", "oversampling must be <= 100"),  # noqa: E501
    ("query and vector", "POST", "/search", {"json": {"vector": _vec(64), "query": "x"}}, 422, "ValidationError", "exactly one of 'query'"),  # noqa: E501
    ("no query", "POST", "/search", {"json": {"k": 3}}, 422, "ValidationError", "exactly one of 'query'"),
    ("unknown field", "POST", "/search", {"json": {"vector": _vec(64), "kk": 3}}, 422, "ValidationError", "kk: Extra inputs"),  # noqa: E501
    ("vector of strings", "POST", "/search", {"json": {"vector": ["a"] * 64}}, 422, "ValidationError", "vector.0"),  # noqa: E501
    ("unknown stage", "POST", "/search", {"json": {"vector": _vec(64), "stages": ["int4"]}}, 400, "InvalidArgumentError", "unknown stage 'int4'"),  # noqa: E501
    ("text without model", "POST", "/search", {"json": {"query": "hello"}}, 400, "InvalidArgumentError", "no embedding model"),  # noqa: E501
    ("text doc without model", "POST", "/documents", {"json": {"documents": [{"id": 9005, "text": "hi"}]}}, 400, "InvalidArgumentError", "no embedding model"),  # noqa: E501
    ("no vector no text", "POST", "/documents", {"json": {"documents": [{"id": 9006}]}}, 400, "InvalidArgumentError", "neither a vector nor a text"),  # noqa: E501
    ("empty batch", "POST", "/documents", {"json": {"documents": []}}, 422, "ValidationError", "documents: "),
    ("duplicate id", "POST", "/documents", {"json": {"documents": [{"id": 5, "vector": _vec(64)}]}}, 409, "DuplicateIdError", "id 5 is already in the index"),  # noqa: E501
    ("duplicate in batch", "POST", "/documents", {"json": {"documents": [{"id": 9007, "vector": _vec(64)}] * 2}}, 409, "DuplicateIdError", "more than once"),  # noqa: E501
    ("some ids missing", "POST", "/documents", {"json": {"documents": [{"id": 9008, "vector": _vec(64)}, {"vector": _vec(64)}]}}, 400, "InvalidArgumentError", "documents[1].id is missing"),  # noqa: E501
    ("str id in int index", "POST", "/documents", {"json": {"documents": [{"id": "x", "vector": _vec(64)}]}}, 400, "InvalidArgumentError", "must be an int"),  # noqa: E501
    ("bool id", "POST", "/documents", {"json": {"documents": [{"id": True, "vector": _vec(64)}]}}, 422, "ValidationError", "id"),  # noqa: E501
    ("batch too large", "POST", "/documents", {"json": {"documents": [{"vector": [0.5] * 64}] * 1001}}, 413, "PayloadTooLargeError", "at most 1000 documents"),  # noqa: E501
    ("huge body", "POST", "/documents", {"content": b" " * (17 << 20), "headers": {"Content-Type": "application/json"}}, 413, "PayloadTooLargeError", "over this server's limit of 16,777,216 bytes"),  # noqa: E501
    ("huge chunked body", "POST", "/search", {"content": (b" " * (1 << 20) for _ in range(20)), "headers": {"Content-Type": "application/json"}}, 413, "PayloadTooLargeError", "over this server's limit"),  # noqa: E501
    ("unknown id get", "GET", "/documents/123456", {}, 404, "UnknownIdError", "id 123456 is not in the index"),  # noqa: E501
    ("unknown id delete", "DELETE", "/documents/123456", {}, 404, "UnknownIdError", "id 123456 is not in the index"),  # noqa: E501
    ("non-int id", "DELETE", "/documents/12abc", {}, 400, "InvalidArgumentError", "id must be an integer"),
    ("unknown route", "GET", "/nothing-here", {}, 404, "NotFound", "Not Found"),
    ("wrong method", "PUT", "/search", {"json": {}}, 405, "MethodNotAllowed", "Method Not Allowed"),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "kind", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_is_refused_and_changes_nothing(
    served: Served, method: str, path: str, kwargs: dict[str, Any], status: int, kind: str, message: str
) -> None:
    before = snapshot(served)
    with served.client() as c:
        r = c.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"type", "message"} and error["message"]
    assert kind in error["type"] and message in error["message"], error
    assert snapshot(served) == before


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "missing API key"), ({"Authorization": "Bearer wrong"}, "invalid API key"),
     ({"X-API-Key": KEY[:-1]}, "invalid API key"), ({"Authorization": f"Basic {KEY}"}, "missing API key")],
    ids=["missing", "wrong bearer", "wrong header", "not bearer"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/search", {"vector": [0.1] * DIM}),
     ("POST", "/documents", {"documents": [{"id": 9100, "vector": [0.1] * DIM}]}),
     ("DELETE", "/documents/5", None), ("GET", "/documents/5", None), ("GET", "/stats", None)],
    ids=["search", "add", "delete", "get", "stats"],
)  # fmt: skip
def test_without_the_right_key_nothing_happens(
    served: Served, headers: dict[str, str], message: str, method: str, path: str, body: Any
) -> None:
    before = snapshot(served)
    r = httpx.request(method, f"{served.server.url}{path}", json=body, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == {"type": "AuthError", "message": r.json()["error"]["message"]}
    assert message in r.json()["error"]["message"]
    assert snapshot(served) == before


def test_open_server_refusals(open_served: Served) -> None:
    with open_served.client() as c:
        r = c.post("/search", json={"vector": _vec(DIM), "compare": True})
        assert r.status_code == 400 and "compare needs a float tier" in r.json()["error"]["message"]
        r = c.post("/documents", json={"documents": [{"vector": _vec(DIM)}]})
        assert r.status_code == 400 and "ids are required" in r.json()["error"]["message"]
        assert c.get("/healthz").json()["auth"] is False
        assert c.get("/stats").json()["exact_tier"] is None


# ---- concurrency -------------------------------------------------------------------------------------------
def test_a_search_never_sees_half_a_batch(served: Served) -> None:
    """Batches of 8 copies of one vector are added while other clients search for those vectors:
    at Hamming distance 0 a search finds either none or all 8 of a batch, never a part."""
    n_batches, size = 12, 8
    marks = unit_vectors(n_batches, DIM, seed=31)
    stop = threading.Event()
    partial: list[tuple[int, int]] = []
    errors: list[str] = []

    def writer(c: httpx.Client) -> None:
        for b in range(n_batches):
            docs = [{"id": 20_000 + b * size + j, "vector": marks[b].tolist()} for j in range(size)]
            r = c.post("/documents", json={"documents": docs})
            if r.status_code != 200:
                errors.append(r.text)
        stop.set()

    def reader(c: httpx.Client, seed: int) -> int:
        rng = np.random.default_rng(seed)
        done = 0
        while not stop.is_set() or done < 5:
            b = int(rng.integers(n_batches))
            r = c.post("/search", json={"vector": marks[b].tolist(), "k": 16, "stages": []})
            if r.status_code != 200:
                errors.append(r.text)
                continue
            at_zero = [h["id"] for h in r.json()["hits"] if h["score"] == 0]
            ours = [i for i in at_zero if 20_000 + b * size <= i < 20_000 + (b + 1) * size]
            if len(ours) not in (0, size):
                partial.append((b, len(ours)))
            done += 1
        return done

    with ThreadPoolExecutor(5) as pool, served.client() as c:
        searches = [pool.submit(reader, c, s) for s in range(4)]
        pool.submit(writer, c).result()
        assert sum(f.result() for f in searches) >= 20
    assert not errors and not partial, (errors[:3], partial[:5])
    with served.client() as c:
        for i in range(20_000, 20_000 + n_batches * size):
            assert c.delete(f"/documents/{i}").status_code == 200


def test_searches_run_in_parallel(tmp_path: Path, make_index: Callable[..., Any]) -> None:
    """Four searches must be inside Index.search at the same time (a barrier of 4), which only
    happens if the server runs them in parallel threads."""
    import uvicorn

    from quantsearch.server import create_app
    from server_helpers import free_port

    index, vectors = make_index(n=100, dim=DIM)
    index.close()
    app = create_app(index.path)
    service = app.state.service
    barrier = threading.Barrier(4, timeout=20)
    original = service.index.search

    def search(*args: Any, **kwargs: Any) -> Any:
        barrier.wait()
        return original(*args, **kwargs)

    service.index.search = search
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.02)
        with ThreadPoolExecutor(4) as pool:
            url = f"http://127.0.0.1:{port}/search"
            replies = list(
                pool.map(
                    lambda i: httpx.post(url, json={"vector": vectors[i].tolist(), "k": 1}, timeout=30),
                    range(4),
                )
            )
        assert [r.status_code for r in replies] == [200] * 4
        assert [r.json()["hits"][0]["id"] for r in replies] == [0, 1, 2, 3]
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# ---- in-process: the app factory -------------------------------------------------------------------------
def test_a_model_that_cannot_load_leaves_vector_search_working(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from quantsearch.server import create_app

    vectors = unit_vectors(20, DIM, seed=4)
    Index.build(tmp_path / "idx", vectors, model=str(tmp_path / "no-such-model")).close()
    app = create_app(tmp_path / "idx", preload_model=True)
    with TestClient(app, base_url="http://localhost") as c:  # starts despite the model
        assert c.get("/stats").json()["text_queries"] is True
        r = c.post("/search", json={"query": "hello"})
        assert r.status_code in (400, 501) and "model" in r.json()["error"]["message"]
        assert c.post("/search", json={"vector": vectors[3].tolist(), "k": 1}).json()["hits"][0]["id"] == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_k": 0}, "max_k must be >= 1"), ({"api_key": ""}, "api_key must be a non-empty"),
     ({"search_threads": 0}, "search_threads"), ({"max_oversampling": 0.5}, "max_oversampling")],
)  # fmt: skip
def test_create_app_checks_its_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    from quantsearch import IndexNotFoundError, InvalidArgumentError
    from quantsearch.server import create_app

    Index.build(tmp_path / "idx", unit_vectors(5, DIM)).close()
    with pytest.raises(InvalidArgumentError, match=message):
        create_app(tmp_path / "idx", **kwargs)
    with pytest.raises(IndexNotFoundError):
        create_app(tmp_path / "missing")


def test_serve_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from quantsearch.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("quantsearch: error:") and "missing" in err and "\n" not in err
    Index.build(tmp_path / "idx", unit_vectors(5, DIM)).close()
    assert main(["serve", str(tmp_path / "idx"), "--port", "70000"]) == 2
    assert "port must be <= 65535, got 70000" in capsys.readouterr().err


def test_filtered_search_matches_the_library_and_brute_force(served: Served) -> None:
    before = snapshot(served)
    queries = unit_vectors(5, DIM, seed=7)
    spec = {"i": {"gte": 100, "lt": 150}}
    allowed = np.arange(100, 150)
    with served.client() as c, Index.open(served.path) as index:
        for q in queries:
            body = c.post("/search", json={"vector": q.tolist(), "k": 5, "filter": spec}).json()
            want = index.search(q, k=5, filter=spec)
            assert [h["id"] for h in body["hits"]] == want.ids[0].tolist()
            assert all(100 <= h["metadata"]["i"] < 150 for h in body["hits"])
            # the last stage is float32: the exact top 5 of the allowed documents
            exact = allowed[np.argsort(-(served.vectors[allowed] @ q))[:5]]
            assert [h["id"] for h in body["hits"]] == exact.tolist()
        one = queries[0].tolist()
        body = c.post("/search", json={"vector": one, "k": 5, "filter": spec, "compare": True})
        assert body.status_code == 200 and body.json()["exact"]["overlap"] == 1.0
        few = c.post("/search", json={"vector": queries[0].tolist(), "k": 5, "filter": {"i": 7}}).json()
        assert [h["id"] for h in few["hits"]] == [7]  # fewer matches than k: no padding shown
        for bad, message in (({"i": {"gte": "x"}}, "finite number"), ({"i j": 1}, "field"), ([1], "dict")):
            r = c.post("/search", json={"vector": queries[0].tolist(), "filter": bad})
            assert r.status_code in (400, 422) and message in json.dumps(r.json())
        r = c.post("/search", json={"vector": queries[0].tolist(), "nprobe": 4})
        assert r.status_code == 400 and "nprobe" in r.json()["error"]["message"]
        r = c.post("/search", json={"vector": queries[0].tolist(), "ef": 4})
        assert r.status_code == 400 and "ef" in r.json()["error"]["message"]
        for bad in ({"ef": 0}, {"target_recall": 0}, {"target_recall": 1.5}):
            assert c.post("/search", json={"vector": queries[0].tolist(), **bad}).status_code == 422
        r = c.post("/search", json={"vector": queries[0].tolist(), "k": 5, "target_recall": 0.95})
        want = index.search(queries[0], k=5)
        assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == want.ids[0].tolist()
    assert snapshot(served) == before
