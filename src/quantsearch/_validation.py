"""Checks applied at the public boundary; every failure raises one of our exceptions."""

from __future__ import annotations

from typing import Any

import numpy as np

from .exceptions import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidArgumentError,
    InvalidDtypeError,
    NonFiniteError,
)


def as_float_matrix(
    x: Any,
    name: str,
    *,
    dim: int | None = None,
    allow_1d: bool = True,
    allow_empty: bool = False,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 array of shape (n, dim).

    Accepts real floating arrays (float16/32/64) and nested lists of floats. A 1-D array is one
    row when ``allow_1d``. Raises on object/string/integer/bool/complex dtypes, NaN or inf, a
    wrong number of columns, and (unless ``allow_empty``) zero rows.
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
    return arr


def check_positive_int(value: Any, name: str, *, maximum: int | None = None) -> int:
    """Return ``value`` as an int, raising if it is not an integer in [1, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value <= 0:
        raise InvalidArgumentError(f"{name} must be >= 1, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(f"{name} must be <= {maximum}, got {value}")
    return value
