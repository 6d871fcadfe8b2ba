"""/authorize -> /login -> /consent -> back to the client, and the requests an attacker makes
there: no redirect ever goes to a URI that was not registered."""

from __future__ import annotations

import pytest

from tests.support.app import Running
from tests.support.browser import Answer, Browser
from tests.support.configs import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER
from tests.support.http_client import OauthdClient, Pkce

REGISTERED = ["https://app.example/cb", "http://127.0.0.1/callback", "http://localhost/callback"]


@pytest.fixture
async def app_client(client: OauthdClient) -> dict[str, str]:
    return await client.register_public(REGISTERED, client_name="Example <App>")


def params_for(
    client: OauthdClient, app: dict[str, str], redirect_uri: str, **extra: str | None
) -> dict[str, str]:
    return client.authorize_params(app["client_id"], redirect_uri, Pkce.new(), **extra)


def assert_error_page(answer: Answer, status: int = 400) -> None:
    """An HTML error page: no redirect anywhere, no traceback."""
    assert answer.status == status, (answer.status, answer.location, answer.text[:300])
    assert answer.is_page
    assert "Location" not in answer.headers
    assert "Traceback" not in answer.text


async def test_code_flow_step_by_step(client: OauthdClient, app_client: dict[str, str]) -> None:
    browser = client.browser()
    params = params_for(client, app_client, "http://127.0.0.1:51234/callback")
    first = await browser.request("GET", "/authorize", params=params)
    assert first.status == 302
    assert first.location is not None and first.location.startswith("/login?request=")
    assert first.headers["Cache-Control"] == "no-store"

    login = await browser.request("GET", first.location)
    assert login.status == 200
    form = login.form()
    assert form.method == "post" and form.action == "/login"
    assert {"username", "password", "csrf_token", "request"} <= set(form.fields)
    assert "Example &lt;App&gt;" in login.text

    consent = await browser.request("POST", "/login", data=_typed(form.fields))
    assert consent.status == 303
    assert consent.location == f"/consent?request={form.fields['request']}"

    page = await browser.request("GET", consent.location)
    assert page.status == 200
    assert "Example &lt;App&gt;" in page.text and "127.0.0.1" in page.text and "mcp" in page.text
    assert set(page.form().buttons) == {("decision", "deny"), ("decision", "allow")}
    done = await browser.request(
        "POST", "/consent", data={**page.form().fields, "decision": "allow"}
    )
    assert done.status == 303
    assert done.location is not None
    assert done.location.startswith("http://127.0.0.1:51234/callback?")
    query = done.redirect_query()
    assert set(query) == {"code", "state", "iss"}
    assert query["state"] == params["state"]
    assert query["iss"] == client.issuer


def _typed(fields: dict[str, str]) -> dict[str, str]:
    return {**fields, "username": USER, "password": PASSWORD}


async def test_consent_is_remembered_per_user_and_client(
    client: OauthdClient, app_client: dict[str, str]
) -> None:
    await client.tokens(app_client)
    # Another browser, another port: alice's login goes straight back to the client.
    tokens = await client.tokens(app_client, "http://127.0.0.1:40001/callback", consent=False)
    assert tokens["token_type"] == "Bearer"
    # Bob has not consented: he is asked.
    browser = client.browser()
    page = await browser.authorize(params_for(client, app_client, "https://app.example/cb"))
    consent = await browser.sign_in(page, OTHER_USER, OTHER_PASSWORD)
    assert consent.status == 200 and "as bob?" in consent.text


async def test_a_denial_is_not_remembered(client: OauthdClient, app_client: dict[str, str]) -> None:
    browser = client.browser()
    page = await browser.authorize(params_for(client, app_client, "https://app.example/cb"))
    await browser.decide(await browser.sign_in(page), "deny")
    page = await browser.authorize(params_for(client, app_client, "https://app.example/cb"))
    consent = await browser.sign_in(page)
    assert consent.status == 200 and "decision" in dict(consent.form().buttons)


async def test_consent_for_one_client_is_not_consent_for_another(
    client: OauthdClient, app_client: dict[str, str]
) -> None:
    await client.tokens(app_client)
    other = await client.register_public(client_name="Other app")
    browser = client.browser()
    page = await browser.authorize(params_for(client, other, "http://127.0.0.1:9999/callback"))
    consent = await browser.sign_in(page)
    assert consent.status == 200 and "Other app" in consent.text


