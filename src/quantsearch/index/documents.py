"""Checks of the document columns an index stores (ids, texts, metadata), applied before any write."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from ..exceptions import DuplicateIdError, InvalidArgumentError
from .catalog import Payload

IdType = Literal["int", "str"]

MAX_ID_LEN = 1024
#: largest automatic (or given) integer id
MAX_INT_ID = 2**63 - 1
#: metadata of one document: JSON nested at most this deep, and at most this many bytes of UTF-8
MAX_METADATA_DEPTH = 32
MAX_METADATA_BYTES = 1 << 20


def auto_ids(first: int, n: int) -> list[int | str]:
    """``n`` automatic ids from ``first`` (the catalog's next id), all of them 64-bit."""
    if first + n - 1 > MAX_INT_ID:
        raise InvalidArgumentError(
            f"no automatic ids are left: the next would be {first}, over 2**63-1 (an id that large "
            "was given); pass ids explicitly"
        )
    return list(range(first, first + n))


def check_id(value: Any, id_type: IdType, name: str) -> int | str:
    """One document id of the index's type: a 64-bit int, or a non-empty UTF-8 string."""
    if id_type == "int":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidArgumentError(
                f"{name} must be an int for an index with id_type='int', got {value!r}"
            )
        value = int(value)
        if not -(2**63) <= value < 2**63:
            raise InvalidArgumentError(f"{name} does not fit in 64 bits: {value}")
        return value
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str for an index with id_type='str', got {value!r}")
    if not value or len(value) > MAX_ID_LEN:
        raise InvalidArgumentError(f"{name} must be a non-empty string of at most {MAX_ID_LEN} characters")
    check_utf8(value, name)
    return value


def check_new_ids(
    ids: Any, n: int, id_type: IdType, existing: Callable[[list[int | str]], list[int | str]]
) -> list[int | str]:
    """A new batch's ids: ``n`` checked ids, unique in the batch, none of them ``existing(ids)``."""
    if ids is None:
        raise InvalidArgumentError("ids are required for an index with id_type='str'")
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise InvalidArgumentError(f"ids must be a sequence of {n} ids, got {type(ids).__name__}")
    if len(ids) != n:
        raise InvalidArgumentError(f"ids has {len(ids)} entries, expected {n} (one per vector)")
    values = ids.tolist() if isinstance(ids, np.ndarray) else ids
    out = [check_id(value, id_type, f"ids[{i}]") for i, value in enumerate(values)]
    if len(set(out)) != n:
        dup = next(value for value, count in Counter(out).items() if count > 1)
        raise DuplicateIdError(f"id {dup!r} appears more than once in the batch")
    found = existing(out)
    if found:
        raise DuplicateIdError(f"id {found[0]!r} is already in the index ({len(found)} duplicates)")
    return out


def check_utf8(value: str, name: str) -> None:
    """SQLite stores UTF-8: reject strings that cannot be encoded (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"{name} is not valid Unicode text: {exc}") from None


def check_column(values: Any, n: int, name: str, types: tuple[type, ...]) -> list[Any]:
    """An optional per-document column: ``n`` entries of ``types`` or None (None: all None)."""
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise InvalidArgumentError(f"{name} must be a sequence of {n} entries, got {type(values).__name__}")
    if len(values) != n:
        raise InvalidArgumentError(f"{name} has {len(values)} entries, expected {n} (one per vector)")
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, types):
            raise InvalidArgumentError(
                f"{name}[{i}] must be {types[0].__name__} or None, got {type(v).__name__}"
            )
        if isinstance(v, str):
            check_utf8(v, f"{name}[{i}]")
    return list(values)


def dump_metadata(values: Sequence[dict[str, Any] | None] | None, n: int) -> list[str | None]:
    """The metadata column as JSON text per document (None stays None)."""
    out: list[str | None] = []
    for i, value in enumerate(check_column(values, n, "metadata", (dict,))):
        if value is None:
            out.append(None)
            continue
        check_depth(value, f"metadata[{i}]")
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
            text.encode("utf-8")  # lone surrogates: UnicodeEncodeError is a ValueError
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"metadata[{i}] is not JSON-serialisable: {exc}") from None
        size = len(text.encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise InvalidArgumentError(
                f"metadata[{i}] is {size:,} bytes as JSON, over the limit of {MAX_METADATA_BYTES:,}"
            )
        out.append(text)
    return out


def check_depth(value: Any, name: str, limit: int = MAX_METADATA_DEPTH) -> None:
    """Raise when dicts and lists in ``value`` nest deeper than ``limit`` (walked without recursion),
    or when a dict has a key that is not a string (JSON would turn it into one, silently)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise InvalidArgumentError(f"{name} is nested more than {limit} levels deep")
        if isinstance(item, dict):
            bad = next((key for key in item if not isinstance(key, str)), None)
            if bad is not None:
                raise InvalidArgumentError(f"{name} has a key that is not a string: {bad!r}")
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else ()
        )
        for child in children:
            seen += 1
            if seen > MAX_METADATA_BYTES:  # every value takes at least one byte of JSON
                raise InvalidArgumentError(f"{name} holds more than {MAX_METADATA_BYTES:,} values")
            if isinstance(child, (dict, list, tuple)):
                stack.append((child, depth + 1))


def as_id_list(ids: Any, id_type: IdType) -> list[int | str]:
    """Ids to delete or look up: one id or a sequence of them, each checked."""
    if isinstance(ids, (int, str, np.integer)):
        id_list: list[Any] = [ids]
    elif isinstance(ids, (Sequence, np.ndarray, set, frozenset)):
        id_list = list(ids)
    else:
        raise InvalidArgumentError(f"ids must be an id or a sequence of ids, got {type(ids).__name__}")
    return [check_id(v, id_type, f"ids[{i}]") for i, v in enumerate(id_list)]


def join_payload(
    rows: np.ndarray, payload: dict[int, Payload], id_type: IdType, with_payload: bool
) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """Ids (nq, k), found mask (nq, k) bool, texts and metadata (lists, or None) of result rows.

    A row missing from ``payload`` is padding, or a document deleted while the search ran.
    """
    found = np.zeros(rows.shape, bool)
    ids = np.full(rows.shape, -1, np.int64) if id_type == "int" else np.full(rows.shape, None)
    texts: list[list[str | None]] = [[] for _ in range(rows.shape[0])]
    metas: list[list[dict[str, Any] | None]] = [[] for _ in range(rows.shape[0])]
    for q in range(rows.shape[0]):
        for j, row in enumerate(rows[q].tolist()):
            hit = payload.get(row)
            texts[q].append(None if hit is None else hit.text)
            metas[q].append(None if hit is None else hit.metadata)
            if hit is not None:
                ids[q, j] = hit.id
                found[q, j] = True
    return ids, found, (texts if with_payload else None), (metas if with_payload else None)


def typed_ids(ids: np.ndarray, found: np.ndarray, id_type: IdType) -> np.ndarray:
    """Ids (nq, k) as :func:`join_payload` gives them (int64 with -1, or object with None padding)
    from an object array of ids read elsewhere (the lexical tier's) and its found mask."""
    if id_type == "int":
        return np.where(found, ids, -1).astype(np.int64)
    out = np.full(ids.shape, None, object)
    out[found] = ids[found]
    return out
