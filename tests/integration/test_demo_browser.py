"""A real browser clicks through the demo (issue 17 items 3 and 4): headless Chromium (Debian's
chromium and chromium-driver, `make chromium`) driven by Selenium. Login page -> authorize -> code
-> tokens shown decoded -> refresh through the HttpOnly cookie -> revocation -> logout, once with
the app on Envoy's own origin and once on a second origin (another loopback port), where every
call to the authorization server goes through CORS. Skipped, with the reason, where Chromium or
its driver is not installed."""
from __future__ import annotations

import json
import shutil
from typing import Any, Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

try:
    from selenium import webdriver
    from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                            TimeoutException, WebDriverException)
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as exc:  # pragma: no cover - tests/requirements.txt has selenium
    pytest.skip(f"selenium is not installed ({exc}): pip install -r tests/requirements.txt",
                allow_module_level=True)

if not CHROMIUM or not CHROMEDRIVER:
    pytest.skip("Chromium or its WebDriver is missing (`make chromium` installs Debian's chromium and "
                "chromium-driver with apt; it could not here): the demo's browser test is skipped",
                allow_module_level=True)

WAIT = 30  # seconds for each step (two shared cores, a cold V8)


@pytest.fixture
def browser() -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--window-size=1280,1000"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except WebDriverException as exc:
        pytest.skip(f"Chromium does not start here: {exc.msg}")
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _text(d: Any, element_id: str) -> str:
    return d.find_element(By.ID, element_id).text


def _wait(d: Any, what: str, condition: Any) -> None:
    try:
        # A page that navigates (a redirect away and back) replaces its elements while we read
        # them: not yet, try again.
        WebDriverWait(d, WAIT, ignored_exceptions=(StaleElementReferenceException,
                                                   NoSuchElementException)).until(condition)
    except TimeoutException:
        console = "\n".join(str(e) for e in d.get_log("browser"))
        status = d.find_elements(By.ID, "status")
        raise AssertionError(f"{what}: timed out at {d.current_url}\nstatus: "
                             f"{status[0].text if status else '-'}\nconsole:\n{console}") from None


def _wait_status(d: Any, what: str, fragment: str) -> str:
    _wait(d, what, lambda d: fragment in _text(d, "status"))
    return _text(d, "status")


def _open_app(d: Any, url: str) -> None:
    d.get(url)
    _wait(d, "the app starts", lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
          or "failed" in _text(d, "status"))
    assert "failed" not in _text(d, "status"), _text(d, "status")


def _decoded(d: Any, element_id: str) -> dict[str, Any]:
    return json.loads(_text(d, element_id))


@pytest.mark.parametrize("origin", ["same", "second"])
def test_click_through_the_demo(demo, browser, origin):
    d = browser
    app = (demo.base_url if origin == "same" else demo.spa_url) + "/app/"
    _open_app(d, app)
    assert d.find_element(By.ID, "cross-origin").is_displayed() == (origin == "second")

    # Log in: PAR, then /oauth/authorize sends the browser to the demo login page.
    d.find_element(By.ID, "login").click()
    _wait(d, "the login page", lambda d: d.current_url.startswith(demo.base_url + "/login?return_to="))
    d.find_element(By.ID, "username").send_keys("alice")
    d.find_element(By.ID, "password").send_keys("alice-demo")
    d.find_element(By.ID, "login-submit").click()

    # Back at the app with a code, redeemed: the tokens are shown decoded.
    status = _wait_status(d, "tokens after login", "Logged in as alice")
    assert d.current_url == app, d.current_url
    assert "HttpOnly cookie" in status
    access = _decoded(d, "access-token")
    assert access["header"]["typ"] == "at+jwt"
    assert access["payload"]["sub"] == "alice" and access["payload"]["client_id"] == "demo-spa"
    assert access["payload"]["iss"] == demo.base_url
    id_token = _decoded(d, "id-token")
    assert id_token["payload"]["aud"] == "demo-spa" and id_token["payload"]["nonce"]
    assert "oauth_edge_rt" not in d.execute_script("return document.cookie")  # HttpOnly

    # Refresh through the cookie (a preflighted, credentialed CORS call from the second origin).
    d.find_element(By.ID, "refresh").click()
    _wait_status(d, "refresh", "Refreshed.")
    refreshed = _decoded(d, "access-token")
    assert refreshed["payload"]["sub"] == "alice"
    assert refreshed["payload"]["jti"] != access["payload"]["jti"]

    # OpenID Connect userinfo with the access token (CORS from the second origin).
    d.find_element(By.ID, "userinfo").click()
    _wait_status(d, "userinfo", "Userinfo for alice: Alice Example")
    info = json.loads(_text(d, "userinfo"))
    assert info == {"sub": "alice", "name": "Alice Example", "preferred_username": "alice",
                    "email": "alice@example.com", "email_verified": True}, info
    assert _decoded(d, "id-token")["payload"]["sid"]

    # Revoke the access token; the refresh cookie still works.
    d.find_element(By.ID, "revoke").click()
    _wait_status(d, "revocation", "Access token revoked")
    assert _text(d, "access-token") == "(none)"
    d.find_element(By.ID, "refresh").click()
    _wait_status(d, "refresh after revocation", "Refreshed.")

    # Log out (RP-initiated logout): the session ends, both cookies are cleared, and the browser
    # comes back to the app with the state it sent.
    d.find_element(By.ID, "logout").click()
    _wait_status(d, "back at the app after logout", "Logged out: the login session ended")
    assert d.current_url == app, d.current_url
    d.find_element(By.ID, "refresh").click()
    _wait_status(d, "refresh after logout", "refresh token cookie is missing")

    # What the page did, in order (the app logs each call and its status).
    log = _text(d, "log")
    assert f"GET {demo.base_url}/.well-known/oauth-authorization-server -> 200" in log
    assert f"POST {demo.base_url}/oauth/refresh -> 400 invalid_request" in log
    # Logging in again needs the login page again (the filter cleared the login cookie).
    d.find_element(By.ID, "login").click()
    _wait(d, "the login page again", lambda d: "/login?return_to=" in d.current_url)
