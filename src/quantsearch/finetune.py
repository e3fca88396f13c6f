"""Fine-tuning a sentence-transformers encoder for its 1-bit code (Hamming-aware contrastive training).

The model is trained end to end so that the sign bits of its embeddings, compared by Hamming
distance, rank documents well: the objective is an in-batch contrastive loss (InfoNCE) over a
differentiable Hamming surrogate. With ``z = sqrt(dim) * e`` (``e`` the unit embedding, so that
``z`` has unit RMS per dimension) the soft code is ``tanh(beta * z)`` and the surrogate similarity
of a query and a document is ``<tanh(beta z_q), tanh(beta z_d)> / dim``: for ``beta -> inf`` this is
``1 - 2 * hamming / dim``, the similarity the index ranks by. ``beta`` grows geometrically during
training (soft early, close to the sign at the end). Two more terms keep the float embedding useful:
the same contrastive loss on the cosine, and distillation of the base model's in-batch ranking
(KL divergence between the frozen base model's softmax over the batch's documents and the soft
codes' softmax).

Pairs never come from the test split: :func:`training_pairs` uses a collection's ``train`` qrels
when it has them (queries that also appear in the test qrels are dropped) and otherwise makes
inverse cloze pairs from the corpus (:func:`inverse_cloze_pairs`: a sentence as the query, its
passage without that sentence as the document).

torch and sentence-transformers are imported lazily (extra ``embed``); training runs on the CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import EmptyInputError, InvalidArgumentError, MissingDependencyError

__all__ = [
    "TRAINING_REPORT",
    "CodeHead",
    "FinetuneConfig",
    "FinetuneResult",
    "HeadConfig",
    "TrainingPairs",
    "finetune",
    "head_positives",
    "inverse_cloze_pairs",
    "qrels_pairs",
    "save_with_head",
    "soft_code_similarity",
    "train_code_head",
    "train_model",
    "training_pairs",
]

logger = logging.getLogger(__name__)

#: File written into a fine-tuned model folder with the recipe and the training figures.
TRAINING_REPORT = "quantsearch_training.json"

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_MIN_QUERY_WORDS = 4


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


def inverse_cloze_pairs(
    texts: Sequence[str],
    *,
    titles: Sequence[str] | None = None,
    per_doc: int = 2,
    keep_sentence: float = 0.1,
    seed: int = 0,
) -> TrainingPairs:
    """Inverse cloze pairs made from a corpus alone: a sentence as the query, its passage as the document.

    Parameters
    ----------
    texts : sequence of str
        The corpus documents (the title, if any, in front of the body, as ``load_beir`` joins them).
    titles : sequence of str, optional
        The documents' titles (the title stays in the document; sentences are drawn from the body).
    per_doc : int, default 2
        Sentences drawn per document (without repetition; fewer when the body has fewer usable ones).
    keep_sentence : float, default 0.1
        Probability that the sentence is left in the document (as in Lee et al., 2019), so that the
        model also learns some lexical matching.
    seed : int, default 0

    Returns
    -------
    TrainingPairs
        ``source == "inverse-cloze"``; every document text is its own positive and groups are the
        corpus rows.
    """
    if per_doc < 1:
        raise InvalidArgumentError(f"per_doc must be >= 1, got {per_doc}")
    if not 0.0 <= keep_sentence <= 1.0:
        raise InvalidArgumentError(f"keep_sentence must be in [0, 1], got {keep_sentence}")
    rng = np.random.default_rng(seed)
    queries: list[str] = []
    docs: list[str] = []
    groups: list[int] = []
    for row, text in enumerate(texts):
        title = titles[row] if titles is not None else ""
        sentences = [s.strip() for s in _SENTENCE_SPLIT.split(_body(text, title)) if s.strip()]
        usable = [i for i, s in enumerate(sentences) if len(s.split()) >= _MIN_QUERY_WORDS]
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

    Raises
    ------
    InvalidArgumentError
        Unknown ``pairs``, not a BEIR folder, ``pairs="qrels"`` without train qrels, or
        ``train_split == test_split``.
    """
    from .datasets import load_beir

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
    return inverse_cloze_pairs(corpus[0], titles=corpus[1], seed=seed)


