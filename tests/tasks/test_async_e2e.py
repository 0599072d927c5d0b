"""Async mode end to end: a real gateway process, the OpenAI and BFL emulators upstream, the
official ``openai`` client submitting, the task endpoint polled, webhooks verified with the
``standardwebhooks`` package."""

from __future__ import annotations

import base64
import io
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from openai import OpenAI
from PIL import Image
from standardwebhooks import Webhook

from tests.conftest import StartGateway
from tests.emulators.base import UploadedFile, make_image
from tests.emulators.bfl import BflEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel
from tests.tasks.conftest import WebhookReceiver, auth, get_task, submit, wait_task, webhook_secret

TASK_ID = re.compile(r"[0-9a-f]{32}")
PRICE = 40_000  # micro-units: gpt-image-1 at 0.04 per image


@pytest.fixture(scope="module")
def bfl() -> Iterator[BflEmulator]:
    with BflEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, bfl: BflEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("oa", "openai", emu.url + "/v1", {"gpt-image-1": "gpt-image-1"}),
                     channel("flux", "bfl", bfl.url, {"flux": "flux-pro-1.1"})],
        "local_model": False,
        "prices": {"gpt-image-1": 0.04},
        "outbound_allowlist": ["127.0.0.1"],
        "tasks": {"workers": 4, "lease_seconds": 2, "poll_seconds": 0.2, "webhook_backoff": 0.05},
    })


@pytest.fixture(autouse=True)
def _reset(emu: OpenAIEmulator, bfl: BflEmulator) -> None:
    emu.reset()
    bfl.reset()


@pytest.fixture(scope="module")
def key(gw: GatewayProcess) -> str:
    return gw.key()


@pytest.fixture
def client(gw: GatewayProcess, key: str) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def balance(gw: GatewayProcess, account: str) -> int:
    with sqlite3.connect(gw.root / "imagegate.db") as db:
        (value,) = db.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone()
    return int(value)


def accepted(raw: Any) -> str:
    """The task id from an async answer, checking the contract's shape."""
    assert raw.status_code == 200
    body = json.loads(raw.text)
    assert TASK_ID.fullmatch(body["task_id"])
    assert body["code"] == "success" and body["message"] == "" and body["data"] == body["task_id"]
    return str(body["task_id"])


def verified(receiver: WebhookReceiver, secret: str, task_id: str) -> dict[str, Any]:
    (delivery,) = receiver.wait_deliveries(1, task_id=task_id)
    assert delivery.headers["webhook-id"].startswith("msg_") and "." not in delivery.headers["webhook-id"]
    payload = Webhook(secret).verify(delivery.body, delivery.headers)
    assert isinstance(payload, dict)
    return payload


def test_async_generate_polls_to_success_and_delivers_a_signed_webhook(
        client: OpenAI, gw: GatewayProcess, key: str, emu: OpenAIEmulator, receiver: WebhookReceiver) -> None:
    started = time.time()
    raw = client.images.with_raw_response.generate(
        model="gpt-image-1", prompt="a lighthouse at dusk", size="1536x1024",
        extra_query={"async": "true", "webhook": receiver.hook_url})
    task_id = accepted(raw)

    task = wait_task(gw, key, task_id)
    assert task["status"] == "SUCCESS", task
    assert task["task_id"] == task_id and task["action"] == "generate" and task["platform"] == "openai"
    assert task["progress"] == "100%" and task["fail_reason"] == "" and task["search_item"] == ""
    assert int(started) <= task["submit_time"] <= task["start_time"] <= task["finish_time"] <= time.time()
    result = task["data"]
    assert result["model"] == "gpt-image-1" and result["created"] >= task["submit_time"]
    assert result["usage"]["total_tokens"] > 0
    (item,) = result["data"]
    assert item["url"].startswith(gw.url + "/files/")
    assert Image.open(io.BytesIO(httpx.get(item["url"]).content)).size == (1536, 1024)
    assert len(emu.calls) == 1 and emu.calls[0].json["prompt"] == "a lighthouse at dusk"

    payload = verified(receiver, webhook_secret(gw, key), task_id)
    assert payload["task_id"] == task_id and payload["status"] == "SUCCESS"
    assert payload["data"]["data"][0]["url"].startswith(gw.url + "/files/")
    with pytest.raises(Exception, match="signature"):  # a wrong secret does not verify
        Webhook(webhook_secret(gw, gw.key())).verify(receiver.deliveries(task_id)[0].body,
                                                     receiver.deliveries(task_id)[0].headers)


