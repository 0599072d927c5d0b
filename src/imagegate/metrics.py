"""Every Prometheus metric of the gateway, defined here and nowhere else.

Counters and histograms live in the process that counts them; with ``serve --workers N`` each
worker writes them to ``PROMETHEUS_MULTIPROC_DIR`` (set and emptied by ``imagegate serve``) and a
scrape of any worker merges every worker's files (``MultiProcessCollector``). The numbers that
describe shared state — the task queue, the webhook outbox, open holds — are read from the database
when ``/metrics`` is scraped (one small aggregate query each), so they are the same from any worker
and cost nothing per request.

Per process, counted as things happen:

=========================================== ======= ==============================================
``imagegate_requests_total``                counter finished jobs (sync and async) by ``surface``,
                                                    ``model``, ``channel``, ``status`` (``success``
                                                    or the error code)
``imagegate_http_responses_total``          counter HTTP answers by ``status`` (the HTTP code)
``imagegate_gateway_added_seconds``         histo   a sync request's time minus its upstream time,
                                                    by ``surface``
``imagegate_request_seconds``               histo   a sync request's total time, by ``surface``
``imagegate_upstream_seconds``              histo   one upstream exchange (``op``: submit, poll),
                                                    by ``channel``
``imagegate_upstream_errors_total``         counter upstream failures by ``channel`` and ``code``
``imagegate_requests_in_flight``            gauge   HTTP requests being answered now (all workers)
``imagegate_images_delivered_total``        counter images handed to callers, by ``surface``,
                                                    ``model``, ``channel``
``imagegate_stored_bytes_total``            counter bytes of images written to the store
``imagegate_failovers_total``               counter a channel failed retryably and the next one was
                                                    tried, by ``channel`` (the one that failed)
``imagegate_webhook_deliveries_total``      counter webhook attempts by ``outcome`` (delivered,
                                                    retry, failed)
``imagegate_channel_circuit_state``         gauge   per ``channel``: 0 closed, 1 half-open, 2 open
                                                    (the worst among live workers)
``imagegate_localmodel_batch_size``         histo   model rows per run of the embedded model
=========================================== ======= ==============================================

Read from the database at scrape time:

=========================================== ======= ==============================================
``imagegate_tasks``                         gauge   async tasks by ``status`` (queued, in progress)
``imagegate_task_oldest_queued_seconds``    gauge   age of the oldest queued task (0 when none)
``imagegate_webhook_backlog``               gauge   webhook deliveries still pending
``imagegate_holds_open``                    gauge   unsettled holds
``imagegate_held_amount``                   gauge   money held by them, in micro-units
=========================================== ======= ==============================================
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _mp
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter("imagegate_requests", "Finished jobs by surface, model, channel and status.",
                   ["surface", "model", "channel", "status"])
HTTP_RESPONSES = Counter("imagegate_http_responses", "HTTP answers by status code.", ["status"])
ADDED = Histogram("imagegate_gateway_added_seconds", "A sync request's time minus its upstream time.",
                  ["surface"], buckets=_FAST)
TOTAL = Histogram("imagegate_request_seconds", "A sync request's total time.", ["surface"], buckets=_SLOW)
UPSTREAM = Histogram("imagegate_upstream_seconds", "One upstream exchange.", ["channel", "op"], buckets=_SLOW)
UPSTREAM_ERRORS = Counter("imagegate_upstream_errors", "Upstream failures by channel and error code.",
                          ["channel", "code"])
IN_FLIGHT = Gauge("imagegate_requests_in_flight", "HTTP requests being answered now.",
                  multiprocess_mode="livesum")
IMAGES = Counter("imagegate_images_delivered", "Images handed to callers.", ["surface", "model", "channel"])
STORED_BYTES = Counter("imagegate_stored_bytes", "Bytes of images written to the store.")
FAILOVERS = Counter("imagegate_failovers", "Retryable channel failures followed by the next channel.",
                    ["channel"])
WEBHOOKS = Counter("imagegate_webhook_deliveries", "Webhook attempts by outcome.", ["outcome"])
CIRCUIT = Gauge("imagegate_channel_circuit_state", "Circuit breaker per channel: 0 closed, 1 half-open, 2 open.",
                ["channel"], multiprocess_mode="livemax")
BATCH = Histogram("imagegate_localmodel_batch_size", "Model rows per run of the embedded model.",
                  buckets=(1, 2, 4, 6, 8, 12, 16, 24, 32, 64))

CircuitState = Literal["closed", "half_open", "open"]
_CIRCUIT_VALUE = {"closed": 0, "half_open": 1, "open": 2}


# ---- hooks: one call at each place something happens ------------------------------------------

class _Children(dict[Any, Any]):
    """``metric.labels(*key)`` by label values (a tuple, or one value), remembered: the hot path is one
    dict lookup instead of prometheus-client's checks and lock; ``str`` is applied to each value once."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key: Any) -> Any:
        values = key if isinstance(key, tuple) else (key,)
        child = self[key] = self.metric.labels(*(str(v) for v in values))
        return child


