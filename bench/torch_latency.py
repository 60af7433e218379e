"""Torch CPU latency of the teacher against the distilled student, both measured in one run.

`python -m bench.torch_latency [--runs runs/demo] [--quick]` writes bench/torch_latency.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import summarize
from edge_lstm.errors import EdgeLstmError

BATCHES = (1, 256)


def run(runs_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Per batch size: teacher and student ms per call (one thread), and teacher/student."""
    from edge_lstm.checkpoint import load_checkpoint
    from edge_lstm.latency import torch_window_latency

    models = {}
    for role, folder in (("teacher", "teacher"), ("student", "student")):
        path = Path(runs_dir) / folder
        if not (path / "model.pt").is_file():
            raise EdgeLstmError(f"{path}/model.pt is missing: run `make demo` first")
        models[role] = load_checkpoint(path)
    meta = models["student"].meta
    rounds = 3 if quick else 7
    repeats = 3 if quick else None  # None: torch_window_latency's default for the batch size
    out: dict[str, Any] = {
        "teacher": models["teacher"].meta.name,
        "student": meta.name,
        "threads": 1,
        "rounds": rounds,
        "unit": "ms per call (median of the calls in one round); figures over rounds",
    }
    for batch in BATCHES:
        samples: dict[str, list[float]] = {"teacher_ms": [], "student_ms": [], "ratio": []}
        for _ in range(rounds):
            ms = {
                role: torch_window_latency(
                    ckpt.model, len(meta.features), meta.window, batch, 1, repeats
                )["median_ms"]
                for role, ckpt in models.items()
            }
            samples["teacher_ms"].append(ms["teacher"])
            samples["student_ms"].append(ms["student"])
            samples["ratio"].append(ms["teacher"] / ms["student"])
        out[f"batch_{batch}"] = {name: summarize(values) for name, values in samples.items()}
    return out


if __name__ == "__main__":
    from bench.run import main_for

    main_for("torch_latency")
