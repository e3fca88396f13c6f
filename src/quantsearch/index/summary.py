"""What an index holds and what it costs: counts, settings, bytes per tier in RAM and on disk.

Computed from the manifest, the calibration state, the catalog and the sizes of the segment files, so
that :meth:`Index.metadata` can answer for a directory without reading any codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..quantization import Quantizer
from . import layout
from .catalog import Catalog, Segment
from .manifest import Manifest
from .storage import SegmentStore


def summarize(
    store: SegmentStore,
    manifest: Manifest,
    quantizers: dict[str, Quantizer],
    segments: Sequence[Segment],
    *,
    n_live: int,
    stage_ram_bytes: int | None = None,
) -> dict[str, Any]:
    """The dict :meth:`Index.info` returns (see there). ``stage_ram_bytes``: the candidate stage's
    structure in RAM (IVF lists, HNSW graph), known for an open index only (None otherwise)."""
    n_rows = sum(s.n_rows for s in segments)
    tiers = []
    for spec in manifest.tiers:
        quantizer = quantizers[spec.name]
        per_vector = quantizer.code_bytes if quantizer.is_fitted else None
        in_ram = spec.storage == "ram"
        tiers.append(
            {
                "name": spec.name,
                "role": spec.role,
                "storage": "RAM" if in_ram else "disk (memory-mapped)",
                "precision": quantizer.precision.value,
                "code_dim": quantizer.code_dim if quantizer.is_fitted else None,
                "bytes_per_vector": per_vector,
                "ram_bytes": n_rows * (per_vector or 0) if in_ram else 0,
                "disk_bytes": store.disk_bytes(segments, spec.name),
                "quantizer": quantizer.to_config(),
            }
        )
    root = store.root
    catalog_bytes = sum(p.stat().st_size for p in root.glob(layout.CATALOG + "*") if p.is_file())
    return {
        "path": str(root),
        "format_version": layout.FORMAT_VERSION,
        "count": n_live,
        "rows": n_rows,
        "deleted": n_rows - n_live,
        "segments": len(segments),
        "dim": manifest.dim,
        "id_type": manifest.id_type,
        "model": manifest.model,
        "backend": manifest.backend,
        "calibrated": all(q.is_fitted for q in quantizers.values()),
        "default_oversampling": manifest.oversampling,
        "candidate_stage": manifest.candidate_stage or {"kind": "exact", "params": {}},
        "candidate_stage_ram_bytes": stage_ram_bytes,
        "tiers": tiers,
        "catalog_bytes": catalog_bytes,
        "valid_mask_ram_bytes": n_rows,  # one bool per stored row
        "float32_bytes": n_rows * manifest.dim * 4,
    }


def describe(root: Path) -> dict[str, Any]:
    """:func:`summarize` for an index directory that is not open (no codes are read)."""
    manifest = Manifest.read(root)
    store = SegmentStore(root)
    quantizers = store.load_quantizers(manifest)
    catalog = Catalog(root / layout.CATALOG, readonly=True)  # reads only: works on read-only mounts
    try:
        segments, n_live = catalog.segments(), catalog.count()
    finally:
        catalog.close()
    return summarize(store, manifest, quantizers, segments, n_live=n_live)
