"""Talking to PostgreSQL: which failures mean "unavailable" and how they are named (shared
by the store and `migrate`), and running the store's operations on pooled connections
that are alive (`Connections`)."""

from __future__ import annotations

import select
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from oauthd.store.base import Unavailable, finish_within

T = TypeVar("T")

FAILURES: tuple[type[BaseException], ...] = (psycopg.Error, OSError, TimeoutError)

Rows = list[tuple[Any, ...]]


def unavailable(exc: BaseException, timeout: float) -> Unavailable:
    if isinstance(exc, TimeoutError):
        reason = f"postgres: no answer within {timeout:g}s"
    else:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = f"postgres: {first_line}"
    return Unavailable(reason)


def closed_by_server(conn: AsyncConnection[Any]) -> bool:
    """True if an idle pooled connection is dead: closed, or readable. Nothing arrives on
    an idle connection (no LISTEN here) unless the server ended it: a shutdown or a
    terminated backend sends a FATAL message, then EOF. One poll, no round trip."""
    if conn.closed:
        return True
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


def connect_timeout(timeout: float) -> int:
    return max(2, round(timeout))  # libpq: whole seconds, at least 2


def rows_of(
    query: str, params: dict[str, Any]
) -> Callable[[AsyncConnection[Any]], Awaitable[Rows]]:
    async def rows(conn: AsyncConnection[Any]) -> Rows:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description is not None else []

    return rows


class Connections:
    """Operations on the pool's connections, each bounded by `timeout`. `problem` is why the
    last operation failed, None once one worked again.

    After a server restart every pooled connection is dead. Each one is found before a
    query is sent on it, closed and replaced, so no request fails for it; a write is never
    sent twice, since whether a failed one took effect is unknown, but a read whose
    connection broke under it runs once more."""

    def __init__(self, pool: AsyncConnectionPool[Any], timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout
        self.problem: str | None = None

    async def read(self, query: str, params: dict[str, Any]) -> Rows:
        """The rows of a read-only query (`run` with `read=True`)."""
        return await self.run(rows_of(query, params), read=True)

    async def write(self, query: str, params: dict[str, Any]) -> Rows:
        """The rows a writing query returns (`run`: never sent twice)."""
        return await self.run(rows_of(query, params))

    async def run(
        self, operation: Callable[[AsyncConnection[Any]], Awaitable[T]], *, read: bool = False
    ) -> T:
        """`operation` on a live pooled connection, finished within the timeout; any
        failure, and no result in time, is `Unavailable`.

        A read (`read=True`) whose connection broke under it runs once more on another
        (the server went away after the connection was last used); a write never: whether
        it took effect is unknown. At the timeout the operation is abandoned, not awaited
        (`finish_within`): psycopg's cancellation waits on the server, maybe a silent one."""
        work = self._twice_if_broken(operation) if read else self._once(operation)
        try:
            result = await finish_within(work, self.timeout)
        except FAILURES as exc:
            raise self._failed(exc) from None
        self.problem = None
        return result

    async def _once(self, operation: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        async with self._live_connection() as conn:
            return await operation(conn)

    async def _twice_if_broken(
        self, operation: Callable[[AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        used: AsyncConnection[Any] | None = None
        try:
            async with self._live_connection() as used:
                return await operation(used)
        except psycopg.OperationalError as exc:
            if isinstance(exc, PoolTimeout) or used is None or not used.broken:
                raise
        return await self._once(operation)

    @asynccontextmanager
    async def _live_connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection that the server has not closed. Dead ones (after a server
        restart, every idle one) are closed here before any query is sent on them, and
        the pool replaces them."""
        while True:
            conn = await self.pool.getconn()
            if not closed_by_server(conn):
                break
            await conn.close()  # the pool opens a new connection for a closed one returned
            await self.pool.putconn(conn)
        try:
            yield conn
        finally:
            await self.pool.putconn(conn)

    def _failed(self, exc: BaseException) -> Unavailable:
        error = unavailable(exc, self.timeout)
        self.problem = error.reason
        return error
