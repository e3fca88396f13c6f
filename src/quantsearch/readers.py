"""Streaming document readers: Parquet, CSV and JSONL, in batches, never the whole file in memory.

:func:`iter_documents` yields lists of :class:`Document` (id, text, metadata). Parquet and CSV are read with
pyarrow (extra ``fast``): Parquet row group by row group (``ParquetFile.iter_batches``), CSV with the
incremental reader (``pyarrow.csv.open_csv``). Every column other than the id and the text becomes metadata.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantsearch.datasets import _iter_jsonl
from quantsearch.exceptions import DuplicateIdError, InvalidArgumentError, MissingDependencyError

__all__ = ["DOCUMENT_SUFFIXES", "Document", "iter_documents"]

#: File suffixes :func:`iter_documents` reads.
DOCUMENT_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".jsonl", ".json")


@dataclass(frozen=True)
class Document:
    """One document: its id (str), text and metadata (the row's other columns)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """A JSON-storable metadata value (NaN and missing cells become None)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, dict)):
        return json.loads(json.dumps(value, default=str))
    return str(value)  # dates, decimals, bytes


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise MissingDependencyError(
            'reading Parquet or CSV needs pyarrow, which is not installed: pip install "quantsearch[fast]"'
        ) from exc
    return pyarrow


def _arrow_batches(path: Path, batch_size: int) -> Iterator[Any]:
    """pyarrow RecordBatches of at most ``batch_size`` rows."""
    _pyarrow()
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            reader = pq.ParquetFile(path)
        except Exception as exc:  # ArrowInvalid: not a Parquet file
            raise InvalidArgumentError(f"{path} is not a readable Parquet file: {exc}") from exc
        yield from reader.iter_batches(batch_size=batch_size)
        return
    import pyarrow as pa
    import pyarrow.csv as pcsv

    delimiter = "\t" if suffix == ".tsv" else ","
    try:
        stream = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            # ids and texts stay strings whatever they look like
            convert_options=pcsv.ConvertOptions(strings_can_be_null=False),
        )
        for batch in stream:
            for start in range(0, batch.num_rows, batch_size):
                yield batch.slice(start, batch_size)
    except pa.ArrowInvalid as exc:
        raise InvalidArgumentError(f"{path}: malformed CSV: {exc}") from exc


def iter_documents(
    path: str | os.PathLike[str],
    *,
    text_field: str = "text",
    id_field: str = "_id",
    title_field: str | None = "title",
    batch_size: int = 4096,
) -> Iterator[list[Document]]:
    """Stream the documents of a Parquet, CSV/TSV or JSONL file in batches.

    Parameters
    ----------
    path : str or path-like
        A ``.parquet``/``.pq``, ``.csv``, ``.tsv`` or ``.jsonl``/``.json`` (one object per line) file.
    text_field : str, default "text"
        Column holding the text; required.
    id_field : str, default "_id"
        Column holding the id (converted with ``str``); when the file has no such column, the row number
        (from 1) is the id.
    title_field : str or None, default "title"
        Optional column whose non-empty value is prepended to the text (``title + " " + text``), as BEIR does;
        it is kept in the metadata too. None disables this.
    batch_size : int, default 4096
        Documents per yielded list (the last may be shorter).

    Yields
    ------
    list of Document
        Non-empty lists, in file order.

    Raises
    ------
    InvalidArgumentError
        A missing file or column, an unsupported suffix, a malformed file, a missing/non-string text.
    DuplicateIdError
        Two rows with the same id.
    MissingDependencyError
        Parquet/CSV without pyarrow installed.
    """
    path = Path(path)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    if not path.is_file():
        raise InvalidArgumentError(f"input not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        raise InvalidArgumentError(
            f"{path}: unsupported file type {suffix!r}; expected one of {DOCUMENT_SUFFIXES}"
        )
    seen: set[str] = set()
    out: list[Document] = []
    number = 0

    def make(row: dict[str, Any], where: str) -> Document:
        text = row.get(text_field)
        if not isinstance(text, str):
            raise InvalidArgumentError(
                f"{where}: text field {text_field!r} must be a string, got {type(text).__name__}"
            )
        title = row.get(title_field) if title_field else None
        if isinstance(title, str) and title.strip():
            text = f"{title} {text}"
        raw_id = row.get(id_field)
        doc_id = str(number) if raw_id is None else str(raw_id)
        if doc_id in seen:
            raise DuplicateIdError(f"{where}: duplicate id {doc_id!r}")
        seen.add(doc_id)
        meta = {k: _plain(v) for k, v in row.items() if k not in (id_field, text_field)}
        return Document(doc_id, text, meta)

    if suffix in (".jsonl", ".json"):
        for lineno, row in _iter_jsonl(path):
            number += 1
            out.append(make(row, f"{path}:{lineno}"))
            if len(out) == batch_size:
                yield out
                out = []
    else:
        for batch in _arrow_batches(path, batch_size):
            columns = batch.schema.names
            if text_field not in columns:
                raise InvalidArgumentError(
                    f"{path}: no text column {text_field!r} (columns: {', '.join(columns)}); use --text-field"
                )
            for row in batch.to_pylist():
                number += 1
                out.append(make(row, f"{path}: row {number}"))
                if len(out) == batch_size:
                    yield out
                    out = []
    if out:
        yield out
