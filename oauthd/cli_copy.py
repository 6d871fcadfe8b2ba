"""`oauthd state copy --from A.toml --to B.toml [--merge]`: move live state between backends."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from oauthd.config import Config, ConfigError, StorageConfig, load_config

EX_MISMATCH = 1
EX_UNAVAILABLE = 69
EX_CONFIG = 78


class ProgressLine:
    """`grants 12000/50000` on stderr: rewritten in place on a TTY, else a line per 10 %."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.step: dict[str, int] = {}

    def __call__(self, kind: str, done: int, total: int) -> None:
        if self.tty:
            end = "\n" if done >= total else ""
            self.out.write(f"\r{kind:<14}{done}/{total}{end}")
            self.out.flush()
            return
        step = 10 if total == 0 else done * 10 // total
        if step > self.step.get(kind, -1):
            self.step[kind] = step
            self.out.write(f"{kind:<14}{done}/{total}\n")
            self.out.flush()


def _where(storage: StorageConfig) -> tuple[str, ...]:
    if storage.backend == "file":
        return ("file", str(storage.path.resolve()))
    if storage.backend == "redis":
        return ("redis", storage.redis_url, storage.redis_prefix)
    return (storage.backend, storage.postgres_dsn)


def _check(source: Config, target: Config) -> None:
    for config in (source, target):
        if config.storage.backend == "memory":
            raise ConfigError(
                f"{config.source}: storage.backend is 'memory': it keeps no state to copy"
            )
    if _where(source.storage) == _where(target.storage):
        raise ConfigError(f"{source.source} and {target.source} name the same storage")
    if source.storage.backend == "file" and not source.storage.path.is_dir():
        raise ConfigError(f"{source.source}: {source.storage.path}: no such state directory")


async def _open(config: Config, role: str) -> Any:
    from oauthd.clock import SystemClock
    from oauthd.persist.errors import LockedError, RecoveryError
    from oauthd.store import Unavailable, open_store

    try:
        store = await open_store(config.storage, SystemClock())
    except LockedError as exc:
        raise _Failed(
            f"{role} {config.source}: {exc}: a daemon is running on this state dir; "
            "stop it first (state can only be copied while no oauthd uses it)",
            EX_UNAVAILABLE,
        ) from None
    except RecoveryError as exc:  # the postgres SchemaError too
        raise _Failed(f"{role} {config.source}: {exc}", exc.exit_code) from None
    except Unavailable as exc:
        raise _Failed(f"{role} {config.source}: backend unavailable: {exc.reason}", 69) from None
    except ImportError as exc:
        raise _Failed(f"{role} {config.source}: {exc} (install the extra)", EX_CONFIG) from None
    try:
        await store.ping()
    except Unavailable as exc:
        await store.close()
        raise _Failed(f"{role} {config.source}: backend unavailable: {exc.reason}", 69) from None
    return store


class _Failed(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def _run(source_cfg: Config, target_cfg: Config, merge: bool) -> int:
    from oauthd.store import Unavailable
    from oauthd.store.copy import CountMismatch, TargetNotEmpty, copy_state

    source = await _open(source_cfg, "source")
    try:
        target = await _open(target_cfg, "target")
        try:
            copied = await copy_state(source, target, ProgressLine(sys.stderr), merge=merge)
        except TargetNotEmpty as exc:
            print(f"oauthd: {target_cfg.source}: {exc}", file=sys.stderr)
            return EX_CONFIG
        except CountMismatch as exc:
            _summary(exc.copied, exc.expected, exc.found)
            print(f"oauthd: {exc}", file=sys.stderr)
            return EX_MISMATCH
        except Unavailable as exc:
            print(f"oauthd: backend unavailable: {exc.reason}", file=sys.stderr)
            return EX_UNAVAILABLE
        finally:
            await target.close()
    finally:
        await source.close()
    _summary(copied, None, None)
    return 0


def _summary(
    copied: dict[str, int], expected: dict[str, int] | None, found: dict[str, int] | None
) -> None:
    out = sys.stdout
    out.write(f"{'kind':<14}{'copied':>10}{'in target':>12}\n")
    for kind, n in copied.items():
        there = "ok" if found is None or expected is None else str(found.get(kind, 0))
        if expected is not None and found is not None and found.get(kind) != expected[kind]:
            there += f" (expected {expected[kind]})"
        out.write(f"{kind:<14}{n:>10}{there:>12}\n")
    out.write(f"{'total':<14}{sum(copied.values()):>10}\n")


def cmd_copy(args: argparse.Namespace) -> int:
    source, target = load_config(args.source), load_config(args.target)
    _check(source, target)
    try:
        return asyncio.run(_run(source, target, args.merge))
    except _Failed as exc:
        print(f"oauthd: {exc}", file=sys.stderr)
        return exc.exit_code


def add_command(state: Any) -> None:
    """Add `copy` to the `state` subcommands (`state` is argparse's subparsers action)."""
    cmd = state.add_parser("copy", help="copy all live state to another backend, verifying")
    cmd.add_argument("--from", dest="source", required=True, metavar="CONFIG", help="source")
    cmd.add_argument("--to", dest="target", required=True, metavar="CONFIG", help="target")
    cmd.add_argument("--merge", action="store_true", help="copy into a non-empty target")
    cmd.set_defaults(run=cmd_copy)
