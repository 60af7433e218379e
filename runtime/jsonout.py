"""The one JSON writer of what the gateway publishes: window results, alerts, drift events and
summaries, stats (docs/ARCHITECTURE.md, "MQTT interface").

orjson writes the same fields in the same (insertion) order as `json.dumps`, compact (no spaces
after `,` and `:`) and as UTF-8 rather than `\\u` escapes: the same JSON to any parser, in
a fraction of the time (`tests/runtime/test_jsonout.py`). Two differences make it stricter:
NaN and infinities become `null` (json.dumps wrote the non-JSON literals `NaN`/`Infinity`), and
numpy scalars and arrays are written as numbers and lists. Subclasses of float, int, str and
the containers go through `_plain` (orjson refuses some of them, json.dumps never did);
anything else (a set, an integer beyond 64 bits) raises TypeError, as json.dumps would.
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _plain(value: Any) -> Any:
    """What orjson calls for a value it cannot write itself: the plain type it derives from."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(body: Any) -> bytes:
    """`body` as UTF-8 JSON bytes, ready to publish."""
    return orjson.dumps(body, default=_plain, option=_OPTIONS)
