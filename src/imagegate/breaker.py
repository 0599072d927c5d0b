"""Channel health: a circuit breaker, a concurrency cap, a rate limit and upstream back-off per
channel. The breaker, the cap and the back-off live in this process's memory (each worker and
replica judges its channels alone); the rate limit (``rpm``) is counted by a ``SlotTaker`` — one
window shared by every process through Redis when ``redis_url`` is set (``state.py`` passes the
``RateLimiter``'s), this process's own otherwise.

``await ChannelHealth.admit(channel)`` is asked before each submission to a channel: it answers a
``Ticket`` (go) or a ``Refusal`` (skip this channel: ``open``, ``busy``, ``rate_limited``,
``backing_off``). ``release(ticket)`` when the submission ends, then ``judge(ticket, ...)`` says
how it went:

- ``closed``: requests flow. ``breaker.failures`` retryable failures in a row, or a failed share of
  at least ``breaker.error_rate`` over the last ``breaker.window`` seconds (once
  ``breaker.min_requests`` were seen), open it.
- ``open``: the channel is skipped for ``breaker.cooldown`` seconds.
- ``half_open``: after the cool-down one request at a time goes through as a probe; its success
  closes the breaker, its failure opens it for another cool-down.

An upstream's own 429 is not a failure of the channel: it backs the channel off for its
``Retry-After`` (without one, the next request tries it again). Answers the upstream gave on
purpose (a refused prompt, an invalid request) count as successes: the channel works. Nothing
here touches the database, and every call is a few dictionary operations (the hot path) — plus,
for a channel with an ``rpm``, one count in its window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from limits import RateLimitItemPerMinute
from limits.aio import storage, strategies

from imagegate.config import ChannelConfig

State = Literal["closed", "half_open", "open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half_open"
Outcome = Literal["success", "failure", "rate_limited"]
Reason = Literal["open", "busy", "rate_limited", "backing_off"]
StateHook = Callable[[str, State], None]
"""Called with (channel name, new state) whenever a breaker changes state (metrics)."""
SlotTaker = Callable[[str, int], Awaitable[float]]
"""Takes one request of (channel name, requests per minute): 0 when taken, else the seconds until
the window frees one."""


def memory_slots() -> SlotTaker:
    """This process's own per-minute windows (no Redis)."""
    window = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
    items: dict[int, RateLimitItemPerMinute] = {}

    async def take(name: str, rpm: int) -> float:
        item = items.get(rpm)
        if item is None:
            item = items[rpm] = RateLimitItemPerMinute(rpm, namespace="channel")
        if await window.hit(item, name):
            return 0.0
        return max(0.001, (await window.get_window_stats(item, name)).reset_time - time.time())

    return take


@dataclass
class _Channel:
    state: State = CLOSED
    opened_at: float = 0.0
    consecutive: int = 0
    probing: bool = False
    inflight: int = 0
    backoff_until: float = 0.0
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)
    successes: int = 0
    failures: int = 0
    rate_limited: int = 0
    latency: float | None = None
    """Exponentially weighted mean of successful submissions' seconds."""
    last_error: str | None = None


@dataclass(frozen=True)
class Ticket:
    name: str
    started: float
    probe: bool


@dataclass(frozen=True)
class Refusal:
    name: str
    reason: Reason
    retry_after: float
    """Seconds until this channel may take a request again (0: unknown, soon)."""


