"""Regression tests of issue 18 in the library: poison documents, foreign exceptions, read-only and
stale indexes, atomic create, auto-id overflow. Each failure is our exception type and leaves the
index as it was; each success is checked against a brute-force reference."""

from __future__ import annotations

import fcntl
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import nested_dict, unit_vectors
from quantsearch import Index
from quantsearch.exceptions import (
    CorruptIndexError,
    IndexExistsError,
    InvalidArgumentError,
    NonFiniteError,
    QuantsearchError,
    ReadOnlyIndexError,
    StorageError,
)
from quantsearch.index import layout
from quantsearch.index.documents import MAX_METADATA_BYTES, MAX_METADATA_DEPTH
from test_index_errors import snapshot

DIM = 16
N = 40


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A closed index: ids 0..N-1 in two segments, int8 tier, texts and metadata."""
    x = unit_vectors(N, DIM, seed=3)
    with Index.create(tmp_path / "idx", DIM, calibration=x) as index:
        index.add(x[:20], texts=[f"t{i}" for i in range(20)], metadata=[{"i": i} for i in range(20)])
        index.add(x[20:], metadata=[{"i": i} for i in range(20, N)])
    return tmp_path / "idx", x


def brute_force_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q.astype(np.float64) @ x.astype(np.float64).T), axis=1, kind="stable")[:, :k]


# ---- (1) poison documents ------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [MAX_METADATA_DEPTH + 1, 300, 5000])
def test_deep_metadata_is_refused(built, depth: int) -> None:
    path, x = built
    before = snapshot(path)
    with Index.open(path) as index, pytest.raises(InvalidArgumentError, match="nested more than 32 levels"):
        index.add(x[:1], metadata=[nested_dict(depth)])
    assert snapshot(path) == before


def test_metadata_at_the_caps_round_trips(built) -> None:
    path, x = built
    deep = nested_dict(MAX_METADATA_DEPTH)
    big = {"s": "x" * (MAX_METADATA_BYTES - 20)}
    with Index.open(path) as index:
        ids = index.add(x[:2], metadata=[deep, big])
        assert index.get(ids[0])["metadata"] == deep and index.get(ids[1])["metadata"] == big
        with pytest.raises(InvalidArgumentError, match="bytes as JSON, over the limit"):
            index.add(x[:1], metadata=[{"s": "x" * MAX_METADATA_BYTES}])
        assert len(index) == N + 2


def test_vectors_near_float32_max_are_refused(built) -> None:
    path, x = built
    before = snapshot(path)
    huge = np.full((1, DIM), 3e38, np.float32)
    with Index.open(path) as index:
        with pytest.raises(NonFiniteError, match="overflow float32"):
            index.add(huge)
        with pytest.raises(NonFiniteError, match="overflow float32"):
            index.search(huge, k=3)
        with pytest.raises(NonFiniteError, match="row 1 has L2 norm"):
            index.search(np.vstack([x[:1], huge]), k=3)
    assert snapshot(path) == before


def test_large_but_allowed_norms_give_finite_exact_scores(tmp_path: Path) -> None:
    x = unit_vectors(50, DIM, seed=5) * np.float32(4e18)  # norm 4e18, under the 1e19 limit
    q = unit_vectors(4, DIM, seed=6) * np.float32(4e18)
    with Index.create(tmp_path / "big", DIM, rescore=("float32",), calibration=x) as index:
        index.add(x)
        res = index.search(q, k=5, oversampling=50)
    assert np.isfinite(res.scores).all()
    np.testing.assert_array_equal(res.ids, brute_force_top(x, q, 5))
    expected = np.take_along_axis(q.astype(np.float64) @ x.astype(np.float64).T, res.ids, axis=1)
    np.testing.assert_allclose(res.scores, expected, rtol=1e-5)


# ---- (2) auto-id overflow ---------------------------------------------------------------------------
def test_auto_ids_after_the_largest_id_are_our_error(built) -> None:
    path, x = built
    with Index.open(path) as index:
        assert index.add(x[:1], ids=[2**63 - 1]) == [2**63 - 1]
    before = snapshot(path)
    with Index.open(path) as index:
        with pytest.raises(InvalidArgumentError, match="no automatic ids are left"):
            index.add(x[:2])
        assert index.add(x[:1], ids=[7_000]) == [7_000]  # explicit ids still work
        assert len(index) == N + 2
    with Index.open(path) as index, pytest.raises(InvalidArgumentError, match="no automatic ids are left"):
        index.add(x[:1])
    assert set(snapshot(path)) == set(before) | {layout.segment_file(4, t) for t in ("binary", "int8")}


# ---- (6) foreign exceptions from damaged files ------------------------------------------------------------
def _sql(path: Path, statement: str) -> None:
    db = sqlite3.connect(path / layout.CATALOG)
    with db:
        db.execute(statement)
    db.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [("file", "../../outside.npz"), ("file", "/etc/passwd"), ("file", "state/../x.npz"), ("name", "../x")],
)
def test_manifest_paths_outside_the_index_are_corrupt(built, field: str, value: str) -> None:
    path, _ = built
    doc = json.loads((path / layout.MANIFEST).read_text())
    tier = next(t for t in doc["tiers"] if t.get("state"))
    if field == "file":
        tier["state"]["file"] = value
    else:
        tier["name"] = value
    layout.write_manifest(path, doc)  # a valid checksum: only the path is wrong
    with pytest.raises(CorruptIndexError, match="missing or invalid fields"):
        Index.open(path)


def test_garbled_npy_header_is_corrupt(built) -> None:
    path, _ = built
    file = path / layout.segment_file(2, "int8")  # memory-mapped tier: its header is parsed at open
    data = bytearray(file.read_bytes())
    start = data.index(b"{")
    data[start : start + 12] = b"{'descr': (("  # an unterminated expression (tokenize.TokenError)
    file.write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match="cannot be read"):
        Index.open(path)


@pytest.mark.parametrize(
    ("statement", "call", "match"),
    [
        ("UPDATE segments SET files = 'not json' WHERE seg_id = 1", "open", "cannot be read"),
        ("UPDATE segments SET files = '[1, 2]' WHERE seg_id = 1", "open", "invalid segment"),
        (
            'UPDATE segments SET files = \'{"binary": {"path": "../../etc/passwd", "bytes": 1, '
            '"sha256": "x"}}\' WHERE seg_id = 1',
            "open",
            "invalid segment",
        ),
        ("INSERT OR REPLACE INTO meta VALUES ('generation', 'two')", "open", "non-integer generation"),
        ("UPDATE docs SET metadata = '{not json' WHERE ext_id = 25", "get", "cannot be read"),
        ("UPDATE docs SET metadata = '[1]' WHERE ext_id = 25", "search", "invalid document"),
        ("INSERT OR REPLACE INTO meta VALUES ('next_id', '1e3')", "add", "non-integer next_id"),
    ],
)
def test_damaged_catalog_values_are_corrupt(built, statement: str, call: str, match: str) -> None:
    path, x = built
    _sql(path, statement)
    with pytest.raises(CorruptIndexError, match=match):
        index = Index.open(path)
        with index:
            if call == "get":
                index.get(25)
            elif call == "search":
                index.search(x[25], k=N)
            elif call == "add":
                index.add(x[:1])


def test_corrupted_sqlite_pages_are_corrupt(built) -> None:
    path, x = built
    catalog = path / layout.CATALOG
    data = bytearray(catalog.read_bytes())
    page = 4096 if len(data) > 4096 * 2 else 1024
    data[page + 8 :] = b"\xa5" * (len(data) - page - 8)  # every page but the first: garbage
    catalog.write_bytes(bytes(data))
    with pytest.raises(QuantsearchError) as info, Index.open(path) as index:
        index.search(x[0], k=3)
        index.get(0)
    assert isinstance(info.value, (CorruptIndexError, StorageError))


# ---- (4) read-only open -----------------------------------------------------------------------------------
def _check_read_only(index: Index, x: np.ndarray) -> None:
    assert index.readonly
    res = index.search(x[:3], k=5, oversampling=N)
    np.testing.assert_array_equal(res.ids[:, 0], [0, 1, 2])  # each vector finds itself first
    assert index.get(3)["metadata"] == {"i": 3} and len(index) == N
    assert index.info()["count"] == N
    index.verify()
    for write in (
        lambda: index.add(x[:1]),
        lambda: index.delete([0]),
        lambda: index.compact(),
        lambda: index.calibrate(x),
    ):
        with pytest.raises(ReadOnlyIndexError, match="read-only"):
            write()


def test_read_only_open_searches_and_refuses_writes(built) -> None:
    path, x = built
    (path / layout.LOCK).unlink()
    before = snapshot(path)
    with Index.open(path, readonly=True) as index:
        _check_read_only(index, x)
    assert snapshot(path) == before
    assert not (path / layout.LOCK).exists()  # not even the lock file was made


def test_read_only_is_detected_when_files_cannot_be_written(built, monkeypatch) -> None:
    path, x = built
    # root may write anything, so the permission check is what is replaced here
    monkeypatch.setattr("quantsearch.index.lifecycle.os.access", lambda p, mode: False)
    with Index.open(path) as index:
        _check_read_only(index, x)
    monkeypatch.undo()
    with Index.open(path) as index:
        assert not index.readonly and index.delete([0]) == 1


def test_lock_file_that_cannot_be_made_is_read_only_error(built, monkeypatch) -> None:
    path, x = built

    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    with Index.open(path) as index:
        monkeypatch.setattr("quantsearch.index.storage.os.open", refuse)
        with pytest.raises(ReadOnlyIndexError, match="cannot be written"):
            index.add(x[:1])
        monkeypatch.undo()
        assert len(index) == N


# ---- (7) stale readers ------------------------------------------------------------------------------------
def test_stale_reader_catches_up_after_another_process_compacts(built) -> None:
    path, x = built
    reader = Index.open(path)
    assert reader.info()["segments"] == 2
    with Index.open(path) as writer:
        writer.delete(list(range(10)))
        assert writer.compact() == 10  # removes the files the reader's view names
    assert not (path / layout.segment_file(1, "binary")).exists()
    info = reader.info()
    assert info["count"] == N - 10 and info["segments"] == 1 and info["deleted"] == 0
    reader.verify()  # no false alarm: the view is refreshed, then checked
    res = reader.search(x[10:13], k=3, oversampling=N)
    np.testing.assert_array_equal(res.ids[:, 0], [10, 11, 12])
    assert Index.metadata(path)["count"] == N - 10
    reader.close()


def test_verify_still_reports_a_really_missing_file(built) -> None:
    path, _ = built
    with Index.open(path) as index:
        (path / layout.segment_file(2, "int8")).unlink()
        with pytest.raises(CorruptIndexError, match="does not match its checksum"):
            index.verify()


# ---- (9) create: complete or nothing ------------------------------------------------------------------
def test_failed_create_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(layout.os, "fsync", no_space)
    with pytest.raises(StorageError, match="No space left"):
        Index.create(tmp_path / "new", DIM, calibration=unit_vectors(30, DIM))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # neither the index nor its hidden build directory
    with pytest.raises(NotImplementedError):  # a calibration that fails: same
        Index.create(tmp_path / "new", DIM, calibration=_Exploding())
    assert list(tmp_path.iterdir()) == []
    with Index.create(tmp_path / "new", DIM, calibration=unit_vectors(30, DIM)) as index:
        assert index.is_calibrated and len(index) == 0


class _Exploding:
    """An array-like whose conversion fails with a foreign exception, after create has begun."""

    def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
        raise NotImplementedError("boom")


def test_directory_left_without_manifest_can_be_created_again(tmp_path: Path) -> None:
    target = tmp_path / "idx"
    (target / layout.SEGMENTS_DIR).mkdir(parents=True)
    sqlite3.connect(target / layout.CATALOG).close()  # what a crash during an old create left
    (target / layout.LOCK).touch()
    with Index.create(target, DIM, calibration=unit_vectors(30, DIM)) as index:
        index.add(unit_vectors(5, DIM))
        assert len(index) == 5
    with Index.open(target) as index:
        assert len(index) == 5


_KILLED_CREATE = """
import os, signal, sys
from pathlib import Path
from quantsearch.index.lifecycle import create_directory

