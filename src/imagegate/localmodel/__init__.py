"""Embedded text-to-image model: a small shapes model served with onnxruntime + numpy.

Serving needs only numpy, onnxruntime and Pillow; the torch training code lives
in ``training/``. See docs/models/imagegate-shapes.md.
"""

from .engine import (
    EngineStats,
    LocalRequest,
    ShapesEngine,
    WeightsError,
    composite,
    upscale,
)
from .vocab import understood

__all__ = [
    "EngineStats",
    "LocalRequest",
    "ShapesEngine",
    "WeightsError",
    "composite",
    "understood",
    "upscale",
]
