"""Built-in closed-loop process-plant data: a fleet of jacketed exothermic reactors.

Why this scenario exists: the pump data's faults are loud (many times the noise, on many
channels), so every model scores ~0.99 on it and it cannot tell a good model from a bad one.
Real process faults are quieter because control loops hide them: a loop holds its measured
variable on setpoint and the fault moves only the manipulated variable, by an amount that
normal operation (load changes, weather, feed quality) moves it too.

The plant (one per device): a continuous stirred-tank reactor, feed in, product out, cooled by
a water jacket, sampled once a minute (timestamps in unix seconds); a run is 12 h by default.
Three PI loops act on *measured* values, calibration errors included:

- FIC feed flow -> feed valve (the production rate, a logged operator setpoint), fed from a
  pump header whose pressure wanders;
- LIC level -> outlet valve (its setpoint is not logged, as in many historians);
- TIC reactor temperature (thermocouple A in a thermowell) -> coolant valve, setpoint logged.

Every device has its own volume, valve and heat-transfer coefficients, level and temperature
operating point, controller tuning, coolant supply temperature, and on every transmitter its
own offset, gain and noise level; a device has `runs_per_device` runs (default 2), so a split by
`device_id` tests on plants never seen in training. Operating-point changes that are not
faults: feed-rate and temperature setpoint steps (typed as round numbers), weather (ambient
and coolant supply temperature, with a daily cycle), feed temperature, feed quality and header
pressure wander. The product analyzer reports every 10 minutes (sample and hold). The DCS
logs one computed channel, temp_deviation: the 5-min average of thermocouples A − B.

Labels: a fault run starts healthy; the fault begins at an onset between 10 % and 40 % of the
run and every later row carries its label. That includes the off-episodes of the intermittent
fault: the label says what the plant *is* (a flowmeter with a blocking impulse line), not
whether the symptom shows this minute. Each fault comes at three magnitudes (`MAGNITUDES`,
each x0.85-1.15); incipient faults grow from zero over 20-60 min, then hold (fouling keeps
growing), so the first windows after an onset barely differ from normal.

The classes, what makes each hard and what tells it apart:

- normal: moves a lot on its own (setpoint steps, weather, feed quality, header pressure).
- setpoint_drift: the unlogged level setpoint creeps 3-10 %/h up to ±20 %; the LIC follows,
  so the level moves within a device-to-device spread of ±4 % and the outlet valve barely.
  Told apart by a level trend that no feed change explains.
- valve_stiction: the feed valve sticks until the FIC output leaves a deadband of 3-10 %,
  then slips past it; the flow loop falls into a stick-slip cycle. Told apart by the sawtooth
  FIC output against a square-wave flow that leaves its setpoint; shares the feed valve's
  jumps with intermittent_sensor.
- hx_fouling: the jacket's heat transfer falls 35-65 % along a ramp; the TIC opens the coolant
  valve, so the temperature stays on setpoint. Looks like a load increase; told apart by more
  coolant flow at unchanged feed, a smaller coolant temperature rise, a higher jacket dp.
- sensor_bias: thermocouple A (the TIC's) gains a bias growing from zero to 1.5-5 °C; the
  loop keeps A on setpoint, so the true temperature moves the other way. Told apart by
  temp_deviation moving, against per-device offsets of A and B (~0.1 °C each), and by B, the
  outlet temperature and the pressure leaving the setpoint.
- intermittent_sensor: the feed flowmeter reads 12-30 % low in episodes (~15 min on, ~25
  min off); the FIC then feeds that much more. The measured flow stays on setpoint; the feed
  valve, outlet flow and coolant duty step up and down with the episodes.
- leak: 15-35 % of the nominal feed leaves the reactor before the outlet flowmeter; the LIC
  closes the outlet valve. Only the mass balance (outlet vs feed flow) shows it, against
  per-device flowmeter gains (±2 %) and the feed-rate steps.
- pump_wear: the coolant pump loses 20-50 % of its head along a ramp; the TIC opens the valve.
  Looks like fouling; told apart by falling coolant pressure and pump current and less flow
  per valve opening.
- loop_mistuning: the TIC was retuned 2.5-4x too aggressive; it amplifies measurement noise
  into the coolant valve and rings (bursts of oscillation, at worst saturation) after
  setpoint steps and disturbances; quiet stretches look normal.
- stuck_sensor: one of three temperature transmitters that no loop uses (B, outlet, coolant
  return) freezes at its reading at the onset, inside its live range, with 5-30 % of its
  input noise left. Told apart by a window std below the noise floor; hard with few runs,
  since the channel stuck in a test run may never have been stuck in training.
- feed_composition: the feed turns 10-22 % richer or leaner (a new raw-material batch); the
  TIC moves the coolant valve as a feed-rate change would. Told apart by the product analyzer
  and coolant duty moving while the feed rate holds.

How hard (seed 0, defaults: 132 runs of 720 readings on 66 devices, generated in ~0.6 s),
for the window-statistics gradient boosting of edge_lstm.baselines (per-channel and channel-
pair statistics into HistGradientBoosting), which the issue measured at 0.98-0.99 on the pump
data. 60-reading windows at stride 10, 3-fold GroupKFold by device (test devices never seen
in training), pooled: macro-F1 0.72 (accuracy 0.72); per class normal 0.69, setpoint_drift
0.84, valve_stiction 0.46, hx_fouling 0.55, sensor_bias 0.84, intermittent_sensor 0.75, leak
0.73, pump_wear 0.85, loop_mistuning 0.73, stuck_sensor 0.67, feed_composition 0.83; most
errors call a fault normal. Through configs/process.yaml (120-reading windows, 60/20/20 of the
devices, training windows every 5 readings): 0.72 on the 28 runs of 14 unseen test devices,
against 0.75 ± 0.02 for the distilled GRU student with running window statistics and
0.746 ± 0.014 for the teacher (3 seeds each; README, "Measured"). Learnable further: the same
baseline on windows minus the mean of the run's own first (healthy) hour, i.e. given a memory
of the device, reaches 0.88 pooled (every class but valve_stiction 0.60 and stuck_sensor 0.77
above 0.83). What window statistics lack is the device's own baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from edge_lstm.errors import DataError
from edge_lstm.simulate import START_TS, ar1, lagged, setpoints

SAMPLE_PERIOD_S = 60.0
RUNS_PER_CLASS = 12
RUN_LENGTH = 720
RUNS_PER_DEVICE = 2
_WARMUP = 300  # readings simulated and dropped so the loops start settled
_H = SAMPLE_PERIOD_S / 3600.0  # hours per reading
_GAP_BETWEEN_RUNS_S = 6 * 3600.0
_ANALYZER_EVERY = 10  # readings between two product analyses
_MAX_DRIFT = 20.0  # % of level: where an operator would notice a drifting setpoint

# name: (noise std, per-device offset std, per-device gain std); controller outputs and
# setpoints are exact numbers of the control system (no noise, no calibration).
SENSORS: dict[str, tuple[float, float, float]] = {
    "feed_flow": (0.08, 0.025, 0.02),
    "feed_flow_sp": (0.0, 0.0, 0.0),
    "feed_valve": (0.0, 0.0, 0.0),
    "feed_temp": (0.2, 0.25, 0.0),
    "feed_pressure": (0.03, 0.025, 0.01),
    "level": (0.3, 0.5, 0.01),
    "outlet_valve": (0.0, 0.0, 0.0),
    "outlet_flow": (0.1, 0.025, 0.02),
    "reactor_temp": (0.1, 0.1, 0.0),
    "reactor_temp_sp": (0.0, 0.0, 0.0),
    "reactor_temp_b": (0.12, 0.1, 0.0),
    "temp_deviation": (0.0, 0.0, 0.0),  # the DCS's A − B monitor, computed from the readings
    "outlet_temp": (0.15, 0.25, 0.0),
    "reactor_pressure": (0.01, 0.015, 0.01),
    "coolant_valve": (0.0, 0.0, 0.0),
    "coolant_flow": (0.3, 0.15, 0.02),
    "coolant_supply_temp": (0.1, 0.15, 0.0),
    "coolant_return_temp": (0.15, 0.15, 0.0),
    "coolant_pressure": (0.03, 0.025, 0.01),
    "coolant_pump_current": (0.2, 0.15, 0.02),
    "jacket_dp": (0.01, 0.01, 0.02),
    "agitator_power": (0.2, 0.15, 0.02),
    "product_conc": (0.3, 0.25, 0.0),
    "ambient_temp": (0.2, 0.25, 0.0),
}
FEATURE_NAMES: list[str] = list(SENSORS)

CLASS_NAMES: list[str] = [
    "normal",
    "setpoint_drift",
    "valve_stiction",
    "hx_fouling",
    "sensor_bias",
    "intermittent_sensor",
    "leak",
    "pump_wear",
    "loop_mistuning",
    "stuck_sensor",
    "feed_composition",
]

# Three magnitudes per fault (see the module docstring for the units).
MAGNITUDES: dict[str, tuple[float, float, float]] = {
    "setpoint_drift": (3.0, 6.0, 10.0),  # %/h of level setpoint, at most ±_MAX_DRIFT
    "valve_stiction": (3.0, 6.0, 10.0),  # % deadband of the feed valve
    "hx_fouling": (0.35, 0.5, 0.65),  # fraction of heat transfer lost
    "sensor_bias": (1.5, 3.0, 5.0),  # °C on thermocouple A
    "intermittent_sensor": (0.12, 0.2, 0.3),  # fraction the feed flowmeter reads low
    "leak": (0.15, 0.25, 0.35),  # fraction of the nominal feed
    "pump_wear": (0.2, 0.35, 0.5),  # fraction of coolant pump head lost
    "loop_mistuning": (2.5, 3.2, 4.0),  # TIC gain factor
    "stuck_sensor": (0.3, 0.15, 0.05),  # residual input noise of the frozen channel
    "feed_composition": (0.1, 0.15, 0.22),  # fraction richer or leaner feed
}
_C = {name: i for i, name in enumerate(FEATURE_NAMES)}
# temperature transmitters no loop reads: one that freezes leaves the plant running
_STUCK_CHANNELS = np.array(
    [_C[n] for n in ("reactor_temp_b", "outlet_temp", "coolant_return_temp")]
)


@dataclass
class _Plant:
    """Per-run copies of its device's constants [R] (shape [R, F] for the sensor arrays)."""

    volume: np.ndarray  # m3 at 100 % level
    feed_nominal: np.ndarray  # m3/h
    feed_gain: np.ndarray  # m3/h per % of feed valve
    outlet_gain: np.ndarray  # m3/h per % of outlet valve at 50 % level
    coolant_gain: np.ndarray  # m3/h per % of coolant valve at full pump head
    level_sp: np.ndarray  # %
    temp_base: np.ndarray  # °C, the device's usual temperature setpoint
    ua: np.ndarray  # jacket heat transfer at 30 m3/h coolant, m3/h-equivalent
    head: np.ndarray  # bar, coolant pump head
    adiabatic_rise: np.ndarray  # °C per m3 of feed fully converted
    coolant_base: np.ndarray  # °C, coolant supply temperature on a 15 °C day
    tic_gain: np.ndarray  # % per °C
    tic_reset: np.ndarray  # readings
    lic_gain: np.ndarray  # % per %
    lic_reset: np.ndarray  # readings
    well_lag: np.ndarray  # readings, thermowell of thermocouple A
    sensor_gain: np.ndarray  # [R, F]
    sensor_offset: np.ndarray  # [R, F]
    sensor_noise: np.ndarray  # [R, F] noise std