class ChannelHealth:
    def __init__(self, on_change: StateHook | None = None, clock: Callable[[], float] = time.monotonic,
                 slots: SlotTaker | None = None) -> None:
        self._channels: dict[str, _Channel] = {}
        self._on_change = on_change
        self._clock = clock
        self._slots = slots or memory_slots()

    def _get(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = _Channel()
        return ch

    def _set(self, name: str, ch: _Channel, state: State) -> None:
        if ch.state != state:
            ch.state = state
            if self._on_change is not None:
                self._on_change(name, state)

    async def admit(self, channel: ChannelConfig) -> Ticket | Refusal:
        name, now = channel.name, self._clock()
        ch = self._get(name)
        probe = False
        if ch.state == OPEN:
            wait = ch.opened_at + channel.breaker.cooldown - now
            if wait > 0:
                return Refusal(name, "open", wait)
            self._set(name, ch, HALF_OPEN)
        if ch.state == HALF_OPEN:
            if ch.probing:
                return Refusal(name, "open", 1.0)
            probe = True
        if ch.backoff_until > now:
            return Refusal(name, "backing_off", ch.backoff_until - now)
        if channel.max_inflight is not None and ch.inflight >= channel.max_inflight:
            return Refusal(name, "busy", 1.0)
        # Reserved before the rate window is asked (an await): the cap holds for concurrent admits.
        ch.inflight += 1
        ch.probing = ch.probing or probe
        ticket = Ticket(name, now, probe)
        if channel.rpm is not None:
            try:
                wait = await self._slots(name, channel.rpm)
            except BaseException:
                self.release(ticket)
                raise
            if wait > 0:
                self.release(ticket)
                return Refusal(name, "rate_limited", max(1.0, wait))
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The submission of ``ticket`` ended (answered, failed or cancelled): no longer in flight."""
        ch = self._get(ticket.name)
        ch.inflight = max(0, ch.inflight - 1)
        if ticket.probe:
            ch.probing = False

    def judge(self, ticket: Ticket, channel: ChannelConfig, outcome: Outcome, *,
              retry_after: float | None = None, error: str | None = None) -> None:
        """How ``ticket``'s submission went, after ``release``."""
        now = self._clock()
        ch = self._get(ticket.name)
        if outcome == "rate_limited":
            ch.rate_limited += 1
            if retry_after:
                ch.backoff_until = max(ch.backoff_until, now + retry_after)
            ch.last_error = error
            return
        ok = outcome == "success"
        cfg = channel.breaker
        ch.outcomes.append((now, ok))
        while ch.outcomes and ch.outcomes[0][0] < now - cfg.window:
            ch.outcomes.popleft()
        if ok:
            ch.successes += 1
            ch.consecutive = 0
            seconds = now - ticket.started
            ch.latency = seconds if ch.latency is None else 0.8 * ch.latency + 0.2 * seconds
            if ch.state != CLOSED:
                self._set(ticket.name, ch, CLOSED)
            return
        ch.failures += 1
        ch.consecutive += 1
        ch.last_error = error
        failed = sum(1 for _, good in ch.outcomes if not good)
        too_many = len(ch.outcomes) >= cfg.min_requests and failed / len(ch.outcomes) >= cfg.error_rate
        if ch.state == HALF_OPEN or ch.consecutive >= cfg.failures or too_many:
            ch.opened_at = now
            ch.outcomes.clear()
            self._set(ticket.name, ch, OPEN)

    def state(self, name: str) -> State:
        ch = self._channels.get(name)
        return ch.state if ch is not None else CLOSED

    def snapshot(self, name: str) -> dict[str, object]:
        """What ``channels list`` shows of a channel: state, success rate, latency, in flight."""
        ch = self._channels.get(name) or _Channel()
        done = ch.successes + ch.failures
        now = self._clock()
        return {"state": ch.state, "successes": ch.successes, "failures": ch.failures,
                "rate_limited": ch.rate_limited,
                "success_rate": round(ch.successes / done, 4) if done else None,
                "latency_ms": round(ch.latency * 1000) if ch.latency is not None else None,
                "inflight": ch.inflight, "consecutive_failures": ch.consecutive,
                "backoff_seconds": round(max(0.0, ch.backoff_until - now), 3),
                "opened_seconds_ago": round(now - ch.opened_at, 3) if ch.state != CLOSED else None,
                "last_error": ch.last_error}
