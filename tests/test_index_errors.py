"""Bad input and damaged index directories: our exception, a message naming the problem, no change on disk."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import unit_vectors
from quantsearch import Index
from quantsearch.exceptions import (
    CorruptIndexError,
    DimensionMismatchError,
    DuplicateIdError,
    EmptyInputError,
    FormatVersionError,
    IndexExistsError,
    IndexNotFoundError,
    InvalidArgumentError,
    InvalidDtypeError,
    NonFiniteError,
    NotFittedError,
    QuantsearchError,
    StorageError,
    UnknownIdError,
)
from quantsearch.index import layout

DIM = 20
N = 60


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the LOCK file and sqlite's -wal/-shm files."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != layout.LOCK and not p.name.endswith(("-wal", "-shm"))
    }


QUERIES = unit_vectors(6, DIM, seed=77)
SEARCHES: list[dict[str, Any]] = [{"stages": ()}, {}, {"oversampling": N}]


def run_searches(index: Index) -> list[tuple[list[Any], bytes]]:
    """Ids and (bitwise) scores of a few fixed searches."""
    return [(r.ids.tolist(), r.scores.tobytes()) for r in (index.search(QUERIES, k=5, **c) for c in SEARCHES)]


@pytest.fixture
def built(tmp_path) -> tuple[Path, np.ndarray]:
    """A closed index (ids 0..N-1, two segments, int8 tier) and its vectors."""
    x = unit_vectors(N, DIM, seed=1)
    with Index.create(tmp_path / "idx", DIM, calibration=x) as index:
        index.add(x[:30], texts=[f"t{i}" for i in range(30)])
        index.add(x[30:], metadata=[{"n": i} for i in range(30, N)])
    return tmp_path / "idx", x


def expect_failure_leaves_index_unchanged(
    path: Path, call: Callable[[Index], Any], error: type[Exception], match: str
) -> None:
    """Open the index, make the failing ``call`` and check: our error, the message, nothing changed."""
    before = snapshot(path)
    index = Index.open(path)
    results = run_searches(index)
    count = len(index)
    with pytest.raises(error, match=match) as info:
        call(index)
    assert isinstance(info.value, QuantsearchError)
    assert len(index) == count and run_searches(index) == results
    index.close()
    assert snapshot(path) == before
    with Index.open(path) as reopened:
        assert len(reopened) == count and run_searches(reopened) == results


# ---- add --------------------------------------------------------------------------------------------
X = unit_vectors(4, DIM, seed=5)

ADD_ERRORS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    (
        "dim",
        {"vectors": X[:, :-1]},
        DimensionMismatchError,
        rf"vectors has dimension {DIM - 1}, expected {DIM}",
    ),
    (
        "ndim3",
        {"vectors": X[None]},
        DimensionMismatchError,
        r"vectors must be 1-D or 2-D, got shape \(1, 4, 20\)",
    ),
    (
        "nan",
        {"vectors": np.where(np.arange(DIM) == 3, np.nan, X)},
        NonFiniteError,
        r"NaN or inf \(first in row 0",
    ),
    ("inf", {"vectors": np.vstack([X[:2], np.full((1, DIM), np.inf)])}, NonFiniteError, "row 2"),
    ("empty", {"vectors": np.empty((0, DIM), np.float32)}, EmptyInputError, "vectors is empty"),
    ("int", {"vectors": np.ones((2, DIM), np.int64)}, InvalidDtypeError, "floating dtype.*int64"),
    ("bool", {"vectors": np.ones((2, DIM), bool)}, InvalidDtypeError, "floating dtype.*bool"),
    ("strings", {"vectors": np.full((2, DIM), "a")}, InvalidDtypeError, "floating dtype.*<U1"),
    ("object", {"vectors": X.astype(object)}, InvalidDtypeError, "floating dtype.*object"),
    ("str", {"vectors": "vectors"}, InvalidDtypeError, "array of floats, got a str"),
    ("complex", {"vectors": X.astype(np.complex64)}, InvalidDtypeError, "complex64"),
    ("dup-in-batch", {"ids": [100, 101, 100, 102]}, DuplicateIdError, "id 100 appears more than once"),
    ("dup-in-index", {"ids": [100, 101, 7, 102]}, DuplicateIdError, "id 7 is already in the index"),
    ("id-str", {"ids": [100, 101, "102", 103]}, InvalidArgumentError, r"ids\[2\] must be an int.*'102'"),
    ("id-float", {"ids": [100, 101, 102.0, 103]}, InvalidArgumentError, r"ids\[2\] must be an int"),
    ("id-bool", {"ids": [100, True, 102, 103]}, InvalidArgumentError, r"ids\[1\] must be an int"),
    ("id-float-array", {"ids": np.arange(4.0) + 100}, InvalidArgumentError, r"ids\[0\] must be an int"),
    (
        "id-too-big",
        {"ids": [100, 101, 102, 2**63]},
        InvalidArgumentError,
        r"ids\[3\] does not fit in 64 bits",
    ),
    ("ids-len", {"ids": [100, 101, 102]}, InvalidArgumentError, "ids has 3 entries, expected 4"),
    ("ids-str", {"ids": "abcd"}, InvalidArgumentError, "ids must be a sequence of 4 ids"),
    ("texts-len", {"texts": ["a", "b"]}, InvalidArgumentError, "texts has 2 entries, expected 4"),
    ("texts-type", {"texts": ["a", "b", 3, "d"]}, InvalidArgumentError, r"texts\[2\] must be str or None"),
    ("texts-str", {"texts": "abcd"}, InvalidArgumentError, "texts must be a sequence of 4 entries"),
    (
        "texts-surrogate",
        {"texts": ["a", "\ud800", "c", "d"]},
        InvalidArgumentError,
        r"texts\[1\] is not valid",
    ),
    ("meta-len", {"metadata": [{}] * 5}, InvalidArgumentError, "metadata has 5 entries, expected 4"),
    ("meta-type", {"metadata": [{}, [1], {}, {}]}, InvalidArgumentError, r"metadata\[1\] must be dict"),
    (
        "meta-object",
        {"metadata": [{}, {}, {"x": object()}, {}]},
        InvalidArgumentError,
        r"metadata\[2\].*JSON",
    ),
    (
        "meta-nan",
        {"metadata": [{"x": float("nan")}, {}, {}, {}]},
        InvalidArgumentError,
        r"metadata\[0\].*JSON",
    ),
    ("meta-set", {"metadata": [{}, {}, {}, {"x": {1, 2}}]}, InvalidArgumentError, r"metadata\[3\].*JSON"),
    ("meta-surrogate", {"metadata": [{"x": "\udfff"}, {}, {}, {}]}, InvalidArgumentError, r"metadata\[0\]"),
]


@pytest.mark.parametrize(("case", "kwargs", "error", "match"), ADD_ERRORS, ids=[c[0] for c in ADD_ERRORS])
def test_add_rejects_bad_input(
    built, case: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    path, _ = built
    call = {"vectors": X, **kwargs}
    expect_failure_leaves_index_unchanged(path, lambda index: index.add(**call), error, match)


def test_add_rejects_wrong_id_type_for_string_index(tmp_path) -> None:
    x = unit_vectors(13, DIM, seed=2)
    with Index.create(tmp_path / "s", DIM, id_type="str", calibration=x) as index:
        index.add(x[:10], ids=[f"d{i}" for i in range(10)])
    cases = [
        ([1, 2, 3], r"ids\[0\] must be a str"),
        (["c", "", "d"], r"ids\[1\] must be a non-empty"),
        (["c", "d", "x" * 1025], r"ids\[2\] must be a non-empty string of at most 1024"),
        (["c", "\ud800", "d"], r"ids\[1\] is not valid Unicode"),
        (None, "ids are required"),
    ]
    for ids, match in cases:
        expect_failure_leaves_index_unchanged(
            tmp_path / "s", lambda index, ids=ids: index.add(x[10:], ids=ids), InvalidArgumentError, match
        )
    expect_failure_leaves_index_unchanged(
        tmp_path / "s", lambda index: index.delete([3]), InvalidArgumentError, r"ids\[0\] must be a str"
    )


def test_add_before_calibration(tmp_path) -> None:
    with Index.create(tmp_path / "u", DIM) as index:
        with pytest.raises(NotFittedError, match="not calibrated"):
            index.add(X)
        assert len(index) == 0 and not list((tmp_path / "u" / "segments").glob("*"))


# ---- search -------------------------------------------------------------------------------------------
SEARCH_ERRORS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("k0", {"k": 0}, InvalidArgumentError, "k must be >= 1, got 0"),
    ("k-neg", {"k": -3}, InvalidArgumentError, "k must be >= 1, got -3"),
    ("k-float", {"k": 2.0}, InvalidArgumentError, "k must be an integer, got 2.0"),
    (
        "k>N",
        {"k": N + 1},
        InvalidArgumentError,
        f"k={N + 1} exceeds the number of documents in the index \\({N}\\)",
    ),
    ("dim", {"queries": X[:, :5]}, DimensionMismatchError, f"queries has dimension 5, expected {DIM}"),
    ("nan", {"queries": np.full(DIM, np.nan)}, NonFiniteError, "queries contains NaN"),
    ("int", {"queries": np.ones(DIM, np.int32)}, InvalidDtypeError, "queries must have a floating dtype"),
    (
        "stage",
        {"stages": ("int4",)},
        InvalidArgumentError,
        r"unknown stage 'int4'; this index has \['int8'\]",
    ),
    ("oversampling", {"oversampling": 0.5}, InvalidArgumentError, "oversampling must be a number >= 1"),
    ("text-no-model", {"queries": "a question"}, InvalidArgumentError, "records no embedding model"),
    ("texts-no-model", {"queries": ["a", "b"]}, InvalidArgumentError, "records no embedding model"),
]


@pytest.mark.parametrize(
    ("case", "kwargs", "error", "match"), SEARCH_ERRORS, ids=[c[0] for c in SEARCH_ERRORS]
)
def test_search_rejects_bad_input(
    built, case: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    path, _ = built
    call = {"queries": X, "k": 3, **kwargs}
    expect_failure_leaves_index_unchanged(path, lambda index: index.search(**call), error, match)


# ---- delete / get ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ids", "error", "match"),
    [
        ([1, 2, 999], UnknownIdError, "id 999 is not in the index"),
        (999, UnknownIdError, "id 999 is not in the index"),
        ([3, "4"], InvalidArgumentError, r"ids\[1\] must be an int"),
        ([3, 4.0], InvalidArgumentError, r"ids\[1\] must be an int"),
        (None, InvalidArgumentError, "ids must be an id or a sequence of ids, got NoneType"),
        (4.0, InvalidArgumentError, "ids must be an id or a sequence of ids, got float"),
    ],
)
def test_delete_is_all_or_nothing(built, ids: Any, error: type[Exception], match: str) -> None:
    path, _ = built
    expect_failure_leaves_index_unchanged(path, lambda index: index.delete(ids), error, match)


def test_get_unknown_id(built) -> None:
    path, _ = built
    expect_failure_leaves_index_unchanged(path, lambda index: index.get(12345), UnknownIdError, "id 12345")


def test_deleted_id_is_unknown(built) -> None:
    path, _ = built
    with Index.open(path) as index:
        index.delete([4])
    expect_failure_leaves_index_unchanged(
        path, lambda index: index.delete([4]), UnknownIdError, "id 4 is not"
    )
    expect_failure_leaves_index_unchanged(path, lambda index: index.get(4), UnknownIdError, "id 4 is not")


# ---- create ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rescore": ("int8", "int3")}, "unknown precision 'int3'"),
        ({"rescore": "bf16"}, "unknown precision 'bf16'"),
        ({"dim": 0}, "dim must be >= 1, got 0"),
        ({"dim": 8.5}, "dim must be an integer"),
        ({"truncate_dim": DIM + 1}, f"truncate_dim must be <= {DIM}"),
        ({"id_type": "uuid"}, "id_type must be 'int' or 'str'"),
        ({"oversampling": 0}, "oversampling must be a number >= 1"),
        ({"rescore": ("int8", "i8")}, "distinct precisions"),
        ({"binary": "int8"}, "packed byte codes"),
    ],
)
def test_create_rejects_bad_options_and_writes_nothing(tmp_path, kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"dim": DIM, **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        Index.create(tmp_path / "new", **kwargs)
    assert not (tmp_path / "new").exists()


def test_create_over_existing_index(built) -> None:
    path, _ = built
    before = snapshot(path)
    with pytest.raises(IndexExistsError, match="already exists"):
        Index.create(path, DIM)
    assert snapshot(path) == before


# ---- open: missing and damaged directories -----------------------------------------------------------------
def test_open_missing_directory(tmp_path) -> None:
    with pytest.raises(IndexNotFoundError, match="index directory not found"):
        Index.open(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError, match="no manifest.json"):
        Index.open(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


def _edit_manifest(path: Path, **changes: Any) -> None:
    """Change fields of the manifest and write it with a valid checksum (another writer's doing)."""
    doc = json.loads((path / layout.MANIFEST).read_text())
    doc.update(changes)
    layout.write_manifest(path, doc)


def _state_path(path: Path, tier: str) -> Path:
    """The calibration file the manifest names for ``tier``."""
    doc = json.loads((path / layout.MANIFEST).read_text())
    return path / next(t["state"]["file"] for t in doc["tiers"] if t["name"] == tier)


def _truncate(file: Path, drop: int = 7) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:-drop])


