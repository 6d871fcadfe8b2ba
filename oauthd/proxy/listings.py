"""Listings filtered by policy (issue #12): the answers to `tools/list`, `resources/list`
and `prompts/list` lose what their caller may never call (`oauthd.policy.filter_listing`);
what only needs more scopes stays listed, since a step-up unlocks it.

A JSON answer is read whole and rewritten (the relay sends it with its new length). An
SSE answer is rewritten event by event, never holding more than one event: once every
listing the request asked for has been answered, the rest of the stream passes as it is.

On answers to requests of protocol version 2026-07-28 or later the filtered result says
`"cacheScope": "private"` (MCP schema 2026-07-28, `CacheableResult.cacheScope` in
schema/2026-07-28/schema.ts: a field of the result, next to `ttlMs`; "private": the
response may be reused only within the same authorization context). A listing behind
rules depends on who asks even when nothing was dropped for this caller, so every
listing answer of a resource with rules says so.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from oauthd.policy import LISTINGS, filter_listing
from oauthd.proxy.policing import Listed

# A listing's result key and its method (for answers on a GET stream: `_shaped`).
SHAPES = tuple((key, method) for method, (key, _, _) in LISTINGS.items())
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")


class ListingFilter:
    def __init__(self, listed: Listed) -> None:
        self._listed = listed
        self._pending = set(listed.methods)  # listings not answered yet

    def json(self, body: bytes) -> bytes:
        """A JSON answer (one response or a batch of them), filtered."""
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body  # not JSON: nothing of a listing in it
        filtered = self.filtered(message)
        return body if filtered is None else orjson.dumps(filtered)

    def sse(self) -> SseFilter:
        return SseFilter(self)

    @property
    def done(self) -> bool:
        return not self._pending and not self._listed.by_shape

    def filtered(self, message: Any) -> Any | None:
        """`message` (a response or a batch) with its listings filtered; None if nothing
        of it changed."""
        if isinstance(message, list):
            each = [self._response(m) for m in message]
            if all(m is None for m in each):
                return None
            return [m if f is None else f for m, f in zip(message, each, strict=True)]
        return self._response(message)

    def _response(self, response: Any) -> Any | None:
        if not isinstance(response, dict):
            return None
        rid = response.get("id")
        if not isinstance(rid, str | int) or isinstance(rid, bool):
            return None
        method = self._listed.methods.get(rid) or self._shaped(response)
        if method is None:
            return None
        self._pending.discard(rid)
        listed = self._listed
        result, dropped = filter_listing(
            listed.policy, listed.caller, listed.scopes, method, response.get("result")
        )
        if not isinstance(result, dict) or not (dropped or listed.private):
            return None
        if listed.private:
            result = {**result, "cacheScope": "private"}
        return {**response, "result": result}

    def _shaped(self, response: dict[str, Any]) -> str | None:
        """On a GET stream: the listing method whose answer `response` looks like."""
        result = response.get("result")
        if not self._listed.by_shape or not isinstance(result, dict):
            return None
        return next((m for key, m in SHAPES if isinstance(result.get(key), list)), None)


class SseFilter:
    """An event stream's bytes in, the same stream with its listings filtered out."""

    def __init__(self, listing: ListingFilter) -> None:
        self._listing = listing
        self._buffer = b""

    def feed(self, chunk: bytes) -> bytes:
        """What of the stream may be sent now: every complete event, filtered."""
        if self._listing.done and not self._buffer:
            return chunk
        data = self._buffer + chunk
        out: list[bytes] = []
        while not self._listing.done and (end := _EVENT_END.search(data)) is not None:
            out.append(self._event(data[: end.start()]) + end.group())
            data = data[end.end() :]
        if self._listing.done:  # the rest passes as it comes
            out.append(data)
            data = b""
        self._buffer = data
        return b"".join(out)

    def flush(self) -> bytes:
        """At the stream's end: what is left, an unterminated event, filtered too (a
        lenient client reads it)."""
        rest, self._buffer = self._buffer, b""
        if not rest or self._listing.done:
            return rest
        return self._event(rest.rstrip(b"\r\n"))

    def _event(self, event: bytes) -> bytes:
        lines = _LINE.split(event)
        data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
        if not data:
            return event
        try:
            message = orjson.loads(b"\n".join(data))
        except orjson.JSONDecodeError:
            return event
        filtered = self._listing.filtered(message)
        if filtered is None:
            return event
        kept = [line for line in lines if not line.startswith(b"data:")]
        return b"\n".join([*kept, b"data: " + orjson.dumps(filtered)])
