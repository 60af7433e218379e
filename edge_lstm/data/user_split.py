"""Splits the user chose: a per-run column of the logs, or a file listing run ids per split.

Both are checked as hard as a fraction split is made: every run in exactly one split, train
and test not empty, and (with data.group_column) no device or asset in two splits.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from edge_lstm.data.loader import listing
from edge_lstm.data.split import SPLITS
from edge_lstm.errors import DataError

_REQUIRED = ("train", "test")


def _check_filled(splits: dict[str, list[str]], source: str) -> dict[str, list[str]]:
    empty = [name for name in _REQUIRED if not splits[name]]
    if empty:
        raise DataError(f"{source}: no runs in the {'/'.join(empty)} split(s); assign some")
    return {name: sorted(runs) for name, runs in splits.items()}


def splits_from_column(split_of_runs: dict[str, str], source: str) -> dict[str, list[str]]:
    """Runs grouped by their split column's value (`source` names the column in errors)."""
    unknown = sorted({value for value in split_of_runs.values() if value not in SPLITS})
    if unknown:
        runs = [run for run, value in split_of_runs.items() if value not in SPLITS]
        raise DataError(
            f"{source}: value(s) {listing(unknown)} (runs {listing(runs)}) are not a split; "
            f"allowed values are {', '.join(SPLITS)}"
        )
    return _check_filled(
        {name: [run for run, v in split_of_runs.items() if v == name] for name in SPLITS}, source
    )


def _read_split_file(path: Path) -> object:
    if not path.is_file():
        raise DataError(
            f"{path}: split file not found (data.split.file; a relative path is read from "
            f"the working directory, {Path.cwd()})"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(path.read_text())
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        what = " ".join(str(exc).split())
        raise DataError(f"{path}: not valid {suffix[1:].upper()} ({what})") from None
    raise DataError(f"{path}: a split file must be .yaml, .yml or .json, not {suffix!r}")


def splits_from_file(path: Path, runs: list[str], data_path: Path) -> dict[str, list[str]]:
    """The runs of each split as `path` lists them; `runs` are the data's run ids.

    The file must list every run of the data exactly once and no run the data lacks: a run
    quietly left out would change what the model is tested on, so either is a DataError.
    """
    raw = _read_split_file(path)
    if not isinstance(raw, dict) or not set(raw) <= set(SPLITS):
        found = sorted(str(k) for k in raw) if isinstance(raw, dict) else type(raw).__name__
        raise DataError(
            f"{path}: expected a mapping of {', '.join(SPLITS)} to lists of run ids, got {found}"
        )
    splits: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    twice: list[str] = []
    for name in SPLITS:
        listed = raw.get(name) or []
        if not isinstance(listed, list):
            raise DataError(f"{path}: {name} must be a list of run ids")
        splits[name] = [str(run) for run in listed]
        for run in splits[name]:
            if run in seen:
                twice.append(f"{run} ({seen[run]}, {name})")
            seen[run] = name
    if twice:
        raise DataError(f"{path}: run(s) listed twice: {listing(twice)}")
    unknown = sorted(set(seen) - set(runs))
    if unknown:
        raise DataError(
            f"{path}: {len(unknown)} run id(s) are not in {data_path}: {listing(unknown)}; "
            "fix the ids or the data file"
        )
    unlisted = sorted(set(runs) - set(seen))
    if unlisted:
        raise DataError(
            f"{path}: {len(unlisted)} run(s) of {data_path} are in no split: "
            f"{listing(unlisted)}; list every run (drop unwanted runs from the data instead)"
        )
    return _check_filled(splits, str(path))


def check_groups(splits: dict[str, list[str]], groups_of_runs: dict[str, str], source: str) -> None:
    """No group (data.group_column: device, asset) has runs in two splits."""
    split_of = {run: name for name, runs in splits.items() for run in runs}
    spans: dict[str, set[str]] = {}
    for run, group in groups_of_runs.items():
        spans.setdefault(group, set()).add(split_of[run])
    mixed = sorted(group for group, names in spans.items() if len(names) > 1)
    if mixed:
        first = mixed[0]
        where = [f"{run} ({split_of[run]})" for run, g in groups_of_runs.items() if g == first]
        raise DataError(
            f"{source}: {len(mixed)} group(s) have runs in several splits, e.g. {first!r}: "
            f"{listing(sorted(where))}; a group must stay in one split, so a model is "
            "never tested on a device it saw in training"
        )
