"""The breaker's rules that the end-to-end tests do not reach quickly: the error-rate threshold
over a window, and ``Retry-After`` as an HTTP date."""

from __future__ import annotations

import email.utils
import time

from imagegate.breaker import ChannelHealth, Ticket
from imagegate.config import ChannelConfig
from imagegate.providers.base import retry_after_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_error_rate_over_the_window_opens_without_consecutive_failures() -> None:
    clock = Clock()
    ch = ChannelConfig(name="c", provider="openai",
                       breaker={"failures": 100, "error_rate": 0.5, "window": 60, "min_requests": 10})
    changes: list[str] = []
    health = ChannelHealth(on_change=lambda name, state: changes.append(state), clock=clock)
    for i in range(10):  # alternate: never two failures in a row, but half of them fail
        ticket = await health.admit(ch)
        assert isinstance(ticket, Ticket)
        health.release(ticket)
        health.judge(ticket, ch, "failure" if i % 2 else "success")
        clock.now += 1
    assert health.state("c") == "open" and changes == ["open"]


async def test_old_outcomes_leave_the_window() -> None:
    clock = Clock()
    health = ChannelHealth(clock=clock)
    ch = ChannelConfig(name="c", provider="openai",
                       breaker={"failures": 100, "error_rate": 0.5, "window": 10, "min_requests": 4})
    for outcome in ("failure", "failure", "failure"):
        ticket = await health.admit(ch)
        assert isinstance(ticket, Ticket)
        health.release(ticket)
        health.judge(ticket, ch, outcome)  # type: ignore[arg-type]
    clock.now += 30  # those failures are older than the window
    for _ in range(3):
        ticket = await health.admit(ch)
        assert isinstance(ticket, Ticket)
        health.release(ticket)
        health.judge(ticket, ch, "success")
    ticket = await health.admit(ch)
    assert isinstance(ticket, Ticket)
    health.release(ticket)
    health.judge(ticket, ch, "failure")
    assert health.state("c") == "closed"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    seconds = retry_after_seconds(in_a_minute)
    assert seconds is not None and 55 <= seconds <= 61
    assert retry_after_seconds("999999") == 3600.0
