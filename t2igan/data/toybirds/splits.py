"""ToyBirds splits: held-out colour combinations, `ToyBirdsSplit`, and `make_toybirds`."""

from dataclasses import dataclass

import numpy as np

from t2igan.data.toybirds.captions import describe
from t2igan.data.toybirds.drawing import render_bird
from t2igan.data.toybirds.vocabulary import ATTRIBUTE_NAMES, ATTRIBUTES, encode_attributes

# The held-out test combinations are defined over these three; the bill stays free.
HELDOUT_ATTRIBUTES = ("crown_color", "wing_color", "belly_color")


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
