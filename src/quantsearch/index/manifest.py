"""The manifest as a typed, frozen value: the static configuration of an index.

``manifest.json`` (written and checksummed by :mod:`.layout`) changes only at create and calibrate;
this module is the one place its fields are named. :meth:`Manifest.from_dict` validates a document
read from disk (any structural problem is a :class:`CorruptIndexError`) and :meth:`Manifest.to_dict`
writes the same JSON shape back, so directories written by earlier versions open unchanged. Keys
this version does not know are kept and written back as they were.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..exceptions import CorruptIndexError, InvalidArgumentError
from ..quantization import Quantizer, make_quantizer
from . import layout

__all__ = ["Manifest", "StateRef", "TierSpec"]

IdType = Literal["int", "str"]
Role = Literal["candidates", "rescore"]

# top-level keys with a field of their own; anything else is carried in Manifest.extra
_KNOWN = {
    "format", "format_version", "dim", "id_type", "model", "created_at", "search", "tiers", "backend",
    "candidate_stage",
}  # fmt: skip


@dataclass(frozen=True)
class StateRef:
    """A tier's fitted quantizer state: a file under ``state/`` and its sha256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class TierSpec:
    """One tier: its name (also the segment-file suffix), role, storage and quantizer config."""

    name: str
    role: Role
    storage: Literal["ram", "mmap"]
    quantizer: dict[str, Any]
    state: StateRef | None = None

    def to_dict(self) -> dict[str, Any]:
        state = None if self.state is None else {"file": self.state.file, "sha256": self.state.sha256}
        return {
            "name": self.name,
            "role": self.role,
            "storage": self.storage,
            "quantizer": self.quantizer,
            "state": state,
        }


@dataclass(frozen=True)
class Manifest:
    """The configuration of an index directory (see :mod:`.layout` for the files)."""

    dim: int
    id_type: IdType
    tiers: tuple[TierSpec, ...]
    oversampling: float
    model: str | None = None
    backend: str | None = None  # how the model embeds (recorded so queries are embedded the same way)
    created_at: str = ""
    candidate_stage: dict[str, Any] | None = None  # {"kind", "params"} of stage 1; None: the exact scan
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- views ------------------------------------------------------------------------------------
    @property
    def candidate_tier(self) -> TierSpec:
        return self.tiers[0]

    @property
    def rescore_tiers(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers if t.role == "rescore")

    def tier(self, name: str) -> TierSpec:
        for spec in self.tiers:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def state_files(self) -> set[str]:
        """Paths (relative to the index) of the state files this manifest refers to."""
        return {t.state.file for t in self.tiers if t.state is not None}

    def with_states(self, states: dict[str, StateRef]) -> Manifest:
        """A copy whose tiers point at new calibration files."""
        tiers = tuple(dataclasses.replace(t, state=states.get(t.name, t.state)) for t in self.tiers)
        return dataclasses.replace(self, tiers=tiers)

    # ---- (de)serialisation --------------------------------------------------------------------------
    @classmethod
    def new(
        cls,
        dim: int,
        id_type: IdType,
        tiers: tuple[TierSpec, ...],
        *,
        oversampling: float,
        model: str | None,
        backend: str | None = None,
        candidate_stage: dict[str, Any] | None = None,
    ) -> Manifest:
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return cls(dim, id_type, tiers, oversampling, model, backend, created, candidate_stage)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            **self.extra,
            "format": layout.FORMAT_NAME,
            "format_version": layout.FORMAT_VERSION,
            "dim": self.dim,
            "id_type": self.id_type,
            "model": self.model,
            "created_at": self.created_at,
            "search": {"oversampling": self.oversampling},
            "tiers": [t.to_dict() for t in self.tiers],
        }
        # optional keys are absent from indexes written before they existed: write them only when set
        if self.backend is not None:
            doc["backend"] = self.backend
        if self.candidate_stage is not None:
            doc["candidate_stage"] = self.candidate_stage
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: Path) -> Manifest:
        """Validate a manifest document whose checksum was fine (written by another version?)."""
        try:
            tiers = tuple(_tier(t) for t in doc["tiers"])
            manifest = cls(
                dim=doc["dim"],
                id_type=doc["id_type"],
                tiers=tiers,
                oversampling=float(doc["search"]["oversampling"]),
                model=doc.get("model"),
                backend=doc.get("backend"),
                created_at=str(doc.get("created_at", "")),
                candidate_stage=doc.get("candidate_stage"),
                extra={k: v for k, v in doc.items() if k not in _KNOWN},
            )
            ok = (
                isinstance(manifest.dim, int)
                and not isinstance(manifest.dim, bool)
                and manifest.dim > 0
                and manifest.id_type in ("int", "str")
                and bool(tiers)
                and tiers[0].role == "candidates"
                and all(t.role == "rescore" for t in tiers[1:])
                and manifest.oversampling >= 1
                and (manifest.model is None or isinstance(manifest.model, str))
                and (manifest.backend is None or isinstance(manifest.backend, str))
                and (manifest.candidate_stage is None or isinstance(manifest.candidate_stage, dict))
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            ok = False
        if not ok:
            raise CorruptIndexError(f"{where / layout.MANIFEST} has missing or invalid fields")
        return manifest

    @classmethod
    def read(cls, root: Path) -> Manifest:
        """Read, checksum and validate ``root``'s manifest."""
        return cls.from_dict(layout.read_manifest(root), root)

    def write(self, root: Path) -> None:
        layout.write_manifest(root, self.to_dict())


def _tier(doc: dict[str, Any]) -> TierSpec:
    state = doc.get("state")
    ref = None if state is None else StateRef(str(state["file"]), str(state["sha256"]))
    if not isinstance(doc["name"], str) or not isinstance(doc["quantizer"], dict):
        raise TypeError("tier name or quantizer")
    # names become file names and state paths are opened: neither may point outside the index
    if not _is_file_name(doc["name"]) or (ref is not None and not _is_state_path(ref.file)):
        raise ValueError("tier name or state path")
    if doc["role"] not in ("candidates", "rescore") or doc["storage"] not in ("ram", "mmap"):
        raise ValueError("tier role or storage")
    return TierSpec(doc["name"], doc["role"], doc["storage"], doc["quantizer"], ref)


def _is_file_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def _is_state_path(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 2 and parts[0] == layout.STATE_DIR and _is_file_name(parts[1])


def plan_tiers(
    binary: Quantizer | None, rescore: Sequence[Any] | str | Quantizer | None, truncate_dim: int | None
) -> tuple[TierSpec, ...]:
    """The tiers of a new index: the candidate tier (packed byte codes in RAM) and the rescoring tiers
    (memory-mapped), from the arguments of :meth:`Index.create`."""
    candidate = make_quantizer(binary if binary is not None else "binary", truncate_dim=truncate_dim)
    if candidate.code_dtype != np.uint8:
        raise InvalidArgumentError(
            f"the candidate tier keeps packed byte codes in RAM; {candidate.name!r} codes are "
            f"{candidate.code_dtype} (use it as a rescoring tier)"
        )
    if rescore is None:
        specs: list[Any] = []
    elif isinstance(rescore, (str, Quantizer)):
        specs = [rescore]
    else:
        specs = list(rescore)
    quantizers = [candidate] + [make_quantizer(s, truncate_dim=truncate_dim) for s in specs]
    names = [q.name for q in quantizers]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"tiers must have distinct precisions, got {names}")
    return tuple(
        TierSpec(q.name, "rescore" if i else "candidates", "mmap" if i else "ram", q.to_config())
        for i, q in enumerate(quantizers)
    )
