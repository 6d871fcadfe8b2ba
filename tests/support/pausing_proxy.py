"""`PausingProxy`: a TCP proxy in front of a backend server that can let a command through
and hold back its answer, as a network that stalls after the request left does: the
server does the work, the client times out and reports an error (#11 item 5)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Connection:
    holding: bool = False
    held: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class PausingProxy:
    """Forwards 127.0.0.1:`port` to `target`, both ways. After `hold_answers_after(marker)`,
    the next client connection whose request bytes contain `marker` has those bytes
    forwarded and every answer on it held back (`held` counts such connections)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._marker: bytes | None = None
        self._server: asyncio.Server | None = None
        self._connections: list[_Connection] = []
        self.held = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def hold_answers_after(self, marker: bytes) -> None:
        self._marker = marker

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writers=[writer])
        self._connections.append(connection)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        connection.writers.append(up_writer)
        await asyncio.gather(
            self._requests(reader, up_writer, connection),
            self._answers(up_reader, writer, connection),
            return_exceptions=True,
        )
        for each in connection.writers:
            each.close()

    async def _requests(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        while data := await reader.read(65536):
            if self._marker is not None and self._marker in data:
                self._marker = None
                connection.holding = True
                self.held += 1
            up.write(data)
            await up.drain()
        up.close()

    async def _answers(
        self, up: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        while data := await up.read(65536):
            if connection.holding:
                connection.held.append(data)  # the server answered; the client never hears
                continue
            writer.write(data)
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in self._connections:
                for writer in connection.writers:
                    writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
