"""Token-embed one shared collection (documents and test queries) into the token cache.

CPU-heavy: run under the shared lock, one collection per call::

    flock /tmp/bench.lock .venv/bin/python benchmarks/muvera_embed.py nfcorpus

The cache (float16 token vectors + offsets) lives in ``$MUVERA_CACHE`` (default /work/scratch/muvera);
benchmarks/muvera.py reads the same entries.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from quantsearch.datasets import load_beir
from quantsearch.multivector.tokens import TokenEmbedder, cached_tokens

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CACHE = Path(os.environ.get("MUVERA_CACHE", "/work/scratch/muvera"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    embedder = TokenEmbedder(batch_size=32)
    for name in args.names:
        ds = load_beir(DATASETS / name)
        t0 = time.perf_counter()
        docs = cached_tokens(embedder, ds.corpus_texts, CACHE / name)
        queries = cached_tokens(embedder, ds.query_texts, CACHE / name, is_query=True)
        print(
            f"{name}: {docs.n} docs, {docs.vectors.shape[0]} tokens "
            f"(mean {docs.vectors.shape[0] / docs.n:.0f}); "
            f"{queries.n} queries, {queries.vectors.shape[0]} tokens; {time.perf_counter() - t0:.0f} s"
        )


if __name__ == "__main__":
    main()
