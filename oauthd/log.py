"""Structured logging: one JSON object per line on stdout (journald under systemd).

Every line has `ts` (RFC 3339, UTC, milliseconds), `level`, `logger` and `msg`; `request_id`
when `request_id_var` is set; `exc` (one line: type and message) when an exception is
attached. A multi-line `traceback` field appears only while the `oauthd` logger is at debug.

Convention for callers: the message is a short constant phrase and the data goes in
`extra`, with an `event` name first:

    log.info("token refreshed", extra={"event": "token.refresh", "grant": short_hash(h)})

Never put a secret in `msg` or its arguments: only `extra` is guarded. Values under keys
that name a secret (token, secret, password, code, authorization, cookie, ...) are replaced
by "[redacted]" at any depth, unless the key's last word says it is not the secret itself
(`token_hash`, `token_type`, `token_endpoint`, ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import re
import sys
import time
import traceback
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

import orjson

ROOT = "oauthd"
FOREIGN = ("aiohttp", "asyncio", "psycopg", "redis")  # library loggers: their lines as JSON too
LEVELS = ("debug", "info", "warning", "error", "critical")
REDACTED = "[redacted]"

request_id_var: ContextVar[str | None] = ContextVar("oauthd_request_id", default=None)
"""The id of the request being served; set by the HTTP layer, logged on every line."""

# Matched inside the key with separators removed, so `accessToken`, `api-key` and
# `Set-Cookie` are caught; over-redacting a harmless field is the accepted cost.
_SECRET_WORDS = (
    "token",
    "secret",
    "passw",
    "passphrase",
    "code",
    "authorization",
    "bearer",
    "cookie",
    "credential",
    "apikey",
    "privatekey",
)
_SAFE_LAST_WORDS = frozenset(
    {"hash", "type", "types", "method", "methods", "endpoint", "uri", "url", "count", "len"}
)
_SAFE_KEYS = frozenset({"status_code", "http_status_code", "exit_code", "error_code"})
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
_MAX_DEPTH = 8


def short_hash(digest: bytes | str) -> str:
    """First 8 hex characters of a digest, enough to correlate log lines.

    A str that is not hex is taken for a secret passed by mistake and hashed first, so
    the raw value can never reach a log line.
    """
    if isinstance(digest, bytes):
        return digest.hex()[:8]
    if _HEX.fullmatch(digest):
        return digest[:8].lower()
    return hashlib.sha256(digest.encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=1024)
def is_secret_key(key: str) -> bool:
    """True when a field named `key` may hold something that authenticates."""
    words = [w for w in _WORD_SPLIT.split(_CAMEL.sub(r"\1_\2", key).lower()) if w]
    if not words or "_".join(words) in _SAFE_KEYS or words[-1] in _SAFE_LAST_WORDS:
        return False
    flat = "".join(words)
    return any(word in flat for word in _SECRET_WORDS)


def redact(value: object, depth: int = 0) -> object:
    """A copy of `value` with the values of secret-named keys replaced, at any depth.

    Dataclass instances are turned into dicts first (orjson would dump every field).
    Containers nested deeper than `_MAX_DEPTH` (or circular) are cut to "[too deep]".
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping | list | tuple) and depth >= _MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, depth + 1) for v in value]
    return value


def _level_number(level: str) -> int:
    name = level.strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    return logging.getLevelNamesMapping()[name.upper()]


def _exc_line(exc: BaseException) -> str:
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    text = " ".join(str(exc).split())
    return f"{name}: {text}" if text else name


