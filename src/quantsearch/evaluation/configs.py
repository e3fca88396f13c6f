"""Search configurations that ``quantsearch eval`` compares: ours and peers, named by short specs.

Our configurations, as spec strings (what ``--configs`` takes and the report prints)::

    [mrl<DIM>:|pca<DIM>:]<stage>[><stage>...][@<OVERSAMPLING>]

* one stage of compact codes (<= 2 bits per dimension: ``binary`` and the better 1- and 2-bit codes):
  the candidate scan of a real :class:`~quantsearch.Index` (Hamming for ``binary``), no rescoring;
* one stage of any other precision (``float32``, ``float16``, ``int8``, ``int4``, ...): an exhaustive scan
  of the dequantized codes, float query against every document (``float32`` is the exact reference);
* several stages (``binary>int8``, ``binary>int8>float16``): the index pipeline, a candidate scan for
  ``k x OVERSAMPLING`` candidates (default 10) rescored by each later stage from its memory-mapped tier;
* ``mrl<DIM>:`` truncates every stage to the first DIM dimensions (Matryoshka) and renormalises;
  ``pca<DIM>:`` projects every stage onto the top DIM principal directions of the documents (LeanVec-style).

Stage names go through :func:`~quantsearch.quantization.make_quantizer`, so a quantizer registered
there is usable here without changes to this module; programmatic callers can also pass fitted-to-be
:class:`~quantsearch.quantization.Quantizer` objects to :class:`IndexConfig` / :class:`FlatConfig`.

Peers (rows marked ``peer``) run the other libraries on the same embeddings: ``faiss-flat-ip`` (faiss
IndexFlatIP, float32 exact), and sentence-transformers' ``semantic_search_faiss`` /
``semantic_search_usearch`` over ``quantize_embeddings`` codes, with their own rescoring:
``st-faiss-ubinary@M``, ``st-faiss-uint8@M``, ``st-usearch-ubinary@M``, ``st-usearch-int8@M``
(``M`` is their ``rescore_multiplier``).
"""

from __future__ import annotations

import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantsearch._topk import topk_blocks
from quantsearch.exceptions import InvalidArgumentError, MissingDependencyError
from quantsearch.index import Index
from quantsearch.quantization import PCAQuantizer, Quantizer, make_quantizer, quantizer_from_config

__all__ = [
    "CODES_CONFIGS",
    "CODES_PEERS",
    "DEFAULT_CONFIGS",
    "LEXICAL_CONFIGS",
    "LEXICAL_PEERS",
    "DEFAULT_PEERS",
    "PEERS",
    "PRESETS",
    "Config",
    "FlatConfig",
    "IndexConfig",
    "PeerConfig",
    "Searcher",
    "parse_config",
    "parse_configs",
]

#: Our rows when ``--configs`` is not given: the issue's sweep, Matryoshka 256 and 128 included.
DEFAULT_CONFIGS: tuple[str, ...] = (
    "float32",
    "float16",
    "int8",
    "int4",
    "binary",
    "binary>int8@1",
    "binary>int8@2",
    "binary>int8@4",
    "binary>int8@10",
    "binary>int8@20",
    "mrl256:float32",
    "mrl256:int8",
    "mrl256:binary",
    "mrl256:binary>int8@10",
    "mrl128:float32",
    "mrl128:binary",
    "mrl128:binary>int8@10",
)

#: Peer rows measured in the same run by default.
DEFAULT_PEERS: tuple[str, ...] = (
    "faiss-flat-ip",
    "st-faiss-ubinary@4",
    "st-faiss-ubinary@10",
    "st-faiss-uint8@4",
    "st-usearch-ubinary@4",
    "st-usearch-int8@4",
)

