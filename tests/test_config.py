import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest

from oauthd import cli, passwords
from oauthd.config import (
    Config,
    ConfigError,
    Listen,
    LocalUser,
    RuleConfig,
    UpstreamConfig,
    default_config,
    load_config,
    parse_duration,
)
from oauthd.config.logo import Logo
from oauthd.passwords import hash_password, parse_password_hash, verify_password

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.toml"
HASH = hash_password("pw")
HASH_HINT = 'not a recognised password hash (make one with "oauthd users hash-password")'


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def error_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> str:
    """The message for a config.toml in the current directory, as an operator would see it."""
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("config.toml")
    return str(info.value)


# --- the example file ---------------------------------------------------------------------


def test_example_loads_with_documented_values() -> None:
    config = load_config(EXAMPLE)
    assert config.source == EXAMPLE
    assert config.server.listen == Listen("127.0.0.1", 8080)
    assert config.server.issuer == "http://127.0.0.1:8080"
    assert config.storage.backend == "file"
    assert config.storage.path == REPO / "var" / "oauthd"
    assert config.login.provider == "local"
    (demo,) = config.login.users
    assert demo.username == "demo"
    assert verify_password(parse_password_hash(demo.password_hash), "demo-password")


def test_example_values_are_the_defaults() -> None:
    config = load_config(EXAMPLE)
    without_users = dataclasses.replace(config.login, users=())
    expected = dataclasses.replace(default_config(REPO), source=EXAMPLE)
    assert dataclasses.replace(config, login=without_users) == expected


VALUES = (Listen, Logo)  # dataclasses that are one key's value, not a section


def schema_keys(cls: type, prefix: str = "") -> set[str]:
    """Every key path the config dataclasses accept, sections included."""
    keys = set()
    for name, hint in typing.get_type_hints(cls).items():
        if name == "source" or cls in VALUES:
            continue
        keys.add(f"{prefix}{name}")
        for inner in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(inner) and inner not in VALUES:
                keys |= schema_keys(inner, f"{prefix}{name}.")
    return keys


def toml_keys(table: dict[str, object], prefix: str = "") -> set[str]:
    keys = set()
    for name, value in table.items():
        keys.add(f"{prefix}{name}")
        if isinstance(value, dict):
            keys |= toml_keys(value, f"{prefix}{name}.")
        for item in value if isinstance(value, list) else ():
            if isinstance(item, dict):
                keys |= toml_keys(item, f"{prefix}{name}.")
    return keys


def commented_resources() -> str:
    """The example's commented [[resource]] tables, uncommented."""
    text = EXAMPLE.read_text(encoding="utf-8")
    block = text[text.index("# [[resource]]") :]
    return "\n".join(line.removeprefix("#").removeprefix(" ") for line in block.splitlines())


