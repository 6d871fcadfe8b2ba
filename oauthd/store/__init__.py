"""The store: one small async interface over the backends (`open_store` picks one by name)."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from oauthd.audit import AuditReader, MemoryTrail
from oauthd.clock import Clock
from oauthd.config import AuditConfig, Config, ConfigError, StorageConfig
from oauthd.persist import EngineObserver
from oauthd.store.audit import trail_settings
from oauthd.store.base import (
    Conflict,
    Count,
    Counters,
    Store,
    StoreError,
    StoreStatus,
    Table,
    Unavailable,
)
from oauthd.store.counters import MemoryCounters
from oauthd.store.file import FileStore, make_engine
from oauthd.store.memory import MemoryStore

__all__ = [
    "Conflict",
    "Count",
    "Counters",
    "FileStore",
    "MemoryCounters",
    "MemoryStore",
    "Store",
    "StoreError",
    "StoreStatus",
    "Table",
    "Unavailable",
    "missing_extra",
    "open_audit_reader",
    "open_store",
]

# The modules each backend's extra installs (`pip install 'oauthd[redis]'`).
EXTRAS: dict[str, tuple[str, ...]] = {
    "redis": ("redis.asyncio",),
    "postgres": ("psycopg", "psycopg_pool"),
}


def missing_extra(backend: str) -> str | None:
    """The one line saying which extra `backend` needs when its modules do not import
    (None when they do, or when it needs none)."""
    for module in EXTRAS.get(backend, ()):
        try:
            importlib.import_module(module)
        except ImportError:
            return (
                f'storage.backend = "{backend}" needs the {backend} extra: '
                f"pip install 'oauthd[{backend}]'"
            )
    return None


def _require_extra(backend: str) -> None:
    problem = missing_extra(backend)
    if problem is not None:
        raise ConfigError(problem)


async def _open_memory(
    config: StorageConfig, clock: Clock, *, audit: AuditConfig | None = None, **_: object
) -> Store:
    settings = trail_settings(audit)
    return MemoryStore(clock, trail=MemoryTrail(clock, settings.chain, enabled=settings.enabled))


async def _open_file(
    config: StorageConfig,
    clock: Clock,
    *,
    accept_empty: bool = False,
    recover: bool = False,
    observer: EngineObserver | None = None,
    audit: AuditConfig | None = None,
) -> Store:
    engine = make_engine(
        config.path,
        journaled=config.durability == "journal",
        interval=config.save_interval,
        debounce=config.save_debounce,
        max_wait=config.save_max_wait,
        observer=observer,
    )
    return await FileStore.open(
        engine, clock, accept_empty=accept_empty, recover=recover, audit=audit
    )


async def _open_redis(
    config: StorageConfig, clock: Clock, *, audit: AuditConfig | None = None, **_: object
) -> Store:
    _require_extra("redis")
    from oauthd.store.redis import RedisStore  # redis-py is an optional extra

    return RedisStore(
        clock,
        config.redis_url,
        prefix=config.redis_prefix,
        pool_size=config.redis_pool_size,
        timeout=config.timeout,
        cache_size=config.cache_size,
        audit=trail_settings(audit),
    )


async def _open_postgres(
    config: StorageConfig, clock: Clock, *, audit: AuditConfig | None = None, **_: object
) -> Store:
    _require_extra("postgres")
    from oauthd.store.postgres import PostgresStore  # psycopg is an optional extra

    return await PostgresStore.open(
        config.postgres_dsn,
        clock,
        pool_size=config.postgres_pool_size,
        op_timeout=config.timeout,
        cache_size=config.cache_size,
        audit=trail_settings(audit),
    )


BACKENDS: dict[str, Callable[..., Awaitable[Store]]] = {
    "memory": _open_memory,
    "file": _open_file,
    "redis": _open_redis,
    "postgres": _open_postgres,
}


async def open_store(
    config: StorageConfig,
    clock: Clock,
    *,
    accept_empty: bool = False,
    recover: bool = False,
    observer: EngineObserver | None = None,
    audit: AuditConfig | None = None,
) -> Store:
    """Open the configured backend; for `file` this loads the state (blocking until done).
    `observer` (the metrics) hears of the file backend's fsyncs and snapshots; `audit`
    (`[audit]`; None: records on, kept forever, the host's chain) shapes the trail."""
    return await BACKENDS[config.backend](
        config, clock, accept_empty=accept_empty, recover=recover, observer=observer, audit=audit
    )


async def _file_audit_reader(config: Config) -> AuditReader:
    from oauthd.store.audit_reader import FileAuditReader

    if not config.storage.path.is_dir():
        raise ConfigError(f"{config.storage.path}: no such state directory")
    return FileAuditReader(config.storage.path)


async def _redis_audit_reader(config: Config) -> AuditReader:
    _require_extra("redis")
    from oauthd.store.redis_audit import RedisAuditReader

    storage = config.storage
    return RedisAuditReader(storage.redis_url, storage.redis_prefix, storage.timeout)


async def _postgres_audit_reader(config: Config) -> AuditReader:
    _require_extra("postgres")
    from oauthd.store.postgres_audit import PostgresAuditReader

    return PostgresAuditReader(config.storage.postgres_dsn, config.storage.timeout)


# The offline readers of each backend's audit records (`oauthd audit`, `oauthd explain`).
AUDIT_READERS: dict[str, Callable[[Config], Awaitable[AuditReader]]] = {
    "file": _file_audit_reader,
    "redis": _redis_audit_reader,
    "postgres": _postgres_audit_reader,
}


async def open_audit_reader(config: Config) -> AuditReader:
    """The configured backend's audit records, read offline (`oauthd audit`);
    `ConfigError` for a backend that keeps none (`memory`)."""
    opener = AUDIT_READERS.get(config.storage.backend)
    if opener is None:
        raise ConfigError(
            f"{config.source}: storage.backend = {config.storage.backend!r} keeps no audit "
            "records to read"
        )
    return await opener(config)
