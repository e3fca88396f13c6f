"""The web page in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

The index holds the first 300 scifact documents (their shared all-MiniLM-L6-v2 embeddings, so that
nothing is embedded at set-up) and records the default model, so the page's text query is embedded
by the server with the real bundled model. A screenshot is saved to ``artifacts/server_page.png``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.embed import DEFAULT_MODEL
from server_helpers import ServerProcess, artifacts_dir

pytest.importorskip("fastapi")
pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.embed

SHARED = Path(__file__).resolve().parents[2] / "shared"
CHROMIUM = Path("/usr/bin/chromium")
N_DOCS = 300
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

if not CHROMIUM.exists():
    if os.environ.get("CI"):  # CI installs it (.ci/run): a missing browser there is a failure
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run should have installed Debian's chromium")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("server-browser")
    corpus = SHARED / "datasets" / "scifact" / "corpus.jsonl"
    with corpus.open() as f:
        docs = [json.loads(next(f)) for _ in range(N_DOCS)]
    ids = json.loads((SHARED / "embeddings" / "scifact" / "corpus_ids.json").read_text())[:N_DOCS]
    assert ids == [d["_id"] for d in docs]  # the embeddings' rows are the corpus order
    vectors = np.load(SHARED / "embeddings" / "scifact" / "corpus.f16.npy", mmap_mode="r")[:N_DOCS]
    texts = [f"{d['title']} {d['text']}".strip() for d in docs]
    Index.build(
        root / "idx",
        np.asarray(vectors, np.float32),
        ids=ids,
        texts=texts,
        rescore=["int8", "float32"],
        model=DEFAULT_MODEL,
    ).close()
    with ServerProcess(root / "idx", root / "server.log", timeout=180) as server:  # loads the model first
        yield server


def test_page_searches_and_shows_results_timings_and_memory(server: ServerProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(server.url + "/")

            expect(page.locator("#index-summary")).to_contain_text(f"{N_DOCS} documents", timeout=20_000)
            memory = page.locator("#memory tbody")
            for tier in ("binary", "int8", "float32", "catalog", "total"):
                expect(memory).to_contain_text(tier)
            expect(page.locator("#memory-bars")).to_contain_text("float32 vectors in RAM would take")

            page.fill("#query", "white matter development in the newborn brain measured by diffusion MRI")
            page.select_option("#stages", label="binary → int8")  # compare int8 rescoring with exact
            page.check("#compare")
            page.click("#search-button")

            hits = page.locator("#results li")
            expect(hits).to_have_count(10, timeout=60_000)
            first = hits.first
            expect(first.locator(".hit-id")).to_have_text("4983")  # "Microstructural development of ..."
            expect(first.locator(".hit-score")).to_have_text(re.compile(r"score 0\.\d{4}"))
            expect(first.locator(".hit-text")).to_contain_text("cerebral white matter")

            timings = page.locator("#timings")
            for stage in ("embed", "hamming", "rescore:int8", "payload", "total", "exact float32 scan"):
                cell = timings.locator(f'tr[data-stage="{stage}"] td.num')
                expect(cell).to_have_text(re.compile(r"^\d+\.\d\d ms$"))
            expect(timings.locator('tr[data-stage="rescore:float32"]')).to_have_count(0)
            expect(page.locator("#main-title")).to_have_text("binary → int8")
            expect(timings).to_contain_text("Hamming scan")
            expect(timings).to_contain_text("embedding (query)")

            expect(page.locator("#exact-column")).to_be_visible()
            expect(page.locator("#exact-results li")).to_have_count(10)
            expect(page.locator("#overlap")).to_have_text(re.compile(r"^overlap@10: \d+/10 \(\d+%\)"))
            expect(page.locator("#status")).to_contain_text("10 results")

            shot = artifacts_dir() / "server_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert not problems, problems
    # the page loaded nothing from anywhere but this server
    assert requests and all(url.startswith(server.url + "/") for url in requests), requests


# ---- a multi-vector (MUVERA) index: the same page, its FDE -> Chamfer stages and exact Chamfer ----------
MV_DOCS = 40


@pytest.fixture(scope="module")
def mv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from quantsearch.multivector import MultiVectorIndex

    root = tmp_path_factory.mktemp("server-browser-mv")
    with (SHARED / "datasets" / "cisi" / "corpus.jsonl").open() as f:
        docs = [json.loads(next(f)) for _ in range(MV_DOCS)]
    idx = MultiVectorIndex.create(root / "mv")
    idx.add([d["_id"] for d in docs], texts=[f"{d['title']} {d['text']}"[:600] for d in docs])
    with ServerProcess(root / "mv", root / "server.log", timeout=180) as server:
        yield server


def test_page_searches_a_multivector_index(mv_server: ServerProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    query = "the use of computers for information retrieval in libraries"
    with mv_server.client() as client:  # what the page must show: the API's answer
        expected = client.post("/search", json={"query": query, "k": 5, "compare": True}).json()
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(mv_server.url + "/")
            summary = page.locator("#index-summary")
            expect(summary).to_contain_text(f"{MV_DOCS} documents", timeout=20_000)
            expect(summary).to_contain_text("multi-vector (MUVERA)")
            expect(summary).to_contain_text("10240-d FDE")
            memory = page.locator("#memory tbody")
            for tier in ("fde", "chamfer", "ids + texts", "total"):
                expect(memory).to_contain_text(tier)
            expect(page.locator("#memory-bars")).to_contain_text("float32 token vectors in RAM would take")
            expect(page.locator("#image-label")).to_be_hidden()

            page.fill("#query", query)
            page.fill("#k", "5")
            stages = page.locator("#stages option")
            expect(stages).to_have_count(2)
            expect(stages.nth(0)).to_have_text(re.compile(r"^fde → chamfer$"))
            expect(stages.nth(1)).to_have_text(re.compile(r"^fde \(FDE codes only\)$"))
            page.select_option("#stages", index=0)
            page.check("#compare")
            page.click("#search-button")
            hits = page.locator("#results li")
            expect(hits).to_have_count(5, timeout=60_000)
            for i, hit in enumerate(expected["hits"]):
                expect(hits.nth(i).locator(".hit-id")).to_have_text(str(hit["id"]))
            timings = page.locator("#timings")
            for stage in ("embed", "fde", "scan", "chamfer", "total", "exact chamfer:int8 scan"):
                cell = timings.locator(f'tr[data-stage="{stage}"] td.num')
                expect(cell).to_have_text(re.compile(r"^\d+\.\d\d ms$"))
            expect(timings).to_contain_text("Chamfer rerank (int8 tokens, disk)")
            expect(page.locator("#exact-results li")).to_have_count(5)
            expect(page.locator("#overlap")).to_have_text(re.compile(r"^overlap@5: 5/5 \(100%\)"))

            page.select_option("#stages", index=1)
            page.click("#search-button")
            expect(timings.locator('tr[data-stage="chamfer"]')).to_have_count(0, timeout=60_000)
            expect(hits).to_have_count(5)
            page.screenshot(path=str(artifacts_dir() / "server_page_multivector.png"), full_page=True)
        finally:
            browser.close()
    assert not problems, problems