def commented_issuers() -> str:
    """The example's commented [[trusted_issuer]] tables, uncommented (its prose, `##`,
    stays a comment)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    block = text[text.index("## --- The JWT bearer grant") : text.index("## --- end of")]
    return "\n".join(line.removeprefix("#").removeprefix(" ") for line in block.splitlines())


def test_example_documents_every_key() -> None:
    written = toml_keys(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))
    # The resource example is commented out ([upstream] and [[resource]] do not mix);
    # every [upstream] key is a [[resource]] key too.
    written |= toml_keys(tomllib.loads(commented_resources()))
    written |= toml_keys(tomllib.loads(commented_issuers()))
    written |= {f"resource.{k}" for k in schema_keys(UpstreamConfig)}
    own = {"resource", "resources", "scopes_supported"}
    expected = {k for k in schema_keys(Config) if k.partition(".")[0] not in own}
    expected |= {"resource", "resource.rule"} | {
        f"resource.{k}" for k in schema_keys(UpstreamConfig)
    }
    expected |= {f"resource.{k}" for k in ("path", "name", "scopes")}
    expected |= {f"resource.rule.{k}" for k in schema_keys(RuleConfig)}
    # jwks_file is one key (a path) read into a JwksFile, not a table
    expected -= {"trusted_issuer.jwks_file.path", "trusted_issuer.jwks_file.document"}
    assert written == expected
    assert "storage.save_max_wait" in written and "login.users.password_hash" in written


# --- defaults -----------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    config = default_config(tmp_path)
    assert config.source == tmp_path / "config.toml"
    server, upstream, storage = config.server, config.upstream, config.storage
    assert server.listen == Listen("127.0.0.1", 8080)
    assert server.issuer == "http://127.0.0.1:8080"
    assert server.shutdown_timeout == 10
    assert upstream.url == "http://127.0.0.1:9000/mcp"
    assert (upstream.connect_timeout, upstream.read_timeout) == (5, 300)
    assert (storage.backend, storage.durability) == ("file", "journal")
    assert storage.path == tmp_path / "var" / "oauthd"
    assert (storage.save_interval, storage.save_debounce, storage.save_max_wait) == (30, 1, 5)
    t = config.tokens
    assert (t.access_ttl, t.refresh_ttl, t.code_ttl) == (3600, 30 * 86400, 60)
    assert (t.device_ttl, t.pending_ttl, t.consent_ttl) == (600, 600, 90 * 86400)
    assert t.refresh_grace == 10
    assert (config.login.provider, config.login.users) == ("local", ())
    assert config.log.level == "info"
    assert config.pages.service_name == "" and config.pages.logo is None
    oauth = config.oauth
    assert (oauth.unused_client_lifetime, oauth.idle_client_lifetime) == (86400, 90 * 86400)
    assert oauth.unused_registrations_per_app == 20


def test_a_scope_hierarchy(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[oauth]\nscopes = ["mcp", "files:read", "files:write", "files:admin"]\n'
        'scope_implies = { "files:write" = ["files:read"], "files:admin" = ["files:write"] }\n',
    )
    assert config.oauth.scope_implies == (
        ("files:write", ("files:read",)),
        ("files:admin", ("files:write",)),
    )


def test_the_pages_may_name_the_service(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[pages]\nservice_name = "Acme MCP"\n')
    assert config.pages.service_name == "Acme MCP"


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == default_config(tmp_path)


def test_config_is_frozen(tmp_path: Path) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        default_config(tmp_path).log.level = "debug"  # type: ignore[misc]


def test_values_are_read(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[storage]\nbackend = "memory"\ndurability = "snapshot"\n'
        '[tokens]\naccess_ttl = "15m"\n[log]\nlevel = "debug"\n'
        f'[[login.users]]\nusername = "alice"\npassword_hash = "{HASH}"\n'
        f'[[login.users]]\nusername = "bob"\npassword_hash = "{HASH}"\n',
    )
    assert (config.storage.backend, config.storage.durability) == ("memory", "snapshot")
    assert config.tokens.access_ttl == 900
    assert config.log.level == "debug"
    assert config.login.users == (LocalUser("alice", HASH, ()), LocalUser("bob", HASH, ()))


def test_the_read_cache_may_be_off(tmp_path: Path) -> None:
    assert load_text(tmp_path, "[storage]\ncache_size = 0\n").storage.cache_size == 0
    assert load_text(tmp_path, "").storage.cache_size == 10000


# --- error messages -----------------------------------------------------------------------


def test_exit_code_is_ex_config() -> None:
    assert ConfigError.exit_code == 78
    assert ConfigError("x").exit_code == 78


USER = f'[[login.users]]\nusername = "alice"\npassword_hash = "{HASH}"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[storage]\nsave_debounce = "fast"',
            'storage.save_debounce: expected a duration like "1s", got "fast"',
        ),
        (
            USER + '[[login.users]]\nusername = "bob"\npassword_hash = "hunter2"',
            f"login.users[1].password_hash: {HASH_HINT}",
        ),
        ('[storage]\ncolour = "blue"', "storage.colour: unknown key"),
        ("[colour]\nhue = 1", "colour: unknown section"),
        ('debug = "yes"', "debug: unknown section"),
        ("[storage.extra]", "storage.extra: unknown key"),
        ("[server]\nlisten = 8080", "server.listen: expected a string, got 8080"),
        ("[server]\nissuer = true", "server.issuer: expected a string, got true"),
        ("[upstream]\nurl = [1]", "upstream.url: expected a string, got an array"),
        ("server = 5", "server: expected a table, got 5"),
        (
            '[storage]\nbackend = "sqlite"',
            'storage.backend: expected one of "memory", "file", "redis", "postgres", got "sqlite"',
        ),
        (
            '[storage]\ndurability = "yolo"',
            'storage.durability: expected one of "journal", "snapshot", got "yolo"',
        ),
        (
            '[storage]\nsave_max_wait = "500ms"',
            "storage.save_max_wait: must be at least save_debounce (1s), got 0.5s",
        ),
        (
            '[storage]\nsave_debounce = "10s"',
            "storage.save_max_wait: must be at least save_debounce (10s), got 5s",
        ),
        (
            '[login]\nprovider = "oidc"',
            'login.oidc.issuer: required when login.provider = "oidc"',
        ),
        (
            '[login]\nprovider = "github"\n[login.github]\nclient_id = "x"',
            'login.encryption_key: required when login.provider = "github" (upstream tokens are '
            'kept encrypted): "file:PATH", "env:NAME" or "credential:NAME" holding 32 bytes',
        ),
        (
            '[storage]\nbackend = "redis"',
            'login.encryption_key: required when storage.backend = "redis": every instance on '
            "the shared backend must seal MCP session ids with the same key, so that a "
            "revocation on any instance can close the sessions another one opened; "
            '"file:PATH", "env:NAME" or "credential:NAME" holding 32 bytes',
        ),
        (
            '[storage]\nbackend = "postgres"',
            'login.encryption_key: required when storage.backend = "postgres": every instance '
            "on the shared backend must seal MCP session ids with the same key, so that a "
            "revocation on any instance can close the sessions another one opened; "
            '"file:PATH", "env:NAME" or "credential:NAME" holding 32 bytes',
        ),
        (
            '[login]\nprovider = "saml"',
            'login.provider: expected one of "local", "oidc", "github", got "saml"',
        ),
        (
            '[log]\nlevel = "verbose"',
            'log.level: expected one of "debug", "info", "warning", "error", got "verbose"',
        ),
        (
            USER + USER,
            "login.users[1].username: duplicate username, already in login.users[0].username",
        ),
        (
            f'[[login.users]]\nusername = ""\npassword_hash = "{HASH}"',
            "login.users[0].username: must not be empty",
        ),
        (
            '[[login.users]]\nusername = "alice"',
            "login.users[0].password_hash: missing (this key is required)",
        ),
        (USER + "admin = true", "login.users[0].admin: unknown key"),
        (
            '[login]\nusers = "alice"',
            'login.users: expected an array of tables ([[login.users]]), got "alice"',
        ),
        ("[login]\nusers = [1]", "login.users[0]: expected a table, got 1"),
        (
            '[upstream]\nread_timeout = "0s"',
            'upstream.read_timeout: must be greater than zero, got "0s"',
        ),
        (
            "[storage]\ncache_size = -1",
            "storage.cache_size: expected a whole number of at least 0, got -1",
        ),
        (
            '[storage]\ncache_size = "big"',
            'storage.cache_size: expected a whole number of at least 0, got "big"',
        ),
        (
            '[server]\ntrusted_proxies = ["127.0.0.1/32", "nginx.local"]',
            'server.trusted_proxies[1]: expected an IP address or network, got "nginx.local"',
        ),
        (
            '[metrics]\nlisten = "127.0.0.1:8080"',
            'metrics.listen: is server.listen (127.0.0.1:8080); use another port, or "" to '
            "serve /metrics there",
        ),
        (
            '[metrics]\nlisten = "9101"',
            'metrics.listen: expected "host:port" or "[ipv6]:port", got "9101"',
        ),
        (
            '[oauth]\nscope_implies = ["a"]',
            'oauth.scope_implies: expected a table like { "files:write" = ["files:read"] }, '
            "got an array",
        ),
        (
            '[oauth]\nscopes = ["a", "b"]\nscope_implies = { a = "b" }',
            'oauth.scope_implies.a: expected an array of strings, got "b"',
        ),
        (
            '[oauth]\nscopes = ["mcp", "a"]\nscope_implies = { a = ["c"] }',
            'oauth.scope_implies.a: "c" is not in oauth.scopes; a hierarchy names offered scopes',
        ),
        (
            '[oauth]\nscopes = ["mcp", "a"]\nscope_implies = { x = ["a"] }',
            'oauth.scope_implies: "x" is not in oauth.scopes; a hierarchy names offered scopes',
        ),
    ],
)
def test_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    assert error_for(tmp_path, monkeypatch, text) == f"config.toml: {message}"


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_a_shared_backend_with_its_shared_key_loads(tmp_path: Path, backend: str) -> None:
    text = f'[storage]\nbackend = "{backend}"\n[login]\nencryption_key = "env:OAUTHD_KEY"\n'
    config = load_text(tmp_path, text)
    assert config.storage.backend == backend
    assert config.login.encryption_key == "env:OAUTHD_KEY"


def test_serve_refuses_a_shared_backend_without_the_shared_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before it touches the backend: exit 78 (EX_CONFIG), naming the key and why."""
    path = tmp_path / "config.toml"
    path.write_text('[storage]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:1/0"\n')
    assert cli.main(["serve", "--config", str(path)]) == 78
    err = capsys.readouterr().err
    assert "login.encryption_key: required" in err and "seal MCP session ids" in err