def populate(tmp: Path) -> None:
    (tmp / "half-written").write_bytes(b"x" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)

create_directory(Path(sys.argv[1]), populate)
"""


def test_create_clears_what_a_killed_create_left_but_not_a_live_one(tmp_path: Path) -> None:
    target = tmp_path / "idx"
    done = subprocess.run([sys.executable, "-c", _KILLED_CREATE, str(target)], check=False)
    assert done.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".creating")]
    assert len(left) == 1 and (left[0] / "half-written").exists() and not target.exists()
    # a create in progress elsewhere: its lock is held, so its directory must survive
    alive = tmp_path / ".idx.live.creating"
    alive.mkdir()
    with open(f"{alive}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with Index.create(target, DIM, calibration=unit_vectors(30, DIM)) as index:
            assert len(index) == 0
        assert alive.exists() and not left[0].exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".idx.live.creating", ".idx.live.creating.lock", "idx"]


def test_create_never_clears_foreign_files(tmp_path: Path) -> None:
    target = tmp_path / "idx"
    target.mkdir()
    sqlite3.connect(target / layout.CATALOG).close()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(IndexExistsError, match="not an empty directory"):
        Index.create(target, DIM)
    assert (target / "notes.txt").read_text() == "mine"


def test_create_into_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with Index.create(tmp_path / "empty", DIM) as index:
        assert len(index) == 0
    assert json.loads((tmp_path / "empty" / layout.MANIFEST).read_text())["dim"] == DIM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# ---- (4) a real read-only mount (needs a private mount namespace: skipped where that is refused) -------
RO_CHILD = """
import sys
import numpy as np
from quantsearch import Index
from quantsearch.cli import main
from quantsearch.exceptions import ReadOnlyIndexError

