"""SIGHUP: re-read the config file and apply what can change while serving.

The local users (`[[login.users]]`), the log level (`log.level`) and the two secrets
rotated in place, the introspection client secret and the identity provider's client
secret (re-read from their files even when the reference is unchanged: that is how they
are rotated), take effect at once; no connection is touched. A secret that cannot be read
fails the reload like a bad file: the running values stay. Any other key that changed is
logged as needing a restart and keeps its running value. A config that does not load
keeps the running one, and the reason (the ConfigError message, naming the file and key)
is logged. Password hashes are never logged: only which usernames were added, removed or
changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from oauthd.config import Config, ConfigError, load_config
from oauthd.log import LEVELS, set_level
from oauthd.notify import Notifier
from oauthd.oauth import AuthServer
from oauthd.users import Users

log = logging.getLogger("oauthd.daemon")

RELOADABLE = frozenset(
    {
        "login.users",
        "log.level",
        "introspection.client_secret",
        "login.oidc.client_secret",
        "login.github.client_secret",
    }
)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the config keys whose values differ ("storage.path")."""
    if dataclasses.is_dataclass(old) and type(old) is type(new):
        found: list[str] = []
        for field in dataclasses.fields(old):
            path = f"{prefix}{field.name}"
            found += changed_keys(getattr(old, field.name), getattr(new, field.name), path + ".")
        return found
    return [] if old == new else [prefix.rstrip(".")]


class Reloader:
    """Applies a re-read config to the running daemon, one reload at a time."""

    def __init__(
        self,
        config: Config,
        notifier: Notifier,
        auth: Callable[[], AuthServer],
        describe: Callable[[], Awaitable[str]],
    ) -> None:
        self._auth = auth  # the server is built while the state loads, after this
        self.running = config  # what is in effect: the start-up config plus reloaded keys
        self._notifier = notifier
        self.describe = describe
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()
        self.serving = False  # set by the daemon between READY=1 and STOPPING=1

    def request(self) -> None:
        """The SIGHUP handler: start a reload (they run one after the other)."""
        if not self.serving:
            log.warning("SIGHUP ignored: not serving", extra={"event": "config.reload_ignored"})
            return
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """Re-read the file and apply it; False if it did not load (nothing changed).
        READY=1 follows RELOADING=1 whatever happens: systemd waits for it."""
        async with self._lock:
            self._notifier.reloading()
            log.info("reloading the configuration", extra={"event": "config.reload"})
            failure: str | None = None
            try:
                new = await asyncio.to_thread(load_config, self.running.source)
                self._announce_secrets(self._auth().reload_secrets(new))
                self._apply(new, Users(new.login.users))
            except (ConfigError, ValueError) as exc:
                failure = str(exc)
            except Exception as exc:
                log.exception("reload failed", extra={"event": "config.reload_error"})
                failure = f"{type(exc).__name__}: {exc}"
            if failure is not None:
                log.error(
                    "configuration not reloaded: keeping the running one",
                    extra={"event": "config.reload_failed", "reason": failure},
                )
            status = await self.describe()
            self._notifier.ready(
                status if failure is None else f"{status}; last reload failed: {failure}"
            )
            return failure is None

    def _apply(self, new: Config, users: Users) -> None:
        old = self.running
        changed = changed_keys(old, new)
        if "login.users" in changed:
            self._auth().replace_users(users)
            before = {u.username: u.password_hash for u in old.login.users}
            after = {u.username: u.password_hash for u in new.login.users}
            log.info(
                "local users reloaded",
                extra={
                    "event": "config.users_reloaded",
                    "added": sorted(after.keys() - before.keys()),
                    "removed": sorted(before.keys() - after.keys()),
                    "changed": sorted(
                        n for n in before.keys() & after.keys() if before[n] != after[n]
                    ),
                    "users": len(after),
                },
            )
        if "log.level" in changed:
            self._set_level(old.log.level, new.log.level)
        for key in changed:
            if key not in RELOADABLE:
                log.warning(
                    f"{key} changed: restart to apply",
                    extra={"event": "config.restart_needed", "key": key},
                )
        self.running = dataclasses.replace(
            old,
            login=dataclasses.replace(
                old.login,
                users=new.login.users,
                oidc=dataclasses.replace(
                    old.login.oidc, client_secret=new.login.oidc.client_secret
                ),
                github=dataclasses.replace(
                    old.login.github, client_secret=new.login.github.client_secret
                ),
            ),
            log=dataclasses.replace(old.log, level=new.log.level),
            introspection=dataclasses.replace(
                old.introspection, client_secret=new.introspection.client_secret
            ),
        )
        log.info(
            "configuration reloaded",
            extra={
                "event": "config.reloaded",
                "applied": [k for k in changed if k in RELOADABLE],
                "restart_needed": [k for k in changed if k not in RELOADABLE],
            },
        )

    @staticmethod
    def _announce_secrets(changed: list[str]) -> None:
        """Say which secrets changed, never what they are."""
        for key in changed:
            log.info(f"{key} reloaded", extra={"event": "config.secret_reloaded", "key": key})

    @staticmethod
    def _set_level(old: str, new: str) -> None:
        """Change the level; the line saying so is written at the more verbose of the two."""
        extra = {"event": "config.log_level", "from": old, "to": new}
        if LEVELS.index(new) < LEVELS.index(old):
            set_level(new)
            log.info("log level changed", extra=extra)
        else:
            log.info("log level changed", extra=extra)
            set_level(new)
