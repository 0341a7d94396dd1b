"""Token endpoint error responses (RFC 6749 §5.2), each followed by a valid request that must work."""
from __future__ import annotations

import base64
import json
import random

import pytest
import requests

from helpers import (
    AC_CLIENT,
    ACCESS_TOKEN_LIFETIME,
    DEMO_CLIENT,
    ENVOY_413_DESCRIPTION,
    FORM,
    MAX_BODY,
    POST_CLIENT,
    Client,
    assert_oauth_error,
    assert_token_response,
    basic_auth,
    oversized_form,
    raw_http,
    token_request,
)


@pytest.fixture(autouse=True)
def still_serving(envoy_main):
    """After every bad request the endpoint still issues tokens (no stuck state, no dead worker)."""
    yield
    for _ in range(2):  # two requests: likely to reach both worker threads
        r = token_request(envoy_main, DEMO_CLIENT)
        assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


# ---------------------------------------------------------------- invalid_request (§5.2)
def test_missing_grant_type_rfc6749_5_2_invalid_request(envoy_main):
    r = token_request(envoy_main, DEMO_CLIENT, data="scope=read")
    assert_oauth_error(r, 400, "invalid_request")


def test_empty_body_rfc6749_5_2_invalid_request(envoy_main):
    r = token_request(envoy_main, DEMO_CLIENT, data="")
    assert_oauth_error(r, 400, "invalid_request")


@pytest.mark.parametrize("body", [
    "grant_type=client_credentials&grant_type=client_credentials",
    "grant_type=client_credentials&scope=read&scope=write",
])
def test_duplicate_parameter_rfc6749_3_2_invalid_request(envoy_main, body):
    """RFC 6749 §3.2: request parameters MUST NOT be included more than once."""
    r = token_request(envoy_main, DEMO_CLIENT, data=body)
    assert_oauth_error(r, 400, "invalid_request")


@pytest.mark.parametrize("ctype, body", [
    ("application/json", '{"grant_type":"client_credentials"}'),
    ("text/plain", "grant_type=client_credentials"),
    ("multipart/form-data; boundary=xyz",
     '--xyz\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\nclient_credentials\r\n--xyz--\r\n'),
])
def test_wrong_content_type_rfc6749_4_4_2_invalid_request(envoy_main, ctype, body):
    r = token_request(envoy_main, DEMO_CLIENT, data=body, headers={"Content-Type": ctype})
    assert_oauth_error(r, 400, "invalid_request")


def test_missing_content_type_rfc6749_4_4_2_invalid_request(envoy_main):
    r = requests.post(envoy_main.token_url, data=b"grant_type=client_credentials",
                      headers={"Authorization": basic_auth("demo-client", "demo-secret")}, timeout=10)
    assert "Content-Type" not in r.request.headers
    assert_oauth_error(r, 400, "invalid_request")


def test_non_utf8_body_rfc6749_appendix_b_invalid_request(envoy_main):
    r = token_request(envoy_main, DEMO_CLIENT, data=b"grant_type=client_credentials&scope=r\xff\xfeead")
    assert_oauth_error(r, 400, "invalid_request")


def test_non_utf8_percent_encoded_rfc6749_appendix_b_rejected(envoy_main):
    r = token_request(envoy_main, DEMO_CLIENT, data="grant_type=client_credentials&scope=%FF%FE")
    assert_oauth_error(r, 400, ("invalid_request", "invalid_scope"))


def test_garbage_bytes_body_rfc6749_5_2_invalid_request(envoy_main):
    body = random.Random(1234).randbytes(2048)
    r = token_request(envoy_main, DEMO_CLIENT, data=body)
    assert_oauth_error(r, 400, "invalid_request")


def test_garbage_text_body_rfc6749_5_2_invalid_request(envoy_main):
    r = token_request(envoy_main, DEMO_CLIENT, data="}{][&&==&=%%%%" * 50)
    assert_oauth_error(r, 400, "invalid_request")


# ---------------------------------------------------------------- body size
def test_body_at_limit_is_accepted(envoy_main):
    body = oversized_form(MAX_BODY)
    assert len(body) == MAX_BODY
    r = token_request(envoy_main, DEMO_CLIENT, data=body)
    assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


