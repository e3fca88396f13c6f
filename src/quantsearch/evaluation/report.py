"""An evaluation as a terminal table, Markdown, JSON and two PNG plots.

Rows are sorted by RAM per vector, then by retention (best first). A ``*`` marks the rows that are best
for their RAM budget: no other row with at most as much RAM per vector retains more of float32 NDCG@10.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from quantsearch.evaluation.harness import EvalReport
from quantsearch.exceptions import MissingDependencyError

__all__ = ["format_markdown", "format_table", "write_plots", "write_report"]

#: file names written by :func:`write_report`
JSON_FILE = "results.json"
MARKDOWN_FILE = "results.md"
TABLE_FILE = "results.txt"
PLOT_BYTES_FILE = "retention_vs_bytes.png"
PLOT_LATENCY_FILE = "retention_vs_latency.png"

_LEGEND = (
    "* best retention for its RAM budget (no row with at most as much RAM per vector retains more); "
    "peer = another library on the same embeddings; latency = search only, queries already embedded"
)


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["ram_bytes_per_vector"], -_num(r["retention"]), r["config"]))


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _bytes(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _columns(report: EvalReport) -> list[tuple[str, str, Any]]:
    """(header, alignment, formatter of a row) for each column."""
    k, depth = report.k, report.meta.get("recall_depth", 100)
    return [
        ("", "<", lambda r: "*" if r["best_for_ram"] else ""),
        ("config", "<", lambda r: r["config"]),
        ("peer", "<", lambda r: "peer" if r["peer"] else ""),
        (f"NDCG@{k}", ">", lambda r: f"{r[f'ndcg@{k}']:.4f}"),
        ("retention", ">", lambda r: f"{100 * _num(r['retention']):.2f}%"),
        (f"R@{k}", ">", lambda r: f"{r[f'recall@{k}']:.4f}"),
        (f"R@{depth}", ">", lambda r: f"{r[f'recall@{depth}']:.4f}"),
        (f"MRR@{k}", ">", lambda r: f"{r[f'mrr@{k}']:.4f}"),
        ("RAM B/vec", ">", lambda r: _bytes(r["ram_bytes_per_vector"])),
        ("disk B/vec", ">", lambda r: _bytes(r["disk_bytes_per_vector"])),
        ("p50 ms", ">", lambda r: f"{r['p50_ms']:.3f}"),
        ("p95 ms", ">", lambda r: f"{r['p95_ms']:.3f}"),
        ("QPS", ">", lambda r: f"{r['qps']:.0f}"),
        (f"batch QPS (x{report.meta.get('batch_size', '?')})", ">", lambda r: f"{r['batch_qps']:.0f}"),
    ]


def _title(report: EvalReport) -> str:
    return (
        f"{report.dataset} ({report.split}): {report.n_docs} documents, {report.n_queries} queries, "
        f"model {report.model}, float32 NDCG@{report.k} {report.row('float32')[f'ndcg@{report.k}']:.4f}"
    )


def format_table(report: EvalReport) -> str:
    """The rows as an aligned plain-text table with a title and a legend."""
    columns = _columns(report)
    cells = [[fmt(row) for _, _, fmt in columns] for row in _sorted(report.rows)]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _, _) in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(
            f"{v:{align}{w}}" for v, (_, align, _), w in zip(values, columns, widths, strict=True)
        ).rstrip()

    out = [_title(report), line([h for h, _, _ in columns]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out + ["", _LEGEND]) + "\n"


def format_markdown(report: EvalReport) -> str:
    """The rows as a GitHub-flavoured Markdown table with a title and a legend."""
    columns = _columns(report)
    headers = [h or "best" for h, _, _ in columns]
    out = [f"**{_title(report)}**", "", "| " + " | ".join(headers) + " |"]
    out.append("|" + "|".join(":--" if a == "<" else "--:" for _, a, _ in columns) + "|")
    for row in _sorted(report.rows):
        out.append("| " + " | ".join(fmt(row) for _, _, fmt in columns) + " |")
    return "\n".join(out + ["", _LEGEND]) + "\n"


def write_plots(report: EvalReport, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Retention against RAM bytes per vector (log x) and against p50 latency; returns the PNG paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError(
            f'plots need matplotlib: pip install "quantsearch[eval]" ({exc})'
        ) from exc

    out = Path(out_dir)
    paths = []
    for key, label, file_name in (
        ("ram_bytes_per_vector", "RAM bytes per vector (log scale)", PLOT_BYTES_FILE),
        ("p50_ms", "single-query latency p50, ms (log scale)", PLOT_LATENCY_FILE),
    ):
        rows = [r for r in report.rows if r[key] > 0 and math.isfinite(_num(r["retention"]))]
        fig, ax = plt.subplots(figsize=(10, 6.5))
        for peer, marker, color, name in (
            (False, "o", "tab:blue", "quantsearch"),
            (True, "^", "tab:red", "peer"),
        ):
            group = [r for r in rows if r["peer"] == peer]
            if group:
                xs, ys = [r[key] for r in group], [100 * r["retention"] for r in group]
                ax.scatter(xs, ys, marker=marker, color=color, label=name, zorder=3)
        ys_all = [100 * r["retention"] for r in rows]
        gap = 0.028 * (max(ys_all) - min(ys_all) or 1.0)
        for r, y_label in _label_positions(rows, key, gap):
            ax.annotate(r["config"], (r[key], 100 * r["retention"]), xytext=(r[key] * 1.06, y_label),
                        fontsize=7, va="center", color="tab:red" if r["peer"] else "black",
                        arrowprops={"arrowstyle": "-", "color": "0.7", "linewidth": 0.5})  # fmt: skip
        if key == "ram_bytes_per_vector":  # the best-for-budget front, and the budgets as ticks
            front = sorted((r for r in rows if r["best_for_ram"]), key=lambda r: r[key])
            ax.step([r[key] for r in front], [100 * r["retention"] for r in front], where="post",
                    color="gray", linestyle="--", linewidth=1, label="best for RAM budget")  # fmt: skip
        ax.set_xscale("log")
        if key == "ram_bytes_per_vector":
            ticks = sorted({r[key] for r in rows if not r["peer"]})
            ax.set_xticks(ticks, [_bytes(t) for t in ticks], fontsize=7, rotation=45)
            ax.minorticks_off()
        ax.set_xlabel(label)
        ax.set_ylabel(f"retention, % of float32 NDCG@{report.k}")
        ax.set_title(_title(report), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = out / file_name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _label_positions(rows: list[dict[str, Any]], key: str, gap: float) -> list[tuple[dict[str, Any], float]]:
    """Label heights: each label moves down until it clears the labels already placed near it in x."""
    placed: list[tuple[dict[str, Any], float]] = []
    for r in sorted(rows, key=lambda r: -r["retention"]):
        y = 100 * r["retention"]
        # a label spans about a factor 2.5 to the right of its point on these log axes
        near = sorted(
            (other_y for other, other_y in placed if abs(math.log(r[key] / other[key])) < math.log(2.5)),
            reverse=True,
        )
        # walk down past the labels in the way, highest first: y only decreases, so this ends
        # (comparing y - gap against other_y - gap, which rounding can make equal, looped forever)
        for other_y in near:
            if abs(y - other_y) < gap * (1 - 1e-9):
                y = min(y, other_y - gap)
        placed.append((r, y))
    return placed


def write_report(report: EvalReport, out_dir: str | os.PathLike[str], *, plots: bool = True) -> list[Path]:
    """Write JSON, Markdown, the plain table and (optionally) both plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        (JSON_FILE, json.dumps(report.to_json(), indent=2) + "\n"),
        (MARKDOWN_FILE, format_markdown(report)),
        (TABLE_FILE, format_table(report)),
    ):
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    if plots:
        written += write_plots(report, out)
    return written
