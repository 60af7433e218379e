"""Built-in generator of realistic multi-sensor pump data for demos and tests.

Each run is one machine (a centrifugal pump driven by an induction motor) sampled at 10 Hz with
its own ambient temperature, sensor offsets and noise; demand changes move its load and speed
several times per run. Fault runs start healthy; at an onset in the first ~15 % of the run a
fault begins and every later row carries the fault's label.

Three faults change only the *temporal* structure of the six vibration channels: they add a
zero-mean signal of the same RMS, drawn from the same amplitude distribution, so per-window mean
and standard deviation cannot tell them apart:

- imbalance: a tone at 1x the rotation frequency (period ~12 readings), both bearing ends in
  phase;
- misalignment: a tone at 2x (period ~6 readings), the two ends in anti-phase;
- bearing_wear: impact bursts (a short decaying ring every ~9 readings, slightly irregular).

The other faults have the mean/variance signatures an engineer would expect (cavitation: suction
pressure drop, flow fluctuation and acoustic noise; overheating: temperatures ramping; sensor
drift: one of the field-prone sensors creeping 3-6 fleet spreads off; stuck sensor: one parked
flat at a NAMUR NE 43 fault level;
electrical fault: phase current imbalance with spikes and voltage sags).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from edge_lstm.errors import DataError

log = logging.getLogger(__name__)

FEATURE_NAMES: list[str] = [
    "vib_de_x",
    "vib_de_y",
    "vib_de_z",
    "vib_nde_x",
    "vib_nde_y",
    "vib_nde_z",
    "temp_bearing_de",
    "temp_bearing_nde",
    "temp_winding",
    "temp_oil",
    "temp_casing",
    "pressure_inlet",
    "pressure_outlet",
    "pressure_diff",
    "current_a",
    "current_b",
    "current_c",
    "voltage",
    "speed_rpm",
    "flow",
    "power_kw",
    "power_factor",
    "acoustic_db",
    "valve_position",
]

CLASS_NAMES: list[str] = [
    "normal",
    "bearing_wear",
    "imbalance",
    "misalignment",
    "cavitation",
    "overheating",
    "sensor_drift",
    "stuck_sensor",
    "electrical_fault",
]

# Faults told apart only by the time structure of the vibration channels.
TEMPORAL_CLASSES: list[str] = ["bearing_wear", "imbalance", "misalignment"]

START_TS = 1.7e9
_NOMINAL_RPM = 1480.0
_ROTATION_PERIOD_STEPS = 12.0  # 1x period at nominal speed, in readings
_BURST_PERIOD_STEPS = 9.0
_GAP_BETWEEN_RUNS_S = 3600.0

_F = {name: i for i, name in enumerate(FEATURE_NAMES)}
_VIB = np.arange(6)
_TEMPS = np.array([_F[n] for n in ("temp_bearing_de", "temp_bearing_nde", "temp_winding")])
_HEATING = np.array([*_TEMPS, _F["temp_oil"], _F["temp_casing"]])
_CURRENTS = np.array([_F["current_a"], _F["current_b"], _F["current_c"]])
# Field-prone sensors. Drift shows on channels that a physical identity ties to others (outlet
# = inlet + differential pressure, power = sqrt(3)·V·I·pf, valve position follows the load) and
# that no process fault moves alone; a stuck 4-20 mA transmitter parks at a fault level outside
# its live range (low, high).
_DRIFT_CHANNELS = np.array([_F[n] for n in ("pressure_outlet", "power_kw", "valve_position")])
_STUCK_RANGES = {
    _F["flow"]: (0.0, 200.0),
    _F["voltage"]: (360.0, 440.0),
    _F["pressure_inlet"]: (0.0, 4.0),
}
_STUCK_CHANNELS = np.array(list(_STUCK_RANGES))
# Phase of each vibration channel (x, y, z at drive end, then non-drive end) in cycles of the
# tone: radial x/y in quadrature; across the coupling the ends move in phase under imbalance
# and in anti-phase under misalignment.
_IMBALANCE_PHASE = np.array([0.0, 0.25, 0.1, 0.0, 0.25, 0.1])
_MISALIGNMENT_PHASE = np.array([0.0, 0.25, 0.1, 0.5, 0.75, 0.6])
# Per-channel white measurement noise (std, in the channel's unit); outlet pressure and flow
# also carry the pump's pulsation.
_NOISE = np.array(
    [0.15] * 6
    + [0.7, 0.7, 0.9, 0.6, 0.6]
    + [0.02, 0.15, 0.025]
    + [0.4, 0.4, 0.4, 1.2, 3.0, 8.0, 0.18, 0.004, 0.5, 0.7],
    dtype=np.float64,
)


def ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float) -> np.ndarray:
    """Unit-variance AR(1) noise [R, T] along time: slow wander of a process value."""
    eps = rng.standard_normal(shape) * np.sqrt(1.0 - rho**2)
    out = np.empty(shape)
    out[:, 0] = rng.standard_normal(shape[0])
    for t in range(1, shape[1]):
        out[:, t] = rho * out[:, t - 1] + eps[:, t]
    return out


def lagged(x: np.ndarray, tau: float) -> np.ndarray:
    """First-order lag [R, T] with time constant `tau` readings (thermal or control inertia)."""
    out = np.empty_like(x)
    out[:, 0] = x[:, 0]
    k = 1.0 / tau
    for t in range(1, x.shape[1]):
        out[:, t] = out[:, t - 1] + k * (x[:, t] - out[:, t - 1])
    return out


def setpoints(
    rng: np.random.Generator, shape: tuple[int, int], low: float, high: float, every: float
) -> np.ndarray:
    """Piecewise-constant operator setpoint [R, T] changing on average every `every` readings."""
    r, length = shape
    change = rng.random(shape) < 1.0 / every
    change[:, 0] = True
    last = np.maximum.accumulate(np.where(change, np.arange(length), 0), axis=1)
    return rng.uniform(low, high, shape)[np.arange(r)[:, None], last]


def _healthy(rng: np.random.Generator, n_runs: int, length: int) -> np.ndarray:
    """Healthy pump readings [R, T, F] driven by a changing load.

    Demand changes move the load and speed setpoints several times per run, so a run's
    operating point is not a constant fingerprint of that run.
    """
    r = n_runs
    shape = (r, length)
    load = np.clip(
        lagged(setpoints(rng, shape, 0.4, 1.0, every=150.0), 15.0) + 0.02 * ar1(rng, shape, 0.99),
        0.3,
        1.1,
    )
    speed = lagged(setpoints(rng, shape, 1400.0, 1560.0, every=200.0), 10.0)
    speed += 3.0 * ar1(rng, shape, 0.99)
    ambient = rng.uniform(18.0, 32.0, (r, 1)) + 1.0 * ar1(rng, shape, 0.998)
    heat = lagged(20.0 + 20.0 * load, 60.0)

    x = np.empty((r, length, len(FEATURE_NAMES)))
    x[:, :, _VIB] = rng.uniform(0.9, 1.1, (r, 1, 6)) * (0.6 + 0.9 * load[:, :, None])
    x[:, :, _F["temp_bearing_de"]] = ambient + heat * rng.uniform(0.95, 1.05, (r, 1))
    x[:, :, _F["temp_bearing_nde"]] = ambient + 0.85 * heat * rng.uniform(0.95, 1.05, (r, 1))
    x[:, :, _F["temp_winding"]] = ambient + 1.6 * heat * rng.uniform(0.95, 1.05, (r, 1))
    x[:, :, _F["temp_oil"]] = ambient + 0.7 * heat * rng.uniform(0.95, 1.05, (r, 1))
    x[:, :, _F["temp_casing"]] = ambient + 0.35 * heat
    inlet = rng.uniform(1.4, 1.8, (r, 1)) + 0.08 * ar1(rng, shape, 0.995) - 0.1 * load
    head = 4.0 * (speed / _NOMINAL_RPM) ** 2 * (1.15 - 0.3 * load**2)
    x[:, :, _F["pressure_inlet"]] = inlet
    x[:, :, _F["pressure_outlet"]] = inlet + head
    x[:, :, _F["pressure_diff"]] = head
    current = 18.0 + 22.0 * load
    x[:, :, _CURRENTS] = current[:, :, None] + rng.normal(0.0, 0.1, (r, 1, 3))
    x[:, :, _F["voltage"]] = 400.0 + 2.0 * ar1(rng, shape, 0.99)
    x[:, :, _F["speed_rpm"]] = speed
    x[:, :, _F["flow"]] = 120.0 * load * speed / _NOMINAL_RPM
    pf = 0.78 + 0.1 * load
    x[:, :, _F["power_factor"]] = pf
    x[:, :, _F["power_kw"]] = np.sqrt(3.0) * x[:, :, _F["voltage"]] * current * pf / 1000.0
    x[:, :, _F["acoustic_db"]] = 66.0 + 8.0 * load + rng.normal(0.0, 0.5, (r, 1))
    x[:, :, _F["valve_position"]] = 30.0 + 60.0 * load

    noise_scale = rng.uniform(0.8, 1.25, (r, 1, 1))
    x += rng.standard_normal(x.shape) * _NOISE * noise_scale
    return x


def _rotation_phase(rng: np.random.Generator, speed: np.ndarray) -> np.ndarray:
    """Shaft angle [R, T] in cycles of the 1x rotation frequency, following the speed."""
    cycles_per_step = speed / _NOMINAL_RPM / _ROTATION_PERIOD_STEPS
    return np.cumsum(cycles_per_step, axis=1) + rng.uniform(0.0, 1.0, (speed.shape[0], 1))


def _vibration_amplitude(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-run, per-channel RMS of the added vibration [n, 6]; one law for all temporal faults.

    The spread is kept narrow so that a 2x tone of a mild fault never looks like a 1x tone of a
    severe one to a model that reads step-to-step changes.
    """
    severity = rng.uniform(1.3, 1.6, (n, 1))
    return severity * rng.uniform(0.9, 1.1, (n, 6))


