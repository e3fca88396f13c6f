"""The lexical tier (BM25 over terms stored in the catalog), retrieval modes and fusion, against
independent references (a BM25 written from the formula, bm25s, scikit-learn's LinearSVC)."""

from __future__ import annotations

import math
import sqlite3
from collections import Counter

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.exceptions import CorruptIndexError, InvalidArgumentError
from quantsearch.fusion import Fusion, fuse, normalise_minmax
from quantsearch.index.lexical import LexicalTier
from quantsearch.text import ENGLISH_STOPWORDS, TextAnalyzer

DIM = 24
WORDS = [
    "apple", "banana", "cherry", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mango", "nectar", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
]  # fmt: skip


def corpus(rng: np.random.Generator, n: int) -> list[str]:
    """Texts of 3..30 words drawn with a skewed distribution (so document frequencies vary)."""
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 31)), p=p)) for _ in range(n)]


def vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bm25_reference(docs: list[list[str]], query: list[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """BM25 with Lucene's idf (bm25s's default variant), written from the formula, loops only."""
    n = len(docs)
    lengths = np.array([len(d) for d in docs], float)
    avgdl = lengths.mean()
    df = Counter(t for d in docs for t in set(d))
    tfs = [Counter(d) for d in docs]
    scores = np.zeros(n)
    for term in query:
        if df[term] == 0:
            continue
        idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
        for i in range(n):
            tf = tfs[i][term]
            if tf:
                scores[i] += idf * tf / (tf + k1 * (1 - b + b * lengths[i] / avgdl))
    return scores


def check_against_reference(
    index: Index,
    texts: dict[int, str],
    queries: list[str],
    k: int,
    *,
    allowed: set[int] | None = None,
    filter: dict | None = None,  # noqa: A002
) -> None:
    """Lexical results equal the reference BM25 over the live texts (scores, and ids up to ties);
    with a filter, the reference's matches among the ``allowed`` ids (statistics of all texts)."""
    analyzer = TextAnalyzer(stemmer=None)
    ids = sorted(texts)
    docs = [analyzer.tokens(texts[i]) for i in ids]
    res = index.search(queries, k=k, mode="lexical", filter=filter)
    bare = index.search(queries, k=k, mode="lexical", filter=filter, with_payload=False)  # ids from RAM
    assert bare.ids.tolist() == res.ids.tolist()
    np.testing.assert_array_equal(bare.scores, res.scores)
    for q, query in enumerate(queries):
        ref = bm25_reference(docs, analyzer.tokens(query))
        if allowed is not None:
            ref[[i not in allowed for i in ids]] = 0.0
        matched = int((ref > 0).sum())
        want = np.sort(ref)[::-1][: min(k, matched)]
        got = res.scores[q][res.valid[q]]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        for doc_id, score in zip(res.ids[q][res.valid[q]].tolist(), got.tolist(), strict=True):
            assert ref[ids.index(doc_id)] == pytest.approx(score, rel=1e-5, abs=1e-6)


@pytest.fixture
def lexical_index(tmp_path):
    rng = np.random.default_rng(5)
    texts = corpus(rng, 120)
    x = vectors(rng, 120)
    index = Index.build(tmp_path / "idx", x, texts=texts, lexical={"stemmer": None}, rescore=["float32"])
    yield index, x, dict(enumerate(texts)), rng
    index.close()


def test_analyzer_tokens_exact() -> None:
    analyzer = TextAnalyzer(stemmer=None)
    assert analyzer.tokens("The cat's 2 dogs, and a C++ x_y B12!") == ["cat", "dogs", "x_y", "b12"]
    stemmed = TextAnalyzer()
    assert stemmed.tokens("Running runners ran to the running races") == [
        "run",
        "runner",
        "ran",
        "run",
        "race",
    ]
    assert TextAnalyzer(stopwords=None, stemmer=None).tokens("the a an it") == ["the", "an", "it"]
    assert TextAnalyzer(stopwords=["Cat"], stemmer=None).tokens("cat dog") == ["dog"]
    assert "the" in ENGLISH_STOPWORDS


def test_analyzer_matches_bm25s_tokenization() -> None:
    bm25s = pytest.importorskip("bm25s")
    stemmer = pytest.importorskip("Stemmer")
    texts = ["Vitamin D deficiency and bone-density loss in elderly patients.", "Ünïcode wörds: naïve café's"]
    theirs = bm25s.tokenize(
        texts, stopwords=sorted(ENGLISH_STOPWORDS), stemmer=stemmer.Stemmer("english"),
        return_ids=False, show_progress=False,
    )  # fmt: skip
    assert [list(doc) for doc in theirs] == [TextAnalyzer().tokens(t) for t in texts]


def test_lexical_scores_equal_bm25s(lexical_index) -> None:
    bm25s = pytest.importorskip("bm25s")
    index, _, texts, rng = lexical_index
    analyzer = TextAnalyzer(stemmer=None)
    retriever = bm25s.BM25()  # defaults: Lucene idf, k1 = 1.5, b = 0.75
    retriever.index([analyzer.tokens(texts[i]) for i in range(len(texts))], show_progress=False)
    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False)) for _ in range(10)]
    res = index.search(queries, k=10, mode="lexical")
    for q, query in enumerate(queries):
        theirs = retriever.get_scores(analyzer.tokens(query))
        np.testing.assert_allclose(res.scores[q], np.sort(theirs)[::-1][:10], rtol=1e-5)
        np.testing.assert_allclose(theirs[res.ids[q]], res.scores[q], rtol=1e-5)


