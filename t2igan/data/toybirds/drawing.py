"""Drawing ToyBirds: palette, nuisance poses, and `render_bird`, which paints one bird."""

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from t2igan.data.toybirds.vocabulary import COLOR_ATTRIBUTES, _validate_attributes

# Nominal RGB of each colour word. Pairwise L1 distances are >= 110 so that the per-part jitter
# (+-COLOR_JITTER per channel) and antialiasing never make two words ambiguous.
PALETTE_RGB: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (245, 225, 40),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "purple": (140, 45, 175),
    "brown": (115, 70, 30),
    "black": (22, 22, 22),
    "white": (245, 245, 245),
    "grey": (140, 140, 140),
}
COLOR_JITTER = 10  # max per-channel offset, RGB levels

_SUPERSAMPLE = 4  # draw at 4x, then LANCZOS down: antialiased edges at any image size
_OUTLINE_RGB = (15, 15, 15)
_LEG_RGB = (70, 60, 55)
_BRANCH_RGB = (95, 72, 52)
# Bird length unit (body half-width) as a fraction of the image side.
_SCALE = {"small": 0.135, "large": 0.19}
# Bill length beyond the head, in body units (the head radius is 0.5).
_BILL_LENGTH = {"short": 0.5, "long": 1.1}


def _validate_image_size(image_size: int) -> None:
    if image_size < 32 or image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {image_size}")


@dataclass(frozen=True)
class _Pose:
    """Nuisance geometry of one bird; centre in fractions of the image side, angles in radians."""

    facing: int  # +1 faces right, -1 faces left
    center_x: float
    center_y: float
    body_tilt: float
    wing_angle: float
    tail_angle: float
    branch_slope: float  # perch rise over the image width, fraction of the side


def _sample_pose(rng: np.random.Generator, size: str) -> _Pose:
    scale = _SCALE[size]
    facing = 1 if rng.random() < 0.5 else -1
    # The bird spans local x in [-1.8, 2.55] (tail to long bill); centre that, then jitter it.
    center_x = 0.5 - facing * 0.375 * scale + rng.uniform(-0.04, 0.04)
    center_y = 0.5 + rng.uniform(-0.05, 0.05)
    return _Pose(
        facing=facing,
        center_x=center_x,
        center_y=center_y,
        body_tilt=math.radians(rng.uniform(-14.0, 4.0)),
        wing_angle=math.radians(rng.uniform(-12.0, 18.0)),
        tail_angle=math.radians(rng.uniform(-12.0, 12.0)),
        branch_slope=rng.uniform(-0.08, 0.08),
    )


def _jittered_colors(attributes: dict[str, str], rng: np.random.Generator) -> dict[str, tuple]:
    """One jittered RGB per coloured part; always draws the same amount of randomness."""
    offsets = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=(len(COLOR_ATTRIBUTES), 3))
    colors = {}
    for name, offset in zip(COLOR_ATTRIBUTES, offsets):
        rgb = np.clip(np.array(PALETTE_RGB[attributes[name]]) + offset, 0, 255)
        colors[name] = tuple(int(c) for c in rgb)
    return colors


def _ellipse(cx, cy, rx, ry, angle=0.0, start=0.0, stop=2 * math.pi, n=28):
    """Points of an ellipse (or of its arc from `start` to `stop`), rotated by `angle`."""
    points = _unit_arc(start, stop, n) * (rx, ry)
    return _rotate(points, angle, (0.0, 0.0)) + (cx, cy)


@functools.lru_cache(maxsize=64)
def _unit_arc(start: float, stop: float, n: int) -> np.ndarray:
    """(n, 2) points on the unit circle, y down as in the image; cached: every bird reuses them."""
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * math.pi - 1e-6)
    points = np.stack([np.cos(t), -np.sin(t)], axis=1)
    points.flags.writeable = False
    return points