def test_oversized_body_content_length_413_json(envoy_main):
    r = token_request(envoy_main, DEMO_CLIENT, data=oversized_form(MAX_BODY + 1))
    body = assert_oauth_error(r, 413, "invalid_request")
    assert body["error_description"] != ENVOY_413_DESCRIPTION, "the filter's own 413 must come first"


def test_oversized_body_chunked_413_json(envoy_main):
    body = oversized_form(3 * MAX_BODY)

    def chunks():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    r = requests.post(envoy_main.token_url, data=chunks(), timeout=10,
                      headers={"Content-Type": FORM, "Authorization": basic_auth("demo-client", "demo-secret")})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_oauth_error(r, 413, "invalid_request")


def test_oversized_body_beyond_envoy_buffer_413_json(envoy_main):
    """2 MiB, above Envoy's 1 MiB connection buffer: still a JSON 413 (the filter's, or Envoy's own
    413 mapped by local_reply_config)."""
    body = oversized_form(2 * 1024 * 1024)
    head = (f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {FORM}\r\n"
            f"Authorization: {basic_auth('demo-client', 'demo-secret')}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    status, hdrs, resp = raw_http(envoy_main.listen_port, head, body_chunks=[body])
    assert status == 413, (status, resp[:200])
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    assert "no-store" in hdrs.get("cache-control", ""), hdrs
    assert json.loads(resp)["error"] == "invalid_request"


# ---------------------------------------------------------------- grant and scope
@pytest.mark.parametrize("grant", ["password", "urn:ietf:params:oauth:grant-type:token-exchange",
                                   "urn:ietf:params:oauth:grant-type:device_code", "nonsense"])
def test_unknown_grant_type_rfc6749_5_2_unsupported_grant_type(envoy_main, grant):
    r = token_request(envoy_main, DEMO_CLIENT, data=f"grant_type={grant}&code=x&refresh_token=y")
    assert_oauth_error(r, 400, "unsupported_grant_type")


@pytest.mark.parametrize("scope", ["admin", "read admin", "READ"])
def test_scope_outside_allowed_rfc6749_5_2_invalid_scope(envoy_main, scope):
    r = token_request(envoy_main, DEMO_CLIENT, scope=scope)
    assert_oauth_error(r, 400, "invalid_scope")


def test_client_not_allowed_grant_rfc6749_5_2_unauthorized_client(envoy_main):
    r = token_request(envoy_main, AC_CLIENT)
    assert_oauth_error(r, 400, "unauthorized_client")


# ---------------------------------------------------------------- client authentication
def test_wrong_secret_basic_rfc6749_5_2_invalid_client_www_authenticate(envoy_main):
    r = token_request(envoy_main, Client("demo-client", "wrong-secret"), use="client_secret_basic")
    assert_oauth_error(r, 401, "invalid_client")
    www = r.headers.get("WWW-Authenticate", "")
    assert www.lower().startswith("basic"), f"RFC 6749 §5.2: WWW-Authenticate for Basic, got {www!r}"
    assert 'realm="oauth-edge"' in www, www


def test_wrong_secret_post_rfc6749_5_2_invalid_client(envoy_main):
    r = token_request(envoy_main, Client("demo-client", "wrong-secret"), use="client_secret_post")
    assert_oauth_error(r, 401, "invalid_client")


def test_unknown_client_rfc6749_5_2_invalid_client(envoy_main):
    r = token_request(envoy_main, Client("no-such-client-static", "x"), use="client_secret_basic")
    assert_oauth_error(r, 401, "invalid_client")


def test_no_client_authentication_rfc6749_5_2_invalid_client(envoy_main):
    r = token_request(envoy_main, None)
    assert_oauth_error(r, 401, "invalid_client")


def test_secret_client_without_secret_rfc6749_5_2_invalid_client(envoy_main):
    r = token_request(envoy_main, None, data="grant_type=client_credentials&client_id=demo-client")
    assert_oauth_error(r, 401, "invalid_client")


def test_two_auth_methods_rfc6749_2_3_invalid_client(envoy_main):
    """RFC 6749 §2.3: the client MUST NOT use more than one authentication method per request."""
    r = token_request(envoy_main, DEMO_CLIENT, use="client_secret_basic",
                      data="grant_type=client_credentials&client_id=demo-client&client_secret=demo-secret")
    assert_oauth_error(r, 401, "invalid_client")


def test_public_client_client_credentials_rfc6749_4_4_rejected(envoy_main):
    """demo-public (auth method none, no client_credentials grant) cannot get a token."""
    r = token_request(envoy_main, None, data="grant_type=client_credentials&client_id=demo-public")
    if r.status_code == 401:
        assert_oauth_error(r, 401, "invalid_client")
    else:
        assert_oauth_error(r, 400, "unauthorized_client")


@pytest.mark.parametrize("authorization", [
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "Basic ",
    "Basic",
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "Basic " + base64.b64encode(b"demo-client:%zz").decode(),
    "Basic " + "A" * 8000,
    "Bearer abc.def.ghi",
])
def test_malformed_basic_header_rfc7617_invalid_client(envoy_main, authorization):
    r = token_request(envoy_main, None, headers={"Authorization": authorization})
    assert_oauth_error(r, 401, "invalid_client")


@pytest.mark.parametrize("scheme", ["basic", "BASIC", "bAsIc"])
def test_basic_scheme_case_insensitive_rfc9110_11_1(envoy_main, scheme):
    """RFC 9110 §11.1: the authentication scheme is a case-insensitive token."""
    value = basic_auth("demo-client", "demo-secret").split(" ", 1)[1]
    r = token_request(envoy_main, None, headers={"Authorization": f"{scheme} {value}"})
    assert_token_response(r, scope="read write", lifetime=ACCESS_TOKEN_LIFETIME)


def test_post_registered_client_wrong_secret_invalid_client(envoy_main):
    r = token_request(envoy_main, Client(POST_CLIENT.client_id, "nope"), use="client_secret_post")
    assert_oauth_error(r, 401, "invalid_client")


# ---------------------------------------------------------------- method
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_token_endpoint_method_rfc6749_3_2_post_only_405(envoy_main, method):
    """RFC 6749 §3.2: the client MUST use HTTP POST at the token endpoint."""
    r = requests.request(method, envoy_main.token_url, timeout=10,
                         params={"grant_type": "client_credentials"} if method == "GET" else None,
                         headers={"Authorization": basic_auth("demo-client", "demo-secret")})
    assert_oauth_error(r, 405, "invalid_request")
    assert "POST" in r.headers.get("Allow", ""), r.headers


# ---------------------------------------------------------------- repeated headers
def _raw_token(envoy, header_lines: str, body: bytes = b"grant_type=client_credentials&scope=read"):
    req = (f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n{header_lines}"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    status, hdrs, resp = raw_http(envoy.listen_port, req)
    return status, hdrs, json.loads(resp)


@pytest.mark.parametrize("first, second", [
    (("demo-client", "demo-secret"), ("demo-client", "wrong")),
    (("demo-client", "wrong"), ("demo-client", "demo-secret")),
    (("demo-client", "demo-secret"), ("post-client", "post-secret")),
], ids=["good-then-bad", "bad-then-good", "two-clients"])
def test_repeated_authorization_header_rfc6749_2_3_invalid_client(envoy_main, first, second):
    """Two Authorization headers are never resolved by picking one of them."""
    lines = (f"Content-Type: {FORM}\r\nAuthorization: {basic_auth(*first)}\r\n"
             f"Authorization: {basic_auth(*second)}\r\n")
    status, hdrs, body = _raw_token(envoy_main, lines)
    assert (status, body["error"]) == (401, "invalid_client"), (status, body)
    assert "no-store" in hdrs.get("cache-control", "")


def test_repeated_content_type_header_invalid_request(envoy_main):
    lines = f"Content-Type: application/json\r\nContent-Type: {FORM}\r\nAuthorization: {basic_auth('demo-client', 'demo-secret')}\r\n"
    status, _, body = _raw_token(envoy_main, lines)
    assert (status, body["error"]) == (400, "invalid_request"), (status, body)