def test_async_edit_multipart_stores_the_upload_and_answers_base64(
        client: OpenAI, gw: GatewayProcess, key: str, emu: OpenAIEmulator, receiver: WebhookReceiver) -> None:
    photo = make_image(64, 48, "png", seed=7)
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1", image=("photo.png", photo, "image/png"), prompt="make it snow",
        response_format="b64_json", extra_query={"async": "1", "webhook": receiver.hook_url})
    task_id = accepted(raw)

    task = wait_task(gw, key, task_id)
    assert task["status"] == "SUCCESS" and task["action"] == "edit", task
    (item,) = task["data"]["data"]
    assert "url" not in item
    assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).format == "PNG"
    (call,) = emu.calls
    sent = call.form["image"][0] if "image" in call.form else call.form["image[]"][0]
    assert isinstance(sent, UploadedFile) and sent.data == photo  # the stored blob, byte for byte
    assert verified(receiver, webhook_secret(gw, key), task_id)["status"] == "SUCCESS"


def test_upstream_failure_ends_in_failure_with_a_reason_and_costs_nothing(
        gw: GatewayProcess, emu: OpenAIEmulator, receiver: WebhookReceiver) -> None:
    account = gw.account(balance=1_000_000)
    key = gw.key(account=account)
    # The refusal takes a second to come, so the task is still running when the balance is read.
    emu.fail(status=400, delay=1.0, body={"error": {"message": "Your prompt was rejected: too many lighthouses.",
                                                    "type": "invalid_request_error", "param": "prompt", "code": None}})
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "lighthouses"}, webhook=receiver.hook_url)
    assert balance(gw, account) == 1_000_000 - PRICE  # held while it runs

    task = wait_task(gw, key, task_id)
    assert task["status"] == "FAILURE" and task["data"] is None
    assert "too many lighthouses" in task["fail_reason"]
    assert task["finish_time"] >= task["submit_time"] > 0
    assert balance(gw, account) == 1_000_000  # released in full
    payload = verified(receiver, webhook_secret(gw, key), task_id)
    assert payload["status"] == "FAILURE" and "too many lighthouses" in payload["fail_reason"]

    ok = submit(gw, key, {"model": "gpt-image-1", "prompt": "one lighthouse"})
    assert wait_task(gw, key, ok)["status"] == "SUCCESS"
    assert balance(gw, account) == 1_000_000 - PRICE  # charged once, for the success only


def test_a_task_is_visible_only_to_its_account(gw: GatewayProcess, key: str) -> None:
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "private"})
    other = gw.key()  # a new account
    for probe in (task_id, "0" * 32, "not-a-task-id"):
        r = get_task(gw, other, probe)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "task_not_found"
    same_account = gw.key(account=_account_of(gw, key))
    assert get_task(gw, same_account, task_id).status_code == 200
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"


def _account_of(gw: GatewayProcess, key: str) -> str:
    r = httpx.get(gw.url + "/v1/keys/self", headers=auth(key))
    assert r.status_code == 200
    return str(r.json()["account_id"])


@pytest.mark.parametrize(("params", "body", "status", "param"), [
    ({"async": "true"}, {"model": "gpt-image-1", "prompt": "x", "n": 99}, 400, "n"),
    ({"async": "true"}, {"model": "gpt-image-1", "prompt": "x", "size": "huge"}, 400, "size"),
    ({"async": "true"}, {"model": "no-such-model", "prompt": "x"}, 404, "model"),
    ({"async": "true", "webhook": "http://10.1.2.3/hook"}, {"model": "gpt-image-1", "prompt": "x"}, 400, "webhook"),
    ({"async": "true", "webhook": "ftp://example.com/hook"}, {"model": "gpt-image-1", "prompt": "x"}, 400, "webhook"),
])
def test_bad_input_is_still_a_synchronous_error(gw: GatewayProcess, key: str, emu: OpenAIEmulator,
                                               params: dict[str, str], body: dict[str, Any], status: int,
                                               param: str) -> None:
    r = httpx.post(gw.url + "/v1/images/generations", params=params, json=body, headers=auth(key))
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    assert emu.calls == []