def _rotate(points: np.ndarray, angle: float, pivot: tuple[float, float]) -> np.ndarray:
    """(n, 2) points rotated by `angle` radians (clockwise on screen) about `pivot`."""
    c, s = math.cos(angle), math.sin(angle)
    rotation_transposed = np.array([[c, s], [-s, c]])
    return (np.asarray(points, float) - pivot) @ rotation_transposed + pivot


class _BirdCanvas:
    """Maps bird-local coordinates (body half-width = 1, facing right, y down) to pixels."""

    def __init__(self, draw: ImageDraw.ImageDraw, pose: _Pose, scale: float, side_px: int):
        self.draw, self.pose = draw, pose
        self.unit_px = scale * side_px
        self.origin = np.array([pose.center_x * side_px, pose.center_y * side_px])
        self.outline_px = max(1, round(side_px / 256))  # 1 output pixel at 64x64

    def to_pixels(self, points: np.ndarray) -> list[float]:
        """(n, 2) local points -> flat [x0, y0, x1, y1, ...] pixel list, as ImageDraw takes."""
        points = _rotate(points, self.pose.body_tilt, (0.0, 0.0))
        points[:, 0] *= self.pose.facing
        return (points * self.unit_px + self.origin).ravel().tolist()

    def polygon(self, points, fill, outline_scale: float = 1.0) -> None:
        width = max(1, round(self.outline_px * outline_scale))
        self.draw.polygon(self.to_pixels(points), fill=fill, outline=_OUTLINE_RGB, width=width)

    def line(self, points, fill, width_units: float) -> None:
        width = max(1, round(width_units * self.unit_px))
        self.draw.line(self.to_pixels(points), fill=fill, width=width)


def _draw_bird(canvas: _BirdCanvas, attributes: dict[str, str], colors: dict) -> None:
    """Paints legs, tail, body, belly, wing, bill, head with crown cap, and eye, back to front."""
    pose, wing_rgb, belly_rgb = canvas.pose, colors["wing_color"], colors["belly_color"]
    for hip_x in (0.05, 0.32):
        canvas.line([(hip_x, 0.45), (hip_x - 0.05, 0.98)], _LEG_RGB, 0.09)
    tail = np.array([(-0.75, -0.22), (-1.72, -0.5), (-1.8, -0.08), (-0.75, 0.2)])
    canvas.polygon(_rotate(tail, pose.tail_angle, (-0.75, 0.0)), wing_rgb)
    canvas.polygon(_ellipse(0.0, 0.0, 1.0, 0.62), wing_rgb)  # back and flanks
    canvas.polygon(_ellipse(0.18, 0.24, 0.78, 0.42), belly_rgb)
    # The wing hinges at the shoulder; its tip points back, lifted by the pose.
    wing = _ellipse(-0.3, -0.08, 0.8, 0.33, angle=math.radians(8))
    canvas.polygon(_rotate(wing, -pose.wing_angle, (0.4, -0.12)), wing_rgb)
    head_x, head_y, head_r = 0.95, -0.52, 0.5
    bill_tip = head_x + head_r + _BILL_LENGTH[attributes["bill_length"]]
    bill = [(head_x + 0.3, head_y - 0.22), (bill_tip, head_y + 0.06), (head_x + 0.3, head_y + 0.32)]
    canvas.polygon(bill, colors["bill_color"], outline_scale=0.5)
    canvas.polygon(_ellipse(head_x, head_y, head_r, head_r), belly_rgb)  # face and throat
    # The crown cap covers the head above a chord just below its centre.
    cap = _ellipse(head_x, head_y, head_r, head_r, start=math.radians(-25), stop=math.radians(205))
    canvas.polygon(cap, colors["crown_color"])
    # A white ring keeps the eye visible on a black crown.
    canvas.polygon(_ellipse(head_x + 0.2, head_y - 0.04, 0.15, 0.15, n=14), (235, 235, 235), 0.5)
    canvas.polygon(_ellipse(head_x + 0.23, head_y - 0.04, 0.08, 0.08, n=10), _OUTLINE_RGB, 0.5)


