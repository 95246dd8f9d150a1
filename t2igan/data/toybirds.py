"""ToyBirds: procedurally drawn birds with CUB-style captions, for fast text-to-image tests.

Each bird has seven attributes from CUB-200's vocabulary (crown, wing, belly and bill colour,
bill length, size, background), every one readable from a 64x64 image, plus nuisance variation
that is not an attribute (position, facing, wing and tail pose, colour jitter, background
texture) so a generator still has something to model. Every caption is true of its image and
records which attributes it mentions, so an attribute classifier can score generated images
against exactly what their caption asked for.

The test split holds (crown, wing, belly) colour combinations that never occur in training,
while every single colour still does: it measures compositional generalisation.

Everything is a pure function of the seed (NumPy `default_rng`, never Python's `hash()`), so two
processes that ask for the same split get byte-identical images and identical captions.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white", "grey")
BILL_COLORS = ("black", "orange", "yellow", "grey")

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "crown_color": COLORS,
    "wing_color": COLORS,
    "belly_color": COLORS,
    "bill_color": BILL_COLORS,
    "bill_length": ("short", "long"),
    "size": ("small", "large"),
    "background": ("sky", "foliage", "water", "sand"),
}
ATTRIBUTE_NAMES = tuple(ATTRIBUTES)
COLOR_ATTRIBUTES = ("crown_color", "wing_color", "belly_color", "bill_color")
# The held-out test combinations are defined over these three; the bill stays free.
HELDOUT_ATTRIBUTES = ("crown_color", "wing_color", "belly_color")

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


@dataclass(frozen=True, eq=False)  # eq=False: tuple-equality on ndarrays is ambiguous
class ToyBirdsSplit:
    """One split of ToyBirds.

    images: (N, S, S, 3) uint8 RGB, NHWC.
    attributes: (N, len(ATTRIBUTES)) int32, column k indexes `ATTRIBUTES[ATTRIBUTE_NAMES[k]]`.
    captions: N lists of `captions_per_image` lowercase strings.
    mentions: (N, captions_per_image, len(ATTRIBUTES)) bool, caption j of image i mentions
        attribute k (and is then true about it; unmentioned attributes are not named at all).
    """

    images: np.ndarray
    attributes: np.ndarray
    captions: list[list[str]]
    mentions: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def decode_attributes(indices: np.ndarray) -> dict[str, str]:
    """(len(ATTRIBUTES),) integer row -> {attribute name: value word}."""
    return {name: ATTRIBUTES[name][int(i)] for name, i in zip(ATTRIBUTE_NAMES, indices)}


def encode_attributes(attributes: dict[str, str]) -> np.ndarray:
    """{attribute name: value word} -> (len(ATTRIBUTES),) int32 row of value indices."""
    _validate_attributes(attributes)
    return np.array([ATTRIBUTES[n].index(attributes[n]) for n in ATTRIBUTE_NAMES], np.int32)


def _validate_attributes(attributes: dict[str, str]) -> None:
    missing = set(ATTRIBUTE_NAMES) - set(attributes)
    unknown = set(attributes) - set(ATTRIBUTE_NAMES)
    if missing or unknown:
        raise ValueError(f"attributes must have exactly the keys {ATTRIBUTE_NAMES}; "
                         f"missing {sorted(missing)}, unknown {sorted(unknown)}")
    for name, value in attributes.items():
        if value not in ATTRIBUTES[name]:
            raise ValueError(f"{name}={value!r} is not one of {ATTRIBUTES[name]}")


def _validate_image_size(image_size: int) -> None:
    if image_size < 32 or image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {image_size}")


# ----------------------------------------------------------------------------- drawing


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


# ----------------------------------------------------------------------------- captions

# Words a caption may use, with CUB annotators' synonyms; a repeated entry is a more common choice.
_PART_NOUNS = {
    "crown_color": ("crown", "head", "crown", "cap"),
    "wing_color": ("wings",),
    "belly_color": ("belly", "breast", "belly", "chest"),
    "bill_color": ("bill", "beak", "bill"),
}
_BILL_LENGTH_WORDS = {"short": ("short", "stubby", "short"),
                      "long": ("long", "long pointed", "long thin")}
_SIZE_WORDS = {"small": ("small", "little", "tiny", "small"), "large": ("large", "big", "large")}
_BACKGROUND_PHRASES = {
    "sky": ("in front of a clear blue sky", "against the sky", "against a pale blue sky"),
    "foliage": ("among green leaves", "in front of dense foliage", "in a leafy tree"),
    "water": ("near the water", "above a lake", "over calm water"),
    "sand": ("on sandy ground", "on the sand", "on a sandy beach"),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class _Pieces:
    """The words for one caption's mentioned attributes; None/empty where not mentioned.

    nouns: part noun phrases with article ("a red crown", "black wings").
    bare: the same without article, for terse CUB-style fragments ("red crown").
    clauses: the same as clauses about "its" part ("its crown is red").
    """

    nouns: list[str]
    bare: list[str]
    clauses: list[str]
    size: str | None
    background: str | None

    def adjective(self) -> str:
        return f"{self.size} " if self.size else ""


def _part_pieces(part: str, attributes: dict[str, str], mentioned: set[str],
                 rng: np.random.Generator) -> tuple[str, str, str] | None:
    """(noun phrase with article, without article, clause) for one part, or None."""
    # The bill's length and colour are separate attributes but share one noun phrase.
    names_length = part == "bill_color" and "bill_length" in mentioned
    length = attributes["bill_length"] if names_length else None
    color = attributes[part] if part in mentioned else None
    if color is None and length is None:
        return None
    noun = _pick(rng, _PART_NOUNS[part])
    length_word = _pick(rng, _BILL_LENGTH_WORDS[length]) if length else None
    # The colour always sits right before the noun: "a long pointed yellow bill".
    bare = " ".join(w for w in (length_word, color, noun) if w)
    with_article = bare if noun == "wings" else _with_article(bare)
    verb = "are" if noun == "wings" else "is"
    # "long pointed" reads badly as a predicate: "its bill is long and yellow".
    predicate = " and ".join(w for w in (length_word and length_word.split()[0], color) if w)
    return with_article, bare, f"its {noun} {verb} {predicate}"


def _pieces(attributes: dict[str, str], mentioned: set[str], rng: np.random.Generator) -> _Pieces:
    parts = list(_PART_NOUNS)
    rng.shuffle(parts)  # CUB annotators list parts in no fixed order
    found = [p for p in (_part_pieces(part, attributes, mentioned, rng) for part in parts) if p]
    size = _pick(rng, _SIZE_WORDS[attributes["size"]]) if "size" in mentioned else None
    background = (_pick(rng, _BACKGROUND_PHRASES[attributes["background"]])
                  if "background" in mentioned else None)
    return _Pieces([f[0] for f in found], [f[1] for f in found], [f[2] for f in found],
                   size, background)


# Sentence structures. Each returns None when it cannot express exactly the given pieces
# (it never drops one), so `describe` falls back to another structure.
def _t_has(p):
    if not p.nouns:
        return None
    tail = f" and is perched {p.background}" if p.background else ""
    return f"this {p.adjective()}bird has {_join(p.nouns)}{tail}"


def _t_with(p):
    if not p.nouns:
        return None
    tail = f" {p.background}" if p.background else ""
    return f"{_with_article(p.adjective() + 'bird')} with {_join(p.nouns)}{tail}"


def _t_this_is(p):
    if not p.nouns:
        return None
    tail = f", sitting {p.background}" if p.background else ""
    return f"this is {_with_article(p.adjective() + 'bird')} with {_join(p.nouns)}{tail}"


def _t_fragment(p):
    if not p.bare:
        return None
    tail = f" {p.background}" if p.background else ""
    return f"{p.adjective()}bird with {_join(p.bare)}{tail}"


def _t_terse_has(p):
    if not p.bare or p.background:
        return None
    return f"{p.adjective()}bird has {_join(p.bare)}"


def _t_perched(p):
    if not p.background:
        return None
    tail = f" and has {_join(p.nouns)}" if p.nouns else ""
    return f"the {p.adjective()}bird is perched {p.background}{tail}"


def _t_is_size(p):
    if not p.size:
        return None
    middle = f" and has {_join(p.nouns)}" if p.nouns else ""
    tail = f", sitting {p.background}" if p.background else ""
    return f"this bird is {p.size}{middle}{tail}"


def _t_clauses(p):
    if not p.clauses or p.size or p.background:
        return None
    return _join([c.replace("its ", "the ", 1) for c in p.clauses])


def _t_possessive(p):
    if not p.clauses:
        return None
    first = p.clauses[0].replace("its ", f"this {p.adjective()}bird's ", 1)
    tail = f", and it is {p.background}" if p.background else ""
    return _join([first] + p.clauses[1:]) + tail


def _t_there_is(p):
    if not (p.nouns or p.size or p.background):
        return None
    middle = f" {p.background}" if p.background else ""
    tail = f" with {_join(p.nouns)}" if p.nouns else ""
    return f"there is {_with_article(p.adjective() + 'bird')}{middle}{tail}"


def _t_picture(p):
    if not (p.size or p.background):
        return None
    middle = f" {p.background}" if p.background else ""
    tail = f" with {_join(p.nouns)}" if p.nouns else ""
    return f"a picture of {_with_article(p.adjective() + 'bird')}{middle}{tail}"


def _t_in_picture(p):
    if not p.nouns:
        return None
    tail = f", and it is {p.background}" if p.background else ""
    return f"the {p.adjective()}bird in the picture has {_join(p.nouns)}{tail}"


def _t_has_and_its(p):
    if len(p.nouns) < 2 or p.background:
        return None
    return f"this {p.adjective()}bird has {_join(p.nouns[:-1])} and {p.clauses[-1]}"


def _t_you_can_see(p):
    if not p.nouns:
        return None
    tail = f" sitting {p.background}" if p.background else ""
    return f"you can see {_join(p.nouns)} on this {p.adjective()}bird{tail}"


def _t_fronted(p):
    if not (p.nouns and p.background):
        return None
    return f"with {_join(p.nouns)}, this {p.adjective()}bird is perched {p.background}"


def _t_seen(p):
    if not p.background:
        return None
    tail = f", with {_join(p.nouns)}" if p.nouns else ""
    return f"{_with_article(p.adjective() + 'bird')} seen {p.background}{tail}"


def _t_the_bird_has(p):
    if not p.nouns or p.size:
        return None
    tail = f" and sits {p.background}" if p.background else ""
    return f"the bird has {_join(p.nouns)}{tail}"


def _t_that_has(p):
    if not p.nouns:
        return None
    tail = f" and is sitting {p.background}" if p.background else ""
    return f"{_with_article(p.adjective() + 'bird')} that has {_join(p.nouns)}{tail}"


def _t_mix(p):
    if not p.nouns or not p.clauses:
        return None
    head = f"this is {_with_article(p.adjective() + 'bird')}"
    tail = f" {p.background}" if p.background else ""
    return f"{head}{tail}; {_join(p.clauses)}"


CAPTION_TEMPLATES = (
    _t_has, _t_with, _t_this_is, _t_fragment, _t_terse_has, _t_perched, _t_is_size,
    _t_clauses, _t_possessive, _t_there_is, _t_picture, _t_in_picture, _t_has_and_its,
    _t_you_can_see, _t_fronted, _t_seen, _t_the_bird_has, _t_that_has, _t_mix,
)


def _mention_subsets(count: int, rng: np.random.Generator) -> list[set[str]]:
    """`count` subsets of ATTRIBUTE_NAMES, each of 1 to 4 attributes (more only when `count`
    is too small to cover all seven otherwise), together covering every attribute."""
    subsets = [set() for _ in range(count)]
    captions_order = rng.permutation(count)
    for position, k in enumerate(rng.permutation(len(ATTRIBUTE_NAMES))):
        subsets[captions_order[position % count]].add(ATTRIBUTE_NAMES[k])
    for subset in subsets:
        target = int(rng.integers(1, 5))
        for k in rng.permutation(len(ATTRIBUTE_NAMES)):
            if len(subset) >= target:
                break
            subset.add(ATTRIBUTE_NAMES[k])
    return subsets


def _caption(attributes: dict[str, str], mentioned: set[str], rng: np.random.Generator) -> str:
    pieces = _pieces(attributes, mentioned, rng)
    for index in rng.permutation(len(CAPTION_TEMPLATES)):
        sentence = CAPTION_TEMPLATES[index](pieces)
        if sentence is not None:
            return sentence
    raise AssertionError(f"no caption template can express {sorted(mentioned)}")


def describe(attributes: dict[str, str], rng: np.random.Generator,
             count: int = 10) -> tuple[list[str], np.ndarray]:
    """`count` CUB-style captions of a bird, each true of it and naming 1-4 of its attributes.

    Together the captions mention every attribute at least once. Returns the captions
    (lowercase strings) and mentions, (count, len(ATTRIBUTES)) bool: caption j names
    attribute k (columns in ATTRIBUTES order).
    """
    _validate_attributes(attributes)
    if count < 1:
        raise ValueError(f"count (captions per image) must be >= 1, got {count}")
    subsets = _mention_subsets(count, rng)
    captions = [_caption(attributes, subset, rng) for subset in subsets]
    mentions = np.array([[name in s for name in ATTRIBUTE_NAMES] for s in subsets], dtype=bool)
    return captions, mentions


# ----------------------------------------------------------------------------- splits

# Independent random streams per purpose, so e.g. growing num_train never changes the test split
# and image i is the same whatever the split size.
_STREAM_HELDOUT, _STREAM_TRAIN, _STREAM_TEST = 0, 1, 2


def heldout_combinations(seed: int, heldout_fraction: float = 0.15) -> np.ndarray:
    """(M, 3) int32 (crown, wing, belly) colour index triples reserved for the test split.

    M = round(heldout_fraction * 10**3), at least 1. Raises ValueError if the remaining
    training triples would miss some single colour value of some part.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    sizes = [len(ATTRIBUTES[name]) for name in HELDOUT_ATTRIBUTES]
    triples = np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), axis=1)
    count = max(1, round(heldout_fraction * len(triples)))
    chosen = np.random.default_rng([seed, _STREAM_HELDOUT]).permutation(len(triples))[:count]
    heldout = np.zeros(len(triples), bool)
    heldout[chosen] = True
    for column, name in enumerate(HELDOUT_ATTRIBUTES):
        if len(np.unique(triples[~heldout, column])) < sizes[column]:
            raise ValueError(f"heldout_fraction={heldout_fraction} leaves some {name} value "
                             "out of training; use a smaller fraction")
    return triples[np.sort(chosen)].astype(np.int32)


