"""Property tests of the parser: it never raises, whatever the bytes; what it accepts is well
formed and equal to what was sent; a message with exactly one fault is refused for that fault."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import parse
from runtime.parse import BINARY_MAGIC, F32_MAX, Parser, Readings, Reason

FEATURES = ["a", "b", "c", "d"]
F = len(FEATURES)
MAX_PAYLOAD = 4096
PARSER = Parser(FEATURES, max_payload_bytes=MAX_PAYLOAD)
ROW = np.dtype([("ts", "<f8"), ("v", "<f4", (F,))])


def fuzz(max_examples: int) -> settings:
    """No example database: it would write .hypothesis/ into the shared working tree."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check_contract(got: object) -> None:
    """A Reason, or N >= 1 finite readings: ts float64 [N], values float32 [N, F]."""
    if isinstance(got, Reason):
        return
    assert isinstance(got, Readings), got
    n = len(got.ts)
    assert n >= 1
    assert got.ts.dtype == np.float64 and got.ts.shape == (n,)
    assert got.values.dtype == np.float32 and got.values.shape == (n, F)
    assert np.isfinite(got.ts).all() and np.isfinite(got.values).all()


# ---- (a) arbitrary bytes ----------------------------------------------------------------

prefixes = st.sampled_from(
    [b"", BINARY_MAGIC, BINARY_MAGIC + b"\x01", b'{"ts": ', b"[", b"\xef\xbb\xbf"]
)


@fuzz(6000)
@given(prefixes, st.binary(max_size=MAX_PAYLOAD + 8))
def test_arbitrary_bytes_never_raise(prefix: bytes, body: bytes) -> None:
    check_contract(PARSER.parse(prefix + body))


# ---- (b) arbitrary JSON trees -----------------------------------------------------------

huge_ints = st.integers(min_value=10**300, max_value=10**500) | st.integers(
    min_value=-(10**500), max_value=-(10**300)
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(FEATURES)
)
keys = st.sampled_from([*FEATURES, "ts", "values"]) | st.text(max_size=4)
trees = st.recursive(
    leaves,
    lambda kids: st.lists(kids, max_size=F + 1) | st.dictionaries(keys, kids, max_size=F + 1),
    max_leaves=10,
)

# message-shaped trees, mostly numbers, so that some are accepted and compared with the tree
near_numbers = (
    st.floats(width=32, allow_nan=False, allow_infinity=False)
    | st.integers(-(2**64), 2**64)
    | leaves
)
rows_like = (
    st.lists(near_numbers, min_size=F, max_size=F)
    | st.lists(near_numbers, min_size=F - 1, max_size=F + 1)
    | st.dictionaries(st.sampled_from(FEATURES) | keys, near_numbers, min_size=F - 1, max_size=F)
    | trees
)
shaped = st.fixed_dictionaries({"ts": near_numbers | trees, "values": rows_like}) | (
    st.integers(1, 3).flatmap(
        lambda n: st.fixed_dictionaries(
            {
                "ts": st.lists(near_numbers, min_size=n, max_size=n) | trees,
                "values": st.lists(rows_like, min_size=n, max_size=n) | trees,
            }
        )
    )
)


def expected_readings(tree: dict) -> tuple[list[float], list[list[float]]]:
    """What an accepted tree must have said, read naively; raises if it was not a message."""
    ts, values = tree["ts"], tree["values"]
    stamps, rows = (ts, values) if isinstance(ts, list) else ([ts], [values])
    named = [[r[name] for name in FEATURES] if isinstance(r, dict) else r for r in rows]
    numbers = [*stamps, *(v for r in named for v in r)]
    assert all(type(x) in (int, float) for x in numbers), numbers
    return [float(t) for t in stamps], named


@fuzz(1000)
@given(trees | shaped)
def test_json_trees_never_raise_and_accept_only_numbers(tree: object) -> None:
    got = PARSER.parse(json.dumps(tree).encode())
    check_contract(got)
    if isinstance(got, Readings):
        stamps, rows = expected_readings(tree)
        assert got.ts.tolist() == stamps
        np.testing.assert_array_equal(got.values, np.array(rows, np.float64).astype(np.float32))


# ---- (b') the orjson fast path changes nothing ------------------------------------------