def _draw_branch(draw: ImageDraw.ImageDraw, pose: _Pose, scale: float, side_px: int) -> None:
    """A perch under the feet, spanning the image; its height follows the bird."""
    feet_y = (pose.center_y + 0.98 * scale) * side_px
    rise = pose.branch_slope * side_px
    width = max(1, round(0.045 * side_px))
    draw.line([(0, feet_y + width / 2 + rise / 2), (side_px, feet_y + width / 2 - rise / 2)],
              fill=_BRANCH_RGB, width=width)


def _smooth_noise(rng: np.random.Generator, image_size: int, cells: int) -> np.ndarray:
    """(S, S) float32 low-frequency noise in [0, 1]: a cells x cells grid upsampled bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    upsampled = Image.fromarray(grid).resize((image_size, image_size), Image.BICUBIC)
    return np.asarray(upsampled, np.float32) / 255.0


def _draw_background(background: str, rng: np.random.Generator, image_size: int) -> np.ndarray:
    """(S, S, 3) uint8 scene. Draws the same randomness for every scene, so the bird's
    geometry and colours do not depend on which background it is on."""
    blotches = _smooth_noise(rng, image_size, 6)[..., None]
    grain = rng.normal(0.0, 1.0, (image_size, image_size, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi)
    height = np.linspace(0.0, 1.0, image_size, dtype=np.float32)[:, None, None]
    if background == "sky":  # deep blue at the top to pale at the horizon
        top, bottom = np.array([85, 150, 235]), np.array([180, 215, 245])
        pixels = top + (bottom - top) * height + 3 * grain
    elif background == "foliage":  # dark leaf-mottled greens
        dark, light = np.array([28, 70, 30]), np.array([80, 135, 50])
        pixels = dark + (light - dark) * blotches + 6 * grain
    elif background == "water":  # teal with horizontal ripples
        columns = np.linspace(0, 6 * math.pi, image_size, dtype=np.float32)[None, :, None]
        ripples = np.sin(12 * math.pi * height + 0.8 * np.sin(columns + phase) + phase)  # 6 bands
        pixels = np.array([40, 105, 145]) + np.array([15, 20, 18]) * ripples + 3 * grain
    else:  # sand: warm tan, darker dunes, coarse grain
        pixels = np.array([220, 195, 140]) - 35 * blotches - 15 * height + 7 * grain
    pixels = np.broadcast_to(pixels, (image_size, image_size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def render_bird(attributes: dict[str, str], rng: np.random.Generator,
                image_size: int = 64) -> np.ndarray:
    """Draws one bird with the given attribute values.

    `rng` supplies the nuisance variation (position, facing, pose, colour jitter, background
    texture); it is consumed by the same amount whatever the attributes are, so two calls
    with equally seeded generators draw the same geometry and differ only where the
    attributes differ. Returns (S, S, 3) uint8 RGB, S = image_size (a multiple of 16, >= 32).
    """
    _validate_image_size(image_size)
    _validate_attributes(attributes)
    pose = _sample_pose(rng, attributes["size"])
    colors = _jittered_colors(attributes, rng)
    background = _draw_background(attributes["background"], rng, image_size)
    side_px = image_size * _SUPERSAMPLE
    layer = Image.new("RGBA", (side_px, side_px), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    scale = _SCALE[attributes["size"]]
    if attributes["background"] != "sand":  # on sand the bird stands on the ground
        _draw_branch(draw, pose, scale, side_px)
    _draw_bird(_BirdCanvas(draw, pose, scale, side_px), attributes, colors)
    # Pillow resizes RGBA with premultiplied alpha, so edges blend into the scene cleanly.
    # reducing_gap=2 box-filters 4x -> 2x first, then LANCZOS: half the time, same look.
    layer = layer.resize((image_size, image_size), Image.LANCZOS, reducing_gap=2.0)
    image = Image.alpha_composite(Image.fromarray(background).convert("RGBA"), layer)
    return np.asarray(image.convert("RGB"))
