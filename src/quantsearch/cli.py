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
from .ingest import candidate_quantizer, index_documents, progress_bar, read_documents, training_vectors

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


# ---- sharded indexes (quantsearch.distributed) ----------------------------------------------------
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


def cmd_index_sharded(args: argparse.Namespace) -> int:
    """``quantsearch index --shards N``: the Ray Data ingestion pipeline into a sharded index."""
    from .distributed.ingestion import ingest

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
    from .distributed import ShardedIndex

    with ShardedIndex.open(args.index) as index:
        print(format_info(index.info()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(index_dir=Path(args.index) if args.index else None, limit=args.limit, progress=not args.quiet)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .embed import Embedder
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
        embedder=Embedder(args.model, backend=args.backend),
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
    if args.out.suffix != ".npz":  # a model folder: train the model for 1-bit codes (issue 17)
        if args.corpus.suffix == ".npy" or args.corpus.is_file():
            raise InvalidArgumentError(
                f"--out must name a .npz file to train a head on {args.corpus} (a model folder is trained "
                f"from a BEIR folder), got {args.out}"
            )
        return cmd_train_model(args)
    return cmd_train_head(args)


def cmd_train_model(args: argparse.Namespace) -> int:
    from .finetune import FinetuneConfig, train_model

    # only what the user set: the rest comes from the recipe for the pairs found (qrels or cloze)
    head = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("lr", args.lr),
            ("temperature", args.temperature),
            ("bits", args.bits),
            ("surrogate", args.surrogate),
            ("ema", args.ema),
        )
        if v is not None
    }
    head["seed"] = args.seed
    e2e = None
    if args.e2e_steps:
        e2e = FinetuneConfig(
            steps=args.e2e_steps,
            batch_size=args.e2e_batch_size,
            max_seq_length=args.e2e_max_seq_length,
            unfreeze_layers=args.unfreeze_layers,
            seed=args.seed,
        )
    report = train_model(
        args.corpus,
        args.out,
        model=args.model,
        pairs=args.pairs,
        head=head,
        e2e=e2e,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps({**report, "out": str(args.out)}, indent=2))
        return 0
    h = report["head"]
    print(
        f"trained on {report['pairs']['queries']:,} {report['pairs']['source']} queries in "
        f"{report['total_seconds']:.0f} s; validation NDCG@10 of the 1-bit codes (Hamming): "
        f"ITQ start {h['val_ndcg@10_itq_start']}, trained {h['val_ndcg@10_kept']} (epoch {h['kept_epoch']})"
    )
    print(f"wrote {args.out} (use it as --model {args.out}; its sign bits are the codes)")
    return 0


def cmd_train_head(args: argparse.Namespace) -> int:
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


def _sharding_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sharded index (Ray Data ingestion, extra 'distributed')")
    g.add_argument("--shards", type=int, default=None, help="create a sharded index with N shards")
    g.add_argument("--workers", type=int, default=1, help="embedding actors (one model each)")
    g.add_argument("--vector-field", default=None, help="input column of precomputed vectors (no embedding)")
    g.add_argument("--ray-address", default=None, help="Ray cluster to run on (default: a local Ray)")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="quantsearch", description="Compressed embedding retrieval: binary + int8 rescoring."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add_backend(p: argparse.ArgumentParser, default_help: str) -> None:
        from .embedding import BACKENDS

        p.add_argument(
            "--backend",
            choices=BACKENDS,
            default=None,
            help=f"embedding backend ({default_help}); auto: the fastest agreeing with torch on the corpus",
        )

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
    add_backend(p, "default: the index's, else torch")
    _sharding_options(p)
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
    add_backend(p, "default: the one the index was built with")
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
        choices=("default", "codes", "lexical"),
        default="default",
        help="named sweep: 'default' (precisions, oversampling, Matryoshka), 'codes' (issue 5: every "
        "code family at its byte budget) or 'lexical' (BM25, hybrid, SVM vs bm25s and rank-bm25); "
        "--configs / --peers replace its rows",
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
    add_backend(p, "default: torch")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "train",
        help="train a model whose 1-bit codes rank well (--out DIR), or a QAT head (--out FILE.npz)",
        description="--out MODEL_DIR: train a model for sign-bit codes on a BEIR folder: a code head on "
        "the base model trained with a Hamming-surrogate contrastive loss on the train qrels (else on "
        "inverse cloze pairs from the corpus; never the test split), optionally followed by end-to-end "
        "fine-tuning (--e2e-steps); the folder is a sentence-transformers model for --model. "
        "--out FILE.npz: the older projection head trained by self-distillation of the corpus's float32 "
        "neighbour rankings, usable by `quantsearch index --candidates FILE`.",
    )
    p.add_argument(
        "corpus",
        type=Path,
        help="a BEIR folder (model); for .npz: a .npy of vectors or a corpus as for `index`",
    )
    p.add_argument("--out", type=Path, required=True, help="model folder to write, or a .npz file (QAT head)")
    p.add_argument(
        "--pairs",
        choices=("auto", "qrels", "cloze"),
        default="auto",
        help="model: train qrels (auto: when present) or inverse cloze pairs from the corpus",
    )
    p.add_argument(
        "--e2e-steps",
        type=int,
        default=0,
        help="model: then fine-tune the whole encoder end to end for this many steps (CPU-heavy)",
    )
    p.add_argument("--e2e-batch-size", type=int, default=32, help="model: pairs per end-to-end step")
    p.add_argument(
        "--e2e-max-seq-length", type=int, default=256, help="model: tokens per text in end-to-end steps"
    )
    p.add_argument(
        "--unfreeze-layers",
        type=int,
        default=None,
        help="model: end to end, train only the top N transformer layers (and the head); the frozen "
        "layers run once per text, so steps are much cheaper (default: the whole encoder)",
    )
    p.add_argument(
        "--surrogate",
        choices=("tanh", "ste"),
        default=None,
        help="model: Hamming surrogate of the head: soft tanh codes, or exact signs with tanh gradients "
        "(default: the recipe for the pairs found)",
    )
    p.add_argument(
        "--ema", type=float, default=None, help="model: decay of the moving average of the head's weights"
    )
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
    add_backend(p, "default: the one the index was built with")
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
