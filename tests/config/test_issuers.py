"""oauthd/config/issuers.py: `[[trusted_issuer]]` tables, their subject rules, and every
error naming the table index and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.assertions import Signer
from tests.test_config import error_for, load_text

K8S = """
[[trusted_issuer]]
issuer = "https://kubernetes.default.svc.cluster.local"
kind = "workload"
jwks_uri = "https://10.0.0.1:6443/openid/v1/jwks"
scopes = ["mcp"]
[[trusted_issuer.subject]]
match = "system:serviceaccount:ci:*"
principal = "ci-runner"
"""
IDP = """
[[trusted_issuer]]
issuer = "https://idp.example.com"
kind = "enterprise"
discovery = true
link_by_email = true
"""


def test_workload_and_enterprise_issuers_load(tmp_path: Path) -> None:
    config = load_text(tmp_path, K8S + IDP)
    k8s, idp = config.trusted_issuer
    assert k8s.principal_of("system:serviceaccount:ci:builder") == "ci-runner"
    assert k8s.principal_of("system:serviceaccount:prod:db") is None
    assert (k8s.jti_required, idp.jti_required) == (False, True)
    assert k8s.key_hosts == ("10.0.0.1",) and idp.key_hosts == ("idp.example.com",)
    assert (idp.user_template, idp.max_lifetime) == ("{sub}@{host}", 3600.0)


def test_a_jwks_file_is_read_when_the_config_loads(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(json.dumps(Signer("f1").jwks()))
    text = K8S.replace(
        'jwks_uri = "https://10.0.0.1:6443/openid/v1/jwks"', 'jwks_file = "keys.json"'
    )
    (issuer,) = load_text(tmp_path, text).trusted_issuer
    assert issuer.jwks_file is not None and '"f1"' in issuer.jwks_file.document


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            K8S.replace('jwks_uri = "https://10.0.0.1:6443/openid/v1/jwks"', ""),
            "trusted_issuer[0]: say where the issuer's keys are with exactly one of",
        ),
        (K8S.replace("jwks_uri =", "discovery = true\njwks_uri ="), "(got jwks_uri, discovery)"),
        (
            K8S.replace("https://10.0.0.1", "http://10.0.0.1"),
            "trusted_issuer[0].jwks_uri: keys are fetched over https only",
        ),
        (
            K8S.split("[[trusted_issuer.subject]]")[0],
            "trusted_issuer[0].subject: a workload issuer needs at least one",
        ),
        (
            K8S.replace('scopes = ["mcp"]', 'scopes = ["admin"]'),
            'trusted_issuer[0].scopes: "admin" is offered by none of this issuer\'s resources',
        ),
        (
            K8S.replace('scopes = ["mcp"]', 'resources = ["/nope"]'),
            'trusted_issuer[0].resources[0]: "/nope" is no configured resource',
        ),
        (K8S + K8S, "trusted_issuer[1].issuer: duplicate issuer"),
        (
            IDP + "require_jti = false\n",
            "trusted_issuer[0].require_jti: an enterprise ID-JAG must be single use",
        ),
        (IDP + 'user_template = "{name}"\n', "trusted_issuer[0].user_template: must contain"),
        (
            IDP.replace('kind = "enterprise"', 'kind = "robot"'),
            "trusted_issuer[0].kind: expected one of",
        ),
        (
            K8S.replace("jwks_uri =", 'jwks_file = "missing.json"\n# '),
            "trusted_issuer[0].jwks_file: cannot read",
        ),
    ],
)
def test_errors_name_the_table_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    assert message in error_for(tmp_path, monkeypatch, text)
