"""CimdFetcher against real servers on 127.0.0.1 (an https aiohttp server with a certificate
made here for the name `cimd.test`), plain TCP listeners that count connections, and a
resolver that maps names to chosen addresses. The SSRF tests use the DEFAULT address policy;
only tests that need to reach the local https server pass `allow_loopback`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_ssrf import BLOCKED

from oauthd.oauth import ClientDocumentError
from oauthd.outbound.cimd import MAX_BODY, NEGATIVE_TTL, PER_HOST, CimdFetcher
from oauthd.outbound.ssrf import IPAddress

HOST = "cimd.test"
NOW = 1_800_000_000.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def allow_loopback(addr: IPAddress) -> bool:
    """Test-only address policy: the local https server lives on 127.0.0.1."""
    return addr.is_loopback


# -- fixtures: certificate, resolver, listeners, https server ------------------------------


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts only the certificate made here


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(Path(directory / "cert.pem"), Path(directory / "key.pem"))
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return Tls(server, client)


class StaticResolver(AbstractResolver):
    """Answers from a table; a name not in it does not exist."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [_result(host, address, port) for address in self.table[host]]

    async def close(self) -> None:
        return None


def _result(host: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)


@dataclass
class Listener:
    """Plain TCP on 127.0.0.1 (and ::1 on the same port when it is free): counts accepted
    connections and closes them."""

    port: int = 0
    connections: int = 0
    servers: list[asyncio.Server] = field(default_factory=list)

    def accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    spy = Listener()
    v4 = await asyncio.start_server(spy.accepted, "127.0.0.1", 0)
    spy.port = v4.sockets[0].getsockname()[1]
    spy.servers.append(v4)
    with contextlib.suppress(OSError):  # no IPv6 loopback, or the port is taken there
        spy.servers.append(await asyncio.start_server(spy.accepted, "::1", spy.port))
    yield spy
    for server in spy.servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def serve(tls: Tls) -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start an https server answering every path with `handler`; returns the client_id
    URL (`https://cimd.test:<port>/client.json`)."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app)
        await server.start_server(ssl=tls.server)
        servers.append(server)
        return f"https://{HOST}:{server.port}/client.json"

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def fetchers() -> AsyncIterator[Callable[..., CimdFetcher]]:
    made: list[CimdFetcher] = []

    def make(**kwargs: Any) -> CimdFetcher:
        made.append(CimdFetcher(**kwargs))
        return made[-1]

    yield make
    for fetcher in made:
        await fetcher.close()


@pytest.fixture
def local(tls: Tls, fetchers: Callable[..., CimdFetcher]) -> Callable[..., CimdFetcher]:
    """A fetcher that reaches the local https server: cimd.test -> 127.0.0.1, trusting the
    test certificate, loopback allowed."""

    def make(**kwargs: Any) -> CimdFetcher:
        options: dict[str, Any] = {
            "resolver": StaticResolver({HOST: ["127.0.0.1"]}),
            "ssl": tls.client,
            "clock": lambda: NOW,
            "timeout": 2.0,
            "address_policy": allow_loopback,
        }
        return fetchers(**(options | kwargs))

    return make


def document(client_id: str) -> dict[str, object]:
    return {
        "client_id": client_id,
        "client_name": "Example MCP client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
    }


