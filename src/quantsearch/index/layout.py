"""On-disk layout of an index directory: file names (defined only here), atomic writes, the manifest.

::

    DIR/
      manifest.json                 versioned configuration, self-checksummed (edits are detected)
      catalog.sqlite                ids, payload and the list of committed segments (the commit point)
      LOCK                          advisory lock held by the one writer
      state/<tier>.<nonce>.npz      fitted quantizer state (calibration), checksummed in the manifest
      segments/<seg>.<tier>.npy     codes of one added batch, one file per tier

A batch becomes visible only when the SQLite transaction that lists its segment commits; segment
files are complete (fsynced and renamed into place) before that, so a crash at any point leaves the
last committed state, plus orphan files that the next writer removes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
import tokenize
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..exceptions import CorruptIndexError, FormatVersionError, IndexNotFoundError, StorageError

FORMAT_NAME = "quantsearch-index"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
CATALOG = "catalog.sqlite"
LOCK = "LOCK"
STATE_DIR = "state"
SEGMENTS_DIR = "segments"


def state_file(tier: str) -> str:
    """A fresh path (relative to the index) for a tier's fitted quantizer state.

    Each calibration writes new names, so the files the current manifest names are never
    overwritten: a crash before the new manifest lands leaves the old state intact.
    """
    return f"{STATE_DIR}/{tier}.{uuid.uuid4().hex[:12]}.npz"


def segment_file(seg_id: int, tier: str) -> str:
    """Path (relative to the index) of one segment's codes for one tier."""
    return f"{SEGMENTS_DIR}/{seg_id:08d}.{tier}.npy"


def parse_segment_file(name: str) -> tuple[int, str] | None:
    """Inverse of :func:`segment_file` for a bare file name; None for foreign files."""
    parts = name.split(".")
    if len(parts) != 3 or parts[2] != "npy" or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1]


# ---- reading ----------------------------------------------------------------------------------
#: what numpy's readers raise on damaged bytes: a garbled .npy header is parsed with ast.literal_eval
#: (SyntaxError, tokenize.TokenError, MemoryError on absurd shapes); zip and pickle checks of .npz
_DAMAGE = (
    ValueError,
    TypeError,
    KeyError,
    EOFError,
    SyntaxError,
    MemoryError,
    RecursionError,
    OverflowError,
    tokenize.TokenError,
    zipfile.BadZipFile,
)


@contextlib.contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Map every failure of reading one of the index's files to our exception types.

    Damaged or missing bytes are a :class:`CorruptIndexError`; an error of the file system that
    is not about the bytes (permissions, I/O) is a :class:`StorageError`.
    """
    try:
        yield
    except OSError as exc:
        if isinstance(exc, (CorruptIndexError, StorageError)):
            raise
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP):  # not a file of ours
            raise CorruptIndexError(f"{what} {path} is missing: {exc.strerror or exc}") from None
        raise StorageError(f"reading {what} {path} failed: {exc.strerror or exc}") from None
    except _DAMAGE as exc:
        if isinstance(exc, CorruptIndexError):
            raise
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CorruptIndexError(f"{what} {path} cannot be read: {reason}") from None


# ---- atomic writes ------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> str:
    """Write a file via temp file + fsync + rename; return the sha256 of what was written.

    A reader (or a crash) sees either the old file or the complete new one, never a partial one.
    """
    tmp: str | None = None
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            write(hashing)  # type: ignore[arg-type]
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"writing {path} failed: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return hashing.hexdigest()


class _HashingWriter:
    """File-like wrapper that hashes everything written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        return self._raw.write(view)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def __getattr__(self, name: str) -> Any:  # np.save may probe attributes of the file
        return getattr(self._raw, name)


def save_array_chunks(
    path: Path, shape: tuple[int, int], dtype: np.dtype, chunks: Iterable[np.ndarray]
) -> str:
    """Atomically write an .npy of ``shape`` from row chunks (bounded memory); return its sha256."""

    def write(f: IO[bytes]) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        rows = 0
        for chunk in chunks:
            block = np.ascontiguousarray(chunk, dtype=dtype)
            f.write(block.tobytes())
            rows += block.shape[0]
        if rows != shape[0]:
            raise ValueError(f"wrote {rows} rows into {path}, expected {shape[0]}")

    return atomic_write(path, write)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Atomically write a dict of arrays as .npz; return its sha256."""
    buf = io.BytesIO()  # zipfile seeks back to patch headers: build in memory, then write once
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # (numpy stubs: a key could be allow_pickle)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def read_array_checked(path: Path, sha256: str) -> np.ndarray:
    """Read an .npy file into memory with a single read, checking its sha256 on the way.

    Raises ``ValueError`` when the bytes do not match the checksum or are not a valid .npy.
    """
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError("does not match its checksum")
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    read_header = (
        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(buf)
    count = int(np.prod(shape, dtype=np.int64))
    if fortran or len(data) - buf.tell() != count * dtype.itemsize:
        raise ValueError("has an unexpected layout or size")
    return np.frombuffer(data, dtype, count, offset=buf.tell()).reshape(shape)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- manifest -----------------------------------------------------------------------------------
def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_manifest(root: Path, body: dict[str, Any]) -> None:
    """Atomically write the manifest with its checksum."""
    body = {k: v for k, v in body.items() if k != "checksum"}
    doc = dict(body, checksum=_checksum(body))
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    atomic_write(root / MANIFEST, lambda f: f.write(text.encode()))


def read_manifest(
    root: Path, *, format_name: str = FORMAT_NAME, format_version: int = FORMAT_VERSION
) -> dict[str, Any]:
    """Read and check the manifest: format name, version and checksum (other index kinds pass theirs)."""
    if not root.is_dir():
        raise IndexNotFoundError(f"index directory not found: {root}")
    path = root / MANIFEST
    if not path.is_file():
        raise IndexNotFoundError(f"not a quantsearch index (no {MANIFEST}): {root}")
    try:
        doc = json.loads(path.read_text())
    except PermissionError as exc:
        raise StorageError(f"reading {path} failed: {exc.strerror or exc}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorruptIndexError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != format_name:
        raise CorruptIndexError(f"{path} is not a quantsearch manifest (format field missing or wrong)")
    version = doc.get("format_version")
    if version != format_version:
        raise FormatVersionError(
            f"{path} has format_version {version!r}; this quantsearch reads version {format_version}"
        )
    stored = doc.pop("checksum", None)
    if stored != _checksum(doc):
        raise CorruptIndexError(f"{path} was modified outside quantsearch (checksum mismatch)")
    return doc
