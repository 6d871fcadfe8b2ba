"""Reason codes: why the daemon refused something or ended a grant.

Every `invalid_grant`, 401 and 403 carries one: in its log line (field `reason`), in the
`oauthd_refusals_total{endpoint,error,reason}` metric and, when the refusal concerns a
known grant or user, in an audit record. A grant-ending record (`grant_ended`,
`token_revoked`, `reuse_detected`) carries the one that ended it. The values are
bounded: constants, and `policy_rule(<rule id>)` whose ids are configuration.
"""

from __future__ import annotations

# refresh tokens and codes
SUPERSEDED_REFRESH_TOKEN_REPLAYED = "superseded_refresh_token_replayed"
REPLAY_AFTER_GRACE = "replay_after_grace"  # the previous token after its successor was used
CODE_REPLAYED = "code_replayed"
UNKNOWN_TOKEN = "unknown_token"  # no live grant has it (never issued, revoked, expired)
MALFORMED_TOKEN = "malformed_token"
TOKEN_NOT_CURRENT = "token_not_current"  # a known grant, a token of it no longer valid
WRONG_CLIENT = "wrong_client"  # a token or code of another client
EXPIRED = "expired"
RESOURCE_MISMATCH = "resource_mismatch"
SCOPE_NOT_GRANTED = "scope_not_granted"
CODE_INVALID = "code_invalid"  # unknown, expired or used code; PKCE or redirect mismatch
DEVICE_CODE_INVALID = "device_code_invalid"
ASSERTION_REFUSED = "assertion_refused"

# grants ended
REVOKED_BY_USER = "revoked_by_user"  # at /account or by withdrawing consent
REVOKED_BY_ADMIN = "revoked_by_admin"  # oauthd sessions revoke
REVOKED_BY_CLIENT = "revoked_by_client"  # RFC 7009 /revoke
CLIENT_DELETED = "client_deleted"  # oauthd clients delete
CLIENT_REAPED = "client_reaped"  # the registry's hygiene removed it
CLIENT_REREGISTERED = "client_reregistered"  # explain: the same app registered anew
KEY_RETIRED = "key_retired"
AUTHORIZED_AGAIN = "authorized_again"  # explain: the client asked anew, its grant still live
UPSTREAM_REFRESH_FAILED = "upstream_refresh_failed"

# clients and sign-in
REGISTRATION_DISABLED = "registration_disabled"
INVALID_CLIENT = "invalid_client"  # unknown client or bad credentials
BAD_CREDENTIALS = "bad_credentials"  # wrong user name or password
RATE_LIMITED = "rate_limited"
PROVIDER_REFUSED = "provider_refused"  # the upstream identity provider said no
SIGN_IN_ENDED = "sign_in_ended"  # a page needs a browser sign-in that is gone or never was
CROSS_SITE_FORM = "cross_site_form"  # a form sent from another origin
CSRF_FAILED = "csrf_failed"  # a form's CSRF token is missing, expired or not ours
ADDRESS_NOT_ALLOWED = "address_not_allowed"  # /metrics or /forward-auth from elsewhere

# the proxy
NO_TOKEN = "no_token"
NOT_BEARER = "not_bearer"
INSUFFICIENT_SCOPE = "insufficient_scope"  # the resource's required scopes
ORIGIN_NOT_ALLOWED = "origin_not_allowed"
POLICY_RULE = "policy_rule"
DEFAULT_POLICY = "default_policy"  # a step-up no rule named: the resource's own scopes

OTHER = "other"  # an error no code path named yet


def policy_rule(rule_id: str | None) -> str:
    """The reason of a policy denial or step-up: `policy_rule:<rule id>` (bounded: ids are
    configuration), `default_policy` when no rule decided."""
    return f"{POLICY_RULE}:{rule_id}" if rule_id else DEFAULT_POLICY


def grant_ended_by(by: str) -> str:
    """The reason of a revocation made on request (`Tokens.revoke_grant(by=...)`)."""
    return {
        "account": REVOKED_BY_USER,
        "consent": REVOKED_BY_USER,
        "admin": REVOKED_BY_ADMIN,
        "client": REVOKED_BY_CLIENT,
    }.get(by, by)
