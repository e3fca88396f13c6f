"""Ingestion as a library: read a corpus, embed it, and add it to an index (with progress).

The CLI (``quantsearch index``), the demo and the server call these functions; nothing here prints.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import InvalidArgumentError

logger = logging.getLogger(__name__)

__all__ = [
    "candidate_quantizer",
    "embed_texts",
    "index_documents",
    "progress_bar",
    "read_documents",
    "training_vectors",
]


def read_documents(
    source: Path, *, text_field: str = "text", id_field: str = "_id"
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Read ``(ids, texts, metadata)`` from a BEIR corpus.jsonl / any JSONL, or a folder of .txt/.md files."""
    from .datasets import read_jsonl_texts

    if source.is_dir():
        corpus = source / "corpus.jsonl"
        if corpus.is_file():  # a BEIR dataset folder
            return read_jsonl_texts(corpus, text_field=text_field, id_field=id_field)
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
        if not files:
            raise InvalidArgumentError(f"{source} holds no .txt or .md files (and no corpus.jsonl)")
        ids, texts, meta = [], [], []
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise InvalidArgumentError(f"{path} is not UTF-8 text") from None
            if text.strip():
                rel = path.relative_to(source).as_posix()
                ids.append(rel)
                texts.append(text)
                meta.append({"path": rel})
        return ids, texts, meta
    if source.is_file() and source.suffix.lower() in (".parquet", ".pq", ".csv", ".tsv"):
        from .readers import iter_documents  # streamed by pyarrow, batch by batch

        ids, texts, meta = [], [], []
        for batch in iter_documents(source, text_field=text_field, id_field=id_field):
            for doc in batch:
                ids.append(doc.id)
                texts.append(doc.text)
                meta.append(doc.metadata)
        return ids, texts, meta
    if source.is_file():
        return read_jsonl_texts(source, text_field=text_field, id_field=id_field)
    raise InvalidArgumentError(f"input not found: {source}")


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


class _Silent:
    """The progress bar when none is shown."""

    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar counting documents (it shows docs/s) when tqdm is installed and ``enabled``, else a
    no-op object with ``update``/``close``."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit="docs", file=sys.stderr)  # rate shown as docs/s
        except ImportError:
            pass
    return _Silent()


def embed_texts(embedder: Any, texts: Sequence[str], *, bar: Any = None, chunk: int = 256) -> np.ndarray:
    """Embed ``texts`` with ``embedder`` in chunks of ``chunk`` (so a progress ``bar`` moves).

    Returns
    -------
    ndarray of shape (len(texts), dim), float32
    """
    if not len(texts):
        raise InvalidArgumentError("no texts to embed")
    bar = bar or _Silent()
    parts = []
    for s, e in _batches(len(texts), chunk):
        parts.append(embedder.embed(list(texts[s:e])))
        bar.update(e - s)
    return np.concatenate(parts)


