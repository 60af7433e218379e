"""systemd notification (sd_notify protocol) without libsystemd: one datagram per message.

Under `Type=notify` systemd sets $NOTIFY_SOCKET (a path, or '@name' for the abstract
namespace) and, with WatchdogSec=, $WATCHDOG_USEC. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY=1 / STATUS= / WATCHDOG=1 / STOPPING=1 to the service manager."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        usec = os.environ.get("WATCHDOG_USEC", "")
        watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else None
        # ping at half the timeout, as sd_watchdog_enabled(3) recommends
        self.watchdog_every_s = watchdog_s / 2 if watchdog_s else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, *fields: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def reloading(self) -> None:
        self.notify("RELOADING=1", "STATUS=reloading the deployment folder")

    def watchdog(self) -> None:
        """Pings the watchdog from the processing loop, at most every half timeout."""
        if self.sock is None or self.watchdog_every_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_every_s:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