def _sinusoid(
    rng: np.random.Generator, speed: np.ndarray, order: int, channel_phase: np.ndarray
) -> np.ndarray:
    """Unit-RMS vibration at `order` times the rotation frequency [R, T, 6]."""
    phase = _rotation_phase(rng, speed)[:, :, None]
    return np.sqrt(2.0) * np.sin(2.0 * np.pi * (order * phase + channel_phase))


def _impacts(rng: np.random.Generator, speed: np.ndarray) -> np.ndarray:
    """Unit-RMS, zero-mean impact bursts [R, T, 6]: a short ring every ~9 readings."""
    r, length = speed.shape
    period = _BURST_PERIOD_STEPS * _NOMINAL_RPM / speed.mean(axis=1)
    start = rng.uniform(0.0, period)
    k_max = int(length / period.min()) + 2
    hits = np.rint(start[:, None] + period[:, None] * np.arange(k_max)).astype(int)
    hits += rng.integers(-1, 2, hits.shape)
    pulses = np.zeros((r, length))
    rows = np.repeat(np.arange(r), k_max)
    valid = (hits >= 0) & (hits < length)
    pulses[rows[valid.ravel()], hits[valid]] = 1.0
    ring = np.exp(-np.arange(4) / 0.9) * np.cos(np.pi * np.arange(4))
    signal = np.stack([np.convolve(p, ring)[:length] for p in pulses])
    signal -= signal.mean(axis=1, keepdims=True)
    signal /= signal.std(axis=1, keepdims=True)
    return np.repeat(signal[:, :, None], 6, axis=2)


