"""CLI side of sharded indexes: ``quantsearch index --shards N`` runs the Ray Data ingestion.

``cli`` adds :func:`add_sharding_options` to ``index`` and hands a sharded target to
:func:`cmd_index_sharded`.
"""

from __future__ import annotations

import argparse

from ..display import format_info
from ..exceptions import InvalidArgumentError

__all__ = ["add_sharding_options", "cmd_index_sharded"]


def add_sharding_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sharded index (Ray Data ingestion, extra 'distributed')")
    g.add_argument("--shards", type=int, default=None, help="create a sharded index with N shards")
    g.add_argument("--workers", type=int, default=1, help="embedding actors (one model each)")
    g.add_argument("--vector-field", default=None, help="input column of precomputed vectors (no embedding)")
    g.add_argument("--ray-address", default=None, help="Ray cluster to run on (default: a local Ray)")


def cmd_index_sharded(args: argparse.Namespace) -> int:
    """``quantsearch index --shards N``: the Ray Data ingestion pipeline into a sharded index."""
    from .ingestion import ingest

    if args.candidates is not None:
        raise InvalidArgumentError("--candidates is not supported with --shards yet")
    report = ingest(
        args.input,
        args.index,
        n_shards=args.shards,
        model="default" if args.model is None else args.model,
        text_field=args.text_field,
        id_field=args.id_field,
        vector_field=args.vector_field,
        batch_size=min(args.batch_size, 1024),
        workers=args.workers,
        rescore=args.rescore,
        truncate_dim=args.truncate_dim,
        ray_address=args.ray_address,
        progress=not args.quiet,
    )
    print(
        f"indexed {report.added:,} documents ({report.skipped:,} already there) into {args.index} "
        f"({report.n_shards} shards, {report.workers} embedding workers) in {report.seconds:.1f} s"
    )
    from .sharded import ShardedIndex

    with ShardedIndex.open(args.index) as index:
        print(format_info(index.info()))
    return 0