@dataclass
class _Faults:
    """What each run's fault does at each reading; zero (or one) where it has none."""

    after: np.ndarray  # bool [R, N]: at or after the onset
    level_drift: np.ndarray  # [R, N] % added to the level setpoint
    deadband: np.ndarray  # [R, N] % feed valve stiction
    fouling: np.ndarray  # [R, N] fraction of heat transfer lost
    bias: np.ndarray  # [R, N] °C on thermocouple A
    flow_error: np.ndarray  # [R, N] fraction the feed flowmeter reads low
    leak: np.ndarray  # [R, N] m3/h
    wear: np.ndarray  # [R, N] fraction of pump head lost
    tic_factor: np.ndarray  # [R, N] gain multiplier of the TIC
    richness: np.ndarray  # [R, N] fractional feed concentration change
    stuck_channel: np.ndarray  # [R] channel index or -1
    stuck_noise: np.ndarray  # [R] residual noise fraction


def _per_device(rng: np.random.Generator, device: np.ndarray, n_devices: int) -> _Plant:
    """Draws every device's constants once and copies them to each of its runs."""
    n_features = len(FEATURE_NAMES)
    noise, offset_sd, gain_sd = (np.array(col) for col in zip(*SENSORS.values(), strict=True))

    def draw(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, n_devices)[device]

    return _Plant(
        volume=draw(36.0, 44.0),
        feed_nominal=draw(9.0, 11.0),
        feed_gain=draw(0.17, 0.23),
        outlet_gain=draw(0.19, 0.21),
        coolant_gain=draw(0.65, 0.85),
        level_sp=draw(48.0, 55.0),
        temp_base=np.round(draw(79.0, 81.0)),
        ua=draw(11.0, 15.0),
        head=draw(3.5, 4.5),
        adiabatic_rise=draw(140.0, 160.0),
        coolant_base=draw(16.0, 24.0),
        tic_gain=draw(3.0, 5.0),
        tic_reset=draw(25.0, 40.0),
        lic_gain=draw(4.0, 6.0),
        lic_reset=draw(50.0, 80.0),
        well_lag=draw(2.0, 4.0),
        sensor_gain=1.0 + rng.standard_normal((n_devices, n_features))[device] * gain_sd,
        sensor_offset=rng.standard_normal((n_devices, n_features))[device] * offset_sd,
        sensor_noise=rng.uniform(0.7, 1.4, (n_devices, n_features))[device] * noise,
    )


