"""The daemon's side of the admin socket.

Protocol, one request per connection: the client sends one JSON line,
`{"op": "sessions.list", "args": {"user": "alice"}}`; the daemon answers with lines
`{"items": [...]}` (a listing, a chunk per line, so that a million sessions never make one
huge line or one long stall) and one last line, `{"ok": true, ...}` or
`{"ok": false, "error": "...", "exit": 66}` (`exit`: the command's exit code when not 1),
then closes.

The socket is created 0600 (umask while binding, then chmod) and, as a second fence, a
peer that is neither root nor the daemon's own user is refused (SO_PEERCRED). A stale
socket left by a crash is replaced; a live one (another daemon answering) or a file that
is not a socket is an error, never silently taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from oauthd.admin.keys import key_operations
from oauthd.admin.operations import Admin, AdminError, Authority, SigningKeys
from oauthd.admin.views import ClientGroupView, ClientView, KeyView, LinkView, SessionView
from oauthd.audit import grant_ref
from oauthd.config import Config, admin_socket_path
from oauthd.exits import ExitCode
from oauthd.oauth import NewClient
from oauthd.store import Store, Unavailable

log = logging.getLogger("oauthd.admin")

MAX_REQUEST = 64 * 1024
READ_TIMEOUT = 10.0  # for the one request line
CLOSE_GRACE = 5.0  # an operation under way at shutdown may finish within this
ITEMS_PER_LINE = 500

Args = Mapping[str, object]
Chunks = AsyncIterator[Sequence[SessionView | ClientView | ClientGroupView | LinkView | KeyView]]
Answer = tuple[Chunks, dict[str, Any]]


class AdminSocketError(Exception):
    """The admin socket cannot be created; the daemon does not start."""

    exit_code = ExitCode.OSERR


def wanted(config: Config) -> bool:
    """The memory backend keeps no state dir: it has an admin socket only when
    `admin.socket` names one."""
    return config.storage.backend != "memory" or bool(config.admin.socket)


@contextlib.asynccontextmanager
async def serving(
    config: Config, store: Store, auth: Authority, keys: SigningKeys | None = None
) -> AsyncIterator[None]:
    """The admin socket, for as long as the block runs; `keys`: the signing key ring
    (None: no `keys.*` operations)."""
    if not wanted(config):
        yield
        return
    server = AdminServer(admin_socket_path(config), Admin(store, auth, config), keys)
    await server.start()
    try:
        yield
    finally:
        await server.close()


class AdminServer:
    def __init__(self, path: Path, admin: Admin, keys: SigningKeys | None = None) -> None:
        self.path = path
        self._admin = admin
        self._server: asyncio.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._ops: dict[str, Callable[[Args], Awaitable[Answer]]] = {
            "sessions.list": self._list_sessions,
            "sessions.revoke": self._revoke,
            "clients.list": self._list_clients,
            "clients.add": self._add_client,
            "clients.delete": self._delete_client,
            "clients.stats": self._client_stats,
            "links.list": self._list_links,
            "links.remove": self._remove_link,
        }
        if keys is not None:
            self._ops.update(key_operations(keys))

    async def start(self) -> None:
        sock = _bind(self.path)
        info = os.stat(self.path)
        self._inode = (info.st_dev, info.st_ino)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
        log.info("admin socket ready", extra={"event": "admin.ready", "socket": str(self.path)})

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        if self._connections:
            _, pending = await asyncio.wait(set(self._connections), timeout=CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._unlink()

    def _unlink(self) -> None:
        """Remove the socket file, unless someone replaced it meanwhile."""
        with contextlib.suppress(OSError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self.path)

    # -- one connection ----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away, or never asked
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(READ_TIMEOUT):
            line = await _read_line(reader)  # read first: closing on unread bytes resets
        if not _peer_allowed(writer):
            await _send(writer, {"ok": False, "error": "permission denied"})
            return
        try:
            op, args = _parse(line)
            run = self._ops.get(op)
            if run is None:
                raise AdminError(f"unknown operation {op!r}")
            chunks, result = await run(args)
            async for chunk in chunks:
                await _send(writer, {"items": chunk})
        except AdminError as exc:
            refusal: dict[str, Any] = {"ok": False, "error": str(exc)}
            if exc.exit_code != ExitCode.FAILURE:  # the command's exit code, when not 1
                refusal["exit"] = int(exc.exit_code)
            await _send(writer, refusal)
            return
        except Unavailable as exc:
            await _send(writer, {"ok": False, "error": f"the state is unavailable: {exc.reason}"})
            return
        except ConnectionError:
            raise
        except Exception:
            log.error("admin operation failed", exc_info=True, extra={"event": "admin.error"})
            await _send(writer, {"ok": False, "error": "internal error (see the daemon's log)"})
            return
        await _send(writer, {"ok": True, **result})

    # -- the operations ----------------------------------------------------------------------

    async def _list_sessions(self, args: Args) -> Answer:
        sessions = await self._admin.sessions(
            _text(args, "user"),
            _text(args, "client"),
            _text(args, "resource"),
            _text(args, "principal"),
        )
        return self._admin.views(sessions, ITEMS_PER_LINE), {"count": len(sessions)}

    async def _revoke(self, args: Args) -> Answer:
        grant_id, user, client = _text(args, "id"), _text(args, "user"), _text(args, "client")
        resource = _text(args, "resource")
        ended = await self._admin.revoke(grant_id, user, client, resource)
        log.info(
            "sessions revoked by the operator",
            extra={
                "event": "admin.revoke",
                "grant": grant_ref(grant_id) if grant_id else None,
                "user": user,
                "client_id": client,
                "resource": resource,
                "count": len(ended),
            },
        )
        return self._admin.views(ended, ITEMS_PER_LINE), {"count": len(ended)}

    async def _list_clients(self, args: Args) -> Answer:
        clients = await self._admin.clients()
        return _chunked(clients), {"count": len(clients)}

    async def _add_client(self, args: Args) -> Answer:
        spec = NewClient(
            name=_text(args, "name") or "",
            grant_types=_texts(args, "grant_types"),
            auth_method=_text(args, "auth_method") or "",
            jwks=_text(args, "jwks"),
            jwks_uri=_text(args, "jwks_uri"),
            scopes=_texts(args, "scopes"),
            resource=_text(args, "resource"),
        )
        view, secret = await self._admin.add_client(spec)
        log.info(
            "client created by the operator",
            extra={"event": "admin.client_added", "client_id": view.client_id},
        )
        return _chunked(()), {"client": view, "client_secret": secret}

    async def _client_stats(self, args: Args) -> Answer:
        groups = await self._admin.client_stats()
        return _chunked(groups), {"count": len(groups)}

    async def _delete_client(self, args: Args) -> Answer:
        client_id = _text(args, "client")
        if client_id is None:
            raise AdminError("say which client to delete")
        deletion = await self._admin.delete_client(client_id)
        log.info(
            "client deleted by the operator",
            extra={
                "event": "admin.client_deleted",
                "client_id": client_id,
                "ended": len(deletion.ended),
            },
        )
        client = deletion.client
        view = ClientView.of(client, len(deletion.ended)) if client is not None else None
        chunks = self._admin.views(deletion.ended, ITEMS_PER_LINE, known=client)
        return chunks, {"count": len(deletion.ended), "client": view}

    async def _list_links(self, args: Args) -> Answer:
        links = await self._admin.links()
        return _chunked(links), {"count": len(links)}

    async def _remove_link(self, args: Args) -> Answer:
        issuer, subject = _text(args, "issuer"), _text(args, "subject")
        if issuer is None or subject is None:
            raise AdminError("say which link to remove (issuer and subject)")
        link = await self._admin.remove_link(issuer, subject)
        log.info(
            "account link removed by the operator",
            extra={"event": "admin.link_removed", "issuer": issuer, "user": link.user},
        )
        return _chunked([link]), {"count": 1}


async def _chunked(views: Sequence[ClientView | ClientGroupView | LinkView]) -> Chunks:
    for start in range(0, len(views), ITEMS_PER_LINE):
        yield views[start : start + ITEMS_PER_LINE]
        await asyncio.sleep(0)


# -- the socket ------------------------------------------------------------------------------


def _bind(path: Path) -> socket.socket:
    _make_dir(path.parent)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)  # 0600 from the start: no moment where others may connect
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
    except OSError as exc:
        sock.close()
        raise AdminSocketError(f"cannot create the admin socket {path}: {_reason(exc)}") from None
    return sock


def _make_dir(directory: Path) -> None:
    """The socket's directory, made 0700 (with any missing parent) when it does not exist,
    as with the redis and postgres backends, which have no state dir of their own; an
    existing one is left as it is."""
    if directory.is_dir():
        return
    old = os.umask(0o077)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise AdminSocketError(
            f"cannot create the admin socket's directory {directory}: {_reason(exc)}"
        ) from None
    finally:
        os.umask(old)


def _clear_stale(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AdminSocketError(f"cannot check the admin socket {path}: {_reason(exc)}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise AdminSocketError(f"{path} exists and is not a socket; remove it or set admin.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a daemon that crashed
            return
        except OSError as exc:
            raise AdminSocketError(
                f"cannot check the admin socket {path}: {_reason(exc)}"
            ) from None
    raise AdminSocketError(f"another process answers on {path} (another oauthd?)")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
    """Root or our own user: the file mode already says so; this is the second fence."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


async def _send(writer: asyncio.StreamWriter, message: Mapping[str, Any]) -> None:
    writer.write(orjson.dumps(message) + b"\n")  # views are dataclasses: orjson knows them
    await writer.drain()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # longer than MAX_REQUEST
        return b""


def _parse(line: bytes) -> tuple[str, Args]:
    try:
        request = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise AdminError("the request is not one JSON line") from None
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        raise AdminError('the request needs an "op"')
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise AdminError('"args" must be an object')
    return request["op"], args


def _texts(args: Args, name: str) -> tuple[str, ...]:
    value = args.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AdminError(f"{name!r} must be a list of non-empty strings")
    return tuple(value)


def _text(args: Args, name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise AdminError(f"{name!r} must be a non-empty string")
    return value
