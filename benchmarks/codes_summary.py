"""Summarise `quantsearch eval --preset codes` runs: one Markdown table, a column per collection.

Usage (after the four eval runs of docs/benchmarks.md, "Better codes"):

    .venv/bin/python benchmarks/codes_summary.py docs/eval/codes/{nfcorpus,scifact,cranfield,cisi}

Prints, per configuration in the order of the first report: RAM and disk bytes per vector, bits per
dimension in RAM, NDCG@10 retention on each collection and the minimum, and marks which of issue 5's
targets a row meets (1-bit >= 95%, <= 2 bits/dim with rescoring >= 99.5%, 2-bit >= 98%).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="folders holding results.json")
    args = parser.parse_args()
    reports = [json.loads((run / "results.json").read_text()) for run in args.runs]
    dim = reports[0]["dim"]
    names = [r["dataset"] for r in reports]
    rows = {
        name: {row["config"]: row for row in rep["rows"]} for name, rep in zip(names, reports, strict=True)
    }
    print("| config | RAM B/vec | bits/dim in RAM | disk B/vec | " + " | ".join(names) + " | min |")
    print("|---|---|---|---|" + "---|" * (len(names) + 1))
    for config in rows[names[0]]:
        cells = [rows[n].get(config) for n in names]
        if any(c is None for c in cells):
            continue
        first = cells[0]
        retention = [100 * c["retention"] for c in cells]
        ram = first["ram_bytes_per_vector"]
        bits = 8 * ram / dim
        peer = " (peer)" if first["peer"] else ""
        print(
            f"| {config}{peer} | {ram:g} | {bits:.2f} | {first['disk_bytes_per_vector']:g} | "
            + " | ".join(f"{v:.2f}" for v in retention)
            + f" | {min(retention):.2f} |"
        )


if __name__ == "__main__":
    main()