def _fallback(obj: object) -> str:
    if isinstance(obj, bytes | bytearray):
        return f"<{len(obj)} bytes>"  # raw bytes may be a secret: never dump them
    return str(obj)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            doc["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in doc:
                doc[key] = REDACTED if is_secret_key(key) else redact(value)
        self._add_exception(doc, record)
        try:
            line = orjson.dumps(doc, default=_fallback, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as err:  # e.g. an int beyond 64 bits in `extra`
            doc = {k: doc[k] for k in ("ts", "level", "logger", "msg")}
            doc["log_error"] = _exc_line(err)
            line = orjson.dumps(doc)
        return line.decode()

    def _add_exception(self, doc: dict[str, object], record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            doc["exc"] = _exc_line(exc)
        if logging.getLogger(ROOT).getEffectiveLevel() > logging.DEBUG:
            return
        if exc is not None:
            doc["traceback"] = "".join(traceback.format_exception(exc)).rstrip()
        if record.stack_info:
            doc["stack"] = record.stack_info


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stdout` is at the time (test capture, redirection)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # Handler.handle holds self.lock here
        super().emit(record)


def setup_logging(level: str) -> None:
    """Send the `oauthd` logger tree to stdout as JSON lines at `level`.

    Idempotent: the handler installed by an earlier call is replaced, and records do not
    propagate to Python's root logger (so nothing is printed twice). Handlers that others
    attached (pytest's log capture) are left alone. Raises ValueError for an unknown level.
    """
    number = _level_number(level)
    for name in (ROOT, *FOREIGN):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old, _StdoutHandler):
                logger.removeHandler(old)
                old.close()
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger(ROOT).setLevel(number)
    for name in FOREIGN:  # libraries: their warnings and errors only, as JSON too
        logging.getLogger(name).setLevel(max(number, logging.WARNING))


def set_level(level: str) -> None:
    """Change the level of the `oauthd` logger (SIGHUP reload). Raises ValueError."""
    logging.getLogger(ROOT).setLevel(_level_number(level))


# -- lines written past the logging machinery ---------------------------------------------

LINE_FLUSH_DELAY = 0.05  # seconds a written line may wait in the buffer
_pending_lines: list[bytes] = []
_second: tuple[int, str] = (0, "")
_millisecond: tuple[int, str] = (0, "")


def timestamp() -> str:
    """`ts` of now as `JsonFormatter` writes it (computed once a millisecond)."""
    global _second, _millisecond
    now = int(time.time() * 1000)
    if now != _millisecond[0]:
        whole, ms = divmod(now, 1000)
        if whole != _second[0]:
            _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        _millisecond = (now, f"{_second[1]}.{ms:03d}Z")
    return _millisecond[1]


def write_line(doc: dict[str, object]) -> None:
    """One line as `JsonFormatter` would write it, without the logging machinery (it cost a
    quarter of a proxied request's instructions): for a line per request, the access log.
    `doc` starts with `ts` (`timestamp()`), `level`, `logger` and `msg`; the caller has
    checked the level, and its values are plain ones that are never secrets. Lines wait up
    to LINE_FLUSH_DELAY and go out together (so a line of the logging machinery written
    meanwhile may come before them; each line is whole); `flush_lines` at shutdown. Only
    from the event loop's thread."""
    _pending_lines.append(orjson.dumps(doc))
    if len(_pending_lines) == 1:
        try:
            asyncio.get_running_loop().call_later(LINE_FLUSH_DELAY, flush_lines)
        except RuntimeError:  # no loop: at once
            flush_lines()


def flush_lines() -> None:
    if not _pending_lines:
        return
    data = b"\n".join(_pending_lines) + b"\n"
    _pending_lines.clear()
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    stream.flush()  # what the handlers wrote first goes first
    if buffer is None:  # a text stream only (a test's capture)
        stream.write(data.decode())
        stream.flush()
    else:
        buffer.write(data)
        buffer.flush()


AUDIT_LOGGER = "oauthd.audit"
_audit_log = logging.getLogger(AUDIT_LOGGER)
_root_log = logging.getLogger(ROOT)


def audit_fast(event: str, message: str, fields: dict[str, object]) -> None:
    """`audit` at info level, the same line written past the logging machinery
    (`write_line`) while `setup_logging`'s handler has the lines: for a record written once
    per request (a refresh), whose line cost a sixth of it. `fields` are an audit event's
    (never a secret, never a `LogRecord` attribute's name)."""
    if not _audit_log.isEnabledFor(logging.INFO):
        return
    if not any(isinstance(h, _StdoutHandler) for h in _root_log.handlers):
        _audit_log.info(message, extra={"event": f"audit.{event}", **fields})  # as any line
        return
    doc: dict[str, object] = {
        "ts": timestamp(),
        "level": "info",
        "logger": AUDIT_LOGGER,
        "msg": message,
    }
    request_id = request_id_var.get()
    if request_id is not None:
        doc["request_id"] = request_id
    doc["event"] = f"audit.{event}"
    doc.update(fields)
    write_line(doc)


def audit(event: str, message: str, *, level: int = logging.INFO, **fields: object) -> None:
    """One audit line (logger `oauthd.audit`, `event` = "audit.<event>"): sign-ins,
    consents, tokens issued, refreshed and revoked, reuse detected, registrations. Fields
    name who and what (user, client_id, grant: 8 characters of the grant id), never a
    secret; the request id comes with every line as usual. A field must not be named like
    a `LogRecord` attribute (`name`, `msg`, `args`, ...)."""
    _audit_log.log(level, message, extra={"event": f"audit.{event}", **fields})
