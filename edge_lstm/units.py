"""How sizes are written for people: one unit system everywhere (CLI lines, tables, reports)."""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20


def human_size(n_bytes: int | None) -> str:
    """Binary units, one decimal: 1536 -> '1.5 KiB', 3_500_000 -> '3.3 MiB'; None -> '–'."""
    if n_bytes is None:
        return "–"
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"