def index_documents(
    ids: Sequence[str],
    texts: Sequence[str],
    metadata: Sequence[dict[str, Any]],
    index_dir: Path,
    *,
    model: str | None = None,
    rescore: Sequence[str] = ("int8",),
    candidates: str | None = None,
    truncate_dim: int | None = None,
    candidate_stage: str | dict[str, Any] | None = None,
    batch_size: int = 4096,
    calibration_size: int = 20_000,
    progress: bool = True,
    skip_existing: bool = False,
    backend: str | None = None,
    lexical: Any = None,
) -> Any:
    """Embed documents and add them to the index at ``index_dir`` (created if it does not exist).

    A new index is calibrated explicitly on the embeddings of the first ``calibration_size``
    documents before anything is added. ``candidates`` names the candidate (RAM) tier of a new
    index: a quantizer spec (``"binary"``, ``"qat"``, ...) or a file written by ``quantsearch train``.
    A run is all or nothing: a new index is built in a hidden sibling directory and renamed into
    place when every document is in; an existing index that a run fails to extend gets the
    documents the run added deleted again (a compaction reclaims their rows). Only a killed
    process leaves the batches it committed in an existing index; ``skip_existing`` resumes then.
    ``backend`` names the embedding backend (``"auto"`` is settled on a sample of ``texts``); a new
    index records it, so that queries are embedded the same way.
    ``candidate_stage`` (a new index only) is passed to :meth:`Index.create` (``"ivf"``, ...).
    ``lexical`` (a new index only) keeps a BM25 tier over the texts (see ``Index.create``).

    Returns
    -------
    Index
        The open index (its embedder is the one used here).
    """
    from .embed import Embedder
    from .embedding import parse_backend
    from .index import Index
    from .index.lifecycle import create_directory
    from .index.stages import check_stage_config
    from .quantization import make_quantizer

    parse_backend(backend)  # a typo fails before anything is read or embedded
    if not ids:
        raise InvalidArgumentError("the input holds no documents")
    batch_size = int(batch_size)
    if batch_size < 1:  # fail before spending minutes embedding
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    for spec in rescore:
        make_quantizer(spec, truncate_dim=truncate_dim)
    candidate = None if candidates is None else candidate_quantizer(candidates)
    check_stage_config(candidate_stage, candidate or make_quantizer("binary"))  # before any embedding
    exists = (index_dir / "manifest.json").is_file()
    if exists and candidate is not None:
        raise InvalidArgumentError(f"{index_dir} exists: --candidates applies only when an index is created")
    if exists and candidate_stage is not None:
        raise InvalidArgumentError(
            f"{index_dir} exists: --candidate-stage applies only when an index is created"
        )
    index = Index.open(index_dir) if exists else None
    if index is not None:
        problem = None
        if model is not None and index.model is not None and Embedder(model).name != index.model:
            problem = f"{index_dir} was built with model {index.model!r}, not {model!r}"
        existing = [] if problem else [i for i in ids if i in index]
        if existing and skip_existing:
            present = set(existing)
            keep = [j for j, i in enumerate(ids) if i not in present]
            logger.info("skipping %d documents already in %s", len(existing), index_dir)
            ids, texts, metadata = (
                [ids[j] for j in keep],
                [texts[j] for j in keep],
                [metadata[j] for j in keep],
            )
            existing = []
        if existing:
            problem = f"id {existing[0]!r} is already in {index_dir} ({len(existing)} duplicates)"
        if problem:
            index.close()
            raise InvalidArgumentError(problem)
        model = model if index.model is None else index.model
        backend = backend if backend is not None else index.backend
    embedder = Embedder(model, backend=backend)
    if embedder.backend == "auto":
        embedder.resolve_backend(texts)
        logger.info("embedding backend auto -> %s", embedder.backend)
    bar = progress_bar(len(ids), "embedding + indexing", progress)

    def add_all(target: Any, start: int, added: list[Any]) -> None:
        for s, e in _batches(len(ids) - start, batch_size):
            s, e = s + start, e + start
            vectors = embed_texts(embedder, texts[s:e], bar=bar)
            added += target.add(
                vectors, ids=list(ids[s:e]), texts=list(texts[s:e]), metadata=list(metadata[s:e])
            )

    def build(tmp: Path) -> None:
        # calibrate on an explicit sample: the first documents, embedded once and added afterwards
        start = min(len(ids), calibration_size)
        head = embed_texts(embedder, texts[:start], bar=bar)
        with Index.create(
            tmp,
            head.shape[1],
            rescore=list(rescore),
            binary=candidate,
            truncate_dim=truncate_dim,
            id_type="str",
            model=embedder.name,
            backend=None if embedder.backend == "torch" else embedder.backend,
            candidate_stage=candidate_stage,
            lexical=lexical,
        ) as new:
            new.calibrate(head)
            logger.info("calibrated on the first %d documents", start)
            for s, e in _batches(start, batch_size):
                new.add(head[s:e], ids=list(ids[s:e]), texts=list(texts[s:e]), metadata=list(metadata[s:e]))
            add_all(new, start, [])

    try:
        if index is None:  # built beside index_dir and renamed into place: all or nothing
            create_directory(index_dir, build)
            index = Index.open(index_dir)
        else:
            added: list[Any] = []
            try:
                add_all(index, 0, added)
            except BaseException:
                if added:  # take back this run's committed batches: the index is as it was
                    logger.warning("indexing failed: removing the %d documents it added", len(added))
                    index.delete(added)
                raise
    except BaseException:
        if index is not None:
            index.close()
        raise
    finally:
        bar.close()
    index.embedder = embedder
    return index


def candidate_quantizer(spec: str) -> Any:
    """The candidate-tier quantizer named by ``spec``: a trained-head file (``quantsearch train``) or a
    quantizer name (``binary``, ``qat``, ...)."""
    from .quantization import load_quantizer, make_quantizer

    path = Path(spec)
    if path.suffix == ".npz" or path.is_file():
        return load_quantizer(path)
    return make_quantizer(spec)


def training_vectors(
    corpus: Path, *, model: str | None = None, cache_dir: str | None = None, progress: bool = True
) -> np.ndarray:
    """Document vectors to train on: a ``.npy`` matrix, or the (cached) embeddings of a corpus that
    :func:`read_documents` reads (BEIR folder, JSONL, folder of text files)."""
    from ._validation import as_float_matrix

    if corpus.suffix == ".npy":
        if not corpus.is_file():
            raise InvalidArgumentError(f"input not found: {corpus}")
        try:
            vectors = np.load(corpus, allow_pickle=False)
        except ValueError as exc:
            raise InvalidArgumentError(f"{corpus} is not a readable .npy array: {exc}") from None
        return as_float_matrix(vectors, f"vectors in {corpus}", allow_1d=False)
    from .embed import Embedder, EmbeddingCache

    _, texts, _ = read_documents(corpus)
    if not texts:
        raise InvalidArgumentError(f"{corpus} holds no documents")
    vectors, _ = EmbeddingCache(cache_dir).embed(Embedder(model), texts, progress=progress)
    return vectors
