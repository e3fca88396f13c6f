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

Modules, one concept each: ``pairs`` (training pairs), ``config`` (the two recipes), ``surrogate``
(the Hamming stand-in and the loss terms), ``head`` (the code head on frozen embeddings), ``encoder``
(end-to-end fine-tuning), ``saving`` (the model folder), ``pipeline`` (``quantsearch train``).

torch and sentence-transformers are imported lazily (extra ``embed``); training runs on the CPU.
"""

from __future__ import annotations

from .config import FinetuneConfig, HeadConfig
from .encoder import FinetuneResult, finetune
from .head import CodeHead, train_code_head
from .pairs import TrainingPairs, head_positives, inverse_cloze_pairs, qrels_pairs, training_pairs
from .pipeline import train_model
from .saving import TRAINING_REPORT, save_with_head
from .surrogate import code_similarity, soft_code_similarity

__all__ = [
    "TRAINING_REPORT",
    "CodeHead",
    "FinetuneConfig",
    "FinetuneResult",
    "HeadConfig",
    "TrainingPairs",
    "code_similarity",
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
