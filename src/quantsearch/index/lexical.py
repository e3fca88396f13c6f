"""The lexical tier: BM25 over the documents' texts, in SQLite FTS5 inside the catalog.

The tier lives in ``catalog.sqlite`` next to the documents, so it is written in the same transaction
as the rows it indexes: a lexical hit can never name an uncommitted or deleted document, and a crash
at any moment leaves both as they were at the last commit. Two tables (this module holds their SQL):

``lexical_docs(key, row, body)``
    One row per document with text: a stable ``key`` (the FTS rowid), the document's current ``row``
    (renumbered by compaction, like ``docs.row``), and ``body``, the analysed terms joined by spaces.
``lexical``
    An FTS5 external-content index over ``lexical_docs.body`` keyed by ``key``. Compaction renumbers
    ``lexical_docs.row`` only; the full-text index never changes then.

Texts are analysed in Python (:class:`~quantsearch.text.TextAnalyzer`: lowercase, word tokens,
stopwords, Snowball stemming) and FTS5 splits the analysed body on spaces, so the terms are exactly the
analyzer's. Ranking is FTS5's ``bm25()`` (k1 = 1.2, b = 0.75). An index without the manifest key
``lexical`` has no tier and none of these tables (version-1 indexes included).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import CorruptIndexError, InvalidArgumentError
from ..text import TextAnalyzer
from .catalog import Catalog
from .manifest import Manifest

__all__ = ["LEXICAL_KEY", "LexicalTier", "lexical_config"]

#: manifest key of the tier's settings; absent: no lexical tier
LEXICAL_KEY = "lexical"
ENGINE = "sqlite-fts5"

# FTS5 splits the analysed body on anything but letters, digits, private-use and connector
# punctuation ("_"): exactly the characters of the analyzer's word tokens, so no term is split again.
_FTS_TOKENIZE = "unicode61 remove_diacritics 0 categories 'L* N* Co Pc'"
_CREATE = f"""
CREATE TABLE lexical_docs (
    key INTEGER PRIMARY KEY,        -- stable: the FTS rowid
    row INTEGER NOT NULL UNIQUE,    -- the document's row (docs.row), renumbered by compaction
    body TEXT NOT NULL              -- analysed terms joined by spaces
);
CREATE VIRTUAL TABLE lexical USING fts5(
    body, content='lexical_docs', content_rowid='key', tokenize="{_FTS_TOKENIZE}"
);
"""
_SEARCH = (
    "SELECT d.row, f.score FROM (SELECT rowid AS key, rank AS score FROM lexical WHERE lexical MATCH ? "
    "ORDER BY rank LIMIT ?) AS f JOIN lexical_docs AS d ON d.key = f.key"
)
_CHUNK = 900


def lexical_config(lexical: Any) -> dict[str, Any] | None:
    """The manifest entry for ``Index.create(lexical=...)``: True, a dict of analyzer settings, a
    :class:`~quantsearch.text.TextAnalyzer`, or False/None (no lexical tier). Validated here."""
    if lexical is None or lexical is False:
        return None
    if lexical is True:
        analyzer = TextAnalyzer()
    elif isinstance(lexical, TextAnalyzer):
        analyzer = lexical
    elif isinstance(lexical, dict):
        unknown = set(lexical) - {"stopwords", "stemmer", "token_pattern"}
        if unknown:
            raise InvalidArgumentError(
                f"lexical settings take stopwords, stemmer and token_pattern, got {sorted(unknown)}"
            )
        analyzer = TextAnalyzer.from_config(lexical)
    else:
        raise InvalidArgumentError(
            f"lexical must be True, False, a dict of analyzer settings or a TextAnalyzer, got {lexical!r}"
        )
    return {"engine": ENGINE, "analyzer": analyzer.to_config()}


@dataclass(frozen=True)
class LexicalTier:
    """The lexical tier of one index: its analyzer and the SQL over its two tables."""

    analyzer: TextAnalyzer

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> LexicalTier | None:
        config = manifest.extra.get(LEXICAL_KEY)
        if config is None:
            return None
        if not isinstance(config, dict) or config.get("engine") != ENGINE:
            raise CorruptIndexError(f"unsupported lexical tier in the manifest: {config!r}")
        try:
            return cls(TextAnalyzer.from_config(config.get("analyzer") or {}))
        except InvalidArgumentError as exc:
            raise CorruptIndexError(f"the manifest's lexical settings are invalid: {exc}") from None

    # ---- schema -------------------------------------------------------------------------------------
    @staticmethod
    def create_tables(catalog: Catalog) -> None:
        """Create the tables in an empty catalog (at ``Index.create``)."""
        with catalog.transaction() as db:
            for statement in _CREATE.split(";"):
                if statement.strip():
                    db.execute(statement)

    @staticmethod
    def check_tables(catalog: Catalog) -> None:
        if not {"lexical", "lexical_docs"} <= catalog.tables():
            raise CorruptIndexError(f"the manifest names a lexical tier but {catalog.path} lacks its tables")

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
        """An add's transaction body that also indexes the batch's texts (analysed now, outside it)."""
        bodies = self.analyse(texts, start)

        def extended(db: sqlite3.Connection) -> None:
            body(db)
            self.insert(db, bodies)

        return extended

    def extend_compact(
        self, body: Callable[[sqlite3.Connection], None], live: np.ndarray
    ) -> Callable[[sqlite3.Connection], None]:
        """A compaction's transaction body that also renumbers the tier's rows."""

        def extended(db: sqlite3.Connection) -> None:
            body(db)
            self.renumber(db, live)

        return extended

    @staticmethod
    def insert(db: sqlite3.Connection, bodies: list[tuple[int, str]]) -> None:
        """Index analysed documents whose rows are all above every stored row (an add)."""
        if not bodies:
            return
        db.executemany("INSERT INTO lexical_docs (row, body) VALUES (?, ?)", bodies)
        db.execute(
            "INSERT INTO lexical (rowid, body) SELECT key, body FROM lexical_docs WHERE row >= ?",
            (bodies[0][0],),
        )

    @staticmethod
    def delete_rows(db: sqlite3.Connection, rows: Iterable[int]) -> None:
        """Remove documents from the full-text index (a delete; rows without text are ignored)."""
        rows = list(rows)
        for i in range(0, len(rows), _CHUNK):
            chunk = rows[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            db.execute(
                "INSERT INTO lexical (lexical, rowid, body) "
                f"SELECT 'delete', key, body FROM lexical_docs WHERE row IN ({marks})",
                chunk,
            )
            db.execute(f"DELETE FROM lexical_docs WHERE row IN ({marks})", chunk)

    @staticmethod
    def renumber(db: sqlite3.Connection, live: np.ndarray) -> None:
        """Compaction: the ``i``-th live row becomes row ``i`` (ascending, so no row is taken twice)."""
        moves = [(new, old) for new, old in enumerate(live.tolist()) if new != old]
        db.executemany("UPDATE lexical_docs SET row = ? WHERE row = ?", moves)

    # ---- reads ----------------------------------------------------------------------------------------
    def match_expression(self, text: str) -> str | None:
        """The FTS5 query of a text: its terms OR-ed (repeats kept, as in the query's term counts)."""
        terms = self.analyzer.tokens(text)
        return " OR ".join(f'"{t}"' for t in terms) if terms else None

    def search(
        self, catalog: Catalog, texts: Sequence[str], depth: int
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """BM25 top ``depth`` of each text, read in one catalog snapshot.

        Returns
        -------
        generation : int
            The catalog generation the rows belong to.
        rows : ndarray of shape (len(texts), depth), int64
            Best first (ties by smaller row), ``-1`` padding where fewer documents match.
        scores : ndarray of shape (len(texts), depth), float32
            BM25 scores (higher is better), ``nan`` at padding.
        """
        rows = np.full((len(texts), depth), -1, np.int64)
        scores = np.full((len(texts), depth), np.nan, np.float32)
        expressions = [self.match_expression(t) for t in texts]
        with catalog.snapshot() as query:
            found = query("SELECT value FROM meta WHERE key = 'generation'")
            generation = int(found[0][0]) if found else 0
            for q, expression in enumerate(expressions):
                if expression is None:
                    continue
                hits = sorted((rank, row) for row, rank in query(_SEARCH, (expression, depth)))
                rows[q, : len(hits)] = [row for _, row in hits]
                scores[q, : len(hits)] = [-rank for rank, _ in hits]
        return generation, rows, scores

    @staticmethod
    def count(catalog: Catalog) -> int:
        """Documents in the full-text index."""
        return int(catalog.read("SELECT COUNT(*) FROM lexical_docs")[0][0])

    @staticmethod
    def verify(catalog: Catalog) -> None:
        """FTS5's own integrity check of the index against its content table."""
        try:
            with catalog.transaction() as db:
                db.execute("INSERT INTO lexical (lexical) VALUES ('integrity-check')")
        except Exception as exc:
            raise CorruptIndexError(f"the lexical index of {catalog.path} is inconsistent: {exc}") from None
