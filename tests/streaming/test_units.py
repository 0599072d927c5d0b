"""The small pieces streaming stands on: the upstream event reader and the sampler's preview steps."""

from __future__ import annotations

import numpy as np

from imagegate.localmodel.sampler import Row, preview_steps, sample
from imagegate.wire.openai_images import ImageStreamEvent, sse_events


def test_sse_events_across_chunks() -> None:
    buffer = bytearray()
    stream = (b'event: image_generation.partial_image\ndata: {"type": "image_generation.partial_image", '
              b'"b64_json": "AAAA", "partial_image_index": 0}\n\n: keep-alive\n\ndata: {"type":\ndata: "x"}\n\n')
    got: list[bytes] = []
    for i in range(0, len(stream), 7):  # arbitrary chunk boundaries
        buffer += stream[i:i + 7]
        got += sse_events(buffer)
    assert got[1] == b'{"type":\n"x"}' and len(got) == 2 and not buffer
    event = ImageStreamEvent.model_validate_json(got[0])
    assert event.partial and not event.completed and event.partial_image_index == 0


def test_preview_steps_end_at_the_last_step() -> None:
    assert preview_steps(20, 3) == {6, 12, 19}
    assert preview_steps(2, 3) == {0, 1} and preview_steps(10, 0) == frozenset()


def test_previews_converge_to_the_sample() -> None:
    rng = np.random.default_rng(0)
    rows = [Row(np.zeros(4, np.int64), rng.standard_normal((3, 8, 8)).astype(np.float32), guidance=1.0)]

    def model(x: np.ndarray, t: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return (x - 0.5 * (1 - t[:, None, None, None])).astype(np.float32)  # a toy velocity field

    seen: list[tuple[int, np.ndarray]] = []
    final = sample(rows, 8, model, preview=lambda k, x0: seen.append((k, x0)), preview_at=preview_steps(8, 3))
    assert [k for k, _ in seen] == sorted(preview_steps(8, 3))
    assert not np.array_equal(seen[0][1], seen[1][1])
    assert np.array_equal(seen[-1][1], final)
