"""The corruption matrix: every file of an index damaged in several ways.

For each scenario the library (open, search, get, info, verify, metadata) either works or raises
one of our exception types, never a foreign one; damage to the manifest, the calibration state or a
segment file is always detected (by ``open`` or ``verify``). The CLI (``info``, ``info --verify``,
``search``, ``delete``, ``compact``) exits 0 or 2, with at most one line on stderr.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import unit_vectors
from quantsearch import Index
from quantsearch.cli import main
from quantsearch.exceptions import CorruptIndexError, QuantsearchError
from quantsearch.index import layout

DIM = 12
N = 30


def _build(root: Path) -> Path:
    x = unit_vectors(N, DIM, seed=21)
    with Index.create(root, DIM, rescore=("int8", "float16"), calibration=x) as index:
        index.add(x[:15], texts=[f"t{i}" for i in range(15)], metadata=[{"i": i} for i in range(15)])
        index.add(x[15:], metadata=[{"i": i} for i in range(15, N)])
    return root


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    )


def _flip(offset: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        if data:
            data[offset(len(data)) % len(data)] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


def _truncate(keep: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])

    return damage


def _garbage(path: Path) -> None:
    size = max(path.stat().st_size, 1)
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())


def _to_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _symlink_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "deleted": lambda p: p.unlink(),
    "empty": _truncate(lambda n: 0),
    "half": _truncate(lambda n: n // 2),
    "tail-cut": _truncate(lambda n: n - 2),
    "appended": lambda p: p.write_bytes(p.read_bytes() + b"\x00garbage\n"),
    "flip-header": _flip(lambda n: 8),
    "flip-middle": _flip(lambda n: n // 2),
    "flip-last": _flip(lambda n: n - 1),
    "garbage": _garbage,
    "directory": _to_directory,
    "symlink-loop": _symlink_loop,
}
#: files whose every change must be detected: self-checksummed or checksummed in the catalog
MUST_DETECT = ("manifest.json", "state/", "segments/")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("matrix") / "idx")


def _scenarios() -> list[tuple[str, str]]:
    root = _build(Path(__import__("tempfile").mkdtemp(prefix="qs-matrix-")) / "idx")
    files = [_generic(f) for f in _files(root)]
    shutil.rmtree(root.parent)
    return [(f, d) for f in files for d in DAMAGES]


def _generic(rel: str) -> str:
    """``state/int8.<nonce>.npz`` -> ``state/int8.*.npz`` (state names are random per index)."""
    parts = rel.split("/")
    if parts[0] == layout.STATE_DIR:
        tier, _, ext = parts[1].split(".")
        return f"{layout.STATE_DIR}/{tier}.*.{ext}"
    return rel


SCENARIOS = _scenarios()


def _library_outcome(path: Path) -> list[str]:
    """Run every read the library offers; the names of our errors raised (foreign ones propagate)."""
    errors: list[str] = []
    x = unit_vectors(N, DIM, seed=21)

    def step(call: Callable[[], object]) -> bool:
        try:
            call()
            return True
        except QuantsearchError as exc:
            errors.append(type(exc).__name__ + (":corrupt" if isinstance(exc, CorruptIndexError) else ""))
            return False

    step(lambda: Index.metadata(path))
    holder: list[Index] = []
    if step(lambda: holder.append(Index.open(path))):
        index = holder[0]
        try:
            step(lambda: index.search(x[:3], k=5, oversampling=N))
            step(lambda: index.search(x[:3], k=5, stages=("float16",)))
            for i in (0, 14, 29):
                step(lambda i=i: index.get(i))
            step(index.info)
            step(index.verify)
        finally:
            index.close()
    return errors


@pytest.mark.parametrize(("rel", "damage"), SCENARIOS, ids=[f"{f}-{d}" for f, d in SCENARIOS])
def test_damage_gives_our_errors(template: Path, tmp_path: Path, capsys, rel: str, damage: str) -> None:
    path = tmp_path / "idx"
    shutil.copytree(template, path, symlinks=True)
    target = next(path.glob(rel))
    DAMAGES[damage](target)

    errors = _library_outcome(path)
    if rel.startswith(MUST_DETECT):
        detected = [e for e in errors if e.endswith(":corrupt") or e == "IndexNotFoundError"]
        assert detected, (rel, damage, errors)  # a manifest gone: the directory is not an index

    for args in (["info"], ["info", "--verify"], ["search", "--", "q"], ["delete", "--", "3"], ["compact"]):
        argv = [args[0], str(path), *[a for a in args[1:] if a != "--"]]
        code = main(argv)
        _, err = capsys.readouterr()
        assert code in (0, 2), (argv, err)
        assert len(err.strip().splitlines()) <= 1, (argv, err)
        assert "internal error" not in err, (argv, err)


def test_matrix_covers_every_file(template: Path) -> None:
    files = {_generic(f) for f in _files(template)}
    assert files == {f for f, _ in SCENARIOS}
    assert {f.split("/")[0] for f in files} >= {
        "manifest.json",
        "catalog.sqlite",
        "state",
        "segments",
        "LOCK",
    }
    assert len(SCENARIOS) == len(files) * len(DAMAGES)
