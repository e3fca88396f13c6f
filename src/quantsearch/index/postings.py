"""In-memory BM25 postings of the lexical tier, scored with numpy.

Built from the analysed terms the catalog stores (``lexical_docs``) and extended after every add;
the catalog stays the durable, transactional copy (see :mod:`.lexical`). Scoring is bm25s's default
variant (Lucene): ``idf = log(1 + (N - df + 0.5) / (df + 0.5))`` and
``tf / (tf + k1 * (1 - b + b * dl / avgdl))``, summed over the query's terms (repeats included).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


class Postings:
    """Term -> (documents, term frequencies), document rows, ids and lengths; appended in batches."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.rows = np.empty(0, np.int64)  # internal doc -> index row
        self.ids = np.empty(0, object)  # internal doc -> document id (int or str)
        self.lengths = np.empty(0, np.float32)
        self.max_key = 0
        # unsorted (term, doc, tf) triples, appended per batch; sorted into CSR on the next search
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._indptr = np.zeros(1, np.int64)
        self._docs = np.empty(0, np.int32)
        self._tfs = np.empty(0, np.float32)
        self._weights = np.empty(0, np.float64)  # BM25 weight of each posting
        self._weights_for: tuple[float, float] | None = None  # the (k1, b) of _weights

    @property
    def n_docs(self) -> int:
        return int(self.rows.size)

    def extend(self, docs: Sequence[tuple[int, int, str, int | str]]) -> None:
        """Append documents ``(key, row, body, id)`` (bodies: terms joined by spaces), keys ascending."""
        if not docs:
            return
        first = self.n_docs
        terms: list[int] = []
        doc_ids: list[int] = []
        tfs: list[int] = []
        lengths = np.empty(len(docs), np.float32)
        vocab = self.vocab
        for i, (_key, _row, body, _id) in enumerate(docs):
            words = body.split()
            lengths[i] = len(words)
            for word, tf in Counter(words).items():
                tid = vocab.get(word)
                if tid is None:
                    tid = vocab[word] = len(vocab)
                terms.append(tid)
                doc_ids.append(first + i)
                tfs.append(tf)
        self.rows = np.concatenate([self.rows, np.fromiter((d[1] for d in docs), np.int64, len(docs))])
        ids = np.empty(len(docs), object)
        ids[:] = [d[3] for d in docs]
        self.ids = np.concatenate([self.ids, ids])
        self.lengths = np.concatenate([self.lengths, lengths])
        self.max_key = max(self.max_key, max(d[0] for d in docs))
        self._pending.append(
            (np.asarray(terms, np.int64), np.asarray(doc_ids, np.int32), np.asarray(tfs, np.float32))
        )

    def _compact(self, k1: float, b: float) -> None:
        """Merge pending triples into the CSR arrays (postings sorted by term, then document) and
        compute every posting's BM25 weight for ``k1``, ``b`` (they depend on N, df and the mean
        length: any add changes them all, so they are recomputed at the first search after it)."""
        if self._pending:
            n_old = self._docs.size
            old_terms = np.repeat(np.arange(self._indptr.size - 1, dtype=np.int64), np.diff(self._indptr))
            terms = np.concatenate([old_terms] + [t for t, _, _ in self._pending])
            docs = np.concatenate([self._docs] + [d for _, d, _ in self._pending])
            tfs = np.concatenate([self._tfs] + [f for _, _, f in self._pending])
            order = np.lexsort((docs, terms)) if n_old else np.argsort(terms, kind="stable")
            self._docs, self._tfs = docs[order], tfs[order]
            counts = np.bincount(terms, minlength=len(self.vocab))
            self._indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self._pending = []
            self._weights_for = None
        if self._weights_for == (k1, b) or self.n_docs == 0:
            return
        n = self.n_docs
        norm = k1 * (1.0 - b + b * self.lengths / max(float(self.lengths.mean()), 1e-9))
        df = np.diff(self._indptr)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        # float64 products of float32 tf terms, summed per document in posting order at search time
        self._weights = np.repeat(idf, df) * self._tfs / (self._tfs + norm[self._docs])
        self._weights_for = (k1, b)

    def search(
        self,
        queries: Sequence[Sequence[str]],
        depth: int,
        *,
        k1: float,
        b: float,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BM25 top ``depth`` of each query's terms: rows (nq, depth) int64 (-1 padding, ties to the
        smaller row), scores (nq, depth) float32 (nan padding) and the documents' ids (nq, depth)
        object (None padding); only documents matching a term, and only ``allowed`` rows (int64,
        e.g. a filter's) when given."""
        self._compact(k1, b)
        rows_out = np.full((len(queries), depth), -1, np.int64)
        scores_out = np.full((len(queries), depth), np.nan, np.float32)
        ids_out = np.full((len(queries), depth), None, object)
        if self.n_docs == 0:
            return rows_out, scores_out, ids_out
        keep = None
        if allowed is not None:  # internal documents whose row is allowed
            marks = np.zeros(max(int(self.rows.max()), int(allowed.max(initial=-1))) + 1, bool)
            marks[allowed] = True
            keep = marks[self.rows]
        for q, terms in enumerate(queries):
            docs, scores = self._search_one(terms, depth, keep)
            rows_out[q, : docs.size] = self.rows[docs]
            scores_out[q, : docs.size] = scores
            ids_out[q, : docs.size] = self.ids[docs]
        return rows_out, scores_out, ids_out

    def _search_one(
        self, terms: Sequence[str], depth: int, keep: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Internal documents and float32 scores of one query's best ``depth`` (fewer when fewer
        documents match), best first, ties to the smaller row."""
        vocab = self.vocab
        tids = [vocab[t] for t in terms if t in vocab]
        if not tids:
            return _EMPTY, _EMPTY_SCORES
        if len(tids) == 1:
            span = slice(self._indptr[tids[0]], self._indptr[tids[0] + 1])
            docs, weights = self._docs[span], self._weights[span]
        else:  # one gather of every posting of the query's terms (repeats included)
            t = np.asarray(tids, np.int64)
            starts, lens = self._indptr[t], self._indptr[t + 1] - self._indptr[t]
            offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
            docs, weights = self._docs[offsets], self._weights[offsets]
        # ranked by the float32 scores (as returned)
        scores = np.bincount(docs, weights=weights, minlength=self.n_docs).astype(np.float32)
        matched = np.flatnonzero(scores)  # every term weight is > 0 (idf > 0, tf > 0)
        if keep is not None:
            matched = matched[keep[matched]]
        if matched.size > depth:  # keep everything scoring at least the depth-th best (ties included)
            found = scores[matched]
            cut = matched.size - depth
            matched = matched[found >= np.partition(found, cut)[cut]]
        found = scores[matched]
        order = np.lexsort((self.rows[matched], -found))[:depth]
        return matched[order], found[order]


_EMPTY = np.empty(0, np.int64)
_EMPTY_SCORES = np.empty(0, np.float32)
