"""On-disk layout of a sharded index: a shard manifest beside N ordinary index directories.

```
<root>/
  shards.json        the shard manifest (format, number of shards, routing, calibration fingerprint)
  shard-0000/        an ordinary quantsearch index: ``Index.open("<root>/shard-0000")`` works alone
  shard-0001/
  ...
```

A document lives in shard ``shard_of(id, n_shards)``: the first 8 bytes of the BLAKE2b digest of
its typed id, modulo the number of shards. The hash is fixed by the manifest's ``routing`` name, so
a later release never moves an existing document. Every shard holds the same fitted quantizers
(one calibration); the manifest records their fingerprint and :func:`read_shard_manifest` callers
check it, so scores compare across shards.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import CorruptIndexError, FormatVersionError, IndexNotFoundError, InvalidArgumentError

__all__ = [
    "SHARD_MANIFEST",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ROUTING",
    "ShardLayout",
    "shard_dir_name",
    "shard_of",
    "route",
    "is_sharded",
    "read_shard_manifest",
    "write_shard_manifest",
    "calibration_fingerprint",
]

SHARD_MANIFEST = "shards.json"
FORMAT_NAME = "quantsearch-sharded"
FORMAT_VERSION = 1
#: name of the routing function; stored in the manifest so that an index keeps its placement
ROUTING = "blake2b64-mod"


def shard_dir_name(i: int) -> str:
    """Directory name of shard ``i`` (``shard-0000``)."""
    return f"shard-{i:04d}"


def _id_key(doc_id: int | str) -> bytes:
    # typed: the int 7 and the str "7" are different ids and may land in different shards
    if isinstance(doc_id, str):
        return b"s:" + doc_id.encode("utf-8")
    return b"i:" + str(int(doc_id)).encode("ascii")


def shard_of(doc_id: int | str, n_shards: int) -> int:
    """Shard number in ``[0, n_shards)`` of a document id (stable across runs and machines)."""
    digest = hashlib.blake2b(_id_key(doc_id), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def route(ids: Iterable[int | str], n_shards: int) -> np.ndarray:
    """Shard numbers (n,) int64 of a batch of ids, in order."""
    return np.fromiter((shard_of(i, n_shards) for i in ids), dtype=np.int64)


def calibration_fingerprint(states: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """sha256 over every tier's fitted arrays (names, dtypes, shapes and bytes), in a fixed order."""
    h = hashlib.sha256()
    for tier in sorted(states):
        for key in sorted(states[tier]):
            arr = np.ascontiguousarray(states[tier][key])
            h.update(f"{tier}/{key}/{arr.dtype.str}/{arr.shape};".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


class ShardLayout:
    """The parsed shard manifest of a sharded index directory.

    Attributes
    ----------
    root : Path
    n_shards : int
    dim : int
    id_type : {"int", "str"}
    model : str or None
    fingerprint : str
        :func:`calibration_fingerprint` of the quantizers every shard shares.
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.n_shards = int(manifest["n_shards"])
        self.dim = int(manifest["dim"])
        self.id_type = manifest["id_type"]
        self.model = manifest.get("model")
        self.fingerprint = str(manifest["calibration_sha256"])

    @property
    def shard_dirs(self) -> list[Path]:
        """Directory of each shard, in shard order."""
        return [self.root / name for name in self.manifest["shards"]]

    def shard_of(self, doc_id: int | str) -> int:
        return shard_of(doc_id, self.n_shards)

    def route(self, ids: Sequence[int | str]) -> np.ndarray:
        return route(ids, self.n_shards)

    def __repr__(self) -> str:
        return f"ShardLayout({str(self.root)!r}, n_shards={self.n_shards}, dim={self.dim})"


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a sharded index directory (holds a shard manifest)."""
    return (Path(path) / SHARD_MANIFEST).is_file()


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_shard_manifest(
    root: Path, *, n_shards: int, dim: int, id_type: str, model: str | None, fingerprint: str
) -> ShardLayout:
    """Write ``shards.json`` atomically (temp file, fsync, rename, directory fsync)."""
    body: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "n_shards": n_shards,
        "routing": ROUTING,
        "shards": [shard_dir_name(i) for i in range(n_shards)],
        "dim": dim,
        "id_type": id_type,
        "model": model,
        "calibration_sha256": fingerprint,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    data = json.dumps({**body, "checksum": _checksum(body)}, indent=2).encode()
    fd, tmp = tempfile.mkstemp(prefix=".shards.", dir=root)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / SHARD_MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return ShardLayout(root, body)


def read_shard_manifest(path: str | os.PathLike[str]) -> ShardLayout:
    """Read and check ``<path>/shards.json``.

    Raises
    ------
    IndexNotFoundError
        No shard manifest at ``path``.
    CorruptIndexError
        The manifest is not valid JSON, was edited (checksum), or names shards that are missing.
    FormatVersionError
        Written by a newer release, or with an unknown routing function.
    """
    root = Path(path)
    file = root / SHARD_MANIFEST
    if not file.is_file():
        raise IndexNotFoundError(f"no sharded index at {root} ({SHARD_MANIFEST} not found)")
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
        checksum = body.pop("checksum")
    except (ValueError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"{file} is not a valid shard manifest: {exc}") from None
    if checksum != _checksum(body):
        raise CorruptIndexError(f"{file} does not match its checksum (edited or damaged)")
    if body.get("format") != FORMAT_NAME:
        raise CorruptIndexError(f"{file} is not a {FORMAT_NAME} manifest")
    if body.get("format_version") != FORMAT_VERSION or body.get("routing") != ROUTING:
        raise FormatVersionError(
            f"{file} has format_version {body.get('format_version')!r} and routing {body.get('routing')!r}; "
            f"this release reads version {FORMAT_VERSION} with routing {ROUTING!r}"
        )
    layout = ShardLayout(root, body)
    missing = [str(d) for d in layout.shard_dirs if not d.is_dir()]
    if missing:
        raise CorruptIndexError(f"sharded index {root} lacks shard directories: {', '.join(missing)}")
    return layout


def check_n_shards(value: Any) -> int:
    """``n_shards`` as a positive int (at most 4096), else :class:`InvalidArgumentError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 4096:
        raise InvalidArgumentError(f"n_shards must be an int in [1, 4096], got {value!r}")
    return int(value)
