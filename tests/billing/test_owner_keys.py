"""Owner keys manage their own account's keys through ``/v1/keys`` — and can never give more
than they have. Driven over HTTP and with the official ``openai`` client; the operator's view
(the audit log, ``--owner``) through the admin API and the CLI."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from alembic import command
from openai import OpenAI

from imagegate.db.migrate import alembic_config
from tests.billing.conftest import MICRO, generate, priced_config
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess

ADMIN = "admin-token-for-owner-tests"


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory(priced_config(emu, admin_token=ADMIN))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def owner_key(gw: GatewayProcess, account: str, *extra: str) -> str:
    out = gw.cli("keys", "create", "--name", "boss", "--account", account, "--owner", *extra)
    assert "owner: yes" in out
    return out.splitlines()[-1]


def make(gw: GatewayProcess, key: str, **body: object) -> httpx.Response:
    return httpx.post(gw.url + "/v1/keys", headers=auth(key), json={"name": "child", **body})


def test_an_owner_manages_its_accounts_keys(gw: GatewayProcess) -> None:
    account = gw.account(balance=10 * MICRO)
    boss = owner_key(gw, account)
    plain = gw.key(account=account, name="plain")
    stranger = gw.key(name="stranger")  # its own account

    # A plain key sees only itself; key management is refused with a clear code.
    r = httpx.get(gw.url + "/v1/keys", headers=auth(plain))
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_owner"
    assert make(gw, plain).status_code == 403

    listed = httpx.get(gw.url + "/v1/keys", headers=auth(boss)).json()["data"]
    assert sorted((k["name"], k["owner"], k["self"]) for k in listed) == [("boss", True, True), ("plain", False, False)]
    assert all(k["account_id"] == account and "key" not in k and "webhook_secret" not in k for k in listed)

    r = make(gw, boss, models=["img-flat"])
    assert r.status_code == 201, r.text
    child = r.json()
    assert (child["owner"], child["models"], child["account_id"]) == (False, ["img-flat"], account)
    assert child["key"].startswith("ig-") and child["webhook_secret"].startswith("whsec_")
    client = OpenAI(base_url=gw.url + "/v1", api_key=child["key"], max_retries=0)
    assert client.images.generate(model="img-flat", prompt="a fox", size="256x256").data
    with pytest.raises(openai.PermissionDeniedError):
        client.images.generate(model="img-size", prompt="a fox")
    assert make(gw, child["key"]).status_code == 403  # what an owner makes is never an owner

    # Revoking: at once in this process; never itself; never another account's key.
    r = httpx.post(f"{gw.url}/v1/keys/{child['id']}/revoke", headers=auth(boss))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        client.images.generate(model="img-flat", prompt="a fox", size="256x256")
    me = next(k for k in listed if k["self"])
    r = httpx.post(f"{gw.url}/v1/keys/{me['id']}/revoke", headers=auth(boss))
    assert r.status_code == 400 and r.json()["error"]["param"] == "key_id"
    theirs = httpx.get(gw.url + "/v1/keys/self", headers=auth(stranger)).json()["id"]
    r = httpx.post(f"{gw.url}/v1/keys/{theirs}/revoke", headers=auth(boss))
    assert r.status_code == 404 and r.json()["error"]["param"] == "key_id"
    assert generate(gw, stranger, model="img-flat", size="256x256").status_code == 200

    # The operator sees who did it.
    audit = httpx.get(gw.url + "/admin/audit", headers=auth(ADMIN)).json()["data"]
    mine = [(e["action"], e["target"]) for e in audit
            if e["actor"] == f"key:{me['id']}"]
    assert mine == [("key.revoke", f"key:{child['id']}"), ("key.create", f"key:{child['id']}")]


def test_an_owner_cannot_give_more_than_it_has(gw: GatewayProcess) -> None:
    account = gw.account(balance=MICRO)
    boss = owner_key(gw, account, "--models", "img-flat,img-size", "--rpm", "5", "--expires", "30d")
    own = httpx.get(gw.url + "/v1/keys/self", headers=auth(boss)).json()

    inherited = make(gw, boss).json()  # nothing asked: the owner's own limits
    assert (inherited["models"], inherited["rpm"], inherited["expires_at"]) == \
        (["img-flat", "img-size"], 5, own["expires_at"])
    narrower = make(gw, boss, models=["img-size"], rpm=2, expires="1d").json()
    assert (narrower["models"], narrower["rpm"]) == (["img-size"], 2)
    assert narrower["expires_at"] < own["expires_at"]

    for body, status, param in [
        ({"models": ["gpt-image-1"]}, 403, "models"),      # served, but not the owner's to give
        ({"models": ["no-such-model"]}, 400, "models"),    # not served at all
        ({"models": []}, 400, "models"),
        ({"rpm": 6}, 403, "rpm"),
        ({"rpm": 0}, 400, "rpm"),
        ({"expires": "60d"}, 403, "expires"),
        ({"expires": "soon"}, 400, "expires"),
        ({"owner": True}, 400, "owner"),                   # owners are the operator's to make
        ({"name": ""}, 400, "name"),
    ]:
        r = make(gw, boss, **body)
        assert (r.status_code, r.json()["error"]["param"]) == (status, param), (body, r.text)


def test_the_quick_start_key_owns_its_account(gw: GatewayProcess) -> None:
    first = gw.cli("keys", "create", "--name", "first-key").splitlines()[-1]  # what ./scripts/serve runs
    assert httpx.get(gw.url + "/v1/keys/self", headers=auth(first)).json()["owner"] is True
    made = httpx.post(gw.url + "/admin/keys", headers=auth(ADMIN), json={"name": "ops-made", "owner": True,
                                                                            "account_id": gw.account()}).json()
    assert made["owner"] is True
    assert httpx.get(gw.url + "/v1/keys", headers=auth(made["key"])).status_code == 200
    listed = gw.cli("keys", "list").splitlines()
    assert listed[0].split()[4] == "owner"


def test_the_upgrade_makes_owners_of_keys_that_made_their_account(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{db}"
    asyncio.run(asyncio.to_thread(command.upgrade, alembic_config(url), "0003"))
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO accounts (id, name, balance, unlimited, created_at) VALUES (?, ?, 0, 1, 0)",
                      [("a1", "first-key"), ("a2", "team")])
        c.executemany("INSERT INTO api_keys (id, account_id, name, key_hash, prefix, webhook_secret, created_at) "
                      "VALUES (?, ?, ?, ?, 'sk-', 'whsec_x', 0)",
                      [("k1", "a1", "first-key", "h1"), ("k2", "a2", "team", "h2"), ("k3", "a2", "ci", "h3")])
    command.upgrade(alembic_config(url), "head")
    with sqlite3.connect(db) as c:
        owners = dict(c.execute("SELECT id, owner FROM api_keys").fetchall())
    # k1 made its own account (the one key, named alike); a2 has two keys: no guess is made.
    assert owners == {"k1": 1, "k2": 0, "k3": 0}
