"""Error types of the HTTP layer and the one table that maps exceptions to status codes.

Every error response has the body ``{"error": {"type": <name>, "message": <one line>}}``.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import (
    CorruptIndexError,
    DuplicateIdError,
    IndexLockedError,
    InvalidArgumentError,
    MissingDependencyError,
    NotFittedError,
    QuantsearchError,
    ReadOnlyIndexError,
    StorageError,
    UnknownIdError,
)

__all__ = [
    "AuthError",
    "LimitError",
    "PayloadTooLargeError",
    "error_body",
    "status_of",
]


class LimitError(InvalidArgumentError):
    """A request parameter is over one of the server's limits (k, oversampling, exact-scan size)."""


class PayloadTooLargeError(InvalidArgumentError):
    """A request body, or a batch of documents, is larger than the server accepts."""


class AuthError(QuantsearchError):
    """The request carries no API key, or a wrong one."""


# most specific first: the first class an exception is an instance of gives its status
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (AuthError, 401),
    (UnknownIdError, 404),
    (PayloadTooLargeError, 413),
    (LimitError, 422),
    (DuplicateIdError, 409),
    (InvalidArgumentError, 400),  # also DimensionMismatchError, NonFiniteError, EmptyInputError
    (NotFittedError, 409),  # the index is not calibrated yet
    (IndexLockedError, 409),  # another process holds the writer lock
    (ReadOnlyIndexError, 409),  # the server runs on a read-only index: it answers searches only
    (MissingDependencyError, 501),
    (StorageError, 507),
    (CorruptIndexError, 500),
    (QuantsearchError, 400),  # InvalidDtypeError and any other user error
)


def status_of(exc: BaseException) -> int:
    """HTTP status code of one of our exceptions (500 for anything else)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"error": {"type": error_type, "message": message}}