def _allowed_triples(seed: int, heldout_fraction: float, split: str) -> np.ndarray:
    heldout = heldout_combinations(seed, heldout_fraction)
    if split == "test":
        return heldout
    sizes = [len(ATTRIBUTES[name]) for name in HELDOUT_ATTRIBUTES]
    all_triples = np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), axis=1)
    is_heldout = np.zeros(len(all_triples), bool)
    is_heldout[np.ravel_multi_index(heldout.T, sizes)] = True
    return all_triples[~is_heldout].astype(np.int32)


def _sample_attributes(triples: np.ndarray, rng: np.random.Generator) -> dict[str, str]:
    """Uniform over the allowed (crown, wing, belly) triples and over every other attribute."""
    row = {name: int(v) for name, v in zip(HELDOUT_ATTRIBUTES, triples[rng.integers(len(triples))])}
    for name in ATTRIBUTE_NAMES:
        if name not in row:
            row[name] = int(rng.integers(len(ATTRIBUTES[name])))
    return {name: ATTRIBUTES[name][row[name]] for name in ATTRIBUTE_NAMES}


def _make_split(split: str, num_images: int, seed: int, image_size: int,
                captions_per_image: int, heldout_fraction: float) -> ToyBirdsSplit:
    triples = _allowed_triples(seed, heldout_fraction, split)
    stream = _STREAM_TRAIN if split == "train" else _STREAM_TEST
    images = np.zeros((num_images, image_size, image_size, 3), np.uint8)
    attributes = np.zeros((num_images, len(ATTRIBUTE_NAMES)), np.int32)
    mentions = np.zeros((num_images, captions_per_image, len(ATTRIBUTE_NAMES)), bool)
    captions = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, stream, i])
        values = _sample_attributes(triples, rng)
        images[i] = render_bird(values, rng, image_size)
        image_captions, mentions[i] = describe(values, rng, captions_per_image)
        attributes[i] = encode_attributes(values)
        captions.append(image_captions)
    return ToyBirdsSplit(images, attributes, captions, mentions)


