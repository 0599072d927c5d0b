"""Channels and prices changed at runtime through the admin API, served by every worker process
within a second; keys encrypted at rest; configuration channels read-only; every action audited."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel

TOKEN = "admin-token-for-tests"
SECRET = "sk-runtime-secret-7f3a9c"
MODELS = {"gpt-image-1": "gpt-image-1"}
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=SECRET) as e:
        yield e


def admin(gw: GatewayProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    # A new connection per call: with several workers, each may land on another process.
    return httpx.request(method, gw.url + "/admin" + path, headers=ADMIN, timeout=30, **kw)


def runtime_channel(emu: OpenAIEmulator, name: str = "rt", **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "base_url": emu.url + "/v1", "api_key": SECRET,
            "models": MODELS, "poll_interval": 0.05, "timeout": 5, **extra}


def worker_clients(gw: GatewayProcess, workers: int) -> list[httpx.Client]:
    """Kept-alive connections, at least one to each worker process (a connection stays with the
    process that accepted it; several opened at once land on different processes)."""
    clients: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + 20
    with ThreadPoolExecutor(8) as pool:
        while len(clients) < workers and time.monotonic() < deadline:
            fresh = [httpx.Client(base_url=gw.url + "/admin", headers=ADMIN, timeout=30) for _ in range(8)]
            for c, r in zip(fresh, pool.map(lambda c: c.get("/channels"), fresh), strict=True):
                pid = r.json()["process"]
                if pid in clients:
                    c.close()
                else:
                    clients[pid] = c
    assert len(clients) == workers, f"only reached {len(clients)} worker processes"
    return list(clients.values())


class Workers:
    """Kept-alive connections to every worker process of ``gw``, opened before a change so that
    the time until every process serves it can be measured from the change itself."""

    def __init__(self, gw: GatewayProcess, count: int = 2) -> None:
        self.gw, self.count = gw, count
        self.clients = worker_clients(gw, count)

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def seen(self, check: Any, *, since: float, within: float = 1.0) -> float:
        """Seconds from ``since`` until ``check(listing)`` held in every worker process."""
        good: set[int] = set()
        while time.monotonic() - since < within:
            answered = set()
            for c in self.clients:
                listing = c.get("/channels").json()
                answered.add(listing["process"])
                if check(listing):
                    good.add(listing["process"])
            if len(good) >= self.count:
                return time.monotonic() - since
            if len(answered) < self.count:  # a connection was closed and reopened to another process
                self.close()
                self.clients = worker_clients(self.gw, self.count)
            time.sleep(0.01)
        raise AssertionError(f"only {len(good)} of {self.count} processes saw the change within {within} s")


def serves(name: str, model: str = "gpt-image-1") -> Any:
    return lambda listing: any(c["name"] == name and model in c["serves"] for c in listing["data"])


def test_a_channel_added_through_the_admin_api_serves_at_once_in_every_worker(
        gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"admin_token": TOKEN, "local_model": False, "channels": []}, workers=2)
    client = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="gpt-image-1", prompt="x")
    workers = Workers(gw, 2)
    try:
        r = admin(gw, "POST", "/channels", json=runtime_channel(emu))
        changed = time.monotonic()
        assert r.status_code == 201, r.text
        assert r.json()["source"] == "database" and r.json()["has_api_key"] is True
        assert SECRET not in r.text
        assert workers.seen(serves("rt"), since=changed) <= 1.0
        for _ in range(6):  # fresh connections: both workers answer some of these
            with OpenAI(base_url=gw.url + "/v1", api_key=client.api_key, max_retries=0) as c:
                out = c.images.generate(model="gpt-image-1", prompt="a lighthouse", response_format="b64_json")
                assert out.data[0].b64_json
        assert len(emu.calls) == 6
        assert all(call.headers["authorization"] == f"Bearer {SECRET}" for call in emu.calls)

        # Disabled: gone from every worker within a second; re-enabled: back.
        r = admin(gw, "PATCH", "/channels/rt", json={"disabled": True})
        assert r.status_code == 200 and r.json()["disabled"] is True
        workers.seen(lambda listing: not serves("rt")(listing), since=time.monotonic())
        with pytest.raises(openai.NotFoundError):
            client.images.generate(model="gpt-image-1", prompt="x")
        assert admin(gw, "PATCH", "/channels/rt", json={"disabled": False}).status_code == 200
        workers.seen(serves("rt"), since=time.monotonic())

        # Edited: the new models map applies everywhere.
        r = admin(gw, "PATCH", "/channels/rt", json={"models": {"my-image": "gpt-image-1"}})
        assert r.status_code == 200, r.text
        workers.seen(serves("rt", "my-image"), since=time.monotonic())
        assert client.images.generate(model="my-image", prompt="x", response_format="b64_json").data[0].b64_json

        # Removed.
        assert admin(gw, "DELETE", "/channels/rt").status_code == 200
        workers.seen(lambda listing: all(c["name"] != "rt" for c in listing["data"]), since=time.monotonic())
        assert admin(gw, "DELETE", "/channels/rt").status_code == 404
    finally:
        workers.close()


def test_channel_keys_are_encrypted_at_rest_and_never_shown(gateway_factory: StartGateway,
                                                           emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"admin_token": TOKEN, "local_model": False, "channels": []})
    assert admin(gw, "POST", "/channels", json=runtime_channel(emu)).status_code == 201
    with sqlite3.connect(gw.root / "imagegate.db") as db:
        row = db.execute("SELECT * FROM channels WHERE name = 'rt'").fetchone()
    assert row is not None
    assert SECRET not in repr(row)
    for path in gw.root.glob("imagegate.db*"):  # the database file and its WAL
        assert SECRET.encode() not in path.read_bytes()
    listing = admin(gw, "GET", "/channels")
    assert SECRET not in listing.text
    audit = admin(gw, "GET", "/audit")
    assert SECRET not in audit.text
    # ... yet the gateway can use it.
    client = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)
    assert client.images.generate(model="gpt-image-1", prompt="x", response_format="b64_json").data


def test_bad_channels_are_clear_400s_and_names_are_unique(gateway_factory: StartGateway,
                                                         emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"admin_token": TOKEN, "local_model": False, "channels": [
        channel("yaml", "openai", emu.url + "/v1", MODELS)]})
    r = admin(gw, "POST", "/channels", json={**runtime_channel(emu), "provider": "nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider"
    r = admin(gw, "POST", "/channels", json={**runtime_channel(emu), "weight": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "weight"
    r = admin(gw, "POST", "/channels", json={**runtime_channel(emu), "colour": "red"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "colour"
    r = admin(gw, "POST", "/channels", json={**runtime_channel(emu), "provider": "recraft",
                                             "models": {"x": "no-such-model"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "models"
    assert admin(gw, "POST", "/channels", json=runtime_channel(emu)).status_code == 201
    r = admin(gw, "POST", "/channels", json=runtime_channel(emu))
    assert r.status_code == 409 and r.json()["error"]["code"] == "channel_exists"
    r = admin(gw, "PATCH", "/channels/rt", json={"timeout": -1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "timeout"
    r = admin(gw, "PATCH", "/channels/rt", json={"disabled": "yes"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "disabled"


def test_configuration_channels_are_listed_read_only(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"admin_token": TOKEN, "local_model": False, "channels": [
        channel("yaml", "openai", emu.url + "/v1", MODELS)]})
    listing = admin(gw, "GET", "/channels").json()
    (yaml_channel,) = listing["data"]
    assert yaml_channel["name"] == "yaml" and yaml_channel["read_only"] is True
    assert yaml_channel["source"] == "config" and yaml_channel["health"]["state"] == "closed"
    assert "api_key" not in yaml_channel and "test-upstream-key" not in str(listing)
    for method, body in (("PATCH", {"priority": 3}), ("DELETE", None)):
        r = admin(gw, method, "/channels/yaml", json=body)
        assert r.status_code == 409 and r.json()["error"]["code"] == "channel_read_only"
    r = admin(gw, "POST", "/channels", json=runtime_channel(emu, name="yaml"))
    assert r.status_code == 409


def test_channel_test_reports_latency_and_verdict(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"admin_token": TOKEN, "local_model": False, "channels": [
        channel("good", "openai", emu.url + "/v1", MODELS, api_key=SECRET),
        channel("bad", "openai", "http://127.0.0.1:9/v1", MODELS)]})
    r = admin(gw, "POST", "/channels/good/test")
    assert r.status_code == 200, r.text
    good = r.json()
    assert good["ok"] is True and good["model"] == "gpt-image-1" and good["latency_ms"] >= 0
    assert good["images"] == 1 and len(emu.calls) == 1
    bad = admin(gw, "POST", "/channels/bad/test", params={"model": "gpt-image-1"}).json()
    assert bad["ok"] is False and bad["error"]["code"] == "upstream_unavailable"
    r = admin(gw, "POST", "/channels/good/test", params={"model": "dall-e-3"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert admin(gw, "POST", "/channels/none/test").status_code == 404

    # The CLI asks the running gateway (health and the test run in the server).
    out = gw.cli("channels", "test", "good", "--base-url", gw.url, "--admin-token", TOKEN)
    assert "ok" in out and "gpt-image-1" in out
    out = subprocess_fails(gw, "channels", "test", "bad", "--base-url", gw.url, "--admin-token", TOKEN)
    assert "upstream_unavailable" in out
    listing = gw.cli("channels", "list", "--base-url", gw.url, "--admin-token", TOKEN)
    assert "good" in listing and "bad" in listing and "closed" in listing


def subprocess_fails(gw: GatewayProcess, *args: str) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "imagegate", "--config", str(gw.config_path), *args],
                         cwd=gw.root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out
    return out.stdout + out.stderr


def test_prices_set_at_runtime_apply_and_drop(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"admin_token": TOKEN, "local_model": False, "prices": {"gpt-image-1": 0.25},
                          "channels": [channel("c", "openai", emu.url + "/v1", MODELS, api_key=SECRET)]})
    account = gw.account(balance=10_000_000)
    client = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(account=account), max_retries=0)

    def spent_by_one_image() -> str:
        before = int(admin(gw, "GET", f"/accounts/{account}").json()["balance_micros"])
        client.images.generate(model="gpt-image-1", prompt="x", response_format="b64_json")
        after = int(admin(gw, "GET", f"/accounts/{account}").json()["balance_micros"])
        return f"{(before - after) / 1e6:.2f}"

    assert spent_by_one_image() == "0.25"
    r = admin(gw, "PUT", "/prices/gpt-image-1", json={"per_image": "1.5"})
    assert r.status_code == 200 and r.json()["source"] == "database", r.text
    assert spent_by_one_image() == "1.50"
    r = admin(gw, "PUT", "/prices/gpt-image-1", json={"per_image": -1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "per_image"
    prices = admin(gw, "GET", "/prices").json()["data"]
    assert [(p["model"], p["source"]) for p in prices] == [("gpt-image-1", "database")]
    assert admin(gw, "DELETE", "/prices/gpt-image-1").status_code == 200
    assert spent_by_one_image() == "0.25"
    assert admin(gw, "DELETE", "/prices/gpt-image-1").status_code == 404


def test_every_admin_action_is_audited_without_secrets(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"admin_token": TOKEN, "local_model": False, "channels": []})
    account = admin(gw, "POST", "/accounts", json={"name": "acme", "balance": "5"}).json()["id"]
    admin(gw, "POST", f"/accounts/{account}/topup", json={"amount": "1"})
    key = admin(gw, "POST", "/keys", json={"name": "k", "account_id": account}).json()
    admin(gw, "POST", f"/keys/{key['id']}/revoke")
    admin(gw, "POST", "/channels", json=runtime_channel(emu))
    admin(gw, "PATCH", "/channels/rt", json={"priority": 2})
    admin(gw, "PATCH", "/channels/rt", json={"disabled": True})
    admin(gw, "PATCH", "/channels/rt", json={"disabled": False})
    admin(gw, "POST", "/channels/rt/test")
    admin(gw, "DELETE", "/channels/rt")
    admin(gw, "PUT", "/prices/gpt-image-1", json={"per_image": 1})
    admin(gw, "DELETE", "/prices/gpt-image-1")
    page = admin(gw, "GET", "/audit", params={"limit": 100})
    assert page.status_code == 200
    rows = page.json()["data"]
    assert [r["action"] for r in reversed(rows)] == [
        "account.create", "account.topup", "key.create", "key.revoke", "channel.create", "channel.update",
        "channel.disable", "channel.enable", "channel.test", "channel.delete", "price.set", "price.delete"]
    assert {r["actor"] for r in rows} == {rows[0]["actor"]} and rows[0]["actor"].startswith("admin:")
    assert TOKEN not in page.text and SECRET not in page.text and key["key"] not in page.text
    assert rows[-1]["target"] == f"account:{account}" and rows[0]["at"] >= rows[-1]["at"]
    update = next(r for r in rows if r["action"] == "channel.update")
    assert update["detail"]["changes"] == {"priority": 2} and update["target"] == "channel:rt"
    # Paged: newest first, ``before`` the last id seen.
    first = admin(gw, "GET", "/audit", params={"limit": 5}).json()
    assert first["has_more"] is True and len(first["data"]) == 5
    rest = admin(gw, "GET", "/audit", params={"limit": 100, "before": first["next_before"]}).json()
    assert [r["id"] for r in first["data"] + rest["data"]] == [r["id"] for r in rows]

    # The CLI's operator commands are audited too, as cli:user@host.
    gw.cli("accounts", "create", "--name", "by-cli")
    newest = admin(gw, "GET", "/audit", params={"limit": 1}).json()["data"][0]
    assert newest["action"] == "account.create" and newest["actor"].startswith("cli:") and "@" in newest["actor"]


def test_cli_channel_and_price_commands_change_a_running_gateway(gateway_factory: StartGateway,
                                                                 emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"admin_token": TOKEN, "local_model": False, "channels": [
        channel("yaml", "openai", emu.url + "/v1", {"dall-e-3": "dall-e-3"}, api_key=SECRET)]})
    account = gw.account(balance=10_000_000)
    client = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(account=account), max_retries=0)
    out = subprocess_run(gw, "channels", "add", "cli-rt", "--provider", "openai", "--url", emu.url + "/v1",
                         "--api-key-env", "RT_KEY", "--model", "gpt-image-1", "--set", "breaker={cooldown: 5}",
                         env={"RT_KEY": SECRET})
    assert "added channel cli-rt" in out

    def served() -> bool:
        return any(c["name"] == "cli-rt" and c["serves"] == ["gpt-image-1"]
                   for c in admin(gw, "GET", "/channels").json()["data"])

    deadline = time.monotonic() + 1.0
    while not served():
        assert time.monotonic() < deadline, "the gateway did not pick up the CLI's channel within 1 s"
        time.sleep(0.05)
    assert client.images.generate(model="gpt-image-1", prompt="x", response_format="b64_json").data
    # A key may be limited to a model only a database channel serves.
    assert gw.cli("keys", "create", "--name", "limited", "--models", "gpt-image-1").strip()
    shown = admin(gw, "GET", "/channels/cli-rt").json()
    assert shown["breaker"]["cooldown"] == 5 and shown["has_api_key"] is True
    with sqlite3.connect(gw.root / "imagegate.db") as db:
        assert SECRET not in repr(db.execute("SELECT * FROM channels").fetchall())

    gw.cli("channels", "disable", "cli-rt")
    time.sleep(0.6)
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="gpt-image-1", prompt="x")
    gw.cli("channels", "enable", "cli-rt")
    gw.cli("channels", "edit", "cli-rt", "--priority", "4")
    with pytest.raises(RuntimeError, match="configuration file"):
        gw.cli("channels", "disable", "yaml")

    gw.cli("prices", "set", "gpt-image-1", "--per-image", "2")
    time.sleep(0.6)
    before = int(admin(gw, "GET", f"/accounts/{account}").json()["balance_micros"])
    client.images.generate(model="gpt-image-1", prompt="x", response_format="b64_json")
    after = int(admin(gw, "GET", f"/accounts/{account}").json()["balance_micros"])
    assert before - after == 2_000_000
    gw.cli("prices", "remove", "gpt-image-1")
    gw.cli("channels", "remove", "cli-rt")

    rows = admin(gw, "GET", "/audit").json()["data"]
    assert [r["action"] for r in rows if r["action"].startswith("key.")] == ["key.create"]
    actions = [(r["action"], r["target"]) for r in rows if not r["action"].startswith("key.")]
    assert actions == [("channel.delete", "channel:cli-rt"), ("price.delete", "price:gpt-image-1"),
                       ("price.set", "price:gpt-image-1"), ("channel.update", "channel:cli-rt"),
                       ("channel.enable", "channel:cli-rt"), ("channel.disable", "channel:cli-rt"),
                       ("channel.create", "channel:cli-rt")]
    assert all(r["actor"].startswith("cli:") for r in rows) and SECRET not in str(rows)


def subprocess_run(gw: GatewayProcess, *args: str, env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "imagegate", "--config", str(gw.config_path), *args],
                         cwd=gw.root, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout
