"""Which kernel implementation runs, and on how many threads.

Backends, fastest first: ``"avx512"`` (AVX-512 with VPOPCNTDQ), ``"avx2"``, ``"portable"`` (the
native extension's plain C path, any CPU) and ``"numpy"`` (pure numpy, the reference; also what
runs when the extension was not built). The default is the fastest this CPU supports; the
``QUANTSEARCH_KERNEL`` environment variable or :func:`set_backend` forces one. The thread count
defaults to every core this process may use; ``QUANTSEARCH_NUM_THREADS`` or
:func:`set_num_threads` changes it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from .._validation import check_positive_int
from ..exceptions import InvalidArgumentError

logger = logging.getLogger(__name__)

#: every backend name, fastest first
BACKENDS = ("avx512", "avx2", "portable", "numpy")
#: instruction-set codes of the native module
ISA = {"portable": 0, "avx2": 1, "avx512": 2}

_ENV_KERNEL = "QUANTSEARCH_KERNEL"
_ENV_THREADS = "QUANTSEARCH_NUM_THREADS"

_lock = threading.Lock()
_native: ModuleType | None = None
_native_loaded = False
_available: tuple[str, ...] | None = None  # the CPU's features do not change: computed once
_backend: str | None = None  # set_backend() override; None = environment or fastest
_threads: int | None = None  # set_num_threads() override; None = environment or all cores
# every search asks for the backend and the thread count (several times per query): the variables are
# read each time (they may change), but a value already parsed is not checked again, and the CPU
# affinity is read once per process (a system call; os.sched_setaffinity afterwards is not seen)
_parsed_kernel: tuple[str, str] | None = None  # (QUANTSEARCH_KERNEL, backend it names)
_parsed_threads: tuple[str, int] | None = None  # (QUANTSEARCH_NUM_THREADS, its value)
_affinity: int | None = None


def native_module() -> ModuleType | None:
    """The compiled extension, or None (with one warning logged) if it was not built."""
    global _native, _native_loaded
    with _lock:
        if not _native_loaded:
            module: ModuleType | None
            try:
                from . import _native as module
            except ImportError as exc:
                module = None
                logger.warning(
                    "quantsearch's native kernels are not built (%s); using the numpy kernels, "
                    "which are 10-50x slower. Reinstall quantsearch with a C compiler (gcc) "
                    "available to build them.",
                    exc,
                )
            _native, _native_loaded = module, True
    return _native


def available_backends() -> tuple[str, ...]:
    """Backends this machine can run, fastest first (``"numpy"`` is always there)."""
    global _available
    if _available is None:
        module = native_module()
        if module is None:
            _available = ("numpy",)
        else:
            _available = tuple(
                name for name in BACKENDS if name == "numpy" or module.isa_supported(ISA[name])
            )
    return _available


def _check_backend(name: object, source: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in (*BACKENDS, "auto"):
        raise InvalidArgumentError(f"{source} must be one of auto, {', '.join(BACKENDS)}; got {name!r}")
    name = name.strip().lower()
    if name == "auto":
        return available_backends()[0]
    if name not in available_backends():
        raise InvalidArgumentError(
            f"{source}={name!r} cannot run here; available: {', '.join(available_backends())}"
        )
    return name


def get_backend() -> str:
    """The backend searches use now: the :func:`set_backend` override, else ``QUANTSEARCH_KERNEL``,
    else the fastest available."""
    global _parsed_kernel
    if _backend is not None:
        return _backend
    env = os.environ.get(_ENV_KERNEL)
    if not env or not env.strip():
        return _available[0] if _available is not None else available_backends()[0]
    parsed = _parsed_kernel
    if parsed is not None and parsed[0] == env:
        return parsed[1]
    name = _check_backend(env, _ENV_KERNEL)
    _parsed_kernel = (env, name)
    return name


def set_backend(name: str | None) -> None:
    """Force a backend for this process (``None`` or ``"auto"``: back to the default).

    Raises :class:`InvalidArgumentError` for an unknown name or one this CPU cannot run.
    """
    global _backend
    _backend = None if name is None or name == "auto" else _check_backend(name, "backend")


@contextmanager
def use_backend(name: str | None) -> Iterator[str]:
    """Run a block with the given backend forced; restores the previous setting afterwards."""
    global _backend
    previous = _backend
    set_backend(name)
    try:
        yield get_backend()
    finally:
        _backend = previous


def _default_threads() -> int:
    global _affinity
    if _affinity is None:
        try:
            _affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            _affinity = os.cpu_count() or 1
    return _affinity


def _check_threads(value: object, source: str, *, parse: bool = False) -> int:
    return check_positive_int(value, source, maximum=64, parse=parse)


def get_num_threads() -> int:
    """Threads one search may use: the :func:`set_num_threads` override, else
    ``QUANTSEARCH_NUM_THREADS``, else every core this process may run on."""
    global _parsed_threads
    if _threads is not None:
        return _threads
    env = os.environ.get(_ENV_THREADS)
    if not env or not env.strip():
        return _default_threads()
    parsed = _parsed_threads
    if parsed is not None and parsed[0] == env:
        return parsed[1]
    value = _check_threads(env.strip(), _ENV_THREADS, parse=True)
    _parsed_threads = (env, value)
    return value


def set_num_threads(n: int | None) -> None:
    """Set the threads one search may use (1 to 64); ``None`` restores the default."""
    global _threads
    _threads = None if n is None else _check_threads(n, "num_threads")