def _apply_fault(
    rng: np.random.Generator,
    x: np.ndarray,
    fault: str,
    after: np.ndarray,
    spread: np.ndarray,
) -> None:
    """Adds `fault`'s signature in place to runs x [R, T, F]; `after` [R, T] marks post-onset.

    `spread` [F] is each channel's std over the healthy fleet: a drifting sensor settles 3-6 of
    these away from the true value within a few windows, still inside its live range.

    Longer than our usual function on purpose: one short branch per fault class, kept in one
    place so the signatures can be read and compared side by side.
    """
    r, length, _ = x.shape
    on = after.astype(float)
    elapsed = np.cumsum(after, axis=1).astype(float)  # readings since onset
    speed = x[:, :, _F["speed_rpm"]]
    if fault in TEMPORAL_CLASSES:
        if fault == "bearing_wear":
            wave = _impacts(rng, speed)
        elif fault == "imbalance":
            wave = _sinusoid(rng, speed, 1, _IMBALANCE_PHASE)
        else:
            wave = _sinusoid(rng, speed, 2, _MISALIGNMENT_PHASE)
        x[:, :, _VIB] += on[:, :, None] * wave * _vibration_amplitude(rng, r)[:, None, :]
    elif fault == "cavitation":
        sev = rng.uniform(0.8, 1.3, (r, 1))
        burst = np.abs(rng.standard_normal((r, length)))
        x[:, :, _F["pressure_inlet"]] -= on * sev * (0.35 + 0.08 * burst)
        x[:, :, _F["pressure_diff"]] -= on * sev * 0.25 * (1.0 + 0.6 * burst)
        x[:, :, _F["pressure_outlet"]] -= on * sev * 0.25 * (1.0 + 0.6 * burst)
        x[:, :, _F["flow"]] -= on * sev * (8.0 + 6.0 * rng.standard_normal((r, length)))
        x[:, :, _F["acoustic_db"]] += on * sev * (7.0 + 3.0 * burst)
        x[:, :, _VIB] += on[:, :, None] * 0.3 * rng.standard_normal((r, length, 6))
    elif fault == "overheating":
        rise = rng.uniform(30.0, 45.0, (r, 1))
        tau = rng.uniform(120.0, 250.0, (r, 1))
        ramp = rise * (1.0 - np.exp(-elapsed / tau))
        gains = np.array([1.0, 0.8, 1.3, 0.7, 0.4])
        x[:, :, _HEATING] += ramp[:, :, None] * gains
        x[:, :, _F["current_a"]] += 0.02 * ramp
        x[:, :, _F["power_factor"]] -= 0.0015 * ramp
    elif fault == "sensor_drift":
        channel = rng.choice(_DRIFT_CHANNELS, r)
        sign = rng.choice([-1.0, 1.0], (r, 1))
        offset = rng.uniform(3.0, 6.0, (r, 1)) * spread[channel][:, None]
        tau = rng.uniform(25.0, 60.0, (r, 1))
        x[np.arange(r), :, channel] += sign * offset * (1.0 - np.exp(-elapsed / tau))
    elif fault == "stuck_sensor":
        channel = rng.choice(_STUCK_CHANNELS, r)
        runs = np.arange(r)
        # NAMUR NE 43: a failed 4-20 mA loop parks below or above the live range, where the
        # channel then sits flat (no noise) until the transmitter is replaced.
        low, high = np.array([_STUCK_RANGES[c] for c in channel]).T
        span = high - low
        rail = np.where(rng.random(r) < 0.5, low - 0.06 * span, high + 0.06 * span)
        x[runs, :, channel] = np.where(after, rail[:, None], x[runs, :, channel])
    elif fault == "electrical_fault":
        sev = rng.uniform(0.8, 1.3, (r, 1))
        phases = np.stack([rng.permutation(3) for _ in range(r)])
        imbalance = np.array([0.14, -0.09, -0.05])[phases] * sev
        spikes = (rng.random((r, length)) < 0.08) * rng.uniform(4.0, 10.0, (r, length))
        current = x[:, :, _CURRENTS]
        x[:, :, _CURRENTS] = current * (1.0 + on[:, :, None] * imbalance[:, None, :])
        x[:, :, _CURRENTS] += (on * spikes)[:, :, None] * rng.uniform(0.5, 1.0, (r, 1, 3))
        x[:, :, _F["voltage"]] -= on * (spikes * 2.5 + 3.0 * sev)
        x[:, :, _F["power_factor"]] -= on * 0.04 * sev
        x[:, :, _F["temp_winding"]] += on * 2.0 * sev
    else:
        raise ValueError(f"unknown fault class {fault!r}")


