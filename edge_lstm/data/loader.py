"""Reads long-format sensor logs (CSV, compressed CSV or Parquet) into validated readings.

Every problem is a DataError that names the file, the column or config key, and the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edge_lstm.config import Config
from edge_lstm.errors import DataError

log = logging.getLogger(__name__)

# pandas infers the compression of a CSV from its name; a .zip holds one CSV
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".zip")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES
# config keys of the columns that describe whole runs rather than readings
RUN_DESCRIPTION_KEYS = ("data.split.column", "data.group_column")
_MAX_LISTED = 5


@dataclass
class Readings:
    """Validated readings: one row per reading, grouped by run in order of first appearance.

    `frame` has the configured run, timestamp and label columns (run ids and labels as str,
    timestamps as float unix seconds) and the feature columns as float32, then the configured
    split and group columns (as str), which describe runs: one value per run.
    """

    frame: pd.DataFrame
    path: Path
    features: list[str]
    classes: list[str]
    run_column: str
    timestamp_column: str
    label_column: str

    def run_bounds(self) -> dict[str, tuple[int, int]]:
        """Run id -> (first row, end row) in `frame`, whose runs are contiguous."""
        runs = self.frame[self.run_column].to_numpy()
        starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
        ends = np.r_[starts[1:], len(runs)]
        return {str(runs[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}

    def run_values(self, column: str) -> dict[str, str]:
        """Run id -> the one value `column` has in all readings of that run."""
        values = self.frame[column].to_numpy()
        return {run: str(values[start]) for run, (start, _) in self.run_bounds().items()}


def listing(items: list[str]) -> str:
    """The first few items, quoted, and how many more there are: one readable error line."""
    shown = ", ".join(repr(i) for i in items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _suffix(path: Path) -> str | None:
    """The supported suffix `path` ends with (the longest, so .csv.gz wins over .gz)."""
    name = path.name.lower()
    matches = [s for s in SUFFIXES if name.endswith(s)]
    return max(matches, key=len) if matches else None


def _read_table(path: Path) -> pd.DataFrame:
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(
            f"{path}: unsupported file type {''.join(path.suffixes)!r}; sensor logs must be "
            f"{', '.join(SUFFIXES[:-1])} or {SUFFIXES[-1]}"
        )
    if not path.is_file():
        raise DataError(
            f"{path}: data file not found; check data.path or create demo data with "
            f"`edgelstm simulate --out {path}`"
        )
    try:
        if suffix in CSV_SUFFIXES:
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a corrupt file
        raise DataError(f"{path}: cannot read the file ({type(exc).__name__}: {exc})") from None


def _numeric_column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """The column as float64; non-numeric entries are an error naming the row and value."""
    series = frame[column]
    if pd.api.types.is_bool_dtype(series):
        raise DataError(f"{path}: column {column!r} holds booleans, not sensor values")
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(np.float64)
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: column {column!r} has {int(bad.sum())} non-numeric value(s), first at "
            f"row {row}: {series.iloc[row]!r}; fix the file or leave the column out of "
            "data.features"
        )
    return converted.astype(np.float64)


def _is_numeric_like(series: pd.Series) -> bool:
    """True if any value parses as a number (so a bad entry is an error, not a skipped column)."""
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    return bool(pd.to_numeric(series, errors="coerce").notna().any())


def _select_features(
    frame: pd.DataFrame, cfg: Config, path: Path, reserved: list[str]
) -> list[str]:
    requested = cfg.data.features
    if requested is not None:
        for name in requested:
            if name not in frame.columns:
                raise DataError(
                    f"data.features in {cfg.source}: unknown column {name!r} (not in {path}; "
                    f"its columns are {listing([str(c) for c in frame.columns])})"
                )
            if name in reserved:
                raise DataError(
                    f"data.features in {cfg.source}: {name!r} is the run, timestamp or label "
                    "column, not a sensor"
                )
        return list(requested)
    features = []
    for column in frame.columns:
        if column in reserved:
            continue
        if _is_numeric_like(frame[column]):
            features.append(str(column))
        else:
            log.info("%s: column %r is not numeric; not used as a sensor", path, column)
    if not features:
        raise DataError(
            f"{path}: no numeric sensor columns besides {listing(reserved)}; "
            f"list them in data.features in {cfg.source}"
        )
    return features


def _timestamps(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """Unix seconds as float64, from numbers or datetimes."""
    series = frame[column]
    if pd.api.types.is_datetime64_any_dtype(series):
        utc = pd.to_datetime(series, utc=True)
        return (utc - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    if pd.api.types.is_numeric_dtype(series) or _is_numeric_like(series):
        return _numeric_column(frame, column, path)
    try:
        utc = pd.to_datetime(series, utc=True)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{path}: timestamp column {column!r} is neither unix seconds nor dates ({exc})"
        ) from None
    return (utc - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def _labels(series: pd.Series) -> tuple[pd.Series, bool]:
    """Labels (or run descriptions) as str; integers (also as integral floats) become str(int),
    so 3 and 3.0 name one class or device."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64)
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            return pd.Series(values.astype(np.int64).astype(str), index=series.index), True
    return series.astype(str), False


def _class_order(labels: np.ndarray, normal: str, integer: bool) -> list[str]:
    others = sorted({str(v) for v in labels} - {normal}, key=int if integer else None)
    return [normal, *others]


def _check_no_missing(frame: pd.DataFrame, column: str, what: str, path: Path) -> None:
    missing = frame[column].isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{path}: column {column!r} has {int(missing.sum())} empty {what}(s), first at "
            f"row {row}; every reading needs a {what}"
        )


