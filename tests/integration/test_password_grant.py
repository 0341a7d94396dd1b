"""The resource owner password credentials grant (RFC 6749 §4.3) through a real Envoy.

Off unless `password_grant` is configured, and then only for clients listing "password". The
filter never checks passwords itself: it POSTs {"username", "password", "client_id"} as JSON to
the configured cluster and path — here the registry fixture's POST /verify (a real HTTP server
with a user table, counting and keeping every call, and switchable to fail in several ways).
200 {"sub"} → tokens; 401/403/404 → invalid_grant; anything else → a clean 500 server_error,
and the grant works again as soon as the check does, without restarting Envoy. Failures count
per username (PASSWORD_FAILURES per PASSWORD_WINDOW s) and per client (ten times that): past
either, 429 without asking the upstream. Tokens are verified with PyJWT against GET /oauth/jwks.
Every refusal is followed by a valid request.

Envoys: envoy_grants (PASSWORD_GRANT: cluster `registry`, path /verify, authority
PASSWORD_AUTHORITY, timeout PASSWORD_TIMEOUT s), envoy_ac (no password_grant section).
"""
from __future__ import annotations

import json
import time

import pytest

from support.fixtures_grants import PASSWORD_AUTHORITY, PASSWORD_FAILURES, PASSWORD_TIMEOUT, PASSWORD_WINDOW
from helpers import (
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    LEGACY_CLIENT,
    LEGACY_NORT_CLIENT,
    PW_BULK_CLIENT,
    TV_CLIENT,
    Client,
    assert_no_store_json,
    assert_oauth_error,
    post_form,
    introspect,
    metadata,
    password_request,
    refresh_request,
    sleep_past_window_edge,
    verify_access_token,
)

_seq = iter(range(1, 10**6))


def new_user(registry, prefix: str, password: str = "correct horse battery staple", **kw) -> tuple[str, str]:
    """A user of the credential check, with a name of its own (failures count per username)."""
    name = f"{prefix}-{int(time.time() * 1000) % 10**8}-{next(_seq)}"
    registry.add_user(name, password, **kw)
    return name, password


def assert_password_tokens(r, envoy, *, client: Client, sub: str, scope: str, refresh: bool,
                           auth_time: int | None = None) -> dict:
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert_no_store_json(r)
    t = r.json()
    assert t["token_type"] == "Bearer" and t["expires_in"] == ACCESS_TOKEN_LIFETIME and t["scope"] == scope, t
    assert ("refresh_token" in t) == refresh, t
    assert "id_token" not in t, t
    _, claims = verify_access_token(t["access_token"], envoy, client_id=client.client_id, scope=scope,
                                    lifetime=ACCESS_TOKEN_LIFETIME, sub=sub)
    assert claims.get("auth_time") == auth_time, claims
    return t


def valid_password(envoy, registry, client: Client = LEGACY_CLIENT) -> None:
    name, pw = new_user(registry, "pw-valid")
    assert_password_tokens(password_request(envoy, name, pw, client, scope="read"), envoy, client=client,
                           sub=name, scope="read", refresh=client is LEGACY_CLIENT)


