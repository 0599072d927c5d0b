"""The operator's tools: the ``accounts`` and ``keys`` CLI, and the admin API (present only
with a token, and only for its bearer)."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest

from tests.billing.conftest import books, generate, priced_config
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess

TOKEN = "admin-secret-token"


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory(priced_config(emu), env={"IMAGEGATE_ADMIN_TOKEN": TOKEN})


def admin(gw: GatewayProcess, method: str, path: str, *, token: str | None = TOKEN, expect: int = 200,
          **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.request(method, gw.url + "/admin" + path, headers=headers, **kw)
    assert r.status_code == expect, r.text
    return r.json()


def test_cli_accounts(gw: GatewayProcess) -> None:
    out = gw.cli("accounts", "create", "--name", "acme", "--balance", "12.50")
    account = out.splitlines()[-1]
    assert account.startswith("acct_")
    b = books(gw, account)
    assert b.balance == 12_500_000 and b.kinds() == ["topup"] and b.ledger_sum == b.balance

    assert gw.cli("accounts", "topup", account, "0.000001").strip() == "added 0.000001; balance: 12.500001"
    out = gw.cli("keys", "create", "--name", "k", "--account", account, "--rpm", "100", "--expires", "30d")
    key = out.splitlines()[-1]
    assert generate(gw, key, model="img-flat", size="256x256", response_format="b64_json").status_code == 200
    show = gw.cli("accounts", "show", account).splitlines()
    assert show == [f"account: {account}", "name: acme", "unlimited: no", "balance: 11.500001",
                    "held: 0.000000 in 0 open hold(s)", "ledger sum: 11.500001 (matches the balance)"]

    unlimited = gw.cli("accounts", "create", "--name", "house", "--unlimited").splitlines()[-1]
    key = gw.cli("keys", "create", "--name", "h", "--account", unlimited).splitlines()[-1]
    assert generate(gw, key, model="img-flat", size="256x256", response_format="b64_json").status_code == 200
    assert books(gw, unlimited).ledger == [] and books(gw, unlimited).holds == []
    assert "unlimited: yes" in gw.cli("accounts", "show", unlimited)


@pytest.mark.parametrize("args", [
    ("accounts", "create", "--name", "x", "--balance", "1.0000001"),
    ("accounts", "topup", "acct_missing", "1"),
    ("accounts", "show", "acct_missing"),
])
def test_cli_refuses(gw: GatewayProcess, args: tuple[str, ...]) -> None:
    with pytest.raises(RuntimeError):
        gw.cli(*args)


def test_admin_api(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    made = admin(gw, "POST", "/accounts", json={"name": "beta", "balance": "5.25"}, expect=201)
    account = made["id"]
    assert (made["balance"], made["balance_micros"], made["consistent"]) == ("5.250000", 5_250_000, True)
    assert admin(gw, "POST", f"/accounts/{account}/topup", json={"amount": 1})["balance"] == "6.250000"
    admin(gw, "POST", f"/accounts/{account}/topup", json={"amount": "-1"}, expect=400)
    admin(gw, "POST", "/accounts/acct_nope/topup", json={"amount": "1"}, expect=404)
    assert account in [a["id"] for a in admin(gw, "GET", "/accounts")["data"]]

    new = admin(gw, "POST", "/keys", json={"name": "k1", "account_id": account, "models": ["img-flat"],
                                           "rpm": 50, "expires": "7d"}, expect=201)
    assert new["key"].startswith("ig-") and new["webhook_secret"].startswith("whsec_")
    listed = admin(gw, "GET", "/keys", params={"account_id": account})["data"]
    assert [(k["id"], k["models"], k["rpm"]) for k in listed] == [(new["id"], ["img-flat"], 50)]
    assert "key" not in listed[0]
    admin(gw, "POST", "/keys", json={"name": "k2", "models": []}, expect=400)
    admin(gw, "POST", "/keys", json={"name": "k2", "expires": "later"}, expect=400)
    admin(gw, "POST", "/keys", json={"name": "k2", "account_id": "acct_nope"}, expect=404)

    assert generate(gw, new["key"], model="img-flat", n=2, size="256x256",
                    response_format="b64_json").status_code == 200
    shown = admin(gw, "GET", f"/accounts/{account}")
    assert (shown["balance"], shown["open_holds"], shown["consistent"]) == ("4.250000", 0, True)
    usage = admin(gw, "GET", "/usage", params={"account_id": account})
    assert (usage["totals"]["requests"], usage["totals"]["images"], usage["totals"]["cost"]) == (1, 2, "2.000000")
    assert usage["data"][0]["key_id"] == new["id"]
    assert admin(gw, "GET", "/tasks")["object"] == "list"

    # Revoked through the admin API: refused at once (this process forgets its key cache).
    admin(gw, "POST", f"/keys/{new['id']}/revoke")
    r = generate(gw, new["key"], model="img-flat")
    assert r.status_code == 401 and r.json()["error"]["message"] == "This API key has been revoked."


def test_admin_needs_the_token(gw: GatewayProcess) -> None:
    for token in (None, "wrong", gw.key()):
        error = admin(gw, "GET", "/accounts", token=token, expect=401)["error"]
        assert error["type"] == "authentication_error"
    admin(gw, "POST", "/accounts", token="wrong", json={"name": "x"}, expect=401)


def test_admin_absent_without_token(emu: OpenAIEmulator, gateway_factory: StartGateway) -> None:
    gw = gateway_factory(priced_config(emu))
    for path in ("/accounts", "/keys", "/usage", "/tasks"):
        admin(gw, "GET", path, token="anything", expect=404)
    # The caller's own usage works regardless.
    key = gw.key()
    r = httpx.get(gw.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["unlimited"] is True
    assert httpx.get(gw.url + "/v1/usage").status_code == 401
