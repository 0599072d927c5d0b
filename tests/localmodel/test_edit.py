"""Image-to-image and inpainting behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
from training.adherence import palette_labels, read

from imagegate.localmodel import LocalRequest, ShapesEngine, composite, upscale
from imagegate.localmodel.vocab import COLORS

YELLOW = list(COLORS).index("yellow")


@pytest.fixture(scope="module")
def original(engine: ShapesEngine) -> np.ndarray:
    img = engine.generate_sync(LocalRequest("a large red circle on the left on a blue background", seed=7))[0]
    r = read(img, 1)
    # Guard: the fixture itself must be what the edits below start from.
    assert r.background == "blue" and r.objects[0].color == "red" and r.objects[0].position == "left"
    return upscale(img, 96, 64)  # non-square, larger than native: exercises the resize paths


def test_inpainting_keeps_unmasked_pixels_and_paints_the_mask(engine: ShapesEngine, original: np.ndarray) -> None:
    mask = np.zeros(original.shape[:2], bool)
    mask[:, 48:] = True  # right half
    out = engine.generate_sync(
        LocalRequest("a large yellow star on the right on a blue background", seed=3, init_image=original, mask=mask)
    )[0]
    assert out.shape == (engine.native_size, engine.native_size, 3)
    final = composite(original, out, mask)
    assert final.shape == original.shape
    assert np.array_equal(final[~mask], original[~mask])  # bit-identical outside the mask
    before = (palette_labels(original[mask].reshape(1, -1, 3)) == YELLOW).sum()
    after = (palette_labels(final[mask].reshape(1, -1, 3)) == YELLOW).sum()
    assert before == 0
    assert after >= 0.04 * mask.sum()  # a yellow object appeared in the masked region


def test_inpainting_at_native_resolution_keeps_known_region(engine: ShapesEngine) -> None:
    s = engine.native_size
    init = engine.generate_sync(LocalRequest("a green square on a white background", seed=9))[0]
    mask = np.zeros((s, s), bool)
    mask[: s // 2] = True
    out = engine.generate_sync(LocalRequest("a black circle at the top", seed=1, init_image=init, mask=mask))[0]
    # Re-injection alone (no composite) keeps the known region within rounding.
    assert np.abs(out[~mask].astype(np.int16) - init[~mask]).max() <= 1
    assert not np.array_equal(out[mask], init[mask])


def test_img2img_changes_colour_keeps_position(engine: ShapesEngine, original: np.ndarray) -> None:
    out = engine.generate_sync(
        LocalRequest("a large green circle on the left on a blue background", seed=5, init_image=original, strength=0.7)
    )[0]
    r = read(out, 1)
    assert r.background == "blue"
    assert r.objects and r.objects[0].color == "green"
    assert r.objects[0].position == "left"


def test_strength_zero_returns_the_reference(engine: ShapesEngine) -> None:
    s = engine.native_size
    init = np.random.default_rng(0).integers(0, 256, (s, s, 3), dtype=np.uint8)
    out = engine.generate_sync(LocalRequest("a red star", seed=1, init_image=init, strength=0.0))[0]
    assert np.array_equal(out, init)


def test_upscale_sizes_and_mask_validation(engine: ShapesEngine) -> None:
    img = engine.generate_sync(LocalRequest("a red star", seed=1, steps=2))[0]
    assert upscale(img, 1024, 1024).shape == (1024, 1024, 3)
    assert upscale(img, 1536, 1024).shape == (1024, 1536, 3)
    with pytest.raises(ValueError, match="requires init_image"):
        engine.generate_sync(LocalRequest("x", mask=np.zeros((4, 4), bool)))
    with pytest.raises(ValueError, match="same HxW"):
        engine.generate_sync(LocalRequest("x", init_image=np.zeros((8, 8, 3), np.uint8), mask=np.zeros((4, 4), bool)))
