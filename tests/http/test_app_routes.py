"""Every route renders its errors in the one place (`Routes`), except `/mcp`, whose proxy
answers for itself in JSON-RPC; CORS is on the API's answers only, errors included."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from oauthd.assembly import create_app
from oauthd.config import default_config
from oauthd.http.errors import RENDERED, Routes
from oauthd.store import Unavailable
from tests.support.app import Running


def test_every_route_but_mcp_renders_its_errors_here(tmp_path: Path) -> None:
    app = create_app(default_config(tmp_path))
    routes = [r for r in app.router.routes() if r.resource is not None]
    paths = {r.resource.canonical for r in routes if r.resource is not None}
    assert {"/mcp", "/token", "/authorize", "/account", "/healthz", "/metrics"} <= paths
    for route in routes:
        assert route.resource is not None
        if route.resource.canonical == "/mcp":
            assert route.handler not in RENDERED
        else:
            assert route.handler in RENDERED, (route.method, route.resource.canonical)


async def test_cors_on_api_answers_and_their_errors_not_on_pages(oauthd: Running) -> None:
    http, base = oauthd.client.session, oauthd.client.base
    async with http.post(f"{base}/token", data={"grant_type": "nonsense"}) as answer:
        assert answer.status == 400
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert answer.headers["X-Request-Id"]
    async with http.options(f"{base}/register") as answer:
        assert answer.status == 204
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    async with http.get(f"{base}/authorize") as answer:
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert answer.headers["X-Request-Id"]
    async with http.post(f"{base}/introspect", data={}) as answer:
        assert "Access-Control-Allow-Origin" not in answer.headers


async def test_an_unavailable_store_is_a_page_on_page_routes_only() -> None:
    """Decided by the route: an API client that accepts text/html still gets JSON."""
    app = web.Application()

    async def down(request: web.Request) -> web.Response:
        raise Unavailable("redis: connection refused", retry_after=2)

    Routes(app).post("/api", down)
    Routes(app, pages=True).post("/page", down)
    async with TestClient(TestServer(app)) as client:
        api = await client.post("/api", headers={"Accept": "text/html,*/*"})
        assert api.status == 503 and api.headers["Retry-After"] == "2"
        assert (await api.json())["error"] == "temporarily_unavailable"
        page = await client.post("/page", headers={"Accept": "application/json"})
        assert page.status == 503 and page.headers["Retry-After"] == "2"
        assert page.content_type == "text/html"


async def test_no_answer_names_the_server_software(oauthd: Running) -> None:
    """aiohttp would say `Server: Python/3.11 aiohttp/x.y`: not on pages, API, errors or /mcp."""
    http, base = oauthd.client.session, oauthd.client.base
    for method, path in [
        ("GET", "/healthz"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("POST", "/token"),
        ("GET", "/authorize"),
        ("GET", "/no/such/path"),
        ("POST", "/mcp"),
    ]:
        async with http.request(method, f"{base}{path}") as answer:
            assert "Server" not in answer.headers, (method, path, answer.headers["Server"])