_requests = _Children(REQUESTS)
_http = _Children(HTTP_RESPONSES)
_added = _Children(ADDED)
_total = _Children(TOTAL)
_upstream = _Children(UPSTREAM)
_upstream_errors = _Children(UPSTREAM_ERRORS)
_images = _Children(IMAGES)
_failovers = _Children(FAILOVERS)
_webhooks = _Children(WEBHOOKS)
_circuit = _Children(CIRCUIT)


def job_done(surface: str, model: str, channel: str, status: str, images: int) -> None:
    _requests[surface, model, channel, status].inc()
    if images:
        _images[surface, model, channel].inc(images)


def request_done(status: int, sync_surface: str | None, total: float, upstream: float) -> None:
    """The edge's counts when an HTTP request is answered: one fewer in flight, the answer's status
    and, for a sync job (``sync_surface``), its total and gateway-added time."""
    IN_FLIGHT.dec()
    _http[status].inc()
    if sync_surface is not None:
        _total[sync_surface].observe(total)
        _added[sync_surface].observe(total - upstream if total > upstream else 0.0)


def upstream(channel: str, op: str, seconds: float) -> None:
    _upstream[channel, op].observe(seconds)


def upstream_error(channel: str, code: str) -> None:
    _upstream_errors[channel, code].inc()


def failover(channel: str) -> None:
    _failovers[channel].inc()


def stored(size: int) -> None:
    STORED_BYTES.inc(size)


def webhook(outcome: str) -> None:
    _webhooks[outcome].inc()


def batch(rows: int) -> None:
    BATCH.observe(rows)


def channel_state(channel: str, state: CircuitState) -> None:
    """Called by the circuit breaker whenever ``channel`` changes state (``breaker.StateHook``)."""
    _circuit[channel].set(_CIRCUIT_VALUE[state])


# ---- multi-process mode --------------------------------------------------------------------------

def prepare_multiprocess_dir(workers: int, base: Path | None = None) -> Path | None:
    """For ``serve --workers N`` (N > 1): a fresh directory for the workers' metric files, named in
    the environment the workers inherit. None for one worker (its metrics stay in memory)."""
    if workers <= 1:
        return None
    path = Path(os.environ.get(MULTIPROC_ENV) or (base or Path(os.environ.get("TMPDIR", "/tmp"))) /
                f"imagegate-metrics-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def exposition(shared: list[Metric]) -> bytes:
    """The text of ``/metrics``: this process's (or every worker's) metrics, and ``shared`` (the
    families read from the database at scrape time)."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Fixed(REGISTRY.collect))
    registry.register(_Fixed(lambda: shared))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families()


def process_exited(pid: int | None = None) -> None:
    """Drop this worker's live gauges (in flight, circuit states) when it stops."""
    if os.environ.get(MULTIPROC_ENV):
        _mp.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


METRIC_NAMES = frozenset({
    "imagegate_requests_total", "imagegate_http_responses_total", "imagegate_gateway_added_seconds",
    "imagegate_request_seconds", "imagegate_upstream_seconds", "imagegate_upstream_errors_total",
    "imagegate_requests_in_flight", "imagegate_images_delivered_total", "imagegate_stored_bytes_total",
    "imagegate_failovers_total", "imagegate_webhook_deliveries_total", "imagegate_channel_circuit_state",
    "imagegate_localmodel_batch_size", "imagegate_tasks", "imagegate_task_oldest_queued_seconds",
    "imagegate_webhook_backlog", "imagegate_holds_open", "imagegate_held_amount",
})
"""Every family name ``/metrics`` may show (the dashboard test checks its queries against these)."""
