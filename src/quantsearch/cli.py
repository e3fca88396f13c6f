"""Command line: ``quantsearch index | search | info | delete | compact | eval | train | serve | demo``.

A thin layer over the library: parse arguments, call the API, print. Every error a user can cause
prints one line on stderr and exits with status 2. The index commands live here; ``eval``, ``train``,
the multi-vector commands and sharded ingestion are registered by their packages' ``commands``
modules (``add_commands``), so each stays next to the code it drives.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .cli_args import add_backend_option
from .display import format_info, format_results
from .exceptions import InvalidArgumentError, QuantsearchError
from .ingest import candidate_quantizer, index_documents, progress_bar, read_documents

logger = logging.getLogger("quantsearch")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, _one_line(f"{self.prog}: error: {message}") + "\n")


# ---- commands -------------------------------------------------------------------------------------
def _is_image_folder(source: Path) -> bool:
    """A folder without corpus.jsonl or text files that holds images: indexed with a CLIP model."""
    from .images import find_images

    if not source.is_dir() or (source / "corpus.jsonl").is_file():
        return False
    if any(p.suffix.lower() in (".txt", ".md") for p in source.rglob("*") if p.is_file()):
        return False
    return bool(find_images(source))


def cmd_index_images(args: argparse.Namespace) -> int:
    from .images import DEFAULT_IMAGE_MODEL, find_images, index_images

    source = Path(args.input)
    total = len(find_images(source))
    bar = progress_bar(total, "embedding images", not args.quiet)
    t0 = time.perf_counter()
    try:
        result = index_images(
            source,
            Path(args.index),
            model=args.model or DEFAULT_IMAGE_MODEL,
            rescore=args.rescore,
            candidates=None if args.candidates is None else candidate_quantizer(args.candidates),
            batch_size=min(args.batch_size, 256),
            progress=bar,
        )
    finally:
        bar.close()
    with result.index as index:
        print(f"indexed {result.added:,} images into {args.index} in {time.perf_counter() - t0:.1f} s")
        if result.skipped:
            print(f"skipped {len(result.skipped)} unreadable files: {', '.join(result.skipped[:5])}")
        print(format_info(index.info()))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from .distributed.layout import is_sharded

    if args.shards is not None or is_sharded(args.index):
        from .distributed.commands import cmd_index_sharded

        return cmd_index_sharded(args)
    if _is_image_folder(Path(args.input)):
        return cmd_index_images(args)
    ids, texts, meta = read_documents(Path(args.input), text_field=args.text_field, id_field=args.id_field)
    t0 = time.perf_counter()
    index = index_documents(
        ids,
        texts,
        meta,
        Path(args.index),
        model=args.model,
        rescore=args.rescore,
        candidates=args.candidates,
        truncate_dim=args.truncate_dim,
        candidate_stage=_stage_arg(args.candidate_stage),
        batch_size=args.batch_size,
        progress=not args.quiet,
        backend=args.backend,
        skip_existing=args.skip_existing,
        lexical=True if args.lexical else None,
    )
    with index:
        print(f"indexed {len(ids):,} documents into {args.index} in {time.perf_counter() - t0:.1f} s")
        print(format_info(index.info()))
    return 0


def query_embedder(index: Any, backend: str) -> Any:
    """The embedder for text queries of ``index`` with another ``backend`` than the one it records."""
    from .embed import Embedder

    return Embedder(index.model, backend=backend)


def cmd_search(args: argparse.Namespace) -> int:
    with _open_any(args.index, ray=args.ray, ray_address=args.ray_address, compiled=args.compiled) as index:
        # without -k, show up to 10 hits even when the index holds fewer documents
        k = args.k if args.k is not None else max(1, min(10, len(index)))
        if index.model is not None:
            if args.backend is not None:  # else the backend the index records
                index.embedder = query_embedder(index, args.backend)
            index.embedder.load()  # load the model first: "embed" then times the query alone
        query: Any = args.query
        if args.image is not None:  # image -> image search (an index built with a CLIP model)
            from .images import embed_images, load_image

            if args.query is not None:
                raise InvalidArgumentError("give a text query or --image, not both")
            query = embed_images(index.embedder, [load_image(args.image)])
            args.query = f"image {args.image}"
        elif args.query is None:
            raise InvalidArgumentError("a text query (or --image PATH) is required")
        results = index.search(
            query, k=k, oversampling=args.oversampling, stages=args.stages,
            filter=_json_filter(args.filter), nprobe=args.nprobe, ef=args.ef,
            target_recall=args.target_recall, mode=args.mode, fusion=args.fusion,
        )  # fmt: skip
        if args.json:
            print(
                json.dumps({"query": args.query, "hits": results.to_list()[0], "timings_ms": results.timings})
            )
        else:
            print(format_results(results, args.query))
    return 0


def _json_filter(text: str | None) -> Any:
    """The ``--filter`` argument: a JSON object of metadata conditions (checked by the index)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"--filter is not valid JSON: {exc}") from None


