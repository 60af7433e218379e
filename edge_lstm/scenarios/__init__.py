"""The built-in data scenarios of `edgelstm simulate`, by name.

`pump` (edge_lstm.simulate) is the quick demo: loud faults every model gets right. `process`
(edge_lstm.scenarios.process) is the hard one: a closed-loop plant whose controllers hide its
faults, with devices, so a split by device can test on plants never seen in training. Both go
through the same writer, so the pump files stay byte-identical for a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from edge_lstm import simulate as pump
from edge_lstm.errors import DataError
from edge_lstm.scenarios import process


@dataclass(frozen=True)
class Scenario:
    """What `simulate` needs to know of a generator: its classes, sensors and defaults."""

    summary: str
    classes: list[str]
    features: list[str]
    runs_per_class: int
    run_length: int
    sample_period_s: float
    generate: Callable[..., pd.DataFrame]  # (seed=, runs_per_class=, run_length=)


SCENARIOS: dict[str, Scenario] = {
    "pump": Scenario(
        summary="pump fleet at 10 Hz, loud faults (the quick demo)",
        classes=pump.CLASS_NAMES,
        features=pump.FEATURE_NAMES,
        runs_per_class=20,
        run_length=600,
        sample_period_s=0.1,
        generate=pump.generate,
    ),
    "process": Scenario(
        summary="closed-loop reactor fleet at 1/min, faults hidden by control loops, devices",
        classes=process.CLASS_NAMES,
        features=process.FEATURE_NAMES,
        runs_per_class=process.RUNS_PER_CLASS,
        run_length=process.RUN_LENGTH,
        sample_period_s=process.SAMPLE_PERIOD_S,
        generate=process.generate,
    ),
}


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; an unknown name lists the known ones."""
    if name not in SCENARIOS:
        raise DataError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def write_scenario(
    name: str,
    path: str | Path,
    seed: int = 0,
    runs_per_class: int | None = None,
    run_length: int | None = None,
) -> Path:
    """Generates scenario `name` (its defaults where None) and writes it by the file suffix."""
    scenario = get_scenario(name)
    return pump.write_frame(
        path,
        lambda: scenario.generate(
            seed=seed,
            runs_per_class=runs_per_class or scenario.runs_per_class,
            run_length=run_length or scenario.run_length,
        ),
    )