#: Issue 5's comparison of codes at a byte budget (``quantsearch eval --preset codes``): every
#: method next to sign binarization, in the same run.
CODES_CONFIGS: tuple[str, ...] = (
    "float32",
    # scalar and llama.cpp block formats (stand-alone codes)
    "int8",
    "q8_0",
    "int4",
    "q4_0",
    "q4_1",
    "rabitq3",
    # 2 bits per dimension and less, no rescoring
    "int2",
    "int2-itq",
    "rabitq2",
    "ternary",
    # 1 bit per dimension (d bits, plus a per-vector factor where corrected), no rescoring
    "binary",
    "sign-asym",
    "itq",
    "rabitq",
    "rabitq-hadamard",
    "rabitq-itq",
    "qat0",
    "qat",
    # <= 2 bits per dimension in RAM, rescoring from the memory-mapped disk tier
    "binary>int8@4",
    "binary>int8@10",
    "rabitq-itq>int8@4",
    "rabitq-itq>int8@10",
    "int2-itq>int8@4",
    "qat>int8@10",
    "binary>q4_0@10",
    # dimension reduction composed with the codes
    "mrl256:int8",
    "pca256:int8",
    "mrl256:rabitq-itq",
    "pca256:rabitq-itq",
    "pca256:rabitq-itq>int8@10",
)

#: Peers of the codes comparison: exact float32 and sentence-transformers' binary rescoring.
CODES_PEERS: tuple[str, ...] = ("faiss-flat-ip", "st-faiss-ubinary@4", "st-faiss-ubinary@10")

#: Issue 15's lexical and hybrid rows (``--preset lexical``; specs in
#: :mod:`quantsearch.evaluation.lexical_configs`), next to the dense pipeline they fuse with.
LEXICAL_CONFIGS: tuple[str, ...] = (
    "binary>int8@10",
    "bm25",
    "hybrid-rrf",
    "hybrid-convex",
    "hybrid-rrf:float32",
    "hybrid-convex:float32",
    "svm",
    "svm:float32",
)
LEXICAL_PEERS: tuple[str, ...] = ("bm25s", "rank-bm25")

#: Named sweeps for ``quantsearch eval --preset``: (configs, peers).
PRESETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": (DEFAULT_CONFIGS, DEFAULT_PEERS),
    "codes": (CODES_CONFIGS, CODES_PEERS),
    "lexical": (LEXICAL_CONFIGS, LEXICAL_PEERS),
}

_INSTALL_EVAL = 'pip install "quantsearch[eval,embed]"'


class Searcher(ABC):
    """A configuration built over one corpus: searches by row number and knows its memory cost."""

    #: bytes per document held in RAM for search, and kept on disk (memory-mapped) for rescoring
    ram_bytes_per_vector: float = 0.0
    disk_bytes_per_vector: float = 0.0

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Rows (nq, k) int64 of the best documents of each query, best first, ``-1`` padding."""

    def close(self) -> None:  # noqa: B027 - most searchers hold nothing to release
        """Release files and memory."""


@dataclass(frozen=True)
class Config(ABC):
    """A named way to search a corpus; :meth:`build` prepares it over the document vectors."""

    name: str

    @property
    def peer(self) -> bool:
        return False

    def warm_up(self) -> None:  # noqa: B027 - only peers have something to load
        """Import what :meth:`build` needs, so that its timing is the build alone."""

    @abstractmethod
    def build(self, docs: np.ndarray, workdir: Path) -> Searcher:
        """Prepare over ``docs`` (n, dim) float32, also the calibration sample; files go in ``workdir``."""


# ---- our configurations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexConfig(Config):
    """Search through a real :class:`~quantsearch.Index`: Hamming candidates, then the rescoring stages."""

    candidates: Any = "binary"
    rescore: tuple[Any, ...] = ()
    oversampling: float = 10.0
    truncate_dim: int | None = None

    def build(self, docs: np.ndarray, workdir: Path) -> Searcher:
        return _IndexSearcher(self, docs, workdir)


class _IndexSearcher(Searcher):
    def __init__(self, config: IndexConfig, docs: np.ndarray, workdir: Path) -> None:
        self._folder = tempfile.TemporaryDirectory(dir=workdir, prefix="index-")
        self.index = Index.build(
            Path(self._folder.name) / "index",
            docs,
            rescore=[_fresh(q) for q in config.rescore],
            binary=_fresh(config.candidates),
            truncate_dim=config.truncate_dim,
        )
        self.oversampling = config.oversampling
        self.stages = self.index.rescore_tiers
        tiers = {t["name"]: t for t in self.index.info()["tiers"]}
        ram = [t for t in tiers.values() if t["role"] == "candidates"]
        self.ram_bytes_per_vector = float(sum(t["bytes_per_vector"] for t in ram))
        self.disk_bytes_per_vector = float(sum(tiers[s]["bytes_per_vector"] for s in self.stages))

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        res = self.index.search(
            queries, k=k, oversampling=self.oversampling, stages=self.stages, with_payload=False
        )
        return np.asarray(res.ids, np.int64)  # documents were added with ids 0..n-1 = rows

    def close(self) -> None:
        self.index.close()
        self._folder.cleanup()


@dataclass(frozen=True)
class FlatConfig(Config):
    """Exhaustive scan: the float query against every document's dequantized codes, held in RAM."""

    quantizer: Any = "float32"
    truncate_dim: int | None = None

    def build(self, docs: np.ndarray, workdir: Path) -> Searcher:
        quantizer = make_quantizer(_fresh(self.quantizer), truncate_dim=self.truncate_dim)
        return _FlatSearcher(quantizer.fit(docs), docs)