async def test_deny_redirects_with_access_denied(
    client: OauthdClient, app_client: dict[str, str]
) -> None:
    browser = client.browser()
    params = params_for(client, app_client, "https://app.example/cb")
    consent = await browser.sign_in(await browser.authorize(params))
    answer = await browser.decide(consent, "deny")
    assert answer.status == 303
    query = answer.redirect_query()
    assert query["error"] == "access_denied"
    assert (query["state"], query["iss"]) == (params["state"], client.issuer)
    assert "code" not in query


REDIRECT_VARIANTS = {
    "other host": "https://evil.example/cb",
    "sub-domain": "https://app.example.evil.example/cb",
    "other path": "https://app.example/cb2",
    "trailing slash": "https://app.example/cb/",
    "path prefix": "https://app.example/c",
    "added query": "https://app.example/cb?x=1",
    "fragment": "https://app.example/cb#frag",
    "userinfo": "https://user@app.example/cb",
    "userinfo host swap": "https://app.example@evil.example/cb",
    "different path case": "https://app.example/CB",
    "different host case": "https://APP.example/cb",
    "different scheme case": "HTTPS://app.example/cb",
    "http instead of https": "http://app.example/cb",
    "other port on https": "https://app.example:8443/cb",
    "https instead of http loopback": "https://127.0.0.1/callback",
    "localhost instead of 127.0.0.1": "http://localhost:5000/cb",
    "127.0.0.1 instead of localhost path": "http://127.0.0.1:5000/cb",
    "::1 instead of 127.0.0.1": "http://[::1]:5000/callback",
    "loopback other path": "http://127.0.0.1:5000/callback/x",
    "loopback added query": "http://127.0.0.1:5000/callback?next=https://evil.example",
    "numeric loopback": "http://2130706433:5000/callback",
    "percent-encoded host": "http://127.0.0.%31:5000/callback",
    "backslash": "http://127.0.0.1:5000\\@evil.example/callback",
    "javascript": "javascript:alert(1)",
    "empty": "",
}


@pytest.mark.parametrize("redirect_uri", REDIRECT_VARIANTS.values(), ids=REDIRECT_VARIANTS.keys())
async def test_unregistered_redirect_uri_gets_a_page_not_a_redirect(
    client: OauthdClient, app_client: dict[str, str], redirect_uri: str
) -> None:
    browser = client.browser()
    answer = await browser.authorize(params_for(client, app_client, redirect_uri))
    assert_error_page(answer)
    # Also when every other parameter is wrong too: the redirect URI is judged first.
    bad = params_for(
        client, app_client, redirect_uri, response_type="token", code_challenge_method="plain"
    )
    assert_error_page(await browser.authorize(bad))


async def test_registered_variants_match(client: OauthdClient, app_client: dict[str, str]) -> None:
    """The controls: exact https, loopback on any port."""
    for uri in (
        "https://app.example/cb",
        "http://127.0.0.1:61000/callback",
        "http://localhost:61000/callback",
        "http://127.0.0.1/callback",
    ):
        answer = await client.browser().authorize(params_for(client, app_client, uri))
        assert answer.status == 200 and "username" in answer.form().fields, uri


OPEN_REDIRECTS = [
    {"client_id": "unknown", "redirect_uri": "https://evil.example"},
    {"client_id": "unknown", "redirect_uri": "https://evil.example", "response_type": "code"},
    {"redirect_uri": "https://evil.example", "response_type": "code"},
    {"client_id": "", "redirect_uri": "https://evil.example"},
    {"client_id": "x" * 3000, "redirect_uri": "https://evil.example"},
    {"client_id": "https://evil.example", "redirect_uri": "https://evil.example"},
]


@pytest.mark.parametrize("params", OPEN_REDIRECTS)
async def test_open_redirect_attempts_get_a_page(
    client: OauthdClient, params: dict[str, str]
) -> None:
    answer = await client.browser().authorize(params)
    assert_error_page(answer)


async def test_repeated_parameters_get_a_page(
    client: OauthdClient, app_client: dict[str, str]
) -> None:
    params = list(params_for(client, app_client, "https://app.example/cb").items())
    params.append(("redirect_uri", "https://evil.example/cb"))
    assert_error_page(await client.browser().authorize(params))