def _magnitude(rng: np.random.Generator, fault: str, n: int) -> np.ndarray:
    """One of the fault's three magnitudes per run, each scattered by ±15 %."""
    levels = np.asarray(MAGNITUDES[fault])[rng.integers(0, 3, n)]
    return levels * rng.uniform(0.85, 1.15, n)


def _episodes(rng: np.random.Generator, after: np.ndarray) -> np.ndarray:
    """Intermittent on/off mask [R, N]: on from the onset, ~15 readings on, ~25 off."""
    on = np.zeros(after.shape, dtype=bool)
    state = np.zeros(after.shape[0], dtype=bool)
    flips = rng.random(after.shape)
    for t in range(after.shape[1]):
        started = after[:, t] & ~after[:, t - 1] if t else after[:, t]
        state = started | np.where(state, flips[:, t] >= 1 / 15, flips[:, t] < 1 / 25)
        on[:, t] = state & after[:, t]
    return on


def _plan_faults(
    rng: np.random.Generator, run_class: np.ndarray, onset: np.ndarray, n: int
) -> _Faults:
    """Each fault run's fault, magnitude and time course over n readings (warm-up included)."""
    r = len(run_class)
    t = np.arange(n)[None, :]
    after = t >= onset[:, None]
    elapsed = np.maximum(t - onset[:, None], 0).astype(float)
    ramp = np.minimum(elapsed / rng.uniform(20.0, 60.0, (r, 1)), 1.0)
    zeros = np.zeros((r, n))
    f = _Faults(
        after=after,
        level_drift=zeros.copy(),
        deadband=zeros.copy(),
        fouling=zeros.copy(),
        bias=zeros.copy(),
        flow_error=zeros.copy(),
        leak=zeros.copy(),
        wear=zeros.copy(),
        tic_factor=np.ones((r, n)),
        richness=zeros.copy(),
        stuck_channel=np.full(r, -1),
        stuck_noise=np.ones(r),
    )
    sign = rng.choice([-1.0, 1.0], r)[:, None]
    for c, name in enumerate(CLASS_NAMES[1:], start=1):
        idx = np.flatnonzero(run_class == c)
        m = _magnitude(rng, name, len(idx))[:, None]
        if name == "setpoint_drift":
            f.level_drift[idx] = sign[idx] * np.minimum(m * _H * elapsed[idx], _MAX_DRIFT)
        elif name == "valve_stiction":
            f.deadband[idx] = m * ramp[idx]
        elif name == "hx_fouling":
            f.fouling[idx] = m * (0.5 * ramp[idx] + 0.5 * elapsed[idx] / n)
        elif name == "sensor_bias":
            f.bias[idx] = sign[idx] * m * ramp[idx]
        elif name == "intermittent_sensor":
            f.flow_error[idx] = m * _episodes(rng, after[idx])
        elif name == "leak":
            f.leak[idx] = m * after[idx]  # times the nominal feed, applied in _simulate
        elif name == "pump_wear":
            f.wear[idx] = m * ramp[idx]
        elif name == "loop_mistuning":
            f.tic_factor[idx] = np.where(after[idx], m, 1.0)
        elif name == "stuck_sensor":
            f.stuck_channel[idx] = rng.choice(_STUCK_CHANNELS, len(idx))
            f.stuck_noise[idx] = m[:, 0]
        elif name == "feed_composition":
            f.richness[idx] = sign[idx] * m * after[idx]
        else:
            raise ValueError(f"no fault plan for class {name!r}")
    return f