def test_analyzer_rejects_bad_settings() -> None:
    with pytest.raises(InvalidArgumentError, match="stopwords"):
        TextAnalyzer(stopwords="klingon")
    with pytest.raises(InvalidArgumentError, match="stemmer"):
        TextAnalyzer(stemmer="klingon")
    with pytest.raises(InvalidArgumentError, match="token_pattern"):
        TextAnalyzer(token_pattern="(")


def test_lexical_scores_equal_reference_bm25(lexical_index) -> None:
    index, _, texts, rng = lexical_index
    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 5)))) for _ in range(25)]
    check_against_reference(index, texts, queries + ["zulu", "the of and"], k=15)
    res = index.search(["zulu"], k=5, mode="lexical")  # no term matches: all padding
    assert not res.valid.any() and (res.ids == -1).all()
    assert res.sources == [[[]] * 5]


def test_lexical_follows_deletes_adds_compaction_and_reopen(lexical_index, tmp_path) -> None:
    index, x, texts, rng = lexical_index
    queries = [" ".join(rng.choice(WORDS, size=3)) for _ in range(12)]
    gone = [int(i) for i in rng.choice(120, size=40, replace=False)]
    index.delete(gone)
    for i in gone:
        del texts[i]
    check_against_reference(index, texts, queries, k=10)  # statistics (N, df, avgdl) follow deletes
    more = corpus(rng, 30)
    new_ids = index.add(vectors(rng, 30), texts=more)
    texts.update(zip(new_ids, more, strict=True))
    check_against_reference(index, texts, queries, k=10)
    assert index.compact() == 40
    check_against_reference(index, texts, queries, k=10)  # rows renumbered, keys unchanged
    res = index.search(queries, k=5, mode="lexical")
    for q in range(len(queries)):  # payload belongs to the id returned
        assert [texts[int(i)] for i in res.ids[q]] == res.texts[q]
    index.verify()
    index.close()
    with Index.open(index.path) as again:
        check_against_reference(again, texts, queries, k=10)


def test_lexical_sees_other_writers_commits(lexical_index) -> None:
    """A reader's postings catch up with adds and deletes committed through another Index object."""
    index, _, texts, rng = lexical_index
    queries = [" ".join(rng.choice(WORDS, size=2)) for _ in range(6)]
    check_against_reference(index, texts, queries, k=8)  # builds the reader's postings
    index.close()
    reader = Index.open(index.path)
    check_against_reference(reader, texts, queries, k=8)
    with Index.open(index.path) as writer:
        more = corpus(rng, 10)
        texts.update(zip(writer.add(vectors(rng, 10), texts=more), more, strict=True))
        check_against_reference(reader, texts, queries, k=8)  # extended with the new keys
        writer.delete([3, 5])
        del texts[3], texts[5]
        check_against_reference(reader, texts, queries, k=8)  # rebuilt after the delete
    reader.close()


def test_stale_reader_may_ask_for_documents_added_since(lexical_index) -> None:
    """k is checked against the index, not against a reader's old view: a reader opened before
    another writer's add can ask for every document, in the lexical mode (which reads the catalog)
    and in the dense one (which catches up)."""
    index, x, texts, rng = lexical_index
    index.close()
    reader = Index.open(index.path)
    reader.search(x[:1], k=len(texts))  # the reader's view: the first 120 documents
    with Index.open(index.path) as writer:
        more = corpus(rng, 10)
        texts.update(zip(writer.add(vectors(rng, 10), texts=more), more, strict=True))
    check_against_reference(reader, texts, ["apple banana"], k=len(texts))
    dense = reader.search(x[:1], k=len(texts))
    assert sorted(dense.ids[0].tolist()) == sorted(texts)
    with pytest.raises(InvalidArgumentError, match="exceeds the number of documents"):
        reader.search(x[:1], k=len(texts) + 1)
    reader.close()


