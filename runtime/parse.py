"""Sensor message decoding: JSON (single reading or chunk, list or named values) and binary.

These functions run on paho's network thread, so they only decode and check; they never
normalize, infer or block. A bad message becomes a `Reason`, never an exception.

Binary layout (little-endian), for high rates:
    header  : 2 bytes magic b"EL", uint8 version (1), uint8 flags (0), uint16 count N
    readings: N x (float64 ts, F x float32 values)
so one reading of 24 features is 6 + 8 + 96 = 110 bytes.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass

import numpy as np

BINARY_MAGIC = b"EL"
BINARY_VERSION = 1
_HEADER = struct.Struct("<2sBBH")
F32_MAX = float(np.finfo(np.float32).max)


class Reason(str, enum.Enum):
    """Why a message or reading was dropped; each is a counter in the stats."""

    NOT_JSON = "not_json"
    BAD_SCHEMA = "bad_schema"
    WRONG_LENGTH = "wrong_length"
    NON_FINITE = "non_finite"
    UNKNOWN_FEATURE = "unknown_feature"
    OVERSIZED = "oversized"
    BAD_BINARY = "bad_binary"
    OUT_OF_ORDER = "out_of_order"
    GAP = "gap"
    QUEUE_FULL = "queue_full"
    DEVICE_QUEUE_FULL = "device_queue_full"
    DUPLICATE = "duplicate"  # the same reading again (QoS 1 delivers at least once)
    BAD_DEVICE_ID = "bad_device_id"  # empty, longer than limits.max_device_id_bytes
    DEVICE_LIMIT = "device_limit"  # limits.max_devices reached and no device idle long enough
    HANDLER_ERROR = "handler_error"  # an unexpected exception while handling one message

    @property
    def counter(self) -> str:
        """Stats counter name: invalid_* (bad input), reset_* (timeline), dropped_* (queues)."""
        if self in (Reason.OUT_OF_ORDER, Reason.GAP):
            return f"reset_{self.value}"
        if self in (
            Reason.QUEUE_FULL,
            Reason.DEVICE_QUEUE_FULL,
            Reason.DUPLICATE,
            Reason.DEVICE_LIMIT,
        ):
            return f"dropped_{self.value}"
        return f"invalid_{self.value}"


@dataclass(frozen=True)
class Readings:
    """One message's readings in order: ts float64 [N], values float32 [N, F] (raw units)."""

    ts: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


class Parser:
    """Decodes payloads for one feature list; built once per manifest."""

    def __init__(self, features: list[str], max_payload_bytes: int) -> None:
        self.features = list(features)
        self.n_features = len(features)
        self.index = {name: i for i, name in enumerate(features)}
        self.max_payload_bytes = max_payload_bytes
        self._binary_row = np.dtype([("ts", "<f8"), ("v", "<f4", (self.n_features,))])

    def parse(self, payload: bytes) -> Readings | Reason:
        if len(payload) > self.max_payload_bytes:
            return Reason.OVERSIZED
        if payload[:2] == BINARY_MAGIC:
            return self._parse_binary(payload)
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return Reason.NOT_JSON
        if not isinstance(msg, dict) or "ts" not in msg or "values" not in msg:
            return Reason.BAD_SCHEMA
        ts, values = msg["ts"], msg["values"]
        if isinstance(ts, list):
            if not isinstance(values, list) or len(values) != len(ts) or not ts:
                return Reason.BAD_SCHEMA
            rows = values
            stamps = ts
        else:
            rows = [values]
            stamps = [ts]
        return self._readings(stamps, rows)

    def _readings(self, stamps: list, rows: list) -> Readings | Reason:
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in stamps):
            return Reason.BAD_SCHEMA
        if not all(math.isfinite(t) for t in stamps):
            return Reason.NON_FINITE
        try:  # fast path: plain lists of numbers, converted in one call
            wide = np.array(rows, dtype=np.float64)
        except (TypeError, ValueError):
            wide = None
        if wide is None or wide.shape != (len(rows), self.n_features):
            wide = np.empty((len(rows), self.n_features), dtype=np.float64)
            reason = self._fill_rows(wide, rows)
            if reason is not None:
                return reason
        # NaN fails the comparison too; values beyond float32 would become inf
        if not np.abs(wide).max() <= F32_MAX:
            return Reason.NON_FINITE
        return Readings(np.asarray(stamps, dtype=np.float64), wide.astype(np.float32))

    def _fill_rows(self, out: np.ndarray, rows: list) -> Reason | None:
        for i, row in enumerate(rows):
            if isinstance(row, dict):
                reason = self._fill_named(out[i], row)
                if reason is not None:
                    return reason
                continue
            if not isinstance(row, list):
                return Reason.BAD_SCHEMA
            if len(row) != self.n_features:
                return Reason.WRONG_LENGTH
            try:
                out[i] = row
            except (TypeError, ValueError):
                return Reason.BAD_SCHEMA
        return None

    def _fill_named(self, dest: np.ndarray, row: dict) -> Reason | None:
        if any(name not in self.index for name in row):
            return Reason.UNKNOWN_FEATURE
        if len(row) != self.n_features:
            return Reason.WRONG_LENGTH
        try:
            for name, value in row.items():
                dest[self.index[name]] = value
        except (TypeError, ValueError):
            return Reason.BAD_SCHEMA
        return None

    def _parse_binary(self, payload: bytes) -> Readings | Reason:
        if len(payload) < _HEADER.size:
            return Reason.BAD_BINARY
        _, version, _, count = _HEADER.unpack_from(payload)
        if version != BINARY_VERSION or count == 0:
            return Reason.BAD_BINARY
        if len(payload) != _HEADER.size + count * self._binary_row.itemsize:
            return Reason.BAD_BINARY
        rows = np.frombuffer(payload, dtype=self._binary_row, count=count, offset=_HEADER.size)
        ts = rows["ts"].astype(np.float64)
        values = rows["v"].astype(np.float32)
        if not (np.isfinite(ts).all() and np.isfinite(values).all()):
            return Reason.NON_FINITE
        return Readings(ts, values)


def encode_binary(ts: np.ndarray, values: np.ndarray) -> bytes:
    """The binary form of N readings (ts [N], values [N, F]); the inverse of Parser.parse."""
    ts = np.atleast_1d(np.asarray(ts, dtype="<f8"))
    values = np.asarray(values, dtype="<f4").reshape(len(ts), -1)
    row = np.dtype([("ts", "<f8"), ("v", "<f4", (values.shape[1],))])
    rows = np.empty(len(ts), dtype=row)
    rows["ts"] = ts
    rows["v"] = values
    return _HEADER.pack(BINARY_MAGIC, BINARY_VERSION, 0, len(ts)) + rows.tobytes()


def encode_json(ts: float | list[float], values: list) -> bytes:
    """The JSON form: one reading ({"ts": t, "values": [...]}) or a chunk of them."""
    return json.dumps({"ts": ts, "values": values}, separators=(",", ":")).encode()
