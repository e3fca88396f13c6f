"""Scale out: sharded indexes, served by one Ray actor per shard, filled by a Ray Data pipeline.

Extra ``distributed`` (Ray with Ray Data, pyarrow): ``pip install "quantsearch[distributed]"``.
Only :mod:`.serving` and :mod:`.ingestion` import Ray, inside the functions that need it; the layout
and the in-process :class:`ShardedIndex` work without it.

Modules: :mod:`.layout` (shard manifest, routing by id hash), :mod:`.shard` (one shard's
operations), :mod:`.sharded` (creation with one shared calibration, fan-out, top-k merge),
:mod:`.faults` (what a search or an add does when a shard's actor dies), :mod:`.serving` (Ray
actors), :mod:`.ingestion` (JSONL / Parquet -> embedding actor pool -> shards).
"""

from __future__ import annotations

from .faults import FaultPolicy
from .layout import ShardLayout, is_sharded, read_shard_manifest, shard_of
from .sharded import ShardedIndex, create_sharded, merge_results

__all__ = [
    "FaultPolicy",
    "ShardLayout",
    "ShardedIndex",
    "create_sharded",
    "is_sharded",
    "merge_results",
    "read_shard_manifest",
    "shard_of",
    "open_sharded",
    "RayShardedIndex",
    "ingest",
]


def __getattr__(name: str) -> object:
    # Ray-backed names load lazily: importing quantsearch.distributed never imports ray
    if name in ("RayShardedIndex", "open_sharded"):
        from . import serving

        return getattr(serving, name)
    if name == "ingest":
        from .ingestion import ingest

        return ingest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