async def test_redirect_uri_may_be_omitted_only_when_unambiguous(client: OauthdClient) -> None:
    web_app = await client.register_public(["https://app.example/cb"])
    pkce = Pkce.new()
    params = client.authorize_params(web_app["client_id"], "x", pkce)
    del params["redirect_uri"]
    page = await client.browser().authorize(params)
    assert page.status == 200 and "username" in page.form().fields
    loopback = await client.register_public()
    params = client.authorize_params(loopback["client_id"], "x", pkce)
    del params["redirect_uri"]
    assert_error_page(await client.browser().authorize(params))


ERRORS_REDIRECTED = [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"code_challenge": "!" * 43}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "unsupported_response_type"),
    ({"scope": "mcp admin"}, "invalid_scope"),
    ({"resource": "https://other.example/mcp"}, "invalid_target"),
    ({"resource": "http://127.0.0.1:1/mcp"}, "invalid_target"),
]


@pytest.mark.parametrize(("changes", "error"), ERRORS_REDIRECTED)
async def test_errors_after_the_redirect_uri_is_validated_are_redirected(
    client: OauthdClient, app_client: dict[str, str], changes: dict[str, str | None], error: str
) -> None:
    params = params_for(client, app_client, "http://127.0.0.1:4444/callback")
    params.update(changes)  # type: ignore[arg-type]
    params = {k: v for k, v in params.items() if v is not None}
    answer = await client.browser().authorize(params)
    assert answer.status == 302, answer.text
    assert answer.location is not None
    assert answer.location.startswith("http://127.0.0.1:4444/callback?")
    query = answer.redirect_query()
    assert query["error"] == error
    assert query["state"] == params["state"]
    assert query["iss"] == client.issuer
    assert "code" not in query


async def test_error_redirect_without_state_has_no_state(
    client: OauthdClient, app_client: dict[str, str]
) -> None:
    params = params_for(client, app_client, "https://app.example/cb", code_challenge_method="plain")
    del params["state"]
    query = (await client.browser().authorize(params)).redirect_query()
    assert "state" not in query and query["iss"] == client.issuer


async def test_resource_spellings_of_ours_are_accepted(
    client: OauthdClient, app_client: dict[str, str]
) -> None:
    upper = client.resource.replace("http://", "HTTP://") + "/"
    for resource in (client.resource, upper, None):
        params = params_for(client, app_client, "https://app.example/cb", resource=resource)
        page = await client.browser().authorize({k: v for k, v in params.items() if v})
        assert page.status == 200 and "username" in page.form().fields


async def test_overlong_state_is_refused(client: OauthdClient, app_client: dict[str, str]) -> None:
    params = params_for(client, app_client, "https://app.example/cb", state="s" * 3000)
    answer = await client.browser().authorize(params)
    assert 400 <= answer.status < 500 and "Traceback" not in answer.text


async def test_login_and_consent_pages_for_unknown_requests(oauthd: Running) -> None:
    browser: Browser = oauthd.client.browser()
    for path in ("/login?request=nope", "/consent?request=nope", "/login", "/consent"):
        answer = await browser.request("GET", path)
        assert_error_page(answer, answer.status)
        assert 400 <= answer.status < 500


async def test_state_round_trips_exactly(client: OauthdClient, app_client: dict[str, str]) -> None:
    state = "a&b=c d/é?#%20+"
    params = params_for(client, app_client, "https://app.example/cb", state=state)
    answer = await client.browser().code_flow(params)
    assert answer.redirect_query()["state"] == state


async def test_registered_query_is_kept(client: OauthdClient) -> None:
    app = await client.register_public(["https://app.example/cb?tenant=1"])
    params = params_for(client, app, "https://app.example/cb?tenant=1")
    answer = await client.browser().code_flow(params)
    assert answer.location is not None
    assert answer.location.startswith("https://app.example/cb?tenant=1&code=")
    assert answer.redirect_query()["tenant"] == "1"


async def test_login_page_admits_the_redirect_in_form_action(
    client: OauthdClient, app_client: dict[str, str]
) -> None:
    """With consent remembered, the login POST itself redirects to the client, which a
    browser checks against the login page's CSP form-action."""
    await client.tokens(app_client, "http://127.0.0.1:43123/callback")
    browser = client.browser()
    page = await browser.authorize(
        params_for(client, app_client, "http://127.0.0.1:43124/callback")
    )
    assert "form-action 'self' http://127.0.0.1:43124" in page.headers["Content-Security-Policy"]
    answer = await browser.sign_in(page)
    assert answer.status == 303
    assert answer.location is not None
    assert answer.location.startswith("http://127.0.0.1:43124/callback?code=")
