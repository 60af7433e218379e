"""runtime/jsonout.py: the gateway's one JSON writer (orjson) gives the same JSON, fields and
field order as json.dumps did, and stays valid JSON where json.dumps was not (NaN)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.jsonout import dumps

ALERT = {
    "event": "raised",
    "device_id": "pump-7/ü",
    "class": "bearing_wear",
    "class_index": 3,
    "confidence": 0.912345,
    "window_start_ts": 1764633600.1,
    "window_end_ts": 1764633606.0,
    "model": "student",
    "model_version": "2026-12-01",
    "gateway_id": "gateway-1",
    "published_at": 1764633606.123456,
    "latency_ms": {"receive_to_infer": 1.234, "infer": 0.031, "receive_to_result": 1.5},
    "alert_id": "6f1c1a52-2b1e-4b57-9a3e-0c6d1f0e7a41",
    "probs": [0.01, 1e-07, 0.912345],
    "nothing": None,
    "flag": True,
}


def test_same_json_and_field_order_as_json_dumps() -> None:
    text = dumps(ALERT)
    assert isinstance(text, bytes)
    assert json.loads(text) == ALERT
    assert list(json.loads(text)) == list(ALERT)  # insertion order kept
    assert b": " not in text and b"\\u" not in text  # compact UTF-8 (json.dumps: ", ", \\u)


def test_nan_and_infinities_become_null_so_the_body_stays_json() -> None:
    text = dumps({"a": math.nan, "b": [math.inf, -math.inf]})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON literal {c}")) == {
        "a": None,
        "b": [None, None],
    }


def test_numpy_values_and_subclasses_are_written_as_plain_json() -> None:
    class Seconds(float):
        pass

    body = {"f32": np.float32(0.5), "f64": np.float64(0.1), "i": np.int64(3), "s": Seconds(2.5)}
    body["arr"] = np.array([1.0, 2.0], np.float32)
    assert json.loads(dumps(body)) == {"f32": 0.5, "f64": 0.1, "i": 3, "s": 2.5, "arr": [1.0, 2.0]}


def test_what_json_cannot_hold_raises_type_error() -> None:
    with pytest.raises(TypeError):
        dumps({"x": {1, 2}})
