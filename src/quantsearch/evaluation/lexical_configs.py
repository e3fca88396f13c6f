"""Lexical, hybrid and SVM rows of ``quantsearch eval``, and their peers (bm25s, rank-bm25).

These rows need the collection's texts besides the embeddings: their searchers are
:class:`TextSearcher` s, which the harness gives the query texts of each block.

Specs::

    bm25                                  BM25 from the index's lexical tier (SQLite FTS5)
    hybrid-rrf[@W][:float32]              dense + BM25, reciprocal rank fusion (dense weight W, default 0.5)
    hybrid-convex[@W][:float32]           dense + BM25, convex combination of min-max normalised scores
    svm[:float32]                         dense candidates reranked by a per-query linear SVM
    bm25s, rank-bm25                      peers, on the analyzer's tokens (the same tokenization)

The dense side is the index pipeline ``binary > int8`` at oversampling 10; ``:float32`` makes it exact
float32 instead (a float32 rescoring tier that scores every document), the reference of the goal
"hybrid over the compressed pipeline within 0.3 points of hybrid over float32".
"""

from __future__ import annotations

import re
import tempfile
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch.evaluation.configs import LEXICAL_CONFIGS, LEXICAL_PEERS, Config, Searcher, _import
from quantsearch.exceptions import InvalidArgumentError
from quantsearch.fusion import Fusion
from quantsearch.index import Index
from quantsearch.text import TextAnalyzer

__all__ = ["LEXICAL_CONFIGS", "LEXICAL_PEERS", "TextConfig", "TextSearcher", "parse_text_config"]

_SPEC = re.compile(r"^(bm25|hybrid-rrf|hybrid-convex|svm|bm25s|rank-bm25)(?:@([0-9]*\.?[0-9]+))?(:float32)?$")


class TextSearcher(Searcher):
    """A searcher that needs the query texts as well as their vectors."""

    @abstractmethod
    def search_texts(self, queries: np.ndarray, texts: Sequence[str], k: int) -> np.ndarray:
        """Rows (nq, k) int64 of ``queries`` (nq, dim) float32 with their ``texts``; ``-1`` padding."""

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        raise InvalidArgumentError(f"{type(self).__name__} needs the query texts: use search_texts")


@dataclass(frozen=True)
class TextConfig(Config):
    """A configuration whose searcher reads texts (built with the corpus texts)."""

    kind: str = "bm25"
    weight: float = 0.5
    exact: bool = False

    @property
    def peer(self) -> bool:
        return self.kind in ("bm25s", "rank-bm25")

    def warm_up(self) -> None:
        if self.kind == "bm25s":
            _import("bm25s")
        elif self.kind == "rank-bm25":
            _import("rank_bm25")
        TextAnalyzer()  # PyStemmer

    def build(self, docs: np.ndarray, workdir: Path) -> Searcher:
        raise InvalidArgumentError(f"configuration {self.name!r} needs the corpus texts: use build_texts")

    def build_texts(self, docs: np.ndarray, texts: Sequence[str], workdir: Path) -> TextSearcher:
        if self.kind == "bm25s":
            return _Bm25sPeer(texts)
        if self.kind == "rank-bm25":
            return _RankBm25Peer(texts)
        return _LexicalIndexSearcher(self, docs, texts, workdir)


def parse_text_config(spec: str) -> TextConfig | None:
    """The :class:`TextConfig` of a spec, or None when the spec is not a text configuration."""
    text = spec.strip().lower()
    match = _SPEC.match(text)
    if match is None:
        return None
    kind, weight, exact = match.group(1), match.group(2), bool(match.group(3))
    if weight is not None and not kind.startswith("hybrid"):
        raise InvalidArgumentError(f"configuration {spec!r}: only hybrid rows take a weight (@W)")
    if exact and kind in ("bm25", "bm25s", "rank-bm25"):
        raise InvalidArgumentError(f"configuration {spec!r}: a lexical row has no dense side")
    w = 0.5 if weight is None else float(weight)
    if not 0 <= w <= 1:
        raise InvalidArgumentError(f"configuration {spec!r}: the weight must be in [0, 1]")
    return TextConfig(text, kind=kind, weight=w, exact=exact)


