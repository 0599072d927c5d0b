"""Webhook delivery: Standard Webhooks signatures, retries with backoff, the attempt bound."""

from __future__ import annotations

import sqlite3
import time

import pytest
from standardwebhooks import Webhook

from imagegate.tasks.webhooks import backoff, signed_headers
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel
from tests.tasks.conftest import WebhookReceiver, submit, wait_task, webhook_secret

MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("oa", "openai", emu.url + "/v1", {"gpt-image-1": "gpt-image-1"})],
        "local_model": False,
        "outbound_allowlist": ["127.0.0.1"],
        "tasks": {"workers": 2, "poll_seconds": 0.2, "webhook_backoff": 0.1,
                  "webhook_max_attempts": MAX_ATTEMPTS, "webhook_timeout": 0.5},
    })


@pytest.fixture(scope="module")
def key(gw: GatewayProcess) -> str:
    return gw.key()


def delivery_row(gw: GatewayProcess, task_id: str) -> tuple[str, int, int | None]:
    with sqlite3.connect(gw.root / "imagegate.db") as db:
        row = db.execute("SELECT status, attempts, last_status FROM webhook_deliveries WHERE task_id = ?",
                         (task_id,)).fetchall()
    assert len(row) == 1, row  # one delivery per finished task
    status, attempts, last = row[0]
    return str(status), int(attempts), last


def wait_row(gw: GatewayProcess, task_id: str, status: str, timeout: float = 15) -> tuple[str, int, int | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = delivery_row(gw, task_id)
        if row[0] == status:
            return row
        time.sleep(0.05)
    raise AssertionError(f"delivery of {task_id} never became {status}: {delivery_row(gw, task_id)}")


def test_signed_headers_verify_with_the_standardwebhooks_package() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"task_id":"abc","status":"SUCCESS","note":"caf\xc3\xa9"}'
    headers = signed_headers(secret, "msg_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers)["status"] == "SUCCESS"
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(body.replace(b"SUCCESS", b"FAILURE"), headers)


def test_backoff_grows_exponentially_with_jitter() -> None:
    for attempt in range(1, 8):
        full = 10 * 2 ** (attempt - 1)
        delays = [backoff(attempt, 10) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_a_failing_receiver_gets_the_same_message_again_until_it_succeeds(
        gw: GatewayProcess, key: str, receiver: WebhookReceiver) -> None:
    receiver.fail(status=503, times=1)
    receiver.fail(status=200, delay=1.0, times=1)  # answers after the 0.5 s timeout: a failed attempt
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "retry me"}, webhook=receiver.hook_url)
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"

    attempts = receiver.wait_deliveries(3, task_id=task_id)
    assert wait_row(gw, task_id, "delivered")[1:] == (3, 204)
    ids = {a.headers["webhook-id"] for a in attempts}
    assert len(ids) == 1  # stable across retries: the receiver's idempotency key
    secret = webhook_secret(gw, key)
    for a in attempts:  # every attempt is signed afresh and verifies
        assert Webhook(secret).verify(a.body, a.headers)["task_id"] == task_id
    time.sleep(0.5)
    assert len(receiver.deliveries(task_id)) == 3  # delivered: no more attempts


def test_attempts_stop_at_the_bound_and_never_hold_up_the_task(
        gw: GatewayProcess, key: str, receiver: WebhookReceiver) -> None:
    receiver.fail(status=500, times=100)
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "nobody listens"}, webhook=receiver.hook_url)
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"  # while the webhook still fails
    assert wait_row(gw, task_id, "failed") == ("failed", MAX_ATTEMPTS, 500)
    time.sleep(1.0)  # several backoff periods: nothing more is sent
    assert len(receiver.deliveries(task_id)) == MAX_ATTEMPTS


def test_gone_disables_the_delivery_at_once(gw: GatewayProcess, key: str, receiver: WebhookReceiver) -> None:
    receiver.fail(status=410, times=100)
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "gone"}, webhook=receiver.hook_url)
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"
    assert wait_row(gw, task_id, "failed") == ("failed", 1, 410)
    time.sleep(0.5)
    assert len(receiver.deliveries(task_id)) == 1


def test_no_webhook_without_a_webhook_url(gw: GatewayProcess, key: str, receiver: WebhookReceiver) -> None:
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "quiet"})
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"
    with sqlite3.connect(gw.root / "imagegate.db") as db:
        assert db.execute("SELECT count(*) FROM webhook_deliveries WHERE task_id = ?", (task_id,)).fetchone() == (0,)
