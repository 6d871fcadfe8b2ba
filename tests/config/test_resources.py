"""oauthd/config/resources.py: `[[resource]]` tables and their rules, the `[upstream]`
shorthand, and every error naming the resource, rule and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from oauthd.config import RuleConfig
from tests.test_config import commented_resources, error_for, load_text

FILES = '[[resource]]\npath = "/files/mcp"\nurl = "http://127.0.0.1:9001/mcp"\n'


def test_the_shorthand_is_one_resource_at_mcp(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[oauth]\nscopes = ["mcp", "x"]\nresource_name = "Tools"\n'
        '[upstream]\nurl = "http://127.0.0.1:9100/mcp"\n',
    )
    (only,) = config.resources
    assert (only.path, only.name, only.scopes, only.rules) == ("/mcp", "Tools", ("mcp", "x"), ())
    assert only.upstream is config.upstream and only.required_scopes == ("mcp",)
    assert config.resource == () and config.default_resource is only
    assert only.uri(config.server.issuer) == "http://127.0.0.1:8080/mcp"


def test_the_example_resources_load(tmp_path: Path) -> None:
    config = load_text(tmp_path, commented_resources())
    files, github = config.resources
    assert (files.path, files.name, files.upstream.url) == (
        "/files/mcp",
        "Files",
        "http://127.0.0.1:9001/mcp",
    )
    assert files.scopes == ("files:read", "files:write")
    assert files.required_scopes == ("files:read",)
    assert [r.id for r in files.rules] == [
        "no-deletes-but-ops",
        "deploy-by-release-bot",
        "writes-need-write-scope",
        "no-admin-tools",
    ]
    assert files.rules[0] == RuleConfig(
        id="no-deletes-but-ops",
        method="tools/call",
        name=("delete_*",),
        require_scopes=("files:write",),
        users=None,
        groups=("ops",),
        clients=None,
        principals=None,
        effect="allow",
        message="",
    )
    assert files.rules[3].effect == "deny" and files.rules[3].method == "*"
    assert config.scopes_supported == ("files:read", "files:write", "github")
    assert config.default_resource is files and github.rules == ()


def test_a_resource_without_scopes_offers_oauth_scopes_and_requires_none(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[oauth]\nscopes = ["a", "b"]\n' + FILES)
    (files,) = config.resources
    assert files.scopes == ("a", "b") and files.required_scopes == ()
    assert files.name == "/files/mcp" and config.scopes_supported == ("a", "b")


def test_every_upstream_key_is_a_resource_key(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, FILES + 'read_timeout = "7s"\nuser_header = "X-User"\nforward_idp_token = true\n'
    )
    upstream = config.resources[0].upstream
    assert (upstream.read_timeout, upstream.user_header, upstream.forward_idp_token) == (
        7.0,
        "X-User",
        True,
    )


@pytest.mark.parametrize("wanted", ["/github/mcp", "http://127.0.0.1:8080/github/mcp"])
def test_the_default_resource_is_named_by_path_or_identifier(tmp_path: Path, wanted: str) -> None:
    text = commented_resources().replace(
        "[[resource]]", f'[oauth]\ndefault_resource = "{wanted}"\n[[resource]]', 1
    )
    config = load_text(tmp_path, text)
    assert config.default_resource.path == "/github/mcp"
    assert config.resource_named("/nope") is None


def test_groups_and_scope_descriptions(tmp_path: Path) -> None:
    from oauthd.passwords import hash_password

    config = load_text(
        tmp_path,
        f'[[login.users]]\nusername = "a"\npassword_hash = "{hash_password("pw")}"\n'
        'groups = ["ops", "dev"]\n[oauth]\nscope_descriptions = { mcp = "Use the tools" }\n'
        '[login.oidc]\ngroups_claim = "groups"\n',
    )
    assert config.login.users[0].groups == ("ops", "dev")
    assert config.oauth.scope_descriptions == (("mcp", "Use the tools"),)
    assert config.login.oidc.groups_claim == "groups"


URL = 'url = "http://127.0.0.1:9001/mcp"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[upstream]\nurl = "http://127.0.0.1:9000/mcp"\n' + FILES,
            "upstream: [upstream] is the one-resource shorthand and cannot be used with "
            '[[resource]]; move its keys into a [[resource]] table with path = "/mcp"',
        ),
        ('[[resource]]\npath = "/a/mcp"\n', "resource[0].url: missing (this key is required)"),
        ("[[resource]]\n" + URL, "resource[0].path: missing (this key is required)"),
        (
            '[[resource]]\npath = "a/mcp"\n' + URL,
            'resource[0].path: expected a path like "/files/mcp" (no query, no trailing "/"), '
            'got "a/mcp"',
        ),
        (
            '[[resource]]\npath = "/a/"\n' + URL,
            'resource[0].path: expected a path like "/files/mcp" (no query, no trailing "/"), '
            'got "/a/"',
        ),
        (
            '[[resource]]\npath = "/.well-known/x"\n' + URL,
            'resource[0].path: "/.well-known/x" is under /.well-known, which oauthd serves itself',
        ),
        (
            '[[resource]]\npath = "/token"\n' + URL,
            'resource[0].path: "/token" is under /token, which oauthd serves itself',
        ),
        (
            FILES + FILES,
            'resource[1].path: duplicate path "/files/mcp", already resource[0].path',
        ),
        (
            FILES + "colour = 1\n",
            "resource[0].colour: unknown key",
        ),
        (
            FILES + 'scopes = ["r"]\nrequired_scopes = ["w"]\n',
            'resource[0].required_scopes: "w" is not in this resource\'s scopes, so no token '
            "for it could ever carry it",
        ),
        (
            FILES + '[[resource.rule]]\nmethod = "tools/call"\n',
            "resource[0].rule[0].id: missing (this key is required)",
        ),
        (
            FILES + '[[resource.rule]]\nid = "a"\n[[resource.rule]]\nid = "a"\n',
            'resource[0].rule[1].id: duplicate rule id "a", already resource[0].rule[0].id',
        ),
        (
            FILES + '[[resource.rule]]\nid = "a"\neffect = "maybe"\n',
            'resource[0].rule[0].effect: expected one of "allow", "deny", got "maybe"',
        ),
        (
            FILES + '[[resource.rule]]\nid = "a"\nname = [1]\n',
            "resource[0].rule[0].name: expected an array of strings, got an array",
        ),
        (
            FILES + 'scopes = ["r"]\n[[resource.rule]]\nid = "w"\nrequire_scopes = ["x"]\n',
            'resource[0].rule[0].require_scopes: "x" is not in this resource\'s scopes, so '
            'rule "w" could never be met',
        ),
        (
            FILES + '[[resource.rule]]\nid = "a"\nsope = 1\n',
            "resource[0].rule[0].sope: unknown key",
        ),
        (
            '[oauth]\ndefault_resource = "/b"\n' + FILES,
            'oauth.default_resource: "/b" is no resource\'s path or identifier; the resources '
            'are "/files/mcp"',
        ),
        (
            '[oauth]\nscope_descriptions = { nope = "x" }\n',
            'oauth.scope_descriptions: "nope" is not in oauth.scopes',
        ),
        (
            "[oauth]\nscope_descriptions = { mcp = 1 }\n",
            "oauth.scope_descriptions.mcp: expected a string, got 1",
        ),
        ("resource = 1\n", "resource: expected an array of tables ([[resource]]), got 1"),
    ],
)
def test_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    assert error_for(tmp_path, monkeypatch, text) == f"config.toml: {message}"


def test_rule_principals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = (
        '[[resource]]\npath = "/mcp"\nurl = "http://127.0.0.1:9/mcp"\n'
        '[[resource.rule]]\nid = "m"\nprincipals = [{}]\n'
    )
    config = load_text(tmp_path, rule.format('"service"'))
    assert config.resources[0].rules[0].principals == ("service",)
    assert "principal kind" in error_for(tmp_path, monkeypatch, rule.format('"robot"'))