class _LexicalIndexSearcher(TextSearcher):
    def __init__(self, config: TextConfig, docs: np.ndarray, texts: Sequence[str], workdir: Path) -> None:
        self._folder = tempfile.TemporaryDirectory(dir=workdir, prefix="index-")
        rescore = ["float32"] if config.exact else ["int8"]
        self.index = Index.build(
            Path(self._folder.name) / "index", docs, texts=list(texts), lexical=True, rescore=rescore
        )
        self.kind = config.kind
        # exact: every document is a float32 candidate; else binary -> int8 at x10
        self.oversampling = float(docs.shape[0]) if config.exact else 10.0
        self.mode = "lexical" if config.kind == "bm25" else "svm" if config.kind == "svm" else "hybrid"
        method: Any = config.kind.removeprefix("hybrid-")
        self.fusion = Fusion(method, config.weight) if self.mode == "hybrid" else None
        info = self.index.info()
        tiers = {t["name"]: t for t in info["tiers"]}
        if self.mode == "lexical":  # the catalog (texts + full-text index) is its whole footprint on disk
            self.disk_bytes_per_vector = info["catalog_bytes"] / max(len(docs), 1)
        else:
            self.ram_bytes_per_vector = float(tiers["binary"]["bytes_per_vector"])
            self.disk_bytes_per_vector = float(tiers[rescore[0]]["bytes_per_vector"])

    def search_texts(self, queries: np.ndarray, texts: Sequence[str], k: int) -> np.ndarray:
        res = self.index.search(
            list(texts) if self.mode == "lexical" else queries, k=k, oversampling=self.oversampling,
            mode=self.mode, fusion=self.fusion, query_texts=None if self.mode == "lexical" else list(texts),
            with_payload=False,
        )  # fmt: skip
        return np.asarray(res.ids, np.int64)  # documents were added with ids 0..n-1 = rows

    def close(self) -> None:
        self.index.close()
        self._folder.cleanup()


class _Bm25sPeer(TextSearcher):
    """bm25s (default parameters: Lucene idf, k1 = 1.5, b = 0.75) on the analyzer's tokens."""

    def __init__(self, texts: Sequence[str]) -> None:
        bm25s = _import("bm25s")
        self.analyzer = TextAnalyzer()
        self.retriever = bm25s.BM25()
        self.retriever.index([self.analyzer.tokens(t) for t in texts], show_progress=False)
        self.n = len(texts)

    def search_texts(self, queries: np.ndarray, texts: Sequence[str], k: int) -> np.ndarray:
        tokens = [self.analyzer.tokens(t) or [""] for t in texts]
        rows, scores = self.retriever.retrieve(tokens, k=min(k, self.n), show_progress=False)
        rows = np.where(scores > 0, rows, -1).astype(np.int64)
        return _pad(rows, k)


class _RankBm25Peer(TextSearcher):
    """rank-bm25's BM25Okapi (k1 = 1.5, b = 0.75, epsilon = 0.25) on the analyzer's tokens."""

    def __init__(self, texts: Sequence[str]) -> None:
        rank_bm25 = _import("rank_bm25")
        self.analyzer = TextAnalyzer()
        self.model = rank_bm25.BM25Okapi([self.analyzer.tokens(t) or [""] for t in texts])

    def search_texts(self, queries: np.ndarray, texts: Sequence[str], k: int) -> np.ndarray:
        out = np.full((len(texts), k), -1, np.int64)
        for q, text in enumerate(texts):
            scores = np.asarray(self.model.get_scores(self.analyzer.tokens(text)))
            order = np.lexsort((np.arange(scores.size), -scores))[:k]
            order = order[scores[order] > 0]
            out[q, : order.size] = order
        return out


def _pad(rows: np.ndarray, k: int) -> np.ndarray:
    if rows.shape[1] < k:
        rows = np.pad(rows, ((0, 0), (0, k - rows.shape[1])), constant_values=-1)
    return rows


def text_configs(specs: Sequence[Any]) -> list[TextConfig]:
    """The text configurations among ``specs`` (others are left to :func:`parse_config`)."""
    return [c for c in (parse_text_config(s) for s in specs if isinstance(s, str)) if c is not None]