def test_lexical_filter_equals_reference(tmp_path) -> None:
    """A filter keeps the BM25 matches among its documents, BM25's statistics staying the index's;
    documents another writer committed after the reader's view are filtered too."""
    rng = np.random.default_rng(11)
    texts = dict(enumerate(corpus(rng, 90)))
    meta = [{"g": i % 3, "year": 1990 + i % 25} for i in range(90)]
    spec = {"g": {"in": [0, 2]}, "year": {"gte": 1995}}

    def allowed() -> set[int]:
        return {i for i, m in enumerate(meta) if m["g"] in (0, 2) and m["year"] >= 1995 and i in texts}

    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)))) for _ in range(15)]
    Index.build(
        tmp_path / "i", vectors(rng, 90), texts=list(texts.values()), metadata=meta, lexical={"stemmer": None}
    ).close()
    with Index.open(tmp_path / "i") as index:  # a reader: the writer below is another Index
        check_against_reference(index, texts, queries, k=12, allowed=allowed(), filter=spec)
        with Index.open(index.path) as writer:
            more = corpus(rng, 30)
            meta += [{"g": i % 3, "year": 1990 + i % 25} for i in range(90, 120)]
            new = writer.add(vectors(rng, 30), texts=more, metadata=meta[90:])
            texts.update(zip(new, more, strict=True))
            writer.delete([0, 2, 5])
            for i in (0, 2, 5):
                del texts[i]
        check_against_reference(index, texts, queries, k=12, allowed=allowed(), filter=spec)
        res = index.search(queries, k=20, mode="lexical", filter={"g": 7})
        assert not res.valid.any()


def test_hybrid_filter_fuses_both_filtered_lists(lexical_index) -> None:
    """Hybrid with a filter = the fusion of the brute-force dense and reference BM25 lists, both
    restricted to the filter's documents."""
    index, x, texts, rng = lexical_index
    path = index.path
    index.close()
    meta = {i: {"odd": i % 2 == 1} for i in texts}
    order = sorted(texts)
    rebuilt = Index.build(
        path.parent / "meta", x, texts=[texts[i] for i in order], metadata=[meta[i] for i in order],
        lexical={"stemmer": None}, rescore=["float32"],
    )  # fmt: skip
    analyzer = TextAnalyzer(stemmer=None)
    docs = [analyzer.tokens(texts[i]) for i in sorted(texts)]
    odd = np.array([meta[i]["odd"] for i in sorted(texts)])
    qtexts = [" ".join(rng.choice(WORDS, size=2)) for _ in range(6)]
    qx = vectors(rng, 6)
    fusion = Fusion("rrf", 0.4, 30.0, 25)
    with rebuilt:
        res = rebuilt.search(
            qx, k=8, mode="hybrid", fusion=fusion, query_texts=qtexts, filter={"odd": True},
            oversampling=12, with_payload=False,
        )  # fmt: skip
    for q in range(6):
        dense = np.where(odd, x @ qx[q], -np.inf)
        lex = np.where(odd, bm25_reference(docs, analyzer.tokens(qtexts[q])), 0.0)
        d_rows = np.lexsort((np.arange(len(odd)), -dense))[:25]
        l_rows = np.lexsort((np.arange(len(odd)), -lex))[:25]
        l_rows = l_rows[lex[l_rows] > 0]
        fused: dict[int, float] = {}
        for weight, rows in ((0.4, d_rows), (0.6, l_rows)):
            for rank, row in enumerate(rows.tolist()):
                fused[row] = fused.get(row, 0.0) + weight / (30.0 + rank + 1)
        want = sorted(fused, key=lambda r: (-fused[r], r))[:8]
        got = res.ids[q][res.valid[q]].tolist()
        assert all(odd[i] for i in got)
        np.testing.assert_allclose(res.scores[q][res.valid[q]], [fused[r] for r in want], rtol=1e-5)
        assert sorted(got) == sorted(want)


