"""The code head: an affine map on frozen base embeddings whose sign bits are the trained codes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..exceptions import InvalidArgumentError
from .config import HeadConfig
from .surrogate import _imports, beta_at, code_similarity, contrastive_loss, distill_kl


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
    validation: tuple[np.ndarray, Sequence[np.ndarray]] | None = None,
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
    validation : (ndarray of shape (n_val, dim), sequence of ndarray of int64), optional
        Held-out queries and their relevant rows to choose the epoch by; when given, every query of
        ``queries`` is trained on and ``config.val_fraction`` is not used (e.g. to compare recipes
        whose training queries differ on one validation set).
    on_epoch : callable, optional
        ``on_epoch(epoch, weight, bias)`` after every epoch (and for the start, epoch 0); what it
        returns is recorded with that epoch (e.g. test NDCG for a curve; it never steers training).

    Returns
    -------
    CodeHead
    """
    from .._validation import as_float_matrix
    from ..quantization.rotation import itq_rotation

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
    if validation is not None:
        val_queries = as_float_matrix(validation[0], "validation queries", dim=docs.shape[1])
        val_positives = list(validation[1])
        if len(val_positives) != val_queries.shape[0]:
            raise InvalidArgumentError(
                f"validation has {len(val_positives)} positive lists for {val_queries.shape[0]} queries"
            )
        n_val, train = val_queries.shape[0], order
    else:
        n_val = int(round(config.val_fraction * n_q)) if n_q >= 20 else 0
        val, train = np.sort(order[:n_val]), order[n_val:]
        val_queries, val_positives = queries[val], [positives[i] for i in val]
    center = docs.mean(axis=0, dtype=np.float64).astype(np.float32)
    rotation = itq_rotation(docs - center, seed=config.seed, restarts=3)
    weight0 = np.ascontiguousarray(rotation.T, dtype=np.float32)
    bits = config.bits or docs.shape[1]
    if bits < weight0.shape[0]:
        weight0 = weight0[:bits]
    elif bits > weight0.shape[0]:
        extra = rng.standard_normal((bits - weight0.shape[0], docs.shape[1]))
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        # scaled to the spread of the ITQ rows' projections so the new bits are neither flat nor dominant
        extra *= float(np.std((docs - center) @ weight0.T)) / max(
            float(np.std((docs - center) @ extra.T)), 1e-12
        )
        weight0 = np.ascontiguousarray(np.vstack([weight0, extra]), dtype=np.float32)
    bias0 = (-(weight0 @ center)).astype(np.float32)

    def val_ndcg(weight: np.ndarray, bias: np.ndarray) -> float:
        if not n_val:
            return float("nan")
        cq = val_queries @ weight.T + bias
        cq = cq if config.asymmetric else _signs(cq)
        cd = _signs(docs @ weight.T + bias)
        return _hamming_ndcg(cq @ cd.T, val_positives)

    torch.manual_seed(config.seed)
    w = torch.nn.Parameter(torch.from_numpy(weight0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(bias0.copy()))
    optimizer = torch.optim.Adam([w, b], lr=config.lr)
    # Polyak (exponential moving) average of the weights: what is validated and kept when ema > 0
    avg_w, avg_b = w.detach().clone(), b.detach().clone()
    d_t = torch.from_numpy(docs)
    q_t = torch.from_numpy(queries)
    inv_t = 1.0 / config.temperature
    w0_t, b0_t = torch.from_numpy(weight0.copy()), torch.from_numpy(bias0.copy())
    anchor_scale = config.anchor_weight / float((weight0**2).sum() + (bias0**2).sum())
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
            logits = inv_t * code_similarity(
                torch,
                q @ w.T + b,
                d_t @ w.T + b,
                beta,
                surrogate=config.surrogate,
                asymmetric=config.asymmetric,
            )
            loss = contrastive_loss(torch, logits, pos_mask[rows])
            if config.distill_weight > 0:
                loss = loss + config.distill_weight * distill_kl(torch, q @ d_t.T * inv_t, logits)
            if config.anchor_weight > 0:
                loss = loss + anchor_scale * (((w - w0_t) ** 2).sum() + ((b - b0_t) ** 2).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            with torch.no_grad():
                avg_w.mul_(config.ema).add_(w.detach(), alpha=1.0 - config.ema)
                avg_b.mul_(config.ema).add_(b.detach(), alpha=1.0 - config.ema)
        weight = avg_w.numpy().copy()
        bias = avg_b.numpy().copy()
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
        # how far the kept head moved from its ITQ start, relative to the start's norm
        "drift": round(
            float(
                np.sqrt(((best[2] - weight0) ** 2).sum() + ((best[3] - bias0) ** 2).sum())
                / np.sqrt((weight0**2).sum() + (bias0**2).sum())
            ),
            4,
        ),
    }
    return CodeHead(best[2], best[3], report)
