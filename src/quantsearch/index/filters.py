"""Metadata filters: parsed at the public boundary, evaluated in SQLite, applied as a row mask.

A filter is a JSON object; every key is a metadata field (dots reach into nested objects) and all
conditions must hold::

    {"lang": "en"}                                  equality (str, int, float or bool)
    {"lang": {"in": ["en", "de"]}}                  membership
    {"year": {"gte": 2000, "lt": 2010}}             numeric range: gt, gte, lt, lte
    {"lang": {"ne": "en"}}                          inequality (documents without the field match)

Operators may also be written with a leading ``$`` (``$in``, ``$gte``). Types are strict: the number
5 matches the JSON number 5 (or 5.0), never the string ``"5"`` or ``true``. The catalog evaluates the
conditions over its metadata JSON in one read snapshot (:meth:`Catalog.rows_where`); the matching
rows become a mask that is ANDed into the view's validity mask, so every candidate stage sees a
filter the way it sees deletes; the lexical tier drops the BM25 matches outside those rows (the
filter restricts the results, not the corpus statistics: idf and the mean length stay the index's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..exceptions import InvalidArgumentError
from .catalog import Catalog
from .pipeline import IndexView

__all__ = ["Condition", "filter_rows", "parse_filter"]

Op = Literal["eq", "ne", "in", "gt", "gte", "lt", "lte"]
_OPS: frozenset[str] = frozenset({"eq", "ne", "in", "gt", "gte", "lt", "lte"})
_RANGE = frozenset({"gt", "gte", "lt", "lte"})
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_MAX_IN = 1_000  # bound parameters per statement stay far below SQLite's limit


@dataclass(frozen=True)
class Condition:
    """One condition on one metadata field (``path`` is the SQLite JSON path, e.g. ``$.year``)."""

    field: str
    op: Op
    value: Any  # a scalar, or a tuple of scalars for "in"

    @property
    def path(self) -> str:
        return "$." + self.field


def parse_filter(spec: Mapping[str, Any] | None) -> tuple[Condition, ...]:
    """Check a filter object and turn it into conditions (ANDed).

    Raises :class:`InvalidArgumentError` naming the field, the operator and the value at fault.
    """
    if spec is None:
        return ()
    if not isinstance(spec, Mapping):
        raise InvalidArgumentError(f"filter must be a JSON object of field conditions, got {spec!r}")
    out: list[Condition] = []
    for field, cond in spec.items():
        if not isinstance(field, str) or not _FIELD.match(field):
            raise InvalidArgumentError(
                f"filter field {field!r} is not a metadata field name (letters, digits, _ and dots)"
            )
        if isinstance(cond, Mapping):
            if not cond:
                raise InvalidArgumentError(f"filter on {field!r} has no operator")
            for raw_op, value in cond.items():
                op = raw_op[1:] if isinstance(raw_op, str) and raw_op.startswith("$") else raw_op
                if op not in _OPS:
                    raise InvalidArgumentError(
                        f"filter on {field!r}: unknown operator {raw_op!r}; use one of {sorted(_OPS)}"
                    )
                out.append(_condition(field, op, value))
        else:
            out.append(_condition(field, "eq", cond))
    return tuple(out)


def _condition(field: str, op: str, value: Any) -> Condition:
    if op == "in":
        if not isinstance(value, (list, tuple)) or not value:
            raise InvalidArgumentError(f"filter on {field!r}: 'in' takes a non-empty list, got {value!r}")
        if len(value) > _MAX_IN:
            raise InvalidArgumentError(f"filter on {field!r}: 'in' takes at most {_MAX_IN} values")
        for v in value:
            _check_scalar(field, op, v)
        return Condition(field, "in", tuple(value))
    if op in _RANGE:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise InvalidArgumentError(f"filter on {field!r}: {op!r} takes a finite number, got {value!r}")
        return Condition(field, op, value)  # type: ignore[arg-type]
    _check_scalar(field, op, value)
    return Condition(field, op, value)  # type: ignore[arg-type]


def _finite(value: int | float) -> bool:
    """A float that is finite, or an int SQLite can bind (64 bits)."""
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return math.isfinite(value)


def _check_scalar(field: str, op: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not _finite(value):
        raise InvalidArgumentError(f"filter on {field!r}: {op!r} takes a finite value, got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise InvalidArgumentError(
            f"filter on {field!r}: {op!r} takes a string, number or boolean, got {value!r}"
        )


def filter_rows(
    catalog: Catalog, conditions: tuple[Condition, ...], view: IndexView
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mask, rows)`` of a filter: the view's validity mask ANDed with the rows matching
    ``conditions``, shape (n_rows,) bool (for the dense pipeline), and every matching row, ascending
    int64, those committed after the view was taken included (for the lexical tier, which catches up
    with the catalog by itself).

    Returns ``None`` when the catalog's rows belong to another generation than the view's (a
    compaction renumbered them): the caller refreshes and tries again.
    """
    generation, rows = catalog.rows_where(conditions)
    if generation != view.generation:
        return None
    n_rows = view.valid.shape[0]
    mask = np.zeros(n_rows, bool)
    mask[rows[rows < n_rows]] = True  # later rows: documents committed after this view was taken
    mask &= view.valid
    return mask, rows