def test_lexical_string_ids_without_payload(tmp_path) -> None:
    """Ids the lexical tier keeps in RAM are the catalog's (strings here), padding included."""
    rng = np.random.default_rng(4)
    texts = corpus(rng, 30)
    ids = [f"doc-{i}" for i in range(30)]
    with Index.build(tmp_path / "i", vectors(rng, 30), ids=ids, texts=texts, lexical=True) as index:
        index.delete(["doc-3"])
        queries = ["apple banana", "zulu", "mango"]
        bare = index.search(queries, k=29, mode="lexical", with_payload=False)
        full = index.search(queries, k=29, mode="lexical")
        assert bare.ids.tolist() == full.ids.tolist()
        assert None in bare.ids[1].tolist() and "doc-3" not in bare.ids.tolist()[0]
        assert bare.valid.tolist() == full.valid.tolist()


def test_catalog_version_changes_with_every_commit(lexical_index) -> None:
    index, x, _, rng = lexical_index
    catalog = index._catalog
    v0 = catalog.version()
    assert catalog.version() == v0  # reads change nothing
    index.search(["apple"], k=3, mode="lexical")
    assert catalog.version() == v0
    index.add(vectors(rng, 2), texts=["apple", "kiwi"])  # a commit by this connection
    assert catalog.version() != v0
    index.close()
    with Index.open(index.path) as reader, Index.open(index.path) as writer:
        v1 = reader._catalog.version()
        writer.delete([0])  # a commit by another connection
        assert reader._catalog.version() != v1


def test_documents_without_text_are_not_indexed(tmp_path) -> None:
    rng = np.random.default_rng(1)
    with Index.build(
        tmp_path / "i", vectors(rng, 6), texts=["alpha", None, "", "beta", "the", None], lexical=True
    ) as index:
        res = index.search(["alpha beta"], k=6, mode="lexical")
        assert sorted(res.ids[0][res.valid[0]].tolist()) == [0, 3]
        assert LexicalTier.count(index._catalog) == 2


def test_index_without_lexical_is_unchanged(tmp_path) -> None:
    rng = np.random.default_rng(2)
    with Index.build(tmp_path / "i", vectors(rng, 20), texts=corpus(rng, 20)) as index:
        assert not index.has_lexical and "lexical" not in index.manifest.to_dict()
        assert "fusion" not in index.manifest.to_dict()
        with pytest.raises(InvalidArgumentError, match="lexical tier"):
            index.search(["apple"], k=3, mode="lexical")
        assert index.search(vectors(rng, 2), k=3).sources is None
    tables = {
        r[0]
        for r in sqlite3.connect(tmp_path / "i" / "catalog.sqlite").execute("SELECT name FROM sqlite_master")
    }
    assert not any(t.startswith("lexical") for t in tables)


def test_missing_tables_are_corruption(tmp_path) -> None:
    rng = np.random.default_rng(3)
    Index.build(tmp_path / "i", vectors(rng, 5), texts=corpus(rng, 5), lexical=True).close()
    db = sqlite3.connect(tmp_path / "i" / "catalog.sqlite")
    db.execute("DROP TABLE lexical_docs")
    db.commit()
    db.close()
    with pytest.raises(CorruptIndexError, match="lexical"):
        Index.open(tmp_path / "i")


def test_bad_mode_arguments(lexical_index) -> None:
    index, x, _, _ = lexical_index
    with pytest.raises(InvalidArgumentError, match="mode"):
        index.search(x[:2], k=3, mode="sparse")
    with pytest.raises(InvalidArgumentError, match="query texts"):
        index.search(x[:2], k=3, mode="hybrid")
    with pytest.raises(InvalidArgumentError, match="query_texts"):
        index.search(x[:2], k=3, mode="hybrid", query_texts=["apple"])
    with pytest.raises(InvalidArgumentError, match="fusion"):
        index.search(x[:1], k=3, mode="hybrid", query_texts=["apple"], fusion="max")
    with pytest.raises(InvalidArgumentError, match="weight"):
        index.search(x[:1], k=3, mode="hybrid", query_texts=["apple"], fusion={"weight": 1.5})
    with pytest.raises(InvalidArgumentError, match="lexical"):
        Index.create(index.path.parent / "other", DIM, lexical="yes")
    with pytest.raises(InvalidArgumentError, match="lexical b"):
        Index.create(index.path.parent / "other", DIM, lexical={"b": 2})
    with pytest.raises(InvalidArgumentError, match="lexical settings"):
        Index.create(index.path.parent / "other", DIM, lexical={"stemming": True})
    assert not (index.path.parent / "other").exists()


