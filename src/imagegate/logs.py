"""Structured logs: one JSON line per event (human-readable on a terminal), and the request context.

``setup`` routes both structlog and the standard ``logging`` calls of every module through one
renderer: JSON lines (orjson) when stderr is not a terminal, structlog's console format when it is
(``log_format`` forces either). Each HTTP request gets a ``RequestContext`` at the edge
(``api/observe.py``) held in a context variable; the layers below fill it in (``current()``) and
the edge writes it out as the request's one line (``request_done``: in JSON, built and written
directly — the same fields structlog's chain would give, at a fraction of its cost per request).
Nothing here ever receives an API key, a secret or, unless ``log_prompts`` is on, a prompt.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
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
    return new_id()


def new_id() -> str:
    """``uuid.uuid4().hex`` (32 hex, a version-4 UUID) in a third of its time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


@dataclass(slots=True)
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


def request_done(ctx: RequestContext, method: str, path: str, status: int, total: float) -> None:
    """Write the request's one line (event ``request``): its id, method, path, status, total and
    upstream milliseconds and the fields the layers below added."""
    if not _request_on:
        return
    line = {"request_id": ctx.id, "method": method, "path": path, "status": status,
            "total_ms": round(total * 1000, 2), "upstream_ms": round(ctx.upstream * 1000, 2), **ctx.fields}
    write = _request_write
    if write is None:  # a terminal (or ``setup`` not called): structlog's chain and renderer
        line.pop("event", None)
        request_line.info("request", **line)
        return
    # What structlog's chain adds, in its order: the event, add_log_level, TimeStamper(iso, utc).
    line["event"] = "request"
    line["level"] = "info"
    line["timestamp"] = _iso_now()
    write(orjson.dumps(line, default=_fallback, option=orjson.OPT_APPEND_NEWLINE))


_stamp: tuple[int, str] = (-1, "")
"""The last second seen by ``_iso_now`` and its ISO text (one tuple: assigned atomically)."""


def _iso_now() -> str:
    """Now in UTC as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``2025-01-02T03:04:05.123456Z``; no fraction on a whole second), formatting each second once."""
    global _stamp
    second, ns = divmod(time.time_ns(), 1_000_000_000)
    stamp = _stamp
    if stamp[0] != second:
        stamp = _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    micros = ns // 1000
    return f"{stamp[1]}.{micros:06d}Z" if micros else stamp[1] + "Z"


def _fallback(obj: Any) -> Any:
    """What JSON cannot say, as structlog's JSONRenderer says it: ``__structlog__()`` or ``repr``."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


_request_on = True
"""The request lines are written (the configured level lets ``info`` through)."""
_request_write: Callable[[bytes], None] | None = None
"""JSON mode: writes one rendered line to stderr and flushes it; None: through ``request_line``."""


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
    global request_line, _request_on, _request_write
    # The per-request line skips the standard library: straight to stderr's bytes (JSON, rendered by
    # ``request_done`` itself) or text (structlog's console format, on a terminal).
    _request_on = numeric <= logging.INFO
    if console:
        _request_write = None
        request_line = structlog.wrap_logger(
            structlog.PrintLogger(sys.stderr), wrapper_class=structlog.make_filtering_bound_logger(numeric),
            processors=[*shared, structlog.dev.ConsoleRenderer(colors=False)], cache_logger_on_first_use=True)
    else:
        _request_write = _line_writer(sys.stderr.buffer)


def _line_writer(out: Any) -> Callable[[bytes], None]:
    """One ``write`` and one ``flush`` per line, as structlog's BytesLogger: nothing is held back."""
    write, flush = out.write, out.flush

    def line(data: bytes) -> None:
        write(data)
        flush()

    return line


request_line: Any = structlog.get_logger("imagegate.request")
"""The logger of the one line per request on a terminal (``setup`` points it straight at stderr);
in JSON, ``request_done`` writes the line itself."""


def get(name: str) -> Any:
    """A structlog logger named ``name`` (``imagegate.<module>``)."""
    return structlog.get_logger(name)
