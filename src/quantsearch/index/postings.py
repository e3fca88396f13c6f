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

from .._topk import top_k


class Postings:
    """Term -> (documents, term frequencies), document rows and lengths; appended in batches."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.rows = np.empty(0, np.int64)  # internal doc -> index row
        self.lengths = np.empty(0, np.float32)
        self.max_key = 0
        # unsorted (term, doc, tf) triples, appended per batch; sorted into CSR on the next search
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._indptr = np.zeros(1, np.int64)
        self._docs = np.empty(0, np.int32)
        self._tfs = np.empty(0, np.float32)

    @property
    def n_docs(self) -> int:
        return int(self.rows.size)

    def extend(self, docs: Sequence[tuple[int, int, str]]) -> None:
        """Append documents ``(key, row, body)`` (bodies: terms joined by spaces), keys ascending."""
        if not docs:
            return
        first = self.n_docs
        terms: list[int] = []
        doc_ids: list[int] = []
        tfs: list[int] = []
        lengths = np.empty(len(docs), np.float32)
        vocab = self.vocab
        for i, (_key, _row, body) in enumerate(docs):
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
        self.lengths = np.concatenate([self.lengths, lengths])
        self.max_key = max(self.max_key, max(d[0] for d in docs))
        self._pending.append(
            (np.asarray(terms, np.int64), np.asarray(doc_ids, np.int32), np.asarray(tfs, np.float32))
        )

    def _compact(self) -> None:
        """Merge pending triples into the CSR arrays (postings sorted by term, then document)."""
        if not self._pending:
            return
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

    def search(
        self, queries: Sequence[Sequence[str]], depth: int, *, k1: float, b: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top ``depth`` of each query's terms: rows (nq, depth) int64 (-1 padding, ties to the
        smaller row) and scores (nq, depth) float32 (nan padding); only documents matching a term."""
        self._compact()
        n = self.n_docs
        rows_out = np.full((len(queries), depth), -1, np.int64)
        scores_out = np.full((len(queries), depth), np.nan, np.float32)
        if n == 0:
            return rows_out, scores_out
        norm = k1 * (1.0 - b + b * self.lengths / max(float(self.lengths.mean()), 1e-9))
        vocab, df = self.vocab, np.diff(self._indptr)
        for q, terms in enumerate(queries):
            tids = np.fromiter((vocab[t] for t in terms if t in vocab), np.int64)
            if tids.size == 0:
                continue
            starts, lens = self._indptr[tids], df[tids]
            # one gather of every posting of the query's terms (repeats included)
            offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
            docs, tfs = self._docs[offsets], self._tfs[offsets]
            idf = np.log1p((n - lens + 0.5) / (lens + 0.5))
            weights = np.repeat(idf, lens) * tfs / (tfs + norm[docs])
            scores = np.bincount(docs, weights=weights, minlength=n)
            matched = np.flatnonzero(scores)  # every term weight is > 0 (idf > 0, tf > 0)
            found_rows, found_scores = top_k(
                self.rows[matched][None, :], scores[matched][None, :].astype(np.float32), depth
            )
            rows_out[q, : found_rows.shape[1]] = found_rows[0]
            scores_out[q, : found_rows.shape[1]] = found_scores[0]
        return rows_out, scores_out
