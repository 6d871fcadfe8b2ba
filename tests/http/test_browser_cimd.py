"""Client ID Metadata Documents over HTTP: a `client_id` URL that leads to this machine is
refused with a page, and nothing ever connects to it.

The app's own fetcher is used as built by `create_app`, with the system resolver: the name
`localhost` resolves to loopback addresses through /etc/hosts, without any network, which
is exactly what a hostile name pointing at 127.0.0.1 does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.support.app import Running
from tests.support.http_client import Pkce


@dataclass
class Listener:
    """TCP listeners on 127.0.0.1 and ::1 (same port) that count connections."""

    port: int
    connections: int = 0

    def accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    counter = Listener(0)
    first = await asyncio.start_server(counter.accepted, "127.0.0.1", 0)
    counter.port = first.sockets[0].getsockname()[1]
    servers = [first]
    with contextlib.suppress(OSError):  # no IPv6 loopback here: nothing to count there
        servers.append(await asyncio.start_server(counter.accepted, "::1", counter.port))
    yield counter
    for server in servers:
        server.close()
        await server.wait_closed()


CLIENT_IDS = [
    "https://localhost:{port}/client.json",
    "https://localhost.:{port}/client.json",
    "https://LOCALHOST:{port}/client.json",
    "https://127.0.0.1:{port}/client.json",
    "https://[::1]:{port}/client.json",
    "https://[::ffff:127.0.0.1]:{port}/client.json",
    "https://127.1:{port}/client.json",
    "https://2130706433:{port}/client.json",
    "https://0x7f.0.0.1:{port}/client.json",
    "http://localhost:{port}/client.json",
    "https://user@localhost:{port}/client.json",
]


@pytest.mark.parametrize("template", CLIENT_IDS)
async def test_loopback_client_id_urls_are_never_fetched(
    oauthd: Running, listener: Listener, template: str
) -> None:
    client_id = template.format(port=listener.port)
    redirect_uri = "http://127.0.0.1:5000/callback"
    params = oauthd.client.authorize_params(client_id, redirect_uri, Pkce.new())
    page = await oauthd.client.browser().authorize(params)
    assert page.status == 400, page.text
    assert page.is_page and "Location" not in page.headers
    assert "This application is not known here" in page.text
    assert "Traceback" not in page.text
    if template.startswith("https://localhost:"):
        assert "resolves to a non-public address" in page.text  # the resolver guard said no

    token = await oauthd.client.token(
        grant_type="authorization_code", code="a.b", code_verifier="v" * 43, client_id=client_id
    )
    assert (token.status, token.json()["error"]) == (401, "invalid_client")

    await asyncio.sleep(0.05)  # a connection attempt, had there been one, has landed
    assert listener.connections == 0


async def test_the_listener_does_count(listener: Listener) -> None:
    """The control: a connection to the listener is seen."""
    _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.close()
    await asyncio.sleep(0.05)
    assert listener.connections == 1
