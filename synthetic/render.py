"""Drawing primitives shared by the classification and the detection generators.

Design: an object's class is carried by its *shape* and its *texture pattern* (each shape has
its own pattern), never by its colours. Colours are drawn at random per object, per texture
phase and per background, so a feature that only sees colour (what a randomly initialised
network mostly measures) cannot tell classes apart, while a feature that is invariant to colour
jitter and crops (what MoCo's augmentations teach) can. Backgrounds are cluttered with lines and
blotches in random colours so that "anything that is not flat" is not a class cue either.

Every function takes an explicit ``numpy.random.Generator``; nothing touches a global RNG, so a
seed fully determines the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

# Shape -> texture pairing. The order fixes class indices; DET_CLASSES uses a prefix of it.
SHAPES = ("disk", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent")
TEXTURES = ("stripes", "checker", "dots", "grid", "concentric", "sunburst", "zigzag", "blotches")
SHAPE_TEXTURE = dict(zip(SHAPES, TEXTURES, strict=True))

_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point shift: smoother small shapes, still deterministic
_SCALE = float(1 << _SUBPIXEL_BITS)


def random_color(rng: np.random.Generator) -> np.ndarray:
    """One RGB colour, uniform over the cube, as float32 of shape (3,)."""
    return rng.uniform(0, 255, size=3).astype(np.float32)


def contrasting_pair(rng: np.random.Generator, min_dist: float = 90.0) -> tuple:
    """Two random RGB colours at least ``min_dist`` apart, so a texture stays visible."""
    c1 = random_color(rng)
    for _ in range(20):
        c2 = random_color(rng)
        if np.linalg.norm(c1 - c2) >= min_dist:
            break
    else:  # rare: fall back to the complement, which is always far enough
        c2 = 255.0 - c1
    return c1, c2


def _unit_polygon(shape: str, rng: np.random.Generator) -> list:
    """Outline(s) of ``shape`` in unit coordinates (radius about 1), as a list of (N, 2) arrays.

    The first array is filled; further arrays (ring hole, crescent bite) are cut out.
    """
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "disk":
        return [circle]
    if shape == "ring":
        return [circle, circle * rng.uniform(0.45, 0.6)]
    if shape == "crescent":
        return [circle, circle * 0.85 + np.array([rng.uniform(0.4, 0.55), 0.0])]
    if shape == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.85]
    if shape == "triangle":
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return [np.stack([np.cos(a), np.sin(a)], 1)]
    if shape == "hexagon":
        a = np.arange(6) * np.pi / 3
        return [np.stack([np.cos(a), np.sin(a)], 1)]
    if shape == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return [np.stack([r * np.cos(a), r * np.sin(a)], 1)]
    if shape == "cross":
        w = 0.33
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w)]
        pts += [(-1, w), (-1, -w), (-w, -w)]
        return [np.array(pts, np.float64)]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def shape_mask(
    shape: str,
    hw: tuple,
    center: tuple,
    radius: float,
    rng: np.random.Generator,
    angle: float | None = None,
) -> np.ndarray:
    """Binary mask (uint8 0/1, shape ``hw``) of one ``shape`` at ``center`` (x, y) in pixels.

    ``radius`` is the half-size in pixels; rotation and a mild aspect change are random unless
    ``angle`` is given. Parts outside the canvas are simply not drawn.
    """
    angle = rng.uniform(0, 2 * np.pi) if angle is None else angle
    aspect = rng.uniform(0.8, 1.25)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mask = np.zeros(hw, np.uint8)
    for k, poly in enumerate(_unit_polygon(shape, rng)):
        pts = (poly * [radius * aspect, radius]) @ rot.T + np.asarray(center, np.float64)
        pts = np.round(pts * _SCALE).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1 if k == 0 else 0, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask


def texture(kind: str, hw: tuple, center: tuple, period: float, rng: np.random.Generator):
    """Two-phase pattern ``kind`` over a canvas of size ``hw`` as float32 in [0, 1].

    ``period`` (pixels) sets the pattern scale; orientation and phase are random. ``center``
    anchors radial patterns (concentric, sunburst) on the object.
    """
    h, w = hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    th = rng.uniform(0, np.pi)
    u = (x - center[0]) * np.cos(th) + (y - center[1]) * np.sin(th) + rng.uniform(0, period)
    v = -(x - center[0]) * np.sin(th) + (y - center[1]) * np.cos(th) + rng.uniform(0, period)
    f = 2 * np.pi / period
    if kind == "stripes":
        t = np.sin(f * u) > 0
    elif kind == "checker":
        t = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif kind == "dots":
        t = (np.mod(u, period) - period / 2) ** 2 + (np.mod(v, period) - period / 2) ** 2
        t = t < (0.3 * period) ** 2
    elif kind == "grid":
        t = (np.mod(u, period) < 0.3 * period) | (np.mod(v, period) < 0.3 * period)
    elif kind == "concentric":
        t = np.sin(f * np.hypot(x - center[0], y - center[1])) > 0
    elif kind == "sunburst":
        t = np.sin(rng.integers(6, 11) * np.arctan2(y - center[1], x - center[0]) + th) > 0
    elif kind == "zigzag":
        tri = np.abs(np.mod(v / period, 2.0) - 1.0)  # triangle wave along v
        t = np.sin(f * (u + period * tri)) > 0
    elif kind == "blotches":
        small = rng.standard_normal((max(2, int(h / period)) + 1, max(2, int(w / period)) + 1))
        t = cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) > 0
    else:
        raise ValueError(f"unknown texture {kind!r}; expected one of {TEXTURES}")
    return t.astype(np.float32)


def background(hw: tuple, rng: np.random.Generator, clutter: int = 6) -> np.ndarray:
    """A cluttered RGB background (float32, HxWx3): colour gradient, smooth noise, lines, blobs.

    ``clutter`` is the number of random lines and blotches; none of them uses a class shape.
    """
    h, w = hw
    c1, c2 = random_color(rng), random_color(rng)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    th = rng.uniform(0, 2 * np.pi)
    ramp = (x * np.cos(th) + y * np.sin(th)) / max(h, w)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = c1 * (1 - ramp[..., None]) + c2 * ramp[..., None]
    noise = rng.standard_normal((h // 8 + 2, w // 8 + 2)).astype(np.float32)
    img += 25.0 * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    for _ in range(clutter):
        add_clutter(img, rng)
    return img


def add_clutter(img: np.ndarray, rng: np.random.Generator) -> None:
    """Draw one distractor in place: a thick random line or an irregular solid blotch."""
    h, w = img.shape[:2]
    color = tuple(float(c) for c in random_color(rng))
    if rng.random() < 0.5:
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, color, int(rng.integers(1, max(2, min(h, w) // 20) + 1)))
    else:
        # A blotch is a thresholded smooth noise field restricted to a random window:
        # irregular, unlike any class shape.
        bh, bw = int(rng.integers(h // 8, h // 3 + 1)), int(rng.integers(w // 8, w // 3 + 1))
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        small = rng.standard_normal((4, 4)).astype(np.float32)
        field = cv2.resize(small, (bw, bh), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:bh, 0:bw]
        ellipse = ((yy - bh / 2) / (bh / 2)) ** 2 + ((xx - bw / 2) / (bw / 2)) ** 2 < 1
        sel = (field > 0.2) & ellipse
        img[y0 : y0 + bh, x0 : x0 + bw][sel] = color


def paint_object(img: np.ndarray, mask: np.ndarray, kind: str, center, radius, rng) -> None:
    """Fill ``mask`` of ``img`` in place with texture ``kind`` in two random colours."""
    period = max(3.0, radius * rng.uniform(0.3, 0.45))
    pattern = texture(kind, mask.shape, center, period, rng)[..., None]
    c1, c2 = contrasting_pair(rng)
    sel = mask.astype(bool)
    img[sel] = (c1 * pattern + c2 * (1 - pattern))[sel]


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """RGB float/uint8 image -> JPEG bytes (fixed quality, so output bytes are reproducible)."""
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a JPEG")
    return buf.tobytes()
