"""Loaders for retrieval test collections in the BEIR layout, and for plain JSONL text files.

A BEIR dataset is a directory holding ``corpus.jsonl`` (``{"_id", "title", "text"}`` per line),
``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantsearch._cache import cache_root
from quantsearch.exceptions import DuplicateIdError, InvalidArgumentError

__all__ = ["BEIR_DATASETS", "BEIR_URL", "BeirDataset", "default_cache_dir", "load_beir", "read_jsonl_texts"]

logger = logging.getLogger(__name__)

#: Download address of the official BEIR zips; ``{name}`` is replaced by the dataset name.
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

#: Public BEIR datasets with the flat layout that :func:`load_beir` can download.
BEIR_DATASETS = frozenset(
    {
        "msmarco",
        "trec-covid",
        "nfcorpus",
        "nq",
        "hotpotqa",
        "fiqa",
        "arguana",
        "webis-touche2020",
        "quora",
        "dbpedia-entity",
        "scidocs",
        "fever",
        "climate-fever",
        "scifact",
    }
)

_DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class BeirDataset:
    """A retrieval test collection: corpus, the judged queries of one split, and their relevance judgements.

    Attributes
    ----------
    name : str
        Dataset name (the directory name for a local directory).
    corpus_ids : list of str
        Document ids in file order.
    corpus_texts : list of str
        Text to embed per document: ``title + " " + text`` when the title is non-empty, else ``text``.
    corpus_titles : list of str
        Titles ("" when absent).
    query_ids : list of str
        Ids of the queries judged in the split, in ``queries.jsonl`` order.
    query_texts : list of str
        Texts of those queries.
    qrels : dict of str to dict of str to int
        Query id -> document id -> graded relevance (values <= 0 mean not relevant).
    """

    name: str
    corpus_ids: list[str]
    corpus_texts: list[str]
    corpus_titles: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def default_cache_dir() -> Path:
    """Where downloads go: ``$QUANTSEARCH_CACHE/beir``, else ``~/.cache/quantsearch/beir``."""
    return cache_root() / "beir"


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file (line numbers from 1)."""
    with path.open("rb") as f:  # decoded line by line: an error names its line
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidArgumentError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidArgumentError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            except RecursionError:
                raise InvalidArgumentError(f"{path}:{lineno}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise InvalidArgumentError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            yield lineno, row


def _str_field(row: dict[str, Any], field: str, path: Path, lineno: int, *, required: bool = True) -> str:
    value = row.get(field)
    if value is None:
        if required:
            raise InvalidArgumentError(f"{path}:{lineno}: missing field {field!r}")
        return ""
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"{path}:{lineno}: field {field!r} must be a string, got {type(value).__name__}"
        )
    return value


def _id_field(row: dict[str, Any], path: Path, lineno: int) -> str:
    value = row.get("_id")
    if value is None:
        raise InvalidArgumentError(f"{path}:{lineno}: missing field '_id'")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidArgumentError(
            f"{path}:{lineno}: field '_id' must be a string, got {type(value).__name__}"
        )
    return str(value)


def _join_title(title: str, text: str) -> str:
    return f"{title} {text}" if title else text


def read_jsonl_texts(
    path: str | os.PathLike[str],
    text_field: str = "text",
    id_field: str = "_id",
    title_field: str | None = "title",
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Read a JSONL file with one document per line.

    Parameters
    ----------
    path : str or path-like
        The JSONL file.
    text_field : str, default "text"
        Field holding the text; a row without it is an error.
    id_field : str, default "_id"
        Field holding the id; when a row lacks it, its line number (from 1, as a str) is used. Non-string ids
        (e.g. integers) are converted with ``str``.
    title_field : str or None, default "title"
        Field holding an optional title; a non-empty title is prepended to the text (``title + " " + text``).
        None disables this.

    Returns
    -------
    ids : list of str
    texts : list of str
    metadata : list of dict
        Every other field of each row (the title included).

    Raises
    ------
    InvalidArgumentError
        If the file does not exist, a line is not a JSON object, or a row lacks the text field.
    DuplicateIdError
        If two rows have the same id.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"path {str(path)!r} is not a file")
    ids: list[str] = []
    texts: list[str] = []
    metadata: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, row in _iter_jsonl(path):
        text = _str_field(row, text_field, path, lineno)
        title = _str_field(row, title_field, path, lineno, required=False) if title_field else ""
        raw_id = row.get(id_field)
        doc_id = str(lineno) if raw_id is None else str(raw_id)
        if doc_id in seen:
            raise DuplicateIdError(f"{path}:{lineno}: duplicate id {doc_id!r}")
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(_join_title(title, text))
        metadata.append({k: v for k, v in row.items() if k not in (id_field, text_field)})
    return ids, texts, metadata


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if lineno == 1 and fields[0] == "query-id":
                continue
            if len(fields) != 3:
                raise InvalidArgumentError(
                    f"{path}:{lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                    f"got {len(fields)}"
                )
            query_id, doc_id, score = fields
            try:
                rel = int(score)
            except ValueError:
                raise InvalidArgumentError(
                    f"{path}:{lineno}: score must be an integer, got {score!r}"
                ) from None
            qrels.setdefault(query_id, {})[doc_id] = rel
    return qrels


