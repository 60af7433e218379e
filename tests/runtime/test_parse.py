"""Message decoding: every accepted form gives the same readings, every bad one its reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.parse import Parser, Readings, Reason, encode_binary, encode_json
from tests.runtime.malformed import Malformed, malformed_messages

FEATURES = ["a", "b", "c"]
CATALOGUE = malformed_messages(len(FEATURES), 65_536)


@pytest.fixture
def parser() -> Parser:
    return Parser(FEATURES, max_payload_bytes=4096)


def test_single_chunk_named_and_binary_agree(parser: Parser) -> None:
    ts = [10.0, 10.1]
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]
    forms = [
        encode_json(ts, rows),
        json.dumps(
            {"ts": ts, "values": [dict(zip(FEATURES, r, strict=True)) for r in rows]}
        ).encode(),
        encode_binary(np.array(ts), np.array(rows)),
    ]
    for payload in forms:
        got = parser.parse(payload)
        assert not isinstance(got, Reason), payload
        np.testing.assert_array_equal(got.ts, ts)
        np.testing.assert_array_equal(got.values, np.array(rows, np.float32))
    single = parser.parse(encode_json(10.0, rows[0]))
    assert len(single) == 1 and single.values.dtype == np.float32
    named = parser.parse(json.dumps({"ts": 1, "values": {"c": 3, "a": 1, "b": 2}}).encode())
    np.testing.assert_array_equal(named.values[0], [1, 2, 3])


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", Reason.NOT_JSON),
        (b"\xff\xfe", Reason.NOT_JSON),
        (b"[1, 2, 3]", Reason.BAD_SCHEMA),
        (b'{"ts": 1}', Reason.BAD_SCHEMA),
        (b'{"ts": "x", "values": [1, 2, 3]}', Reason.BAD_TYPE),
        (b'{"ts": 1, "values": [1, "x", 3]}', Reason.BAD_TYPE),
        (b'{"ts": [1, 2], "values": [[1, 2, 3]]}', Reason.BAD_SCHEMA),
        (b'{"ts": 1, "values": [1, 2]}', Reason.WRONG_LENGTH),
        (b'{"ts": 1, "values": [1, NaN, 3]}', Reason.NON_FINITE),
        (b'{"ts": 1, "values": [1, Infinity, 3]}', Reason.NON_FINITE),
        (b'{"ts": 1, "values": [1, 1e39, 3]}', Reason.OUT_OF_RANGE),
        (b'{"ts": 1, "values": {"a": 1, "b": 2, "zz": 3}}', Reason.UNKNOWN_FEATURE),
        (b'{"ts": 1, "values": {"a": 1, "b": 2}}', Reason.WRONG_LENGTH),
        (b"EL\x01\x00\x02\x00" + b"\x00" * 7, Reason.BAD_BINARY),
        (b"EL\x09\x00\x01\x00" + b"\x00" * 20, Reason.BAD_BINARY),
        (b"x" * 5000, Reason.OVERSIZED),
    ],
)
def test_bad_messages_are_named(parser: Parser, payload: bytes, reason: Reason) -> None:
    assert parser.parse(payload) == reason


def test_binary_non_finite_and_counter_names(parser: Parser) -> None:
    payload = encode_binary(np.array([1.0]), np.array([[1.0, np.nan, 2.0]]))
    assert parser.parse(payload) == Reason.NON_FINITE
    assert Reason.NON_FINITE.counter == "invalid_non_finite"
    assert Reason.GAP.counter == "reset_gap"
    assert Reason.QUEUE_FULL.counter == "dropped_queue_full"
    assert Reason.OUT_OF_RANGE.counter == "invalid_out_of_range"
    assert Reason.BAD_TYPE.counter == "invalid_bad_type"
    assert Reason.TOO_DEEP.counter == "invalid_too_deep"


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_catalogue_entry_gives_its_reason(entry: Malformed) -> None:
    parser = Parser(FEATURES, max_payload_bytes=65_536)
    assert parser.parse(entry.payload) == entry.reason


def test_catalogue_is_large_named_and_fits_other_limits() -> None:
    assert len(CATALOGUE) >= 30
    assert len({e.name for e in CATALOGUE}) == len(CATALOGUE)
    assert [e.name for e in CATALOGUE if e.reason == Reason.OVERSIZED] == ["oversized"]
    for n_features, limit in ((1, 65_536), (24, 8192), (24, 2048), (3, 64)):
        parser = Parser([f"f{i}" for i in range(n_features)], limit)
        for entry in malformed_messages(n_features, limit):
            assert parser.parse(entry.payload) == entry.reason, (n_features, limit, entry.name)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"ts": 1700000000, "values": [1, -2, 3]}',
        b'{"ts": 1700000000.0, "values": [1.0, -2.0, 3.0]}',
        b'{"ts": [1700000000], "values": [[1, -2, 3]]}',
        b'{"ts": 1700000000, "values": {"b": -2, "a": 1, "c": 3}}',
        b'{"ts": [1700000000], "values": [{"c": 3.0, "b": -2.0, "a": 1.0}]}',
        b'{"ts": 1700000000, "values": [1e0, -2E0, 0.3e1], "extra": [true, null, "x"]}',
        b'\xef\xbb\xbf{"ts": 1700000000, "values": [1, -2, 3]}',
        '{"ts": 1700000000, "values": [1, -2, 3]}'.encode("utf-16"),
    ],
)
def test_integer_and_exponent_forms_parse_exactly(parser: Parser, payload: bytes) -> None:
    got = parser.parse(payload)
    assert isinstance(got, Readings), got
    assert got.ts.dtype == np.float64 and got.ts.tolist() == [1700000000.0]
    assert got.values.dtype == np.float32 and got.values.tolist() == [[1.0, -2.0, 3.0]]


def test_chunk_named_binary_and_edge_values_parse_exactly(parser: Parser) -> None:
    f32_max = float(np.finfo(np.float32).max)
    ts = [1700000000.1, 1700000000.2, 1e300]
    rows = [[0.1, -0.0, 5e-324], [f32_max, -f32_max, 1.5e-45], [2.0**24 + 1, 1e-40, 7.25]]
    expected = np.array(rows, dtype=np.float64).astype(np.float32)
    named = [dict(zip(FEATURES, r, strict=True)) for r in rows]
    mixed = [rows[0], named[1], rows[2]]
    for values in (rows, named, mixed):
        got = parser.parse(json.dumps({"ts": ts, "values": values}).encode())
        assert isinstance(got, Readings), got
        assert got.ts.tolist() == ts
        np.testing.assert_array_equal(got.values, expected)
    got = parser.parse(encode_binary(np.array(ts), expected))
    assert got.ts.tolist() == ts
    np.testing.assert_array_equal(got.values, expected)
    single = parser.parse(encode_json(ts[0], rows[1]))
    np.testing.assert_array_equal(single.values, expected[1:2])
