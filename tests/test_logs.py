"""Structured logs end to end: one JSON line per request in the stderr of a real gateway process
(``gateway.log``), the request id shared by the answer header, the error body and the line, and
never an API key or (unless ``log_prompts``) a prompt; and, in process, the request line's own
renderer against structlog's chain."""

from __future__ import annotations

import datetime
import io
import json
import re
import sys
import time
import uuid
from typing import Any

import httpx2 as httpx
import openai
import orjson
import pytest
import structlog
from google import genai
from google.genai import types
from openai import OpenAI

from imagegate import logs
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel
from tests.tasks.conftest import submit, wait_task

MODELS = {"gpt-image-1": "gpt-image-1"}
PROMPT = "a very particular lighthouse at dusk"


def start(factory: StartGateway, emu: OpenAIEmulator, **extra: Any) -> GatewayProcess:
    return factory({"channels": [channel("primary", "openai", emu.url + "/v1", MODELS)], "local_model": False,
                    "tasks": {"poll_seconds": 0.1}, **extra})


def lines(gw: GatewayProcess, event: str, *, wait_for: int = 1) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` (waiting a moment for the process to write them)."""
    for _ in range(50):
        found = []
        for raw in gw.logs().splitlines():
            if raw.startswith("{"):
                obj = json.loads(raw)  # every structured line is one JSON object
                if obj.get("event") == event:
                    found.append(obj)
        if len(found) >= wait_for:
            return found
        time.sleep(0.05)
    return found


def test_one_json_line_per_request_with_its_fields(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = start(gateway_factory, emu)
    key = gw.key()
    raw = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {key}",
                                                                  "x-request-id": "caller-id-42"},
                     json={"model": "gpt-image-1", "prompt": PROMPT, "response_format": "url"}, timeout=30)
    assert raw.status_code == 200 and raw.headers["x-request-id"] == "caller-id-42"
    with OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
        made = client.images.with_raw_response.generate(model="gpt-image-1", prompt=PROMPT)
        made_id = made.headers["x-request-id"]
        with pytest.raises(openai.NotFoundError) as caught:
            client.images.generate(model="no-such-model", prompt=PROMPT)
    err = caught.value.response
    assert err.json()["error"]["request_id"] == err.headers["x-request-id"]  # quotable by the customer
    bad = httpx.get(gw.url + "/v1/models", headers={"Authorization": "Bearer sk-not-a-key",
                                                   "x-request-id": "has spaces in it"})
    assert bad.status_code == 401
    assert bad.headers["x-request-id"] != "has spaces in it" and len(bad.headers["x-request-id"]) == 32

    logged = {line["request_id"]: line for line in lines(gw, "request", wait_for=4)}
    line = logged["caller-id-42"]
    assert line["level"] == "info" and line["status"] == 200 and line["path"] == "/v1/images/generations"
    assert line["surface"] == "images" and line["model"] == "gpt-image-1" and line["channel"] == "primary"
    assert line["images"] == 1 and line["cost"] == 0 and line["outcome"] == "success"
    assert line["account"] and line["key_id"]
    assert line["upstream_id"].startswith("req_")  # the upstream's own id of the exchange
    assert line["total_ms"] >= line["upstream_ms"] > 0
    assert logged[made_id]["status"] == 200
    failed = logged[err.headers["x-request-id"]]
    assert failed["status"] == 404 and failed["error_code"] == err.json()["error"]["code"]
    assert logged[bad.headers["x-request-id"]]["status"] == 401
    text = gw.logs()
    assert key not in text and "sk-not-a-key" not in text and "test-upstream-key" not in text
    assert PROMPT not in text  # log_prompts is off


def test_prompts_only_when_asked_and_task_lifecycle(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = start(gateway_factory, emu, log_prompts=True)
    key = gw.key()
    task_id = submit(gw, key, {"model": "gpt-image-1", "prompt": PROMPT})
    assert wait_task(gw, key, task_id)["status"] == "SUCCESS"
    submitted = [line for line in lines(gw, "request") if line.get("task_id") == task_id]
    assert len(submitted) == 1 and submitted[0]["prompt"] == PROMPT
    finished = [line for line in lines(gw, "task finished") if line["task_id"] == task_id]
    assert len(finished) == 1
    assert finished[0]["status"] == "SUCCESS" and finished[0]["channel"] == "primary" and finished[0]["images"] == 1
    assert key not in gw.logs()


def test_request_id_in_google_error_bodies(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = start(gateway_factory, emu)
    client = genai.Client(api_key=gw.key(), http_options=types.HttpOptions(base_url=gw.url))
    with pytest.raises(genai.errors.ClientError) as caught:
        client.models.generate_content(model="no-such-model", contents="x")
    (info,) = caught.value.details["error"]["details"]  # google.rpc.RequestInfo, as Google's APIs send it
    assert info["@type"] == "type.googleapis.com/google.rpc.RequestInfo" and info["requestId"]
    assert any(line["request_id"] == info["requestId"] and line["status"] == 404
               for line in lines(gw, "request"))


def test_request_line_is_what_structlogs_chain_would_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """``logs.request_done`` renders the JSON line itself: the same keys, in the same order, with the
    same values as structlog's processors and JSONRenderer give (the timestamp: same format)."""
    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", out)
    try:
        logs.setup(level="info", fmt="json")
        ctx = logs.begin("caller-id-7")
        ctx.upstream = 0.00031
        ctx.fields.update(surface="images", model="gpt-image-1", account="acc", key_id="k", prompt='é "q"',
                          images=1, cost=0, odd=Odd(), none=None)
        before = datetime.datetime.now(tz=datetime.UTC)
        logs.request_done(ctx, "POST", "/v1/images/generations", 200, 0.0012345)
        after = datetime.datetime.now(tz=datetime.UTC)
        written = raw.getvalue()
    finally:
        monkeypatch.undo()
        logs.setup(level="info", fmt="json")
    assert written.endswith(b"\n") and written.count(b"\n") == 1
    line = orjson.loads(written)
    chain = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[
            structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=orjson.dumps)])
    expected = orjson.loads(chain.info("request", request_id="caller-id-7", method="POST",
                                       path="/v1/images/generations", status=200, total_ms=1.23,
                                       upstream_ms=0.31, **ctx.fields))
    stamp = line.pop("timestamp")
    expected.pop("timestamp")
    assert list(line.items()) == list(expected.items())
    assert line["odd"] == "<odd>" and line["none"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp)
    assert before <= datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= after


def test_request_ids_are_uuid4_hex() -> None:
    made = {logs.request_id_from(None) for _ in range(1000)}
    assert len(made) == 1000
    for rid in made:
        assert len(rid) == 32 and uuid.UUID(rid).hex == rid and uuid.UUID(rid).version == 4
    assert logs.request_id_from(b"caller-id-42") == "caller-id-42"
    assert logs.request_id_from(b"has spaces") != "has spaces"