def standard_decoder_only(payload: bytes) -> Readings | Reason:
    """What the parser says with the standard library decoder alone, which defines the
    semantics (runtime/parse.py: orjson only speeds up messages it would accept anyway)."""
    if len(payload) > MAX_PAYLOAD:
        return Reason.OVERSIZED
    msg = parse._decode(payload)
    return msg if isinstance(msg, Reason) else PARSER._message(msg)


def assert_same(got: Readings | Reason, want: Readings | Reason) -> None:
    """The same reason, or bit-identical readings (the sign of a zero included)."""
    if isinstance(want, Reason) or isinstance(got, Reason):
        assert got == want
        return
    assert got.ts.tobytes() == want.ts.tobytes()
    assert got.values.tobytes() == want.values.tobytes()


# number literals as senders write them: integers, long fractions, exponents, negative zero
literals = st.from_regex(
    r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][-+]?[0-9]{1,3})?", fullmatch=True
)


@fuzz(1500)
@given(trees | shaped)
def test_the_fast_path_parses_trees_as_the_standard_decoder(tree: object) -> None:
    payload = json.dumps(tree).encode()
    assert_same(PARSER.parse(payload), standard_decoder_only(payload))


@fuzz(1500)
@given(st.lists(literals, min_size=F + 1, max_size=F + 1), st.booleans())
def test_the_fast_path_reads_every_number_literal_as_the_standard_decoder(
    numbers: list[str], chunk: bool
) -> None:
    ts, row = numbers[0], ", ".join(numbers[1:])
    text = (
        f'{{"ts": [{ts}], "values": [[{row}]]}}' if chunk else f'{{"ts": {ts}, "values": [{row}]}}'
    )
    payload = text.encode()
    assert_same(PARSER.parse(payload), standard_decoder_only(payload))


# ---- (c) valid messages, then each with one fault ---------------------------------------

good_values = st.floats(min_value=-F32_MAX, max_value=F32_MAX) | st.integers(-(10**30), 10**30)
good_stamps = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**300), 10**300)


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[dict, list, list]:
    """(message, ts, rows): one reading or a chunk; each row a list or named, keys shuffled."""
    chunk = draw(st.booleans())
    n = draw(st.integers(1, 5)) if chunk else 1
    ts = draw(st.lists(good_stamps, min_size=n, max_size=n))
    rows = draw(st.lists(st.lists(good_values, min_size=F, max_size=F), min_size=n, max_size=n))
    sent = [
        named_row(row, draw(st.permutations(FEATURES))) if draw(st.booleans()) else list(row)
        for row in rows
    ]
    msg = {"ts": ts, "values": sent} if chunk else {"ts": ts[0], "values": sent[0]}
    return msg, ts, rows


def named_row(row: list, order: list[str] = FEATURES) -> dict:
    """The named form of a row, keys in the given order (the parser must not care)."""
    return {name: row[FEATURES.index(name)] for name in order}


@fuzz(700)
@given(valid_messages())
def test_valid_messages_parse_to_what_was_sent(case: tuple[dict, list, list]) -> None:
    msg, ts, rows = case
    got = PARSER.parse(json.dumps(msg).encode())
    assert isinstance(got, Readings), got
    check_contract(got)
    assert got.ts.tolist() == [float(t) for t in ts]
    np.testing.assert_array_equal(got.values, np.array(rows, np.float64).astype(np.float32))