def _finite_rows(values: pd.DataFrame, ts: pd.Series, cfg: Config, path: Path) -> np.ndarray:
    """Rows whose sensors and timestamp are finite; the others are an error or dropped
    (data.nan_policy)."""
    finite = np.isfinite(values.to_numpy()).all(axis=1) & np.isfinite(ts.to_numpy())
    n_bad = int((~finite).sum())
    if n_bad:
        first = int(np.flatnonzero(~finite)[0])
        if cfg.data.nan_policy == "error":
            raise DataError(
                f"{path}: {n_bad} row(s) have NaN/Inf or empty sensor or timestamp values, first "
                f"at row {first}; clean the file or set data.nan_policy: drop in {cfg.source}"
            )
        log.warning("%s: dropped %d of %d rows with NaN/Inf values", path, n_bad, len(values))
    return finite


def _normal_class(cfg: Config, present: np.ndarray, integer: bool, path: Path) -> str:
    """The no-fault label: data.normal_class, or "0" for integer labels when not set."""
    normal = cfg.data.normal_class
    if integer and "normal_class" not in cfg.data.model_fields_set:
        normal = "0"
    if normal not in set(present):
        found = sorted(set(present))
        raise DataError(
            f"data.normal_class in {cfg.source}: {normal!r} is not among the labels in {path} "
            f"(found {listing(found)}); set it to the label of the no-fault class"
        )
    return normal


def load_readings(cfg: Config, path: Path | None = None) -> Readings:
    """Loads and validates the sensor logs at `path` (default cfg.data.path)."""
    data = cfg.data
    path = Path(path) if path is not None else Path(data.path)
    raw = _read_table(path)
    keys = data.metadata_columns
    for key, column in keys.items():
        if column not in raw.columns:
            raise DataError(
                f"{path}: missing column {column!r} ({key} in {cfg.source}); the file has "
                f"{listing([str(c) for c in raw.columns])}"
            )
    reserved = list(keys.values())
    features = _select_features(raw, cfg, path, reserved)
    _check_no_missing(raw, data.run_column, "run id", path)
    _check_no_missing(raw, data.label_column, "label", path)
    described = {k: c for k, c in keys.items() if k in RUN_DESCRIPTION_KEYS}
    for column in described.values():
        _check_no_missing(raw, column, f"{column!r} value", path)

    values = pd.DataFrame({name: _numeric_column(raw, name, path) for name in features})
    ts = _timestamps(raw, data.timestamp_column, path)
    finite = _finite_rows(values, ts, cfg, path)
    labels, integer = _labels(raw[data.label_column])
    frame = pd.DataFrame(
        {
            data.run_column: raw[data.run_column].astype(str).to_numpy(),
            data.timestamp_column: ts.to_numpy(dtype=np.float64),
            **{name: values[name].to_numpy(dtype=np.float32) for name in features},
            data.label_column: labels.to_numpy(dtype=object),
            **{c: _labels(raw[c])[0].to_numpy(dtype=object) for c in described.values()},
        }
    )[finite].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{path}: no readings left to use")

    present = frame[data.label_column].to_numpy()
    normal = _normal_class(cfg, present, integer, path)

    codes, _ = pd.factorize(frame[data.run_column])
    frame = frame.iloc[np.argsort(codes, kind="stable")].reset_index(drop=True)
    readings = Readings(
        frame=frame,
        path=path,
        features=features,
        classes=_class_order(present, normal, integer),
        run_column=data.run_column,
        timestamp_column=data.timestamp_column,
        label_column=data.label_column,
    )
    _check_runs(readings, data.window)
    for key, column in described.items():
        _check_one_value_per_run(readings, column, f"{key} in {cfg.source}")
    return readings


def _check_one_value_per_run(readings: Readings, column: str, key: str) -> None:
    """A column describing runs (split, device) has one value in all readings of a run."""
    frame = readings.frame
    distinct = frame.groupby(readings.run_column, sort=False)[column].nunique()
    mixed = distinct[distinct > 1]
    if not mixed.empty:
        run = str(mixed.index[0])
        found = sorted({str(v) for v in frame.loc[frame[readings.run_column] == run, column]})
        raise DataError(
            f"{readings.path}: column {column!r} ({key}) describes runs, but {len(mixed)} run(s) "
            f"have several values, first {run!r} ({listing(found)}); give every reading of a "
            "run the same value"
        )


def _check_runs(readings: Readings, window: int) -> None:
    """Timestamps strictly increase inside each run and every run fills at least one window."""
    frame = readings.frame
    runs = frame[readings.run_column].to_numpy()
    ts = frame[readings.timestamp_column].to_numpy()
    same_run = runs[1:] == runs[:-1]
    backwards = np.flatnonzero(same_run & (np.diff(ts) <= 0))
    if backwards.size:
        i = int(backwards[0])
        raise DataError(
            f"{readings.path}: timestamps go backwards or repeat inside run {runs[i]!r} "
            f"({ts[i]!r} then {ts[i + 1]!r}) at {backwards.size} place(s); sort each run by "
            f"{readings.timestamp_column!r} and drop duplicate readings"
        )
    short = [
        f"{run} ({end - start} readings)"
        for run, (start, end) in readings.run_bounds().items()
        if end - start < window
    ]
    if short:
        raise DataError(
            f"{readings.path}: {len(short)} run(s) are shorter than the window of {window} "
            f"readings: {', '.join(short[:_MAX_LISTED])}; drop them or lower data.window"
        )