def test_argon2_hash_without_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_argon2", lambda: None)
    argon2_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"
    text = f'[[login.users]]\nusername = "a"\npassword_hash = "{argon2_hash}"'
    message = error_for(tmp_path, monkeypatch, text)
    assert message.startswith("config.toml: login.users[0].password_hash: argon2id hashes need")
    assert "argon2-cffi" in message


def test_invalid_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = '[server\nlisten = "x"'
    with pytest.raises(tomllib.TOMLDecodeError) as info:
        tomllib.loads(text)
    expected = f"config.toml: invalid TOML: {info.value}"
    assert error_for(tmp_path, monkeypatch, text) == expected


def test_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_bytes(b'[log]\nlevel = "\xff"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^config\.toml: invalid TOML: "):
        load_config("config.toml")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: Is a directory"):
        load_config(tmp_path)


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0.0), ("0ms", 0.0), ("2s", 2.0)])
def test_refresh_grace_may_be_off(tmp_path: Path, text: str, seconds: float) -> None:
    config = load_text(tmp_path, f'[tokens]\nrefresh_grace = "{text}"\n')
    assert config.tokens.refresh_grace == seconds


def test_other_durations_may_not_be_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_for(tmp_path, monkeypatch, '[tokens]\naccess_ttl = "0s"')
    assert message == 'config.toml: tokens.access_ttl: must be greater than zero, got "0s"'


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("30s", 30),
        ("1.5s", 1.5),
        ("10m", 600),
        ("0.5m", 30),
        ("2h", 7200),
        ("30d", 30 * 86400),
        ("0.25d", 21600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", 'expected a duration like "1s", got "fast"'),
        ("-1s", 'expected a duration like "1s", got "-1s"'),
        ("10", 'expected a duration like "1s", got "10"'),
        ("1 s", 'expected a duration like "1s", got "1 s"'),
        ("1.s", 'expected a duration like "1s", got "1.s"'),
        ("1w", 'expected a duration like "1s", got "1w"'),
        ("", 'expected a duration like "1s", got ""'),
        (10, 'expected a duration like "1s", got 10'),
        (1.5, 'expected a duration like "1s", got 1.5'),
        ("0s", 'must be greater than zero, got "0s"'),
        ("0.0ms", 'must be greater than zero, got "0.0ms"'),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


def test_bare_number_duration_in_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_for(tmp_path, monkeypatch, "[tokens]\naccess_ttl = 10")
    assert message == 'config.toml: tokens.access_ttl: expected a duration like "1s", got 10'


# --- paths --------------------------------------------------------------------------------


def test_relative_path_is_resolved_against_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "config.toml").write_text('[storage]\npath = "state"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/config.toml")
    assert config.source == tmp_path / "etc" / "config.toml"
    assert config.storage.path == tmp_path / "etc" / "state"


def test_absolute_path_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "elsewhere" / "state"
    config = load_text(tmp_path, f'[storage]\npath = "{state}"\n')
    assert config.storage.path == state


# --- server.listen and server.issuer ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "listen"),
    [
        ("127.0.0.1:8080", Listen("127.0.0.1", 8080)),
        ("0.0.0.0:0", Listen("0.0.0.0", 0)),
        ("localhost:65535", Listen("localhost", 65535)),
        ("[::1]:8080", Listen("::1", 8080)),
        ("[::]:443", Listen("::", 443)),
        ("[2001:db8::1]:8443", Listen("2001:db8::1", 8443)),
    ],
)
def test_listen(tmp_path: Path, text: str, listen: Listen) -> None:
    config = load_text(tmp_path, f'[server]\nlisten = "{text}"\n')
    assert config.server.listen == listen
    assert str(listen) == text
    metrics = load_text(tmp_path, f'[metrics]\nlisten = "{text}"\n[server]\nlisten = "[::1]:1"')
    assert metrics.metrics.listen == listen


