"""The admin socket's key operations (`oauthd keys list|rotate|retire`), over the
protocol's signing key ring. A refusal of the ring is an `AdminError` whose exit code says
which: 66 (`NOINPUT`) for a kid that names no key, 1 for a change the ring's state does not
allow (a next key already waiting; the active key without a next one; a key retired
already). Each change is audited by the ring itself (`key_created`, `key_rotated`,
`key_retired`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from oauthd.admin.operations import AdminError, SigningKeys
from oauthd.admin.views import KeyView
from oauthd.exits import ExitCode
from oauthd.oauth import KeyRingError

KeyAnswer = tuple[AsyncIterator[Sequence[KeyView]], dict[str, Any]]
KeyOp = Callable[[Mapping[str, object]], Awaitable[KeyAnswer]]


async def _once(views: Sequence[KeyView]) -> AsyncIterator[Sequence[KeyView]]:
    yield views


def key_operations(ring: SigningKeys) -> dict[str, KeyOp]:
    async def listing(args: Mapping[str, object]) -> KeyAnswer:
        await ring.refresh()  # what the store holds now, another instance's changes too
        views = [KeyView.of(k) for k in ring.members()]
        return _once(views), {"count": len(views)}

    async def rotate(args: Mapping[str, object]) -> KeyAnswer:
        try:
            added = await ring.rotate()
        except KeyRingError as exc:
            raise _refusal(exc) from None
        return _once([]), {"created": KeyView.of(added)}

    async def retire(args: Mapping[str, object]) -> KeyAnswer:
        kid = args.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AdminError("say which key to retire (its kid)", ExitCode.USAGE)
        try:
            retired, promoted = await ring.retire(kid)
        except KeyRingError as exc:
            raise _refusal(exc) from None
        return _once([]), {
            "retired": KeyView.of(retired),
            "promoted": None if promoted is None else KeyView.of(promoted),
        }

    return {"keys.list": listing, "keys.rotate": rotate, "keys.retire": retire}


def _refusal(exc: KeyRingError) -> AdminError:
    return AdminError(str(exc), ExitCode.NOINPUT if exc.missing else ExitCode.FAILURE)
