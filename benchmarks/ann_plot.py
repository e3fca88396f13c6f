"""Recall@10 vs single-query QPS of the rows of one or more ``benchmarks/ann.py --json`` files, one line
per family (our exact scan, IVF, HNSW; faiss IVF / HNSW; usearch), unfiltered rows only.

    .venv/bin/python benchmarks/ann_plot.py /work/scratch/ann/1m-*.json --out docs/ann-1m.png
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def family(name: str) -> str:
    """The row's structure without its setting: "quantsearch hnsw m=16 ef=100" -> "quantsearch hnsw m=16"."""
    return re.sub(r"\s+(ef|nprobe|target_recall)=\S+$", "", name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for f in args.json for r in json.loads(f.read_text())["rows"]]
    rows = [r for r in rows if "filter_selectivity" not in r and "target_recall" not in r["name"]]
    meta = json.loads(args.json[0].read_text())
    fig, ax = plt.subplots(figsize=(8, 5))
    families: dict[str, list[dict]] = {}
    for r in rows:
        families.setdefault(family(r["name"]), []).append(r)
    for name, group in sorted(families.items()):
        group.sort(key=lambda r: r["recall_at_10"])
        marker = "o" if name.startswith("quantsearch") else "s"
        ax.plot([r["recall_at_10"] for r in group], [r["qps"] for r in group], marker=marker, label=name)
    ax.axvline(0.95, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 after int8 rescoring (vs exact float32)")
    ax.set_ylabel("queries per second (one at a time)")
    ax.set_title(
        f"{meta['n']:,} x {meta['dim']} synthetic, {meta['threads']} threads, k=10, x{meta['oversampling']:g}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