class _FlatSearcher(Searcher):
    # rows scored per kernel call: bounds the (nq, block) work arrays whatever N is
    _BLOCK = 4096

    def __init__(self, quantizer: Quantizer, docs: np.ndarray) -> None:
        self.quantizer = quantizer
        self.codes = quantizer.encode(docs)
        self.ram_bytes_per_vector = float(quantizer.code_bytes)
        self._float32 = self.codes.dtype == np.float32  # the reference: plain BLAS, no decode step
        self._starts = np.zeros(1, np.int64)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        nq, n = queries.shape[0], self.codes.shape[0]
        prepared = np.ascontiguousarray(self.quantizer.prepare_queries(queries), dtype=np.float32)

        def score_block(start: int, stop: int) -> np.ndarray:
            if self._float32:  # the reference: plain BLAS, no decode step
                return prepared @ self.codes[start:stop].T
            # the index's rescoring kernel (fused gather + dot on the codes) over every row of the block
            rows = np.ascontiguousarray(
                np.broadcast_to(np.arange(start, stop, dtype=np.int64), (nq, stop - start))
            )
            return self.quantizer.rescore(prepared, (self.codes,), self._starts, rows)

        return topk_blocks(score_block, nq, n, k, block=self._BLOCK)[1]


def _fresh(spec: Any) -> Any:
    """An unfitted copy of a Quantizer (a configuration may be built over several corpora), or the spec."""
    return quantizer_from_config(spec.to_config()) if isinstance(spec, Quantizer) else spec


# ---- peers --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PeerConfig(Config):
    """Another library's search over the same embeddings (a row marked ``peer``)."""

    factory: Callable[[np.ndarray, int], Searcher] = field(default=None, repr=False)  # type: ignore[assignment]
    multiplier: int = 1
    loaders: tuple[Callable[[], Any], ...] = ()

    @property
    def peer(self) -> bool:
        return True

    def warm_up(self) -> None:
        for load in self.loaders:
            load()

    def build(self, docs: np.ndarray, workdir: Path) -> Searcher:
        return self.factory(docs, self.multiplier)


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"peer rows need {module.split('.')[0]}: {_INSTALL_EVAL}") from exc


def _st_quantization() -> Any:
    """sentence-transformers' quantization module (moved to ``util`` in version 5)."""
    try:
        return _import("sentence_transformers.util.quantization")
    except MissingDependencyError:
        return _import("sentence_transformers.quantization")


def _faiss() -> Any:
    return _import("faiss")