path = sys.argv[1]
x = np.load(sys.argv[2])
with Index.open(path) as index:  # detected: the mount is read-only
    assert index.readonly
    res = index.search(x[:3], k=5, oversampling=100)
    assert res.ids[:, 0].tolist() == [0, 1, 2], res.ids
    assert index.get(3)["metadata"] == {"i": 3} and index.info()["count"] == len(x)
    index.verify()
    try:
        index.add(x[:1])
    except ReadOnlyIndexError as exc:
        print("refused:", exc)
    else:
        raise SystemExit("add was not refused")
assert Index.metadata(path)["count"] == len(x)
assert main(["info", path, "--verify"]) == 0
assert main(["delete", path, "1"]) == 2
print("read-only mount: ok")
"""


def _can_mount_read_only(tmp_path: Path) -> bool:
    import shutil
    import subprocess

    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("unshare") is None:
        return False
    script = f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && ! touch {probe}/x"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True).returncode == 0


def test_real_read_only_mount(built, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    if not _can_mount_read_only(tmp_path):
        pytest.skip("no private mount namespace here (unshare -m / mount refused)")
    path, x = built
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "child.py").write_text(RO_CHILD)
    src = Path(__file__).resolve().parents[1] / "src"
    script = (
        f"mount --bind {path} {path} && mount -o remount,bind,ro {path} && "
        f"{sys.executable} {tmp_path / 'child.py'} {path} {tmp_path / 'x.npy'}"
    )
    res = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "read-only mount: ok" in res.stdout and "cannot be written" in res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1  # the refused delete's one line
