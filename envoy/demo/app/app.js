// oauth-edge demo app: a public client in plain JavaScript, no build step.
// PAR + PKCE S256 -> /oauth/authorize -> code -> tokens (kept in memory only) -> refresh through
// the HttpOnly cookie at /oauth/refresh -> userinfo -> revocation -> RP-initiated logout.
"use strict";

const cfg = window.DEMO_CONFIG;
const redirectUri = location.origin + "/app/callback";
let meta = null; // the authorization server's metadata (RFC 8414)
let tokens = null; // {access_token, id_token, ...}: memory only, never storage
let idToken = null; // the last ID token: the hint of the RP-initiated logout

const $ = (id) => document.getElementById(id);

function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString() {
  return b64url(crypto.getRandomValues(new Uint8Array(32)));
}

async function s256(verifier) {
  return b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
}

function decodeJwt(jwt) {
  const part = (s) => JSON.parse(new TextDecoder().decode(
    Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0))));
  const [header, payload] = jwt.split(".");
  return { header: part(header), payload: part(payload) };
}

function status(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "status error" : "status";
}

function log(method, url, res, body) {
  const li = document.createElement("li");
  const what = body && body.error ? ` ${body.error}` : "";
  li.textContent = `${method} ${url} -> ${res.status}${what}`;
  $("log").appendChild(li);
}

// One call to the authorization server. `credentials: "include"` where the refresh cookie is set
// or sent (the code redemption, /oauth/refresh): across origins the browser then needs
// Access-Control-Allow-Credentials, which oauth-edge sends only there.
async function call(method, url, { form, json, credentials, bearer } = {}) {
  const init = { method, credentials: credentials ? "include" : "omit", headers: {} };
  if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
  if (form) {
    init.headers["Content-Type"] = "application/x-www-form-urlencoded";
    init.body = new URLSearchParams(form).toString();
  } else if (json) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  log(method, url, res, body);
  return { res, body };
}

function show(t) {
  tokens = t;
  if (!t) {
    $("access-token").textContent = "(none)";
    $("id-token").textContent = "(none)";
    return;
  }
  if (t.id_token) idToken = t.id_token;
  $("access-token").textContent = JSON.stringify(decodeJwt(t.access_token), null, 2);
  $("id-token").textContent = idToken ? JSON.stringify(decodeJwt(idToken), null, 2) : "(none)";
  const sub = decodeJwt(t.access_token).payload.sub;
  status(`Logged in as ${sub}; access token expires in ${t.expires_in} s; refresh token in an HttpOnly cookie.`);
}

function fail(what, body) {
  status(`${what} failed: ${body ? `${body.error}: ${body.error_description}` : "no answer"}`, true);
}

async function login() {
  const verifier = randomString();
  const state = randomString();
  const nonce = randomString();
  sessionStorage.setItem("demo.pkce", JSON.stringify({ verifier, state, nonce }));
  // Pushed authorization request (RFC 9126): a public client names itself with client_id.
  const { res, body } = await call("POST", meta.pushed_authorization_request_endpoint, {
    form: {
      response_type: "code", client_id: cfg.client_id, redirect_uri: redirectUri, scope: cfg.scope,
      state, nonce, code_challenge: await s256(verifier), code_challenge_method: "S256",
    },
  });
  if (res.status !== 201) return fail("Pushed authorization request", body);
  const q = new URLSearchParams({ client_id: cfg.client_id, request_uri: body.request_uri });
  location.assign(`${meta.authorization_endpoint}?${q}`);
}

async function callback(params) {
  const saved = JSON.parse(sessionStorage.getItem("demo.pkce") || "null");
  sessionStorage.removeItem("demo.pkce");
  history.replaceState(null, "", "/app/");
  if (params.get("error")) return fail("Authorization", { error: params.get("error"), error_description: params.get("error_description") });
  if (!saved || params.get("state") !== saved.state) return status("Authorization failed: state mismatch", true);
  if (params.get("iss") !== meta.issuer) return status("Authorization failed: wrong iss (RFC 9207)", true);
  const { res, body } = await call("POST", meta.token_endpoint, {
    credentials: true,
    form: {
      grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri,
      code_verifier: saved.verifier, client_id: cfg.client_id,
    },
  });
  if (res.status !== 200) return fail("Code redemption", body);
  if (body.id_token && decodeJwt(body.id_token).payload.nonce !== saved.nonce) return status("ID token nonce mismatch", true);
  show(body);
}