def make_toybirds(num_train: int, num_test: int, seed: int = 0, image_size: int = 64,
                  captions_per_image: int = 10,
                  heldout_fraction: float = 0.15) -> dict[str, ToyBirdsSplit]:
    """Builds the "train" and "test" splits of ToyBirds.

    num_train: training images, > 0. num_test: test images, >= 0 (0 gives an empty split).
    seed: fixes everything, images and captions alike, across processes.
    image_size: side S in pixels, a multiple of 16 and >= 32; the drawing scales with it.
    captions_per_image: captions per image, >= 1.
    heldout_fraction: fraction of the 1,000 (crown, wing, belly) colour triples that occur
        only in the test split; train images are drawn from the other triples only.
    """
    problems = []
    if num_train <= 0:
        problems.append(f"num_train must be > 0, got {num_train}")
    if num_test < 0:
        problems.append(f"num_test must be >= 0, got {num_test}")
    if image_size < 32 or image_size % 16:
        problems.append(f"image_size must be a multiple of 16 and >= 32, got {image_size}")
    if captions_per_image < 1:
        problems.append(f"captions_per_image must be >= 1, got {captions_per_image}")
    if not 0.0 < heldout_fraction < 1.0:
        problems.append(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if problems:
        raise ValueError("; ".join(problems))
    options = dict(seed=seed, image_size=image_size, captions_per_image=captions_per_image,
                   heldout_fraction=heldout_fraction)
    return {"train": _make_split("train", num_train, **options),
            "test": _make_split("test", num_test, **options)}