def test_a_damaged_upload_is_a_synchronous_400(gw: GatewayProcess, key: str, emu: OpenAIEmulator) -> None:
    png = make_image(32, 32, "png")
    r = httpx.post(gw.url + "/v1/images/edits", params={"async": "true"}, headers=auth(key),
                   data={"model": "gpt-image-1", "prompt": "x"}, files={"image": ("a.png", png[:60], "image/png")})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "image[0]"
    assert emu.calls == []


def test_no_balance_is_a_synchronous_429(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    key = gw.key(account=gw.account(balance=PRICE - 1))
    r = httpx.post(gw.url + "/v1/images/generations", params={"async": "true"}, headers=auth(key),
                   json={"model": "gpt-image-1", "prompt": "x"})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "insufficient_quota"
    assert emu.calls == []


def test_queue_style_upstream_is_polled_and_progress_moves(gw: GatewayProcess, key: str, bfl: BflEmulator) -> None:
    bfl.pending_polls = 12
    task_id = submit(gw, key, {"model": "flux", "prompt": "a fox in snow", "size": "1024x768"})
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        data = get_task(gw, key, task_id).json()["data"]
        seen.append(int(data["progress"].rstrip("%")))
        if data["status"] != "IN_PROGRESS":
            break
        time.sleep(0.01)
    assert data["status"] == "SUCCESS" and data["platform"] == "bfl", data
    assert seen == sorted(seen), seen  # never goes back
    assert seen[-1] == 100 and any(0 < p < 100 for p in seen), seen
    assert len(bfl.submits()) == 1 and len(bfl.polls()) >= 12
    assert Image.open(io.BytesIO(httpx.get(data["data"]["data"][0]["url"]).content)).size == (1024, 768)


def test_operators_list_and_show_tasks(gw: GatewayProcess, key: str) -> None:
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "for the operator"})
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"
    assert task_id in gw.cli("tasks", "list", "--status", "SUCCESS")
    assert task_id not in gw.cli("tasks", "list", "--status", "FAILURE")
    shown = json.loads(gw.cli("tasks", "show", task_id))
    assert shown["id"] == task_id and shown["status"] == "SUCCESS" and shown["model"] == "gpt-image-1"
    assert shown["result"]["delivered"][0]["blob"].startswith("img/")


def test_a_caller_lists_its_accounts_tasks(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    account = gw.account(unlimited=True)
    key, other_key = gw.key(account=account), gw.key(account=account)
    ids = [submit(gw, k, {"model": "gpt-image-1", "prompt": f"fox {i}", "response_format": "b64_json"})
           for i, k in enumerate([key, other_key, key])]
    for task_id in ids:
        wait_task(gw, key, task_id)
    emu.fail(status=400, times=1, body={"error": {"message": "no foxes today", "type": "invalid_request_error"}})
    failed = submit(gw, key, {"model": "gpt-image-1", "prompt": "fox 3"})
    assert wait_task(gw, key, failed)["status"] == "FAILURE"
    stranger = submit(gw, gw.key(), {"model": "gpt-image-1", "prompt": "someone else's fox"})

    def page(**params: object) -> dict[str, Any]:
        r = httpx.get(gw.url + "/v1/images/tasks", params=params, headers=auth(key))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    first = page(limit=2)
    assert [t["task_id"] for t in first["data"]] == [failed, ids[2]] and first["has_more"]
    second = page(limit=2, before=first["next_before"])
    assert [t["task_id"] for t in second["data"]] == [ids[1], ids[0]] and not second["has_more"]
    assert stranger not in {t["task_id"] for t in first["data"] + second["data"]}  # any key of the account, only it

    done = page(status="success")["data"]
    assert [t["task_id"] for t in done] == [ids[2], ids[1], ids[0]]
    # Thumbnails are URLs whatever response_format the task asked for, and they serve the image.
    (image,) = done[0]["images"]
    assert Image.open(io.BytesIO(httpx.get(image["url"]).content)).size == (image["width"], image["height"])
    (bad,) = page(status="FAILURE")["data"]
    assert bad["task_id"] == failed and "no foxes today" in bad["fail_reason"] and bad["images"] == []

    for params, param in [({"status": "done"}, "status"), ({"limit": 0}, "limit"), ({"before": "f" * 32}, "before"),
                          ({"before": stranger}, "before")]:
        r = httpx.get(gw.url + "/v1/images/tasks", params=params, headers=auth(key))
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (params, r.text)
