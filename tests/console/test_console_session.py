"""The console's session over plain HTTP: the cookie's flags, CSRF on every state-changing call,
expiry, sign-out, and what the proxy forwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2 as httpx
import pytest

from tests.conftest import StartGateway
from tests.console.conftest import ADMIN
from tests.harness import GatewayProcess

GENERATE = {"model": "imagegate-shapes", "prompt": "a red circle", "size": "64x64"}


@contextmanager
def signed_in(gw: GatewayProcess, credential: str) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        r = client.post("/console/session", json={"credential": credential})
        assert r.status_code == 200, r.text
        yield client, r.json()["csrf_token"]


def test_sign_in_sets_a_sealed_httponly_strict_expiring_cookie(gw: GatewayProcess) -> None:
    key = gw.cli("keys", "create", "--name", "cookie").strip().splitlines()[-1]
    r = httpx.post(gw.url + "/console/session", json={"credential": key})
    assert r.status_code == 200 and r.json()["role"] == "caller"
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("ig_session="))
    flags = session.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "max-age=28800" in flags and "path=/console" in flags
    assert key not in session and key not in r.text  # sealed, not merely signed
    assert httpx.post(gw.url + "/console/session", json={"credential": key + "x"}).status_code == 401
    assert httpx.post(gw.url + "/console/session", data={"credential": key}).status_code == 401  # a form: refused
    assert httpx.get(gw.url + "/", follow_redirects=False).headers["location"] == "/console/"


def test_state_changing_calls_need_the_csrf_token(gw: GatewayProcess) -> None:
    key = gw.cli("keys", "create", "--name", "csrf").strip().splitlines()[-1]
    with signed_in(gw, key) as (client, csrf):
        assert client.get("/console/api/v1/models").status_code == 200  # reads need no token
        missing = client.post("/console/api/v1/images/generations", json=GENERATE)
        assert missing.status_code == 403 and missing.json()["error"]["param"] == "x-csrf-token"
        wrong = client.post("/console/api/v1/images/generations", json=GENERATE, headers={"X-CSRF-Token": csrf + "x"})
        assert wrong.status_code == 403
        # A token that matches the cookie but not the session (an attacker who planted both) fails too.
        client.cookies.set("ig_csrf", "planted", path="/console")
        planted = client.post("/console/api/v1/images/generations", json=GENERATE, headers={"X-CSRF-Token": "planted"})
        assert planted.status_code == 403
        client.cookies.set("ig_csrf", csrf, path="/console")
        ok = client.post("/console/api/v1/images/generations", json=GENERATE, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["data"][0]["url"].startswith(gw.url + "/files/")
        assert client.delete("/console/session").status_code == 403
        assert client.delete("/console/session", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert client.get("/console/api/v1/models").status_code == 401  # signed out


def test_the_proxy_keeps_callers_off_admin_and_operators_on_it(gw: GatewayProcess) -> None:
    key = gw.cli("keys", "create", "--name", "roles").strip().splitlines()[-1]
    with signed_in(gw, key) as (caller, _):
        assert caller.get("/console/api/admin/accounts").status_code == 403
        assert caller.get("/console/api/healthz").status_code == 404
    with signed_in(gw, ADMIN) as (operator, csrf):
        assert operator.get("/console/session").json()["role"] == "operator"
        made = operator.post("/console/api/admin/accounts", json={"name": "via-console"},
                             headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201 and made.json()["name"] == "via-console"
        assert httpx.get(gw.url + "/console/api/v1/models").status_code == 401  # no session at all


@pytest.fixture(scope="module")
def short_sessions(module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({"local_model": True, "console_session_ttl": 3}, name="short")


def test_a_session_expires(short_sessions: GatewayProcess) -> None:
    key = short_sessions.cli("keys", "create", "--name", "expiry").strip().splitlines()[-1]
    with signed_in(short_sessions, key) as (client, csrf):
        live = client.get("/console/session")
        assert live.status_code == 200
        kept = dict(client.cookies)  # a browser that ignores Max-Age keeps sending the cookie
        time.sleep(max(0.0, live.json()["expires_at"] + 1.2 - time.time()))
        for name, value in kept.items():
            client.cookies.set(name, value, path="/console")
        assert client.get("/console/session").status_code == 401
        r = client.post("/console/api/v1/images/generations", json=GENERATE, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
