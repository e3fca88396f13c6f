"""Segment storage: the files under an index directory and how they are written, read and cleaned up.

One segment per added batch (or per compaction), one ``.npy`` per tier (see :mod:`.layout`). The
candidate tier is read whole into one growing RAM buffer (its checksum checked on the way); every
other tier stays a memory map, advised for random access. Files are complete (fsynced, renamed into
place) before the catalog transaction that lists them commits; a file no committed segment refers to
was left by a crash and is removed by the next writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import (
    CorruptIndexError,
    IndexLockedError,
    InvalidArgumentError,
    ReadOnlyIndexError,
    StorageError,
)
from ..quantization import Quantizer, quantizer_from_config
from . import layout
from .catalog import Segment
from .manifest import Manifest, StateRef

logger = logging.getLogger(__name__)


@dataclass
class LoadedSegments:
    """What :meth:`SegmentStore.load` read: the RAM codes and the memory maps of the other tiers."""

    codes: np.ndarray  # (capacity, nb) uint8; rows [0, n_rows) are the candidate codes in row order
    n_rows: int
    arrays: dict[str, list[np.ndarray]]  # tier -> one memory map per segment


class SegmentStore:
    """Reads and writes the segment and state files of the index at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # ---- calibration state ------------------------------------------------------------------------
    def load_quantizers(self, manifest: Manifest) -> dict[str, Quantizer]:
        """Every tier's quantizer, with its saved calibration when there is one (checksummed)."""
        tiers: dict[str, Quantizer] = {}
        for spec in manifest.tiers:
            try:
                quantizer = quantizer_from_config(spec.quantizer)
            except (InvalidArgumentError, KeyError, TypeError) as exc:
                raise CorruptIndexError(f"manifest of {self.root} has an invalid tier: {exc}") from None
            if spec.state is not None:
                quantizer.set_state(self._read_state(spec.name, spec.state))
                if quantizer.dim_ != manifest.dim:
                    raise CorruptIndexError(
                        f"quantizer state of tier {spec.name!r} has dim {quantizer.dim_}, "
                        f"but the manifest says dim {manifest.dim}"
                    )
            tiers[spec.name] = quantizer
        return tiers

    def save_state(self, tier: str, quantizer: Quantizer) -> StateRef:
        """Write a fitted quantizer's state under a fresh name (the current files are never overwritten)."""
        rel = layout.state_file(tier)
        return StateRef(rel, layout.save_arrays(self.root / rel, quantizer.get_state()))

    def _read_state(self, tier: str, ref: StateRef) -> dict[str, np.ndarray]:
        path = self.root / ref.file
        if not path.is_file():
            raise CorruptIndexError(f"quantizer state of tier {tier!r} is missing: {path}")
        if layout.file_sha256(path) != ref.sha256:
            raise CorruptIndexError(f"quantizer state of tier {tier!r} does not match its checksum: {path}")
        with (
            layout.reading(path, f"quantizer state of tier {tier!r}"),
            np.load(path, allow_pickle=False) as data,
        ):
            return {k: data[k] for k in data.files}

    # ---- reading ----------------------------------------------------------------------------------------
    def load(
        self, segments: Sequence[Segment], tiers: dict[str, Quantizer], candidate: str
    ) -> LoadedSegments:
        """Read the committed segments: the candidate tier into RAM, the other tiers as memory maps."""
        cand = tiers[candidate]
        width = cand.code_bytes if cand.is_fitted else 0
        n_rows = sum(s.n_rows for s in segments)
        codes = np.empty((n_rows, width), np.uint8)
        arrays: dict[str, list[np.ndarray]] = {name: [] for name in tiers if name != candidate}
        expected_start = 0
        for seg in segments:
            if seg.start_row != expected_start:
                raise CorruptIndexError(
                    f"segment {seg.seg_id} starts at row {seg.start_row}, expected {expected_start}"
                )
            expected_start += seg.n_rows
            for name, quantizer in tiers.items():
                array = self.open_file(seg, name, quantizer, in_ram=name == candidate)
                if name == candidate:
                    codes[seg.start_row : seg.start_row + seg.n_rows] = array
                else:
                    arrays[name].append(array)
        return LoadedSegments(codes, n_rows, arrays)

    def open_file(self, seg: Segment, tier: str, quantizer: Quantizer, *, in_ram: bool) -> np.ndarray:
        """One segment's codes for one tier: read whole (``in_ram``, checksummed) or memory-mapped."""
        ref = seg.files.get(tier)
        if ref is None:
            raise CorruptIndexError(f"segment {seg.seg_id} has no file for tier {tier!r}")
        path = self.root / ref["path"]
        shape = (seg.n_rows, quantizer.code_bytes // quantizer.code_dtype.itemsize)
        with layout.reading(path, "segment file"):
            size = path.stat().st_size
        if size != ref["bytes"]:
            raise CorruptIndexError(
                f"segment file {path} has {size} bytes, expected {ref['bytes']} (truncated?)"
            )
        with layout.reading(path, "segment file"):
            if in_ram:  # read once, checksum included (the candidate tier is read whole anyway)
                array = layout.read_array_checked(path, ref["sha256"])
            else:
                array = _map_random(np.load(path, mmap_mode="r", allow_pickle=False))
        if array.shape != shape or array.dtype != quantizer.code_dtype:
            raise CorruptIndexError(
                f"segment file {path} holds {array.dtype}{array.shape}, "
                f"expected {quantizer.code_dtype}{shape}"
            )
        return array

    def disk_bytes(self, segments: Sequence[Segment], tier: str) -> int:
        total = 0
        for seg in segments:
            path = self.root / seg.files[tier]["path"]
            with layout.reading(path, "segment file"):
                total += path.stat().st_size
        return total

    def verify(self, segments: Sequence[Segment]) -> None:
        """Check every segment file against the checksum recorded at write time."""
        for seg in segments:
            for tier, ref in seg.files.items():
                path = self.root / ref["path"]
                with layout.reading(path, "segment file"):
                    ok = path.is_file() and layout.file_sha256(path) == ref["sha256"]
                if not ok:
                    raise CorruptIndexError(f"segment file {path} (tier {tier}) does not match its checksum")

    # ---- writing ----------------------------------------------------------------------------------------
    def write(
        self, seg_id: int, n_rows: int, chunks: dict[str, Iterable[np.ndarray]], tiers: dict[str, Quantizer]
    ) -> dict[str, dict[str, Any]]:
        """Write one file per tier (atomically, fsynced) from row chunks; return their catalog entries."""
        files: dict[str, dict[str, Any]] = {}
        for name, parts in chunks.items():
            quantizer = tiers[name]
            rel = layout.segment_file(seg_id, name)
            shape = (n_rows, quantizer.code_bytes // quantizer.code_dtype.itemsize)
            sha = layout.save_array_chunks(self.root / rel, shape, quantizer.code_dtype, parts)
            files[name] = {"path": rel, "bytes": (self.root / rel).stat().st_size, "sha256": sha}
        return files

    def discard(self, segment: Segment) -> None:
        """Remove the files of a segment whose commit failed."""
        for ref in segment.files.values():
            (self.root / ref["path"]).unlink(missing_ok=True)

    def remove_orphans(self, referenced: set[str]) -> None:
        """Delete segment, state and temp files that nothing ``referenced`` names (left by a crash)."""
        for folder in (self.root / layout.SEGMENTS_DIR, self.root / layout.STATE_DIR, self.root):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                rel = entry.relative_to(self.root).as_posix()
                ours = (
                    layout.parse_segment_file(entry.name) is not None
                    if folder.name == layout.SEGMENTS_DIR
                    else folder.name == layout.STATE_DIR and entry.suffix == ".npz"
                )
                if entry.name.endswith(".tmp") or (ours and rel not in referenced):
                    logger.info("removing %s left by an interrupted write", entry)
                    entry.unlink(missing_ok=True)


class WriterLock:
    """The directory's single-writer lock: ``flock`` on ``LOCK``, held until :meth:`release`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting; :class:`IndexLockedError` when another writer has it."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.root / layout.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except (PermissionError, OSError) as exc:
            if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
                raise ReadOnlyIndexError(f"{self.root} cannot be written: {exc.strerror}") from None
            raise StorageError(f"locking {self.root} failed: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexLockedError(f"another writer holds the lock on {self.root}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


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
