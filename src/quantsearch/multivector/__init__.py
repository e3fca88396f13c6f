"""Multi-vector (late-interaction) retrieval with MUVERA Fixed Dimensional Encodings.

Token vectors (:mod:`.tokens`), FDE encoding (:mod:`.fde`), Chamfer scoring and the int8 token tier
(:mod:`.chamfer`), and :class:`MultiVectorIndex` (:mod:`.index`), which keeps 1-bit FDE codes in RAM
and reranks their candidates by exact Chamfer over memory-mapped int8 token vectors.
"""

from __future__ import annotations

from .chamfer import TokenTier, chamfer_rerank, chamfer_scores, chamfer_topk, quantize_tokens
from .fde import FDEConfig, FDEEncoder
from .index import MultiVectorIndex
from .tokens import TokenBatch, TokenEmbedder, as_token_batch

__all__ = [
    "FDEConfig",
    "FDEEncoder",
    "MultiVectorIndex",
    "TokenBatch",
    "TokenEmbedder",
    "TokenTier",
    "as_token_batch",
    "chamfer_rerank",
    "chamfer_scores",
    "chamfer_topk",
    "quantize_tokens",
]
