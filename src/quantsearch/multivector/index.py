"""MultiVectorIndex: MUVERA candidates from 1-bit FDE codes in RAM, exact Chamfer from int8 tokens on disk.

::

    DIR/
      manifest.json                 format "quantsearch-multivector", the token model, the FDE config,
                                    the candidate quantizer, its state file and the committed segments
      LOCK                          flock held by the one writer
      state/fde.<nonce>.npz         the FDE encoder's random matrices (saved, not re-drawn from a seed)
      state/candidates.<nonce>.npz  the candidate quantizer's fitted state
      segments/<seg>.fde.npy        candidate codes of one added batch (n, code_bytes), loaded in RAM
      segments/<seg>.fde8.npy       int8 codes of the same FDEs (n, fde_dim), memory-mapped (rescoring)
      segments/<seg>.tokens.npy     int8 token codes (T, dim), memory-mapped
      segments/<seg>.scales.npy     float32 token scales (T,)
      segments/<seg>.offsets.npy    int64 token range of each document (n + 1,)
      segments/<seg>.docs.json      ids and texts of the batch

The search: query tokens -> query FDE (partition sums) -> the candidate quantizer's scan over every
document's FDE code (RaBitQ with a Hadamard rotation by default: a float query against 1-bit codes) ->
``shortlist x candidates`` rows -> their int8 FDE codes, read from disk, keep the best ``candidates``
(``rescore=None`` at create skips this) -> Chamfer over their int8 tokens, read from the memory maps
-> top ``k``. The int8 FDE costs ``fde_dim`` bytes per document on disk, nothing in RAM, and brings
the 1-bit codes' ranking back to the float FDE's, so fewer documents reach the Chamfer stage.

Persistence follows the index directory's rules: every file is written to a temporary name, fsynced
and renamed; the manifest (self-checksummed) is the commit point, so an add is visible only once the
manifest that lists its segment lands. A crash before that leaves orphan files, removed by the next
writer. The candidate quantizer is calibrated on the first batch added (explicitly, on documents
only) and its state saved; later batches are encoded with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._topk import top_k
from .._validation import check_positive_int
from ..exceptions import (
    CorruptIndexError,
    DuplicateIdError,
    IndexExistsError,
    InvalidArgumentError,
    UnknownIdError,
)
from ..index import layout
from ..index.storage import WriterLock
from ..quantization import Quantizer, make_quantizer, quantizer_from_config
from ..results import SearchResults
from .chamfer import TokenTier, chamfer_rerank, quantize_tokens
from .fde import FDEConfig, FDEEncoder
from .tokens import TokenBatch, TokenEmbedder, as_token_batch

__all__ = ["MultiVectorIndex", "is_multivector_index"]

logger = logging.getLogger(__name__)

FORMAT_NAME = "quantsearch-multivector"
FORMAT_VERSION = 1
_SEGMENT_FILES = ("fde", "tokens", "scales", "offsets")


def _segment_path(seg: int, part: str) -> str:
    ext = "json" if part == "docs" else "npy"
    return f"{layout.SEGMENTS_DIR}/{seg:08d}.{part}.{ext}"


class MultiVectorIndex:
    """A late-interaction (multi-vector) index searched at single-vector cost with MUVERA.

    Create with :meth:`create`, reopen with :meth:`open`. Documents are token sets (from texts through
    a :class:`TokenEmbedder`, or given as arrays).

    Examples
    --------
    >>> idx = MultiVectorIndex.create("mv", model=None)          # bundled MiniLM token vectors
    >>> idx.add(["a", "b"], texts=["first document", "second document"])
    >>> idx.search(["which document comes first?"], k=1).to_list()
    """

    def __init__(self, root: Path, manifest: dict[str, Any], embedder: TokenEmbedder | None) -> None:
        self.root = root
        self._manifest = manifest
        self._embedder = embedder
        self.fde_config = FDEConfig.from_dict(manifest["fde"])
        self._encoder = FDEEncoder(self.fde_config)
        self._quantizer: Quantizer = quantizer_from_config(manifest["candidates"])
        self._load()

    # ---- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        dim: int | None = None,
        model: str | os.PathLike[str] | None = None,
        embedder: TokenEmbedder | None = None,
        fde: FDEConfig | dict[str, Any] | None = None,
        candidates: Any = "rabitq-hadamard",
        rescore: str | None = "int8",
        with_text: bool = True,
    ) -> MultiVectorIndex:
        """Create an empty index directory.

        Parameters
        ----------
        path : str or path-like
            A directory that does not exist yet (or is empty).
        dim : int, optional
            Token vector dimension; taken from the embedder when None.
        model : str or path-like, optional
            Token model for text (see :class:`TokenEmbedder`); ignored when ``embedder`` is given.
            None is the bundled all-MiniLM-L6-v2.
        embedder : TokenEmbedder, optional
        fde : FDEConfig or dict, optional
            Encoding parameters (``dim`` is filled in); defaults to the measured defaults
            (k_sim=5, r_reps=20, d_proj=16: 10,240 coordinates, 1,284 bytes per document as 1-bit codes;
            k-means partitions, fitted on the first batch added: see docs/benchmarks.md, issue 16).
        candidates : str or Quantizer
            Code of the FDEs in RAM, any name :func:`make_quantizer` accepts with a candidate scan
            (``"rabitq-hadamard"``, ``"binary"``, ...).
        rescore : str or None, default "int8"
            Code of the FDEs on disk that rescore the scan's shortlist before Chamfer (any
            :func:`make_quantizer` name with a rescoring stage); None sends the scan's top
            ``candidates`` straight to Chamfer.
        with_text : bool
            Keep the texts of added documents (returned with results).
        """
        root = Path(path)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise IndexExistsError(f"{root} exists and is not an empty directory")
        tok = embedder if embedder is not None else TokenEmbedder(model)
        if dim is None:
            dim = tok._st.dim
        dim = check_positive_int(dim, "dim")
        if fde is None:
            config = FDEConfig(dim=dim, partition="kmeans")
        elif isinstance(fde, FDEConfig):
            config = fde
        elif isinstance(fde, dict):
            config = FDEConfig.from_dict({**fde, "dim": dim})
        else:
            raise InvalidArgumentError(f"fde must be an FDEConfig, a dict or None, got {type(fde).__name__}")
        if config.dim != dim:
            raise InvalidArgumentError(f"fde.dim is {config.dim} but the token vectors have dim {dim}")
        quantizer = candidates if isinstance(candidates, Quantizer) else make_quantizer(candidates)
        rescorer = None if rescore is None else make_quantizer(rescore)
        root.mkdir(parents=True, exist_ok=True)
        encoder = FDEEncoder(config)
        state = layout.state_file("fde")
        sha = layout.save_arrays(root / state, _encoder_state(encoder))
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dim": dim,
            "model": tok.identity(),
            "fde": config.to_dict(),
            "fde_state": {"path": state, "sha256": sha},
            "candidates": quantizer.to_config(),
            "candidate_state": None,
            "rescore": None if rescorer is None else rescorer.to_config(),
            "rescore_state": None,
            "with_text": bool(with_text),
            "segments": [],
            "next_segment": 0,
        }
        layout.write_manifest(root, manifest)
        return cls(
            root, layout.read_manifest(root, format_name=FORMAT_NAME, format_version=FORMAT_VERSION), tok
        )

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, embedder: TokenEmbedder | None = None) -> MultiVectorIndex:
        """Open an existing index (a snapshot: :meth:`refresh` reads later commits).

        Parameters
        ----------
        path : str or path-like
        embedder : TokenEmbedder, optional
            Token model for text queries and texts added; None loads the model the manifest records.
            An index that records no model (built from token arrays) opens without one: token-array
            searches work, text raises :class:`~quantsearch.exceptions.InvalidArgumentError` (it is
            never silently embedded by the bundled MiniLM, whose vectors would not match the index's).
        """
        root = Path(path)
        manifest = layout.read_manifest(root, format_name=FORMAT_NAME, format_version=FORMAT_VERSION)
        ident = manifest.get("model") or {}
        if embedder is None and ident.get("model") is not None:
            embedder = TokenEmbedder(
                ident.get("model"),
                backend=ident.get("backend", "sentence-transformers"),
                max_seq_length=ident.get("max_seq_length"),
                normalize=bool(ident.get("normalize", True)),
            )
        return cls(root, manifest, embedder)

    def refresh(self) -> None:
        """Read the latest manifest (commits of other writers)."""
        self._manifest = layout.read_manifest(
            self.root, format_name=FORMAT_NAME, format_version=FORMAT_VERSION
        )
        self._load()

    def _load(self) -> None:
        m = self._manifest
        fde_state = self._read_state(m["fde_state"])
        if not np.array_equal(fde_state["simhash_"], self._encoder.simhash_):
            # the saved matrices are authoritative (a different numpy could draw others from the seed)
            logger.warning("FDE matrices differ from the seed's draw; using the saved ones")
        _set_encoder_state(self._encoder, fde_state)
        self._quantizer = quantizer_from_config(m["candidates"])
        if m.get("candidate_state"):
            self._quantizer.set_state(self._read_state(m["candidate_state"]))
        rescorer = quantizer_from_config(m["rescore"]) if m.get("rescore") else None  # absent: older index
        if rescorer is not None and m.get("rescore_state"):
            rescorer.set_state(self._read_state(m["rescore_state"]))
        fde8: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        tokens: list[np.ndarray] = []
        scales: list[np.ndarray] = []
        offsets: list[np.ndarray] = []
        ids: list[Any] = []
        texts: list[str | None] = []
        for seg in m["segments"]:
            sid = seg["id"]
            paths = {part: self.root / _segment_path(sid, part) for part in (*_SEGMENT_FILES, "docs")}
            try:
                codes.append(layout.read_array_checked(paths["fde"], seg["sha256"]["fde"]))
                tokens.append(np.load(paths["tokens"], mmap_mode="r"))
                if rescorer is not None:
                    fde8.append(np.load(self.root / _segment_path(sid, "fde8"), mmap_mode="r"))
                scales.append(np.load(paths["scales"], mmap_mode="r"))
                offsets.append(np.load(paths["offsets"]))
                docs = json.loads(paths["docs"].read_text())
            except (OSError, ValueError) as exc:
                raise CorruptIndexError(f"segment {sid} of {self.root} is unreadable: {exc}") from None
            if offsets[-1].shape[0] != seg["n"] + 1 or tokens[-1].shape[0] != offsets[-1][-1]:
                raise CorruptIndexError(
                    f"segment {sid} of {self.root}: token tier does not match its offsets"
                )
            if rescorer is not None and fde8[-1].shape[0] != seg["n"]:
                raise CorruptIndexError(f"segment {sid} of {self.root}: int8 FDE tier has the wrong rows")
            ids.extend(docs["ids"])
            texts.extend(docs.get("texts") or [None] * seg["n"])
        width = self._quantizer.code_bytes if self._quantizer.is_fitted else 0
        old = getattr(self, "_view", None)
        # one attribute swap: a search running in another thread keeps the view it started with
        self._view = _View(
            codes=np.concatenate(codes) if codes else np.empty((0, width), np.uint8),
            tier=TokenTier(tokens, scales, offsets, readahead=old.tier.readahead if old else None),
            ids=ids,
            texts=texts,
            row_of={doc_id: row for row, doc_id in enumerate(ids)},
            quantizer=self._quantizer,
            rescorer=rescorer,
            fde8=fde8,
            fde8_starts=np.cumsum([0] + [int(s["n"]) for s in m["segments"]][:-1]).astype(np.int64),
        )

    def _read_state(self, ref: dict[str, str]) -> dict[str, np.ndarray]:
        path = self.root / ref["path"]
        try:
            if layout.file_sha256(path) != ref["sha256"]:
                raise CorruptIndexError(f"{path} does not match its checksum")
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except OSError as exc:
            raise CorruptIndexError(f"{path} is unreadable: {exc}") from None

    # ---- properties ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._view.ids)

    def __repr__(self) -> str:
        return f"MultiVectorIndex({str(self.root)!r}, n={len(self)}, fde_dim={self.fde_config.output_dim})"

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def model(self) -> str | None:
        """Name of the token model (None when the index was created without one)."""
        ident = self._manifest.get("model") or {}
        return ident.get("model")

    @property
    def id_type(self) -> str:
        """``"int"`` or ``"str"``: the type of the ids added so far (``"int"`` while empty)."""
        ids = self._view.ids
        return "str" if ids and isinstance(ids[0], str) else "int"

    @property
    def ids(self) -> list[Any]:
        """Ids of the documents, in row order (a copy)."""
        return list(self._view.ids)

    @property
    def segments(self) -> int:
        return len(self._manifest["segments"])

    def close(self) -> None:
        """Nothing to release but the memory maps (dropped with the object); for symmetry with Index."""

    def get(self, doc_id: Any) -> dict[str, Any]:
        """The stored text of one document: ``{"id", "text", "metadata": None}``.

        Raises
        ------
        UnknownIdError
            No document has this id.
        """
        view = self._view
        if doc_id not in view.row_of:
            raise UnknownIdError(f"no document with id {doc_id!r}")
        row = view.row_of[doc_id]
        return {"id": doc_id, "text": view.texts[row], "metadata": None}

    @property
    def embedder(self) -> TokenEmbedder:
        """The token model for texts.

        Raises
        ------
        InvalidArgumentError
            The index records no model and none was passed to :meth:`open`.
        """
        if self._embedder is None:
            raise InvalidArgumentError(
                f"the multi-vector index {self.root} records no token model (it was built from token "
                "arrays): pass token vectors, or open it with embedder=TokenEmbedder(<the model used>)"
            )
        return self._embedder

    def info(self) -> dict[str, Any]:
        """Counts and bytes: FDE codes in RAM, the token tier on disk."""
        n = len(self)
        view = self._view
        ram = int(view.codes.nbytes)
        disk = sum(int(c.nbytes) for c in view.tier.codes) + sum(int(s.nbytes) for s in view.tier.scales)
        disk += sum(int(o.nbytes) for o in view.tier.offsets)
        fde8 = sum(int(c.nbytes) for c in view.fde8)  # the int8 FDE tier, on disk too
        tokens = sum(int(c.shape[0]) for c in view.tier.codes)
        docs_bytes = 0
        for seg in self._manifest["segments"]:
            with contextlib.suppress(OSError):  # a file gone since the open: counted as 0
                docs_bytes += (self.root / _segment_path(seg["id"], "docs")).stat().st_size
        return {
            "documents": n,
            "tokens": tokens,
            "dim": self.dim,
            "fde": self.fde_config.to_dict() | {"output_dim": self.fde_config.output_dim},
            "candidates": self._quantizer.name,
            "candidate_code_bytes": int(view.codes.shape[1]),
            "rescore": view.rescorer.name if view.rescorer is not None else None,
            "ram_bytes": ram,
            "disk_bytes": disk + fde8,
            "fde8_disk_bytes": fde8,
            "docs_bytes": docs_bytes,
            "ram_bytes_per_doc": ram / n if n else 0.0,
            "disk_bytes_per_doc": (disk + fde8) / n if n else 0.0,
        }

    # ---- writes -------------------------------------------------------------------------------
    def add(
        self,
        ids: Sequence[Any],
        *,
        texts: Sequence[str] | None = None,
        tokens: Any = None,
        progress: bool = False,
    ) -> None:
        """Add documents (one atomic batch).

        Parameters
        ----------
        ids : sequence of int or str
            One new, unique id per document (all ints or all strs).
        texts : sequence of str, optional
            Embedded by the index's token model unless ``tokens`` is given; stored when ``with_text``.
        tokens : TokenBatch, (vectors, offsets) or list of ndarrays of shape (len_i, dim), optional
            Token vectors of each document (as produced by the same model as the queries).
        """
        ids = _check_ids(ids)
        if texts is not None and (
            isinstance(texts, (str, bytes))
            or len(texts) != len(ids)
            or not all(isinstance(t, str) for t in texts)
        ):
            raise InvalidArgumentError(f"texts must be a sequence of {len(ids)} str (one per id)")
        if tokens is None:
            if texts is None:
                raise InvalidArgumentError("add needs texts or tokens")
            batch = self.embedder.embed(list(texts), progress=progress)
        else:
            batch = as_token_batch(tokens, dim=self.dim)
        if batch.n != len(ids):
            raise InvalidArgumentError(f"got {batch.n} token sets for {len(ids)} ids")
        lock = WriterLock(self.root)
        lock.acquire()
        try:
            self.refresh()
            view = self._view
            if view.ids and type(view.ids[0]) is not type(ids[0]):
                kind, got = type(view.ids[0]).__name__, type(ids[0]).__name__
                raise InvalidArgumentError(f"ids must be {kind} like the indexed ones, got {got}")
            dup = next((i for i in ids if i in view.row_of), None)
            if dup is not None:
                raise DuplicateIdError(f"id {dup!r} is already in the index")
            self._commit(ids, texts, batch)
        finally:
            lock.release()

    def _commit(self, ids: list[Any], texts: Sequence[str] | None, batch: TokenBatch) -> None:
        m = dict(self._manifest)
        encoder = self._encoder
        if not encoder.is_fitted:  # k-means partitions: fitted on the first batch, saved with it
            encoder = FDEEncoder(self.fde_config)
            _set_encoder_state(encoder, self._read_state(m["fde_state"]))
            encoder.fit(batch)
            state = layout.state_file("fde")
            m["fde_state"] = {
                "path": state,
                "sha256": layout.save_arrays(self.root / state, _encoder_state(encoder)),
            }
        fde = encoder.encode_documents(batch)
        quantizer = self._quantizer
        if m.get("candidate_state") is None:
            quantizer = quantizer_from_config(m["candidates"]).fit(fde)  # calibrated on documents only
            state = layout.state_file("candidates")
            m["candidate_state"] = {
                "path": state,
                "sha256": layout.save_arrays(self.root / state, quantizer.get_state()),
            }
        arrays: dict[str, np.ndarray] = {}
        if m.get("rescore"):
            rescorer = self._view.rescorer
            if rescorer is None or m.get("rescore_state") is None:
                rescorer = quantizer_from_config(m["rescore"]).fit(fde)
                state = layout.state_file("rescore")
                m["rescore_state"] = {
                    "path": state,
                    "sha256": layout.save_arrays(self.root / state, rescorer.get_state()),
                }
            arrays["fde8"] = rescorer.encode(fde)
        self._remove_orphans()
        sid = int(m["next_segment"])
        codes = quantizer.encode(fde)
        token_codes, scales = quantize_tokens(batch.vectors)
        arrays |= {"fde": codes, "tokens": token_codes, "scales": scales, "offsets": batch.offsets}
        sha = {}
        for part, array in arrays.items():
            sha[part] = (
                layout.save_array_chunks(
                    self.root / _segment_path(sid, part), array.shape, array.dtype, [array]
                )
                if array.ndim == 2
                else layout.atomic_write(
                    self.root / _segment_path(sid, part),
                    lambda f, a=array: np.save(f, a),  # type: ignore[misc]
                )
            )
        keep = list(texts) if texts is not None and m.get("with_text", True) else None
        docs = json.dumps({"ids": ids, "texts": keep})
        layout.atomic_write(self.root / _segment_path(sid, "docs"), lambda f: f.write(docs.encode()))
        m["segments"] = [*m["segments"], {"id": sid, "n": len(ids), "sha256": sha}]
        m["next_segment"] = sid + 1
        layout.write_manifest(self.root, m)  # the commit point
        if m["fde_state"] != self._manifest["fde_state"]:  # the unfitted encoder's state, now unused
            (self.root / self._manifest["fde_state"]["path"]).unlink(missing_ok=True)
        self.refresh()

    def _remove_orphans(self) -> None:
        """Segment files no committed segment names (left by a crash before a manifest landed)."""
        folder = self.root / layout.SEGMENTS_DIR
        if not folder.is_dir():
            return
        live = {f"{seg['id']:08d}" for seg in self._manifest["segments"]}
        for path in folder.iterdir():
            if path.name.split(".")[0] not in live:
                path.unlink(missing_ok=True)

    # ---- search -------------------------------------------------------------------------------
    def _query_tokens(self, queries: Any) -> tuple[TokenBatch, float]:
        t0 = time.perf_counter()
        if isinstance(queries, (list, tuple)) and queries and all(isinstance(q, str) for q in queries):
            batch = self.embedder.embed(list(queries), is_query=True)
        elif isinstance(queries, str):
            raise InvalidArgumentError(
                "queries must be a list of str, not a single string: wrap it in a list"
            )
        else:
            batch = as_token_batch(queries, dim=self.dim, name="queries")
        return batch, (time.perf_counter() - t0) * 1e3

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        candidates: int = 100,
        rerank: bool = True,
        shortlist: int = 4,
        with_text: bool = False,
    ) -> SearchResults:
        """MUVERA search: FDE candidates from the RAM codes, then Chamfer over their int8 tokens.

        Parameters
        ----------
        queries : list of str, TokenBatch, (vectors, offsets) or list of ndarrays (len_i, dim)
        k : int
            Results per query.
        candidates : int
            Documents reranked by Chamfer (at least ``k``).
        shortlist : int, default 4
            With the int8 FDE stage: the scan keeps ``shortlist * candidates`` documents, their int8
            FDE codes (on disk) keep the best ``candidates``.
        rerank : bool
            False returns the FDE scan's own top ``k``; scores: the scan's estimate of the FDE inner
            product divided by ``r_reps`` (each repetition estimates Chamfer once).
        with_text : bool
            Attach the stored texts.

        Returns
        -------
        SearchResults
            ``ids`` (nq, k) (int64 or str objects), ``scores`` (nq, k) float32 Chamfer similarities;
            timings of ``embed``, ``fde``, ``scan`` and ``chamfer``.
        """
        k = check_positive_int(k, "k")
        candidates = check_positive_int(candidates, "candidates")
        shortlist = check_positive_int(shortlist, "shortlist")
        batch, embed_ms = self._query_tokens(queries)
        timings = {"embed": embed_ms}
        view = self._view  # one snapshot for the whole search (a concurrent add swaps in another)
        nq, n = batch.n, len(view.ids)
        if n == 0:
            rows = np.full((nq, k), -1, np.int64)
            scores = np.full((nq, k), np.nan, np.float32)
            return self._results(view, rows, scores, timings, {}, with_text)
        t0 = time.perf_counter()
        fde = self._encoder.encode_queries(batch)
        timings["fde"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        width = max(k, candidates) if rerank else k
        wide = width * shortlist if rerank and view.rescorer is not None else width
        scan_scores, rows = view.quantizer.scan_topk(fde, view.codes, min(wide, n))
        timings["scan"] = (time.perf_counter() - t0) * 1e3
        counts = {"scan": n}
        if rerank and view.rescorer is not None:
            t0 = time.perf_counter()
            prepared = np.ascontiguousarray(view.rescorer.prepare_queries(fde), dtype=np.float32)
            fine = view.rescorer.rescore(prepared, view.fde8, view.fde8_starts, rows)
            rows, scan_scores = top_k(rows, fine, min(width, n))
            timings["fde8"] = (time.perf_counter() - t0) * 1e3
            counts["fde8"] = min(wide, n)
        if not rerank:  # the FDE inner product sums r_reps estimates of Chamfer: report one
            scan_scores = scan_scores / np.float32(self.fde_config.r_reps)
        if rerank:
            t0 = time.perf_counter()
            exact = chamfer_rerank(batch, view.tier, rows)
            rows, scan_scores = top_k(rows, exact, k)
            timings["chamfer"] = (time.perf_counter() - t0) * 1e3
            counts["chamfer"] = min(width, n)
        if rows.shape[1] < k:  # fewer documents than k: pad
            pad = k - rows.shape[1]
            rows = np.concatenate([rows, np.full((nq, pad), -1, np.int64)], axis=1)
            scan_scores = np.concatenate([scan_scores, np.full((nq, pad), np.nan, np.float32)], axis=1)
        scan_scores = np.where(rows >= 0, scan_scores, np.nan).astype(np.float32)
        return self._results(view, rows, scan_scores, timings, counts, with_text)

    def search_exact(self, queries: Any, k: int = 10, *, with_text: bool = False) -> SearchResults:
        """Brute-force Chamfer over every document's int8 tokens (the reference of :meth:`search`).

        Same arguments and results as :meth:`search`; timings ``embed`` and ``chamfer``.
        """
        k = check_positive_int(k, "k")
        batch, embed_ms = self._query_tokens(queries)
        view = self._view
        nq, n = batch.n, len(view.ids)
        timings = {"embed": embed_ms}
        rows = np.broadcast_to(np.arange(n, dtype=np.int64), (nq, n))
        t0 = time.perf_counter()
        scores = chamfer_rerank(batch, view.tier, np.ascontiguousarray(rows)) if n else np.zeros((nq, 0))
        rows, scores = top_k(rows, scores.astype(np.float32), min(k, n)) if n else (rows, scores)
        timings["chamfer"] = (time.perf_counter() - t0) * 1e3
        if rows.shape[1] < k:
            pad = k - rows.shape[1]
            rows = np.concatenate([rows, np.full((nq, pad), -1, np.int64)], axis=1)
            scores = np.concatenate([scores, np.full((nq, pad), np.nan, np.float32)], axis=1)
        return self._results(view, rows, scores.astype(np.float32), timings, {"chamfer": n}, with_text)

    def _results(
        self,
        view: _View,
        rows: np.ndarray,
        scores: np.ndarray,
        timings: dict[str, float],
        counts: dict[str, int],
        with_text: bool,
    ) -> SearchResults:
        str_ids = bool(view.ids) and isinstance(view.ids[0], str)
        ids = np.full(rows.shape, None if str_ids else -1, dtype=object if str_ids else np.int64)
        present = rows >= 0
        ids[present] = [view.ids[r] for r in rows[present]]
        texts = None
        if with_text:
            texts = [[view.texts[r] if r >= 0 else None for r in row] for row in rows]
        return SearchResults(ids=ids, scores=scores, texts=texts, timings=timings, candidates=counts)


@dataclass(frozen=True)
class _View:
    """What one search reads: the candidate codes, the token tier, ids and texts of one commit."""

    codes: np.ndarray
    tier: TokenTier
    ids: list[Any]
    texts: list[str | None]
    row_of: dict[Any, int]
    quantizer: Quantizer
    rescorer: Quantizer | None  # the int8 FDE stage (None: scan -> Chamfer)
    fde8: list[np.ndarray]  # its codes, one memory map per segment
    fde8_starts: np.ndarray  # global row of each segment's first code


def is_multivector_index(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a :class:`MultiVectorIndex` (its manifest names the format)."""
    try:
        doc = json.loads((Path(path) / layout.MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT_NAME


def _check_ids(ids: Sequence[Any]) -> list[Any]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) and not isinstance(ids, np.ndarray):
        raise InvalidArgumentError("ids must be a sequence of int or str")
    out = [i.item() if isinstance(i, np.generic) else i for i in ids]
    if not out:
        raise InvalidArgumentError("ids is empty: expected at least one document")
    kinds = {type(i) for i in out}
    if kinds not in ({int}, {str}):
        raise InvalidArgumentError("ids must be all int or all str")
    if len(set(out)) != len(out):
        raise DuplicateIdError("ids hold duplicates")
    return out


def _encoder_state(encoder: FDEEncoder) -> dict[str, np.ndarray]:
    state = {"simhash_": encoder.simhash_}
    for name in ("projection_", "sketch_index_", "sketch_sign_", "centroids_"):
        value = getattr(encoder, name)
        if value is not None:
            state[name] = value
    return state


def _set_encoder_state(encoder: FDEEncoder, state: dict[str, np.ndarray]) -> None:
    for name, value in state.items():
        if name not in ("simhash_", "projection_", "sketch_index_", "sketch_sign_", "centroids_"):
            raise CorruptIndexError(f"unexpected FDE state entry {name!r}")
        setattr(encoder, name, value)
