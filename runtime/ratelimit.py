"""Rate-limited logging for bad input: one line per reason per period, with the count skipped."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Logs the first occurrence of a key, then at most once per `every_s` with a tally."""

    def __init__(self, logger: logging.Logger, every_s: float) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        self._log(logging.WARNING, key, message, *args)

    def error(self, key: str, message: str, *args: object) -> None:
        self._log(logging.ERROR, key, message, *args)

    def _log(self, level: int, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        suffix = f" ({skipped} more since the last report)" if skipped else ""
        self.logger.log(level, message + suffix, *args)
