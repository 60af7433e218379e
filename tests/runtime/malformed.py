"""A catalogue of malformed sensor messages, each with the reason the parser must give.

Shared by the parser tests and the chaos test, so it imports nothing test-only. Every entry has
a single fault; entries that name features use names no manifest has, so the catalogue fits any
feature list of the given width.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from runtime.parse import BINARY_MAGIC, Reason, encode_binary, encode_json

TS = 1700000000.5
UNKNOWN = "__no_such_feature__"


@dataclass(frozen=True)
class Malformed:
    """One kind of bad message: `payload` must parse to `reason`."""

    name: str
    payload: bytes
    reason: Reason


def malformed_messages(n_features: int, max_payload_bytes: int) -> list[Malformed]:
    """The catalogue for a parser of `n_features` features and this payload limit.

    An entry longer than the limit expects OVERSIZED, since size is checked first; pass a limit
    of 8192 or more to exercise every entry's own fault.
    """
    if n_features < 1:
        raise ValueError("n_features must be >= 1")
    entries = [
        *_syntax(),
        *_schema(n_features),
        *_types(n_features),
        *_ranges(n_features),
        *_non_finite(n_features),
        *_lengths(n_features),
        *_binary(n_features),
        Malformed("oversized", b"{" + b" " * (max_payload_bytes - 1) + b"}", Reason.OVERSIZED),
    ]
    return [
        Malformed(e.name, e.payload, Reason.OVERSIZED) if len(e.payload) > max_payload_bytes else e
        for e in entries
    ]


def _row(n: int) -> list[float]:
    return [i + 0.25 for i in range(n)]


def _raw(ts: str, values: str) -> bytes:
    """A reading from JSON text, for literals json.dumps never writes (1e400, 401 digits)."""
    return f'{{"ts": {ts}, "values": {values}}}'.encode()


def _first(value: str, n: int) -> str:
    """A row's JSON text whose first value is `value` (raw JSON) and the rest are good."""
    return "[" + ", ".join([value, *map(repr, _row(n)[1:])]) + "]"


def _syntax() -> list[Malformed]:
    return [
        Malformed("not_json", b"{not json", Reason.NOT_JSON),
        Malformed("empty_payload", b"", Reason.NOT_JSON),
        Malformed("invalid_utf8", b'{"ts": 1, "values": [\xff\xfe]}', Reason.NOT_JSON),
        Malformed("truncated_json", encode_json(TS, [1.5, 2.5])[:-3], Reason.NOT_JSON),
        Malformed("trailing_garbage", encode_json(TS, [1.5]) + b" x", Reason.NOT_JSON),
        Malformed("nested_arrays_3kb", b"[" * 1500 + b"]" * 1500, Reason.TOO_DEEP),
        Malformed("unclosed_arrays_3kb", b"[" * 3000, Reason.TOO_DEEP),
        Malformed(
            "nested_arrays_in_values",
            _raw("1", "[" * 1500 + "]" * 1500),
            Reason.TOO_DEEP,
        ),
        Malformed(
            "nested_objects",
            b'{"ts": 1, "values": ' + b'{"":' * 1200 + b"1" + b"}" * 1201,
            Reason.TOO_DEEP,
        ),
    ]


def _schema(n: int) -> list[Malformed]:
    row = _row(n)
    return [
        Malformed("top_level_array", json.dumps([TS, row]).encode(), Reason.BAD_SCHEMA),
        Malformed("top_level_number", b"42", Reason.BAD_SCHEMA),
        Malformed("top_level_string", b'"ts"', Reason.BAD_SCHEMA),
        Malformed("top_level_null", b"null", Reason.BAD_SCHEMA),
        Malformed("missing_ts", json.dumps({"values": row}).encode(), Reason.BAD_SCHEMA),
        Malformed("missing_values", json.dumps({"ts": TS}).encode(), Reason.BAD_SCHEMA),
        Malformed("values_is_number", _raw("1", "1.5"), Reason.BAD_SCHEMA),
        Malformed("values_is_string", _raw("1", '"1.5"'), Reason.BAD_SCHEMA),
        Malformed("empty_chunk", encode_json([], []), Reason.BAD_SCHEMA),
        Malformed("chunk_length_mismatch", encode_json([TS, TS + 1], [row]), Reason.BAD_SCHEMA),
        Malformed(
            "chunk_values_not_list",
            json.dumps({"ts": [TS], "values": {UNKNOWN: 1.0}}).encode(),
            Reason.BAD_SCHEMA,
        ),
        Malformed("chunk_row_is_number", encode_json([TS], [1.5]), Reason.BAD_SCHEMA),
    ]


