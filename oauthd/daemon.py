"""The daemon: start-up (load state, then listen), serve until a signal, shut down in
order (stop accepting, drain, final snapshot, unlock). systemd is told each step
(`oauthd.notify`); SIGHUP reloads users, log level and the introspection secret
(`oauthd.reload`)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from oauthd.assembly import STORE, create_app
from oauthd.config import Config, Listen
from oauthd.exits import ExitCode
from oauthd.http import access_log_arguments, metrics_app
from oauthd.http.connections import AcceptFailures, GuardedRunner
from oauthd.http.keys import AUTH, METRICS
from oauthd.log import flush_lines
from oauthd.notify import Notifier
from oauthd.reload import Reloader

log = logging.getLogger("oauthd.daemon")


class StartupError(Exception):
    """The daemon could not start; `exit_code` says how it ends."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
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


async def _start(runner: web.AppRunner, config: Config, metrics: web.AppRunner | None) -> None:
    await runner.setup()  # loads the state: nothing listens before it is loaded
    await _listen(runner, config.server.listen, config.server.shutdown_timeout)
    if metrics is not None and config.metrics.listen is not None:
        await metrics.setup()
        await _listen(metrics, config.metrics.listen, 1.0, " (metrics.listen)")


async def _listen(
    runner: web.AppRunner, listen: Listen, shutdown_timeout: float, what: str = ""
) -> None:
    site = web.TCPSite(runner, listen.host, listen.port, shutdown_timeout=shutdown_timeout)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {listen}{what}: {exc.strerror or exc}", ExitCode.OSERR
        ) from None


def _metrics_runner(config: Config, app: web.Application) -> web.AppRunner | None:
    """The runner of `metrics.listen`'s own listener (None: /metrics is on the main one)."""
    if config.metrics.listen is None:
        return None
    return web.AppRunner(metrics_app(config, app[METRICS]), handle_signals=False, access_log=None)


async def _describe(runner: web.AppRunner, app: web.Application) -> str:
    """The STATUS= line: "serving on 127.0.0.1:8080, 1234 grants" ("1 grant")."""
    where = ", ".join(str(Listen(a[0], a[1])) for a in runner.addresses) or "nothing"
    store = app.get(STORE)
    if store is None:
        return f"serving on {where}, no grants"
    # The census /metrics shows: on a shared backend at a million records it takes seconds,
    # so it is waited for only briefly and not run again too soon (metrics_census.py).
    metrics = app[METRICS]
    count = (await metrics.record_counts()).get(store.grants.kind)
    if count is None or metrics.record_counts_failing:  # not counted yet, or backend down
        return f"serving on {where}, unknown grants"
    return f"serving on {where}, {count} grant{'' if count == 1 else 's'}"


# How long the event loop may hold the GIL while the journal's thread, back from its
# fdatasync, waits to hand the batch's result over (Python's default is 5 ms): every
# request waiting on a durable write would wait that long too.
GIL_SWITCH_INTERVAL = 0.0005


async def serve(config: Config, *, accept_empty: bool = False, recover: bool = False) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    app = create_app(config, accept_empty=accept_empty, recover=recover)
    runner = GuardedRunner(
        app,
        config.server,
        handle_signals=False,
        **access_log_arguments(config),
        shutdown_timeout=config.server.shutdown_timeout,
        handler_cancellation=True,  # a client that goes away closes its upstream stream
    )
    metrics = _metrics_runner(config, app)
    notifier = Notifier()
    reloader = Reloader(config, notifier, lambda: app[AUTH], lambda: _describe(runner, app))
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptFailures())
    loop.add_signal_handler(signal.SIGHUP, reloader.request)  # ignored until serving
    background = [asyncio.create_task(notifier.watchdog())]  # systemd arms it at READY=1
    notifier.status("loading the state")
    try:
        try:
            await _start(runner, config, metrics)
        except Exception as exc:
            notifier.status(f"failed to start: {exc}")
            raise
        log.info(
            "listening",
            extra={
                "event": "daemon.ready",
                "listen": str(config.server.listen),
                "metrics_listen": str(config.metrics.listen or config.server.listen),
                "issuer": config.server.issuer,
            },
        )
        notifier.ready(await _describe(runner, app))  # the state is loaded, the port bound
        reloader.serving = True
        background.append(asyncio.create_task(notifier.keep_status(reloader.describe)))
        name = await _wait_for_signal()
        reloader.serving = False
        notifier.stopping()
        log.info("shutting down", extra={"event": "daemon.stopping", "signal": name})
    finally:
        if metrics is not None:
            await metrics.cleanup()
        await runner.cleanup()  # stop accepting, drain in-flight, then the store closes
        loop.remove_signal_handler(signal.SIGHUP)  # not before: SIGHUP's default kills
        for task in background:
            task.cancel()
        notifier.close()
        flush_lines()  # the access log's last lines
    log.info("stopped", extra={"event": "daemon.stopped"})
