"""The daemon: start-up (load state, then listen), serve until a signal, shut down in
order (stop accepting, drain, final snapshot, unlock)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from oauthd.config import Config
from oauthd.http import create_app

log = logging.getLogger("oauthd.daemon")


class StartupError(Exception):
    """The daemon could not start; `exit_code` says how it ends."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def _wait_for_signal() -> str:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig.name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _start(runner: web.AppRunner, config: Config) -> None:
    await runner.setup()  # loads the state: nothing listens before it is loaded
    listen = config.server.listen
    site = web.TCPSite(
        runner, listen.host, listen.port, shutdown_timeout=config.server.shutdown_timeout
    )
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(f"cannot listen on {listen}: {exc.strerror or exc}", 71) from None


async def serve(config: Config, *, accept_empty: bool = False, recover: bool = False) -> None:
    app = create_app(config, accept_empty=accept_empty, recover=recover)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.server.shutdown_timeout,
        handler_cancellation=True,  # a client that goes away closes its upstream stream
    )
    try:
        await _start(runner, config)
        log.info(
            "listening",
            extra={
                "event": "daemon.ready",
                "listen": str(config.server.listen),
                "issuer": config.server.issuer,
            },
        )
        name = await _wait_for_signal()
        log.info("shutting down", extra={"event": "daemon.stopping", "signal": name})
    finally:
        await runner.cleanup()  # stop accepting, drain in-flight, then the store closes
    log.info("stopped", extra={"event": "daemon.stopped"})
