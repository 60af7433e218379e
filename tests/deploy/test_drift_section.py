"""The demo's drifting device and report section 4b."""

from __future__ import annotations

import numpy as np

from edge_lstm.reporting.demo_live import drifting_copy
from edge_lstm.reporting.drift_section import DriftSeen, drift_section
from runtime.replay import Run


def test_the_drifting_copy_ramps_one_feature_and_keeps_the_others() -> None:
    run = Run("run-1", np.arange(10.0), np.zeros((10, 3), np.float32), ["normal"] * 10)
    copy = drifting_copy(run, feature=1, offset=4.0, ramp_share=0.5)
    assert copy.run_id == "drift-run-1" and copy.labels == run.labels
    np.testing.assert_allclose(copy.values[:, 1], [0, 0.8, 1.6, 2.4, 3.2, 4, 4, 4, 4, 4])
    assert not copy.values[:, [0, 2]].any() and not run.values.any()  # the original is kept


def _event(device: str, value: float, at: float) -> dict:
    return {
        "event": "raised",
        "device_id": device,
        "feature": "temp",
        "value": value,
        "psi": {"temp": 7.5},
        "published_at": at,
        "alert_id": f"id-{device}",
    }


def test_the_section_says_whether_the_drifting_device_raised_and_who_else_did() -> None:
    drifting = {"device_id": "drift-r0", "run_id": "r0", "feature": "temp", "sigmas": 6.0}
    summary = {"top": [], "drifting": 2, "judged": 3, "confidence": {"psi": 0.1}, "classes": None}
    seen = DriftSeen.split(
        [_event("drift-r0", 4.6, 108.0), _event("r1", 5.5, 107.0), summary, {"event": "x"}]
    )
    classes = {"r0": "normal", "r1": "stuck_sensor", "r2": "normal"}
    text = "\n".join(drift_section(drifting, seen, 100.0, classes))
    assert "raised a drift event on `temp` (mean shift 4.6 training spreads) 8.0 s after" in text
    assert "drift event: 1 (`r1` (stuck_sensor)), of which 0 on a normal run" in text
    assert "| r1 | stuck_sensor | raised | 7.0 | temp | 5.5 | 7.50 | id-r1 |" in text
    assert "2 of 3 judged devices drifting" in text
    quiet = "\n".join(drift_section(drifting, DriftSeen([], [summary]), 100.0, classes))
    assert "raised **no** drift event" in quiet
    assert drift_section(None, DriftSeen([], []), 0.0, {}) == []


def test_the_section_gives_sensor_time_and_the_data_s_own_normal_class() -> None:
    from edge_lstm.reporting.sensor_time import MINUTES, SECONDS

    drifting = {"device_id": "drift-r0", "run_id": "r0", "feature": "temp", "sigmas": 6.0}
    seen = DriftSeen.split([_event("drift-r0", 5.2, 108.0), _event("r2", 4.4, 109.0)])
    classes = {"r0": "healthy", "r2": "healthy"}
    pump = "\n".join(drift_section(drifting, seen, 100.0, classes, speedup=5.0, unit=SECONDS))
    assert "8.0 s after the replay began (about 40 s of sensor time at 5×)" in pump
    assert "of which 0 on a normal run" in pump  # `healthy` is not the default normal class
    process = "\n".join(
        drift_section(
            drifting, seen, 100.0, classes, normal="healthy", speedup=3000.0, unit=MINUTES
        )
    )
    assert "8.0 s after the replay began (about 400 min of sensor time at 3000×)" in process
    assert "drift event: 1 (`r2` (healthy)), of which 1 on a healthy run" in process
    assert "| wall s after replay start |" in process
