"""Sensor message decoding: JSON (single reading or chunk, list or named values) and binary.

These functions run on paho's network thread, so they only decode and check; they never
normalize, infer or block. A bad message becomes a `Reason`, never an exception, whatever the
bytes: each check names what is wrong so the counters tell a broken sender from a hostile one.

JSON is decoded twice at most. orjson (C speed) decodes every message first; a message it
decodes to exactly `ts` and `values` that passes every check below is accepted as it is. Anything
else (a decode error, an integer, another key, any refusal) is decoded again by the standard
library decoder, which defines the semantics below, so each refusal keeps its exact reason and an
accepted message holds the same numbers either way (orjson's tree has only floats in the checked
places, and both decoders round a float literal correctly).

With the standard decoder JSON numbers all decode to Python floats (integers included, so a
5000-digit integer costs a float parse, not big-int arithmetic, and overflows to inf like 1e400
does). Only floats are accepted where a number is required: numpy would silently turn true,
"1.5" and null into numbers, so types are checked before it sees the rows.

Binary layout (little-endian), for high rates:
    header  : 2 bytes magic b"EL", uint8 version (1), uint8 flags (0), uint16 count N
    readings: N x (float64 ts, F x float32 values)
so one reading of 24 features is 6 + 8 + 96 = 110 bytes.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import struct
from dataclasses import dataclass

import numpy as np
import orjson

BINARY_MAGIC = b"EL"
BINARY_VERSION = 1
_HEADER = struct.Struct("<2sBBH")
F32_MAX = float(np.finfo(np.float32).max)
_FLOAT = frozenset({float})
_LIST = frozenset({list})


class Reason(str, enum.Enum):
    """Why a message or reading was dropped; each is a counter in the stats."""

    NOT_JSON = "not_json"
    BAD_SCHEMA = "bad_schema"
    WRONG_LENGTH = "wrong_length"
    NON_FINITE = "non_finite"  # NaN, Infinity, -Infinity (JSON literals or binary values)
    OUT_OF_RANGE = "out_of_range"  # a number too large for float32 (values) or float64 (ts)
    BAD_TYPE = "bad_type"  # a boolean, string, null, array or object where a number belongs
    TOO_DEEP = "too_deep"  # nesting deeper than the JSON decoder recurses (~ recursion limit)
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


def _non_finite_literal(_: str) -> float:
    """NaN, Infinity and -Infinity all decode to NaN.

    That keeps the literals (non_finite) apart from number literals too large for a float,
    which decode to +-inf (out_of_range), with no type other than float in the tree.
    """
    return math.nan


_DECODER = json.JSONDecoder(parse_int=float, parse_constant=_non_finite_literal)


def _decode(payload: bytes) -> object:
    """Payload bytes to a JSON tree, or the reason it is not one.

    The encoding is detected as `json.loads` does; the decoder is built once because
    `json.loads` with hooks builds a new one per call, which costs nearly as much again as
    decoding a 24-value reading.
    """
    try:
        text = payload.decode(json.detect_encoding(payload), "surrogatepass")
        return _DECODER.decode(text)
    except RecursionError:
        return Reason.TOO_DEEP
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return Reason.NOT_JSON


def _stamps_reason(stamps: list) -> Reason | None:
    """Why decoded timestamps are not all finite floats (float64 ts: only an overflowed
    literal, now inf, is out of range), or None if they are."""
    if set(map(type, stamps)) != _FLOAT:
        return Reason.BAD_TYPE
    if all(map(math.isfinite, stamps)):
        return None
    return Reason.NON_FINITE if any(map(math.isnan, stamps)) else Reason.OUT_OF_RANGE


class Parser:
    """Decodes payloads for one feature list; built once per manifest."""

    def __init__(self, features: list[str], max_payload_bytes: int) -> None:
        self.features = list(features)
        self.n_features = len(features)
        self.index = {name: i for i, name in enumerate(features)}
        self.max_payload_bytes = max_payload_bytes
        self._width = frozenset({self.n_features})
        self._binary_row = np.dtype([("ts", "<f8"), ("v", "<f4", (self.n_features,))])

    def parse(self, payload: bytes) -> Readings | Reason:
        """The readings of one message, or why it was refused; never raises."""
        if len(payload) > self.max_payload_bytes:
            return Reason.OVERSIZED
        if payload[:2] == BINARY_MAGIC:
            return self._parse_binary(payload)
        fast = self._parse_plain(payload)
        if fast is not None:
            return fast
        msg = _decode(payload)
        if isinstance(msg, Reason):
            return msg
        return self._message(msg)

    def _parse_plain(self, payload: bytes) -> Readings | None:
        """The common message through orjson; None sends it to the standard decoder, which
        names what is wrong (orjson's own errors and integers would give other reasons)."""
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if type(msg) is not dict or len(msg) != 2:
            return None
        got = self._message(msg)
        return None if isinstance(got, Reason) else got

    def _message(self, msg: object) -> Readings | Reason:
        """A decoded JSON tree's readings, or why it is not a message."""
        if not isinstance(msg, dict) or "ts" not in msg or "values" not in msg:
            return Reason.BAD_SCHEMA
        ts, values = msg["ts"], msg["values"]
        if type(ts) is not list:
            return self._readings([ts], [values])
        if type(values) is not list or len(values) != len(ts) or not ts:
            return Reason.BAD_SCHEMA
        return self._readings(ts, values)

    def _readings(self, stamps: list, rows: list) -> Readings | Reason:
        reason = _stamps_reason(stamps)
        if reason is not None:
            return reason
        wide = self._plain_rows(rows)
        if wide is None:
            wide = np.empty((len(rows), self.n_features), dtype=np.float64)
            reason = self._fill_rows(wide, rows)
            if reason is not None:
                return reason
        # NaN (a literal) fails the comparison too; beyond float32 a value would become inf
        peak = np.abs(wide).max()
        if not peak <= F32_MAX:
            return Reason.NON_FINITE if math.isnan(peak) else Reason.OUT_OF_RANGE
        return Readings(np.array(stamps, dtype=np.float64), wide.astype(np.float32))

    def _plain_rows(self, rows: list) -> np.ndarray | None:
        """The common case, lists of F floats, checked in C-speed passes and converted in one
        call; None sends anything else to the row-by-row path, which names the problem."""
        if (
            set(map(type, rows)) == _LIST
            and set(map(len, rows)) == self._width
            and set(map(type, itertools.chain.from_iterable(rows))) == _FLOAT
        ):
            return np.array(rows, dtype=np.float64)
        return None

    def _fill_rows(self, out: np.ndarray, rows: list) -> Reason | None:
        for dest, row in zip(out, rows, strict=True):
            if type(row) is dict:
                reason = self._fill_named(dest, row)
            elif type(row) is list:
                reason = self._fill_list(dest, row)
            else:
                reason = Reason.BAD_SCHEMA
            if reason is not None:
                return reason
        return None

    def _fill_list(self, dest: np.ndarray, row: list) -> Reason | None:
        if len(row) != self.n_features:
            return Reason.WRONG_LENGTH
        if set(map(type, row)) != _FLOAT:
            return Reason.BAD_TYPE
        dest[:] = row
        return None

    def _fill_named(self, dest: np.ndarray, row: dict) -> Reason | None:
        if any(name not in self.index for name in row):
            return Reason.UNKNOWN_FEATURE
        if len(row) != self.n_features:
            return Reason.WRONG_LENGTH
        if set(map(type, row.values())) != _FLOAT:
            return Reason.BAD_TYPE
        dest[[self.index[name] for name in row]] = list(row.values())
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
        ts, values = rows["ts"], rows["v"]  # read-only views of the payload: nothing copied
        # one reduction for the values (the largest magnitude is finite exactly when all are,
        # and NaN propagates without a floating-point warning); timestamps are one per reading
        finite = math.isfinite(np.abs(values).max())
        if not (finite and all(map(math.isfinite, ts.tolist()))):
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
