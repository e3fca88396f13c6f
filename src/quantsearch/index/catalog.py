"""The SQLite catalog: ids, payload and the committed segments of an index.

One transaction per add (segment row + its documents) or delete is the commit point of the index.
Reads use their own short transactions; sqlite's WAL mode lets readers run beside the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import CorruptIndexError, StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    seg_id INTEGER PRIMARY KEY,
    start_row INTEGER NOT NULL,
    n_rows INTEGER NOT NULL,
    files TEXT NOT NULL            -- JSON {tier: {"path", "bytes", "sha256"}}
);
CREATE TABLE IF NOT EXISTS docs (
    row INTEGER PRIMARY KEY,       -- global row of the codes in the segment files
    ext_id NOT NULL UNIQUE,        -- user id: INTEGER or TEXT, one type per index
    text TEXT,
    metadata TEXT                  -- JSON object or NULL
);
"""

# sqlite limits the number of bound parameters per statement
_CHUNK = 900


@dataclass(frozen=True)
class Segment:
    seg_id: int
    start_row: int
    n_rows: int
    files: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Payload:
    row: int
    id: int | str
    text: str | None
    metadata: dict[str, Any] | None


class Catalog:
    """Thin wrapper over the sqlite file; all SQL of the index lives here."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.is_file():
            raise CorruptIndexError(f"index catalog is missing: {path}")
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            if create:
                self._db.executescript(_SCHEMA)
            else:
                tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if not {"meta", "segments", "docs"} <= tables:
                    raise CorruptIndexError(f"index catalog {path} lacks its tables")
        except sqlite3.DatabaseError as exc:
            raise CorruptIndexError(f"index catalog {path} cannot be read: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # also when COMMIT itself failed: never leave it open
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError:
                raise  # a constraint the caller checks for (duplicate ids racing another writer)
            except sqlite3.Error as exc:
                raise StorageError(f"writing the index catalog {self.path} failed: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise CorruptIndexError(f"index catalog {self.path} cannot be read: {exc}") from None

    # ---- reads --------------------------------------------------------------------------------------
    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One read statement (for the lexical tier's SQL, kept in its own module)."""
        return self._query(sql, params)

    @contextmanager
    def snapshot(self) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
        """A read transaction: every statement run through the yielded function sees the same commit."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._query
            finally:
                self._db.execute("COMMIT")

    def tables(self) -> set[str]:
        return {r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}

    def segments(self) -> list[Segment]:
        rows = self._query("SELECT seg_id, start_row, n_rows, files FROM segments ORDER BY start_row")
        return [Segment(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def live_rows(self) -> list[int]:
        return [r[0] for r in self._query("SELECT row FROM docs ORDER BY row")]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM docs")[0][0])

    def summary(self) -> tuple[int, int, int]:
        """``(live documents, stored rows, segments)`` in one statement (one snapshot), no codes read."""
        row = self._query(
            "SELECT (SELECT COUNT(*) FROM docs), (SELECT COALESCE(SUM(n_rows), 0) FROM segments), "
            "(SELECT COUNT(*) FROM segments)"
        )[0]
        return int(row[0]), int(row[1]), int(row[2])

    def meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def existing_ids(self, ids: Sequence[int | str]) -> list[int | str]:
        found: list[int | str] = []
        for i in range(0, len(ids), _CHUNK):
            chunk = list(ids[i : i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            found += [r[0] for r in self._query(f"SELECT ext_id FROM docs WHERE ext_id IN ({marks})", chunk)]
        return found

    def rows_of(self, ids: Sequence[int | str]) -> dict[int | str, int]:
        out: dict[int | str, int] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = list(ids[i : i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            out.update(self._query(f"SELECT ext_id, row FROM docs WHERE ext_id IN ({marks})", chunk))
        return out

    def state(self) -> tuple[list[Segment], list[int], int]:
        """``(segments, live rows, generation)`` read in one snapshot."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                return self.segments(), self.live_rows(), self.generation()
            finally:
                self._db.execute("COMMIT")

    def generation(self) -> int:
        """Counter bumped by every commit that renumbers rows (compaction)."""
        return int(self.meta("generation", "0") or 0)

    def payload(self, rows: Iterable[int], *, with_text: bool = True) -> tuple[int, dict[int, Payload]]:
        """``(generation, payload)`` of the given rows, read in one snapshot (missing rows are absent).

        The generation tells the caller whether the row numbers it holds are still the catalog's.
        """
        rows = sorted(set(rows))
        cols = "row, ext_id, text, metadata" if with_text else "row, ext_id, NULL, NULL"
        out: dict[int, Payload] = {}
        if len(rows) <= _CHUNK:
            # the common case (a search's k x nq rows): one statement, hence one snapshot, returns the
            # generation (as row -1) together with the rows -- a third of the round trips of BEGIN ..
            sql = (
                "SELECT -1, value, NULL, NULL FROM meta WHERE key = 'generation' UNION ALL "
                f"SELECT {cols} FROM docs WHERE row IN ({','.join('?' * len(rows))})"
            )
            generation = 0
            for row, ext, text, meta in self._query(sql, rows):
                if row == -1:
                    generation = int(ext or 0)
                else:
                    out[row] = Payload(row, ext, text, json.loads(meta) if meta is not None else None)
            return generation, out
        with self._lock:
            self._db.execute("BEGIN")  # a read transaction: every SELECT below sees the same commit
            try:
                generation = self.generation()
                for i in range(0, len(rows), _CHUNK):
                    chunk = rows[i : i + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT {cols} FROM docs WHERE row IN ({marks})"
                    for row, ext, text, meta in self._query(sql, chunk):
                        out[row] = Payload(row, ext, text, json.loads(meta) if meta is not None else None)
            finally:
                self._db.execute("COMMIT")
        return generation, out

    def get(self, ext_id: int | str) -> Payload | None:
        rows = self._query("SELECT row, ext_id, text, metadata FROM docs WHERE ext_id = ?", (ext_id,))
        if not rows:
            return None
        row, ext, text, meta = rows[0]
        return Payload(row, ext, text, json.loads(meta) if meta is not None else None)

    # ---- writes (inside transaction()) ----------------------------------------------------------------
    @staticmethod
    def insert_segment(db: sqlite3.Connection, seg: Segment) -> None:
        db.execute(
            "INSERT INTO segments (seg_id, start_row, n_rows, files) VALUES (?, ?, ?, ?)",
            (seg.seg_id, seg.start_row, seg.n_rows, json.dumps(seg.files, sort_keys=True)),
        )

    @staticmethod
    def insert_docs(
        db: sqlite3.Connection, rows: Iterable[tuple[int, int | str, str | None, str | None]]
    ) -> None:
        db.executemany("INSERT INTO docs (row, ext_id, text, metadata) VALUES (?, ?, ?, ?)", rows)

    @staticmethod
    def delete_ids(db: sqlite3.Connection, ids: Sequence[int | str]) -> None:
        for i in range(0, len(ids), _CHUNK):
            chunk = list(ids[i : i + _CHUNK])
            db.execute(f"DELETE FROM docs WHERE ext_id IN ({','.join('?' * len(chunk))})", chunk)

    @staticmethod
    def replace_segments(db: sqlite3.Connection, seg: Segment) -> None:
        db.execute("DELETE FROM segments")
        Catalog.insert_segment(db, seg)

    @staticmethod
    def renumber_rows(db: sqlite3.Connection, moves: Iterable[tuple[int, int]]) -> None:
        """Apply ``(new_row, old_row)`` moves; callers pass them by ascending old row with new <= old,
        so that no move lands on a row that is still taken."""
        db.executemany("UPDATE docs SET row = ? WHERE row = ?", moves)

    @staticmethod
    def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
