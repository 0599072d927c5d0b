"""Key revocation and top-ups made by another process (the CLI) take effect in a running
gateway with two worker processes at once: the key cache is invalidated through the ``keys``
change counter, not by waiting for its entries to expire."""

from __future__ import annotations

import time

import httpx2 as httpx
import pytest

from tests.billing.conftest import generate, priced_config
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory(priced_config(emu), workers=2)


def test_cli_revocation_reaches_every_worker_at_once(gw: GatewayProcess) -> None:
    key = gw.key()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gw.url, headers=headers) as client:
        # Warm both workers' caches (new connections spread over the two processes).
        for _ in range(20):
            assert httpx.get(gw.url + "/v1/models", headers=headers).status_code == 200
        gw.cli("keys", "revoke", key)
        time.sleep(1.0)  # four looks at the change counter; the old cache kept keys for 5 s
        statuses = [httpx.get(gw.url + "/v1/models", headers=headers).status_code for _ in range(20)]
        assert statuses == [401] * 20
        r = client.get("/v1/models")
        assert r.json()["error"]["message"] == "This API key has been revoked."


def test_cli_topup_is_usable_at_once(gw: GatewayProcess) -> None:
    account = gw.account(balance=0)
    key = gw.key(account=account)
    r = generate(gw, key, model="img-flat")
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    gw.cli("accounts", "topup", account, "1.00")
    r = generate(gw, key, model="img-flat")
    assert r.status_code == 200, r.text
    r = generate(gw, key, model="img-flat")  # priced at 1.00: the top-up is spent
    assert r.status_code == 429
