"""Plain-text rendering of search results and index summaries (the CLI and the demo print these)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_info", "format_results", "human_bytes"]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_info(info: dict[str, Any]) -> str:
    lines = [
        f"index      {info['path']}",
        f"documents  {info['count']:,} ({info['deleted']:,} deleted rows, {info['segments']} segments)",
        f"dim        {info['dim']}   ids: {info['id_type']}   model: {info['model'] or '-'}",
        f"search     oversampling x{info['default_oversampling']:g}",
        "",
        f"{'tier':<10} {'role':<11} {'where':<21} {'bytes/vec':>9} {'RAM':>10} {'disk':>10}  quantizer",
    ]
    for t in info["tiers"]:
        params = ", ".join(f"{k}={v}" for k, v in t["quantizer"]["params"].items() if k != "base")
        lines.append(
            f"{t['name']:<10} {t['role']:<11} {t['storage']:<21} {t['bytes_per_vector'] or 0:>9} "
            f"{human_bytes(t['ram_bytes']):>10} {human_bytes(t['disk_bytes']):>10}  "
            f"{t['quantizer']['kind']}({params})"
        )
    stage_ram = info.get("candidate_stage_ram_bytes") or 0
    ram = sum(t["ram_bytes"] for t in info["tiers"]) + info["valid_mask_ram_bytes"] + stage_ram
    disk = sum(t["disk_bytes"] for t in info["tiers"]) + info["catalog_bytes"]
    f32 = info["float32_bytes"]
    kind = (info.get("candidate_stage") or {}).get("kind", "exact")
    if stage_ram:
        lines.append(f"{kind:<10} {'candidates':<11} {'RAM':<21} {'':>9} {human_bytes(stage_ram):>10}")
    held = "codes + deleted-row mask" + (f" + {kind} structure" if stage_ram else "")
    lines += [
        f"{'catalog':<10} {'ids+text':<11} {'disk (SQLite)':<21} {'':>9} {'':>10} "
        f"{human_bytes(info['catalog_bytes']):>10}",
        "",
        f"RAM total  {human_bytes(ram)} ({held})   disk total {human_bytes(disk)}",
        f"float32    {human_bytes(f32)} would be held in RAM by an uncompressed flat index"
        + (f" ({f32 / max(ram, 1):.1f}x more)" if f32 else ""),
    ]
    return "\n".join(lines)


def format_results(results: Any, query: str | None = None, *, width: int = 100) -> str:
    lines = []
    if query is not None:
        lines.append(f"query: {query}")
    for rank, hit in enumerate(results.to_list()[0], start=1):
        text = " ".join((hit.get("text") or "").split())
        if len(text) > width:
            text = text[: width - 3] + "..."
        found = f"  [{'+'.join(hit['sources'])}]" if hit.get("sources") else ""
        lines.append(f"{rank:>3}. {hit['score']:.4f}  {hit['id']}{found}  {text}")
    stages = "  ".join(f"{name} {ms:.2f} ms" for name, ms in results.timings.items())
    lines.append(f"     timings: {stages}")
    return "\n".join(lines)
