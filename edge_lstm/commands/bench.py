"""`edgelstm bench`: run the benchmarks of a source checkout (click wiring only).

The benchmarks live in the checkout's bench/ folder, not in the installed package, so this
runs `python -m bench.run` there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from edge_lstm.errors import EdgeLstmError
from edge_lstm.options import runs_dir_option

CHECKOUT = Path(__file__).resolve().parents[2]


@click.command("bench")
@runs_dir_option
@click.option("--quick", is_flag=True, help="Fewer repeats (a smoke test, not a figure).")
@click.option("--only", multiple=True, help="Run only this benchmark (repeatable).")
def bench(runs_dir: Path, quick: bool, only: tuple[str, ...]) -> None:
    """Run every benchmark and write bench/results.json + bench/tradeoff.png.

    Each figure is the median of repeated runs with min and max, next to a baseline measured
    in the same run. Example: edgelstm bench --runs runs/demo
    """
    if not (CHECKOUT / "bench" / "run.py").is_file():
        raise EdgeLstmError(
            "`edgelstm bench` needs a source checkout (its bench/ folder); "
            "clone the repository and run `make bench` there"
        )
    args = [sys.executable, "-m", "bench.run", "--runs", str(runs_dir.resolve())]
    args += ["--quick"] if quick else []
    for name in only:
        args += ["--only", name]
    code = subprocess.run(args, cwd=CHECKOUT).returncode
    if code:
        raise SystemExit(code)
