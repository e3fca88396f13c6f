"""The persistent tiered index: binary codes in RAM, finer codes memory-mapped, payload in SQLite."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import mmap
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._validation import as_float_matrix, check_positive_int
from ..exceptions import (
    CorruptIndexError,
    DuplicateIdError,
    IndexExistsError,
    IndexLockedError,
    InvalidArgumentError,
    NotFittedError,
    QuantsearchError,
    UnknownIdError,
)
from ..kernels import gather_rows
from ..quantization import Quantizer, make_quantizer, quantizer_from_config
from ..results import SearchResults
from . import layout
from .catalog import Catalog, Payload, Segment
from .pipeline import IndexView, TierView, run_pipeline

logger = logging.getLogger(__name__)

IdType = Literal["int", "str"]

#: Oversampling used when a search does not name one. Measured on nfcorpus and scifact with
#: all-MiniLM-L6-v2 (docs/benchmarks.md): binary -> int8 rescoring at x10 keeps >= 99% of float32 NDCG@10.
DEFAULT_OVERSAMPLING = 10.0

_MAX_ID_LEN = 1024


class Index:
    """A compressed vector index stored in a directory.

    Tier 1 holds 1-bit codes in RAM and produces ``k x oversampling`` candidates by exact Hamming
    scan; the rescoring tiers (int8 by default, optionally float16/float32) are memory-mapped
    files read only at the candidates' rows; ids, texts and metadata live in SQLite.

    Create with :meth:`create` (or :meth:`build` to calibrate and add in one call), reopen with
    :meth:`open`. Writes (``calibrate``, ``add``, ``delete``) take a lock on the directory, are
    atomic, and survive a crash: after a kill, the index holds every batch whose ``add`` returned.
    """

    # ---- construction ---------------------------------------------------------------------------
    def __init__(self, root: Path, manifest: dict[str, Any], catalog: Catalog) -> None:
        """Use :meth:`create` or :meth:`open`."""
        self.path = root
        self._manifest = manifest
        self._catalog = catalog
        self._write_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._embedder: Any = None
        self._tiers = self._load_tiers(manifest)
        self._load_segments()

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        dim: int,
        *,
        rescore: Sequence[Any] | str | Quantizer | None = ("int8",),
        binary: Quantizer | None = None,
        truncate_dim: int | None = None,
        id_type: IdType = "int",
        model: str | None = None,
        oversampling: float = DEFAULT_OVERSAMPLING,
        calibration: np.ndarray | None = None,
    ) -> Index:
        """Create an empty index directory.

        Parameters
        ----------
        path : path-like
            A directory that does not exist yet or is empty.
        dim : int
            Dimension of the float vectors that will be added and searched.
        rescore : sequence of precision spellings or Quantizers, or None
            Disk tiers used to rescore candidates, in stage order: ``"int8"`` (default),
            ``"uint8"``, ``"int4"``, ``"float16"``, ``"float32"``. ``None`` or ``()`` keeps binary only.
        binary : Quantizer, optional
            Candidate-stage quantizer (1-bit codes; default :class:`BinaryQuantizer`).
        truncate_dim : int, optional
            Matryoshka truncation applied to every tier (vectors are cut to this many leading
            dimensions and renormalised before quantization).
        id_type : {"int", "str"}
            Type of the document ids.
        model : str, optional
            Embedding model name recorded so that text queries can be embedded; ``"default"``
            means the bundled all-MiniLM-L6-v2.
        oversampling : float
            Default candidate multiplier of :meth:`search`.
        calibration : ndarray of shape (n, dim), float, optional
            Sample of document vectors to calibrate the quantizers on now (else call
            :meth:`calibrate` before the first :meth:`add`).
        """
        root = Path(path)
        dim = check_positive_int(dim, "dim")
        if id_type not in ("int", "str"):
            raise InvalidArgumentError(f"id_type must be 'int' or 'str', got {id_type!r}")
        oversampling = _check_oversampling(oversampling)
        if truncate_dim is not None:
            truncate_dim = check_positive_int(truncate_dim, "truncate_dim", maximum=dim)
        candidate = make_quantizer(binary if binary is not None else "binary", truncate_dim=truncate_dim)
        if candidate.code_dtype != np.uint8:
            raise InvalidArgumentError(
                f"the candidate tier keeps packed byte codes in RAM; {candidate.name!r} codes are "
                f"{candidate.code_dtype} (use it as a rescoring tier)"
            )
        if rescore is None:
            rescore_specs: list[Any] = []
        elif isinstance(rescore, (str, Quantizer)):
            rescore_specs = [rescore]
        else:
            rescore_specs = list(rescore)
        tiers = [("candidates", "ram", candidate)]
        tiers += [("rescore", "mmap", make_quantizer(s, truncate_dim=truncate_dim)) for s in rescore_specs]
        names = [_tier_name(q) for _, _, q in tiers]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"tiers must have distinct precisions, got {names}")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise IndexExistsError(f"{root} already exists and is not an empty directory")
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": layout.FORMAT_NAME,
            "format_version": layout.FORMAT_VERSION,
            "dim": dim,
            "id_type": id_type,
            "model": model,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "search": {"oversampling": oversampling},
            "tiers": [
                {"name": name, "role": role, "storage": storage, "quantizer": q.to_config(), "state": None}
                for name, (role, storage, q) in zip(names, tiers, strict=True)
            ],
        }
        catalog = Catalog(root / layout.CATALOG, create=True)
        layout.write_manifest(root, manifest)  # the manifest is written last: it marks a complete index
        index = cls(root, layout.read_manifest(root), catalog)
        if calibration is not None:
            index.calibrate(calibration)
        return index

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Index:
        """Open an existing index; raises :class:`IndexNotFoundError` or :class:`CorruptIndexError`."""
        root = Path(path)
        manifest = layout.read_manifest(root)
        _check_manifest(root, manifest)
        catalog = Catalog(root / layout.CATALOG)
        try:
            return cls(root, manifest, catalog)
        except BaseException:
            catalog.close()  # do not leak the connection of an index that failed to load
            raise

    @classmethod
    def build(
        cls,
        path: str | os.PathLike[str],
        vectors: np.ndarray,
        *,
        ids: Sequence[int | str] | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        batch_size: int = 100_000,
        **create_kwargs: Any,
    ) -> Index:
        """Create an index calibrated on ``vectors`` and add them (in batches of ``batch_size``)."""
        vectors = as_float_matrix(vectors, "vectors")
        if ids is not None and "id_type" not in create_kwargs:
            create_kwargs["id_type"] = "str" if len(ids) and isinstance(ids[0], str) else "int"
        index = cls.create(path, vectors.shape[1], calibration=vectors, **create_kwargs)
        for start in range(0, vectors.shape[0], batch_size):
            end = start + batch_size
            index.add(
                vectors[start:end],
                ids=None if ids is None else ids[start:end],
                texts=None if texts is None else texts[start:end],
                metadata=None if metadata is None else metadata[start:end],
            )
        return index

    # ---- properties -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def id_type(self) -> IdType:
        return self._manifest["id_type"]

    @property
    def model(self) -> str | None:
        return self._manifest.get("model")

    @property
    def default_oversampling(self) -> float:
        return float(self._manifest["search"]["oversampling"])

    @property
    def tiers(self) -> dict[str, Quantizer]:
        """Quantizer of each tier, in stage order (the first is the candidate tier)."""
        return dict(self._tiers)

    @property
    def rescore_tiers(self) -> tuple[str, ...]:
        return tuple(t["name"] for t in self._manifest["tiers"] if t["role"] == "rescore")

    @property
    def is_calibrated(self) -> bool:
        return all(q.is_fitted for q in self._tiers.values())

    def __len__(self) -> int:
        return self._view.n_live

    def __repr__(self) -> str:
        tiers = "+".join(self._tiers)
        return f"Index({str(self.path)!r}, n={len(self)}, dim={self.dim}, tiers={tiers})"

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the writer lock and the catalog connection."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
        self._catalog.close()

    # ---- loading ----------------------------------------------------------------------------------
    def _load_tiers(self, manifest: dict[str, Any]) -> dict[str, Quantizer]:
        tiers: dict[str, Quantizer] = {}
        for tier in manifest["tiers"]:
            try:
                quantizer = quantizer_from_config(tier["quantizer"])
            except (InvalidArgumentError, KeyError, TypeError) as exc:
                raise CorruptIndexError(f"manifest of {self.path} has an invalid tier: {exc}") from None
            if tier.get("state") is not None:
                quantizer.set_state(self._load_state(tier["name"], tier["state"]))
                if quantizer.dim_ != manifest["dim"]:
                    raise CorruptIndexError(
                        f"quantizer state of tier {tier['name']!r} has dim {quantizer.dim_}, "
                        f"but the manifest says dim {manifest['dim']}"
                    )
            tiers[tier["name"]] = quantizer
        return tiers

    def _load_state(self, tier: str, ref: dict[str, Any]) -> dict[str, np.ndarray]:
        path = self.path / ref["file"]
        if not path.is_file():
            raise CorruptIndexError(f"quantizer state of tier {tier!r} is missing: {path}")
        if layout.file_sha256(path) != ref["sha256"]:
            raise CorruptIndexError(f"quantizer state of tier {tier!r} does not match its checksum: {path}")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def _load_segments(self) -> None:
        """Read the committed segments: binary codes into RAM, the other tiers as memory maps."""
        segments, live_rows, generation = self._catalog.state()
        cand_name = self._candidate_name
        cand = self._tiers[cand_name]
        width = cand.code_bytes if cand.is_fitted else 0
        n_rows = sum(s.n_rows for s in segments)
        codes = np.empty((n_rows, width), np.uint8)
        arrays: dict[str, list[np.ndarray]] = {name: [] for name in self.rescore_tiers}
        expected_start = 0
        for seg in segments:
            if seg.start_row != expected_start:
                raise CorruptIndexError(
                    f"segment {seg.seg_id} starts at row {seg.start_row}, expected {expected_start}"
                )
            expected_start += seg.n_rows
            for name, quantizer in self._tiers.items():
                array = self._open_segment_file(seg, name, quantizer, in_ram=name == cand_name)
                if name == cand_name:
                    codes[seg.start_row : seg.start_row + seg.n_rows] = array
                else:
                    arrays[name].append(array)
        valid = np.zeros(n_rows, bool)
        live = np.asarray(live_rows, np.int64)
        if live.size and (live[0] < 0 or live[-1] >= n_rows):
            raise CorruptIndexError(f"catalog of {self.path} lists rows outside the stored segments")
        valid[live] = True
        self._segments = segments
        self._codes_buf = codes
        self._arrays = arrays
        self._generation = generation
        self._publish(n_rows, valid, int(live.size))

    def _open_segment_file(
        self, seg: Segment, tier: str, quantizer: Quantizer, *, in_ram: bool
    ) -> np.ndarray:
        ref = seg.files.get(tier)
        if ref is None:
            raise CorruptIndexError(f"segment {seg.seg_id} has no file for tier {tier!r}")
        path = self.path / ref["path"]
        shape = (seg.n_rows, quantizer.code_bytes // quantizer.code_dtype.itemsize)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CorruptIndexError(f"segment file is missing: {path}") from None
        if size != ref["bytes"]:
            raise CorruptIndexError(
                f"segment file {path} has {size} bytes, expected {ref['bytes']} (truncated?)"
            )
        try:
            if in_ram:  # read once, checksum included (the candidate tier is read whole anyway)
                array = layout.read_array_checked(path, ref["sha256"])
            else:
                array = _map_random(np.load(path, mmap_mode="r", allow_pickle=False))
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptIndexError(f"segment file {path} cannot be read: {exc}") from None
        if array.shape != shape or array.dtype != quantizer.code_dtype:
            raise CorruptIndexError(
                f"segment file {path} holds {array.dtype}{array.shape}, "
                f"expected {quantizer.code_dtype}{shape}"
            )
        return array

    def _publish(self, n_rows: int, valid: np.ndarray, n_live: int) -> None:
        """Swap in a new immutable view; searches in flight keep the one they started with."""
        starts = np.asarray([s.start_row for s in self._segments], np.int64)
        rescore = {
            name: TierView(name, self._tiers[name], tuple(self._arrays[name])) for name in self.rescore_tiers
        }
        self._view = IndexView(
            candidates=self._tiers[self._candidate_name],
            codes=self._codes_buf[:n_rows],
            valid=valid[:n_rows],
            n_live=n_live,
            starts=starts,
            rescore=rescore,
            generation=self._generation,
        )

    @property
    def _candidate_name(self) -> str:
        return str(self._manifest["tiers"][0]["name"])

    # ---- writing ------------------------------------------------------------------------------------
    def _acquire_writer(self) -> None:
        """Take the directory's writer lock (once per Index object) and clean up after crashes."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.path / layout.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexLockedError(f"another writer holds the lock on {self.path}") from None
        try:
            self._refresh()
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self._remove_orphans()

    def refresh(self) -> Index:
        """Catch up with what other processes committed since this index was opened.

        An open index is a snapshot for searching; writers catch up by themselves when they take
        the lock (writing from a stale view would reuse other writers' segment ids and rows).
        """
        with self._write_lock:
            self._refresh()
        return self

    def _refresh(self) -> None:
        manifest = layout.read_manifest(self.path)
        if manifest != self._manifest:
            _check_manifest(self.path, manifest)
            self._tiers = self._load_tiers(manifest)
            self._manifest = manifest
            self._load_segments()
        elif self._catalog.segments() != self._segments or self._catalog.count() != self._view.n_live:
            self._load_segments()

    def _remove_orphans(self) -> None:
        """Delete segment and temp files that no committed segment refers to (left by a crash)."""
        referenced = {ref["path"] for seg in self._catalog.segments() for ref in seg.files.values()}
        referenced |= {t["state"]["file"] for t in self._manifest["tiers"] if t.get("state")}
        for folder in (self.path / layout.SEGMENTS_DIR, self.path / layout.STATE_DIR, self.path):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                rel = entry.relative_to(self.path).as_posix()
                ours = (
                    layout.parse_segment_file(entry.name) is not None
                    if folder.name == layout.SEGMENTS_DIR
                    else folder.name == layout.STATE_DIR and entry.suffix == ".npz"
                )
                if entry.name.endswith(".tmp") or (ours and rel not in referenced):
                    logger.info("removing %s left by an interrupted write", entry)
                    entry.unlink(missing_ok=True)

    def calibrate(self, sample: np.ndarray) -> Index:
        """Fit every tier's quantizer on a sample of document vectors and save the calibration.

        Only allowed while the index has never held a document (codes already written depend on
        the old calibration).

        Parameters
        ----------
        sample : ndarray of shape (n, dim), float
        """
        sample = as_float_matrix(sample, "calibration sample", dim=self.dim)
        with self._write_lock:
            self._acquire_writer()
            if self._segments:
                raise InvalidArgumentError("calibrate() is only allowed before the first add()")
            fitted = {name: quantizer_from_config(q.to_config()) for name, q in self._tiers.items()}
            manifest = json.loads(json.dumps(self._manifest))
            for tier in manifest["tiers"]:
                quantizer = fitted[tier["name"]].fit(sample)
                rel = layout.state_file(tier["name"])
                sha = layout.save_arrays(self.path / rel, quantizer.get_state())
                tier["state"] = {"file": rel, "sha256": sha}
            layout.write_manifest(self.path, manifest)
            self._manifest = layout.read_manifest(self.path)
            self._remove_orphans()  # the previous calibration's state files, if any
            self._tiers = fitted
            self._load_segments()
        logger.info("calibrated %d tiers on %d vectors", len(fitted), sample.shape[0])
        return self

    def add(
        self,
        vectors: np.ndarray,
        ids: Sequence[int | str] | np.ndarray | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[int | str]:
        """Add a batch of documents atomically; returns their ids.

        Parameters
        ----------
        vectors : ndarray of shape (n, dim), float
        ids : sequence of n ints or n strs, optional
            Must match the index's ``id_type`` and be new. Integer indexes assign ids when omitted.
        texts : sequence of n str or None, optional
        metadata : sequence of n JSON-serialisable dicts or None, optional

        The batch is visible to searches, and durable, when this returns; if it raises, nothing of
        the batch was stored.
        """
        vectors = as_float_matrix(vectors, "vectors", dim=self.dim)
        n = vectors.shape[0]
        texts_list = _check_column(texts, n, "texts", (str,))
        meta_list = [
            None if m is None else _dump_metadata(m, i)
            for i, m in enumerate(_check_column(metadata, n, "metadata", (dict,)))
        ]
        with self._write_lock:
            self._acquire_writer()  # first, so that a calibration by another writer is seen
            if not self.is_calibrated:
                raise NotFittedError(
                    "the index is not calibrated: call calibrate(sample) or pass calibration= to create"
                )
            id_list = self._check_new_ids(ids, n)
            codes = {name: q.encode(vectors) for name, q in self._tiers.items()}
            seg_id = max((s.seg_id for s in self._segments), default=0) + 1
            start = sum(s.n_rows for s in self._segments)
            files = self._write_segment(seg_id, n, {name: [array] for name, array in codes.items()})
            segment = Segment(seg_id, start, n, files)

            def commit(db: sqlite3.Connection) -> None:
                Catalog.insert_segment(db, segment)
                Catalog.insert_docs(
                    db, zip(range(start, start + n), id_list, texts_list, meta_list, strict=True)
                )
                if self.id_type == "int":  # never lower it: auto ids must stay above every id given
                    next_id = max(
                        int(self._catalog.meta("next_id", "0") or 0), max(int(i) for i in id_list) + 1
                    )
                    Catalog.set_meta(db, "next_id", str(next_id))

            self._commit(segment, commit)
            self._append_segment(segment, codes)
        return id_list

    def _write_segment(
        self, seg_id: int, n_rows: int, chunks: dict[str, Iterable[np.ndarray]]
    ) -> dict[str, dict[str, Any]]:
        """Write one file per tier (atomically, fsynced) from row chunks; return their catalog entries."""
        files: dict[str, dict[str, Any]] = {}
        for name, parts in chunks.items():
            quantizer = self._tiers[name]
            rel = layout.segment_file(seg_id, name)
            shape = (n_rows, quantizer.code_bytes // quantizer.code_dtype.itemsize)
            sha = layout.save_array_chunks(self.path / rel, shape, quantizer.code_dtype, parts)
            files[name] = {"path": rel, "bytes": (self.path / rel).stat().st_size, "sha256": sha}
        return files

    def _commit(self, segment: Segment, body: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``body`` in the one transaction that commits ``segment``'s files; on failure remove them."""
        try:
            with self._catalog.transaction() as db:  # the commit point
                body(db)
        except Exception as exc:
            if not self._segment_committed(segment.seg_id):  # never remove the files of a committed one
                for ref in segment.files.values():
                    (self.path / ref["path"]).unlink(missing_ok=True)
            if isinstance(
                exc, sqlite3.IntegrityError
            ):  # ids are checked first; only a foreign writer gets here
                raise DuplicateIdError(f"an id of the batch is already in the index: {exc}") from None
            raise

    def _segment_committed(self, seg_id: int) -> bool:
        """Whether the catalog lists ``seg_id``; True when that cannot be read (the safe answer:
        files are kept, and the next writer removes them if they turn out to be orphans)."""
        try:
            return any(s.seg_id == seg_id for s in self._catalog.segments())
        except QuantsearchError:
            return True

    def _check_new_ids(self, ids: Sequence[int | str] | np.ndarray | None, n: int) -> list[int | str]:
        if ids is None:
            if self.id_type == "str":
                raise InvalidArgumentError("ids are required for an index with id_type='str'")
            first = max(int(self._catalog.meta("next_id", "0") or 0), 0)
            return list(range(first, first + n))
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
            raise InvalidArgumentError(f"ids must be a sequence of {n} ids, got {type(ids).__name__}")
        if len(ids) != n:
            raise InvalidArgumentError(f"ids has {len(ids)} entries, expected {n} (one per vector)")
        out: list[int | str] = []
        for i, value in enumerate(ids.tolist() if isinstance(ids, np.ndarray) else ids):
            out.append(_check_id(value, self.id_type, f"ids[{i}]"))
        if len(set(out)) != n:
            dup = next(value for value, count in Counter(out).items() if count > 1)
            raise DuplicateIdError(f"id {dup!r} appears more than once in the batch")
        existing = self._catalog.existing_ids(out)
        if existing:
            raise DuplicateIdError(f"id {existing[0]!r} is already in the index ({len(existing)} duplicates)")
        return out

    def _append_segment(self, segment: Segment, codes: dict[str, np.ndarray]) -> None:
        """Extend the in-memory state after a commit (amortised growth of the RAM buffers)."""
        old = self._view.codes.shape[0]
        new = old + segment.n_rows
        if new > self._codes_buf.shape[0]:
            capacity = max(new, int(self._codes_buf.shape[0] * 1.5))
            buf = np.empty((capacity, codes[self._candidate_name].shape[1]), np.uint8)
            buf[:old] = self._codes_buf[:old]
            self._codes_buf = buf
        self._codes_buf[old:new] = codes[self._candidate_name]
        valid = np.zeros(new, bool)  # copied, not grown in place: searches in flight keep the old mask
        valid[:old] = self._view.valid
        valid[old:new] = True
        self._segments = [*self._segments, segment]
        for name in self.rescore_tiers:
            mapped = self._open_segment_file(segment, name, self._tiers[name], in_ram=False)
            self._arrays[name] = [*self._arrays[name], mapped]
        self._publish(new, valid, self._view.n_live + segment.n_rows)

    def delete(self, ids: Sequence[int | str] | int | str) -> int:
        """Delete documents by id (all or nothing); returns how many were deleted.

        Raises :class:`UnknownIdError` if any id is not in the index (nothing is deleted then).
        """
        if isinstance(ids, (int, str, np.integer)):
            id_list: list[Any] = [ids]
        elif isinstance(ids, (Sequence, np.ndarray, set, frozenset)):
            id_list = list(ids)
        else:
            raise InvalidArgumentError(f"ids must be an id or a sequence of ids, got {type(ids).__name__}")
        checked = [_check_id(v, self.id_type, f"ids[{i}]") for i, v in enumerate(id_list)]
        with self._write_lock:
            self._acquire_writer()
            rows = self._catalog.rows_of(checked)
            missing = [i for i in checked if i not in rows]
            if missing:
                raise UnknownIdError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown)")
            with self._catalog.transaction() as db:
                Catalog.delete_ids(db, checked)
            valid = self._view.valid.copy()
            valid[np.fromiter(rows.values(), np.int64, len(rows))] = False
            self._publish(valid.shape[0], valid, self._view.n_live - len(rows))
        return len(rows)

    def compact(self, *, chunk_rows: int = 65_536) -> int:
        """Rewrite the index as one segment without deleted rows; returns the number of rows reclaimed.

        Deletes only mask rows, and every ``add`` makes a segment; compaction gives the memory and the
        scan time back. It is crash-safe like ``add``: the new segment files are written and fsynced
        first, then one SQLite transaction swaps the segment list, renumbers the documents' rows and
        bumps the catalog generation; old files are removed afterwards. Searches that started on the
        old row numbers (here or in another process) see the new generation and search again.

        Parameters
        ----------
        chunk_rows : int
            Rows copied at a time from the memory-mapped tiers (bounds the memory used).
        """
        chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
        with self._write_lock:
            self._acquire_writer()
            view = self._view
            n_rows = view.codes.shape[0]
            if n_rows == view.n_live and len(self._segments) <= 1:
                return 0
            live = np.flatnonzero(view.valid).astype(np.int64)
            seg_id = max((s.seg_id for s in self._segments), default=0) + 1

            def live_rows_of(name: str) -> Iterable[np.ndarray]:
                for i in range(0, live.size, chunk_rows):
                    rows = live[i : i + chunk_rows]
                    if name == self._candidate_name:
                        yield view.codes[rows]
                    else:
                        yield gather_rows(list(view.rescore[name].arrays), view.starts, rows)

            chunks = {name: live_rows_of(name) for name in self._tiers}
            segment = Segment(seg_id, 0, int(live.size), self._write_segment(seg_id, int(live.size), chunks))

            def commit(db: sqlite3.Connection) -> None:
                Catalog.replace_segments(db, segment)
                Catalog.renumber_rows(db, zip(range(live.size), live.tolist(), strict=True))
                Catalog.set_meta(db, "generation", str(self._generation + 1))

            self._commit(segment, commit)
            self._load_segments()
            self._remove_orphans()  # the old segments' files
        logger.info("compacted %s: %d rows -> %d", self.path, n_rows, live.size)
        return n_rows - int(live.size)

    # ---- reading ----------------------------------------------------------------------------------------
    def get(self, doc_id: int | str) -> dict[str, Any]:
        """The stored payload of one document: ``{"id", "text", "metadata"}``."""
        payload = self._catalog.get(_check_id(doc_id, self.id_type, "id"))
        if payload is None:
            raise UnknownIdError(f"id {doc_id!r} is not in the index")
        return {"id": payload.id, "text": payload.text, "metadata": payload.metadata}

    def __contains__(self, doc_id: object) -> bool:
        try:
            return self._catalog.get(_check_id(doc_id, self.id_type, "id")) is not None
        except InvalidArgumentError:
            return False

    def search(
        self,
        queries: np.ndarray | str | Sequence[str],
        k: int = 10,
        *,
        oversampling: float | None = None,
        stages: Sequence[str] | None = None,
        with_payload: bool = True,
    ) -> SearchResults:
        """Find the ``k`` best documents of each query.

        Parameters
        ----------
        queries : ndarray of shape (n_queries, dim) or (dim,), float; or str / list of str
            Float query vectors (never quantized on themselves: the saved calibration is used), or
            texts, embedded with the index's model.
        k : int
            Results per query, 1 <= k <= number of documents.
        oversampling : float, optional
            The Hamming stage keeps ``k * oversampling`` candidates for rescoring (default: the
            index's setting, :data:`DEFAULT_OVERSAMPLING` unless changed at create).
        stages : sequence of tier names, optional
            Rescoring stages to run, in order (default: every rescoring tier of the index, e.g.
            ``("int8",)``); ``()`` returns the Hamming ranking.
        with_payload : bool
            Fetch texts and metadata of the hits.

        Returns
        -------
        SearchResults
            ids and scores of shape (n_queries, k), payload, and per-stage timings in ms.
        """
        timings: dict[str, float] = {}
        k = check_positive_int(k, "k")
        self._check_k(k, self._view)
        oversampling = (
            self.default_oversampling if oversampling is None else _check_oversampling(oversampling)
        )
        if stages is None:
            stage_names = self.rescore_tiers
        else:
            stage_names = (stages,) if isinstance(stages, str) else tuple(stages)
            unknown = [s for s in stage_names if s not in self.rescore_tiers]
            if unknown:
                raise InvalidArgumentError(
                    f"unknown stage {unknown[0]!r}; this index has {list(self.rescore_tiers)}"
                )
        if isinstance(queries, str) or (
            isinstance(queries, Sequence) and queries and isinstance(queries[0], str)
        ):
            t0 = time.perf_counter()
            texts = [queries] if isinstance(queries, str) else list(queries)
            vectors = self.embedder.embed(texts)
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        else:
            vectors = queries
        vectors = as_float_matrix(vectors, "queries", dim=self.dim)
        for _attempt in range(3):
            view = self._view
            self._check_k(k, view)
            out = run_pipeline(view, vectors, k, oversampling=oversampling, stages=stage_names)
            t0 = time.perf_counter()
            generation, payload = self._catalog.payload(
                out.rows[out.rows >= 0].tolist(), with_text=with_payload
            )
            if generation == view.generation:
                break
            # rows were renumbered (a compaction) after this view was taken: search a fresh one
            self.refresh()
        else:
            raise IndexLockedError("the index was compacted three times during this search; try again")
        timings.update(out.timings)
        ids, found, texts_out, meta_out = self._lookup(out.rows, payload, with_payload)
        timings["payload" if with_payload else "ids"] = (time.perf_counter() - t0) * 1e3
        scores = np.where(found, out.scores, np.float32(np.nan))  # a row deleted since is padding, not a hit
        return SearchResults(ids, scores, texts_out, meta_out, timings, out.candidates)

    @staticmethod
    def _check_k(k: int, view: IndexView) -> None:
        if k > view.n_live:
            raise InvalidArgumentError(f"k={k} exceeds the number of documents in the index ({view.n_live})")

    def _lookup(
        self, rows: np.ndarray, payload: dict[int, Payload], with_payload: bool
    ) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        """Ids, found mask (nq, k) bool, texts and metadata of the given rows."""
        found = np.zeros(rows.shape, bool)
        if self.id_type == "int":
            ids = np.full(rows.shape, -1, np.int64)
        else:
            ids = np.full(rows.shape, None, object)
        texts: list[list[str | None]] = []
        metas: list[list[dict[str, Any] | None]] = []
        for q in range(rows.shape[0]):
            texts.append([])
            metas.append([])
            for j, row in enumerate(rows[q].tolist()):
                hit = payload.get(row)
                if hit is None:  # padding (or a row deleted while this search ran)
                    texts[q].append(None)
                    metas[q].append(None)
                    continue
                ids[q, j] = hit.id
                found[q, j] = True
                texts[q].append(hit.text)
                metas[q].append(hit.metadata)
        return ids, found, (texts if with_payload else None), (metas if with_payload else None)

    @property
    def embedder(self) -> Any:
        """The :class:`~quantsearch.embed.Embedder` for text queries (created on first use)."""
        if self._embedder is None:
            if self.model is None:
                raise InvalidArgumentError("this index records no embedding model; search with vectors")
            from ..embed import Embedder

            self._embedder = Embedder(None if self.model in ("default", None) else self.model)
        return self._embedder

    @embedder.setter
    def embedder(self, value: Any) -> None:
        self._embedder = value

    # ---- introspection --------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Counts, settings and the bytes each tier takes in RAM and on disk."""
        view = self._view
        n_rows = view.codes.shape[0]
        tiers = []
        for spec in self._manifest["tiers"]:
            name = spec["name"]
            quantizer = self._tiers[name]
            disk = sum((self.path / s.files[name]["path"]).stat().st_size for s in self._segments)
            per_vector = quantizer.code_bytes if quantizer.is_fitted else None
            in_ram = spec["storage"] == "ram"
            tiers.append(
                {
                    "name": name,
                    "role": spec["role"],
                    "storage": "RAM" if in_ram else "disk (memory-mapped)",
                    "precision": quantizer.precision.value,
                    "code_dim": quantizer.code_dim if quantizer.is_fitted else None,
                    "bytes_per_vector": per_vector,
                    "ram_bytes": n_rows * (per_vector or 0) if in_ram else 0,
                    "disk_bytes": disk,
                    "quantizer": quantizer.to_config(),
                }
            )
        catalog_bytes = sum(p.stat().st_size for p in self.path.glob(layout.CATALOG + "*") if p.is_file())
        return {
            "path": str(self.path),
            "format_version": self._manifest["format_version"],
            "count": view.n_live,
            "rows": n_rows,
            "deleted": n_rows - view.n_live,
            "segments": len(self._segments),
            "dim": self.dim,
            "id_type": self.id_type,
            "model": self.model,
            "calibrated": self.is_calibrated,
            "default_oversampling": self.default_oversampling,
            "tiers": tiers,
            "catalog_bytes": catalog_bytes,
            "valid_mask_ram_bytes": int(view.valid.nbytes),
            "float32_bytes": n_rows * self.dim * 4,
        }

    def verify(self) -> None:
        """Check every file against the checksums recorded at write time (reads the whole index)."""
        for seg in self._segments:
            for tier, ref in seg.files.items():
                path = self.path / ref["path"]
                if not path.is_file() or layout.file_sha256(path) != ref["sha256"]:
                    raise CorruptIndexError(f"segment file {path} (tier {tier}) does not match its checksum")


# ---- helpers ----------------------------------------------------------------------------------------------
def _map_random(array: np.ndarray) -> np.ndarray:
    """Advise the kernel that a memory-mapped tier is read at random rows.

    Rescoring touches ``k x oversampling`` scattered rows; without the advice Linux reads ahead
    megabytes around each one, which pulls most of a small tier into the page cache and the
    process's resident set.
    """
    raw = getattr(array, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_RANDOM"):
        with contextlib.suppress(OSError, ValueError):  # advice only: never fail a read for it
            raw.madvise(mmap.MADV_RANDOM)
    return array


def _tier_name(quantizer: Quantizer) -> str:
    return quantizer.name


def _check_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Structural checks of a manifest whose checksum was fine (written by another version?)."""
    try:
        tiers = manifest["tiers"]
        ok = (
            isinstance(manifest["dim"], int)
            and manifest["dim"] > 0
            and manifest["id_type"] in ("int", "str")
            and isinstance(tiers, list)
            and tiers
            and tiers[0]["role"] == "candidates"
            and all(t["role"] == "rescore" for t in tiers[1:])
            and float(manifest["search"]["oversampling"]) >= 1
        )
    except (KeyError, TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        raise CorruptIndexError(f"{root / layout.MANIFEST} is missing required fields")


def _check_oversampling(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"oversampling must be a number >= 1, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 1:
        raise InvalidArgumentError(f"oversampling must be a number >= 1, got {value!r}")
    return value


def _check_id(value: Any, id_type: IdType, name: str) -> int | str:
    if id_type == "int":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidArgumentError(
                f"{name} must be an int for an index with id_type='int', got {value!r}"
            )
        value = int(value)
        if not -(2**63) <= value < 2**63:
            raise InvalidArgumentError(f"{name} does not fit in 64 bits: {value}")
        return value
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str for an index with id_type='str', got {value!r}")
    if not value or len(value) > _MAX_ID_LEN:
        raise InvalidArgumentError(f"{name} must be a non-empty string of at most {_MAX_ID_LEN} characters")
    _check_utf8(value, name)
    return value


def _check_utf8(value: str, name: str) -> None:
    """SQLite stores UTF-8: reject strings that cannot be encoded (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"{name} is not valid Unicode text: {exc}") from None


def _check_column(values: Any, n: int, name: str, types: tuple[type, ...]) -> list[Any]:
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise InvalidArgumentError(f"{name} must be a sequence of {n} entries, got {type(values).__name__}")
    if len(values) != n:
        raise InvalidArgumentError(f"{name} has {len(values)} entries, expected {n} (one per vector)")
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, types):
            raise InvalidArgumentError(
                f"{name}[{i}] must be {types[0].__name__} or None, got {type(v).__name__}"
            )
        if isinstance(v, str):
            _check_utf8(v, f"{name}[{i}]")
    return list(values)


def _dump_metadata(value: dict[str, Any], i: int) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # lone surrogates: UnicodeEncodeError is a ValueError
        return text
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"metadata[{i}] is not JSON-serialisable: {exc}") from None
