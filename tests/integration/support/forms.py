"""The suite's one form poster: every test that POSTs a form body goes through post_form (the
helpers token_request, par_request, device and password requests build their forms and call it).

raw_post (helpers) is the exception by design: requests keeps one value per header name, so a
request with a header line repeated (two DPoP headers) is written with http.client."""
from __future__ import annotations

import base64
import urllib.parse
from typing import Any

import requests

FORM = "application/x-www-form-urlencoded"


def basic_auth(client_id: str, secret: str) -> str:
    """Authorization header value per RFC 6749 §2.3.1 (form-urlencode, then RFC 7617 Basic)."""
    raw = f"{urllib.parse.quote_plus(client_id, safe='')}:{urllib.parse.quote_plus(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def post_form(url: str, form: dict[str, str] | list[tuple[str, str]] | str | bytes, client: Any = None, *,
              basic: Any = None, dpop: str | list[str] | None = None, headers: dict[str, str] | None = None,
              session: requests.Session | None = None, timeout: float = 10, **kw: Any) -> requests.Response:
    """POST a form body: `form` as pairs or a dict (form-urlencoded here; a list value repeats the
    parameter), or a str/bytes body sent as it is. Content-Type form-urlencoded and Accept application/json unless `headers` say
    otherwise (headers are applied last).

    client: authenticated by its registered method (a helpers.Client): client_secret_basic (an
    Authorization header), client_secret_post (id and secret in the form), anything else
    (none, private_key_jwt, tls_client_auth, ...) client_id in the form. No client: no
    authentication. basic: a client sent as Basic credentials whatever its method. dpop: one
    proof (a DPoP header; several lines need helpers.raw_post). Other keywords go to requests
    (cert=, verify=, allow_redirects=)."""
    hdrs = {"Content-Type": FORM, "Accept": "application/json"}
    body: Any = form
    pairs: list[tuple[str, str]] | None = None
    if isinstance(form, dict):
        pairs = list(form.items())
    elif isinstance(form, list):
        pairs = list(form)
    if client is not None:
        if client.auth_method == "client_secret_basic":
            hdrs["Authorization"] = basic_auth(client.client_id, client.secret or "")
        else:
            assert pairs is not None, "a client in the form needs the form as pairs or a dict"
            if client.auth_method == "client_secret_post":
                pairs += [("client_id", client.client_id), ("client_secret", client.secret or "")]
            else:
                pairs.append(("client_id", client.client_id))
    if basic is not None:
        hdrs["Authorization"] = basic_auth(basic.client_id, basic.secret or "")
    if dpop is not None:
        assert isinstance(dpop, str), "one DPoP header only; use raw_post for more"
        hdrs["DPoP"] = dpop
    hdrs.update(headers or {})
    if pairs is not None:
        # doseq: a list value is the parameter repeated (resource=a&resource=b), as requests
        # encodes a dict.
        body = urllib.parse.urlencode(pairs, doseq=True)
    return (session or requests).post(url, data=body, headers=hdrs, timeout=timeout, **kw)
