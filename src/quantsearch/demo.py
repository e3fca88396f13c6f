"""Offline demo: index the docstrings of the Python standard library and search them.

Everything it needs ships with Python and the ``embed`` extra: no download at run time.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Modules whose import has no side effects; walked in this order until the limit is reached.
DEMO_MODULES = (
    "os", "os.path", "sys", "json", "collections", "itertools", "functools", "re", "pathlib", "datetime",
    "math", "statistics", "random", "string", "textwrap", "shutil", "subprocess", "threading", "asyncio",
    "socket", "ssl", "http.client", "http.server", "urllib.parse", "urllib.request", "email.message",
    "csv", "sqlite3", "logging", "argparse", "unittest", "typing", "dataclasses", "enum", "heapq", "bisect",
    "zipfile", "tarfile", "gzip", "bz2", "lzma", "hashlib", "hmac", "secrets", "uuid", "decimal",
    "fractions", "io", "tempfile", "glob", "fnmatch", "pickle", "copy", "pprint", "inspect", "ast", "dis",
    "contextlib", "abc", "queue", "sched", "selectors", "signal", "struct", "array", "weakref", "difflib",
    "html", "html.parser", "xml.etree.ElementTree", "base64", "binascii", "calendar", "time", "locale",
    "gettext", "platform", "shlex", "configparser", "codecs", "unicodedata", "operator", "numbers", "cmath",
    "concurrent.futures", "multiprocessing", "ipaddress", "smtplib", "mimetypes", "filecmp", "stat",
    "traceback", "warnings", "importlib", "pkgutil", "zlib", "graphlib", "getpass", "tokenize", "keyword",
    "mailbox", "imaplib", "ftplib", "poplib", "xmlrpc.client", "wsgiref.simple_server", "socketserver",
    "doctest", "timeit", "trace", "cProfile", "pstats", "tracemalloc", "gc", "atexit", "reprlib",
    "linecache", "fileinput", "plistlib", "netrc", "quopri", "colorsys", "wave", "zipimport", "runpy",
)  # fmt: skip

EXAMPLE_QUERIES = (
    "read a file line by line",
    "compress data with gzip",
    "parse command line arguments",
    "run several tasks concurrently in threads",
    "find the differences between two texts",
    "securely generate a random token for passwords",
)


def collect_docstrings(limit: int = 3000) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """``(ids, texts, metadata)`` of up to ``limit`` stdlib modules, functions, classes and methods.

    The id is the qualified name (``json.dumps``), the text the name followed by the docstring's
    first paragraph. Modules take turns (round robin) so that a small limit still covers all of
    them; re-exported objects are kept once.
    """
    per_module: list[list[tuple[str, str, dict[str, Any]]]] = []
    seen_objects: set[int] = set()

    def entry(name: str, obj: Any, module: str) -> tuple[str, str, dict[str, Any]] | None:
        doc = inspect.getdoc(obj)
        if id(obj) in seen_objects or not doc or len(doc) < 20:
            return None
        seen_objects.add(id(obj))
        paragraph = " ".join(doc.strip().split("\n\n")[0].split())
        return name, f"{name}: {paragraph}"[:1000], {"module": module, "kind": type(obj).__name__}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in DEMO_MODULES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # pragma: no cover - a trimmed Python build
                continue
            found = [entry(module_name, module, module_name)]
            public = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
            for attr in sorted(public):
                obj = getattr(module, attr, None)
                if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                    continue
                qualified = f"{module_name}.{attr}"
                found.append(entry(qualified, obj, module_name))
                if inspect.isclass(obj):
                    for meth_name, meth in sorted(vars(obj).items()):
                        if not meth_name.startswith("_") and callable(meth):
                            found.append(entry(f"{qualified}.{meth_name}", meth, module_name))
            per_module.append([e for e in found if e is not None])

    ids: list[str] = []
    texts: list[str] = []
    meta: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    for turn in range(max(map(len, per_module), default=0)):
        for entries in per_module:
            if len(ids) >= limit:
                return ids, texts, meta
            if turn < len(entries) and entries[turn][0] not in seen_ids:
                name, text, info = entries[turn]
                seen_ids.add(name)
                ids.append(name)
                texts.append(text)
                meta.append(info)
    return ids, texts, meta


def run_demo(
    index_dir: Path | None = None, *, limit: int = 3000, progress: bool = True, out: Any = None
) -> None:
    """Build (or reuse) the demo index, run the example searches, print results, timings and memory."""
    from .display import format_info, format_results
    from .index import Index
    from .ingest import index_documents

    out = out or sys.stdout
    tmp = None
    if index_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="quantsearch-demo-")
        index_dir = Path(tmp.name) / "index"
    try:
        if (index_dir / "manifest.json").is_file():
            index = Index.open(index_dir)
            print(f"reusing the demo index in {index_dir} ({len(index):,} docstrings)", file=out)
        else:
            t0 = time.perf_counter()
            ids, texts, meta = collect_docstrings(limit)
            print(
                f"collected {len(ids):,} docstrings from {len(DEMO_MODULES)} standard library modules",
                file=out,
            )
            index = index_documents(ids, texts, meta, index_dir, rescore=("int8",), progress=progress)
            print(f"embedded and indexed them in {time.perf_counter() - t0:.1f} s -> {index_dir}", file=out)
        with index:
            index.search(EXAMPLE_QUERIES[0], k=1)  # warm up the model so the timings below are steady
            for query in EXAMPLE_QUERIES:
                results = index.search(query, k=5)
                print("", file=out)
                print(format_results(results, query), file=out)
            print("", file=out)
            print(format_info(index.info()), file=out)
    finally:
        if tmp is not None:
            tmp.cleanup()
