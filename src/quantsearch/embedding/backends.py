"""Embedding backends: names, the model folder they run, and the on-disk cache of exported models.

A backend is the engine that runs the embedding model: ``torch`` (sentence-transformers, float32, the
reference), ``onnx`` / ``onnx-int8`` (ONNX Runtime, float32 or dynamically quantized int8 weights),
``openvino`` / ``openvino-int8`` (OpenVINO, float32 or post-training int8), ``static`` (a model2vec static
embedding distilled from the model) and ``auto`` (the fastest one that agrees with float32 on a sample of
the corpus: :func:`quantsearch.embedding.auto.select_backend`).

Everything except ``torch`` runs a model exported from the sentence-transformers folder. Exports are built
lazily, once, into ``$QUANTSEARCH_CACHE/models/<key>/``; the key hashes the model's files, the backend, the
CPU instruction set the int8 kernels were chosen for, and the versions of the libraries that made the export.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path

from quantsearch._cache import cache_root
from quantsearch.exceptions import InvalidArgumentError, MissingDependencyError

__all__ = [
    "BACKENDS",
    "Backend",
    "cpu_isa",
    "exported_model",
    "model_fingerprint",
    "parse_backend",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the export recipe changes (so older cached exports are not reused).
EXPORT_FORMAT = 1

FAST_INSTALL_HINT = 'pip install "quantsearch[fast]"'


class Backend(str, Enum):
    """An embedding backend (the value is the spelling used by the CLI and manifests)."""

    TORCH = "torch"
    ONNX = "onnx"
    ONNX_INT8 = "onnx-int8"
    OPENVINO = "openvino"
    OPENVINO_INT8 = "openvino-int8"
    STATIC = "static"
    AUTO = "auto"


#: Every accepted backend name, in the order the CLI lists them.
BACKENDS: tuple[str, ...] = tuple(b.value for b in Backend)

_ALIASES = {
    "pytorch": Backend.TORCH,
    "fp32": Backend.TORCH,
    "onnx-qint8": Backend.ONNX_INT8,
    "onnx_int8": Backend.ONNX_INT8,
    "openvino-qint8": Backend.OPENVINO_INT8,
    "openvino_int8": Backend.OPENVINO_INT8,
    "model2vec": Backend.STATIC,
}


def parse_backend(value: str | Backend | None) -> Backend:
    """The one place a backend spelling is read: None means ``torch``.

    Raises
    ------
    InvalidArgumentError
        For an unknown name or a value that is not a str.
    """
    if value is None:
        return Backend.TORCH
    if isinstance(value, Backend):
        return value
    if not isinstance(value, str):
        raise InvalidArgumentError(f"backend must be a str or None, got {type(value).__name__}")
    name = value.strip().lower()
    if name in _ALIASES:
        return _ALIASES[name]
    try:
        return Backend(name)
    except ValueError:
        raise InvalidArgumentError(f"backend must be one of {', '.join(BACKENDS)}, got {value!r}") from None


def cpu_isa() -> str:
    """The best int8 instruction set here: ``avx512_vnni``, ``avx512``, ``avx2``, ``arm64`` or ``generic``.

    The int8 exports are keyed by it: a cache shared between machines never hands one CPU's choice to another.
    """
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    if {"avx512_vnni", "avx512vnni"} & flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if "asimd" in flags or os.uname().machine in ("aarch64", "arm64"):
        return "arm64"
    return "generic"


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the names and contents of the files of a model folder (README and git files excluded).

    Memoised per process on (path, total size, newest mtime): hashing the weights costs ~0.2 s.
    """
    files = sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file() and p.name not in ("README.md", ".gitattributes") and ".git" not in p.parts
    )
    stats = [p.stat() for p in files]
    memo = (
        str(model_dir.resolve()),
        sum(s.st_size for s in stats),
        max((s.st_mtime_ns for s in stats), default=0),
    )
    if memo in _FINGERPRINTS:
        return _FINGERPRINTS[memo]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    _FINGERPRINTS[memo] = digest.hexdigest()
    return _FINGERPRINTS[memo]


def _versions(modules: tuple[str, ...]) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in modules:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def exported_model(
    model_dir: Path,
    backend: Backend,
    build: Callable[[Path], None],
    *,
    packages: tuple[str, ...],
    isa: bool = False,
    root: Path | None = None,
) -> Path:
    """The cached export of ``model_dir`` for ``backend``, built by ``build(folder)`` the first time.

    Parameters
    ----------
    model_dir : Path
        The sentence-transformers model folder.
    backend : Backend
    build : callable
        Writes the export into the empty folder it is given.
    packages : tuple of str
        Distributions whose versions enter the key (an upgrade builds afresh).
    isa : bool, default False
        Whether the CPU instruction set enters the key (int8 exports).
    root : Path, optional
        Cache folder; ``$QUANTSEARCH_CACHE/models`` by default.

    Returns
    -------
    Path
        A folder holding the export and ``export.json`` (what made it).

    Notes
    -----
    Concurrent processes wait on a file lock, so one of them builds; the export is written into a temporary
    folder and renamed into place, so an interrupted build leaves nothing that looks complete.
    """
    identity = {
        "format": EXPORT_FORMAT,
        "backend": backend.value,
        "model": model_fingerprint(model_dir),
        "versions": _versions(packages),
        "isa": cpu_isa() if isa else None,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    root = root if root is not None else cache_root() / "models"
    target = root / f"{backend.value}-{key}"
    if (target / "export.json").is_file():
        return target
    with _file_lock(root / f".{backend.value}-{key}.lock"):
        if (target / "export.json").is_file():  # another process built it while we waited
            return target
        logger.info("exporting %s for backend %s into %s (once)", model_dir, backend.value, target)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{backend.value}-{key}-"))
        try:
            build(tmp)
            (tmp / "export.json").write_text(
                json.dumps({**identity, "source": str(model_dir)}, indent=1), encoding="utf-8"
            )
            if target.exists():  # a damaged earlier export (no export.json)
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def require(module: str, extra: str = "fast") -> None:
    """Import ``module`` or raise MissingDependencyError naming the extra that installs it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this embedding backend needs {module}, which is not installed: "
            f'pip install "quantsearch[{extra}]"'
        ) from exc
