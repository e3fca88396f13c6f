"""The static backend: a model2vec embedding distilled from the sentence-transformers model.

``model2vec.distill`` runs every vocabulary token through the model once (a few minutes on 2 cores, cached
like the other exports), reduces the token vectors by PCA and weights them (SIF); a text's embedding is then
the mean of its tokens' rows: no transformer at run time. It is much faster and much weaker (see
docs/benchmarks.md); opt-in only, never chosen by ``auto``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch.embedding.backends import Backend, exported_model, require

logger = logging.getLogger(__name__)

#: PCA dimension of the distilled vectors (model2vec's default).
STATIC_DIMS = 256


def _distill(model_dir: Path, out: Path) -> None:
    from model2vec.distill import distill

    static = distill(model_name=str(model_dir), pca_dims=STATIC_DIMS, device="cpu")
    static.save_pretrained(str(out))


class StaticRunner:
    """Embed texts with a model2vec :class:`~model2vec.StaticModel` (mean of token vectors)."""

    def __init__(self, folder: Path, *, max_seq_length: int | None = None) -> None:
        from model2vec import StaticModel

        self.model: Any = StaticModel.from_pretrained(str(folder), normalize=False)
        self.max_seq_length = max_seq_length if max_seq_length is not None else 512

    def encode(self, texts: Sequence[str], *, batch_size: int, normalize: bool) -> np.ndarray:
        """Embed ``texts``: ndarray of shape (len(texts), 256), float32."""
        out = np.asarray(
            self.model.encode(
                list(texts),
                batch_size=max(batch_size, 1024),  # no forward pass: larger batches only save overhead
                max_length=self.max_seq_length,
                show_progress_bar=False,
                use_multiprocessing=False,
            ),
            dtype=np.float32,
        )
        out = np.ascontiguousarray(out)
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_static_runner(model_dir: Path, *, max_seq_length: int | None = None) -> StaticRunner:
    """The cached distilled model of ``model_dir`` (distilled on first use)."""
    require("model2vec")
    require("skeletoken")
    folder = exported_model(
        model_dir,
        Backend.STATIC,
        lambda out: _distill(model_dir, out),
        packages=("torch", "transformers", "model2vec", "skeletoken", "scikit-learn"),
    )
    return StaticRunner(folder, max_seq_length=max_seq_length)
