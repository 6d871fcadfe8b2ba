"""JSON log lines: fields, redaction, request id, exceptions, levels."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from oauthd.log import (
    REDACTED,
    JsonFormatter,
    audit,
    audit_fast,
    flush_lines,
    request_id_var,
    set_level,
    setup_logging,
    short_hash,
)

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass(slots=True)
class Credential:
    user: str
    client_secret: str


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    root = logging.getLogger("oauthd")
    saved = (list(root.handlers), root.level, root.propagate)
    setup_logging("info")
    yield logging.getLogger("oauthd.test")
    root.handlers, root.level, root.propagate = saved


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    assert out.endswith("\n")
    parsed = [orjson.loads(line) for line in out.splitlines()]
    assert all(isinstance(doc, dict) for doc in parsed)
    return parsed


def test_one_json_object_per_line(log: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    log.info("started", extra={"event": "daemon.start", "port": 8080})
    log.warning("disk %s", "slow")
    first, second = lines(capsys)
    assert TS.match(first["ts"])
    assert first["level"] == "info"
    assert first["logger"] == "oauthd.test"
    assert first["msg"] == "started"
    assert first["event"] == "daemon.start"
    assert first["port"] == 8080
    assert "request_id" not in first and "exc" not in first
    assert second["level"] == "warning" and second["msg"] == "disk slow"


def test_core_fields_win_over_extra(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    log.info("x", extra={"level": "fake", "ts": "fake", "logger": "fake"})
    (doc,) = lines(capsys)
    assert doc["level"] == "info" and doc["logger"] == "oauthd.test" and doc["ts"] != "fake"


def test_secret_keys_are_redacted_at_any_depth(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {
        "access_token": "leak-at",
        "refreshToken": "leak-rt",
        "client_secret": "leak-cs",
        "password": "leak-pw",
        "code": "leak-code",
        "device_code": "leak-dc",
        "headers": {"Authorization": "Bearer leak-hdr", "Cookie": "c=1", "Accept": "*/*"},
        "items": [{"user_code": "leak-uc", "n": 1}],
        "token_hash": "abcd1234",
        "token_type": "Bearer",
        "status_code": 400,
        "token_endpoint": "https://as.example/token",
        "record": Credential("alice", "leak-record"),
    }
    log.info("request", extra=extra)
    out = capsys.readouterr().out
    assert "leak" not in out and "c=1" not in out
    doc = orjson.loads(out)
    for key in ("access_token", "refreshToken", "client_secret", "password", "code"):
        assert doc[key] == REDACTED
    assert doc["headers"] == {"Authorization": REDACTED, "Cookie": REDACTED, "Accept": "*/*"}
    assert doc["items"] == [{"user_code": REDACTED, "n": 1}]
    assert doc["token_hash"] == "abcd1234"
    assert doc["token_type"] == "Bearer"
    assert doc["status_code"] == 400
    assert doc["token_endpoint"] == "https://as.example/token"
    assert doc["record"] == {"user": "alice", "client_secret": REDACTED}


def test_odd_values_do_not_break_a_line(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    loop: list[object] = []
    loop.append(loop)
    log.info("odd", extra={"raw": b"\x00secret", "obj": object(), "when": 1.5})
    log.info("loop", extra={"loop": loop, "pair": (1, 2)})
    log.info("huge", extra={"n": 2**80})
    first, second, third = lines(capsys)
    assert first["raw"] == "<7 bytes>"
    assert first["obj"].startswith("<object")
    assert second["pair"] == [1, 2]
    assert "[too deep]" in str(second["loop"])
    assert third["msg"] == "huge" and "log_error" in third


def test_request_id_on_every_line_while_set(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    token = request_id_var.set("req-42")
    try:
        log.info("a")
        log.error("b")
    finally:
        request_id_var.reset(token)
    log.info("c")
    a, b, c = lines(capsys)
    assert a["request_id"] == "req-42" and b["request_id"] == "req-42"
    assert "request_id" not in c


def test_exception_is_one_line_without_traceback(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("failed", extra={"event": "x.fail"})
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "Traceback" not in out
    doc = orjson.loads(out)
    assert doc["exc"] == "ValueError: bad thing"
    assert doc["level"] == "error"
    assert "traceback" not in doc


def test_exception_names_its_module_when_not_builtin(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    class Unavailable(Exception):
        pass

    log.error("down", exc_info=Unavailable())
    (doc,) = lines(capsys)
    assert (
        doc["exc"]
        == f"{__name__}.test_exception_names_its_module_when_not_builtin.<locals>.Unavailable"
    )


def test_traceback_only_at_debug(log: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    set_level("debug")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    doc = orjson.loads(out)
    assert doc["exc"] == "RuntimeError: boom"
    assert doc["traceback"].startswith("Traceback") and "raise RuntimeError" in doc["traceback"]


def test_levels(log: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    log.debug("hidden")
    set_level("DEBUG")
    log.debug("shown")
    set_level("error")
    log.warning("hidden too")
    (doc,) = lines(capsys)
    assert doc == doc | {"msg": "shown", "level": "debug"}
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        set_level("loud")
    with pytest.raises(ValueError):
        setup_logging("verbose")


def test_setup_is_idempotent(log: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    setup_logging("info")
    log.info("once")
    assert len(lines(capsys)) == 1
    handlers = logging.getLogger("oauthd").handlers
    ours = [h for h in handlers if isinstance(h.formatter, JsonFormatter)]
    assert len(ours) == 1
    assert logging.getLogger("oauthd").propagate is False


def test_short_hash() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert short_hash(digest) == digest.hex()[:8]
    assert short_hash(digest.hex().upper()) == digest.hex()[:8]
    leaked = short_hash("abc.not-a-digest")
    assert len(leaked) == 8 and not "abc.not-a-digest".startswith(leaked)


def test_a_fast_audit_line_is_the_formatters_line(
    log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    fields: dict[str, object] = {"user": "alice", "client_id": "c1", "expires_at": 7}
    flush_lines()  # a line an earlier test left pending (its loop ended first) goes now
    capsys.readouterr()
    token = request_id_var.set("req-1")
    try:
        audit("token_refreshed", "token refreshed", **fields)
        audit_fast("token_refreshed", "token refreshed", fields)
        flush_lines()
    finally:
        request_id_var.reset(token)
    slow, fast = (orjson.loads(line) for line in capsys.readouterr().out.splitlines())
    del slow["ts"], fast["ts"]
    assert list(fast.items()) == list(slow.items())
    assert fast["event"] == "audit.token_refreshed" and fast["request_id"] == "req-1"


def test_a_fast_audit_line_goes_through_logging_without_the_stdout_handler() -> None:
    root, audit_log = logging.getLogger("oauthd"), logging.getLogger("oauthd.audit")
    saved = (list(root.handlers), root.level)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    root.handlers, root.level = [], logging.INFO
    audit_log.addHandler(handler)
    try:
        audit_fast("token_refreshed", "token refreshed", {"user": "alice"})
    finally:
        audit_log.removeHandler(handler)
        root.handlers, root.level = saved
    (record,) = seen
    assert getattr(record, "event", None) == "audit.token_refreshed"
    assert getattr(record, "user", None) == "alice"
