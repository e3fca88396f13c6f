"""Checks applied at the public boundary; every failure raises one of our exceptions."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .exceptions import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidArgumentError,
    InvalidDtypeError,
    NonFiniteError,
)

#: Largest L2 norm of a vector an index stores or searches: a dot product of two such vectors
#: stays below 1e38, inside float32 (whose maximum is 3.4e38), so every score of finite inputs is
#: finite. Embeddings have norms near 1.
MAX_NORM = 1e19


def as_float_matrix(
    x: Any,
    name: str,
    *,
    dim: int | None = None,
    allow_1d: bool = True,
    allow_empty: bool = False,
    max_norm: float | None = None,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 array of shape (n, dim).

    Accepts real floating arrays (float16/32/64) and nested lists of floats. A 1-D array is one
    row when ``allow_1d``. Raises on object/string/integer/bool/complex dtypes, NaN or inf, a
    wrong number of columns, (unless ``allow_empty``) zero rows, and rows whose L2 norm is
    over ``max_norm``.
    """
    if isinstance(x, (str, bytes)):
        raise InvalidDtypeError(f"{name} must be an array of floats, got a {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InvalidArgumentError(f"{name} could not be read as an array: {exc}") from None
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidDtypeError(f"{name} must have a floating dtype (float16/32/64), got {arr.dtype}")
    if arr.ndim == 1 and allow_1d:
        arr = arr[None, :]
    if arr.ndim != 2:
        want = "1-D or 2-D" if allow_1d else "2-D (n, dim)"
        raise DimensionMismatchError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise EmptyInputError(f"{name} is empty (0 rows); pass at least one vector")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{name} has dimension {arr.shape[1]}, expected {dim}")
    if arr.shape[1] == 0:
        raise DimensionMismatchError(f"{name} has dimension 0")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise NonFiniteError(f"{name} contains NaN or inf (first in row {bad})")
    if max_norm is not None and arr.size:
        check_norms(arr, name, max_norm)
    return arr


def check_norms(arr: np.ndarray, name: str, max_norm: float) -> None:
    """Raise :class:`NonFiniteError` when a row of ``arr`` (n, d) float32 has an L2 norm over ``max_norm``.

    Cheap for ordinary data: the norms are computed (in float64) only when the largest absolute
    value could reach the bound.
    """
    if float(np.abs(arr).max()) * np.sqrt(arr.shape[1]) <= max_norm:
        return
    norms = np.sqrt(np.einsum("ij,ij->i", arr, arr, dtype=np.float64))
    over = np.flatnonzero(norms > max_norm)
    if over.size:
        raise NonFiniteError(
            f"{name} row {int(over[0])} has L2 norm {norms[over[0]]:.3g}, over the limit of {max_norm:.0e}: "
            "its scores would overflow float32 (scale the vectors down)"
        )


def check_positive_int(
    value: Any, name: str, *, maximum: int | None = None, minimum: int = 1, parse: bool = False
) -> int:
    """Return ``value`` as an int, raising if it is not an integer in [minimum, maximum].

    ``parse`` also accepts the decimal text of one (environment variables).
    """
    if parse and isinstance(value, str):
        with contextlib.suppress(ValueError):  # not a number: reported below as the text it was
            value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_number(value: Any, name: str, *, minimum: float | None = None, positive: bool = False) -> float:
    """Return ``value`` as a finite float, raising if it is not a real number (bools are not), is
    below ``minimum``, or is not > 0 when ``positive``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not np.isfinite(out):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and out < minimum:
        raise InvalidArgumentError(f"{name} must be a number >= {minimum:g}, got {value!r}")
    if positive and out <= 0:
        raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}")
    return out


def check_texts(texts: Any) -> list[str]:
    """A non-empty list of str from a sequence of texts (a single string is refused, not split)."""
    if isinstance(texts, (str, bytes)):
        raise InvalidArgumentError("texts must be a sequence of str, not a single string: wrap it in a list")
    texts = list(texts)
    if not texts:
        raise EmptyInputError("texts is empty: expected at least one text to embed")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidArgumentError(f"texts[{i}] must be a str, got {type(text).__name__}")
    return texts
