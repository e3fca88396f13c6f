"""Quantization-aware training of the learned 1-bit head (``LearnedBinaryQuantizer``).

The head codes a document as ``b = sign(f(x - c))`` and scores a float query as ``alpha * <D^T q, b>``
(plus the per-query constant ``<q, c>``), ``alpha`` being the unbiased per-vector factor. It starts
from ITQ (the rotation that brings the centred corpus closest to the hypercube's corners, with
per-bit magnitudes in ``D``) and is trained by self-distillation: query-like views of corpus
documents (unit vectors at cosine 0.7 to their document) act as pseudo-queries, and the softmax over
each one's candidates (its float32 nearest neighbours plus random documents) of the estimated
scores is pulled towards the softmax of the float32 scores (KL divergence at ``temperature``).
``sign`` is replaced by ``tanh(beta * z / sigma)`` whose scale
``beta`` grows geometrically during training; the forward pass uses the hard sign (straight-through),
so the loss is that of the real codes.

Documents held out as pseudo-queries measure the agreement with the float32 top-10 before and
after; if training did not improve it, the ITQ start is kept. torch is imported lazily (CPU only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validation import as_float_matrix
from .exceptions import InvalidArgumentError, MissingDependencyError
from .quantization.head import head_factor, head_project
from .quantization.rotation import itq_rotation, random_orthogonal

__all__ = ["TrainResult", "initial_head", "neighbour_agreement", "train_head"]

# listwise candidates per pseudo-query: float32 nearest neighbours + random documents
_NEIGHBOURS = 32
_RANDOM = 128
_BATCH = 64
_HELD_OUT = 500
# tanh scale at the start and the end of training (in units of each bit's standard deviation)
_BETA_START = 2.0
_BETA_END = 40.0
# cosine between a training pseudo-query and the document it is a view of
_VIEW_COS = 0.7
# agreement is measured at this cutoff
AGREEMENT_K = 10


@dataclass
class TrainResult:
    """Trained head arrays (``center``, ``encoder``, ``decoder``, ``hidden_*``) and training figures."""

    state: dict[str, np.ndarray]
    report: dict[str, Any] = field(default_factory=dict)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            'quantization-aware training needs torch (CPU build): pip install "quantsearch[embed]" '
            "or pip install torch"
        ) from exc
    return torch


def initial_head(x: np.ndarray, bits: int, *, hidden: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """The untrained start: centre on the mean, ITQ rotation, per-bit magnitudes in the decoder.

    ``bits < dim``: ITQ within the top-``bits`` principal subspace. ``bits > dim``: the ITQ rotation
    followed by random orthogonal blocks. The MLP (``hidden > 0``) starts with a zero output layer.
    """
    x = as_float_matrix(x, "training vectors")
    dim = x.shape[1]
    center = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = x - center
    if bits < dim:
        cov = centred.T.astype(np.float64) @ centred
        _, vecs = np.linalg.eigh(cov)
        basis = vecs[:, ::-1][:, :bits].astype(np.float32)  # top principal directions (dim, bits)
        encoder = (basis @ itq_rotation(centred @ basis, seed=seed)).T
    else:
        blocks = [itq_rotation(centred, seed=seed).T]
        for extra in range(1, math.ceil(bits / dim)):
            blocks.append(random_orthogonal(dim, seed + extra).T)
        encoder = np.concatenate(blocks)[:bits]
    encoder = np.ascontiguousarray(encoder, dtype=np.float32)
    magnitudes = np.abs(centred @ encoder.T).mean(axis=0)
    rng = np.random.default_rng(seed)
    scale = 1.0 / max(float(centred.std()), 1e-12) / math.sqrt(dim)
    return {
        "center": center,
        "encoder": encoder,
        "decoder": np.ascontiguousarray(encoder.T * magnitudes, dtype=np.float32),
        "hidden_in": (rng.standard_normal((hidden, dim)) * scale).astype(np.float32),
        "hidden_bias": np.zeros(hidden, np.float32),
        "hidden_out": np.zeros((bits, hidden), np.float32),
    }


def _estimate(state: dict[str, np.ndarray], queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Estimated scores (nq, n) of raw queries against docs coded by the head (without ``<q, c>``)."""
    centred = docs - state["center"]
    signs = np.where(head_project(state, centred) > 0, np.float32(1.0), np.float32(-1.0))
    alpha = head_factor(centred, signs, state["decoder"]).astype(np.float16).astype(np.float32)
    return (queries @ state["decoder"]) @ signs.T * alpha[None, :]


