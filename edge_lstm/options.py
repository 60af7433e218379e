"""Click options shared by several commands and the demo's live stage, so their names, defaults
and help agree."""

from __future__ import annotations

from pathlib import Path

import click

runs_dir_option = click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Runs folder written by `make demo`.",
)