def _load_dir(root: Path, split: str, name: str) -> BeirDataset:
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    for required in (corpus_path, queries_path, qrels_path):
        if not required.is_file():
            raise InvalidArgumentError(f"BEIR dataset {str(root)!r} has no {required.relative_to(root)}")

    corpus_ids: list[str] = []
    corpus_texts: list[str] = []
    corpus_titles: list[str] = []
    seen: set[str] = set()
    for lineno, row in _iter_jsonl(corpus_path):
        doc_id = _id_field(row, corpus_path, lineno)
        if doc_id in seen:
            raise DuplicateIdError(f"{corpus_path}:{lineno}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title = _str_field(row, "title", corpus_path, lineno, required=False)
        text = _str_field(row, "text", corpus_path, lineno)
        corpus_ids.append(doc_id)
        corpus_titles.append(title)
        corpus_texts.append(_join_title(title, text))

    qrels = _read_qrels(qrels_path)
    query_ids: list[str] = []
    query_texts: list[str] = []
    seen.clear()
    for lineno, row in _iter_jsonl(queries_path):
        query_id = _id_field(row, queries_path, lineno)
        if query_id in qrels:
            if query_id in seen:
                raise DuplicateIdError(f"{queries_path}:{lineno}: duplicate query id {query_id!r}")
            seen.add(query_id)
            query_ids.append(query_id)
            query_texts.append(_str_field(row, "text", queries_path, lineno))
    missing = qrels.keys() - seen
    if missing:
        logger.warning(
            "%s: %d judged queries are not in queries.jsonl and are dropped (e.g. %r)",
            qrels_path,
            len(missing),
            sorted(missing)[0],
        )
        qrels = {q: rels for q, rels in qrels.items() if q not in missing}
    logger.info("loaded %s: %d documents, %d %s queries", name, len(corpus_ids), len(query_ids), split)
    return BeirDataset(name, corpus_ids, corpus_texts, corpus_titles, query_ids, query_texts, qrels)


def _download(name: str, cache_dir: Path) -> Path:
    """Download and unzip BEIR dataset ``name`` into ``cache_dir / name``; return that folder."""
    import urllib.request

    target = cache_dir / name
    if (target / "corpus.jsonl").is_file():
        return target
    url = BEIR_URL.format(name=name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("downloading BEIR dataset %s from %s", name, url)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{name}-") as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            with (
                urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
                archive.open("wb") as f,
            ):
                shutil.copyfileobj(response, f)
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(Path(tmp) / "unzipped")  # extractall drops absolute paths and ".." components
        except (OSError, zipfile.BadZipFile) as exc:
            raise InvalidArgumentError(
                f"could not download BEIR dataset {name!r} from {url} ({exc}): pass a local directory"
            ) from exc
        unzipped = Path(tmp) / "unzipped"
        corpora = sorted(unzipped.rglob("corpus.jsonl"), key=lambda p: (len(p.parts), str(p)))
        if not corpora:
            raise InvalidArgumentError(f"the archive downloaded from {url} holds no corpus.jsonl")
        found = corpora[0].parent
        if target.exists():  # a partial earlier copy
            shutil.rmtree(target)
        os.replace(found, target)
    return target


def load_beir(
    path_or_name: str | os.PathLike[str],
    split: str = "test",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> BeirDataset:
    """Load a BEIR-layout dataset from a directory, or download a public BEIR dataset by name.

    Parameters
    ----------
    path_or_name : str or path-like
        A directory holding ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``, or the name of a
        public BEIR dataset (see :data:`BEIR_DATASETS`), downloaded on first use from :data:`BEIR_URL`.
    split : str, default "test"
        The qrels file to read; only the queries judged in it are kept.
    cache_dir : str or path-like, optional
        Where downloads are kept; defaults to :func:`default_cache_dir`.

    Returns
    -------
    BeirDataset

    Raises
    ------
    InvalidArgumentError
        If the argument is neither a directory nor a known name, a file is missing or malformed, or the
        download fails.
    DuplicateIdError
        If a document or query id appears twice.
    """
    if not isinstance(split, str) or not split or "/" in split or "\\" in split:
        raise InvalidArgumentError(f"split must be a file stem such as 'test', got {split!r}")
    path = Path(path_or_name)
    if path.is_dir():
        return _load_dir(path, split, path.resolve().name)
    name = os.fspath(path_or_name)
    if name not in BEIR_DATASETS:
        raise InvalidArgumentError(
            f"path_or_name {name!r} is neither a directory nor a known BEIR dataset "
            f"(known: {', '.join(sorted(BEIR_DATASETS))})"
        )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _load_dir(_download(name, cache), split, name)