def _corpus_only(root: Path) -> tuple[list[str], list[str]]:
    from .datasets import read_jsonl_texts

    _, texts, meta = read_jsonl_texts(root / "corpus.jsonl")
    titles = [str(m.get("title") or "") for m in meta]
    return texts, titles


@dataclass
class FinetuneConfig:
    """The training recipe (every field is recorded in the model folder).

    Attributes
    ----------
    steps : int
        Optimiser steps (batches).
    batch_size : int
        Queries per batch; every other document of the batch is a negative.
    lr : float
        Peak AdamW learning rate (linear warm-up over ``warmup`` of the steps, then linear decay).
    temperature : float
        Softmax temperature of the contrastive terms (similarities lie in [-1, 1]).
    beta_start, beta_end : float
        Scale of ``tanh(beta * z)`` at the first and the last step (geometric schedule).
    float_weight : float
        Weight of the contrastive loss on the float cosine.
    distill_weight : float
        Weight of the distillation of the base model's in-batch ranking (0: no teacher forward).
    max_seq_length : int
        Tokens per text during training.
    seed : int
    threads : int or None
        torch threads (None: torch's default).
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-5
    warmup: float = 0.1
    temperature: float = 0.05
    beta_start: float = 1.0
    beta_end: float = 10.0
    float_weight: float = 0.5
    distill_weight: float = 1.0
    max_seq_length: int = 256
    seed: int = 0
    threads: int | None = None

    def validate(self) -> None:
        _check_recipe(self, ("steps", "batch_size", "max_seq_length"), ("float_weight", "distill_weight"))
        if self.batch_size < 2:
            raise InvalidArgumentError(f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if not 0.0 <= self.warmup < 1.0:
            raise InvalidArgumentError(f"warmup must be in [0, 1), got {self.warmup!r}")


def _check_recipe(recipe: Any, positive_ints: Sequence[str], non_negative: Sequence[str]) -> None:
    """Validate a training recipe: the named positive ints, the tanh/LR/temperature numbers (> 0) and
    the named weights (>= 0), each error naming the field and the value."""
    for name in positive_ints:
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    for name in ("lr", "temperature", "beta_start", "beta_end"):
        value = getattr(recipe, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}")
    for name in non_negative:
        value = getattr(recipe, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise InvalidArgumentError(f"{name} must be a number >= 0, got {value!r}")


@dataclass
class FinetuneResult:
    """What :func:`finetune` did: the folder written and the figures of the run."""

    path: Path
    report: dict[str, Any] = field(default_factory=dict)


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingDependencyError(
            'fine-tuning needs torch and sentence-transformers: pip install "quantsearch[embed]"'
        ) from exc
    return torch, SentenceTransformer


def beta_at(step: int, steps: int, start: float, end: float) -> float:
    """Geometric schedule of the tanh scale: ``start`` at step 0, ``end`` at the last step."""
    frac = step / max(steps - 1, 1)
    return float(start * (end / start) ** frac)


def soft_code_similarity(torch: Any, q: Any, d: Any, beta: float) -> Any:
    """Surrogate of ``1 - 2 * hamming / dim`` between sign codes of ``q`` and ``d``.

    Parameters
    ----------
    q : Tensor of shape (nq, dim), d : Tensor of shape (nd, dim)
        Embeddings (any scale: they are brought to unit RMS per dimension first).
    beta : float
        tanh scale; as it grows the result tends to the exact Hamming similarity of the signs.

    Returns
    -------
    Tensor of shape (nq, nd)
    """
    dim = q.shape[1]
    zq = q * (math.sqrt(dim) / q.norm(dim=1, keepdim=True).clamp_min(1e-12))
    zd = d * (math.sqrt(dim) / d.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return torch.tanh(beta * zq) @ torch.tanh(beta * zd).T / dim


def _load_model(SentenceTransformer: Any, model: str | None) -> Any:
    from .embed import Embedder

    return Embedder(model).model  # the bundled default offline, a path or a name otherwise


def _encode_train(model: Any, texts: list[str]) -> Any:
    features = model.tokenize(texts)
    return model(features)["sentence_embedding"]


def _batch_indices(
    pairs: TrainingPairs, rng: np.random.Generator, order: list[int], batch_size: int
) -> tuple[list[int], list[int]]:
    """Next batch: queries from a running permutation, one positive drawn for each, no repeated group."""
    queries: list[int] = []
    docs: list[int] = []
    groups: set[int] = set()
    while len(queries) < batch_size:
        if not order:
            order.extend(rng.permutation(len(pairs)).tolist())
        i = order.pop()
        pos = pairs.positives[i]
        d = int(pos[rng.integers(pos.size)])
        g = int(pairs.doc_groups[d])
        if g in groups and len(groups) < len(pairs.doc_groups):
            continue  # the same document twice in a batch would be its own false negative
        queries.append(i)
        docs.append(d)
        groups.add(g)
    return queries, docs


def _negative_mask(pairs: TrainingPairs, queries: list[int], docs: list[int]) -> np.ndarray:
    """(b, b) bool: True where document j is relevant to query i but is not its drawn positive."""
    batch_groups = pairs.doc_groups[np.asarray(docs)]
    mask = np.zeros((len(queries), len(docs)), bool)
    for a, q in enumerate(queries):
        relevant = pairs.doc_groups[pairs.positives[q]]
        mask[a] = np.isin(batch_groups, relevant)
        mask[a, a] = False
    return mask


def finetune(
    pairs: TrainingPairs,
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
    config: FinetuneConfig | None = None,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int, Any], dict[str, Any] | None] | None = None,
    progress: bool = False,
) -> FinetuneResult:
    """Fine-tune a sentence-transformers model so that its sign bits rank documents well.

    Parameters
    ----------
    pairs : TrainingPairs
        From :func:`training_pairs` (never the test split).
    out : path-like
        Folder to write the trained model to (a sentence-transformers folder, usable as ``model`` by
        :class:`~quantsearch.embed.Embedder`, ``quantsearch index/search/serve/eval --model``). It must
        not exist or be empty; the model is written to a temporary sibling and renamed into place.
    model : str, optional
        The base model (default: the bundled all-MiniLM-L6-v2).
    config : FinetuneConfig, optional
    checkpoints : sequence of int
        Steps after which ``on_checkpoint(step, model)`` is called (0: before training), e.g. to
        measure NDCG against the number of steps; the model is in eval mode during the call and
        whatever the call returns is recorded in the report.
    progress : bool
        tqdm progress bar.

    Returns
    -------
    FinetuneResult
    """
    config = config or FinetuneConfig()
    config.validate()
    out_path = Path(out)
    _check_out(out_path)
    torch, SentenceTransformer = _imports()
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        report = _train(
            torch, SentenceTransformer, pairs, out_path, model, config, checkpoints, on_checkpoint, progress
        )
    finally:
        torch.set_num_threads(previous_threads)
    return FinetuneResult(out_path, report)


def _train(
    torch: Any,
    SentenceTransformer: Any,
    pairs: TrainingPairs,
    out_path: Path,
    model_name: str | None,
    config: FinetuneConfig,
    checkpoints: Sequence[int],
    on_checkpoint: Callable[[int, Any], dict[str, Any] | None] | None,
    progress: bool,
) -> dict[str, Any]:
    from .embed import Embedder

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    base_name = Embedder(model_name).name
    student = _load_model(SentenceTransformer, model_name)
    student.max_seq_length = config.max_seq_length
    teacher = None
    if config.distill_weight > 0:
        teacher = _load_model(SentenceTransformer, model_name)
        teacher.max_seq_length = config.max_seq_length
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.01)
    warm = max(1, int(config.warmup * config.steps))

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (config.steps - step) / max(1, config.steps - warm))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    inv_t = 1.0 / config.temperature
    report: dict[str, Any] = {
        "base_model": base_name,
        "pairs": {"source": pairs.source, "queries": len(pairs), "documents": len(pairs.doc_texts)},
        "config": asdict(config),
        "loss": [],
        "checkpoints": [],
    }
    marks = set(int(c) for c in checkpoints)

    def checkpoint(step: int) -> None:
        if on_checkpoint is None or step not in marks:
            return
        student.eval()
        with torch.no_grad():
            figures = on_checkpoint(step, student)
        report["checkpoints"].append({"step": step, **(figures or {})})
        student.train()

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.steps, desc="training", unit="step")
        except ImportError:
            bar = None
    checkpoint(0)
    student.train()
    order: list[int] = []
    window: list[float] = []
    t0 = time.perf_counter()
    for step in range(config.steps):
        qi, di = _batch_indices(pairs, rng, order, config.batch_size)
        q_texts = [pairs.query_texts[i] for i in qi]
        d_texts = [pairs.doc_texts[i] for i in di]
        mask = torch.from_numpy(_negative_mask(pairs, qi, di))
        q = _encode_train(student, q_texts)
        d = _encode_train(student, d_texts)
        beta = beta_at(step, config.steps, config.beta_start, config.beta_end)
        code_logits = (soft_code_similarity(torch, q, d, beta) * inv_t).masked_fill(mask, -1e4)
        labels = torch.arange(len(qi))
        loss = torch.nn.functional.cross_entropy(code_logits, labels)
        if config.float_weight > 0:
            cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(d, dim=1).T
            float_logits = (cos * inv_t).masked_fill(mask, -1e4)
            loss = loss + config.float_weight * torch.nn.functional.cross_entropy(float_logits, labels)
        if teacher is not None:
            with torch.no_grad():
                tq = torch.nn.functional.normalize(_encode_train(teacher, q_texts), dim=1)
                td = torch.nn.functional.normalize(_encode_train(teacher, d_texts), dim=1)
                target = torch.softmax((tq @ td.T * inv_t).masked_fill(mask, -1e4), dim=1)
            log_pred = torch.log_softmax(code_logits, dim=1)
            kl = (target * (torch.log(target.clamp_min(1e-12)) - log_pred)).sum(dim=1).mean()
            loss = loss + config.distill_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        window.append(float(loss.detach()))
        if len(window) == 25 or step == config.steps - 1:
            report["loss"].append({"step": step + 1, "loss": round(float(np.mean(window)), 5)})
            logger.info("step %d/%d loss %.4f beta %.2f", step + 1, config.steps, np.mean(window), beta)
            window = []
        if bar is not None:
            bar.update(1)
        checkpoint(step + 1)
    report["train_seconds"] = round(time.perf_counter() - t0, 1)
    if bar is not None:
        bar.close()
    student.eval()
    _save(student, out_path, report)
    return report


@dataclass
class HeadConfig:
    """Recipe of the code head trained on frozen embeddings (:func:`train_code_head`).

    Attributes
    ----------
    epochs : int
        Passes over the training queries; the epoch with the best validation NDCG@10 (Hamming
        ranking of held-out training queries) is kept, epoch 0 being the ITQ start.
    batch_size : int
        Queries per step; every corpus document is a candidate (full softmax, not in-batch).
    lr : float
        Adam learning rate.
    temperature : float
        Softmax temperature over similarities in [-1, 1].
    beta_start, beta_end : float
        tanh scale at the first and last epoch (geometric).
    distill_weight : float
        Weight of the KL term pulling the codes' ranking over the corpus towards the base model's
        float ranking.
    val_fraction : float
        Share of training queries held out to choose the epoch.
    seed : int
    """

    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    temperature: float = 0.05
    beta_start: float = 1.0
    beta_end: float = 10.0
    distill_weight: float = 0.5
    val_fraction: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        _check_recipe(self, ("epochs", "batch_size"), ("distill_weight",))
        if not 0.0 <= self.val_fraction < 1.0:
            raise InvalidArgumentError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")


@dataclass
class CodeHead:
    """An affine map whose sign bits are the codes: ``codes = sign(weight @ e + bias)``.

    Attributes
    ----------
    weight : ndarray of shape (bits, dim), float32
    bias : ndarray of shape (bits,), float32
    report : dict
        Validation figures per epoch, the epoch kept, the recipe.
    """

    weight: np.ndarray
    bias: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """``normalize(vectors @ weight.T + bias)``: what the saved model outputs for base embeddings.

        Parameters
        ----------
        vectors : ndarray of shape (n, dim), float32
            Base model embeddings (unit norm).

        Returns
        -------
        ndarray of shape (n, bits), float32, unit rows
        """
        out = vectors @ self.weight.T + self.bias
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


def _hamming_ndcg(scores: np.ndarray, positives: Sequence[np.ndarray], k: int = 10) -> float:
    """Mean NDCG@k with binary relevance of each row of ``scores`` (nq, n); ties by smaller column."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    total = 0.0
    for row, pos in zip(top, positives, strict=True):
        gains = np.isin(row, pos).astype(np.float64)
        ideal = discounts[: min(k, pos.size)].sum()
        total += float(gains @ discounts[: row.size]) / ideal
    return total / max(len(positives), 1)


