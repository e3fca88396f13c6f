"""Exception types raised by quantsearch.

Every error a user can cause is one of these. They subclass the built-in type a caller would
expect (``ValueError``, ``TypeError``, ``KeyError``, ``FileNotFoundError``) so generic handlers keep
working, and all of them subclass :class:`QuantsearchError` so one ``except`` catches ours.
"""

from __future__ import annotations

__all__ = [
    "QuantsearchError",
    "InvalidArgumentError",
    "InvalidDtypeError",
    "DimensionMismatchError",
    "NonFiniteError",
    "EmptyInputError",
    "NotFittedError",
    "DuplicateIdError",
    "UnknownIdError",
    "IndexNotFoundError",
    "IndexExistsError",
    "CorruptIndexError",
    "FormatVersionError",
    "IndexLockedError",
    "ReadOnlyIndexError",
    "MissingDependencyError",
    "StorageError",
    "ShardUnavailableError",
]


class QuantsearchError(Exception):
    """Base class of every error raised by quantsearch."""


class InvalidArgumentError(QuantsearchError, ValueError):
    """An argument has a value outside what is accepted (unknown precision, k <= 0, ...)."""


class InvalidDtypeError(QuantsearchError, TypeError):
    """An array argument has a dtype that cannot be used (strings, objects, complex, ...)."""


class DimensionMismatchError(InvalidArgumentError):
    """An array has the wrong number of columns or the wrong number of dimensions."""


class NonFiniteError(InvalidArgumentError):
    """An array holds NaN or infinity."""


class EmptyInputError(InvalidArgumentError):
    """A batch with no rows was given where at least one is needed."""


class NotFittedError(QuantsearchError, ValueError, AttributeError):
    """A quantizer (or an index) was used before it was calibrated."""


class DuplicateIdError(InvalidArgumentError):
    """An id is already in the index, or appears twice in one batch."""


class UnknownIdError(QuantsearchError, KeyError):
    """An id is not in the index."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class IndexNotFoundError(QuantsearchError, FileNotFoundError):
    """The index directory (or its manifest) does not exist."""


class IndexExistsError(QuantsearchError, FileExistsError):
    """An index already exists where a new one was to be created."""


class CorruptIndexError(QuantsearchError):
    """The files of an index do not agree with its manifest (truncated, edited or missing)."""


class FormatVersionError(CorruptIndexError):
    """The index was written with a format version this release cannot read."""


class IndexLockedError(QuantsearchError, RuntimeError):
    """Another writer holds the index's lock."""


class ReadOnlyIndexError(QuantsearchError, PermissionError):
    """A write was asked of an index opened read-only (``readonly=True``, or files it may not write)."""


class StorageError(QuantsearchError, OSError):
    """Writing the index to disk failed (disk full, permissions, ...); nothing was committed."""


class MissingDependencyError(QuantsearchError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ShardUnavailableError(QuantsearchError, RuntimeError):
    """Shards of a sharded index did not answer (their actors died and did not come back in time).

    ``shards`` lists the shard numbers that failed; a search never returns a shorter list instead.
    """

    def __init__(self, message: str, shards: list[int] | tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.shards = tuple(shards)

    def __reduce__(self) -> tuple[type, tuple[str, tuple[int, ...]]]:  # picklable across processes
        return (type(self), (str(self.args[0]) if self.args else "", self.shards))