def _edit_catalog(path: Path, sql: str) -> None:
    db = sqlite3.connect(path / layout.CATALOG)
    with db:
        db.execute(sql)
    db.close()


CORRUPTIONS: list[tuple[str, Callable[[Path], Any], type[Exception], str]] = [
    (
        "truncated-binary",
        lambda p: _truncate(p / layout.segment_file(1, "binary")),
        CorruptIndexError,
        "truncated",
    ),
    (
        "truncated-int8",
        lambda p: _truncate(p / layout.segment_file(2, "int8")),
        CorruptIndexError,
        "truncated",
    ),
    (
        "binary-bytes-edited",
        lambda p: (p / layout.segment_file(2, "binary")).write_bytes(
            (p / layout.segment_file(2, "binary")).read_bytes()[:-1] + b"\x01"
        ),
        CorruptIndexError,
        "checksum",
    ),
    (
        "manifest-dim-text-edit",
        lambda p: (p / layout.MANIFEST).write_text(
            (p / layout.MANIFEST).read_text().replace(f'"dim": {DIM}', f'"dim": {DIM + 1}')
        ),
        CorruptIndexError,
        "checksum mismatch",
    ),
    ("manifest-dim-rechecksummed", lambda p: _edit_manifest(p, dim=DIM + 1), CorruptIndexError, "dim"),
    (
        "manifest-not-json",
        lambda p: (p / layout.MANIFEST).write_text("{"),
        CorruptIndexError,
        "not valid JSON",
    ),
    ("manifest-tiers", lambda p: _edit_manifest(p, tiers=[]), CorruptIndexError, "missing or invalid fields"),
    ("format-version", lambda p: _edit_manifest(p, format_version=2), FormatVersionError, "format_version 2"),
    (
        "format-version-text-edit",
        lambda p: (p / layout.MANIFEST).write_text(
            (p / layout.MANIFEST).read_text().replace('"format_version": 1', '"format_version": 99')
        ),
        FormatVersionError,
        "format_version 99",
    ),
    (
        "format-name",
        lambda p: _edit_manifest(p, format="other"),
        CorruptIndexError,
        "not a quantsearch manifest",
    ),
    ("catalog-deleted", lambda p: (p / layout.CATALOG).unlink(), CorruptIndexError, "catalog is missing"),
    (
        "catalog-garbage",
        lambda p: (p / layout.CATALOG).write_bytes(b"x" * 4096),
        CorruptIndexError,
        "catalog",
    ),
    (
        "catalog-no-tables",
        lambda p: _edit_catalog(p, "DROP TABLE segments"),
        CorruptIndexError,
        "lacks its tables",
    ),
    (
        "catalog-first-segment-row-gone",
        lambda p: _edit_catalog(p, "DELETE FROM segments WHERE seg_id = 1"),
        CorruptIndexError,
        "starts at row 30, expected 0",
    ),
    (
        "catalog-last-segment-row-gone",
        lambda p: _edit_catalog(p, "DELETE FROM segments WHERE seg_id = 2"),
        CorruptIndexError,
        "rows outside the stored segments",
    ),
    (
        "binary-deleted",
        lambda p: (p / layout.segment_file(1, "binary")).unlink(),
        CorruptIndexError,
        "missing",
    ),
    ("int8-deleted", lambda p: (p / layout.segment_file(2, "int8")).unlink(), CorruptIndexError, "missing"),
    (
        "state-deleted",
        lambda p: _state_path(p, "int8").unlink(),
        CorruptIndexError,
        "state of tier 'int8' is missing",
    ),
    (
        "state-truncated",
        lambda p: _truncate(_state_path(p, "binary")),
        CorruptIndexError,
        "state of tier 'binary' does not match its checksum",
    ),
]


