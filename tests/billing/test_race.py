"""200 concurrent requests against a balance that covers exactly 50: the conditional UPDATE lets
exactly 50 holds through, across two worker processes sharing one SQLite database."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx2 as httpx

from tests.billing.conftest import MICRO, books, priced_config
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator


def test_exactly_the_balance_is_spent(emu: OpenAIEmulator, gateway_factory: StartGateway) -> None:
    gw = gateway_factory(priced_config(emu), workers=2)
    account = gw.account(balance=50 * MICRO)
    key = gw.key(account=account)

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=120,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            body = {"model": "img-flat", "prompt": "a red fox", "size": "256x256",
                    "response_format": "b64_json"}
            return await asyncio.gather(*(client.post("/v1/images/generations", json=body) for _ in range(200)))

    replies = asyncio.run(fire())
    statuses = Counter(r.status_code for r in replies)
    assert statuses == {200: 50, 429: 150}, statuses
    refused = [r.json()["error"] for r in replies if r.status_code == 429]
    assert {(e["type"], e["code"]) for e in refused} == {("insufficient_quota", "insufficient_quota")}
    assert len(emu.calls) == 50  # the refused never reached the upstream

    b = books(gw, account)
    assert b.balance == 0
    assert b.ledger_sum == b.balance
    kinds = Counter(b.kinds())
    assert kinds == {"topup": 1, "hold": 50, "release": 50, "charge": 50}
    assert len(b.holds) == 50 and all(settled for _, _, settled, _ in b.holds)
    assert gw.cli("accounts", "show", account).splitlines()[3] == "balance: 0.000000"
