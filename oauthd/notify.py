"""The systemd notify protocol (sd_notify(3)) in a few lines of socket code, no libsystemd.

Under `Type=notify` systemd passes `$NOTIFY_SOCKET`: a datagram `AF_UNIX` socket, a path or
an abstract name written with a leading `@`. Each message is one datagram of `KEY=VALUE`
lines. oauthd sends:

- `READY=1` with `STATUS=` once the state is loaded and the port is bound (never before);
- `WATCHDOG=1` every half of `$WATCHDOG_USEC` from a task on the event loop, so that a loop
  that is stuck stops sending and systemd kills and restarts the daemon (only when
  `$WATCHDOG_PID` is unset or names this process);
- `STATUS=` lines ("serving on 127.0.0.1:8080, 1234 grants");
- `RELOADING=1` with `MONOTONIC_USEC=` when a SIGHUP reload starts, `READY=1` when it ends;
- `STOPPING=1` when shutdown starts.

Without `$NOTIFY_SOCKET` every call is a no-op. A failed send is logged once and never
stops the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger("oauthd.notify")

STATUS_EVERY = 60.0  # seconds between STATUS= refreshes while serving


def _address(value: str) -> str | None:
    """The socket address `$NOTIFY_SOCKET` names; None if unset or not a Unix socket."""
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    if value:
        log.warning(
            "unsupported NOTIFY_SOCKET; not notifying the service manager",
            extra={"event": "notify.unsupported", "address": value},
        )
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 messages (half of `$WATCHDOG_USEC`), or None."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by a wrapper)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


class Notifier:
    """Talks to the service manager; every method is a no-op without `$NOTIFY_SOCKET`."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env) if self._address else None
        self._socket: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send one message of `KEY=VALUE` lines; True if it left."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)  # never stall the event loop
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify the service manager",
                    extra={"event": "notify.failed", "reason": exc.strerror or str(exc)},
                )
            return False
        log.debug("notified the service manager", extra={"event": "notify.sent", "lines": lines})
        return True

    def status(self, text: str) -> None:
        self.send(f"STATUS={_one_line(text)}")

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={_one_line(status)}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: draining requests, then a final snapshot")

    async def watchdog(self) -> None:
        """WATCHDOG=1 every `watchdog_interval` until cancelled; returns at once if there is
        no watchdog. Runs on the event loop: a blocked loop sends nothing."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def keep_status(self, describe: Callable[[], Awaitable[str]]) -> None:
        """Refresh STATUS= every STATUS_EVERY seconds until cancelled."""
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(STATUS_EVERY)
            self.status(await describe())

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
