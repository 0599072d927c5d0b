"""A gateway killed with SIGKILL while tasks are queued, running and polling a queue-style
upstream (the BFL emulator): after a restart every task finishes exactly once — none lost, none
submitted upstream again once its upstream id was recorded, charged once, one webhook each, and
no webhook for a task that had not finished."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.conftest import StartGateway
from tests.emulators.bfl import BflEmulator
from tests.harness import GatewayProcess, channel
from tests.tasks.conftest import WebhookReceiver, submit, wait_task, webhook_secret

TASKS = 12
PRICE = 50_000
BALANCE = 10_000_000


@pytest.fixture(scope="module")
def bfl() -> Iterator[BflEmulator]:
    with BflEmulator() as e:
        yield e


def snapshot(gw: GatewayProcess) -> dict[str, dict[str, Any]]:
    """id → status and the upstream ids the database has recorded for the task."""
    with sqlite3.connect(gw.root / "imagegate.db", timeout=30) as db:
        rows = db.execute("SELECT id, status, state, request FROM tasks").fetchall()
    out = {}
    for task_id, status, state, request in rows:
        calls = json.loads(state).get("calls", []) if state else []
        out[task_id] = {"status": status, "prompt": json.loads(request)["prompt"],
                        "upstream_ids": [c["handle"]["id"] for c in calls if c.get("handle")]}
    return out


def test_sigkill_loses_nothing_and_duplicates_nothing(bfl: BflEmulator, receiver: WebhookReceiver,
                                                       gateway_factory: StartGateway) -> None:
    bfl.pending_polls = 8
    bfl.latency = 0.1  # every exchange takes a while, so some are in flight when the process dies
    gw = gateway_factory({
        "channels": [channel("flux", "bfl", bfl.url, {"flux": "flux-pro-1.1"})],
        "local_model": False,
        "prices": {"flux": PRICE / 1_000_000},
        "outbound_allowlist": ["127.0.0.1"],
        "tasks": {"workers": 3, "lease_seconds": 1.0, "poll_seconds": 0.2, "webhook_backoff": 0.05},
    })
    account = gw.account(balance=BALANCE)
    key = gw.key(account=account)
    ids = [submit(gw, key, {"model": "flux", "prompt": f"crash task {i}"}, webhook=receiver.hook_url)
           for i in range(TASKS)]

    # Kill once some tasks are polling (upstream id recorded) while others still wait in the queue.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        snap = snapshot(gw)
        if any(t["upstream_ids"] for t in snap.values()) and any(t["status"] == "QUEUED" for t in snap.values()):
            break
        time.sleep(0.01)
    gw.kill()
    before = snapshot(gw)
    polling = {i for i, t in before.items() if t["upstream_ids"] and t["status"] == "IN_PROGRESS"}
    queued = {i for i, t in before.items() if t["status"] == "QUEUED"}
    unfinished = {i for i, t in before.items() if t["status"] in ("QUEUED", "IN_PROGRESS")}
    assert polling and queued, before
    early = {d.json["task_id"] for d in receiver.deliveries()}
    assert not early & unfinished  # no webhook for a task that had not finished

    bfl.latency = 0.0
    gw.start()
    finished = {i: wait_task(gw, key, i, timeout=30) for i in ids}
    assert all(t["status"] == "SUCCESS" for t in finished.values()), finished

    # Upstream: a task whose upstream id was recorded was never submitted again.
    submits = Counter(c.json["prompt"] for c in bfl.submits())
    for task_id, t in before.items():
        if task_id in polling:
            assert submits[t["prompt"]] == 1, (task_id, t)
        else:
            assert submits[t["prompt"]] >= 1
    assert set(submits) == {t["prompt"] for t in before.values()}

    # Money: every task charged exactly once, no hold left open.
    with sqlite3.connect(gw.root / "imagegate.db") as db:
        (balance,) = db.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone()
        (open_holds,) = db.execute("SELECT count(*) FROM holds WHERE settled = 0").fetchone()
        per_task = dict(db.execute("SELECT task_id, count(*) FROM webhook_deliveries GROUP BY task_id").fetchall())
    assert balance == BALANCE - TASKS * PRICE and open_holds == 0
    assert per_task == dict.fromkeys(ids, 1)  # one outbox row per task: finished exactly once

    # Webhooks: one message per task (retries share its id), each verified and terminal.
    secret = webhook_secret(gw, key)
    for task_id in ids:
        got = receiver.wait_deliveries(1, task_id=task_id)
        assert len({d.headers["webhook-id"] for d in got}) == 1
        for d in got:
            assert Webhook(secret).verify(d.body, d.headers)["status"] == "SUCCESS"
