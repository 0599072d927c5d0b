"""``/metrics`` end to end: a real gateway with two worker processes, known traffic (sync, async, a
failover, a failure) through the official client, the answer read with Prometheus's own parser."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from imagegate import metrics
from imagegate.storage.signing import UrlSigner
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel, free_port
from tests.tasks.conftest import WebhookReceiver, submit, wait_task

ADMIN = "admin-token-for-metrics"
MODELS = {"gpt-image-1": "gpt-image-1"}
PATH = "/images/generations"


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("primary", "openai", emu.url + "/v1", MODELS, priority=0),
                     channel("backup", "openai", emu.url + "/v1", MODELS, priority=1)],
        "local_model": False, "admin_token": ADMIN,
        "tasks": {"workers": 2, "poll_seconds": 0.1},
    }, workers=2)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gw: GatewayProcess, token: str = ADMIN) -> Samples:
    r = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_metrics_after_known_traffic_in_multiprocess_mode(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    key = gw.key()
    client = OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    # 1. sync, served by the first channel
    client.images.generate(model="gpt-image-1", prompt="a fox", response_format="url")
    # 2. the first channel fails (retryable), the second serves it: a failover
    emu.fail(status=500, path=PATH)
    client.images.generate(model="gpt-image-1", prompt="a fox", response_format="url")
    # 3. both channels fail: the request fails
    emu.fail(status=500, path=PATH, times=2)
    with pytest.raises(openai.APIStatusError):
        client.images.generate(model="gpt-image-1", prompt="a fox", response_format="url")
    # 4. async: a task served by the first channel
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "a fox"})
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"

    first = scrape(gw)
    for _ in range(5):  # whichever worker answers, it reports every worker's counts
        assert {k: v for k, v in scrape(gw).items() if k[0].endswith("_total")} == \
            {k: v for k, v in first.items() if k[0].endswith("_total")}
    s = first
    ok = {"surface": "images", "model": "gpt-image-1", "status": "success"}
    assert value(s, "imagegate_requests_total", channel="primary", **ok) == 2  # sync + async
    assert value(s, "imagegate_requests_total", channel="backup", **ok) == 1
    failed = [ls for (n, ls), v in s.items() if n == "imagegate_requests_total" and ("status", "success") not in ls]
    assert len(failed) == 1 and value(s, "imagegate_requests_total", status=dict(failed[0])["status"]) == 1
    assert value(s, "imagegate_images_delivered_total", model="gpt-image-1") == 3
    assert value(s, "imagegate_stored_bytes_total") > 0
    assert value(s, "imagegate_failovers_total", channel="primary") == 2
    assert value(s, "imagegate_failovers_total", channel="backup") == 1
    assert value(s, "imagegate_upstream_errors_total", channel="primary") == 2
    assert value(s, "imagegate_upstream_errors_total", channel="backup") == 1
    # latency: three sync requests, the gateway's own time apart from the upstream's
    assert value(s, "imagegate_gateway_added_seconds_count", surface="images") == 3
    assert value(s, "imagegate_request_seconds_count", surface="images") == 3
    assert value(s, "imagegate_upstream_seconds_count", channel="primary", op="submit") == 4
    assert value(s, "imagegate_upstream_seconds_sum") > 0
    assert value(s, "imagegate_http_responses_total", status="200") >= 3
    assert value(s, "imagegate_http_responses_total", status="502") + value(
        s, "imagegate_http_responses_total", status="503") == 1
    # shared state, read from the database at scrape time
    assert value(s, "imagegate_tasks", status="queued") == 0
    assert value(s, "imagegate_task_oldest_queued_seconds") == 0
    assert value(s, "imagegate_holds_open") == 0
    assert ("imagegate_webhook_backlog", frozenset()) in s
    assert value(s, "imagegate_requests_in_flight") == 0  # probes are not counted


def test_scrape_time_gauges_see_the_queue(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    key = gw.key()
    emu.latency = 3.0
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "slow"})
    try:
        deadline = 50
        while deadline and value(scrape(gw), "imagegate_tasks", status="in_progress") < 1:
            deadline -= 1
            httpx.get(gw.url + "/healthz")
        s = scrape(gw)
        assert value(s, "imagegate_tasks", status="in_progress") == 1
        assert value(s, "imagegate_holds_open") == 0  # an unpriced model holds nothing
    finally:
        emu.latency = 0.0
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"


def test_metrics_need_the_token(gw: GatewayProcess) -> None:
    assert httpx.get(gw.url + "/metrics").status_code == 401
    r = httpx.get(gw.url + "/metrics", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]


def test_no_token_no_metrics(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"channels": [channel("primary", "openai", emu.url + "/v1", MODELS)], "local_model": False})
    assert httpx.get(gw.url + "/metrics").status_code == 404


def test_metrics_on_their_own_port(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    port = free_port()
    gw = gateway_factory({"channels": [channel("primary", "openai", emu.url + "/v1", MODELS)], "local_model": False,
                          "admin_token": ADMIN, "metrics_port": port})
    assert httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 404
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    assert "imagegate_requests_in_flight" in r.text


def test_dashboard_uses_only_defined_metrics() -> None:
    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana" / "imagegate.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) >= 10
    used = {m for q in queries for m in re.findall(r"\bimagegate_[a-z_]+", q)}
    suffixes = ("_bucket", "_count", "_sum")
    known = metrics.METRIC_NAMES | {n + s for n in metrics.METRIC_NAMES for s in suffixes}
    assert used and used <= known, sorted(used - known)
    assert {"imagegate_requests_total", "imagegate_gateway_added_seconds_bucket",
            "imagegate_channel_circuit_state"} <= used


def test_webhook_and_local_model_metrics(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    with WebhookReceiver() as receiver:
        gw = gateway_factory({"channels": [channel("primary", "openai", emu.url + "/v1", MODELS)], "local_model": True,
                              "admin_token": ADMIN, "outbound_allowlist": ["127.0.0.1"],
                              "tasks": {"poll_seconds": 0.1, "webhook_backoff": 0.05}})
        key = gw.key()
        receiver.fail(status=503, times=1)
        task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": "a fox"}, webhook=receiver.hook_url)
        receiver.wait_deliveries(2, task_id=task_id)
        with OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
            assert client.images.generate(model="imagegate-shapes", prompt="a red circle", size="256x256").data
        for _ in range(50):  # the second attempt is recorded just after the receiver answered
            s = scrape(gw)
            if value(s, "imagegate_webhook_deliveries_total", outcome="delivered") == 1:
                break
        assert value(s, "imagegate_webhook_deliveries_total", outcome="retry") == 1
        assert value(s, "imagegate_webhook_deliveries_total", outcome="delivered") == 1
        assert value(s, "imagegate_webhook_backlog") == 0
        assert value(s, "imagegate_localmodel_batch_size_count") >= 1
        assert value(s, "imagegate_localmodel_batch_size_sum") >= 1
        attempts = [json.loads(line) for line in gw.logs().splitlines() if '"webhook attempt"' in line]
        assert [(a["task_id"], a["outcome"], a["status"]) for a in attempts] == [
            (task_id, "retry", 503), (task_id, "delivered", 204)]


def test_hooks_count_on_their_labelled_series() -> None:
    """The hooks reach each metric through remembered children: the same series as ``labels()``."""

    def snapshot() -> dict[str, float]:
        series = {
            "jobs": ("imagegate_requests_total", {"surface": "s-t", "model": "m-t", "channel": "c-t",
                                                  "status": "success"}),
            "images": ("imagegate_images_delivered_total", {"surface": "s-t", "model": "m-t", "channel": "c-t"}),
            "http": ("imagegate_http_responses_total", {"status": "418"}),
            "added": ("imagegate_gateway_added_seconds_count", {"surface": "s-t"}),
            "added_sum": ("imagegate_gateway_added_seconds_sum", {"surface": "s-t"}),
            "total": ("imagegate_request_seconds_count", {"surface": "s-t"}),
            "up": ("imagegate_upstream_seconds_count", {"channel": "c-t", "op": "poll"}),
            "errors": ("imagegate_upstream_errors_total", {"channel": "c-t", "code": "upstream_error"}),
            "failovers": ("imagegate_failovers_total", {"channel": "c-t"}),
            "webhooks": ("imagegate_webhook_deliveries_total", {"outcome": "retry"}),
            "in_flight": ("imagegate_requests_in_flight", {}),
        }
        return {k: REGISTRY.get_sample_value(name, labels) or 0.0 for k, (name, labels) in series.items()}

    seen = snapshot()
    for _ in range(2):
        metrics.job_done("s-t", "m-t", "c-t", "success", 3)
        metrics.IN_FLIGHT.inc()
        metrics.request_done(418, "s-t", 0.002, 0.003)  # upstream longer than total: added 0
        metrics.IN_FLIGHT.inc()
        metrics.request_done(418, None, 0.002, 0.0)  # not a sync job: no latency
        metrics.IN_FLIGHT.inc()
        metrics.request_done(418, "s-t", 0.004, 0.001)
        metrics.upstream("c-t", "poll", 0.1)
        metrics.upstream_error("c-t", "upstream_error")
        metrics.failover("c-t")
        metrics.webhook("retry")
    now = snapshot()
    assert {k: now[k] - seen[k] for k in now} == pytest.approx({
        "jobs": 2, "images": 6, "http": 6, "added": 4, "added_sum": 0.006, "total": 4, "up": 2, "errors": 2,
        "failovers": 2, "webhooks": 2, "in_flight": 0})
    metrics.channel_state("c-t", "open")
    assert REGISTRY.get_sample_value("imagegate_channel_circuit_state", {"channel": "c-t"}) == 2
    metrics.channel_state("c-t", "half_open")
    assert REGISTRY.get_sample_value("imagegate_channel_circuit_state", {"channel": "c-t"}) == 1


def test_owner_tag_is_remembered_and_unchanged() -> None:
    signer, other = UrlSigner(b"secret-a"), UrlSigner(b"secret-b")

    def expected(secret: bytes, account: str) -> str:
        return hmac.new(secret, f"owner\n{account}".encode(), hashlib.sha256).hexdigest()[:16]

    for round_ in range(2):  # computed, then remembered (and past the cache's bound: computed again)
        for i in range(5000):
            account = f"acc_{i}"
            assert signer.owner_tag(account) == expected(b"secret-a", account), (round_, i)
    assert other.owner_tag("acc_1") == expected(b"secret-b", "acc_1") != signer.owner_tag("acc_1")
