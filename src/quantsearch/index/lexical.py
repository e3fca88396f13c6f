"""The lexical tier: BM25 over the documents' texts, stored in the catalog, scored in memory.

The analysed terms of every document live in ``catalog.sqlite`` next to the documents, so they are
written in the same transaction as the rows they belong to: a lexical hit can never name an
uncommitted or deleted document, and a crash at any moment leaves both as they were at the last
commit. One table (this module holds its SQL):

``lexical_docs(key, row, body)``
    One row per document with terms: a never-reused ``key`` (AUTOINCREMENT, the order of adds), the
    document's current ``row`` (renumbered by compaction, like ``docs.row``) and ``body``, the
    analysed terms joined by spaces.

Searching uses :class:`~.postings.Postings`, an inverted index in RAM (with the documents' ids)
built from that table at the first lexical search and extended with the new keys after adds (a
delete or a compaction, seen through the ``lexical_removed`` and ``generation`` counters, rebuilds
it); a search reads nothing from the catalog when no commit happened since the last one
(:meth:`~.catalog.Catalog.version`). SQLite FTS5 was measured
first and kept out of the search path: its ``bm25()`` was 3.6-28x slower than bm25s on the shared
collections and has Robertson's idf (docs/architecture.md, "Lexical tier").

Texts are analysed in Python (:class:`~quantsearch.text.TextAnalyzer`: lowercase, word tokens,
stopwords, Snowball stemming). An index without the manifest key ``lexical`` has no tier and no
table (version-1 indexes included).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._validation import check_number
from ..exceptions import CorruptIndexError, InvalidArgumentError
from ..text import TextAnalyzer
from .catalog import Catalog
from .manifest import Manifest
from .postings import Postings

__all__ = ["LEXICAL_KEY", "LexicalHits", "LexicalTier", "lexical_config"]

#: manifest key of the tier's settings; absent: no lexical tier
LEXICAL_KEY = "lexical"
ENGINE = "sqlite-terms"
#: BM25 parameters of bm25s's defaults
DEFAULT_K1, DEFAULT_B = 1.5, 0.75

_CREATE = """
CREATE TABLE lexical_docs (
    key INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the order of adds
    row INTEGER NOT NULL UNIQUE,            -- the document's row (docs.row), renumbered by compaction
    body TEXT NOT NULL                      -- analysed terms joined by spaces
)
"""
_CHUNK = 900
_SETTINGS = {"stopwords", "stemmer", "token_pattern", "k1", "b"}


def lexical_config(lexical: Any) -> dict[str, Any] | None:
    """The manifest entry for ``Index.create(lexical=...)``: True, a dict of settings (the analyzer's
    ``stopwords``, ``stemmer``, ``token_pattern``, and BM25's ``k1``, ``b``), a
    :class:`~quantsearch.text.TextAnalyzer`, or False/None (no lexical tier). Validated here."""
    if lexical is None or lexical is False:
        return None
    settings: dict[str, Any] = {}
    if lexical is True:
        analyzer = TextAnalyzer()
    elif isinstance(lexical, TextAnalyzer):
        analyzer = lexical
    elif isinstance(lexical, dict):
        unknown = set(lexical) - _SETTINGS
        if unknown:
            raise InvalidArgumentError(f"lexical settings take {sorted(_SETTINGS)}, got {sorted(unknown)}")
        settings = lexical
        analyzer = TextAnalyzer.from_config({k: v for k, v in lexical.items() if k not in ("k1", "b")})
    else:
        raise InvalidArgumentError(
            f"lexical must be True, False, a dict of settings or a TextAnalyzer, got {lexical!r}"
        )
    k1 = check_number(settings.get("k1", DEFAULT_K1), "lexical k1", minimum=0)
    b = check_number(settings.get("b", DEFAULT_B), "lexical b", minimum=0)
    if b > 1:
        raise InvalidArgumentError(f"lexical b must be in [0, 1], got {b!r}")
    return {"engine": ENGINE, "analyzer": analyzer.to_config(), "k1": k1, "b": b}


class LexicalHits(NamedTuple):
    """What :meth:`LexicalTier.search` finds, all of one catalog snapshot."""

    #: the catalog generation the rows belong to
    generation: int
    #: (nq, depth) int64 index rows, best first (ties by smaller row), ``-1`` padding
    rows: np.ndarray
    #: (nq, depth) float32 BM25 scores (higher is better), ``nan`` at padding
    scores: np.ndarray
    #: (nq, depth) object: the documents' ids, ``None`` at padding
    ids: np.ndarray


class LexicalTier:
    """The lexical tier of one index: its settings, its SQL, and the in-memory postings."""

    def __init__(self, analyzer: TextAnalyzer, k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> None:
        self.analyzer = analyzer
        self.k1 = k1
        self.b = b
        self._lock = threading.Lock()
        self._postings = Postings()
        self._seen: tuple[int, int] | None = None  # (generation, removed) the postings were built at
        self._version: tuple[int, int] | None = None  # catalog.version() at the last catch-up

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> LexicalTier | None:
        config = manifest.extra.get(LEXICAL_KEY)
        if config is None:
            return None
        if not isinstance(config, dict) or config.get("engine") != ENGINE:
            raise CorruptIndexError(f"unsupported lexical tier in the manifest: {config!r}")
        try:
            settings = lexical_config(
                {**(config.get("analyzer") or {}), "k1": config["k1"], "b": config["b"]}
            )
        except (InvalidArgumentError, KeyError, TypeError) as exc:
            raise CorruptIndexError(f"the manifest's lexical settings are invalid: {exc}") from None
        assert settings is not None
        return cls(TextAnalyzer.from_config(settings["analyzer"]), settings["k1"], settings["b"])

    # ---- schema -------------------------------------------------------------------------------------
    @staticmethod
    def create_tables(catalog: Catalog) -> None:
        """Create the table in an empty catalog (at ``Index.create``)."""
        with catalog.transaction() as db:
            db.execute(_CREATE)

    @staticmethod
    def check_tables(catalog: Catalog) -> None:
        if "lexical_docs" not in catalog.tables():
            raise CorruptIndexError(f"the manifest names a lexical tier but {catalog.path} lacks its table")

    # ---- writes (inside the commit transaction) ------------------------------------------------------
    def analyse(self, texts: Sequence[str | None], start: int) -> list[tuple[int, str]]:
        """``(row, body)`` of the documents with terms (done before the transaction: it is the slow part)."""
        out = []
        for i, text in enumerate(texts):
            if text:
                terms = self.analyzer.tokens(text)
                if terms:
                    out.append((start + i, " ".join(terms)))
        return out

    def extend_add(
        self, body: Callable[[sqlite3.Connection], None], texts: Sequence[str | None], start: int
    ) -> Callable[[sqlite3.Connection], None]:
        """An add's transaction body that also stores the batch's terms (analysed now, outside it)."""
        bodies = self.analyse(texts, start)

        def extended(db: sqlite3.Connection) -> None:
            body(db)
            db.executemany("INSERT INTO lexical_docs (row, body) VALUES (?, ?)", bodies)

        return extended

    def extend_compact(
        self, body: Callable[[sqlite3.Connection], None], live: np.ndarray
    ) -> Callable[[sqlite3.Connection], None]:
        """A compaction's transaction body that also renumbers the tier's rows (ascending, so that
        no move lands on a row still taken: the i-th live row becomes row i)."""

        def extended(db: sqlite3.Connection) -> None:
            body(db)
            moves = [(new, old) for new, old in enumerate(live.tolist()) if new != old]
            db.executemany("UPDATE lexical_docs SET row = ? WHERE row = ?", moves)

        return extended

    @staticmethod
    def delete_rows(db: sqlite3.Connection, rows: Iterable[int]) -> None:
        """Remove deleted documents' terms (rows without terms are ignored); searches rebuild."""
        rows = list(rows)
        for i in range(0, len(rows), _CHUNK):
            chunk = rows[i : i + _CHUNK]
            db.execute(f"DELETE FROM lexical_docs WHERE row IN ({','.join('?' * len(chunk))})", chunk)
        removed = db.execute("SELECT value FROM meta WHERE key = 'lexical_removed'").fetchall()
        Catalog.set_meta(db, "lexical_removed", str(int(removed[0][0]) + 1 if removed else 1))

    # ---- reads ----------------------------------------------------------------------------------------
    def search(
        self, catalog: Catalog, texts: Sequence[str], depth: int, *, allowed: np.ndarray | None = None
    ) -> LexicalHits:
        """BM25 top ``depth`` of each text, over one catalog snapshot (see :class:`LexicalHits`);
        ``allowed`` (a filter's rows, int64) keeps only those rows among the matches."""
        terms = [self.analyzer.tokens(t) for t in texts]
        with self._lock:
            generation = self._catch_up(catalog)
            rows, scores, ids = self._postings.search(terms, depth, k1=self.k1, b=self.b, allowed=allowed)
        return LexicalHits(generation, rows, scores, ids)

    def _catch_up(self, catalog: Catalog) -> int:
        """Bring the postings to the catalog's latest commit; returns its generation.

        Nothing is read when the catalog's :meth:`~.Catalog.version` is the one of the last catch-up
        (no commit since, by any process). Else one statement, hence one snapshot, reads the
        counters (as key -1) and the documents added since the last call; a changed counter (a
        delete or a compaction) rebuilds from every document.
        """
        version = catalog.version()  # read first: a commit landing after it is caught up next time
        if version == self._version and self._seen is not None:
            return self._seen[0]
        sql = (
            "SELECT -1, key, value, NULL FROM meta WHERE key IN ('generation', 'lexical_removed') "
            "UNION ALL SELECT l.key, l.row, l.body, d.ext_id FROM lexical_docs AS l "
            "JOIN docs AS d ON d.row = l.row WHERE l.key > ?"
        )
        seen, new = self._read(catalog, sql, self._postings.max_key)
        if seen != self._seen:  # rows renumbered or documents removed: rebuild from all of them
            seen, new = self._read(catalog, sql, 0)
            self._postings, self._seen = Postings(), seen
        self._postings.extend(new)
        self._version = version
        return seen[0]

    @staticmethod
    def _read(
        catalog: Catalog, sql: str, after: int
    ) -> tuple[tuple[int, int], list[tuple[int, int, str, int | str]]]:
        found = catalog.read(sql, (after,))
        values = {r[1]: int(r[2]) for r in found if r[0] == -1}
        docs = sorted(r for r in found if r[0] != -1)  # by key (unique): the order of adds
        return (values.get("generation", 0), values.get("lexical_removed", 0)), docs

    @staticmethod
    def count(catalog: Catalog) -> int:
        """Documents with terms in the tier."""
        return int(catalog.read("SELECT COUNT(*) FROM lexical_docs")[0][0])

    @staticmethod
    def verify(catalog: Catalog) -> None:
        """Every document of the tier is a live document."""
        orphans = catalog.read("SELECT COUNT(*) FROM lexical_docs WHERE row NOT IN (SELECT row FROM docs)")
        if orphans[0][0]:
            raise CorruptIndexError(f"the lexical tier of {catalog.path} names {orphans[0][0]} missing rows")