def neighbour_agreement(
    state: dict[str, np.ndarray], docs: np.ndarray, query_rows: np.ndarray, k: int = AGREEMENT_K
) -> float:
    """Mean overlap |estimated top-k & float32 top-k| / k of documents ``query_rows`` used as queries
    against all ``docs`` (themselves excluded)."""
    k = min(k, docs.shape[0] - 1)
    queries = docs[query_rows]
    exact = queries @ docs.T
    approx = _estimate(state, queries, docs)
    rows = np.arange(query_rows.size)
    exact[rows, query_rows] = -np.inf
    approx[rows, query_rows] = -np.inf
    top_exact = np.argpartition(-exact, k - 1, axis=1)[:, :k]
    top_approx = np.argpartition(-approx, k - 1, axis=1)[:, :k]
    hits = [np.intersect1d(a, b).size for a, b in zip(top_exact, top_approx, strict=True)]
    return float(np.mean(hits) / k)


def _neighbours(torch: Any, docs: Any, k: int) -> tuple[Any, Any]:
    """Float32 top-``k`` neighbours (indices, scores) of every doc among the others, in blocks."""
    n = docs.shape[0]
    idx, val = [], []
    for start in range(0, n, 2048):
        sims = docs[start : start + 2048] @ docs.T
        rows = torch.arange(start, min(n, start + 2048))
        sims[rows - start, rows] = -math.inf
        v, i = torch.topk(sims, k, dim=1)
        idx.append(i)
        val.append(v)
    return torch.cat(idx), torch.cat(val)


def surrogate_sign(z: Any, beta: float, sigma: Any, *, straight_through: bool = True) -> Any:
    """Differentiable stand-in for ``sign(z)`` (torch): ``tanh(beta * z / sigma)``.

    It tends to ``sign(z)`` as ``beta`` grows (``|tanh(t) - sign(t)| <= 2 exp(-2 |t|)``). With
    ``straight_through`` the forward value is the hard sign (+1 where ``z > 0``, else -1), so the
    loss is that of the real codes, and the gradient is the tanh surrogate's.
    """
    soft = (beta * z / sigma).tanh()
    if not straight_through:
        return soft
    hard = (z > 0).to(z.dtype) * 2 - 1
    return hard + soft - soft.detach()


def _query_view(torch: Any, docs: Any, centred: Any, rows: Any, gen: Any) -> Any:
    """Query-like views of documents ``rows``: unit vectors at cosine ``_VIEW_COS`` to their document,
    tilted towards a random direction (a query shares only part of a relevant document's content)."""
    x = docs[rows]
    noise = torch.randn(x.shape, generator=gen)
    unit = x / x.norm(dim=1, keepdim=True)
    noise = noise - (noise * unit).sum(dim=1, keepdim=True) * unit
    noise = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return _VIEW_COS * unit + math.sqrt(1 - _VIEW_COS**2) * noise


