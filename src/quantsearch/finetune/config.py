"""The two training recipes (code head, end-to-end encoder) and their shared validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidArgumentError


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
    unfreeze_layers : int or None
        None: train the whole encoder. n: train only its top n transformer layers and the modules
        after them (pooling, the code head); the frozen layers' output is computed once per text
        (:mod:`quantsearch.finetune.prefix`), so a step costs a fraction of a full one.
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
    unfreeze_layers: int | None = None
    seed: int = 0
    threads: int | None = None

    def validate(self) -> None:
        _check_recipe(self, ("steps", "batch_size", "max_seq_length"), ("float_weight", "distill_weight"))
        if self.unfreeze_layers is not None and (
            isinstance(self.unfreeze_layers, bool)
            or not isinstance(self.unfreeze_layers, int)
            or self.unfreeze_layers < 1
        ):
            raise InvalidArgumentError(
                f"unfreeze_layers must be a positive int or None, got {self.unfreeze_layers!r}"
            )
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


#: The code-head recipe for corpus-only (inverse cloze) pairs, chosen on held-out cloze pairs of
#: cranfield and cisi together (benchmarks/trained_binary_cloze_sweep.py; docs/benchmarks.md).
CORPUS_ONLY_RECIPE: dict[str, Any] = {
    "epochs": 15,
    "lr": 3e-4,
    "surrogate": "ste",
    "bits": 416,
    "ema": 0.98,
    "val_fraction": 0.2,
}


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
    bits : int or None
        Code length (None: the embedding's dimension). Rows beyond the dimension start as random
        unit directions through the corpus mean (e.g. 416 bits = 52 bytes for 384-d vectors).
    surrogate : {"tanh", "ste"}
        ``"tanh"``: the soft code ``tanh(beta z)``; ``"ste"``: the exact sign in the forward pass with
        the gradient of ``tanh(beta z)`` (straight-through).
    asymmetric : bool
        Score the float query (the head's output, not coded) against the documents' codes, as the
        ``sign-asym`` configuration searches, in the loss and in the validation ranking.
    ema : float
        Decay of the exponential moving average of the weights over steps (0: the raw weights); the
        average is what is validated each epoch and kept, which smooths the epoch-to-epoch noise.
    anchor_weight : float
        Weight of the penalty ``|[W b] - [W0 b0]|^2 / |[W0 b0]|^2`` that keeps the head near its ITQ
        start (0: none), so that it cannot drift far from the post-hoc code it starts from.
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
    bits: int | None = None
    surrogate: str = "tanh"
    asymmetric: bool = False
    ema: float = 0.0
    anchor_weight: float = 0.0
    seed: int = 0

    @classmethod
    def for_pairs(cls, source: str, **overrides: Any) -> HeadConfig:
        """The recipe for a kind of pairs, with ``overrides`` on top: the defaults for train qrels,
        :data:`CORPUS_ONLY_RECIPE` for inverse cloze pairs (``source == "inverse-cloze"``)."""
        base = CORPUS_ONLY_RECIPE if source == "inverse-cloze" else {}
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        _check_recipe(self, ("epochs", "batch_size"), ("distill_weight", "anchor_weight"))
        if not (isinstance(self.ema, (int, float)) and 0.0 <= self.ema < 1.0):
            raise InvalidArgumentError(f"ema must be in [0, 1), got {self.ema!r}")
        if self.surrogate not in ("tanh", "ste"):
            raise InvalidArgumentError(f"surrogate must be 'tanh' or 'ste', got {self.surrogate!r}")
        if self.bits is not None and (
            isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits < 1
        ):
            raise InvalidArgumentError(f"bits must be a positive int or None, got {self.bits!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InvalidArgumentError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
