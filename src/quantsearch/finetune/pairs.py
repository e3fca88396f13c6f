"""Training pairs that never touch the test split: train qrels, or inverse cloze pairs from the corpus."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import EmptyInputError, InvalidArgumentError

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_MIN_QUERY_WORDS = 4
#: Options of :func:`inverse_cloze_pairs` that :func:`training_pairs` uses for a corpus without train
#: qrels (chosen with the head recipe, :data:`quantsearch.finetune.config.CORPUS_ONLY_RECIPE`, on held-out
#: cloze pairs of cranfield and cisi): every usable sentence of a passage is a query for it, ~3.5x the
#: pairs of two per passage (validation NDCG@10 +0.027 on cranfield, +0.014 on cisi; docs/benchmarks.md).
CORPUS_ONLY_PAIRS: dict[str, Any] = {"per_doc": None}


@dataclass(frozen=True)
class TrainingPairs:
    """Query-document training pairs.

    Attributes
    ----------
    query_texts : list of str
        One entry per training query.
    doc_texts : list of str
        Texts of the documents the queries point to.
    positives : list of ndarray of int64
        ``positives[i]``: indices into ``doc_texts`` of the documents relevant to query ``i`` (one
        is drawn each time the query is used).
    doc_groups : ndarray of shape (len(doc_texts),), int64
        The corpus document each entry of ``doc_texts`` comes from; an in-batch document of the same
        group as one of a query's positives is not used as a negative for it.
    source : str
        How the pairs were made: ``"qrels:<split>"`` or ``"inverse-cloze"``.
    """

    query_texts: list[str]
    doc_texts: list[str]
    positives: list[np.ndarray]
    doc_groups: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.query_texts)

    def __post_init__(self) -> None:
        if not self.query_texts:
            raise EmptyInputError("no training pairs: the collection gave no usable query-document pair")
        if len(self.positives) != len(self.query_texts):
            raise InvalidArgumentError(
                f"positives has {len(self.positives)} entries, expected one per query "
                f"({len(self.query_texts)})"
            )
        if self.doc_groups.shape != (len(self.doc_texts),):
            raise InvalidArgumentError(
                f"doc_groups must have shape ({len(self.doc_texts)},), got {self.doc_groups.shape}"
            )


def _body(text: str, title: str) -> str:
    """The passage without the title that the BEIR loader put in front of it."""
    return text[len(title) + 1 :] if title and text.startswith(title + " ") else text


def _normal(text: str) -> str:
    """Lower case, words only: what two near-identical sentences share."""
    return " ".join(re.findall(r"\w+", text.lower()))


def inverse_cloze_pairs(
    texts: Sequence[str],
    *,
    titles: Sequence[str] | None = None,
    per_doc: int | None = 2,
    keep_sentence: float = 0.1,
    drop_duplicates: bool = False,
    title_queries: bool = False,
    seed: int = 0,
) -> TrainingPairs:
    """Inverse cloze pairs made from a corpus alone: a sentence as the query, its passage as the document.

    Parameters
    ----------
    texts : sequence of str
        The corpus documents (the title, if any, in front of the body, as ``load_beir`` joins them).
    titles : sequence of str, optional
        The documents' titles (the title stays in the document; sentences are drawn from the body).
    per_doc : int or None, default 2
        Sentences drawn per document (without repetition; fewer when the body has fewer usable ones);
        None: every usable sentence.
    keep_sentence : float, default 0.1
        Probability that the sentence is left in the document (as in Lee et al., 2019), so that the
        model also learns some lexical matching.
    drop_duplicates : bool, default False
        Skip sentences that repeat the title or an earlier sentence of the corpus (word for word, case
        and punctuation aside): e.g. cranfield's bodies start with their title, a pair that only
        teaches copying.
    title_queries : bool, default False
        Also use each title (when it has at least 4 words) as a query for its passage.
    seed : int, default 0

    Returns
    -------
    TrainingPairs
        ``source == "inverse-cloze"``; every document text is its own positive and groups are the
        corpus rows.
    """
    if per_doc is not None and (isinstance(per_doc, bool) or not isinstance(per_doc, int) or per_doc < 1):
        raise InvalidArgumentError(f"per_doc must be >= 1 or None, got {per_doc!r}")
    if not 0.0 <= keep_sentence <= 1.0:
        raise InvalidArgumentError(f"keep_sentence must be in [0, 1], got {keep_sentence}")
    rng = np.random.default_rng(seed)
    queries: list[str] = []
    docs: list[str] = []
    groups: list[int] = []
    seen: set[str] = set()
    for row, text in enumerate(texts):
        title = titles[row] if titles is not None else ""
        sentences = [s.strip() for s in _SENTENCE_SPLIT.split(_body(text, title)) if s.strip()]
        usable = [i for i, s in enumerate(sentences) if len(s.split()) >= _MIN_QUERY_WORDS]
        if drop_duplicates:
            seen.add(_normal(title))
            kept = []
            for i in usable:
                key = _normal(sentences[i])
                if key not in seen:
                    seen.add(key)
                    kept.append(i)
            usable = kept
        if title_queries and len(title.split()) >= _MIN_QUERY_WORDS and len(sentences) >= 1:
            queries.append(title)
            docs.append(" ".join(sentences))
            groups.append(row)
        if len(sentences) < 2 or not usable:
            continue
        for pick in rng.permutation(usable)[:per_doc]:
            keep = rng.random() < keep_sentence
            rest = sentences if keep else sentences[:pick] + sentences[pick + 1 :]
            queries.append(sentences[pick])
            docs.append(f"{title} {' '.join(rest)}" if title else " ".join(rest))
            groups.append(row)
    positives = [np.array([i], np.int64) for i in range(len(docs))]
    return TrainingPairs(queries, docs, positives, np.asarray(groups, np.int64), "inverse-cloze")


def qrels_pairs(dataset: Any, *, exclude_queries: set[str] | frozenset[str] = frozenset()) -> TrainingPairs:
    """Pairs from a loaded BEIR split: every judged query with its relevant documents.

    Parameters
    ----------
    dataset : BeirDataset
        A split loaded with :func:`quantsearch.datasets.load_beir` (e.g. ``split="train"``).
    exclude_queries : set of str
        Query ids to leave out (those of the test split).
    """
    row_of = {doc_id: row for row, doc_id in enumerate(dataset.corpus_ids)}
    queries: list[str] = []
    positives: list[np.ndarray] = []
    for qid, text in zip(dataset.query_ids, dataset.query_texts, strict=True):
        if qid in exclude_queries:
            continue
        rows = [row_of[d] for d, rel in dataset.qrels.get(qid, {}).items() if rel > 0 and d in row_of]
        if rows:
            queries.append(text)
            positives.append(np.array(sorted(rows), np.int64))
    n = len(dataset.corpus_texts)
    return TrainingPairs(
        queries, list(dataset.corpus_texts), positives, np.arange(n, dtype=np.int64), f"qrels:{dataset.name}"
    )


def training_pairs(
    dataset_dir: str | os.PathLike[str],
    *,
    pairs: str = "auto",
    train_split: str = "train",
    test_split: str = "test",
    seed: int = 0,
    cloze: dict[str, Any] | None = None,
) -> TrainingPairs:
    """The training pairs of a BEIR folder: its train qrels when it has them, else inverse cloze pairs.

    Parameters
    ----------
    dataset_dir : path-like
        A BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/).
    pairs : {"auto", "qrels", "cloze"}
        ``"auto"``: ``qrels/<train_split>.tsv`` when present, else inverse cloze.
    train_split, test_split : str
        Queries judged in ``test_split`` are never trained on, even when ``train_split`` lists them.
    seed : int
    cloze : dict, optional
        Options of :func:`inverse_cloze_pairs` (default :data:`CORPUS_ONLY_PAIRS`).

    Raises
    ------
    InvalidArgumentError
        Unknown ``pairs``, not a BEIR folder, ``pairs="qrels"`` without train qrels, or
        ``train_split == test_split``.
    """
    from ..datasets import load_beir

    if pairs not in ("auto", "qrels", "cloze"):
        raise InvalidArgumentError(f"pairs must be 'auto', 'qrels' or 'cloze', got {pairs!r}")
    if train_split == test_split:
        raise InvalidArgumentError(f"train_split must differ from test_split ({test_split!r})")
    root = Path(dataset_dir)
    if not (root / "corpus.jsonl").is_file():
        raise InvalidArgumentError(f"{root} is not a BEIR folder (no corpus.jsonl)")
    has_train = (root / "qrels" / f"{train_split}.tsv").is_file()
    if pairs == "qrels" and not has_train:
        raise InvalidArgumentError(f"{root} has no qrels/{train_split}.tsv for pairs='qrels'")
    if pairs == "qrels" or (pairs == "auto" and has_train):
        test_ids: set[str] = set()
        if (root / "qrels" / f"{test_split}.tsv").is_file():
            test_ids = set(load_beir(root, test_split).qrels)
        result = qrels_pairs(load_beir(root, train_split), exclude_queries=test_ids)
        return TrainingPairs(
            result.query_texts, result.doc_texts, result.positives, result.doc_groups, f"qrels:{train_split}"
        )
    # corpus only: the split argument just has to name a file the loader accepts; no query is read
    corpus = _corpus_only(root)
    options = CORPUS_ONLY_PAIRS if cloze is None else cloze
    return inverse_cloze_pairs(corpus[0], titles=corpus[1], seed=seed, **options)


def _corpus_only(root: Path) -> tuple[list[str], list[str]]:
    from ..datasets import read_jsonl_texts

    _, texts, meta = read_jsonl_texts(root / "corpus.jsonl")
    titles = [str(m.get("title") or "") for m in meta]
    return texts, titles


def head_positives(pairs: TrainingPairs) -> list[np.ndarray]:
    """Positives as corpus rows (what :func:`train_code_head` scores against): the groups of the
    pairs' documents (for qrels pairs the rows themselves; for inverse cloze the source passage)."""
    return [np.unique(pairs.doc_groups[p]) for p in pairs.positives]
