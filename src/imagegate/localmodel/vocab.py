"""Caption grammar and vocabulary shared by training and serving.

The embedded model is conditioned on a *structured caption*: nine slots
``[background, shape1, colour1, size1, position1, shape2, colour2, size2, position2]``
whose values are words of one small vocabulary. Free text is mapped onto these
slots by a forgiving rule-based parser (unknown words are ignored), and the
slots are rendered back into plain English to tell the caller what the model
understood (the gateway's ``revised_prompt``).

Why slots instead of a raw word sequence: with ~30 minutes of CPU training the
model cannot afford to learn English word order; giving every word a fixed
"role" lets the learned text encoder focus on binding attributes to objects.
This module is pure Python so the serving path does not need torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Palette: names -> RGB. Colours are chosen far apart in RGB so a nearest-colour
# checker can tell them apart reliably after generation.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 225, 50),
    "green": (40, 170, 60),
    "cyan": (50, 205, 225),
    "blue": (40, 70, 215),
    "purple": (135, 55, 190),
    "pink": (250, 140, 200),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "brown": (125, 75, 35),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
# Radius (fraction of the image side) for each size word.
SIZES: dict[str, float] = {"small": 0.11, "medium": 0.165, "large": 0.23}
# Object centre (x, y) as fractions of the image side; y grows downwards.
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "top-left": (0.25, 0.25),
    "top-right": (0.75, 0.25),
    "bottom-left": (0.25, 0.75),
    "bottom-right": (0.75, 0.75),
}

NONE = "<none>"
# One shared vocabulary; index 0 means "unspecified" in every slot (this is also
# the token used for classifier-free-guidance dropout).
VOCAB: tuple[str, ...] = (NONE, *COLORS, *SHAPES, *SIZES, *POSITIONS)
TOKEN_ID: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}
NUM_SLOTS = 9
MAX_OBJECTS = 2

_SYNONYMS: dict[str, str] = {
    "grey": "gray",
    "violet": "purple",
    "magenta": "pink",
    "teal": "cyan",
    "turquoise": "cyan",
    "navy": "blue",
    "gold": "yellow",
    "golden": "yellow",
    "crimson": "red",
    "scarlet": "red",
    "circles": "circle",
    "disc": "circle",
    "disk": "circle",
    "dot": "circle",
    "ball": "circle",
    "squares": "square",
    "box": "square",
    "triangles": "triangle",
    "stars": "star",
    "rings": "ring",
    "donut": "ring",
    "doughnut": "ring",
    "tiny": "small",
    "little": "small",
    "mid": "medium",
    "big": "large",
    "huge": "large",
    "centre": "center",
    "middle": "center",
    "centered": "center",
    "centred": "center",
    "upper": "top",
    "lower": "bottom",
}


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a caption; ``None`` attributes are unspecified."""

    shape: str
    color: str | None = None
    size: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class Caption:
    """A structured caption: up to two objects and an optional background colour."""

    objects: tuple[ObjectSpec, ...] = field(default_factory=tuple)
    background: str | None = None

    def tokens(self) -> list[int]:
        """Slot token ids (length ``NUM_SLOTS``) consumed by the text encoder."""
        ids = [TOKEN_ID[self.background or NONE]]
        for i in range(MAX_OBJECTS):
            if i < len(self.objects):
                o = self.objects[i]
                ids += [TOKEN_ID[w or NONE] for w in (o.shape, o.color, o.size, o.position)]
            else:
                ids += [0, 0, 0, 0]
        return ids

    def text(self) -> str:
        """Plain-English rendering, e.g. 'a large blue star on the left on a yellow background'."""
        parts = [_object_text(o) for o in self.objects]
        s = " and ".join(parts)
        if self.background:
            bg = f"{_article(self.background)} {self.background} background"
            s = f"{s} on {bg}" if s else bg
        return s


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def position_phrase(pos: str) -> str:
    """English phrase for a position word ('left' -> 'on the left')."""
    if pos == "center":
        return "in the center"
    if "-" in pos:
        return f"in the {pos.replace('-', ' ')} corner"
    return f"on the {pos}" if pos in ("left", "right") else f"at the {pos}"


def _object_text(o: ObjectSpec) -> str:
    words = [w for w in (o.size, o.color, o.shape) if w]
    s = f"{_article(words[0])} {' '.join(words)}"
    if o.position:
        s += " " + position_phrase(o.position)
    return s


_WORD = re.compile(r"[a-z]+")


def _normalise(prompt: str) -> list[str]:
    words = [_SYNONYMS.get(w, w) for w in _WORD.findall(prompt.lower())]
    # Merge two-word corner positions ("top left", "upper right") into one token.
    out: list[str] = []
    for w in words:
        if out and out[-1] in ("top", "bottom") and w in ("left", "right"):
            out[-1] = f"{out[-1]}-{w}"
        else:
            out.append(w)
    return out


def parse(prompt: str) -> Caption:
    """Map free text onto a :class:`Caption`, ignoring words outside the vocabulary.

    Rules (deliberately simple and predictable):
    * a colour word directly followed by "background" (or "backdrop") is the
      background; so is a colour after "on a ... background" phrasing;
    * every shape word starts an object; colour/size words seen since the
      previous object attach to the next shape; a position word attaches to the
      nearest object before it (English puts "on the left" after the noun), or
      to the next object if none precedes it;
    * at most two objects are kept (the model was trained with one or two).
    """
    words = _normalise(prompt)
    background: str | None = None
    objects: list[dict[str, str | None]] = []
    pending: dict[str, str | None] = {"color": None, "size": None, "position": None}
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in COLORS and nxt in ("background", "backdrop", "backgrounds"):
            background = w
        elif w in SHAPES:
            obj: dict[str, str | None] = {"shape": w, **pending}
            pending = {"color": None, "size": None, "position": None}
            objects.append(obj)
        elif w in COLORS:
            pending["color"] = w
        elif w in SIZES:
            pending["size"] = w
        elif w in POSITIONS:
            # "a red circle on the left": attaches backwards. A position before
            # any shape ("on the left, a red circle") is carried forwards.
            if objects and objects[-1]["position"] is None:
                objects[-1]["position"] = w
            else:
                pending["position"] = w
    specs = tuple(
        ObjectSpec(shape=str(o["shape"]), color=o["color"], size=o["size"], position=o["position"])
        for o in objects[:MAX_OBJECTS]
    )
    # Two objects cannot share one anchor in the training data; drop the clash
    # on the second object rather than ask for something never seen.
    if len(specs) == 2 and specs[0].position and specs[0].position == specs[1].position:
        s = specs[1]
        specs = (specs[0], ObjectSpec(s.shape, s.color, s.size, None))
    return Caption(objects=specs, background=background)


def understood(prompt: str) -> str:
    """What the model understood from ``prompt`` (used as the gateway's revised prompt)."""
    text = parse(prompt).text()
    return text or "random shapes"