# --------------------------------------------------------------------------- tokens
def test_rfc6749_4_3_2_password_grant_issues_tokens_for_the_upstreams_sub(envoy_grants, registry):
    """The upstream's answer decides the subject (and auth_time); the request it saw is exactly
    {"username","password","client_id"} as JSON, POST /verify with the configured authority."""
    e = envoy_grants
    auth_time = int(time.time()) - 100
    name, pw = new_user(registry, "pw-alice", "p@ss w:rd/%&=+ ä✓", sub="user-0001", auth_time=auth_time)
    before = registry.verify_count()
    r = password_request(e, name, pw)
    t = assert_password_tokens(r, e, client=LEGACY_CLIENT, sub="user-0001", scope="read write", refresh=True,
                               auth_time=auth_time)
    calls = registry.verify_log()[before:]
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["body"] == {"username": name, "password": pw, "client_id": "legacy"}, call
    assert json.loads(call["raw"]) == call["body"]
    assert call["headers"]["content-type"] == "application/json", call["headers"]
    assert call["headers"]["host"] == PASSWORD_AUTHORITY, call["headers"]
    # The refresh token works (rotation keeps the subject) and introspects, to its own client,
    # as the user's.
    v = introspect(e, t["refresh_token"], client=LEGACY_CLIENT)
    assert (v["active"], v["sub"], v["client_id"], v["scope"]) == (True, "user-0001", "legacy", "read write"), v
    r2 = refresh_request(e, t["refresh_token"], LEGACY_CLIENT, scope="read")
    assert r2.status_code == 200, r2.text
    verify_access_token(r2.json()["access_token"], e, client_id="legacy", scope="read",
                        lifetime=ACCESS_TOKEN_LIFETIME, sub="user-0001")
    assert registry.verify_count() == before + 1, "a refresh does not ask the credential check"


def test_rfc6749_4_3_3_narrower_scope_and_no_refresh_without_the_grant(envoy_grants, registry):
    """legacy-nort (client_secret_post) does not have refresh_token: no refresh token."""
    e = envoy_grants
    name, pw = new_user(registry, "pw-bob")
    assert_password_tokens(password_request(e, name, pw, LEGACY_CLIENT, scope="read"), e, client=LEGACY_CLIENT,
                           sub=name, scope="read", refresh=True)
    assert_password_tokens(password_request(e, name, pw, LEGACY_NORT_CLIENT), e, client=LEGACY_NORT_CLIENT,
                           sub=name, scope="read", refresh=False)


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "locked-403"])
def test_rfc6749_5_2_bad_credentials_are_invalid_grant(envoy_grants, registry, case):
    e = envoy_grants
    name, pw = new_user(registry, "pw-carol", status=403 if case == "locked-403" else None)
    username, password = {"wrong-password": (name, pw + "x"), "unknown-user": (name + "-nobody", pw),
                          "locked-403": (name, pw)}[case]
    before = registry.verify_count()
    assert_oauth_error(password_request(e, username, password), 400, "invalid_grant")
    assert registry.verify_count() == before + 1
    valid_password(e, registry)


def test_rfc6749_4_3_2_refusals_before_asking_the_upstream(envoy_grants, registry):
    """Client not registered for the grant, no or wrong client credentials, missing username or
    password, a scope beyond the client's: refused without a call to the credential check."""
    e = envoy_grants
    name, pw = new_user(registry, "pw-dave")
    before = registry.verify_count()
    assert_oauth_error(password_request(e, name, pw, DEMO_CLIENT), 400, "unauthorized_client")
    assert_oauth_error(password_request(e, name, pw, TV_CLIENT), 400, "unauthorized_client")  # public, no grant
    assert_oauth_error(password_request(e, name, pw, Client("legacy", "wrong")), 401, "invalid_client")
    assert_oauth_error(post_form(e.token_url, {"grant_type": "password", "username": name, "password": pw}),
                       401, "invalid_client")
    for form in ({"password": pw}, {"username": name}, {"username": "", "password": pw},
                 {"username": "x" * 300, "password": pw}):
        assert_oauth_error(post_form(e.token_url, {"grant_type": "password", **form}, LEGACY_CLIENT), 400,
                           "invalid_request")
    assert_oauth_error(password_request(e, name, pw, scope="read admin"), 400, "invalid_scope")
    assert registry.verify_count() == before
    assert_password_tokens(password_request(e, name, pw), e, client=LEGACY_CLIENT, sub=name, scope="read write",
                           refresh=True)