def _usearch() -> Any:
    return _import("usearch.index")


class _FaissFlatIP(Searcher):
    def __init__(self, docs: np.ndarray, multiplier: int) -> None:
        faiss = _faiss()
        self.index = faiss.IndexFlatIP(docs.shape[1])
        self.index.add(np.ascontiguousarray(docs, np.float32))
        self.ram_bytes_per_vector = float(4 * docs.shape[1])

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        _, rows = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return rows.astype(np.int64)


class _SentenceTransformersPeer(Searcher):
    """``semantic_search_faiss`` / ``semantic_search_usearch`` with its own rescoring of float queries.

    The corpus is quantized with ``quantize_embeddings`` (scalar ranges calibrated on the corpus itself),
    the library's index is built once and passed back in on every search, so searches are not charged
    for building it.
    """

    def __init__(self, docs: np.ndarray, multiplier: int, backend: str, precision: str) -> None:
        quantization = _st_quantization()
        self._backend = backend
        self._precision = precision
        self._multiplier = multiplier
        self._ranges = None
        if precision in ("uint8", "int8"):
            self._ranges = np.vstack([docs.min(axis=0), docs.max(axis=0)]).astype(np.float32)
        codes = quantization.quantize_embeddings(docs, precision=precision, ranges=self._ranges)
        if backend == "faiss":
            self._search_fn = quantization.semantic_search_faiss
        else:
            self._search_fn = quantization.semantic_search_usearch
        # build the library's own index from the codes (its first call does that), then keep it
        _, _, self._index = self._search_fn(
            docs[:1], corpus_embeddings=codes, corpus_precision=precision, top_k=1, ranges=self._ranges,
            rescore=False, output_index=True,
        )  # fmt: skip
        self.ram_bytes_per_vector = self._memory(docs.shape, codes)

    def _memory(self, shape: tuple[int, ...], codes: np.ndarray) -> float:
        n, dim = shape
        if self._backend == "faiss":
            if self._precision == "ubinary":
                return float(self._index.code_size)
            return float(4 * dim)  # faiss IndexFlatIP keeps the uint8 codes as float32
        # usearch keeps the vectors, their keys and the HNSW graph it builds on add (exact search ignores it)
        return float(self._index.serialized_length) / n

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        hits, _ = self._search_fn(
            np.ascontiguousarray(queries, np.float32), corpus_index=self._index,
            corpus_precision=self._precision, top_k=k, ranges=self._ranges, rescore=True,
            rescore_multiplier=self._multiplier, exact=True,
        )  # fmt: skip
        rows = np.full((queries.shape[0], k), -1, np.int64)
        for q, hit_list in enumerate(hits):
            ids = [h["corpus_id"] for h in hit_list][:k]
            rows[q, : len(ids)] = ids
        return rows


_Factory = Callable[[np.ndarray, int], Searcher]


def _st(backend: str, precision: str) -> _Factory:
    return lambda docs, m: _SentenceTransformersPeer(docs, m, backend, precision)


#: Peer name (without ``@M``) -> (factory(docs, multiplier), the imports it needs, done before timing).
PEERS: dict[str, tuple[_Factory, tuple[Callable[[], Any], ...]]] = {
    "faiss-flat-ip": (_FaissFlatIP, (_faiss,)),
    "st-faiss-ubinary": (_st("faiss", "ubinary"), (_st_quantization, _faiss)),
    "st-faiss-uint8": (_st("faiss", "uint8"), (_st_quantization, _faiss)),
    "st-usearch-ubinary": (_st("usearch", "ubinary"), (_st_quantization, _usearch)),
    "st-usearch-int8": (_st("usearch", "int8"), (_st_quantization, _usearch)),
}


# ---- parsing ------------------------------------------------------------------------------------------
_MRL = re.compile(r"^mrl(\d+):(.+)$")
_PCA = re.compile(r"^pca(\d+):(.+)$")
_OVERSAMPLING = re.compile(r"^(.+)@([0-9]*\.?[0-9]+)$")