def generate(
    seed: int = 0,
    runs_per_class: int = 20,
    run_length: int = 600,
    sample_period_s: float = 0.1,
) -> pd.DataFrame:
    """Long-format readings: run_id, ts, the 24 FEATURE_NAMES, label; deterministic per seed."""
    if runs_per_class < 1:
        raise DataError(f"runs_per_class must be at least 1, got {runs_per_class}")
    if run_length < 20:
        raise DataError(f"run_length must be at least 20 readings, got {run_length}")
    if sample_period_s <= 0:
        raise DataError(f"sample_period_s must be positive, got {sample_period_s}")
    rng = np.random.default_rng(seed)
    n_classes = len(CLASS_NAMES)
    n_runs = n_classes * runs_per_class
    run_class = rng.permutation(np.repeat(np.arange(n_classes), runs_per_class))

    x = _healthy(rng, n_runs, run_length)
    onset = rng.integers(int(0.05 * run_length), int(0.15 * run_length) + 1, n_runs)
    after = np.arange(run_length)[None, :] >= onset[:, None]
    spread = x.reshape(-1, x.shape[-1]).std(axis=0)
    labels = np.full((n_runs, run_length), 0, dtype=np.int64)
    for c, name in enumerate(CLASS_NAMES[1:], start=1):
        idx = np.flatnonzero(run_class == c)
        fault_x = x[idx]
        _apply_fault(rng, fault_x, name, after[idx], spread)
        x[idx] = fault_x
        labels[idx] = np.where(after[idx], c, 0)

    run_span = run_length * sample_period_s + _GAP_BETWEEN_RUNS_S
    ts = START_TS + np.arange(n_runs)[:, None] * run_span
    ts = ts + np.arange(run_length)[None, :] * sample_period_s
    frame = pd.DataFrame(
        x.reshape(-1, len(FEATURE_NAMES)).astype(np.float32), columns=FEATURE_NAMES
    )
    frame.insert(0, "ts", np.round(ts.ravel(), 3))
    frame.insert(0, "run_id", np.repeat([f"run-{i:04d}" for i in range(n_runs)], run_length))
    frame["label"] = np.asarray(CLASS_NAMES, dtype=object)[labels.ravel()]
    return frame


def write_frame(path: str | Path, make_frame: Callable[[], pd.DataFrame]) -> Path:
    """Writes `make_frame()` as CSV or Parquet, chosen by the suffix; the one writer of every
    built-in scenario. The suffix is checked before generating, so a typo costs nothing."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(f"{path}: unsupported suffix {path.suffix!r}; use .csv or .parquet")
    start = time.perf_counter()
    frame = make_frame()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    log.info("simulated %d rows in %.2f s -> %s", len(frame), time.perf_counter() - start, path)
    return path


def write_dataset(
    path: str | Path, seed: int = 0, runs_per_class: int = 20, run_length: int = 600
) -> Path:
    """Generates a pump dataset and writes it as CSV or Parquet, chosen by the file suffix."""
    return write_frame(
        path, lambda: generate(seed=seed, runs_per_class=runs_per_class, run_length=run_length)
    )
