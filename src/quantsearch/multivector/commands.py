"""CLI commands of multi-vector indexes: ``quantsearch mv-index`` and ``quantsearch mv-search``.

Registered by :func:`add_commands` from ``cli.make_parser`` so the main command module stays a list
of parsers; errors surface as :class:`QuantsearchError` and ``cli.main`` prints them on one line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def cmd_mv_index(args: argparse.Namespace) -> int:
    from ..ingest import read_documents
    from .index import MultiVectorIndex
    from .tokens import TokenEmbedder

    ids, texts, _ = read_documents(Path(args.input), text_field=args.text_field, id_field=args.id_field)
    path = Path(args.index)
    t0 = time.perf_counter()
    if (path / "manifest.json").is_file():
        index = MultiVectorIndex.open(path)
    else:
        embedder = TokenEmbedder(args.model)
        fde = {
            "k_sim": args.k_sim,
            "r_reps": args.r_reps,
            "d_proj": args.d_proj or None,
            "final_dim": args.final_dim,
            "partition": args.partition,
        }
        index = MultiVectorIndex.create(path, embedder=embedder, fde=fde, candidates=args.candidates)
    for start in range(0, len(ids), args.batch_size):
        stop = start + args.batch_size
        index.add(ids[start:stop], texts=texts[start:stop], progress=not args.quiet)
    info = index.info()
    print(f"indexed {len(ids):,} documents into {path} in {time.perf_counter() - t0:.1f} s")
    print(
        f"{info['documents']:,} documents, {info['tokens']:,} tokens; FDE {info['fde']['output_dim']}-d as "
        f"{info['candidates']}: {info['ram_bytes_per_doc']:.0f} B/doc in RAM, "
        f"{info['disk_bytes_per_doc']:.0f} B/doc of int8 tokens on disk"
    )
    return 0


def cmd_mv_search(args: argparse.Namespace) -> int:
    from .index import MultiVectorIndex

    index = MultiVectorIndex.open(args.index)
    _ = index.embedder._st.model  # load first: "embed" then times the query alone
    k = args.k if args.k is not None else max(1, min(10, len(index)))
    res = index.search([args.query], k=k, candidates=args.candidates, with_text=True)
    hits: list[dict[str, Any]] = res.to_list()[0]
    if args.json:
        print(json.dumps({"query": args.query, "hits": hits, "timings_ms": res.timings}))
        return 0
    print(f"query: {args.query}")
    for rank, hit in enumerate(hits, 1):
        text = (hit.get("text") or "").replace("\n", " ")
        print(f"{rank:3d}. {hit['score']:8.3f}  {hit['id']}  {text[:100]}")
    print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()))
    return 0


def add_commands(sub: Any) -> None:
    """Add ``mv-index`` and ``mv-search`` to the CLI's subparsers."""
    p = sub.add_parser(
        "mv-index", help="multi-vector (MUVERA) index: token vectors, FDE codes, Chamfer rerank"
    )
    p.add_argument(
        "input", help="BEIR corpus.jsonl (or its folder), a JSONL file, or a folder of .txt/.md files"
    )
    p.add_argument("--index", required=True, help="index directory (created if missing, else appended to)")
    p.add_argument("--model", default=None, help="token model (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--candidates", default="rabitq-hadamard", help="code of the FDEs in RAM")
    p.add_argument("--k-sim", type=int, default=5, help="2^k_sim partitions per repetition")
    p.add_argument(
        "--partition",
        default="kmeans",
        help="partitions: kmeans (centroids fitted on the first batch) or simhash (random hyperplanes)",
    )
    p.add_argument("--r-reps", type=int, default=20, help="repetitions")
    p.add_argument("--d-proj", type=int, default=16, help="per-token projection (0: none)")
    p.add_argument("--final-dim", type=int, default=None, help="Count-Sketch the FDE to this dimension")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="_id")
    p.add_argument("--batch-size", type=int, default=2048, help="documents per atomic add")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_mv_index)

    p = sub.add_parser("mv-search", help="search a multi-vector index with a text query")
    p.add_argument("index")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=None, help="results to show (default 10)")
    p.add_argument("--candidates", type=int, default=100, help="FDE candidates reranked by Chamfer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_mv_search)