def _stage_arg(text: str | None) -> Any:
    """``--candidate-stage``: a kind name (``ivf``) or a JSON object ``{"kind", "params"}``."""
    if text is None or not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"--candidate-stage is not valid JSON: {exc}") from None


def cmd_info(args: argparse.Namespace) -> int:
    from .distributed.layout import is_sharded
    from .index import Index

    if is_sharded(args.index):  # a sharded index: every shard's info, summed
        with _open_any(args.index) as index:
            if args.verify:
                index.verify()
            info = index.info()
    elif args.verify:  # opens the index and reads every file
        with Index.open(args.index) as index:
            index.verify()
            info = index.info()
    else:  # the manifest, the catalog and file sizes only: no codes are loaded
        info = Index.metadata(args.index)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    if args.verify:
        print("verify     every segment file matches its checksum")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _open_any(args.index) as index:
        ids: list[int | str] = list(args.ids)
        if index.id_type == "int":
            bad = next((i for i in ids if not str(i).lstrip("-").isdigit()), None)
            if bad is not None:
                raise InvalidArgumentError(f"ids of {args.index} are integers, got {bad!r}")
            ids = [int(i) for i in ids]
        n = index.delete(ids)
    print(f"deleted {n} documents")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    with _open_any(args.index) as index:
        segments = index.info()["segments"]
        reclaimed = index.compact()
        info = index.info()
    print(
        f"compacted {args.index}: {reclaimed:,} deleted rows reclaimed, {segments} -> {info['segments']} "
        f"segments, {info['count']:,} documents"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .server import serve

    api_key = args.api_key if args.api_key is not None else os.environ.get("QUANTSEARCH_API_KEY") or None
    if api_key is not None and not api_key.strip():
        raise InvalidArgumentError("--api-key must not be empty")
    extra: dict[str, Any] = {} if args.ray_address is None else {"ray_address": args.ray_address}
    if args.compiled:
        extra["compiled"] = True
    if args.backend is not None:
        extra["backend"] = args.backend
    serve(
        args.index,
        host=args.host,
        port=args.port,
        api_key=api_key,
        log_level=args.log_level,
        allowed_hosts=args.allowed_hosts,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        **extra,
    )
    return 0


# ---- opening a plain or a sharded index -------------------------------------------------------------
def _open_any(path: str, *, ray: bool = False, ray_address: str | None = None, compiled: bool = False) -> Any:
    """An :class:`Index`, or for a sharded directory a sharded index: on Ray actors with ``ray``,
    ``ray_address`` or ``compiled`` (searches through a Ray compiled graph; a local Ray is started
    when no address is given), else opened in this process."""
    from .distributed.layout import is_sharded
    from .index import Index

    if not is_sharded(path):
        if ray_address is not None or ray or compiled:
            raise InvalidArgumentError(
                f"{path} is not a sharded index: --ray/--ray-address/--compiled do not apply"
            )
        return Index.open(path)
    if ray or ray_address is not None or compiled:
        from .distributed.serving import open_sharded

        return open_sharded(path, ray_address=ray_address, compiled=compiled)
    from .distributed import ShardedIndex

    return ShardedIndex.open(path)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(index_dir=Path(args.index) if args.index else None, limit=args.limit, progress=not args.quiet)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="quantsearch", description="Compressed embedding retrieval: binary + int8 rescoring."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from .distributed.commands import add_sharding_options
    from .evaluation.commands import add_commands as add_eval_commands
    from .finetune.commands import add_commands as add_train_commands
    from .multivector.commands import add_commands as add_multivector_commands

    p = sub.add_parser("index", help="embed documents and add them to an index")
    p.add_argument(
        "input",
        help="BEIR corpus.jsonl (or its folder), a JSONL file, a folder of .txt/.md files, or a folder of "
        "images (embedded with a CLIP model: --model, default clip-ViT-B-32)",
    )
    p.add_argument("--index", required=True, help="index directory (created if missing, else appended to)")
    p.add_argument(
        "--model", default=None, help="sentence-transformers model (default: bundled all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--rescore", nargs="*", default=["int8"], help="rescoring tiers in order (int8 float16 ...)"
    )
    p.add_argument(
        "--candidates",
        default=None,
        help="candidate (RAM) tier of a new index: binary (default), qat, ... or a quantsearch train .npz",
    )
    p.add_argument("--truncate-dim", type=int, default=None, help="Matryoshka truncation of every tier")
    p.add_argument(
        "--candidate-stage",
        default=None,
        help='stage 1 of a new index: exact (default), ivf, hnsw or JSON {"kind": "hnsw", "params": {...}}',
    )
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="_id")
    p.add_argument("--batch-size", type=int, default=4096, help="documents per add")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="add only documents whose ids are not in the index yet (resume a killed run)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_backend_option(p, "default: the index's, else torch")
    add_sharding_options(p)
    p.add_argument(
        "--lexical", action="store_true", help="new index: keep a BM25 tier over the texts (search --mode)"
    )
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with a text query")
    p.add_argument("index")
    p.add_argument("query", nargs="?", default=None)
    p.add_argument("--image", default=None, help="search with this image instead (index built with CLIP)")
    p.add_argument("-k", type=int, default=None, help="results to show (default 10)")
    p.add_argument("--oversampling", type=float, default=None)
    p.add_argument("--stages", nargs="*", default=None, help="rescoring tiers to run (none: Hamming only)")
    p.add_argument(
        "--filter",
        default=None,
        help='metadata filter (JSON), e.g. \'{"year": {"gte": 2000}, "lang": "en"}\'',
    )
    p.add_argument("--nprobe", type=int, default=None, help="lists scanned by an IVF candidate stage")
    p.add_argument("--ef", type=int, default=None, help="candidate list size of an HNSW candidate stage")
    p.add_argument(
        "--target-recall", type=float, default=None,
        help="instead of --nprobe/--ef: the cheapest setting calibrated to reach this recall@10",
    )  # fmt: skip
    p.add_argument(
        "--mode", default="dense", choices=["dense", "lexical", "hybrid", "svm"],
        help="retriever: dense (default), lexical (BM25; index built with --lexical), hybrid, svm",
    )  # fmt: skip
    p.add_argument("--fusion", default=None, choices=["rrf", "convex"], help="hybrid: how lists are fused")
    p.add_argument("--json", action="store_true")
    add_backend_option(p, "default: the one the index was built with")
    p.add_argument("--ray", action="store_true", help="sharded index: search on Ray actors (local Ray)")
    p.add_argument("--ray-address", default=None, help="sharded index: search on this Ray cluster's actors")
    p.add_argument(
        "--compiled", action="store_true",
        help="sharded index: search on Ray actors through a compiled graph (implies --ray; experimental)",
    )  # fmt: skip
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", help="counts, settings and memory per tier")
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verify", action="store_true", help="also check every file against its checksum")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("delete", help="delete documents by id")
    p.add_argument("index")
    p.add_argument("ids", nargs="+")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("compact", help="rewrite the index as one segment without deleted rows")
    p.add_argument("index")
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser("serve", help="HTTP API and web page over an index (extra: server)")
    p.add_argument("index")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key", default=None, help="require this key (default: $QUANTSEARCH_API_KEY; none: open)"
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_backend_option(p, "default: the one the index was built with")
    p.add_argument(
        "--allowed-hosts",
        nargs="+",
        default=None,
        help="Host header names to answer ('*': any; default: loopback names and --host)",
    )
    p.add_argument(
        "--idle-timeout", type=float, default=10.0, help="close a connection idle this many seconds"
    )
    p.add_argument(
        "--max-connections", type=int, default=None, help="open connections (default: from the fd limit)"
    )
    p.add_argument(
        "--ray-address", default=None, help="sharded index: Ray cluster of the shard actors (default: local)"
    )
    p.add_argument(
        "--compiled", action="store_true",
        help="sharded index: searches reach the shard actors through a Ray compiled graph (experimental)",
    )  # fmt: skip
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="index Python standard library docstrings offline and search them")
    p.add_argument("--index", default=None, help="keep the demo index here (reused when it exists)")
    p.add_argument("--limit", type=int, default=3000, help="number of docstrings to index")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    add_eval_commands(sub)
    add_train_commands(sub)
    add_multivector_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except QuantsearchError as exc:
        print(_one_line(f"quantsearch: error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(
            _one_line(f"quantsearch: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")),
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("quantsearch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or a failure in a dependency: still one line, unless -v
        if args.verbose:
            raise
        print(
            _one_line(f"quantsearch: internal error: {type(exc).__name__}: {exc} (-v shows the traceback)"),
            file=sys.stderr,
        )
        return 1


def _one_line(message: str) -> str:
    """An error message on one line: line breaks (in a path, say) are shown escaped."""
    # every character str.splitlines() breaks at: \n \r \v \f \x1c-\x1e \x85 \u2028 \u2029
    return "".join(ch.encode("unicode_escape").decode() if ch in _BREAKS else ch for ch in message)


_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
