"""The shape detector of tests/common/shape_detector.rs, in Python, for judging diffusers' own images while training
models/sana-shapes. Keep the two the same (thresholds and steps); the Rust file documents why each is what it is.

1. background = per-channel median of the one-pixel border;
2. foreground = pixels farther than FOREGROUND_DISTANCE (Euclidean RGB) from it; the blob = its largest 4-connected
   component;
3. colour = palette colour nearest the blob's mean RGB;
4. position = offset of the blob's bounding-box centre from the image centre (fraction of the side): within
   CENTRE_RADIUS on both axes is the centre, else the larger axis decides;
5. shape = fill ratio, blob area / bounding-box area, cut between what drawn shapes measure: star 0.32–0.43,
   triangle 0.50–0.60, circle 0.70–0.84, square 0.98–1.
"""
import numpy as np

from shapes_dataset import COLOURS

FOREGROUND_DISTANCE = 60.0
CENTRE_RADIUS = 0.12
# (lowest fill ratio, shape), highest first.
FILL_CUTS = [(0.9, "square"), (0.66, "circle"), (0.46, "triangle"), (0.0, "star")]


def _largest_component(mask):
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, pixels = [(y0, x0)], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(pixels) > len(best):
            best = pixels
    return np.array(best).reshape(-1, 2)


def detect(image):
    """(colour, shape, position) of the largest blob of an HWC uint8 image, or None when nothing stands out."""
    image = image.astype(np.float64)
    h, w, _ = image.shape
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    background = np.median(border, axis=0)
    mask = np.linalg.norm(image - background, axis=2) > FOREGROUND_DISTANCE
    blob = _largest_component(mask)
    if len(blob) == 0:
        return None
    ys, xs = blob[:, 0], blob[:, 1]
    mean = image[ys, xs].mean(axis=0)
    colour = min(COLOURS, key=lambda c: np.linalg.norm(mean - np.array(COLOURS[c])))
    dx = (xs.min() + xs.max() + 1) / (2 * w) - 0.5
    dy = (ys.min() + ys.max() + 1) / (2 * h) - 0.5
    if max(abs(dx), abs(dy)) < CENTRE_RADIUS:
        position = "centre"
    elif abs(dx) >= abs(dy):
        position = "left" if dx < 0 else "right"
    else:
        position = "top" if dy < 0 else "bottom"
    fill = len(blob) / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    shape = next(name for cut, name in FILL_CUTS if fill >= cut)
    return colour, shape, position