def _types(n: int) -> list[Malformed]:
    row = _row(n)
    return [
        Malformed(
            "string_ts", json.dumps({"ts": "1700000000", "values": row}).encode(), Reason.BAD_TYPE
        ),
        Malformed("bool_ts", _raw("true", json.dumps(row)), Reason.BAD_TYPE),
        Malformed("null_ts", _raw("null", json.dumps(row)), Reason.BAD_TYPE),
        Malformed("object_ts", _raw('{"s": 1}', json.dumps(row)), Reason.BAD_TYPE),
        Malformed("nested_chunk_ts", _raw(f"[[{TS}]]", f"[{json.dumps(row)}]"), Reason.BAD_TYPE),
        Malformed("bool_values", _raw("1", json.dumps([True] * n)), Reason.BAD_TYPE),
        Malformed("bool_value", _raw("1", _first("false", n)), Reason.BAD_TYPE),
        Malformed("numeric_string_values", _raw("1", json.dumps(["1.5"] * n)), Reason.BAD_TYPE),
        Malformed("null_value", _raw("1", _first("null", n)), Reason.BAD_TYPE),
        Malformed("object_value", _raw("1", _first('{"v": 1}', n)), Reason.BAD_TYPE),
        Malformed("array_value", _raw("1", _first("[1.5]", n)), Reason.BAD_TYPE),
        Malformed(
            "bool_in_chunk_row",
            encode_json([TS, TS + 1], [row, [True, *row[1:]]]),
            Reason.BAD_TYPE,
        ),
    ]


def _ranges(n: int) -> list[Malformed]:
    row = json.dumps(_row(n))
    return [
        Malformed("int_401_digits", _raw("1", _first("9" * 401, n)), Reason.OUT_OF_RANGE),
        Malformed("int_5000_digits", _raw("1", _first("9" * 5000, n)), Reason.OUT_OF_RANGE),
        Malformed(
            "negative_int_401_digits", _raw("1", _first("-" + "9" * 401, n)), Reason.OUT_OF_RANGE
        ),
        Malformed("huge_int_ts", _raw("1" * 400, row), Reason.OUT_OF_RANGE),
        Malformed("ts_1e400", _raw("1e400", row), Reason.OUT_OF_RANGE),
        Malformed("value_1e400", _raw("1", _first("1e400", n)), Reason.OUT_OF_RANGE),
        Malformed("value_minus_1e400", _raw("1", _first("-1e400", n)), Reason.OUT_OF_RANGE),
        Malformed("beyond_float32_max", _raw("1", _first("3.5e38", n)), Reason.OUT_OF_RANGE),
        Malformed("below_float32_min", _raw("1", _first("-1e39", n)), Reason.OUT_OF_RANGE),
    ]


def _non_finite(n: int) -> list[Malformed]:
    row = _row(n)
    return [
        Malformed("nan_value", _raw("1", _first("NaN", n)), Reason.NON_FINITE),
        Malformed("infinity_value", _raw("1", _first("Infinity", n)), Reason.NON_FINITE),
        Malformed("minus_infinity_value", _raw("1", _first("-Infinity", n)), Reason.NON_FINITE),
        Malformed("nan_ts", _raw("NaN", json.dumps(row)), Reason.NON_FINITE),
        Malformed(
            "nan_in_chunk",
            encode_json([TS, TS + 1], [row, [float("nan"), *row[1:]]]),
            Reason.NON_FINITE,
        ),
    ]


def _lengths(n: int) -> list[Malformed]:
    row = _row(n)
    return [
        Malformed("too_many_values", encode_json(TS, [*row, 9.5]), Reason.WRONG_LENGTH),
        Malformed("too_few_values", encode_json(TS, row[:-1]), Reason.WRONG_LENGTH),
        Malformed(
            "chunk_row_wrong_length",
            encode_json([TS, TS + 1], [row, row[:-1]]),
            Reason.WRONG_LENGTH,
        ),
        Malformed(
            "unknown_feature_name",
            json.dumps({"ts": TS, "values": {UNKNOWN: 1.5}}).encode(),
            Reason.UNKNOWN_FEATURE,
        ),
        Malformed(
            "missing_feature_names",
            json.dumps({"ts": TS, "values": {}}).encode(),
            Reason.WRONG_LENGTH,
        ),
        Malformed(
            "chunk_dict_row_wrong_keys",
            json.dumps({"ts": [TS, TS + 1], "values": [row, {UNKNOWN: 1.5, "x": 2.5}]}).encode(),
            Reason.UNKNOWN_FEATURE,
        ),
    ]


def _header(version: int, count: int) -> bytes:
    """A binary header written from the documented layout, not from the parser's own struct."""
    return struct.pack("<2sBBH", BINARY_MAGIC, version, 0, count)


def _binary(n: int) -> list[Malformed]:
    frame = encode_binary([TS], [_row(n)])
    body = frame[6:]
    return [
        Malformed("binary_bad_version", _header(9, 1) + body, Reason.BAD_BINARY),
        Malformed("binary_short_header", BINARY_MAGIC + b"\x01", Reason.BAD_BINARY),
        Malformed("binary_truncated", frame[:-1], Reason.BAD_BINARY),
        Malformed("binary_trailing_bytes", frame + b"\x00", Reason.BAD_BINARY),
        Malformed("binary_count_zero", _header(1, 0), Reason.BAD_BINARY),
        Malformed("binary_count_mismatch", _header(1, 2) + body, Reason.BAD_BINARY),
        Malformed("binary_nan_value", encode_binary([TS], [[float("nan")] * n]), Reason.NON_FINITE),
        Malformed("binary_inf_ts", encode_binary([float("inf")], [_row(n)]), Reason.NON_FINITE),
    ]