def test_fuse_rrf_and_convex_exact() -> None:
    dense = (np.array([[3, 1, 2]]), np.array([[0.9, 0.5, 0.1]], np.float32))
    lexical = (np.array([[2, 4, -1]]), np.array([[7.0, 3.0, np.nan]], np.float32))
    rows, scores, found = fuse([dense, lexical], [0.5, 0.5], 3, method="rrf", rrf_k=1)
    # rrf: 3: .5/2; 1: .5/3; 2: .5/4 + .5/2; 4: .5/3 -> 2, 3, then 1 and 4 tie (smaller row first)
    assert rows.tolist() == [[2, 3, 1]]
    np.testing.assert_allclose(scores[0], [0.375, 0.25, 1 / 6], rtol=1e-6)
    assert found.tolist() == [[[True, True], [True, False], [True, False]]]
    rows, scores, _ = fuse([dense, lexical], [0.25, 0.75], 4, method="convex")
    # normalised dense: 3 -> 1, 1 -> .5, 2 -> 0; lexical: 2 -> 1, 4 -> 0
    assert rows.tolist() == [[2, 3, 1, 4]]
    np.testing.assert_allclose(scores[0], [0.75, 0.25, 0.125, 0.0], atol=1e-6)
    rows, scores, found = fuse([dense, lexical], [0.5, 0.5], 6)
    assert rows[0, 4:].tolist() == [-1, -1] and np.isnan(scores[0, 4:]).all() and not found[0, 4:].any()
    np.testing.assert_allclose(normalise_minmax(np.array([[2.0, 2.0], [1.0, 3.0]])), [[1, 1], [0, 1]])


def test_hybrid_equals_fusion_of_both_modes(lexical_index) -> None:
    index, x, _, rng = lexical_index
    qtexts = [" ".join(rng.choice(WORDS, size=2)) for _ in range(8)]
    qx = vectors(rng, 8)
    for fusion in (Fusion("rrf", 0.3, 10.0, 40), Fusion("convex", 0.7, depth=40)):
        # oversampling 12: both dense lists rescore every document (40 x 12 > 120), so they are equal
        res = index.search(
            qx, k=10, mode="hybrid", fusion=fusion, query_texts=qtexts, with_payload=False, oversampling=12
        )
        dense = index.search(qx, k=40, with_payload=False, oversampling=12)
        lexical = index.search(qtexts, k=40, mode="lexical", with_payload=False)
        lists = [(r.ids, r.scores) for r in (dense, lexical)]
        want_rows, want_scores, found = fuse(
            lists, fusion.weights, 10, method=fusion.method, rrf_k=fusion.rrf_k
        )
        assert res.ids.tolist() == want_rows.tolist()
        np.testing.assert_allclose(res.scores, want_scores, rtol=1e-6)
        names = [
            [[n for n, f in zip(("dense", "lexical"), hit, strict=True) if f] for hit in q]
            for q in found.tolist()
        ]
        assert res.sources == names


def test_fusion_saved_with_the_index(lexical_index) -> None:
    index, x, _, _ = lexical_index
    assert index.fusion is None
    index.set_fusion({"method": "convex", "weight": 0.8})
    path = index.path
    index.close()
    with Index.open(path) as again:
        assert again.fusion == Fusion("convex", 0.8)
        a = again.search(x[:3], k=5, mode="hybrid", query_texts=["apple"] * 3)
        b = again.search(x[:3], k=5, mode="hybrid", query_texts=["apple"] * 3, fusion=Fusion("convex", 0.8))
        assert a.ids.tolist() == b.ids.tolist()


def test_svm_mode_equals_linear_svc_on_the_candidates(lexical_index) -> None:
    svm = pytest.importorskip("sklearn.svm")
    index, x, _, rng = lexical_index
    q = vectors(rng, 3)
    # the SVM's candidates: the dense top 100 (fusion depth) of all 120 docs rescored
    res = index.search(q, k=5, mode="svm", oversampling=24, with_payload=False)
    dense = index.search(q, k=100, oversampling=2, with_payload=False)  # float32 tier: exact
    for i in range(3):
        cand = dense.ids[i]
        data = np.concatenate([q[i : i + 1], x[cand]])
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        y = np.zeros(len(data))
        y[0] = 1
        clf = svm.LinearSVC(class_weight="balanced", C=0.1, max_iter=10_000, tol=1e-6, dual="auto").fit(
            data, y
        )
        scores = clf.decision_function(data[1:])
        order = np.lexsort((cand, -scores))[:5]
        assert res.ids[i].tolist() == cand[order].tolist()
        np.testing.assert_allclose(res.scores[i], scores[order], rtol=1e-4, atol=1e-5)
