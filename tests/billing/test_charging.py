"""What a request costs, end to end: failures are free, partial deliveries pay for what arrived,
prices by image, size, quality and token all hold the most and charge the delivered."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from tests.billing.conftest import MICRO, MODELS, PRICES, assert_free, books, generate
from tests.conftest import StartGateway
from tests.emulators.base import Failure, make_image
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("c1", "openai", emu.url + "/v1", MODELS),
                     channel("slow", "openai", emu.url + "/v1", {"img-slow": "dall-e-2"}, timeout=0.5)],
        "local_model": False,
        "prices": {**PRICES, "img-slow": "1.00"},
    })


@pytest.fixture
def funded(gw: GatewayProcess) -> tuple[str, str]:
    """A fresh account with 100.00 and a key of it."""
    account = gw.account(balance=100 * MICRO)
    return account, gw.key(account=account)


def images_body(count: int) -> dict[str, Any]:
    png = base64.b64encode(make_image(256, 256, "png")).decode()
    return {"created": int(time.time()), "data": [{"b64_json": png} for _ in range(count)]}


# -- failure is free ---------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [
    pytest.param(Failure(status=500), id="upstream-500"),
    pytest.param(Failure(status=503), id="upstream-503"),
    pytest.param(Failure(status=200, body={"created": 1713833628, "data": []}), id="no-image"),
    pytest.param(Failure(malformed=True), id="malformed"),
])
def test_upstream_failure_is_free(gw: GatewayProcess, emu: OpenAIEmulator, funded: tuple[str, str],
                                  failure: Failure) -> None:
    account, key = funded
    emu.fail(failure)
    r = generate(gw, key, model="img-flat", n=2)
    assert r.status_code >= 500, r.text
    assert len(emu.calls) == 1  # it did reach the upstream: the hold was in place and is released
    b = assert_free(gw, account, 100 * MICRO)
    assert b.holds[-1][1] == 2 * MICRO  # the hold covered both images


def test_timeout_is_free(gw: GatewayProcess, emu: OpenAIEmulator, funded: tuple[str, str]) -> None:
    account, key = funded
    emu.fail(Failure(status=200, body=images_body(1), delay=3))
    r = generate(gw, key, model="img-slow")
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert_free(gw, account, 100 * MICRO)


def test_moderation_is_free(gw: GatewayProcess, emu: OpenAIEmulator, funded: tuple[str, str]) -> None:
    account, key = funded
    emu.moderate()
    r = generate(gw, key, model="gpt-image-1")
    assert r.status_code == 400, r.text  # (which code the refusal gets is the adapter's business)
    assert_free(gw, account, 100 * MICRO)


def test_insufficient_quota_never_reaches_the_upstream(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    account = gw.account(balance=MICRO // 2)
    r = generate(gw, gw.key(account=account), model="img-flat")
    assert r.status_code == 429, r.text
    assert r.json()["error"]["type"] == "insufficient_quota"
    assert r.json()["error"]["code"] == "insufficient_quota"
    assert emu.calls == []
    b = books(gw, account)
    assert (b.balance, b.kinds(), b.holds) == (MICRO // 2, ["topup"], [])


# -- what success costs ------------------------------------------------------------------------

def test_partial_delivery_bills_only_delivered(gw: GatewayProcess, emu: OpenAIEmulator,
                                               funded: tuple[str, str]) -> None:
    account, key = funded
    emu.fail(Failure(status=200, body=images_body(3)))
    r = generate(gw, key, model="img-flat", n=4, response_format="b64_json")
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 3
    b = books(gw, account)
    ref = b.ledger[-1][0]
    assert [(k, a) for r_, k, a in b.ledger if r_ == ref] == [
        ("hold", -4 * MICRO), ("release", 4 * MICRO), ("charge", -3 * MICRO)]
    assert b.balance == 97 * MICRO == b.ledger_sum


@pytest.mark.parametrize(("model", "extra", "held", "charged"), [
    ("img-flat", {"n": 2}, 2 * MICRO, 2 * MICRO),
    ("img-size", {"size": "256x256", "n": 2}, MICRO // 2, MICRO // 2),
    ("img-size", {"size": "512x512"}, MICRO // 2, MICRO // 2),
    # No size named: the upstream may pick any, so the hold and the charge take the dearest.
    ("img-size", {}, MICRO, MICRO),
    ("img-quality", {"quality": "low", "n": 3}, 3 * MICRO // 2, 3 * MICRO // 2),
    ("img-quality", {"quality": "high"}, 2 * MICRO, 2 * MICRO),
    ("img-quality", {"quality": "medium"}, MICRO, MICRO),
    ("img-free", {"n": 3}, None, 0),
])
def test_prices(gw: GatewayProcess, funded: tuple[str, str], model: str, extra: dict[str, Any],
                held: int | None, charged: int) -> None:
    account, key = funded
    r = generate(gw, key, model=model, response_format="b64_json", **extra)
    assert r.status_code == 200, r.text
    b = books(gw, account)
    if held is None:  # a model without a price never touches the ledger
        assert (b.kinds(), b.holds) == (["topup"], [])
    else:
        assert b.holds[-1][1:3] == (held, True)
        assert b.ledger[-1][1:] == ("charge", -charged)
    assert b.balance == 100 * MICRO - charged == b.ledger_sum


def test_per_token_price_uses_upstream_usage(gw: GatewayProcess, funded: tuple[str, str]) -> None:
    account, key = funded
    r = generate(gw, key, model="gpt-image-1", quality="low", size="1024x1024", n=2, response_format="b64_json")
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["output_tokens"] == 2 * 272  # the emulator's low-quality 1024² token count
    # 5 $/M in, 40 $/M out, in micro-units: input_tokens * 5 + output_tokens * 40.
    expected = usage["input_tokens"] * 5 + usage["output_tokens"] * 40
    b = books(gw, account)
    assert b.holds[-1][1] == 2000 * 5 + 2 * 6240 * 40  # the hold assumed the most
    assert b.ledger[-1][1:] == ("charge", -expected)
    assert b.balance == 100 * MICRO - expected == b.ledger_sum
    # /v1/usage reports the same cost, as a decimal string and in micro-units.
    body = _usage(gw, key)
    assert body["totals"]["cost_micros"] == expected
    assert body["data"][0]["cost"] == f"0.{expected:06d}"


def test_usage_totals(gw: GatewayProcess, emu: OpenAIEmulator, funded: tuple[str, str]) -> None:
    _account, key = funded
    assert generate(gw, key, model="img-flat", n=2, response_format="b64_json").status_code == 200
    emu.fail(Failure(status=500))
    assert generate(gw, key, model="img-flat").status_code >= 500
    assert generate(gw, key, model="img-size", size="256x256", response_format="b64_json").status_code == 200
    body = _usage(gw, key)
    totals = body["totals"]
    assert (totals["requests"], totals["succeeded"], totals["failed"], totals["images"]) == (3, 2, 1, 3)
    assert totals["cost"] == "2.250000" and totals["cost_micros"] == 2_250_000
    assert totals["by_model"]["img-flat"] == {"requests": 2, "succeeded": 1, "images": 2,
                                              "cost": "2.000000", "cost_micros": 2 * MICRO}
    assert body["balance"] == "97.750000" and body["balance_micros"] == 97_750_000
    assert [row["status"] for row in body["data"]] == ["success", "upstream_unavailable", "success"]
    assert body["data"][1]["cost_micros"] == 0
    # Pagination: one row per page, newest first, following the cursor.
    first = _usage(gw, key, limit=1)
    assert first["has_more"] is True and len(first["data"]) == 1
    second = _usage(gw, key, limit=1, before=first["next_before"])
    assert second["data"][0]["id"] < first["data"][0]["id"]
    assert _usage(gw, key, limit=0, expect=400)["error"]["param"] == "limit"
    # Filters narrow the rows and the totals alike; the balance stays the account's.
    failed = _usage(gw, key, status="failed")
    assert [r["status"] for r in failed["data"]] == ["upstream_unavailable"] and failed["totals"]["requests"] == 1
    flat_ok = _usage(gw, key, model="img-flat", status="success")
    assert [(r["model"], r["images"]) for r in flat_ok["data"]] == [("img-flat", 2)]
    assert flat_ok["totals"]["cost_micros"] == 2 * MICRO and flat_ok["balance_micros"] == 97_750_000
    assert _usage(gw, key, status="ok", expect=400)["error"]["param"] == "status"


def test_usage_rows_link_their_stored_images(gw: GatewayProcess, funded: tuple[str, str]) -> None:
    import httpx2 as httpx

    _account, key = funded
    r = generate(gw, key, model="img-flat", n=2, response_format="url")
    assert r.status_code == 200, r.text
    answered = [httpx.get(item["url"]).content for item in r.json()["data"]]
    assert generate(gw, key, model="img-flat", response_format="b64_json").status_code == 200
    b64_row, url_row = _usage(gw, key, limit=2)["data"]
    assert b64_row["image_urls"] == []  # base64 answers are never stored: nothing to link
    assert [httpx.get(u).content for u in url_row["image_urls"]] == answered


def _usage(gw: GatewayProcess, key: str, expect: int = 200, **params: Any) -> dict[str, Any]:
    import httpx2 as httpx

    r = httpx.get(gw.url + "/v1/usage", params=params, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == expect, r.text
    return dict(r.json())