def test_trusted_proxies_and_metrics_listener(tmp_path: Path) -> None:
    default = load_text(tmp_path, "")
    assert default.server.trusted_proxies == () and default.metrics.listen is None
    config = load_text(tmp_path, '[server]\ntrusted_proxies = ["127.0.0.1", "fd00::/8"]\n')
    assert config.server.trusted_proxies == ("127.0.0.1/32", "fd00::/8")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8080", 'expected "host:port" or "[ipv6]:port", got "8080"'),
        (":8080", 'expected "host:port" or "[ipv6]:port", got ":8080"'),
        ("localhost", 'expected "host:port" or "[ipv6]:port", got "localhost"'),
        ("::1:8080", 'expected "host:port" or "[ipv6]:port", got "::1:8080"'),
        ("[::1]", 'expected "host:port" or "[ipv6]:port", got "[::1]"'),
        ("localhost:http", 'expected "host:port" or "[ipv6]:port", got "localhost:http"'),
        ("localhost:-1", 'expected "host:port" or "[ipv6]:port", got "localhost:-1"'),
        ("localhost:65536", "port must be 0-65535, got 65536"),
    ],
)
def test_bad_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    got = error_for(tmp_path, monkeypatch, f'[server]\nlisten = "{text}"\n')
    assert got == f"config.toml: server.listen: {message}"