not_numbers = (
    st.none()
    | st.booleans()
    | st.text(max_size=6)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
beyond_f32 = st.floats(min_value=3.5e38, max_value=1e308) | st.sampled_from([10**39, 10**400])
VALUE_FAULTS = [
    (not_numbers | st.lists(good_values, max_size=2), Reason.BAD_TYPE),
    (non_finite, Reason.NON_FINITE),
    (beyond_f32 | beyond_f32.map(lambda x: -x), Reason.OUT_OF_RANGE),
]
TS_FAULTS = [
    (not_numbers, Reason.BAD_TYPE),
    (non_finite, Reason.NON_FINITE),
    (st.sampled_from([10**400, -(10**400)]), Reason.OUT_OF_RANGE),
]


@st.composite
def faulty_messages(draw: st.DrawFn) -> tuple[dict, Reason]:
    """A valid message with exactly one thing wrong, and the reason that fault must give."""
    msg, _, _ = draw(valid_messages())
    chunk = isinstance(msg["ts"], list)
    rows = msg["values"] if chunk else [msg["values"]]
    r = draw(st.integers(0, len(rows) - 1))
    row = rows[r]
    fault = draw(st.sampled_from(["value", "ts", "key", "length", "name", "chunk"]))
    if fault == "value":
        bad, reason = draw(st.sampled_from(VALUE_FAULTS))
        at = draw(st.sampled_from(FEATURES) if isinstance(row, dict) else st.integers(0, F - 1))
        row[at] = draw(bad)
        return msg, reason
    if fault == "ts":
        bad, reason = draw(st.sampled_from(TS_FAULTS))
        if chunk:
            msg["ts"][r] = draw(bad)
        else:
            msg["ts"] = draw(bad)
        return msg, reason
    if fault == "key":
        del msg[draw(st.sampled_from(["ts", "values"]))]
        return msg, Reason.BAD_SCHEMA
    if fault == "length":
        if isinstance(row, dict):
            del row[draw(st.sampled_from(FEATURES))]
        elif draw(st.booleans()):
            row.append(draw(good_values))
        else:
            row.pop()
        return msg, Reason.WRONG_LENGTH
    if fault == "name":
        named = row if isinstance(row, dict) else named_row(row)
        name = draw(st.sampled_from(FEATURES))
        named[name + draw(st.text(min_size=1, max_size=3))] = named.pop(name)
        rows[r] = named
        msg["values"] = rows if chunk else named
        return msg, Reason.UNKNOWN_FEATURE
    if chunk and draw(st.booleans()):
        msg["ts"].pop(r)
    else:
        rows[r] = draw(good_values | st.none() | st.booleans() | st.text(max_size=6))
        msg["values"] = rows if chunk else rows[r]
    return msg, Reason.BAD_SCHEMA


@fuzz(1000)
@given(faulty_messages())
def test_one_fault_gives_its_reason(case: tuple[dict, Reason]) -> None:
    msg, reason = case
    assert PARSER.parse(json.dumps(msg).encode()) == reason


# ---- (d) binary frames ------------------------------------------------------------------

specials = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, -0.0, F32_MAX, 1e-45])


@st.composite
def frames(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """(version, count, payload): half well formed (version 1, 1-6 readings, the exact size),
    half with a random header and a body of random size; every body random bytes, some with
    one ts or value set to NaN, an infinity or an edge of float32."""
    if draw(st.booleans()):
        version, count = 1, draw(st.integers(1, 6))
        length = count * ROW.itemsize
    else:
        version = draw(st.integers(0, 255))
        count = draw(st.integers(0, 6) | st.integers(0, 65535))
        near = [count * ROW.itemsize + d for d in (-1, 0, 1)] if count <= 80 else [0]
        length = max(draw(st.sampled_from(near) | st.integers(0, 300)), 0)
    body = bytearray(draw(st.binary(min_size=length, max_size=length)))
    if length == count * ROW.itemsize > 0 and draw(st.booleans()):
        row = draw(st.integers(0, count - 1)) * ROW.itemsize
        field = draw(st.integers(0, F))
        fmt, at = ("<d", row) if field == 0 else ("<f", row + 4 + 4 * field)
        struct.pack_into(fmt, body, at, draw(specials))
    flags = draw(st.integers(0, 255))
    return version, count, struct.pack("<2sBBH", BINARY_MAGIC, version, flags, count) + body


@fuzz(1400)
@given(frames())
def test_binary_frames(frame: tuple[int, int, bytes]) -> None:
    version, count, payload = frame
    got = PARSER.parse(payload)
    check_contract(got)
    body = payload[6:]
    if version != 1 or count == 0 or len(body) != count * ROW.itemsize:
        assert got == Reason.BAD_BINARY
        return
    rows = np.frombuffer(body, dtype=ROW)
    if not (np.isfinite(rows["ts"]).all() and np.isfinite(rows["v"]).all()):
        assert got == Reason.NON_FINITE
        return
    assert isinstance(got, Readings), got
    np.testing.assert_array_equal(got.ts, rows["ts"])
    np.testing.assert_array_equal(got.values, rows["v"])
