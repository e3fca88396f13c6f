"""FDE encoding speed: ours (vectorised numpy) vs fastembed's MUVERA postprocessor, same token vectors.

Both encode the same documents with the same parameters (k_sim=5, d_proj=16, r_reps=20, fill on);
wall-clock and process CPU time are reported (CPU time is the fairer figure on a loaded machine),
medians of ``--runs`` runs of each, alternated (ours, fastembed, ours, ...). Both run with
``--threads`` BLAS threads (default 1: a like-for-like single-core comparison; fastembed's small
per-repetition products do not use more in practice, and on the shared 2-core machine OpenBLAS's
second thread mostly spins). Run under the shared lock::

    cd benchmarks && flock /tmp/bench.lock ../.venv/bin/python muvera_speed.py cisi --docs 1460 --runs 3

fastembed runs in its own virtual environment ($MUVERA_FASTEMBED_PYTHON, see benchmarks/muvera.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from muvera import CACHE, FE_PYTHON, ROOT  # type: ignore[import-not-found]

from quantsearch.datasets import load_beir
from quantsearch.multivector import FDEConfig, FDEEncoder, TokenBatch
from quantsearch.multivector.tokens import TokenEmbedder, cached_tokens

_SCRIPT = r"""
import sys, time, numpy as np
from fastembed.postprocess.muvera import Muvera
v = np.load(sys.argv[1]); o = np.load(sys.argv[2])
m = Muvera(dim=v.shape[1], k_sim=5, dim_proj=16, r_reps=20, random_seed=42)
items = [v[o[i]:o[i+1]] for i in range(o.shape[0] - 1)]
w, c = time.perf_counter(), time.process_time()
enc = [m.process_document(x) for x in items]
print(time.perf_counter() - w, time.process_time() - c)
"""


def _ours(enc: FDEEncoder, sub: TokenBatch) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    enc.encode_documents(sub)
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="runs of each (medians reported)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads of both (0: library default)")
    parser.add_argument("--partition", default="simhash", help="ours: simhash or kmeans (fitted first)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(args.threads) if args.threads else None
    env = dict(os.environ)
    if args.threads:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(args.threads)
    ds = load_beir(ROOT / "datasets" / args.name)
    docs = cached_tokens(TokenEmbedder(), ds.corpus_texts, CACHE / args.name)
    m = min(args.docs, docs.n)
    sub = TokenBatch(np.asarray(docs.vectors, np.float32), docs.offsets).subset(np.arange(m))
    enc = FDEEncoder(FDEConfig(dim=sub.vectors.shape[1], partition=args.partition))
    t0 = time.perf_counter()
    enc.fit(sub)  # k-means partitions: once per index, on its first batch (not part of the encoding)
    print(f"fit ({args.partition}): {time.perf_counter() - t0:.2f} s")
    _ours(enc, sub)  # warm-up (first BLAS call, page faults of the work arrays)
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        np.save(Path(tmp) / "v.npy", sub.vectors)
        np.save(Path(tmp) / "o.npy", sub.offsets)
        for _ in range(args.runs):
            ours.append(_ours(enc, sub))
            out = subprocess.run(
                [FE_PYTHON, "-c", _SCRIPT, str(Path(tmp) / "v.npy"), str(Path(tmp) / "o.npy")],
                capture_output=True, text=True, check=True, env=env,
            ).stdout.split()  # fmt: skip
            theirs.append((float(out[-2]), float(out[-1])))
    if limit is not None:
        limit.restore_original_limits()
    ours_w, ours_c = (float(np.median([r[i] for r in ours])) for i in (0, 1))
    fe_w, fe_c = (float(np.median([r[i] for r in theirs])) for i in (0, 1))
    tokens = int(sub.offsets[-1])
    threads = args.threads or "default"
    print(
        f"{args.name}: {m} documents, {tokens} tokens ({tokens / m:.0f}/doc), "
        f"10,240-d FDE ({args.partition})",
        end="",
    )
    print(f", BLAS threads {threads}")
    print(f"ours:      wall {ours_w:7.3f} s  cpu {ours_c:7.3f} s  ({ours_c / m * 1e3:.2f} ms CPU/doc)")
    print(f"fastembed: wall {fe_w:7.3f} s  cpu {fe_c:7.3f} s  ({fe_c / m * 1e3:.2f} ms CPU/doc)")
    print(f"ratio:     wall {fe_w / ours_w:.1f}x  cpu {fe_c / ours_c:.1f}x  (medians of {args.runs} runs)")
    pairs = zip(ours, theirs, strict=True)
    print("per run (wall ours/fastembed): " + ", ".join(f"{a[0]:.2f}/{b[0]:.2f}" for a, b in pairs))


if __name__ == "__main__":
    main()