async function refresh() {
  // JSON body {}, the refresh token in the HttpOnly cookie; the browser sends Origin.
  const { res, body } = await call("POST", cfg.refresh_endpoint, { json: {}, credentials: true });
  if (res.status !== 200) {
    show(null);
    return fail("Refresh", body);
  }
  show(body);
  status(`${$("status").textContent} Refreshed.`);
}

async function revoke() {
  if (!tokens) return status("Nothing to revoke: no access token.", true);
  const { res, body } = await call("POST", meta.revocation_endpoint, {
    form: { token: tokens.access_token, token_type_hint: "access_token", client_id: cfg.client_id },
  });
  if (res.status !== 200) return fail("Revocation", body);
  show(null);
  status("Access token revoked (the refresh cookie still works: try Refresh tokens).");
}

async function userinfo() {
  if (!tokens) return status("No access token: log in or refresh first.", true);
  // OpenID Connect userinfo: the access token in the header (a CORS call from any origin).
  const { res, body } = await call("GET", meta.userinfo_endpoint, { bearer: tokens.access_token });
  if (res.status !== 200) return fail("Userinfo", body);
  $("userinfo").textContent = JSON.stringify(body, null, 2);
  status(`Userinfo for ${body.sub}: ${body.name || "(no name)"}.`);
}

async function logout() {
  if (tokens) await revoke();
  if (idToken && meta.end_session_endpoint) {
    // RP-initiated logout: the authorization server ends the login session (every refresh token
    // of it), clears the refresh and login cookies and sends the browser back here with state.
    const state = randomString();
    sessionStorage.setItem("demo.logout", state);
    const q = new URLSearchParams({
      id_token_hint: idToken, client_id: cfg.client_id,
      post_logout_redirect_uri: location.origin + "/app/", state,
    });
    location.assign(`${meta.end_session_endpoint}?${q}`);
    return;
  }
  // Without an ID token (the page was reloaded): the demo login service's own logout page
  // clears the login cookie and this browser's refresh token cookie.
  const q = new URLSearchParams({ return_to: location.origin + "/app/" });
  location.assign(`${cfg.login_logout}?${q}`);
}

async function main() {
  $("client-id").textContent = cfg.client_id;
  $("origin").textContent = location.origin;
  $("issuer").textContent = cfg.issuer;
  $("cross-origin").hidden = new URL(cfg.issuer).origin === location.origin;
  for (const [id, fn] of [["login", login], ["refresh", refresh], ["userinfo", userinfo], ["revoke", revoke],
    ["logout", logout]]) {
    $(id).addEventListener("click", () => fn().catch((e) => status(`${id} failed: ${e}`, true)));
  }
  const wellKnown = `${new URL(cfg.issuer).origin}/.well-known/oauth-authorization-server${new URL(cfg.issuer).pathname.replace(/\/$/, "")}`;
  const { res, body } = await call("GET", wellKnown);
  if (res.status !== 200) return fail("Discovery", body);
  meta = body;
  const params = new URLSearchParams(location.search);
  if (location.pathname === "/app/callback") await callback(params);
  const loggedOut = sessionStorage.getItem("demo.logout");
  if (loggedOut && params.get("state")) {
    sessionStorage.removeItem("demo.logout");
    history.replaceState(null, "", "/app/");
    if (params.get("state") === loggedOut) status("Logged out: the login session ended at the authorization server.");
    else status("Logout came back with the wrong state.", true);
  }
  document.body.dataset.ready = "true";
}

main().catch((e) => status(`Start failed: ${e}`, true));
