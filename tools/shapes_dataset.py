"""The captioned shapes data set models/sana-shapes is trained on: one coloured shape on a plain background, drawn
procedurally (no downloads) from a seeded generator, with a caption such as "a red circle on the left, on a white
background".

The vocabulary is finite (COLOURS × SHAPES × POSITIONS × BACKGROUNDS = 300 captions), so the trainer encodes every
caption once. The palette and positions are the ones tests/common/shape_detector.rs and
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
# The shape's half-side as a fraction of the image side: one size, as large as the off-centre positions allow, so that
# a corner or a star's point spans more than one of the VAE's 8×8-pixel latent cells (at 0.15, with sizes 0.12–0.18
# in the captions, the VAE rounded every star into a pentagon and the transformer drew one blob for every shape).
HALF_SIDE = 0.2
# Jitter of the shape's centre (fraction of the side) and of its size (fraction of itself): the VAE learns on these,
# the transformer on drawings jittered less (tools/train_demo.py's TRANSFORMER_JITTER).
JITTER = (0.03, 0.05)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: str
    background: str

    def caption(self):
        return f"a {self.colour} {self.shape} {POSITIONS[self.position][0]}, on a {self.background} background"


def all_scenes():
    """Every scene the captions can describe, in a fixed order."""
    return [Scene(*s) for s in itertools.product(COLOURS, SHAPES, POSITIONS, BACKGROUNDS)]


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


def render(scene, side, rng, jitter=JITTER, supersample=4):
    """`side`×`side` RGB uint8 image of `scene`, antialiased by drawing at `supersample`× and box-filtering down.
    `rng` (numpy Generator) jitters the centre by ±jitter[0] of the side, the size by ±jitter[1] of itself and each
    colour channel by ±12."""
    position_jitter, size_jitter = jitter
    big = side * supersample
    shade = lambda c: tuple(int(np.clip(v + rng.integers(-12, 13), 0, 255)) for v in c)
    image = Image.new("RGB", (big, big), shade(BACKGROUNDS[scene.background]))
    draw = ImageDraw.Draw(image)
    fx, fy = POSITIONS[scene.position][1]
    cx = (fx + rng.uniform(-position_jitter, position_jitter)) * big
    cy = (fy + rng.uniform(-position_jitter, position_jitter)) * big
    h = HALF_SIDE * rng.uniform(1 - size_jitter, 1 + size_jitter) * big
    fill = shade(COLOURS[scene.colour])
    if scene.shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    else:
        draw.polygon(_polygon(scene.shape, cx, cy, h), fill=fill)
    return np.asarray(image.resize((side, side), Image.Resampling.BOX))


def batch(scenes, side, rng, jitter=JITTER):
    """Images of `scenes` as a float tensor-ready array [N, 3, side, side] in [-1, 1]."""
    images = np.stack([render(s, side, rng, jitter) for s in scenes])
    return images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
