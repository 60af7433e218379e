"""Markdown cells and tables for the demo report."""

from __future__ import annotations

import numpy as np


def num(value: float | int | None, spec: str = ".4f") -> str:
    """`value` formatted with `spec`; '–' for a missing figure."""
    return "–" if value is None else format(value, spec)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def matrix_table(cm: np.ndarray, classes: list[str], corner: str) -> str:
    """A square count matrix with class names on both axes; zeros shown as '·'."""
    header = [corner, *[c.replace("_", " ") for c in classes]]
    rows = [[classes[i], *[str(v) if v else "·" for v in cm[i]]] for i in range(len(classes))]
    return markdown_table(header, rows)
