"""End-to-end fine-tuning of the sentence-transformers encoder for its 1-bit code."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import FinetuneConfig
from .pairs import TrainingPairs
from .prefix import PrefixCache, trainable_top
from .saving import _check_out, _save
from .surrogate import _imports, beta_at, distill_kl, soft_code_similarity

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """What :func:`finetune` did: the folder written and the figures of the run."""

    path: Path
    report: dict[str, Any] = field(default_factory=dict)


def _load_model(SentenceTransformer: Any, model: str | None) -> Any:
    from ..embed import Embedder

    return Embedder(model).model  # the bundled default offline, a path or a name otherwise


def _encode_train(model: Any, texts: list[str]) -> Any:
    features = model.tokenize(texts)
    return model(features)["sentence_embedding"]


def _encode_all(torch: Any, model: Any, cache: PrefixCache, batch_size: int = 128) -> Any:
    """Unit embeddings of every cached text by the model as it is now (no gradients)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = [
            cache.encode(model, range(start, min(start + batch_size, len(cache))))
            for start in range(0, len(cache), batch_size)
        ]
    model.train(was_training)
    return torch.nn.functional.normalize(torch.cat(out), dim=1)


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
    from ..embed import Embedder

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    base_name = Embedder(model_name).name
    student = _load_model(SentenceTransformer, model_name)
    inference_length = student.max_seq_length  # what the saved model keeps: training may use fewer tokens
    student.max_seq_length = config.max_seq_length
    t_setup = time.perf_counter()
    teacher: Any = None
    caches: tuple[PrefixCache, PrefixCache] | None = None
    if config.unfreeze_layers is not None:
        # only the top layers train: the rest's output is computed once per text (and so is the
        # teacher's embedding, the student's own at the start)
        params = trainable_top(student, config.unfreeze_layers)
        caches = (
            PrefixCache(torch, student, pairs.query_texts, config.unfreeze_layers),
            PrefixCache(torch, student, pairs.doc_texts, config.unfreeze_layers),
        )
        if config.distill_weight > 0:
            teacher = tuple(_encode_all(torch, student, c) for c in caches)
    else:
        params = list(student.parameters())
        if config.distill_weight > 0:
            teacher = _load_model(SentenceTransformer, model_name)
            teacher.max_seq_length = config.max_seq_length
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
    setup_seconds = time.perf_counter() - t_setup
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
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
        if caches is not None:
            q, d = caches[0].encode(student, qi), caches[1].encode(student, di)
        else:
            q, d = _encode_train(student, q_texts), _encode_train(student, d_texts)
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
                if isinstance(teacher, tuple):
                    tq, td = teacher[0][qi], teacher[1][di]
                else:
                    tq = torch.nn.functional.normalize(_encode_train(teacher, q_texts), dim=1)
                    td = torch.nn.functional.normalize(_encode_train(teacher, d_texts), dim=1)
                teacher_logits = (tq @ td.T * inv_t).masked_fill(mask, -1e4)
            loss = loss + config.distill_weight * distill_kl(torch, teacher_logits, code_logits)
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
    report["setup_seconds"] = round(setup_seconds, 1)
    if bar is not None:
        bar.close()
    student.eval()
    student.max_seq_length = inference_length
    _save(student, out_path, report)
    return report
