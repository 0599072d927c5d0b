"""Webhook endpoints that push back: ``Retry-After`` is honoured, and a URL that keeps failing
is paused (deliveries kept, not sent) until an operator resumes it."""

from __future__ import annotations

import json
import time

import httpx2 as httpx
import pytest

from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel
from tests.tasks.conftest import WebhookReceiver, submit, wait_task

ADMIN = "admin-token-for-tests"


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("oa", "openai", emu.url + "/v1", {"gpt-image-1": "gpt-image-1"})],
        "local_model": False,
        "outbound_allowlist": ["127.0.0.1"],
        "admin_token": ADMIN,
        "tasks": {"workers": 2, "poll_seconds": 0.2, "webhook_backoff": 0.1, "webhook_max_attempts": 8,
                  "webhook_timeout": 0.5, "webhook_pause_after": 3},
    })


def test_retry_after_is_honoured(gw: GatewayProcess, receiver: WebhookReceiver) -> None:
    key = gw.key()
    receiver.fail(status=503, headers={"Retry-After": "2"}, times=1)
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "later please"}, webhook=receiver.hook_url)
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"
    first, second = receiver.wait_deliveries(2, task_id=task_id, timeout=10)[:2]
    # The backoff alone would retry after 0.05-0.1 s; the endpoint asked for 2 s.
    assert second.received_at - first.received_at >= 1.9


def test_a_failing_url_is_paused_then_resumed(gw: GatewayProcess, receiver: WebhookReceiver) -> None:
    key = gw.key()
    receiver.fail(status=500, times=1000)
    tasks = [submit(gw, key, {"model": "gpt-image-1", "prompt": f"nobody home {i}"}, webhook=receiver.hook_url)
             for i in range(2)]
    for task_id in tasks:
        assert wait_task(gw, key, task_id)["status"] == "SUCCESS"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        endpoints = httpx.get(gw.url + "/admin/webhooks", headers=admin).json()["data"]
        if endpoints and endpoints[0]["paused"]:
            break
        time.sleep(0.05)
    assert endpoints[0]["url"] == receiver.hook_url and endpoints[0]["consecutive_failures"] == 3
    time.sleep(1.0)  # ten backoff periods: a paused URL gets nothing more
    assert len(receiver.deliveries()) == 3
    (delivery,) = json.loads(gw.cli("tasks", "show", tasks[0]))["webhook_deliveries"]
    assert (delivery["status"], delivery["endpoint_paused"]) == ("pending", True)
    # One delivery cannot jump a paused URL's queue: resuming the URL is the way.
    r = httpx.post(f"{gw.url}/admin/webhooks/deliveries/{delivery['id']}/retry", headers=admin)
    assert r.status_code == 409 and "paused" in r.json()["error"]["message"]

    listed = gw.cli("webhooks", "list").splitlines()
    assert listed[0].split()[:2] == ["url", "failures"] and listed[1].startswith(receiver.hook_url + "  3  ")

    receiver.reset()  # the endpoint is back
    assert "2 pending deliveries" in gw.cli("webhooks", "resume", receiver.hook_url)
    for task_id in tasks:
        receiver.wait_deliveries(1, task_id=task_id, timeout=10)
    again = httpx.post(gw.url + "/admin/webhooks/resume", headers=admin, json={"url": receiver.hook_url})
    assert again.status_code == 404 and again.json()["error"]["param"] == "url"


def test_deliveries_are_shown_and_one_is_retried(gw: GatewayProcess, receiver: WebhookReceiver) -> None:
    key = gw.key()
    receiver.fail(status=410, times=1)  # Gone: failed at once, no retry of its own
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "try again"}, webhook=receiver.hook_url)
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"
    (first,) = receiver.wait_deliveries(1, task_id=task_id)

    def shown(who: str) -> list[dict[str, object]]:
        r = httpx.get(f"{gw.url}/v1/images/tasks/{task_id}/webhooks", headers={"Authorization": f"Bearer {who}"})
        assert r.status_code == 200, r.text
        data: list[dict[str, object]] = r.json()["data"]
        return data

    deadline = time.monotonic() + 10
    while shown(key)[0]["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    (d,) = shown(key)
    assert (d["status"], d["attempts"], d["last_status"], d["url"], d["paused"]) == \
        ("failed", 1, 410, receiver.hook_url, False)
    assert d["id"] == first.headers["webhook-id"]
    assert httpx.get(f"{gw.url}/v1/images/tasks/{task_id}/webhooks",
                     headers={"Authorization": f"Bearer {gw.key()}"}).status_code == 404  # not that account's

    admin = {"Authorization": f"Bearer {ADMIN}"}
    detail = httpx.get(f"{gw.url}/admin/tasks/{task_id}", headers=admin).json()
    assert detail["webhook_url"] == receiver.hook_url and [w["id"] for w in detail["webhooks"]] == [d["id"]]
    r = httpx.post(f"{gw.url}/admin/webhooks/deliveries/{d['id']}/retry", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    again = receiver.wait_deliveries(2, task_id=task_id)[1]
    assert again.headers["webhook-id"] == d["id"]  # the same message: receivers dedupe on it
    while shown(key)[0]["status"] != "delivered" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (shown(key)[0]["status"], shown(key)[0]["attempts"]) == ("delivered", 2)
    r = httpx.post(f"{gw.url}/admin/webhooks/deliveries/{d['id']}/retry", headers=admin)
    assert r.status_code == 409 and r.json()["error"]["param"] == "delivery_id"
    with pytest.raises(RuntimeError, match="delivered already"):
        gw.cli("webhooks", "retry", d["id"])
    r = httpx.post(f"{gw.url}/admin/webhooks/deliveries/msg_nope/retry", headers=admin)
    assert r.status_code == 404
    audit = httpx.get(gw.url + "/admin/audit", headers=admin).json()["data"]
    assert any(e["action"] == "webhook.retry" and e["target"] == f"webhook_delivery:{d['id']}" for e in audit)
