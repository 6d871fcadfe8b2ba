"""Child of tests/e2e/test_disk_faults.py, run as root of its own user + mount namespace
(`unshare -Urm`): oauthd's real HTTP app with its state dir on a tiny tmpfs that fills up.

    full_disk_retries.py GRACE_SECONDS MOUNTPOINT

1. mount a 1 MiB tmpfs; start the app (file backend, state dir on it; a fake clock);
   eight sessions (code flow + exchange) and eight fresh codes;
2. fill the tmpfs; refresh every session and exchange every code at once, wave after
   wave, until requests are refused (their journal batch met the full disk);
3. free the disk, wait for /readyz 200, move the clock past the grace window
   (`tokens.refresh_grace`), and retry every request that got 503, as its Retry-After
   says: what each retry got, and whether every session still works.

It prints one JSON object of what it observed; the test makes the assertions.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for tests.support

from tests.support.app import Running
from tests.support.browser import Answer
from tests.support.configs import make_config
from tests.support.http_client import Pkce, client_auth
from tests.support.ports import free_port

REDIRECT = "http://127.0.0.1:43123/callback"
SESSIONS = 8


def fill(mount: Path) -> Path:
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


async def exchange(running: Running, client: dict[str, Any], code: str, verifier: str) -> Answer:
    return await running.client.token(
        grant_type="authorization_code",
        code=code,
        code_verifier=verifier,
        redirect_uri=REDIRECT,
        **client_auth(client),
    )


async def active(running: Running, token: str) -> bool:
    body = await running.client.introspect(token, running.introspection_secret)
    return bool(body["active"])


@dataclass
class Refused:
    """The requests of the wave that met the full disk and got 503."""

    waves: int = 0
    statuses: list[int] = field(default_factory=list)
    retry_after: list[str | None] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    codes: list[tuple[str, str]] = field(default_factory=list)  # code, PKCE verifier


async def waves_until_refused(
    running: Running,
    client: dict[str, Any],
    sessions: list[dict[str, Any]],
    codes: list[tuple[str, Pkce]],
) -> Refused:
    """Every session refreshes and every code is exchanged, all at once (so that many of
    them share the journal batch that fails, or queue behind it), wave after wave: a full
    disk may still take a few records in a page the journal already holds. What the wave
    that met the full disk got: its requests answered 503 are the ones to retry."""
    tokens = [s["refresh_token"] for s in sessions]
    pending = [(code, pkce.verifier) for code, pkce in codes]
    refused = Refused()
    while not refused.statuses:
        refused.waves += 1
        assert refused.waves < 100, "the full disk never refused a write"
        answers = await asyncio.gather(
            *(running.client.refresh(client, t) for t in tokens),
            *(exchange(running, client, c, v) for c, v in pending),
        )
        kept_tokens = []
        for token, answer in zip(tokens, answers[: len(tokens)], strict=True):
            if answer.status == 200:
                kept_tokens.append(answer.json()["refresh_token"])
            else:
                refused.refresh_tokens.append(token)
        for code, answer in zip(pending, answers[len(tokens) :], strict=True):
            if answer.status != 200:
                refused.codes.append(code)
        pending = []  # an exchanged code is done; refused ones are retried later
        tokens = kept_tokens
        refused.statuses = [a.status for a in answers if a.status != 200]
        refused.retry_after = [a.headers.get("Retry-After") for a in answers if a.status != 200]
    return refused


async def until_ready(running: Running, within: float) -> float:
    started = time.monotonic()
    while (await running.client.call("GET", "/readyz")).status != 200:
        if time.monotonic() - started > within:
            raise AssertionError(f"not ready {within} s after the disk was freed")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def scenario(grace: float, mount: Path) -> dict[str, Any]:
    config = make_config(
        mount,
        free_port(),
        storage={"path": mount / "state", "save_debounce": 0.05, "save_max_wait": 0.2},
        tokens={"refresh_grace": grace},
    )
    running = Running(config)
    await running.start()
    report: dict[str, Any] = {}
    try:
        app = await running.client.register_public(client_name="Retrying App")
        sessions = [
            await running.client.tokens(app, REDIRECT, consent=n == 0) for n in range(SESSIONS)
        ]
        codes = [
            await running.client.authorization_code(app, REDIRECT, consent=False)
            for _ in range(SESSIONS)
        ]
        filler = fill(mount)
        refused = await waves_until_refused(running, app, sessions, codes)
        report["waves"], report["while_full"] = refused.waves, refused.statuses
        report["retry_after"] = refused.retry_after
        report["ready_while_full"] = (await running.client.call("GET", "/readyz")).status

        filler.unlink()
        report["ready_after"] = await until_ready(running, within=20.0)
        running.clock.advance(grace + 2.0)  # the client retries after the grace window

        retried = [await running.client.refresh(app, t) for t in refused.refresh_tokens]
        retried += [await exchange(running, app, c, v) for c, v in refused.codes]
        report["retried_refreshes"] = len(refused.refresh_tokens)
        report["retried_exchanges"] = len(refused.codes)
        report["retries"] = [a.status for a in retried]
        report["retry_errors"] = [a.text for a in retried if a.status != 200]
        fresh = [a.json() for a in retried if a.status == 200]
        report["live_after"] = [await active(running, t["access_token"]) for t in fresh]
        following = [await running.client.refresh(app, t["refresh_token"]) for t in fresh]
        report["following_refreshes"] = [a.status for a in following]
        metrics = (await running.client.call("GET", "/metrics")).text
        report["reuse_lines"] = [
            line
            for line in metrics.splitlines()
            if line.startswith("oauthd_reuse_detected_total") and not line.endswith(" 0.0")
        ]
    finally:
        await running.close()
    return report


def main() -> None:
    grace, mount = float(sys.argv[1]), Path(sys.argv[2])
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        report = asyncio.run(scenario(grace, mount))
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
