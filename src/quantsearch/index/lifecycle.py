"""Where an index directory comes from and how it may be used: atomic creation, read-only detection.

``create`` builds the whole directory (catalog, manifest, calibration) in a hidden sibling and renames
it into place, so a crash or a full disk leaves either a complete index or no index: never a
directory without a manifest. A directory that an interrupted create of an earlier version left
behind (only our file names, no manifest) is cleared and created again, and so are the hidden
siblings of creates that were killed (their lock is free).

An index whose files this process may not write (a read-only mount, another user's files) is opened
read-only: searching works, and every write raises :class:`ReadOnlyIndexError`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from glob import escape as glob_escape
from pathlib import Path

from ..exceptions import IndexExistsError, StorageError
from . import layout

logger = logging.getLogger(__name__)

_CREATING = ".creating"
#: names an interrupted create may leave in the target directory (never a manifest)
_OURS = {
    layout.CATALOG,
    f"{layout.CATALOG}-wal",
    f"{layout.CATALOG}-shm",
    f"{layout.CATALOG}-journal",
    layout.LOCK,
    layout.STATE_DIR,
    layout.SEGMENTS_DIR,
}


def is_writable(root: Path) -> bool:
    """Whether this process can write the index at ``root`` (the directory and its catalog)."""
    paths = [
        root,
        root / layout.CATALOG,
        root / layout.LOCK,
        root / layout.SEGMENTS_DIR,
        root / layout.STATE_DIR,
    ]
    return all(os.access(p, os.W_OK) for p in paths if p.exists())


def create_directory(root: Path, populate: Callable[[Path], None]) -> None:
    """Make ``root`` an index in one step: ``populate`` fills a hidden sibling, which is renamed.

    Raises :class:`IndexExistsError` when ``root`` is anything but missing, empty, or the remains of
    an interrupted create; :class:`StorageError` when the file system refuses. Whatever
    ``populate`` raises is raised after its directory is removed.
    """
    _check_target(root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        _clear_killed_creates(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=_CREATING, dir=root.parent))
        # held until the rename: a later create of the same name sees this one is alive
        lock_fd = os.open(f"{tmp}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
    except OSError as exc:
        raise StorageError(f"creating {root} failed: {exc.strerror or exc}") from exc
    try:
        populate(tmp)
        try:
            layout.fsync_dir(tmp)
            os.rename(tmp, root)  # atomic; replaces an empty directory
            layout.fsync_dir(root.parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise IndexExistsError(f"{root} already exists and is not an empty directory") from None
            raise StorageError(f"creating {root} failed: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        Path(f"{tmp}.lock").unlink(missing_ok=True)
        os.close(lock_fd)


#: a hidden create directory without its lock file is left alone this long (it may be just born)
_UNLOCKED_GRACE_S = 600.0


def _clear_killed_creates(root: Path) -> None:
    """Remove the hidden siblings that killed creates of ``root`` left (their lock is not held)."""
    for tmp in root.parent.glob(f".{glob_escape(root.name)}.*{_CREATING}"):
        lock = Path(f"{tmp}.lock")
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            # no lock file: a create of an older version, or one between mkdtemp and its lock
            try:
                stale = time.time() - tmp.stat().st_mtime > _UNLOCKED_GRACE_S
            except OSError:
                continue
            if stale:
                shutil.rmtree(tmp, ignore_errors=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live create holds it
        else:
            logger.warning("removing %s, left by a create that was killed", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _check_target(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise IndexExistsError(f"{root} already exists and is not an empty directory")
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        raise StorageError(f"reading {root} failed: {exc.strerror or exc}") from exc
    if not entries:
        return
    leftover = all(e.name in _OURS or (e.name.startswith(".") and e.name.endswith(".tmp")) for e in entries)
    if (root / layout.MANIFEST).exists() or not leftover:
        raise IndexExistsError(f"{root} already exists and is not an empty directory")
    # no manifest and only our names: an interrupted create (of an earlier version); clear it
    logger.warning("%s holds the remains of an interrupted create (no manifest): clearing it", root)
    try:
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(
            f"clearing the interrupted create in {root} failed: {exc.strerror or exc}"
        ) from exc
