"""Caption grammar: parsing free text onto slots and rendering what was understood."""

from __future__ import annotations

import pytest

from imagegate.localmodel import vocab


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red circle", "a red circle"),
        (
            "a large blue star on the left on a yellow background",
            "a large blue star on the left on a yellow background",
        ),
        ("a green square and a small white ring", "a green square and a small white ring"),
        (
            "A photorealistic, HUGE violet donut in the upper right, 4k, trending",
            "a large purple ring in the top right corner",
        ),
        ("on the left, a tiny grey box", "a small gray square on the left"),
        ("a cat wearing a hat", "random shapes"),
        ("an orange background", "an orange background"),
        ("a red circle on the left and a blue square on the left", "a red circle on the left and a blue square"),
    ],
)
def test_understood(prompt: str, expected: str) -> None:
    assert vocab.understood(prompt) == expected


def test_round_trip_is_stable() -> None:
    # What we report back must parse to the same slots (the revised prompt is a
    # faithful description of the conditioning).
    for prompt in ["a small red triangle at the bottom and a large cyan star at the top on a black background"]:
        cap = vocab.parse(prompt)
        assert vocab.parse(cap.text()) == cap
        assert len(cap.tokens()) == vocab.NUM_SLOTS


def test_at_most_two_objects() -> None:
    cap = vocab.parse("a red circle, a blue square and a green star")
    assert [o.shape for o in cap.objects] == ["circle", "square"]