def parse_config(spec: str) -> Config:
    """Turn one spec (see the module docstring) into a :class:`Config`.

    Raises
    ------
    InvalidArgumentError
        If the spec is malformed or names an unknown precision or peer.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"a configuration must be a non-empty string, got {spec!r}")
    from quantsearch.evaluation.lexical_configs import parse_text_config

    if (text_config := parse_text_config(spec)) is not None:  # bm25, hybrid-*, svm and their peers
        return text_config
    text = spec.strip().lower()
    base, _, multiplier = text.partition("@")
    if base in PEERS:
        m = _number(multiplier, spec, "rescore multiplier") if multiplier else 1
        if m != int(m) or m < 1:
            raise InvalidArgumentError(f"configuration {spec!r}: the rescore multiplier must be an int >= 1")
        factory, loaders = PEERS[base]
        return PeerConfig(text, factory=factory, multiplier=int(m), loaders=loaders)

    truncate_dim = pca_dim = None
    if mrl := _MRL.match(text):
        truncate_dim = int(mrl.group(1))
        if truncate_dim < 1:
            raise InvalidArgumentError(f"configuration {spec!r}: the Matryoshka dim must be >= 1")
        text = mrl.group(2)
    elif pca := _PCA.match(text):
        pca_dim = int(pca.group(1))
        if pca_dim < 1:
            raise InvalidArgumentError(f"configuration {spec!r}: the PCA dim must be >= 1")
        text = pca.group(2)
    oversampling: float | None = None
    if over := _OVERSAMPLING.match(text):
        text, oversampling = over.group(1), _number(over.group(2), spec, "oversampling")
        if oversampling < 1:
            raise InvalidArgumentError(f"configuration {spec!r}: oversampling must be >= 1")
    stages = [s.strip() for s in text.split(">")]
    if any(not s for s in stages):
        raise InvalidArgumentError(f"configuration {spec!r} has an empty stage")
    quantizers = [make_quantizer(s) for s in stages]  # validates every spelling
    stage_specs: list[Any] = list(stages)
    if pca_dim is not None:  # every stage codes the same projection (fitted on the same documents)
        stage_specs = quantizers = [PCAQuantizer(pca_dim, q) for q in quantizers]
    name = spec.strip().lower()
    if len(stages) == 1 and not _compact(quantizers[0]):
        if oversampling is not None:
            raise InvalidArgumentError(f"configuration {spec!r}: an exhaustive scan takes no oversampling")
        return FlatConfig(name, quantizer=stage_specs[0], truncate_dim=truncate_dim)
    if not _compact(quantizers[0]):
        raise InvalidArgumentError(
            f"configuration {spec!r}: the first of several stages is the in-RAM candidate tier and "
            f"needs compact codes (<= 2 bits per dimension, e.g. binary), got {stages[0]!r}"
        )
    if len(stages) == 1 and oversampling is not None:
        raise InvalidArgumentError(f"configuration {spec!r}: oversampling needs a rescoring stage")
    return IndexConfig(
        name,
        candidates=stage_specs[0],
        rescore=tuple(stage_specs[1:]),
        oversampling=10.0 if oversampling is None else oversampling,
        truncate_dim=truncate_dim,
    )


def parse_configs(specs: Sequence[str]) -> list[Config]:
    """Parse several specs, rejecting duplicates."""
    configs = [parse_config(s) for s in specs]
    names = [c.name for c in configs]
    for name in names:
        if names.count(name) > 1:
            raise InvalidArgumentError(f"configuration {name!r} is listed twice")
    return configs


def _compact(quantizer: Quantizer) -> bool:
    """Whether a quantizer's codes are meant for the in-RAM candidate tier (packed, <= 2 bits/dim)."""
    return quantizer.code_dtype == np.uint8 and quantizer.precision.bits <= 2


def _number(text: str, spec: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidArgumentError(f"configuration {spec!r}: {what} must be a number, got {text!r}") from None
