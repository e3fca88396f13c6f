"""Command line: ``quantsearch index | search | info | delete | compact | eval | train | serve | demo``.

A thin layer over the library: parse arguments, call the API, print. Every error a user can cause
prints one line on stderr and exits with status 2.
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

from .display import format_info, format_results
from .exceptions import InvalidArgumentError, QuantsearchError
from .ingest import index_documents, read_documents, training_vectors

logger = logging.getLogger("quantsearch")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ---- commands -------------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
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
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    with index:
        print(f"indexed {len(ids):,} documents into {args.index} in {time.perf_counter() - t0:.1f} s")
        print(format_info(index.info()))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .index import Index

    with Index.open(args.index) as index:
        # without -k, show up to 10 hits even when the index holds fewer documents
        k = args.k if args.k is not None else max(1, min(10, len(index)))
        if index.model is not None:
            _ = index.embedder.model  # load the model first: "embed" then times the query alone
        results = index.search(args.query, k=k, oversampling=args.oversampling, stages=args.stages)
        if args.json:
            print(
                json.dumps({"query": args.query, "hits": results.to_list()[0], "timings_ms": results.timings})
            )
        else:
            print(format_results(results, args.query))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .index import Index

    if args.verify:  # opens the index and reads every file
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
    from .index import Index

    with Index.open(args.index) as index:
        ids: list[int | str] = [int(i) for i in args.ids] if index.id_type == "int" else list(args.ids)
        n = index.delete(ids)
    print(f"deleted {n} documents")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from .index import Index

    with Index.open(args.index) as index:
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
    serve(args.index, host=args.host, port=args.port, api_key=api_key, log_level=args.log_level)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(index_dir=Path(args.index) if args.index else None, limit=args.limit, progress=not args.quiet)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.configs import PRESETS
    from .evaluation.harness import evaluate_dataset
    from .evaluation.report import format_table, write_report

    def on_row(row: dict[str, Any]) -> None:
        if not args.quiet:
            print(f"  {row['config']:<28} NDCG@{args.k} {row[f'ndcg@{args.k}']:.4f}", file=sys.stderr)

    preset_configs, preset_peers = PRESETS[args.preset]
    peers = () if args.no_peers else (args.peers if args.peers is not None else preset_peers)
    t0 = time.perf_counter()
    report = evaluate_dataset(
        args.dataset,
        args.configs if args.configs is not None else preset_configs,
        peers=peers,
        split=args.split,
        model=args.model,
        cache_dir=args.cache_dir,
        k=args.k,
        progress=not args.quiet,
        on_row=on_row,
    )
    embeddings = report.meta["embeddings"]
    if not args.quiet:
        reused = "reused from the cache" if embeddings["corpus_cached"] else "computed and cached"
        print(f"embeddings {reused} ({embeddings['cache']})", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_table(report), end="")
    if args.out:
        written = write_report(report, args.out, plots=not args.no_plots)
        print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    if not args.quiet:
        print(f"eval took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .quantization import LearnedBinaryQuantizer, save_quantizer

    if args.out.suffix != ".npz":
        raise InvalidArgumentError(f"--out must name a .npz file, got {args.out}")
    if not args.out.parent.is_dir():
        raise InvalidArgumentError(f"--out: folder {args.out.parent} does not exist")
    options = {k: getattr(args, k) for k in ("epochs", "lr", "temperature", "max_samples")}
    quantizer = LearnedBinaryQuantizer(
        args.bits,
        hidden=args.hidden,
        seed=args.seed,
        **{k: v for k, v in options.items() if v is not None},  # None: the quantizer's default
    )
    vectors = training_vectors(
        args.corpus, model=args.model, cache_dir=args.cache_dir, progress=not args.quiet
    )
    if quantizer.bits is not None and quantizer.bits > 8 * vectors.shape[1]:
        raise InvalidArgumentError(
            f"--bits {quantizer.bits} is more than 8x the dimension {vectors.shape[1]}"
        )
    t0 = time.perf_counter()
    quantizer.fit(vectors)
    seconds = time.perf_counter() - t0
    save_quantizer(quantizer, args.out)
    report = quantizer.training_report or {}
    if args.json:
        print(json.dumps({**report, "out": str(args.out), "code_bytes": quantizer.code_bytes}, indent=2))
        return 0
    losses = report.get("loss", [])
    print(
        f"trained on {report.get('samples')} vectors ({vectors.shape[1]}-d -> {quantizer.n_bits_} bits, "
        f"{quantizer.code_bytes} bytes per code) in {seconds:.1f} s"
    )
    if losses:
        print(f"loss       {losses[0]:.5f} (epoch 1) -> {losses[-1]:.5f} (epoch {len(losses)})")
    print(
        f"top-{report.get('k')} agreement with float32 on {report.get('held_out')} held-out documents: "
        f"ITQ start {report.get('agreement_before', float('nan')):.3f}, "
        f"trained {report.get('agreement_trained', float('nan')):.3f}; kept: {report.get('kept')}"
    )
    print(f"wrote {args.out}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="quantsearch", description="Compressed embedding retrieval: binary + int8 rescoring."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("index", help="embed documents and add them to an index")
    p.add_argument(
        "input", help="BEIR corpus.jsonl (or its folder), a JSONL file, or a folder of .txt/.md files"
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
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="_id")
    p.add_argument("--batch-size", type=int, default=4096, help="documents per atomic add")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with a text query")
    p.add_argument("index")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=None, help="results to show (default 10)")
    p.add_argument("--oversampling", type=float, default=None)
    p.add_argument("--stages", nargs="*", default=None, help="rescoring tiers to run (none: Hamming only)")
    p.add_argument("--json", action="store_true")
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

    p = sub.add_parser(
        "eval",
        help="quality, memory and latency of every configuration on a BEIR collection, with peers",
        description="Embed a BEIR collection once (cached), then measure NDCG@10, recall, MRR, retention, "
        "bytes per vector and latency of each configuration and of peer libraries on the same embeddings. "
        "Config specs: [mrl<DIM>:|pca<DIM>:]<stage>[><stage>...][@<oversampling>], e.g. float32, int8, "
        "binary, binary>int8@10, rabitq-itq, int2-itq, q4_0, mrl256:binary>int8@4, pca256:rabitq-itq.",
    )
    p.add_argument("dataset", help="BEIR-layout folder, or a BEIR dataset name (scifact, nfcorpus, ...)")
    p.add_argument("--configs", nargs="+", default=None, help="our configurations (default: the preset's)")
    p.add_argument(
        "--preset",
        choices=("default", "codes"),
        default="default",
        help="named sweep: 'default' (precisions, oversampling, Matryoshka) or 'codes' (issue 5: every "
        "code family at its byte budget); --configs / --peers replace its rows",
    )
    p.add_argument(
        "--peers", nargs="+", default=None, help="peer rows (default: faiss and sentence-transformers)"
    )
    p.add_argument("--no-peers", action="store_true", help="measure no peer library")
    p.add_argument(
        "--out", type=Path, default=None, help="write results.json/.md/.txt and the PNG plots here"
    )
    p.add_argument("--no-plots", action="store_true", help="with --out: skip the PNG plots")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--model", default=None, help="embedding model (default: bundled all-MiniLM-L6-v2)")
    p.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: ~/.cache/quantsearch/embeddings)"
    )
    p.add_argument("-k", type=int, default=10, help="cutoff of NDCG/recall/MRR and of the timed searches")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "train",
        help="train learned 1-bit codes (quantization-aware head) on a corpus",
        description="Train a projection head whose sign bits keep the float32 neighbour rankings of the "
        "corpus (self-distillation, no queries or qrels); write it as a .npz usable by "
        "`quantsearch index --candidates FILE` or Index.create(binary=load_quantizer(FILE)).",
    )
    p.add_argument("corpus", type=Path, help="a .npy of document vectors, or a corpus as for `index`")
    p.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    p.add_argument("--bits", type=int, default=None, help="output bits (default: the dimension)")
    p.add_argument("--hidden", type=int, default=0, help="MLP width (0: linear head)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--model", default=None, help="embedding model (default: bundled all-MiniLM-L6-v2)")
    p.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: ~/.cache/quantsearch/embeddings)"
    )
    p.add_argument("--json", action="store_true", help="print the training figures as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("serve", help="HTTP API and web page over an index (extra: server)")
    p.add_argument("index")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key", default=None, help="require this key (default: $QUANTSEARCH_API_KEY; none: open)"
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="index Python standard library docstrings offline and search them")
    p.add_argument("--index", default=None, help="keep the demo index here (reused when it exists)")
    p.add_argument("--limit", type=int, default=3000, help="number of docstrings to index")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    from .multivector.commands import add_commands as add_multivector_commands

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
        print(f"quantsearch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(
            f"quantsearch: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("quantsearch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or a failure in a dependency: still one line, unless -v
        if args.verbose:
            raise
        print(
            f"quantsearch: internal error: {type(exc).__name__}: {exc} (-v shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
