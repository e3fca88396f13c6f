"""The differentiable stand-in for Hamming similarity, its schedule, and the loss terms built on it."""

from __future__ import annotations

import math
from typing import Any

from ..exceptions import MissingDependencyError


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
    return code_similarity(torch, q, d, beta)


def code_similarity(
    torch: Any, q: Any, d: Any, beta: float, *, surrogate: str = "tanh", asymmetric: bool = False
) -> Any:
    """:func:`soft_code_similarity` with the options of :class:`HeadConfig`.

    Parameters
    ----------
    q : Tensor of shape (nq, dim), d : Tensor of shape (nd, dim)
    beta : float
    surrogate : {"tanh", "ste"}
        ``"ste"``: the exact sign forward, the gradient of ``tanh(beta z)`` backward (straight-through).
    asymmetric : bool
        Leave the query uncoded (its unit vector against the documents' codes, as ``sign-asym`` scores).

    Returns
    -------
    Tensor of shape (nq, nd), values in [-1, 1]
    """
    dim = q.shape[1]
    root = math.sqrt(dim)

    def code(x: Any) -> Any:
        z = x * (root / x.norm(dim=1, keepdim=True).clamp_min(1e-12))  # unit RMS per dimension
        soft = torch.tanh(beta * z)
        if surrogate == "ste":
            soft = soft + (torch.sign(z) - soft).detach()
        return soft / root

    cq = torch.nn.functional.normalize(q, dim=1) if asymmetric else code(q)
    return cq @ code(d).T


def contrastive_loss(torch: Any, logits: Any, positive: Any) -> Any:
    """Multi-positive InfoNCE: mean over rows of ``-log(sum_pos exp(logit) / sum_all exp(logit))``.

    Parameters
    ----------
    logits : Tensor of shape (nq, nd)
    positive : bool Tensor of shape (nq, nd)
        At least one True per row.
    """
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~positive, -1e4), dim=1)
    return (log_all - log_pos).mean()


def distill_kl(torch: Any, teacher_logits: Any, student_logits: Any) -> Any:
    """Mean over rows of KL(softmax(teacher) || softmax(student)): the teacher's ranking as the target."""
    target = torch.softmax(teacher_logits, dim=1)
    log_pred = torch.log_softmax(student_logits, dim=1)
    return (target * (torch.log(target.clamp_min(1e-12)) - log_pred)).sum(dim=1).mean()
