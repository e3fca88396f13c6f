"""The SQLite catalog: ids, payload and the committed segments of an index.

One transaction per add (segment row + its documents) or delete is the commit point of the index.
Reads use their own short transactions; sqlite's WAL mode lets readers run beside the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
# rows fetched at a time when streaming the whole docs table
_FETCH = 65_536


@dataclass(frozen=True)
class Segment:
    seg_id: int
    start_row: int
    n_rows: int
    files: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class CatalogState:
    """What :meth:`Catalog.state` reads in one snapshot."""

    segments: list[Segment]
    # Catalog.live_docs: (valid (n_rows,) bool, ids (n_rows,) int64 or None, n_live); None when
    # the catalog lists rows outside the segments
    docs: tuple[np.ndarray, np.ndarray | None, int] | None
    generation: int
    version: tuple[int, int]  # Catalog.version() read just before the snapshot


@dataclass(frozen=True)
class Payload:
    row: int
    id: int | str
    text: str | None
    metadata: dict[str, Any] | None


class Catalog:
    """Thin wrapper over the sqlite file; all SQL of the index lives here.

    Every failure of the sqlite file or of what it holds (a damaged page, a non-JSON column, a
    non-integer counter) is raised as :class:`CorruptIndexError` (reads) or :class:`StorageError`
    (writes); nothing from ``sqlite3`` or ``json`` leaves this class.

    ``readonly`` opens the file without ever writing it (``mode=ro``); when sqlite cannot even
    create its shared-memory file next to it (a read-only directory or mount), the file is opened
    as immutable, which is what such a directory is.
    """

    def __init__(self, path: Path, *, create: bool = False, readonly: bool = False) -> None:
        if not create and not path.is_file():
            raise CorruptIndexError(f"index catalog is missing: {path}")
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()
        self._transactions = 0  # write transactions ended on this connection (see version())
        try:
            self._db = self._connect(path, readonly, immutable=False)
            try:
                self._check_tables(create)
            except sqlite3.OperationalError:
                if not readonly:
                    raise
                self._db.close()  # no -shm file can be made beside it: nothing can write there either
                self._db = self._connect(path, readonly, immutable=True)
                self._check_tables(create)
        except sqlite3.DatabaseError as exc:
            raise CorruptIndexError(f"index catalog {path} cannot be read: {exc}") from None

    @staticmethod
    def _connect(path: Path, readonly: bool, *, immutable: bool) -> sqlite3.Connection:
        if not readonly:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        else:
            flags = "mode=ro&immutable=1" if immutable else "mode=ro"
            uri = f"file:{urllib.parse.quote(str(path.absolute()))}?{flags}"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def _check_tables(self, create: bool) -> None:
        if create:
            self._db.executescript(_SCHEMA)
            return
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "segments", "docs"} <= tables:
            raise CorruptIndexError(f"index catalog {self.path} lacks its tables")

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
            finally:
                self._transactions += 1

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._reading():
            return self._db.execute(sql, params).fetchall()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Map what sqlite and the JSON columns raise while reading to :class:`CorruptIndexError`."""
        try:
            yield
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, CorruptIndexError):
                raise
            raise CorruptIndexError(f"index catalog {self.path} cannot be read: {exc}") from None

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: every SELECT inside sees the same commit."""
        with self._lock, self._reading():
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    def _segment(self, row: tuple[Any, ...]) -> Segment:
        seg_id, start, n_rows, text = row
        files = json.loads(text)
        ok = (
            all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (seg_id, start, n_rows))
            and isinstance(files, dict)
            and all(_is_file_ref(ref) for ref in files.values())
        )
        if not ok:
            raise CorruptIndexError(f"index catalog {self.path} lists an invalid segment: {seg_id!r}")
        return Segment(seg_id, start, n_rows, files)

    def _payload(self, row: int, ext: Any, text: Any, meta: Any) -> Payload:
        metadata = json.loads(meta) if meta is not None else None
        if not (metadata is None or isinstance(metadata, dict)) or not isinstance(ext, (int, str)):
            raise CorruptIndexError(f"index catalog {self.path} holds an invalid document at row {row}")
        return Payload(row, ext, text, metadata)

    # ---- reads --------------------------------------------------------------------------------------
    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One read statement (for the lexical tier's SQL, kept in its own module)."""
        return self._query(sql, params)

    def version(self) -> tuple[int, int]:
        """A value that changes whenever a transaction commits to the catalog, by this connection or
        any other (sqlite's ``PRAGMA data_version`` ignores this connection's own commits, counted
        here): an unchanged version means that what was read from the catalog is still current."""
        with self._lock, self._reading():
            return int(self._db.execute("PRAGMA data_version").fetchone()[0]), self._transactions

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
        with self._reading():
            return [self._segment(r) for r in rows]

    def live_docs(
        self, n_rows: int, *, with_ids: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, int] | None:
        """``(valid, ids, n_live)``: the live rows of ``n_rows`` stored ones as a (n_rows,) bool mask,
        with ``with_ids`` the integer id of every row (int32 while every id fits, else int64; 0 at
        deleted rows), and the count.

        Streamed from the cursor in chunks into the arrays: a list of tuples would hold ~90 bytes
        of Python objects per document at once (a transient of ~0.7x the binary codes of a
        1024-d index at open; docs/benchmarks.md, issue 13). None when a row is outside
        ``[0, n_rows)``; :class:`CorruptIndexError` for a non-integer id.
        """
        valid = np.zeros(n_rows, bool)
        ids = np.zeros(n_rows, np.int32) if with_ids else None  # widened when an id needs it
        n_live = 0
        with self._lock, self._reading():
            # an id that is not an integer (a damaged catalog) reads as NULL, which numpy refuses
            ext = "CASE WHEN typeof(ext_id) = 'integer' THEN ext_id END"
            sql = (
                f"SELECT row, {ext} FROM docs ORDER BY row"
                if with_ids
                else "SELECT row FROM docs ORDER BY row"
            )
            cursor = self._db.execute(sql)
            while chunk := cursor.fetchmany(_FETCH):
                if with_ids:
                    pairs = np.array(chunk, np.int64).reshape(-1, 2)
                    rows = pairs[:, 0]
                else:
                    rows = np.fromiter((r for (r,) in chunk), np.int64, len(chunk))
                if rows[0] < 0 or rows[-1] >= n_rows:
                    return None  # the caller reports it, after checking the segments themselves
                valid[rows] = True
                if ids is not None:
                    if id_dtype(ids.dtype, pairs[:, 1]) != ids.dtype:
                        ids = ids.astype(np.int64)
                    ids[rows] = pairs[:, 1]
                n_live += len(chunk)
        return valid, ids, n_live

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

    def state(self, *, with_ids: bool = False) -> CatalogState:
        """The segments, live rows (and ids), generation and version, read in one snapshot."""
        version = self.version()  # before the snapshot: never newer than what is read (see version())
        with self._snapshot():
            segments = self.segments()
            n_rows = sum(s.n_rows for s in segments)
            docs = self.live_docs(n_rows, with_ids=with_ids)
            return CatalogState(segments, docs, self.generation(), version)

    def generation(self) -> int:
        """Counter bumped by every commit that renumbers rows (compaction)."""
        return self._counter("generation")

    def next_id(self) -> int:
        """The first id an add without ids may assign (above every integer id given so far)."""
        return max(self._counter("next_id"), 0)

    def _counter(self, key: str) -> int:
        return self._int(self.meta(key, "0") or 0, key)

    def _int(self, value: Any, key: str) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise CorruptIndexError(
                f"index catalog {self.path} holds a non-integer {key}: {str(value)[:40]!r}"
            ) from None

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
            found = self._query(sql, rows)
            with self._reading():
                for row, ext, text, meta in found:
                    if row == -1:
                        generation = self._int(ext or 0, "generation")
                    else:
                        out[row] = self._payload(row, ext, text, meta)
            return generation, out
        with self._snapshot():
            generation = self.generation()
            for i in range(0, len(rows), _CHUNK):
                chunk = rows[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT {cols} FROM docs WHERE row IN ({marks})"
                for row, ext, text, meta in self._query(sql, chunk):
                    out[row] = self._payload(row, ext, text, meta)
        return generation, out

    def rows_where(self, conditions: Sequence[Any]) -> tuple[int, np.ndarray]:
        """``(generation, rows)`` of the documents whose metadata meets every condition (one snapshot).

        ``conditions`` are :class:`~.filters.Condition` objects (field path, operator, value),
        checked by :func:`~.filters.parse_filter`; values are bound as parameters, never spliced.
        Returns the rows as an ascending int64 array.
        """
        clauses: list[str] = []
        params: list[Any] = []
        for cond in conditions:
            sql, args = _condition_sql(cond.path, cond.op, cond.value)
            clauses.append(sql)
            params += args
        where = " AND ".join(clauses) or "1"
        with self._lock:
            self._db.execute("BEGIN")
            try:
                generation = self.generation()
                found = self._query(f"SELECT row FROM docs WHERE {where} ORDER BY row", params)
            finally:
                self._db.execute("COMMIT")
        return generation, np.fromiter((r[0] for r in found), np.int64, len(found))

    def get(self, ext_id: int | str) -> Payload | None:
        rows = self._query("SELECT row, ext_id, text, metadata FROM docs WHERE ext_id = ?", (ext_id,))
        if not rows:
            return None
        with self._reading():
            return self._payload(*rows[0])

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


def id_dtype(dtype: np.dtype, values: np.ndarray) -> np.dtype:
    """The dtype of an in-RAM id map (int32 or int64) that holds both its ids and ``values`` (int64)."""
    if dtype == np.int64 or not values.size:
        return dtype
    info = np.iinfo(dtype)
    return np.dtype(np.int64) if values.min() < info.min or values.max() > info.max else dtype


def _is_file_ref(ref: Any) -> bool:
    """A segment's entry for one tier: ``{"path", "bytes", "sha256"}``, the path inside the index."""
    if not isinstance(ref, dict):
        return False
    path, size, sha = ref.get("path"), ref.get("bytes"), ref.get("sha256")
    return (
        isinstance(path, str)
        and bool(path)
        and not path.startswith("/")
        and ".." not in path.split("/")
        and "\x00" not in path
        and isinstance(size, int)
        and not isinstance(size, bool)
        and size >= 0
        and isinstance(sha, str)
    )


_SQL_OPS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _typed(path: str, value: Any) -> tuple[str, list[Any]]:
    """SQL comparing the JSON value at ``path`` with ``value`` only when their JSON types agree
    (a number never equals a string or a boolean)."""
    if isinstance(value, bool):
        return "json_type(metadata, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, (int, float)):
        return "json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?", [
            path,
            path,
            value,
        ]
    return "json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?", [path, path, value]


def _condition_sql(path: str, op: str, value: Any) -> tuple[str, list[Any]]:
    """One filter condition as a WHERE fragment with its bound parameters."""
    if op == "in":
        texts = [v for v in value if isinstance(v, str)]
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        parts = [_typed(path, v) for v in dict.fromkeys(v for v in value if isinstance(v, bool))]
        for kind, group in (("('text')", texts), ("('integer', 'real')", numbers)):
            if group:
                marks = ",".join("?" * len(group))
                sql = f"json_type(metadata, ?) IN {kind} AND json_extract(metadata, ?) IN ({marks})"
                parts.append((sql, [path, path, *group]))
        return "(" + " OR ".join(f"({sql})" for sql, _ in parts) + ")", [a for _, args in parts for a in args]
    if op == "eq":
        sql, args = _typed(path, value)
        return f"({sql})", args
    if op == "ne":
        sql, args = _typed(path, value)
        return f"NOT COALESCE(({sql}), 0)", args  # documents without the field match
    return (
        f"(json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) {_SQL_OPS[op]} ?)",
        [path, path, value],
    )
