"""A fake service manager for the daemon tests: a datagram socket that plays systemd's
`$NOTIFY_SOCKET` and records each message with the time it arrived."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Message:
    at: float  # time.monotonic() when it arrived
    lines: tuple[str, ...]

    def get(self, key: str) -> str | None:
        for line in self.lines:
            name, _, value = line.partition("=")
            if name == key:
                return value
        return None


class NotifyListener:
    """Bound at `path` (or an abstract name when `path` starts with "@"); `on_message` runs
    in the reader thread as each message arrives, before the next one is read."""

    def __init__(self, path: Path | str, on_message: Callable[[Message], None] | None = None):
        self.address = str(path)
        self.messages: list[Message] = []
        self._on_message = on_message
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        self._socket.bind(bind_to)
        self._socket.settimeout(0.05)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                continue
            message = Message(time.monotonic(), tuple(data.decode().split("\n")))
            if self._on_message is not None:
                self._on_message(message)
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    def having(self, line: str) -> list[Message]:
        """The messages that contain `line` ("READY=1") or a line starting with it ("STATUS=")."""
        return [m for m in list(self.messages) if any(x.startswith(line) for x in m.lines)]

    def wait_for(self, line: str, count: int = 1, timeout: float = 20) -> list[Message]:
        """Wait until `count` messages having `line` arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.having(line)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {count} x {line!r} in {self.all_lines()}")
                self._changed.wait(left)
        return self.having(line)

    def all_lines(self) -> list[str]:
        return [line for m in list(self.messages) for line in m.lines]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