def _pi(
    error: np.ndarray, integral: np.ndarray, gain: np.ndarray, reset: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One PI step in % output with clamping anti-windup (the integral stops at 0 and 100 %)."""
    trial = integral + error
    out = gain * (error + trial / reset)
    clamped = (out < 0.0) | (out > 100.0)
    return np.clip(out, 0.0, 100.0), np.where(clamped, integral, trial)


def _read(p: _Plant, channel: str, true: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """A transmitter's reading of `true` ([R] or [R, N]) with the device's calibration."""
    c = _C[channel]
    if true.ndim == 2:
        return (
            p.sensor_gain[:, c, None] * true
            + p.sensor_offset[:, c, None]
            + p.sensor_noise[:, c, None] * eps[:, :, c]
        )
    return p.sensor_gain[:, c] * true + p.sensor_offset[:, c] + p.sensor_noise[:, c] * eps[:, c]


def _held_through_warmup(schedule: np.ndarray) -> np.ndarray:
    """An operator schedule [R, N] whose warm-up readings hold its first recorded value."""
    first = schedule[:, _WARMUP : _WARMUP + 1]
    return np.concatenate([np.repeat(first, _WARMUP, axis=1), schedule[:, _WARMUP:]], axis=1)


def _simulate(rng: np.random.Generator, p: _Plant, f: _Faults, n: int) -> dict[str, np.ndarray]:
    """Steps every plant through n readings at once; returns each sensor's readings [R, N].

    Longer than our usual function on purpose: one step of a coupled plant reads best as its
    balance equations in one place (feed, level, heat, coolant, then the three controllers).
    """
    r = len(p.volume)
    shape = (r, n)
    eps = rng.standard_normal((r, n, len(FEATURE_NAMES)))
    # operator setpoints, held through the warm-up, typed as round numbers
    feed_sp = np.round(p.feed_nominal[:, None] * setpoints(rng, shape, 0.9, 1.1, 400.0), 1)
    temp_sp = p.temp_base[:, None] + np.round(2 * setpoints(rng, shape, -1.5, 1.5, 500.0)) / 2
    feed_sp, temp_sp = _held_through_warmup(feed_sp), _held_through_warmup(temp_sp)
    day = np.sin(2 * np.pi * (np.arange(n) * _H / 24.0 + rng.uniform(0, 1, (r, 1))))
    ambient = rng.uniform(5.0, 30.0, (r, 1)) + 4.0 * day + 1.0 * ar1(rng, shape, 0.995)
    coolant_in = p.coolant_base[:, None] + 0.3 * (ambient - 15.0) + 0.4 * ar1(rng, shape, 0.995)
    header = 6.0 + 0.15 * ar1(rng, shape, 0.98)  # bar, feed pump header: moves the FIC
    feed_temp = 20.0 + 0.5 * (ambient - 20.0) + 0.5 * ar1(rng, shape, 0.99)
    richness = 1.0 + 0.01 * ar1(rng, shape, 0.995) + f.richness
    level_sp = p.level_sp[:, None] + f.level_drift
    head = p.head[:, None] * (1.0 - f.wear)
    leak = f.leak * p.feed_nominal[:, None]

    feed = feed_sp[:, 0].copy()
    level = p.level_sp.copy()
    temp = temp_sp[:, 0].copy()
    well = temp.copy()
    coolant_valve = np.full(r, 50.0)
    feed_pos = feed / p.feed_gain
    i_feed = feed / p.feed_gain * 2.0  # FIC: gain 1 %/(m3/h), reset 2 readings
    i_level = (feed / p.outlet_gain) * p.lic_reset / p.lic_gain
    i_temp = 50.0 * p.tic_reset / p.tic_gain
    rec: dict[str, np.ndarray] = {}
    for t in range(n):
        # feed: the FIC acts on the flowmeter, whose impulse line may be blocked
        feed_meas = _read(p, "feed_flow", feed * (1.0 - f.flow_error[:, t]), eps[:, t])
        feed_valve, i_feed = _pi(feed_sp[:, t] - feed_meas, i_feed, 1.0, 2.0)
        # the stem sticks until the command leaves the deadband, then slips past it by half
        # the deadband (the jump that keeps a PI loop cycling instead of coming to rest)
        gap = feed_valve - feed_pos
        moves = np.abs(gap) > f.deadband[:, t]
        feed_pos = np.where(moves, feed_valve + 0.5 * np.sign(gap) * f.deadband[:, t], feed_pos)
        feed += 0.5 * (p.feed_gain * feed_pos * np.sqrt(header[:, t] / 6.0) - feed)
        # level: the LIC opens the outlet valve when the measured level is above setpoint
        level_meas = _read(p, "level", level, eps[:, t])
        outlet_valve, i_level = _pi(level_meas - level_sp[:, t], i_level, p.lic_gain, p.lic_reset)
        outflow = p.outlet_gain * outlet_valve * np.sqrt(np.maximum(level, 1.0) / 50.0)
        holdup = p.volume * np.maximum(level, 1.0) / 100.0
        level = level + (feed - outflow - leak[:, t]) * 100.0 / p.volume * _H
        # heat: reaction, feed sensible heat, jacket (effectiveness-NTU)
        rate = 2.0 * np.exp(0.04 * (temp - 80.0)) * holdup / np.maximum(feed, 0.5)
        conversion = rate / (1.0 + rate)
        coolant_flow = p.coolant_gain * coolant_valve * np.sqrt(head[:, t] / p.head)
        flow_ok = np.maximum(coolant_flow, 0.1)
        ua = p.ua * (1.0 - f.fouling[:, t]) * (flow_ok / 30.0) ** 0.6
        duty = flow_ok * (1.0 - np.exp(-ua / flow_ok)) * (temp - coolant_in[:, t])
        heat = feed * p.adiabatic_rise * richness[:, t] * conversion
        heat += feed * (feed_temp[:, t] - temp) - duty
        temp = temp + heat / holdup * _H
        # TIC: thermocouple A in its thermowell, opening the coolant valve when too hot
        well += (temp - well) / p.well_lag
        temp_meas = _read(p, "reactor_temp", well + f.bias[:, t], eps[:, t])
        gain = p.tic_gain * f.tic_factor[:, t]
        reset = p.tic_reset / np.sqrt(f.tic_factor[:, t])
        coolant_valve, i_temp = _pi(temp_meas - temp_sp[:, t], i_temp, gain, reset)
        step = {
            "feed": feed,
            "feed_meas": feed_meas,
            "feed_valve": feed_valve,
            "level_meas": level_meas,
            "outlet_valve": outlet_valve,
            "outflow": outflow,
            "level": level,
            "temp": temp,
            "temp_meas": temp_meas,
            "coolant_valve": coolant_valve,
            "coolant_flow": coolant_flow,
            "return": coolant_in[:, t] + duty / flow_ok,
            "conversion": conversion,
        }
        for name, value in step.items():
            rec.setdefault(name, np.empty(shape))[:, t] = value
    temp_true = rec["temp"]
    level_true = rec["level"]
    coolant = rec["coolant_flow"]
    load = (coolant / 30.0) ** 2
    analyses = (np.arange(n) // _ANALYZER_EVERY) * _ANALYZER_EVERY
    product = _read(p, "product_conc", 100.0 * richness * rec["conversion"], eps)
    return {
        "feed_flow": rec["feed_meas"],
        "feed_flow_sp": feed_sp,
        "feed_valve": rec["feed_valve"],
        "feed_temp": _read(p, "feed_temp", feed_temp, eps),
        "feed_pressure": _read(p, "feed_pressure", header - 0.012 * rec["feed"] ** 2, eps),
        "level": rec["level_meas"],
        "outlet_valve": rec["outlet_valve"],
        "outlet_flow": _read(p, "outlet_flow", rec["outflow"], eps),
        "reactor_temp": rec["temp_meas"],
        "reactor_temp_sp": temp_sp,
        "reactor_temp_b": _read(p, "reactor_temp_b", lagged(temp_true, 3.0), eps),
        "temp_deviation": np.zeros(shape),  # filled from the readings after _freeze
        "outlet_temp": _read(p, "outlet_temp", lagged(temp_true, 6.0) - 1.5, eps),
        "reactor_pressure": _read(
            p,
            "reactor_pressure",
            1.8 * np.exp(0.035 * (temp_true - 80.0)) + 0.004 * (level_true - 50.0),
            eps,
        ),
        "coolant_valve": rec["coolant_valve"],
        "coolant_flow": _read(p, "coolant_flow", coolant, eps),
        "coolant_supply_temp": _read(p, "coolant_supply_temp", coolant_in, eps),
        "coolant_return_temp": _read(p, "coolant_return_temp", rec["return"], eps),
        "coolant_pressure": _read(p, "coolant_pressure", head - 0.4 * load, eps),
        "coolant_pump_current": _read(
            p, "coolant_pump_current", 18.0 + 9.0 * np.sqrt(load) * head / p.head[:, None], eps
        ),
        "jacket_dp": _read(p, "jacket_dp", 0.6 * load * (1.0 + f.fouling), eps),
        "agitator_power": _read(
            p, "agitator_power", 12.0 * level_true / 50.0 * (1.0 + 0.25 * rec["conversion"]), eps
        ),
        "product_conc": product[:, analyses],
        "ambient_temp": _read(p, "ambient_temp", ambient, eps),
    }


def _freeze(rng: np.random.Generator, x: np.ndarray, p: _Plant, f: _Faults) -> None:
    """Stuck transmitters in place on x [R, N, F]: the reading at the onset, less noise."""
    for run in np.flatnonzero(f.stuck_channel >= 0):
        c = f.stuck_channel[run]
        after = f.after[run]
        frozen = x[run, np.argmax(after), c]
        noise = f.stuck_noise[run] * p.sensor_noise[run, c] * rng.standard_normal(after.sum())
        x[run, after, c] = frozen + noise


def generate(
    seed: int = 0,
    runs_per_class: int = RUNS_PER_CLASS,
    run_length: int = RUN_LENGTH,
    runs_per_device: int = RUNS_PER_DEVICE,
) -> pd.DataFrame:
    """Long-format readings: run_id, device_id, ts, the FEATURE_NAMES, label; deterministic
    per seed. Runs are shuffled over devices, `runs_per_device` each (the last may have fewer)."""
    if runs_per_class < 1:
        raise DataError(f"runs_per_class must be at least 1, got {runs_per_class}")
    if run_length < 60:
        raise DataError(
            f"run_length must be at least 60 readings (an hour at one a minute), got {run_length}"
        )
    if runs_per_device < 1:
        raise DataError(f"runs_per_device must be at least 1, got {runs_per_device}")
    rng = np.random.default_rng(seed)
    n_classes = len(CLASS_NAMES)
    n_runs = n_classes * runs_per_class
    run_class = rng.permutation(np.repeat(np.arange(n_classes), runs_per_class))
    device = rng.permutation(n_runs) // runs_per_device
    n_devices = int(device.max()) + 1
    plant = _per_device(rng, device, n_devices)
    onset = rng.integers(int(0.1 * run_length), int(0.4 * run_length) + 1, n_runs)
    n = _WARMUP + run_length
    faults = _plan_faults(rng, run_class, onset + _WARMUP, n)
    readings = _simulate(rng, plant, faults, n)
    x = np.stack([readings[name] for name in FEATURE_NAMES], axis=2)
    _freeze(rng, x, plant, faults)
    x[:, :, _C["temp_deviation"]] = lagged(
        x[:, :, _C["reactor_temp"]] - x[:, :, _C["reactor_temp_b"]], 5.0
    )
    x = x[:, _WARMUP:]
    after = faults.after[:, _WARMUP:]
    labels = np.where(after, run_class[:, None], 0)

    run_span = run_length * SAMPLE_PERIOD_S + _GAP_BETWEEN_RUNS_S
    ts = START_TS + np.arange(n_runs)[:, None] * run_span
    ts = ts + np.arange(run_length)[None, :] * SAMPLE_PERIOD_S
    frame = pd.DataFrame(
        x.reshape(-1, len(FEATURE_NAMES)).astype(np.float32), columns=FEATURE_NAMES
    )
    frame.insert(0, "ts", ts.ravel())
    frame.insert(0, "device_id", np.repeat([f"device-{d:03d}" for d in device], run_length))
    frame.insert(0, "run_id", np.repeat([f"run-{i:04d}" for i in range(n_runs)], run_length))
    frame["label"] = np.asarray(CLASS_NAMES, dtype=object)[labels.ravel()]
    return frame
