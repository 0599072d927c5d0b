"""The console's tests: a gateway with the embedded model and an admin token, and real Chromium
(Debian's ``/usr/bin/chromium``) driven by Playwright — never a downloaded browser."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartGateway
from tests.harness import GatewayProcess

ADMIN = "console-admin-token"
CHROMIUM = os.environ.get("IMAGEGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> GatewayProcess:
    # imagegate-shapes priced, so money moves and the charts have something to count; webhooks may
    # go to loopback (a closed port there is a webhook that keeps failing).
    return module_gateway_factory({"local_model": True, "admin_token": ADMIN, "prices": {"imagegate-shapes": 0.01},
                                   "outbound_allowlist": ["127.0.0.1"]})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(20_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page: Any, gw: GatewayProcess, credential: str) -> None:
    page.goto(gw.url + "/")
    page.get_by_label("API key").fill(credential)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()
