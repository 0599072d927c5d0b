"""Per-key rules in the OpenAI error shape: model allow-lists (403), requests per minute (429
with ``Retry-After``), expiry and revocation (401)."""

from __future__ import annotations

import time

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from tests.billing.conftest import MICRO, books, generate, priced_config
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory(priced_config(emu))


def models(gw: GatewayProcess, key: str) -> httpx.Response:
    return httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})


def test_model_allow_list(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    account = gw.account(balance=10 * MICRO)
    key = gw.key(account=account, models=["img-flat"])
    r = generate(gw, key, model="img-size")
    assert r.status_code == 403
    body = r.json()
    assert body["error"].pop("request_id") == r.headers["x-request-id"]  # quotable by the customer
    assert body == {"error": {"message": "This API key may not use the model 'img-size'.",
                                  "type": "permission_error", "param": "model", "code": "model_not_allowed"}}
    assert emu.calls == [] and books(gw, account).kinds() == ["topup"]  # refused before any hold
    assert [m["id"] for m in models(gw, key).json()["data"]] == ["img-flat"]
    client = OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.images.generate(model="gpt-image-1", prompt="a fox")
    assert client.images.generate(model="img-flat", prompt="a fox", size="256x256").data


def test_requests_per_minute(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    key = gw.key(rpm=3)
    client = OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    for _ in range(3):
        assert client.images.generate(model="img-flat", prompt="a fox", size="256x256").data
    r = generate(gw, key, model="img-flat", size="256x256")
    assert r.status_code == 429
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "3 requests per minute" in error["message"]
    assert 50 <= int(r.headers["retry-after"]) <= 60  # the oldest of the three frees its slot in ~60 s
    # Refused before reaching the upstream, on every work-creating surface.
    with pytest.raises(openai.RateLimitError):
        client.images.generate(model="img-flat", prompt="a fox", size="256x256")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="img-flat", messages=[{"role": "user", "content": "a fox"}])
    assert len(emu.calls) == 3
    # Reads have their own window: the key can still look around.
    assert models(gw, key).status_code == 200
    # Another key of the same account has its own budget.
    assert generate(gw, gw.key(rpm=3), model="img-flat", size="256x256").status_code == 200


def test_reads_do_not_spend_the_work_budget(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    key = gw.cli("keys", "create", "--name", "poller", "--rpm", "3").splitlines()[-1]
    auth = {"Authorization": f"Bearer {key}"}
    r = httpx.post(gw.url + "/v1/images/generations", params={"async": "true"}, headers=auth, timeout=30,
                   json={"model": "img-flat", "prompt": "a fox", "size": "256x256"})
    assert r.status_code == 200, r.text
    task = r.json()["task_id"]
    for _ in range(5):  # polling one's own task is a read, however often
        assert httpx.get(f"{gw.url}/v1/images/tasks/{task}", headers=auth).status_code == 200
    for path in ("/v1/models", "/v1/usage", "/v1/keys/self"):
        assert httpx.get(gw.url + path, headers=auth).status_code == 200
    # The work budget is intact: two more images, then the third is one too many.
    assert generate(gw, key, model="img-flat", size="256x256").status_code == 200
    assert generate(gw, key, model="img-flat", size="256x256").status_code == 200
    assert generate(gw, key, model="img-flat", size="256x256").status_code == 429


def test_reads_have_a_generous_limit_of_their_own(gw: GatewayProcess) -> None:
    key = gw.key(rpm=3)  # reads: max(60, 10 x rpm) = 60 per minute
    for _ in range(60):
        assert models(gw, key).status_code == 200
    r = models(gw, key)
    assert r.status_code == 429
    assert "60 reads per minute" in r.json()["error"]["message"] and int(r.headers["retry-after"]) >= 1
    assert generate(gw, key, model="img-flat", size="256x256").status_code == 200  # work has its own window
    bigger = gw.key(rpm=10)  # 10 x rpm = 100 reads per minute
    for _ in range(100):
        assert models(gw, bigger).status_code == 200
    assert models(gw, bigger).status_code == 429


def test_expired_key(gw: GatewayProcess) -> None:
    out = gw.cli("keys", "create", "--name", "old", "--expires", "2020-01-01")
    r = models(gw, out.splitlines()[-1])
    assert r.status_code == 401
    error = r.json()["error"]
    assert error.pop("request_id") == r.headers["x-request-id"]  # quotable by the customer
    assert error == {"message": "This API key has expired.", "type": "authentication_error",
                     "param": None, "code": "invalid_api_key"}

    out = gw.cli("keys", "create", "--name", "brief", "--expires", "3s")
    assert out.splitlines()[2].startswith("expires: ")
    key = out.splitlines()[-1]
    assert models(gw, key).status_code == 200  # valid, and now in the gateway's key cache
    time.sleep(max(0.0, 3.1 - 1.0))  # (the CLI took ~1 s to start)
    deadline = time.monotonic() + 3
    while models(gw, key).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    r = models(gw, key)
    assert r.status_code == 401, "an expired key must stop working although it is cached"
    client = OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.images.generate(model="img-flat", prompt="a fox")


def test_bad_expiry_and_unknown_account_are_cli_errors(gw: GatewayProcess) -> None:
    with pytest.raises(RuntimeError, match="ISO date"):
        gw.cli("keys", "create", "--name", "x", "--expires", "soon")
    with pytest.raises(RuntimeError, match="no account"):
        gw.cli("keys", "create", "--name", "x", "--account", "acct_missing")