def train_head(
    x: np.ndarray,
    *,
    bits: int,
    hidden: int = 0,
    epochs: int = 3,
    lr: float = 3e-5,
    temperature: float = 0.05,
    seed: int = 0,
    max_samples: int = 20000,
    threads: int = 2,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the head on document vectors ``x`` (n, dim) (see the module doc).

    Parameters
    ----------
    x : ndarray of shape (n, dim), float
        The corpus (or a sample of it); at most ``max_samples`` rows are used for training.
    bits, hidden, epochs, lr, temperature, seed, max_samples
        As in :class:`~quantsearch.quantization.learned.LearnedBinaryQuantizer`.
    threads : int
        torch CPU threads while training (restored afterwards).
    log : callable, optional
        Receives one line per epoch.

    Returns
    -------
    TrainResult
        ``report`` holds ``loss`` (per epoch), ``agreement_before``/``agreement_after`` (held-out
        top-10 agreement with float32 of the ITQ start and of the result), ``kept`` ("trained" or
        "itq"), ``samples``, ``held_out`` and ``seconds``.
    """
    x = as_float_matrix(x, "training vectors")
    if x.shape[0] < 2:
        raise InvalidArgumentError(f"training needs at least 2 vectors, got {x.shape[0]}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    state = initial_head(x, bits, hidden=hidden, seed=seed)
    sample = (
        x if x.shape[0] <= max_samples else x[np.sort(rng.choice(x.shape[0], max_samples, replace=False))]
    )
    n = sample.shape[0]
    n_held = min(_HELD_OUT, n // 10) if n >= 20 else 0
    perm = rng.permutation(n)
    held, train_rows = np.sort(perm[:n_held]), perm[n_held:]
    before = neighbour_agreement(state, sample, held) if n_held else float("nan")
    report: dict[str, Any] = {
        "samples": n,
        "held_out": n_held,
        "bits": bits,
        "k": AGREEMENT_K,
        "agreement_before": before,
        "loss": [],
    }
    if epochs > 0:
        trained, losses = _train(
            state, sample, train_rows, hidden, epochs, lr, temperature, seed, threads, log
        )
        report["loss"] = losses
        after = neighbour_agreement(trained, sample, held) if n_held else float("nan")
        keep = not n_held or after >= before
        state = trained if keep else state
        report["kept"] = "trained" if keep else "itq"
        report["agreement_after"] = after if keep else before
        report["agreement_trained"] = after
    else:
        report["kept"] = "itq"
        report["agreement_after"] = before
    report["seconds"] = time.perf_counter() - t0
    return TrainResult(state, report)


def _train(
    init: dict[str, np.ndarray],
    sample: np.ndarray,
    train_rows: np.ndarray,
    hidden: int,
    epochs: int,
    lr: float,
    temperature: float,
    seed: int,
    threads: int,
    log: Callable[[str], None] | None,
) -> tuple[dict[str, np.ndarray], list[float]]:
    torch = _torch()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train_loop(torch, init, sample, train_rows, hidden, epochs, lr, temperature, seed, log)
    finally:
        torch.set_num_threads(previous_threads)


def _train_loop(
    torch: Any,
    init: dict[str, np.ndarray],
    sample: np.ndarray,
    train_rows: np.ndarray,
    hidden: int,
    epochs: int,
    lr: float,
    temperature: float,
    seed: int,
    log: Callable[[str], None] | None,
) -> tuple[dict[str, np.ndarray], list[float]]:
    gen = torch.Generator().manual_seed(seed)
    n = sample.shape[0]
    docs = torch.from_numpy(sample)
    center = torch.from_numpy(init["center"])
    centred = docs - center
    n_nb = min(_NEIGHBOURS, n - 1)
    n_rand = min(_RANDOM, n)

    params = {k: torch.nn.Parameter(torch.from_numpy(init[k].copy())) for k in ("encoder", "decoder")}
    if hidden:
        for k in ("hidden_in", "hidden_bias", "hidden_out"):
            params[k] = torch.nn.Parameter(torch.from_numpy(init[k].copy()))
    with torch.no_grad():
        sigma = (centred @ params["encoder"].T).std(dim=0).clamp_min(1e-12)
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    train_t = torch.from_numpy(np.asarray(train_rows, np.int64))
    batch = min(_BATCH, train_t.numel())
    steps_per_epoch = max(1, math.ceil(train_t.numel() / batch))
    total = epochs * steps_per_epoch
    inv_t = 1.0 / temperature

    def project(r: Any) -> Any:
        z = r @ params["encoder"].T
        if hidden:
            z = z + torch.relu(r @ params["hidden_in"].T + params["hidden_bias"]) @ params["hidden_out"].T
        return z

    losses: list[float] = []
    step = 0
    for epoch in range(epochs):
        order = train_t[torch.randperm(train_t.numel(), generator=gen)]
        total_loss = 0.0
        for start in range(0, order.numel(), batch):
            beta = _BETA_START * (_BETA_END / _BETA_START) ** (step / max(1, total - 1))
            q_rows = order[start : start + batch]
            queries = _query_view(torch, docs, centred, q_rows, gen)
            with torch.no_grad():
                true_full = queries @ docs.T  # (Q, n)
                true_nb, nb = torch.topk(true_full, n_nb, dim=1)
            rnd = torch.randint(0, n, (n_rand,), generator=gen)
            needed, inverse = torch.unique(torch.cat([nb.reshape(-1), rnd]), return_inverse=True)
            r = centred[needed]
            soft = surrogate_sign(project(r), beta, sigma, straight_through=True)
            recon = soft @ params["decoder"].T
            den = (r * recon).sum(dim=1)
            alpha = (r * r).sum(dim=1) / den.clamp_min(1e-6)
            est_full = (queries @ params["decoder"]) @ soft.T * alpha[None, :]  # (Q, unique)
            est_nb = est_full.gather(1, inverse[: nb.numel()].reshape(nb.shape))
            est_rnd = est_full[:, inverse[nb.numel() :]]
            true_rnd = true_full[:, rnd]
            # a random candidate that is also among the query's neighbours is left out
            dup = (rnd[None, None, :] == nb[:, :, None]).any(dim=1)
            true_all = torch.cat([true_nb, true_rnd.masked_fill(dup, -math.inf)], dim=1) * inv_t
            est_all = torch.cat([est_nb, est_rnd.masked_fill(dup, -math.inf)], dim=1) * inv_t
            target = torch.softmax(true_all, dim=1)
            log_pred = torch.log_softmax(est_all, dim=1)
            log_target = torch.log_softmax(true_all, dim=1)
            terms = torch.where(target > 0, target * (log_target - log_pred), torch.zeros_like(target))
            loss = terms.sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * q_rows.numel()
            step += 1
        losses.append(total_loss / train_t.numel())
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.5f}")
    trained = {k: v.detach().numpy().astype(np.float32) for k, v in params.items()}
    state = {**init, **trained}
    return state, losses