def _signs(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, np.float32(1.0), np.float32(-1.0))


def train_code_head(
    docs: np.ndarray,
    queries: np.ndarray,
    positives: Sequence[np.ndarray],
    config: HeadConfig | None = None,
    *,
    on_epoch: Callable[[int, np.ndarray, np.ndarray], dict[str, Any] | None] | None = None,
) -> CodeHead:
    """Train an affine code head on frozen embeddings with the Hamming surrogate over the whole corpus.

    The head starts at ITQ (centre on the corpus mean, rotation that brings the corpus closest to
    the hypercube's corners), so epoch 0 is the post-hoc ITQ code. Each step scores a batch of
    training queries against every document with :func:`soft_code_similarity` (query and document
    both coded), and minimises the multi-positive contrastive loss
    ``-log(sum_pos exp(s/T) / sum_all exp(s/T))`` plus ``distill_weight`` times the KL divergence
    from the base model's float ranking of the corpus.

    Parameters
    ----------
    docs : ndarray of shape (n_docs, dim), float32
        Base embeddings of the corpus (the documents ``positives`` index).
    queries : ndarray of shape (n_queries, dim), float32
        Base embeddings of the training queries.
    positives : sequence of ndarray of int64
        Relevant document rows per query.
    config : HeadConfig, optional
    on_epoch : callable, optional
        ``on_epoch(epoch, weight, bias)`` after every epoch (and for the start, epoch 0); what it
        returns is recorded with that epoch (e.g. test NDCG for a curve; it never steers training).

    Returns
    -------
    CodeHead
    """
    from ._validation import as_float_matrix
    from .quantization.rotation import itq_rotation

    config = config or HeadConfig()
    config.validate()
    docs = as_float_matrix(docs, "docs")
    queries = as_float_matrix(queries, "queries", dim=docs.shape[1])
    if len(positives) != queries.shape[0]:
        raise InvalidArgumentError(
            f"positives has {len(positives)} entries, expected one per query ({queries.shape[0]})"
        )
    torch, _ = _imports()
    rng = np.random.default_rng(config.seed)
    n_q = queries.shape[0]
    order = rng.permutation(n_q)
    n_val = int(round(config.val_fraction * n_q)) if n_q >= 20 else 0
    val, train = np.sort(order[:n_val]), order[n_val:]
    center = docs.mean(axis=0, dtype=np.float64).astype(np.float32)
    rotation = itq_rotation(docs - center, seed=config.seed, restarts=3)
    weight0 = np.ascontiguousarray(rotation.T, dtype=np.float32)
    bias0 = (-(weight0 @ center)).astype(np.float32)

    def val_ndcg(weight: np.ndarray, bias: np.ndarray) -> float:
        if not n_val:
            return float("nan")
        cq = _signs(queries[val] @ weight.T + bias)
        cd = _signs(docs @ weight.T + bias)
        return _hamming_ndcg(cq @ cd.T, [positives[i] for i in val])

    torch.manual_seed(config.seed)
    w = torch.nn.Parameter(torch.from_numpy(weight0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(bias0.copy()))
    optimizer = torch.optim.Adam([w, b], lr=config.lr)
    d_t = torch.from_numpy(docs)
    q_t = torch.from_numpy(queries)
    inv_t = 1.0 / config.temperature
    pos_mask = torch.zeros((n_q, docs.shape[0]), dtype=torch.bool)
    for i, pos in enumerate(positives):
        pos_mask[i, torch.from_numpy(np.asarray(pos, np.int64))] = True
    best = (val_ndcg(weight0, bias0), 0, weight0, bias0)
    history = [{"epoch": 0, "val_ndcg@10": round(best[0], 4)}]
    if on_epoch is not None:
        history[0].update(on_epoch(0, weight0, bias0) or {})
    t0 = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        beta = beta_at(epoch - 1, config.epochs, config.beta_start, config.beta_end)
        perm = train[rng.permutation(train.size)]
        losses = []
        for start in range(0, perm.size, config.batch_size):
            rows = torch.from_numpy(perm[start : start + config.batch_size])
            q = q_t[rows]
            logits = soft_code_similarity(torch, q @ w.T + b, d_t @ w.T + b, beta) * inv_t
            mask = pos_mask[rows]
            log_all = torch.logsumexp(logits, dim=1)
            log_pos = torch.logsumexp(logits.masked_fill(~mask, -1e4), dim=1)
            loss = (log_all - log_pos).mean()
            if config.distill_weight > 0:
                target = torch.softmax(q @ d_t.T * inv_t, dim=1)
                kl = (target * (torch.log(target.clamp_min(1e-12)) - torch.log_softmax(logits, dim=1))).sum(1)
                loss = loss + config.distill_weight * kl.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        weight = w.detach().numpy().copy()
        bias = b.detach().numpy().copy()
        score = val_ndcg(weight, bias)
        history.append(
            {
                "epoch": epoch,
                "beta": round(beta, 3),
                "loss": round(float(np.mean(losses)), 5),
                "val_ndcg@10": round(score, 4),
            }
        )
        if on_epoch is not None:
            history[-1].update(on_epoch(epoch, weight, bias) or {})
        if not n_val or score > best[0]:
            best = (score, epoch, weight, bias)
    report = {
        "config": asdict(config),
        "train_queries": int(train.size),
        "val_queries": int(n_val),
        "epochs": history,
        "kept_epoch": best[1],
        "val_ndcg@10_itq_start": history[0]["val_ndcg@10"],
        "val_ndcg@10_kept": round(best[0], 4) if n_val else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return CodeHead(best[2], best[3], report)


def save_with_head(
    head: CodeHead,
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
    report: dict[str, Any] | None = None,
) -> Path:
    """Write the base model with ``head`` appended as a sentence-transformers folder.

    The folder is the base model's modules followed by a ``Dense`` layer (identity activation)
    holding the head: its output's sign bits are the trained codes, and any sentence-transformers
    user (``quantsearch --model FOLDER``) gets them.
    """
    out_path = Path(out)
    _check_out(out_path)
    _imports()
    import importlib

    import torch

    try:
        dense_cls = importlib.import_module("sentence_transformers.base.modules").Dense
    except (ImportError, AttributeError):  # sentence-transformers < 5.4
        dense_cls = importlib.import_module("sentence_transformers.models").Dense

    from .embed import Embedder

    base = Embedder(model).model
    bits, dim = head.weight.shape
    base.append(
        dense_cls(
            dim,
            bits,
            bias=True,
            activation_function=None,
            init_weight=torch.from_numpy(head.weight.copy()),
            init_bias=torch.from_numpy(head.bias.copy()),
        )
    )
    _save(base, out_path, {"base_model": Embedder(model).name, "head": head.report, **(report or {})})
    return out_path


def _check_out(out_path: Path) -> None:
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise InvalidArgumentError(f"--out {out_path} exists and is not an empty folder")
    if not out_path.parent.is_dir():
        raise InvalidArgumentError(f"--out: folder {out_path.parent} does not exist")


def _save(model: Any, out_path: Path, report: dict[str, Any]) -> None:
    """Write the model folder next to ``out_path`` and rename it into place (no half-written model)."""
    tmp = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}-"))
    try:
        model.save(str(tmp))
        (tmp / TRAINING_REPORT).write_text(json.dumps(report, indent=1), encoding="utf-8")
        if out_path.exists():
            out_path.rmdir()  # empty (checked at the start)
        os.replace(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def head_positives(pairs: TrainingPairs) -> list[np.ndarray]:
    """Positives as corpus rows (what :func:`train_code_head` scores against): the groups of the
    pairs' documents (for qrels pairs the rows themselves; for inverse cloze the source passage)."""
    return [np.unique(pairs.doc_groups[p]) for p in pairs.positives]


def train_model(
    dataset_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
    pairs: str = "auto",
    head: HeadConfig | None = None,
    e2e: FinetuneConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """``quantsearch train``: train a model for 1-bit codes on a BEIR folder and save it to ``out``.

    1. Pairs from the collection (:func:`training_pairs`: train qrels, else inverse cloze).
    2. The code head on the base model's frozen (cached) embeddings (:func:`train_code_head`).
    3. With ``e2e`` (``steps > 0``): the whole encoder and the head fine-tuned end to end
       (:func:`finetune`), starting from step 2's model.

    Returns
    -------
    dict
        The training report (also written to ``out/quantsearch_training.json``).
    """
    from .embed import Embedder, EmbeddingCache

    out_path = Path(out)
    _check_out(out_path)
    head = head or HeadConfig()
    head.validate()
    if e2e is not None:
        e2e.validate()
    t0 = time.perf_counter()
    train_pairs = training_pairs(dataset_dir, pairs=pairs, seed=head.seed)
    embedder = Embedder(model)
    cache = EmbeddingCache(cache_dir)
    corpus = _corpus_only(Path(dataset_dir))[0]
    docs, _ = cache.embed(embedder, corpus, progress=progress)
    queries, _ = cache.embed(embedder, train_pairs.query_texts, progress=progress)
    code_head = train_code_head(docs, queries, head_positives(train_pairs), head)
    info = {
        "pairs": {"source": train_pairs.source, "queries": len(train_pairs)},
        "embed_seconds": round(time.perf_counter() - t0 - code_head.report["seconds"], 1),
    }
    if e2e is None or e2e.steps == 0:
        save_with_head(code_head, out_path, model=model, report=info)
    else:
        staging = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}-head-"))
        try:
            save_with_head(code_head, staging / "model", model=model, report=info)
            finetune(train_pairs, out_path, model=str(staging / "model"), config=e2e, progress=progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    report = json.loads((out_path / TRAINING_REPORT).read_text(encoding="utf-8"))
    report.update({"base_model": embedder.name, "head": code_head.report, **info})
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out_path / TRAINING_REPORT).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report