@pytest.mark.parametrize(("case", "damage", "error", "match"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_open_damaged_index(
    built, case: str, damage: Callable[[Path], Any], error: type[Exception], match: str
) -> None:
    path, _ = built
    damage(path)
    before = snapshot(path)
    for _ in range(2):  # fails the same way every time, and changes nothing
        with pytest.raises(error, match=match) as info:
            Index.open(path)
        assert isinstance(info.value, CorruptIndexError)
        assert snapshot(path) == before


def test_every_manifest_byte_is_checked(built) -> None:
    path, _ = built
    manifest = path / layout.MANIFEST
    original = manifest.read_bytes()
    rng = np.random.default_rng(0)
    for pos in range(len(original)):
        damaged = bytearray(original)
        damaged[pos] ^= 1 << int(rng.integers(0, 7))  # flip one of the low 7 bits: stays ASCII
        manifest.write_bytes(bytes(damaged))
        with pytest.raises(CorruptIndexError):
            Index.open(path)
    manifest.write_bytes(original)
    with Index.open(path) as index:
        assert len(index) == N


class _FailingCommit:
    """Wraps the catalog's sqlite connection so that the next COMMIT fails (disk full, I/O error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.failed = False

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_failed_commit_stores_nothing(built) -> None:
    path, _ = built
    index = Index.open(path)
    results = run_searches(index)
    real = index._catalog._db
    index._catalog._db = _FailingCommit(real)  # type: ignore[assignment]
    with pytest.raises(StorageError, match="injected"):
        index.add(X, ids=[100, 101, 102, 103])
    assert index._catalog._db.failed  # type: ignore[attr-defined]
    assert len(index) == N and 100 not in index and run_searches(index) == results
    assert not list((path / "segments").glob("00000003.*"))
    index.delete([0])  # the catalog is usable again: no transaction was left open
    index._catalog._db = real
    index.close()
    with Index.open(path) as reopened:
        assert len(reopened) == N - 1 and 100 not in reopened and 0 not in reopened
        assert reopened.info()["segments"] == 2


def test_disk_full_during_segment_write_stores_nothing(built, monkeypatch) -> None:
    path, _ = built

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    def add_on_full_disk(index: Index) -> None:
        monkeypatch.setattr(layout.os, "fsync", no_space)
        try:
            index.add(X, ids=[100, 101, 102, 103])
        finally:
            monkeypatch.undo()

    expect_failure_leaves_index_unchanged(path, add_on_full_disk, StorageError, "No space left on device")


@pytest.mark.parametrize(
    "tier_edit",
    [
        {"quantizer": {"kind": "no-such-quantizer", "params": {}}},
        {"quantizer": {"kind": "scalar", "params": {"x": 1}}},
    ],
)
def test_manifest_with_invalid_quantizer_is_corrupt(built, tier_edit: dict[str, Any]) -> None:
    path, _ = built
    doc = json.loads((path / layout.MANIFEST).read_text())
    doc["tiers"][1].update(tier_edit)
    _edit_manifest(path, tiers=doc["tiers"])
    with pytest.raises(CorruptIndexError, match="invalid tier"):
        Index.open(path)
