"""The captioned shapes data set models/sana-shapes is trained on: one coloured shape on a plain background, drawn
procedurally (no downloads) from a seeded generator, with a caption such as "a large red circle on the left, on a
white background".

The vocabulary is finite (COLOURS × SHAPES × POSITIONS × SIZES × BACKGROUNDS = 900 captions), so the trainer encodes
every caption once. The palette, positions and sizes are the ones tests/common/shape_detector.rs and
tools/shape_detector.py judge against: change them together.
"""
import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Saturated colours at least 120 apart (Euclidean RGB) from each other and from every background.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
}
BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20), "gray": (170, 170, 170)}
# Fill ratios (area / bounding box): square 1, circle π/4, triangle 1/2, star 0.29 — what the detector tells apart.
SHAPES = ("circle", "square", "triangle", "star")
# Caption phrase and the centre of the shape's bounding box as a fraction of the side (x, y), y downwards.
POSITIONS = {
    "left": ("on the left", (0.25, 0.5)),
    "right": ("on the right", (0.75, 0.5)),
    "top": ("at the top", (0.5, 0.25)),
    "bottom": ("at the bottom", (0.5, 0.75)),
    "centre": ("in the centre", (0.5, 0.5)),
}
# Caption word (empty: not said) and the shape's half-side as a fraction of the image side.
SIZES = {"small": 0.12, "": 0.15, "large": 0.18}


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: str
    size: str
    background: str

    def caption(self):
        size = f"{self.size} " if self.size else ""
        return f"a {size}{self.colour} {self.shape} {POSITIONS[self.position][0]}, on a {self.background} background"


def all_scenes():
    """Every scene the captions can describe, in a fixed order."""
    return [Scene(*s) for s in itertools.product(COLOURS, SHAPES, POSITIONS, SIZES, BACKGROUNDS)]


def _polygon(shape, cx, cy, h):
    if shape == "square":
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    # A five-pointed star, inner radius 0.33 × outer, its outer radius chosen so its height is 2h like the others.
    outer = 2 * h / (1 + math.cos(math.pi / 5))
    top = cy - h
    centre_y = top + outer
    points = []
    for k in range(10):
        r = outer if k % 2 == 0 else 0.33 * outer
        a = -math.pi / 2 + k * math.pi / 5
        points.append((cx + r * math.cos(a), centre_y + r * math.sin(a)))
    return points


def render(scene, side, rng, supersample=4):
    """`side`×`side` RGB uint8 image of `scene`, antialiased by drawing at `supersample`× and box-filtering down.
    `rng` (numpy Generator) jitters the centre by ±4% of the side, the size by ±8% and each colour channel by ±12."""
    big = side * supersample
    jitter = lambda c: tuple(int(np.clip(v + rng.integers(-12, 13), 0, 255)) for v in c)
    image = Image.new("RGB", (big, big), jitter(BACKGROUNDS[scene.background]))
    draw = ImageDraw.Draw(image)
    fx, fy = POSITIONS[scene.position][1]
    cx = (fx + rng.uniform(-0.04, 0.04)) * big
    cy = (fy + rng.uniform(-0.04, 0.04)) * big
    h = SIZES[scene.size] * rng.uniform(0.92, 1.08) * big
    fill = jitter(COLOURS[scene.colour])
    if scene.shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    else:
        draw.polygon(_polygon(scene.shape, cx, cy, h), fill=fill)
    return np.asarray(image.resize((side, side), Image.Resampling.BOX))


def batch(scenes, side, rng):
    """Images of `scenes` as a float tensor-ready array [N, 3, side, side] in [-1, 1]."""
    images = np.stack([render(s, side, rng) for s in scenes])
    return images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
