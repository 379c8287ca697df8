"""Procedural image–caption scenes: coloured shapes on textured backgrounds.

One implementation serves the demo dataset (a real, learnable task for CPU smoke runs) and the
test suites (small real JPEG/PNG files to serve over loopback). Everything is seeded.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "pale blue": (170, 200, 235),
    "beige": (225, 210, 170),
    "dark green": (40, 80, 50),
    "pink": (240, 180, 200),
    "navy": (30, 35, 80),
}
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "centre")
TEXTURES = ("plain", "striped", "dotted")

_SYNONYMS = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box", "square block"),
    "triangle": ("triangle", "triangle", "three-sided shape"),
    "star": ("star", "five-pointed star", "star shape"),
    "cross": ("cross", "plus sign", "cross shape"),
    "diamond": ("diamond", "rhombus", "diamond shape"),
    "small": ("small", "little", "tiny"),
    "large": ("large", "big", "huge"),
}
_TEMPLATES = (
    "a {size} {colour} {shape} in the {position} on a {texture} {bg} background",
    "a {colour} {shape} on a {bg} background",
    "{size} {colour} {shape}, {position}",
    "there is a {colour} {shape} in the {position} of the picture",
    "a picture of a {colour} {shape}",
    "a {texture} {bg} background with a {size} {colour} {shape}",
    "an image showing a {colour} {shape}",
    "the {shape} is {colour} and {size}",
    "{colour} {shape} over {bg}",
    "a drawing of a {size} {shape}, coloured {colour}",
)


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    position: str
    texture: str
    background: str


def held_out_pairs() -> frozenset[tuple[str, str]]:
    """(shape, colour) pairs never shown in demo training data: two colours per shape, every colour
    held out for at least one shape, so zero-shot on them measures transfer, not recall."""
    colours = list(COLOURS)
    pairs = set()
    for i, shape in enumerate(SHAPES):
        pairs.add((shape, colours[(2 * i) % len(colours)]))
        pairs.add((shape, colours[(2 * i + 3) % len(colours)]))
    return frozenset(pairs)


def random_scene(rng: random.Random, *, held_out: bool | None = None) -> Scene:
    """A random scene; `held_out=False` avoids the held-out pairs, `True` draws only from them."""
    pairs = held_out_pairs()
    while True:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        if held_out is None or ((shape, colour) in pairs) == held_out:
            break
    return Scene(
        shape=shape,
        colour=colour,
        size=rng.choice(SIZES),
        position=rng.choice(POSITIONS),
        texture=rng.choice(TEXTURES),
        background=rng.choice(list(BACKGROUNDS)),
    )


def scene_with(rng: random.Random, shape: str, colour: str) -> Scene:
    """A random scene with a given shape and colour (benchmark images of one class)."""
    return Scene(
        shape=shape,
        colour=colour,
        size=rng.choice(SIZES),
        position=rng.choice(POSITIONS),
        texture=rng.choice(TEXTURES),
        background=rng.choice(list(BACKGROUNDS)),
    )


def describe(scene: Scene, rng: random.Random) -> str:
    """A caption in one of several natural wordings, with synonyms."""
    words = {
        "shape": rng.choice(_SYNONYMS[scene.shape]),
        "size": rng.choice(_SYNONYMS[scene.size]),
        "colour": scene.colour,
        "position": scene.position,
        "texture": scene.texture,
        "bg": scene.background,
    }
    return rng.choice(_TEMPLATES).format(**words)


def render(scene: Scene, rng: random.Random, size: int = 64) -> Image.Image:
    """Draw the scene at 2× and downsample, so edges are anti-aliased like a photo's."""
    big = size * 2
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    _texture(draw, scene, big)
    radius = big * (0.14 if scene.size == "small" else 0.27) * rng.uniform(0.9, 1.1)
    cx, cy = _centre(scene.position, big, radius, rng)
    fill = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in COLOURS[scene.colour])
    _shape(draw, scene.shape, cx, cy, radius, fill, rng.uniform(-0.2, 0.2))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _texture(draw: ImageDraw.ImageDraw, scene: Scene, big: int) -> None:
    base = BACKGROUNDS[scene.background]
    shade = tuple(int(c * 0.75) for c in base)
    step = big // 8
    if scene.texture == "striped":
        for x in range(0, big, step):
            draw.rectangle([x, 0, x + step // 2, big], fill=shade)
    elif scene.texture == "dotted":
        for x in range(step // 2, big, step):
            for y in range(step // 2, big, step):
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=shade)


def _centre(position: str, big: int, radius: float, rng: random.Random) -> tuple[float, float]:
    margin = radius + big * 0.04
    lo, hi, mid = margin, big - margin, big / 2
    x = {"left": lo, "right": hi}.get(position.split()[-1], mid)
    y = {"top": lo, "bottom": hi}.get(position.split()[0], mid)
    jitter = big * 0.04
    return x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter)


def _polygon(cx: float, cy: float, radii: list[float], turn: float) -> list[tuple[float, float]]:
    n = len(radii)
    return [
        (
            cx + r * math.sin(turn + 2 * math.pi * k / n),
            cy - r * math.cos(turn + 2 * math.pi * k / n),
        )
        for k, r in enumerate(radii)
    ]


def _shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, ...],
    turn: float,
) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, [r * 1.2] * 4, math.pi / 4 + turn), fill=fill)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, [r * 1.15, r * 0.7] * 2, turn * 0.3), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [r * 1.15] * 3, turn), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r * 1.15, r * 0.45] * 5, turn), fill=fill)
    elif shape == "cross":
        w = r * 0.38
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
