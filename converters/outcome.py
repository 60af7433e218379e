"""What a converter step wrote, and the one line its command prints about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_lstm.units import human_size


@dataclass
class Outcome:
    """The files a step wrote into `folder`, how long it took and what to run next.

    `details` are the lines a command prints before the summary (parity figures, the int8
    table, the comparison table); `result` is what the step hands back to Python callers (the
    manifest, the int8 figures, the engine path, the student folder).
    """

    folder: Path
    files: list[str]  # names under `folder`, in the order they were written
    next: str  # the command that uses them
    details: list[str] = field(default_factory=list)
    result: Any = None
    seconds: float = 0.0

    def summary(self) -> str:
        """e.g. "wrote model.onnx (41.2 KiB), step.onnx (6.0 KiB) into D in 2.1 s; next: …"."""
        written = ", ".join(
            f"{name} ({human_size((self.folder / name).stat().st_size)})" for name in self.files
        )
        return f"wrote {written} into {self.folder} in {self.seconds:.1f} s; next: {self.next}"
