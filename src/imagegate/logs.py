"""Structured logs: one JSON line per event (human-readable on a terminal), and the request context.

``setup`` routes both structlog and the standard ``logging`` calls of every module through one
renderer: JSON lines (orjson) when stderr is not a terminal, structlog's console format when it is
(``log_format`` forces either). Each HTTP request gets a ``RequestContext`` at the edge
(``api/observe.py``) held in a context variable; the layers below fill it in (``current()``) and
the edge writes it out as the request's one line. Nothing here ever receives an API key, a secret or,
unless ``log_prompts`` is on, a prompt.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import structlog

LogFormat = Literal["auto", "json", "console"]

_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_from(header: bytes | None) -> str:
    """The caller's ``x-request-id`` when it is a sane token (printable, no spaces, ≤ 128 chars),
    else a new one."""
    if header:
        text = header.decode("latin-1")
        if _SANE_ID.fullmatch(text):
            return text
    return uuid.uuid4().hex


@dataclass
class RequestContext:
    """What the request's log line says; filled in as the request travels down."""

    id: str
    started: float = field(default_factory=time.perf_counter)
    upstream: float = 0.0
    """Seconds spent waiting for upstreams (submits and polls)."""
    fields: dict[str, Any] = field(default_factory=dict)
    sync_job: bool = False
    """A job ran while the caller waited (its latency split is a metric)."""


_current: ContextVar[RequestContext | None] = ContextVar("imagegate_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def begin(request_id: str) -> RequestContext:
    ctx = RequestContext(request_id)
    _current.set(ctx)
    return ctx


def current_request_id() -> str | None:
    ctx = _current.get()
    return ctx.id if ctx is not None else None


def annotate(**values: Any) -> None:
    """Add fields to the current request's log line (no-op outside a request)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.fields.update(values)


def upstream_id(value: str | None) -> None:
    """The upstream's id of the exchange (its ``x-request-id``), unless one is known already."""
    ctx = _current.get()
    if ctx is not None and value:
        ctx.fields.setdefault("upstream_id", value)


def upstream_time(seconds: float) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.upstream += seconds


def _orjson_dumps(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _with_request_id(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Every line written while a request is answered names it (a warning deep in the gateway too)."""
    ctx = _current.get()
    if ctx is not None:
        event.setdefault("request_id", ctx.id)
    return event


def setup(*, level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog and the standard library's root logger for this process."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if console
                     else structlog.processors.JSONRenderer(serializer=_orjson_dumps))
    shared: list[Any] = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                         _with_request_id]
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger("imagegate")
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    root.propagate = False
    global request_line
    # The per-request line skips the standard library: straight to stderr's bytes (JSON) or text.
    out: Any = structlog.PrintLogger(sys.stderr) if console else structlog.BytesLogger(sys.stderr.buffer)
    request_line = structlog.wrap_logger(
        out, wrapper_class=structlog.make_filtering_bound_logger(numeric),
        processors=[*shared, structlog.dev.ConsoleRenderer(colors=False) if console
                    else structlog.processors.JSONRenderer(serializer=orjson.dumps)],
        cache_logger_on_first_use=True)


request_line: Any = structlog.get_logger("imagegate.request")
"""The logger of the one line per request (``setup`` points it straight at stderr)."""


def get(name: str) -> Any:
    """A structlog logger named ``name`` (``imagegate.<module>``)."""
    return structlog.get_logger(name)