def answer(
    body: Callable[[str], object] | bytes,
    *,
    status: int = 200,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> Handler:
    """A handler answering `body(<the URL it was asked for>)` as JSON, or raw bytes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        asked = f"https://{request.host}{request.path_qs}"
        data = body if isinstance(body, bytes) else orjson.dumps(body(asked))
        extra = dict(headers or {})
        if content_type is not None:
            extra["Content-Type"] = content_type
        return web.Response(body=data, status=status, headers=extra)

    return handler


# -- the good path and caching --------------------------------------------------------------


async def test_good_document_is_fetched_and_parsed(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    seen: list[web.Request] = []
    inner = answer(document)

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        return await inner(request)

    client_id = await serve(handler)
    fetched = await local().fetch(client_id)
    assert fetched.metadata == document(client_id)
    assert fetched.fetched_at == NOW
    assert fetched.expires_at == NOW + 3600  # no cache headers
    [request] = seen
    assert request.host == client_id.split("/")[2]  # the name, not the address
    assert request.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.example+json"],
)
async def test_json_content_types_are_accepted(
    serve: Callable[[Handler], Awaitable[str]],
    local: Callable[..., CimdFetcher],
    content_type: str,
) -> None:
    client_id = await serve(answer(document, content_type=content_type))
    assert (await local().fetch(client_id)).metadata["client_id"] == client_id


async def test_query_is_part_of_the_client_id(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    client_id = await serve(answer(document)) + "?v=2"
    assert (await local().fetch(client_id)).metadata["client_id"] == client_id


async def test_cache_headers_set_expiry_within_the_configured_bounds(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    client_id = await serve(answer(document, headers={"Cache-Control": "max-age=600"}))
    assert (await local().fetch(client_id)).expires_at == NOW + 600
    bounded = local(min_ttl=10, max_ttl=100)
    assert (await bounded.fetch(client_id)).expires_at == NOW + 100


# -- SSRF: addresses --------------------------------------------------------------------------


@pytest.mark.parametrize("address", BLOCKED)
async def test_default_policy_refuses_before_connecting(
    address: str, listener: Listener, fetchers: Callable[..., CimdFetcher]
) -> None:
    resolver = StaticResolver({"client.example.com": [address]})
    fetcher = fetchers(resolver=resolver)
    with pytest.raises(ClientDocumentError, match="resolves to a non-public address") as caught:
        await fetcher.fetch(f"https://client.example.com:{listener.port}/client.json")
    assert address not in str(caught.value)  # internal addresses are logged, not shown
    assert resolver.calls == 1
    assert listener.connections == 0


async def test_one_non_public_address_refuses_the_host(
    listener: Listener, fetchers: Callable[..., CimdFetcher]
) -> None:
    resolver = StaticResolver({"client.example.com": ["93.184.215.14", "127.0.0.1"]})
    with pytest.raises(ClientDocumentError, match="non-public address"):
        await fetchers(resolver=resolver).fetch(
            f"https://client.example.com:{listener.port}/client.json"
        )
    assert listener.connections == 0


async def test_listener_does_see_a_connection_the_policy_allows(
    listener: Listener, fetchers: Callable[..., CimdFetcher]
) -> None:
    """Control for the tests above: the same setup with loopback allowed does connect."""
    fetcher = fetchers(
        resolver=StaticResolver({"client.example.com": ["127.0.0.1"]}),
        address_policy=allow_loopback,
    )
    with pytest.raises(ClientDocumentError):
        await fetcher.fetch(f"https://client.example.com:{listener.port}/client.json")
    assert listener.connections == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"])
async def test_ip_literal_hosts_are_checked_without_resolving(
    host: str, listener: Listener, fetchers: Callable[..., CimdFetcher]
) -> None:
    resolver = StaticResolver({})
    with pytest.raises(ClientDocumentError, match="not a public address"):
        await fetchers(resolver=resolver).fetch(f"https://{host}:{listener.port}/client.json")
    assert resolver.calls == 0
    assert listener.connections == 0


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1"])
async def test_legacy_numeric_hosts_are_refused(
    host: str, listener: Listener, fetchers: Callable[..., CimdFetcher]
) -> None:
    """C resolvers read these as 127.0.0.1 without asking DNS."""
    with pytest.raises(ClientDocumentError, match="not a canonical IP address"):
        await fetchers().fetch(f"https://{host}:{listener.port}/client.json")
    assert listener.connections == 0


async def test_system_resolver_answers_are_checked(
    listener: Listener, fetchers: Callable[..., CimdFetcher]
) -> None:
    with pytest.raises(
        ClientDocumentError, match="host localhost resolves to a non-public address"
    ):
        await fetchers().fetch(f"https://localhost:{listener.port}/client.json")
    assert listener.connections == 0


async def test_unknown_host(fetchers: Callable[..., CimdFetcher]) -> None:
    with pytest.raises(ClientDocumentError, match=r"cannot resolve nowhere\.example"):
        await fetchers(resolver=StaticResolver({})).fetch("https://nowhere.example/c.json")


# -- SSRF: URL shape and redirects -------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "reason"),
    [
        ("http://client.example.com/c.json", "https"),
        ("ftp://client.example.com/c.json", "https"),
        ("client.example.com/c.json", "https"),
        ("https://client.example.com", "path"),
        ("https://client.example.com/", "path"),
        ("https://user:pw@client.example.com/c.json", "user name"),
        ("https://user@client.example.com/c.json", "user name"),
        ("https://client.example.com/c.json#top", "fragment"),
        ("https://client.example.com/c.json#", "fragment"),
        ("https:///c.json", "host"),
        ("https://client.example.com/a/../c.json", "segments"),
        ("https://client.example.com/./c.json", "segments"),
        ("https://client.example.com/%2E%2e/c.json", "segments"),
        ("https://client.example.com/c json", "characters"),
        ("https://clïent.example.com/c.json", "characters"),
        ("https://client.example.com/c.json\n", "characters"),
        ("https://client.example.com:99999/c.json", "not a valid URL"),
        ("https://client.example.com/" + "a" * 2000, "longer than"),
    ],
)
async def test_unacceptable_client_id_urls(
    client_id: str, reason: str, fetchers: Callable[..., CimdFetcher]
) -> None:
    resolver = StaticResolver({"client.example.com": ["93.184.215.14"]})
    with pytest.raises(ClientDocumentError, match=reason):
        await fetchers(resolver=resolver).fetch(client_id)
    assert resolver.calls == 0


async def test_http_url_is_refused_without_connecting(
    listener: Listener, fetchers: Callable[..., CimdFetcher]
) -> None:
    resolver = StaticResolver({"client.example.com": ["127.0.0.1"]})
    fetcher = fetchers(resolver=resolver, address_policy=allow_loopback)
    with pytest.raises(ClientDocumentError, match="must be an https URL"):
        await fetcher.fetch(f"http://client.example.com:{listener.port}/client.json")
    assert listener.connections == 0


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/x", f"https://{HOST}:{{port}}/x"])
async def test_redirects_are_not_followed(
    status: int,
    target: str,
    listener: Listener,
    serve: Callable[[Handler], Awaitable[str]],
    local: Callable[..., CimdFetcher],
) -> None:
    location = target.format(port=listener.port)
    client_id = await serve(answer(b"", status=status, headers={"Location": location}))
    with pytest.raises(
        ClientDocumentError, match=f"redirects are not followed \\(HTTP {status}\\)"
    ):
        await local().fetch(client_id)
    assert listener.connections == 0


# -- limits ------------------------------------------------------------------------------------


def _padded_document(client_id: str, size: int) -> bytes:
    base = orjson.dumps(document(client_id) | {"padding": ""})
    return orjson.dumps(document(client_id) | {"padding": "x" * (size - len(base))})


async def test_document_of_exactly_the_cap_is_accepted(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    client_id = await serve(answer(lambda url: orjson.loads(_padded_document(url, MAX_BODY))))
    assert len((await local().fetch(client_id)).metadata["padding"]) > 16000  # type: ignore[arg-type]


async def test_announced_body_over_the_cap_is_refused(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    client_id = await serve(answer(lambda url: orjson.loads(_padded_document(url, MAX_BODY + 1))))
    with pytest.raises(
        ClientDocumentError, match=f"larger than 16384 bytes \\(Content-Length {MAX_BODY + 1}"
    ):
        await local().fetch(client_id)


async def test_streamed_body_over_the_cap_is_cut_off(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(1024):  # 16 MiB if nobody stops reading
            await response.write(b" " * 16384)
        return response

    client_id = await serve(endless)
    started = time.monotonic()
    with pytest.raises(ClientDocumentError, match=r"larger than 16384 bytes$"):
        await local().fetch(client_id)
    assert time.monotonic() - started < 1.0


async def test_slow_answer_times_out(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response()

    client_id = await serve(slow)
    started = time.monotonic()
    with pytest.raises(ClientDocumentError, match=r"no complete answer .* within 0\.3 s"):
        await local(timeout=0.3).fetch(client_id)
    assert 0.25 < time.monotonic() - started < 1.0


async def test_slow_body_times_out(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    async def dribble(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(50):
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    client_id = await serve(dribble)
    started = time.monotonic()
    with pytest.raises(ClientDocumentError, match=r"within 0\.3 s"):
        await local(timeout=0.3).fetch(client_id)
    assert time.monotonic() - started < 1.0


# -- the answer (what the document must say is the protocol's: tests/oauth/test_clients_document.py)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (answer(document, status=404), "HTTP 404"),
        (answer(document, status=500), "HTTP 500"),
        (answer(document, content_type="text/html"), "Content-Type text/html is not JSON"),
        (answer(document, content_type="text/json"), "Content-Type text/json is not JSON"),
        (answer(document, content_type=None), "Content-Type application/octet-stream"),
        (answer(b"{not json", content_type="application/json"), "not valid JSON"),
        (answer(b"\xff\xfe{}", content_type="application/json"), "not valid JSON"),
        (answer(lambda url: [document(url)]), "not a JSON object"),
        (answer(lambda url: "a string"), "not a JSON object"),
    ],
)
async def test_unacceptable_answers_name_the_problem(
    handler: Handler,
    reason: str,
    serve: Callable[[Handler], Awaitable[str]],
    local: Callable[..., CimdFetcher],
) -> None:
    client_id = await serve(handler)
    with pytest.raises(ClientDocumentError, match=reason):
        await local().fetch(client_id)


async def test_the_document_comes_back_unjudged(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    """A JSON object is the transport's whole contract: the protocol judges its fields."""
    client_id = await serve(answer(lambda url: {"client_id": url + "/other"}))
    assert (await local().fetch(client_id)).metadata == {"client_id": client_id + "/other"}


async def test_compressed_answer_is_refused(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    async def compressed(request: web.Request) -> web.StreamResponse:
        body = gzip.compress(orjson.dumps(document(f"https://{request.host}{request.path}")))
        return web.Response(
            body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    client_id = await serve(compressed)
    with pytest.raises(ClientDocumentError, match="Content-Encoding gzip is not accepted"):
        await local().fetch(client_id)


# -- transport failures become ClientDocumentError -----------------------------------------


async def test_untrusted_certificate(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    client_id = await serve(answer(document))
    with pytest.raises(
        ClientDocumentError, match=r"TLS certificate of cimd\.test:\d+ is not trusted"
    ):
        await local(ssl=None).fetch(client_id)  # the system trust store


async def test_connection_refused(local: Callable[..., CimdFetcher]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ClientDocumentError, match=f"cannot connect to cimd.test:{port}"):
        await local().fetch(f"https://{HOST}:{port}/client.json")


# -- lifecycle ---------------------------------------------------------------------------------


def test_constructing_needs_no_event_loop() -> None:
    CimdFetcher()


async def test_close_is_final_and_idempotent(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    client_id = await serve(answer(document))
    fetcher = local()
    await fetcher.fetch(client_id)
    await fetcher.fetch(client_id)  # the same session
    await fetcher.close()
    await fetcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        await fetcher.fetch(client_id)


# -- coalescing, negative cache, per-host limit ----------------------------------------------


async def test_concurrent_fetches_of_one_client_id_share_one_request(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    requests = 0
    inner = answer(document)

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        requests += 1
        await asyncio.sleep(0.2)
        return await inner(request)

    client_id = await serve(slow)
    fetcher = local()
    results = await asyncio.gather(*(fetcher.fetch(client_id) for _ in range(20)))
    assert requests == 1
    assert all(r.metadata == document(client_id) for r in results)
    await fetcher.fetch(client_id)  # nothing in flight any more: a new request
    assert requests == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_fetch(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    inner = answer(document)

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return await inner(request)

    client_id = await serve(slow)
    fetcher = local()
    first = asyncio.create_task(fetcher.fetch(client_id))
    second = asyncio.create_task(fetcher.fetch(client_id))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second).metadata == document(client_id)


async def test_a_failure_is_remembered_briefly(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    requests = 0
    inner = answer(document, status=404)

    async def missing(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        requests += 1
        return await inner(request)

    client_id = await serve(missing)
    now = [NOW]
    fetcher = local(clock=lambda: now[0])
    reasons = []
    for _ in range(5):
        with pytest.raises(ClientDocumentError) as caught:
            await fetcher.fetch(client_id)
        reasons.append(str(caught.value))
    assert requests == 1 and set(reasons) == {"HTTP 404 from the client_id URL"}
    now[0] += NEGATIVE_TTL + 1
    with pytest.raises(ClientDocumentError):
        await fetcher.fetch(client_id)
    assert requests == 2


async def test_fetches_to_one_host_are_limited_and_other_hosts_are_not_starved(
    serve: Callable[[Handler], Awaitable[str]], local: Callable[..., CimdFetcher]
) -> None:
    active = most = 0
    release = asyncio.Event()
    inner = answer(document)

    async def hostile(request: web.Request) -> web.StreamResponse:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await release.wait()
        active -= 1
        return await inner(request)

    base = await serve(hostile)
    fetcher = local(timeout=5.0)
    slow = [asyncio.create_task(fetcher.fetch(f"{base}?n={i}")) for i in range(3 * PER_HOST)]
    await asyncio.sleep(0.3)
    assert most == PER_HOST  # the others wait for a slot of that host
    # Another host is not held up by them (here: a name that does not resolve, at once).
    with pytest.raises(ClientDocumentError, match=r"cannot resolve other\.test"):
        async with asyncio.timeout(1):
            await fetcher.fetch("https://other.test/client.json")
    release.set()
    results = await asyncio.gather(*slow)
    assert len(results) == 3 * PER_HOST and most == PER_HOST
    assert fetcher._hosts == {}  # no entry left behind
