"""Talking to PostgreSQL: which failures mean "unavailable" and how they are named, and
whether an idle pooled connection is still alive. Shared by the store and `migrate`."""

from __future__ import annotations

import select
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection

from oauthd.store.base import Unavailable

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
