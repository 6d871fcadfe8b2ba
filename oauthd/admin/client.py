"""The command's side of the admin socket: blocking, one request per connection (the
protocol is in `oauthd.admin.server`)."""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from oauthd.admin.views import (
    ClientGroupView,
    ClientView,
    KeyView,
    LinkView,
    SessionView,
    from_json,
)
from oauthd.exits import ExitCode
from oauthd.oauth import NewClient as NewClient  # what `add_client` takes

TIMEOUT = 120.0  # per read: revoking a great many sessions takes a while


class AdminUnreachable(Exception):
    """No daemon answers on the socket."""

    exit_code = ExitCode.UNAVAILABLE


class AdminRefused(Exception):
    """The daemon answered with an error (no such session, ...); `exit_code`: the one the
    daemon named (`AdminError.exit_code`: DATAERR for a client it would not create, NOINPUT
    for an unknown signing key), else FAILURE."""

    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(slots=True, frozen=True)
class Reply:
    items: list[dict[str, Any]]
    result: dict[str, Any]


def _exit(message: dict[str, Any]) -> ExitCode:
    try:
        return ExitCode(message.get("exit", ExitCode.FAILURE))
    except ValueError:
        return ExitCode.FAILURE


class AdminClient:
    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def sessions(
        self,
        user: str | None = None,
        client: str | None = None,
        resource: str | None = None,
        principal: str | None = None,
    ) -> list[SessionView]:
        reply = self.ask(
            "sessions.list", user=user, client=client, resource=resource, principal=principal
        )
        return [from_json(SessionView, item) for item in reply.items]

    def revoke(
        self,
        grant_id: str | None = None,
        user: str | None = None,
        client: str | None = None,
        resource: str | None = None,
    ) -> list[SessionView]:
        reply = self.ask(
            "sessions.revoke", id=grant_id, user=user, client=client, resource=resource
        )
        return [from_json(SessionView, item) for item in reply.items]

    def clients(self) -> list[ClientView]:
        return [from_json(ClientView, item) for item in self.ask("clients.list").items]

    def add_client(self, spec: NewClient) -> tuple[ClientView, str | None]:
        """The client created and its secret (shown once; None for private_key_jwt)."""
        fields = dataclasses.asdict(spec)
        args = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
        reply = self.ask("clients.add", **args)
        secret = reply.result.get("client_secret")
        return from_json(ClientView, reply.result["client"]), secret

    def client_stats(self) -> list[ClientGroupView]:
        return [from_json(ClientGroupView, item) for item in self.ask("clients.stats").items]

    def delete_client(self, client_id: str) -> tuple[ClientView | None, list[SessionView]]:
        reply = self.ask("clients.delete", client=client_id)
        client = reply.result.get("client")
        ended = [from_json(SessionView, item) for item in reply.items]
        return (from_json(ClientView, client) if client else None), ended

    def links(self) -> list[LinkView]:
        return [from_json(LinkView, item) for item in self.ask("links.list").items]

    def remove_link(self, issuer: str, subject: str) -> LinkView:
        (item,) = self.ask("links.remove", issuer=issuer, subject=subject).items
        return from_json(LinkView, item)

    def keys(self) -> list[KeyView]:
        return [from_json(KeyView, item) for item in self.ask("keys.list").items]

    def rotate_key(self) -> KeyView:
        return from_json(KeyView, self.ask("keys.rotate").result["created"])

    def retire_key(self, kid: str) -> tuple[KeyView, KeyView | None]:
        result = self.ask("keys.retire", kid=kid).result
        promoted = result.get("promoted")
        return from_json(KeyView, result["retired"]), (
            from_json(KeyView, promoted) if promoted else None
        )

    def ask(self, op: str, **args: str | list[str] | None) -> Reply:
        request = {"op": op, "args": {k: v for k, v in args.items() if v is not None}}
        items: list[dict[str, Any]] = []
        with self._connect() as sock, sock.makefile("rb") as lines:
            try:
                sock.sendall(orjson.dumps(request) + b"\n")
                for line in lines:
                    message = orjson.loads(line)
                    if "items" in message:
                        items.extend(message["items"])
                    elif message.get("ok"):
                        return Reply(items, message)
                    else:
                        raise AdminRefused(
                            message.get("error") or "the daemon refused", _exit(message)
                        )
            except TimeoutError:
                raise AdminUnreachable(f"oauthd on {self.path} did not answer in time") from None
            except (OSError, orjson.JSONDecodeError) as exc:
                raise AdminUnreachable(f"talking to oauthd on {self.path}: {exc}") from None
        raise AdminUnreachable(
            f"oauthd on {self.path} closed the connection without an answer (did it stop?)"
        )

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise AdminUnreachable(
                f"no oauthd is running on {self.path} "
                "(start it, or use `oauthd state inspect` offline)"
            ) from None
        except PermissionError:
            sock.close()
            raise AdminUnreachable(
                f"cannot connect to {self.path}: permission denied "
                "(run as the daemon's user or root)"
            ) from None
        except OSError as exc:
            sock.close()
            raise AdminUnreachable(
                f"cannot connect to {self.path}: {exc.strerror or exc}"
            ) from None
        return sock
