"""Message decoding: every accepted form gives the same readings, every bad one its reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.parse import Parser, Reason, encode_binary, encode_json

FEATURES = ["a", "b", "c"]


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
        (b'{"ts": "x", "values": [1, 2, 3]}', Reason.BAD_SCHEMA),
        (b'{"ts": 1, "values": [1, "x", 3]}', Reason.BAD_SCHEMA),
        (b'{"ts": [1, 2], "values": [[1, 2, 3]]}', Reason.BAD_SCHEMA),
        (b'{"ts": 1, "values": [1, 2]}', Reason.WRONG_LENGTH),
        (b'{"ts": 1, "values": [1, NaN, 3]}', Reason.NON_FINITE),
        (b'{"ts": 1, "values": [1, Infinity, 3]}', Reason.NON_FINITE),
        (b'{"ts": 1, "values": [1, 1e39, 3]}', Reason.NON_FINITE),
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