def test_password_failures_per_username_are_throttled_without_asking_the_upstream(envoy_grants, registry):
    """PASSWORD_FAILURES wrong passwords for one username: invalid_grant; then 429 with
    Retry-After (the right password too) and no more calls upstream; another username of the
    same client is not affected."""
    e = envoy_grants
    sleep_past_window_edge(PASSWORD_WINDOW, 4)
    name, pw = new_user(registry, "pw-eve")
    for _ in range(PASSWORD_FAILURES):
        assert_oauth_error(password_request(e, name, "guess"), 400, "invalid_grant")
    before = registry.verify_count()
    for password in ("guess", pw):
        r = password_request(e, name, password)
        assert_oauth_error(r, 429, "rate_limit_exceeded")
        retry = r.headers.get("Retry-After", "")
        assert retry.isdigit() and 1 <= int(retry) <= PASSWORD_WINDOW, retry
    assert registry.verify_count() == before, "throttled: the credential check was not asked"
    valid_password(e, registry)


def test_password_failures_per_client_are_throttled(envoy_grants, registry):
    """A client (one app, many users) may fail 10 × PASSWORD_FAILURES times per window, each
    username once (the per-username limit is never reached): then 429 for any username."""
    e = envoy_grants
    sleep_past_window_edge(PASSWORD_WINDOW, 8)
    stamp = int(time.time() * 1000) % 10**8
    for i in range(10 * PASSWORD_FAILURES):
        assert_oauth_error(password_request(e, f"pw-spray-{stamp}-{i}", "guess", PW_BULK_CLIENT), 400, "invalid_grant")
    name, pw = new_user(registry, "pw-frank")
    before = registry.verify_count()
    r = password_request(e, name, pw, PW_BULK_CLIENT)
    assert_oauth_error(r, 429, "rate_limit_exceeded")
    assert r.headers.get("Retry-After", "").isdigit()
    assert registry.verify_count() == before
    # Another client, the same user: fine.
    assert_password_tokens(password_request(e, name, pw, LEGACY_NORT_CLIENT), e, client=LEGACY_NORT_CLIENT,
                           sub=name, scope="read", refresh=False)


# --------------------------------------------------------------------------- the upstream failing
UPSTREAM_FAILURES = [("down-500", 0.0), ("down-503", 0.0), ("garbage", 0.0), ("no-sub", 0.0), ("reset", 0.0),
                     ("redirect", 0.0), ("slow", PASSWORD_TIMEOUT + 0.5)]


def test_password_upstream_failures_are_a_clean_server_error_and_recover(envoy_grants, registry):
    """Each way the credential check can fail (5xx, a body that is not JSON, JSON without sub, a
    reset, a redirect, no answer within the timeout): 500 server_error as flat OAuth JSON, not
    counted as a failed login (the same username throughout), and as soon as the check answers
    again the grant works — the same Envoy, never restarted."""
    e = envoy_grants
    name, pw = new_user(registry, "pw-grace", sub="user-grace")
    pid = e.proc.pid
    for mode, delay in UPSTREAM_FAILURES:
        registry.set_verify_mode(mode, delay)
        try:
            before = registry.verify_count()
            t0 = time.monotonic()
            r = password_request(e, name, pw)
            took = time.monotonic() - t0
            assert_oauth_error(r, 500, "server_error")
            assert registry.verify_count() == before + 1, mode
            if mode == "slow":
                assert PASSWORD_TIMEOUT - 0.1 <= took < PASSWORD_TIMEOUT + 2, took
        finally:
            registry.set_verify_mode("ok")
        # Back: the very same credentials work at once.
        assert_password_tokens(password_request(e, name, pw), e, client=LEGACY_CLIENT, sub="user-grace",
                               scope="read write", refresh=True)
    assert e.proc.pid == pid and e.proc.poll() is None
    assert e.health_problems() == []


# --------------------------------------------------------------------------- off
def test_rfc6749_4_3_password_grant_is_off_without_its_section(envoy_ac, registry):
    e = envoy_ac
    assert "password" not in metadata(e)["grant_types_supported"]
    before = registry.verify_count()
    r = post_form(e.token_url, {"grant_type": "password", "username": "alice", "password": "x"}, DEMO_CLIENT)
    assert_oauth_error(r, 400, "unsupported_grant_type")
    assert registry.verify_count() == before