@pytest.mark.parametrize(
    ("text", "issuer"),
    [
        ("https://auth.example.com", "https://auth.example.com"),
        ("https://auth.example.com/", "https://auth.example.com"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://127.0.0.1", "http://127.0.0.1"),
        ("http://127.5.0.1:9", "http://127.5.0.1:9"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
    ],
)
def test_issuer(tmp_path: Path, text: str, issuer: str) -> None:
    config = load_text(tmp_path, f'[server]\nissuer = "{text}"\n')
    assert config.server.issuer == issuer


HTTPS_NEEDED = "https is required unless the host is localhost or a loopback address"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://auth.example.com", f'{HTTPS_NEEDED}, got "http://auth.example.com"'),
        ("http://10.0.0.1:8080", f'{HTTPS_NEEDED}, got "http://10.0.0.1:8080"'),
        ("http://localhost.example.com", f'{HTTPS_NEEDED}, got "http://localhost.example.com"'),
        (
            "https://a.example/?x=1",
            'must not have a query or fragment, got "https://a.example/?x=1"',
        ),
        ("https://a.example/?", 'must not have a query or fragment, got "https://a.example/?"'),
        (
            "https://a.example/#top",
            'must not have a query or fragment, got "https://a.example/#top"',
        ),
        ("https://me:secret@a.example", "must not contain a user name or password"),
        (
            "https://example.com/oauth/",
            "must be an origin without a path (oauthd serves /authorize, /mcp, ... at its "
            'root), got "https://example.com/oauth/"',
        ),
        ("auth.example.com", 'expected an absolute http(s) URL, got "auth.example.com"'),
        ("/oauth", 'expected an absolute http(s) URL, got "/oauth"'),
        ("ftp://a.example", 'expected an absolute http(s) URL, got "ftp://a.example"'),
        ("https://", 'expected an absolute http(s) URL, got "https://"'),
        (
            "https://a.example:99999",
            'expected an absolute http(s) URL, got "https://a.example:99999"',
        ),
    ],
)
def test_bad_issuer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    got = error_for(tmp_path, monkeypatch, f'[server]\nissuer = "{text}"\n')
    assert got == f"config.toml: server.issuer: {message}"


def test_upstream_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_text(tmp_path, '[upstream]\nurl = "https://mcp.internal:8443/mcp?x=1"\n')
    assert config.upstream.url == "https://mcp.internal:8443/mcp?x=1"
    got = error_for(tmp_path, monkeypatch, '[upstream]\nurl = "localhost:9000"\n')
    assert (
        got == 'config.toml: upstream.url: expected an absolute http(s) URL, got "localhost:9000"'
    )


# --- [keys] and the signed-identity keys of a resource -------------------------------------


def test_keys_defaults_and_values(tmp_path: Path) -> None:
    keys = load_text(tmp_path, "").keys
    assert (keys.algorithm, keys.jwks_max_age, keys.rotate_every) == ("ES256", 300.0, 0.0)
    text = '[keys]\nalgorithm = "RS256"\njwks_max_age = 60\nrotate_every = "30d"\n'
    keys = load_text(tmp_path, text).keys
    assert (keys.algorithm, keys.jwks_max_age, keys.rotate_every) == ("RS256", 60.0, 2592000.0)
    upstream = load_text(tmp_path, "").upstream
    assert not upstream.signed_identity and upstream.access_token_format == "opaque"
    assert upstream.signed_identity_header == "X-Oauthd-Identity"
    assert upstream.principal_header == "X-Forwarded-Principal"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[keys]\nalgorithm = "HS256"', "config.toml: keys.algorithm: "),
        ("[keys]\njwks_max_age = 0", "config.toml: keys.jwks_max_age: expected at least 1"),
        (
            "[keys]\njwks_max_age = 300\nrotate_every = 500",
            "config.toml: keys.rotate_every: must be more than twice jwks_max_age (300s)",
        ),
        ('[upstream]\naccess_token_format = "paseto"', "config.toml: upstream.access_token_format"),
        ('[upstream]\nsigned_identity = "yes"', "config.toml: upstream.signed_identity: "),
    ],
)
def test_keys_errors_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    assert message in error_for(tmp_path, monkeypatch, text)
