"""`oauthd state inspect|verify` (offline examination of a file backend's state dir) and
`oauthd state copy --from A.toml --to B.toml [--merge]` (move live state between backends)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from oauthd.cli.options import load
from oauthd.cli.output import fail, utc, write_json
from oauthd.config import Config, ConfigError, StorageConfig, load_config
from oauthd.exits import ExitCode

if TYPE_CHECKING:
    from oauthd.store import Store
    from oauthd.store.inspection import StateReport


def add_commands(sub: Any) -> None:
    """`state inspect|verify|copy` (`sub` is argparse's subparsers action)."""
    state = sub.add_parser("state", help="offline state dir tools").add_subparsers(
        dest="action", required=True
    )
    for action, text in (
        ("inspect", "summarise the state dir"),
        ("verify", "check every file; exit 1 on any damage"),
    ):
        cmd = state.add_parser(action, help=text)
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("--config")
        where.add_argument("--state-dir")
        cmd.add_argument("--json", action="store_true", help="machine-readable output")
        cmd.set_defaults(run=cmd_examine)
    cmd = state.add_parser("copy", help="copy all live state to another backend, verifying")
    cmd.add_argument("--from", dest="source", required=True, metavar="CONFIG", help="source")
    cmd.add_argument("--to", dest="target", required=True, metavar="CONFIG", help="target")
    cmd.add_argument("--merge", action="store_true", help="copy into a non-empty target")
    cmd.set_defaults(run=cmd_copy)


# -- inspect, verify -------------------------------------------------------------------------


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    return load(args).storage.path


def cmd_examine(args: argparse.Namespace) -> ExitCode:
    """`inspect` or `verify`: the same examination, two renderings; `verify` exits 1 on
    any damage."""
    from oauthd.store.inspection import examine

    path = _state_dir(args)
    if not path.is_dir():
        return fail(f"{path}: no such state directory", ExitCode.FAILURE)
    report = examine(path, time.time())
    if args.json:
        write_json(report, sys.stdout)
    else:
        (render_inspect if args.action == "inspect" else render_verify)(report, sys.stdout)
    damaged = args.action == "verify" and report.damage
    return ExitCode.FAILURE if damaged else ExitCode.OK


def _when(ts: float | None) -> str:
    return "-" if not ts else utc(ts)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def render_inspect(report: StateReport, out: TextIO) -> None:
    out.write(f"state dir    {report.path}\n")
    out.write(f"initialized  {'yes' if report.initialized else 'no'}\n")
    out.write(f"in use by    {report.lock_holder or '- (no daemon holds the lock)'}\n")
    for snap in report.snapshots:
        status = snap.error or (
            f"format oauthd-state v{snap.version}, seq {snap.seq}, saved {_when(snap.saved_at)}"
        )
        out.write(f"{snap.name:<12} {_size(snap.size)}, {status}\n")
    records = sum(s.records for s in report.segments)
    size = sum(s.size for s in report.segments)
    out.write(
        f"journal      {len(report.segments)} segments, {records} records, {_size(size)}; "
        f"{report.journal_records_after_snapshot} after the snapshot "
        f"(seq {report.base_seq} -> {report.last_seq})\n\n"
    )
    out.write(f"{'kind':<14}{'live':>10}{'expired':>10}\n")
    for kind, count in report.counts.items():
        out.write(f"{kind:<14}{count:>10}{report.expired.get(kind, 0):>10}\n")
    if report.damage:
        out.write(f"\n{len(report.damage)} problems (see `oauthd state verify`)\n")


def render_verify(report: StateReport, out: TextIO) -> None:
    if not report.damage:
        files = len(report.snapshots) + len(report.segments)
        out.write(f"OK: {report.path}: {files} files verified, seq {report.last_seq}\n")
        return
    for problem in report.damage:
        out.write(f"DAMAGE: {problem}\n")


# -- copy ------------------------------------------------------------------------------------


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


COPY_TIMEOUT = 30.0  # seconds a call of `oauthd state copy` to a shared backend may take


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


async def _open(config: Config, role: str) -> Store:
    from oauthd.clock import SystemClock
    from oauthd.persist.errors import LockedError, RecoveryError
    from oauthd.store import Unavailable, open_store

    # No read cache: a copy reads each record once, and a cached store's every write would
    # wait for its listener's confirmation (other instances' caches are invalidated by the
    # backend itself, whoever writes). A longer timeout: a call writes a whole batch, and
    # no request is waiting for it.
    storage = replace(
        config.storage, cache_size=0, timeout=max(config.storage.timeout, COPY_TIMEOUT)
    )
    try:
        store = await open_store(storage, SystemClock(), audit=config.audit)
    except LockedError as exc:
        raise _Failed(
            f"{role} {config.source}: {exc}: a daemon is running on this state dir; "
            "stop it first (state can only be copied while no oauthd uses it)",
            ExitCode.TEMPFAIL,
        ) from None
    except RecoveryError as exc:  # the postgres SchemaError too
        raise _Failed(f"{role} {config.source}: {exc}", exc.exit_code) from None
    except Unavailable as exc:
        raise _Failed(
            f"{role} {config.source}: backend unavailable: {exc.reason}", ExitCode.UNAVAILABLE
        ) from None
    except ConfigError as exc:  # the backend's extra is not installed
        raise _Failed(f"{role} {config.source}: {exc}", ExitCode.CONFIG) from None
    try:
        await store.ping()
    except Unavailable as exc:
        await store.close()
        raise _Failed(
            f"{role} {config.source}: backend unavailable: {exc.reason}", ExitCode.UNAVAILABLE
        ) from None
    return store


class _Failed(Exception):
    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def _run(source_cfg: Config, target_cfg: Config, merge: bool) -> ExitCode:
    from oauthd.store import Unavailable
    from oauthd.store.copy import CountMismatch, TargetNotEmpty, copy_state

    source = await _open(source_cfg, "source")
    try:
        target = await _open(target_cfg, "target")
        try:
            copied = await copy_state(source, target, ProgressLine(sys.stderr), merge=merge)
        except TargetNotEmpty as exc:
            return fail(f"{target_cfg.source}: {exc}", ExitCode.CONFIG)
        except CountMismatch as exc:
            _summary(exc.copied, exc.expected, exc.found)
            return fail(exc, ExitCode.FAILURE)
        except Unavailable as exc:
            return fail(f"backend unavailable: {exc.reason}", ExitCode.UNAVAILABLE)
        finally:
            await target.close()
    finally:
        await source.close()
    _summary(copied, None, None)
    return ExitCode.OK


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


def cmd_copy(args: argparse.Namespace) -> ExitCode:
    source, target = load_config(args.source), load_config(args.target)
    _check(source, target)
    try:
        return asyncio.run(_run(source, target, args.merge))
    except _Failed as exc:
        return fail(exc, exc.exit_code)
