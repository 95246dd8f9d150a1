"""Tests for the ToyBirds dataset: determinism, split structure, caption truth, visibility."""

import hashlib
import itertools
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from t2igan.data import toybirds
from t2igan.data.toybirds import ATTRIBUTE_NAMES, ATTRIBUTES, COLORS, PALETTE_RGB, attribute_prompts

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_ATTRIBUTES = len(ATTRIBUTES)
BASE_ATTRIBUTES = dict(crown_color="grey", wing_color="grey", belly_color="grey",
                       bill_color="grey", bill_length="long", size="large", background="sky")


@pytest.fixture(scope="module")
def birds():
    return toybirds.make_toybirds(num_train=40, num_test=20, seed=3)


# ----------------------------------------------------------------------------- caption reader
# An independent reader of captions: it binds each colour word to the part noun it modifies
# ("red crown", "its crown is red") and reports every attribute value the caption asserts.
# It knows the vocabulary, not the templates, so it judges any sentence the generator makes.

PART_NOUNS = {"crown": "crown_color", "head": "crown_color", "cap": "crown_color",
              "wings": "wing_color", "wing": "wing_color",
              "belly": "belly_color", "breast": "belly_color", "chest": "belly_color",
              "bill": "bill_color", "beak": "bill_color"}
LENGTH_WORDS = {"short": "short", "stubby": "short", "long": "long"}
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large",
              "big": "large"}
BACKGROUND_WORDS = {"sky": "sky", "foliage": "foliage", "leaves": "foliage", "leafy": "foliage",
                    "water": "water", "lake": "water", "sand": "sand", "sandy": "sand",
                    "beach": "sand"}
# A colour right before one of these describes the scene, not the bird ("clear blue sky").
SCENERY_NOUNS = {"sky", "leaves", "foliage"}
# Words allowed between "is"/"are" and the colour ("its bill is long and yellow").
PREDICATE_FILLERS = {"and", "pointed", "thin", *LENGTH_WORDS}


def read_caption(caption: str) -> dict[str, set[str]]:
    """Attribute name -> the values the caption asserts; "unattached" -> stray colour words."""
    tokens = re.findall(r"[a-z]+", caption)
    claims, bound = defaultdict(set), set()
    for i, token in enumerate(tokens):
        if token in PART_NOUNS:
            attribute = PART_NOUNS[token]
            if i > 0 and tokens[i - 1] in COLORS:
                claims[attribute].add(tokens[i - 1])
                bound.add(i - 1)
            j = i + 1
            if j < len(tokens) and tokens[j] in ("is", "are"):
                j += 1
                while j < len(tokens) and tokens[j] in PREDICATE_FILLERS:
                    j += 1
                if j < len(tokens) and tokens[j] in COLORS:
                    claims[attribute].add(tokens[j])
                    bound.add(j)
        if token in LENGTH_WORDS:
            claims["bill_length"].add(LENGTH_WORDS[token])
        if token in SIZE_WORDS:
            claims["size"].add(SIZE_WORDS[token])
        if token in BACKGROUND_WORDS:
            claims["background"].add(BACKGROUND_WORDS[token])
    for i, token in enumerate(tokens):
        next_token = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in COLORS and i not in bound and next_token not in SCENERY_NOUNS:
            claims["unattached"].add(token)
    return claims


def caption_errors(caption: str, attributes: dict[str, str], mentions: np.ndarray) -> list[str]:
    """Why `caption` is not exactly true of `attributes`, mentions (K,) bool; [] if it is."""
    claims = read_caption(caption)
    errors = [f"colour word(s) {sorted(claims['unattached'])} attached to no part"
              ] if claims["unattached"] else []
    for name, mentioned in zip(ATTRIBUTE_NAMES, mentions):
        expected = {attributes[name]} if mentioned else set()
        if claims[name] != expected:
            errors.append(f"{name}: caption says {sorted(claims[name])}, "
                          f"expected {sorted(expected)}")
    return errors


def test_reader_catches_a_wrong_colour_and_a_false_mention():
    attributes = dict(BASE_ATTRIBUTES, crown_color="red", wing_color="black", bill_color="yellow",
                      bill_length="short")
    mentions = np.array([name in ("crown_color", "wing_color", "bill_color", "bill_length")
                         for name in ATTRIBUTE_NAMES])
    good = "this bird has a red crown, black wings and a short yellow bill"
    assert caption_errors(good, attributes, mentions) == []
    for bad in ("this bird has a blue crown, black wings and a short yellow bill",
                "this bird has a red crown, black wings and a long yellow bill",
                "this bird's crown is red, its wings are white and its bill is short and yellow",
                "this bird has a red crown, black wings, a short yellow bill and a white belly",
                "this bird has a red crown, black wings and a short bill",
                "this purple bird has a red crown, black wings and a short yellow bill",
                "this bird has a red crown, black wings and a short yellow bill in a leafy tree"):
        assert caption_errors(bad, attributes, mentions), bad


@pytest.mark.parametrize("name", ATTRIBUTE_NAMES)
def test_attribute_prompts_name_one_value_each_and_nothing_else(name):
    mentions = np.array([other == name for other in ATTRIBUTE_NAMES])
    for seed in range(3):
        prompts = attribute_prompts(name, seed)
        assert len(prompts) == len(ATTRIBUTES[name]) == len(set(prompts))
        for value, prompt in zip(ATTRIBUTES[name], prompts):
            assert caption_errors(prompt, dict(BASE_ATTRIBUTES, **{name: value}), mentions) == [], prompt


# ----------------------------------------------------------------------------- determinism


def _digest(splits) -> str:
    hasher = hashlib.sha256()
    for split in (splits["train"], splits["test"]):
        hasher.update(split.images.tobytes())
        hasher.update(split.attributes.tobytes())
        hasher.update(split.mentions.tobytes())
        hasher.update("\n".join(itertools.chain(*split.captions)).encode())
    return hasher.hexdigest()


def test_same_seed_gives_identical_data_and_another_seed_differs(birds):
    again = toybirds.make_toybirds(num_train=40, num_test=20, seed=3)
    for name in ("train", "test"):
        np.testing.assert_array_equal(birds[name].images, again[name].images)
        np.testing.assert_array_equal(birds[name].attributes, again[name].attributes)
        np.testing.assert_array_equal(birds[name].mentions, again[name].mentions)
        assert birds[name].captions == again[name].captions
    other = toybirds.make_toybirds(num_train=40, num_test=20, seed=4)
    assert not np.array_equal(birds["train"].images, other["train"].images)
    assert not np.array_equal(birds["train"].attributes, other["train"].attributes)
    assert birds["train"].captions != other["train"].captions


def test_same_seed_gives_identical_data_in_another_process():
    code = ("import sys; sys.path.insert(0, 'tests'); from test_toybirds import _digest; "
            "from t2igan.data import toybirds; "
            "print(_digest(toybirds.make_toybirds(num_train=5, num_test=3, seed=11)))")
    # A different hash seed would expose any use of Python's salted hash().
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == _digest(toybirds.make_toybirds(5, 3, seed=11))


def test_image_i_does_not_depend_on_split_size(birds):
    smaller = toybirds.make_toybirds(num_train=7, num_test=2, seed=3)
    np.testing.assert_array_equal(smaller["train"].images, birds["train"].images[:7])
    assert smaller["test"].captions == birds["test"].captions[:2]


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_shapes_and_dtypes(image_size):
    splits = toybirds.make_toybirds(num_train=3, num_test=2, seed=0, image_size=image_size,
                                    captions_per_image=4)
    for split, count in ((splits["train"], 3), (splits["test"], 2)):
        assert len(split) == count
        assert split.images.shape == (count, image_size, image_size, 3)
        assert split.images.dtype == np.uint8
        assert split.attributes.shape == (count, NUM_ATTRIBUTES)
        assert split.attributes.dtype == np.int32
        assert split.mentions.shape == (count, 4, NUM_ATTRIBUTES)
        assert split.mentions.dtype == np.bool_
        assert len(split.captions) == count
        assert all(len(c) == 4 and all(isinstance(s, str) for s in c) for c in split.captions)


def test_attribute_indices_are_in_range_and_every_value_occurs(birds):
    train = toybirds.make_toybirds(num_train=300, num_test=1, seed=0, image_size=32,
                                   captions_per_image=1)["train"]
    for k, name in enumerate(ATTRIBUTE_NAMES):
        for split in (birds["train"], birds["test"]):
            assert split.attributes[:, k].min() >= 0
            assert split.attributes[:, k].max() < len(ATTRIBUTES[name])
        assert set(train.attributes[:, k]) == set(range(len(ATTRIBUTES[name]))), name


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_train=0, num_test=1), "num_train must be > 0"),
    (dict(num_train=1, num_test=-1), "num_test must be >= 0"),
    (dict(num_train=1, num_test=1, image_size=48 + 8), "image_size must be a multiple of 16"),
    (dict(num_train=1, num_test=1, image_size=16), ">= 32"),
    (dict(num_train=1, num_test=1, captions_per_image=0), "captions_per_image must be >= 1"),
    (dict(num_train=1, num_test=1, heldout_fraction=1.0), "heldout_fraction"),
])
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        toybirds.make_toybirds(**kwargs)


def test_render_and_describe_reject_unknown_attribute_values():
    with pytest.raises(ValueError, match="crown_color='pink'"):
        toybirds.render_bird(dict(BASE_ATTRIBUTES, crown_color="pink"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="missing"):
        toybirds.describe({"size": "small"}, np.random.default_rng(0))


# ----------------------------------------------------------------------------- captions


def _all_captions(splits):
    for split in (splits["train"], splits["test"]):
        for row, captions, mentions in zip(split.attributes, split.captions, split.mentions):
            attributes = toybirds.decode_attributes(row)
            yield from ((caption, attributes, m) for caption, m in zip(captions, mentions))


def test_every_caption_is_true_of_its_image(birds):
    errors = [(caption, problem) for caption, attributes, mentions in _all_captions(birds)
              for problem in caption_errors(caption, attributes, mentions)]
    assert errors == []


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_few_captions_are_still_true_and_cover_every_attribute(count):
    rng = np.random.default_rng(count)
    for _ in range(30):
        attributes = {name: str(rng.choice(values)) for name, values in ATTRIBUTES.items()}
        captions, mentions = toybirds.describe(attributes, rng, count)
        assert mentions.shape == (count, NUM_ATTRIBUTES) and len(captions) == count
        assert mentions.any(axis=0).all()
        for caption, m in zip(captions, mentions):
            assert caption_errors(caption, attributes, m) == [], caption


def test_captions_are_lowercase_and_mention_one_to_four_attributes(birds):
    for caption, _, mentions in _all_captions(birds):
        assert caption == caption.lower() and caption.strip() == caption
        assert 1 <= mentions.sum() <= 4, caption


def test_every_attribute_is_mentioned_in_each_images_captions(birds):
    for split in (birds["train"], birds["test"]):
        assert split.mentions.any(axis=1).all()


def test_captions_use_many_sentence_structures():
    """Strip attribute words and scenery phrases: what is left is the sentence skeleton."""
    vocabulary = set(COLORS) | set(PART_NOUNS) | set(LENGTH_WORDS) | set(SIZE_WORDS)
    vocabulary |= {w for phrases in toybirds._BACKGROUND_PHRASES.values()
                   for phrase in phrases for w in phrase.split()}
    vocabulary |= {"a", "an", "and", "pointed", "thin", "its", "is", "are"}
    splits = toybirds.make_toybirds(num_train=150, num_test=1, seed=0, image_size=32)
    skeletons = {" ".join(w for w in re.findall(r"[a-z]+", caption) if w not in vocabulary)
                 for caption, _, _ in _all_captions(splits)}
    assert len(toybirds.CAPTION_TEMPLATES) >= 15
    assert len(skeletons) >= 15, sorted(skeletons)


# ----------------------------------------------------------------------------- splits


def _triples(split) -> set[tuple[int, ...]]:
    columns = [ATTRIBUTE_NAMES.index(name) for name in toybirds.HELDOUT_ATTRIBUTES]
    return {tuple(row) for row in split.attributes[:, columns]}


def test_test_combinations_never_occur_in_train():
    splits = toybirds.make_toybirds(num_train=400, num_test=100, seed=5, image_size=32,
                                    captions_per_image=1)
    heldout = {tuple(t) for t in toybirds.heldout_combinations(seed=5)}
    assert len(heldout) == 150
    assert _triples(splits["test"]) <= heldout
    assert not _triples(splits["train"]) & heldout
    assert len(_triples(splits["test"])) > 50  # test images really spread over held-out triples


def test_every_single_colour_occurs_in_train_combinations():
    heldout = {tuple(t) for t in toybirds.heldout_combinations(seed=5, heldout_fraction=0.3)}
    all_triples = set(itertools.product(range(len(COLORS)), repeat=3))
    train_triples = all_triples - heldout
    for column in range(3):
        assert {t[column] for t in train_triples} == set(range(len(COLORS)))


def test_heldout_combinations_follow_the_seed():
    first = toybirds.heldout_combinations(seed=1)
    np.testing.assert_array_equal(first, toybirds.heldout_combinations(seed=1))
    assert not np.array_equal(first, toybirds.heldout_combinations(seed=2))


# ----------------------------------------------------------------------------- visibility


def _render(seed: int, **changes) -> np.ndarray:
    """(64, 64, 3) int64 rendering; equal seeds give equal geometry and colour jitter."""
    attributes = dict(BASE_ATTRIBUTES, **changes)
    return toybirds.render_bird(attributes, np.random.default_rng(seed)).astype(np.int64)


def _part_core(seed: int, part: str, **changes) -> np.ndarray:
    """(64, 64) bool: pixels fully covered by `part`, found by recolouring only that part."""
    low, high = ("black", "yellow") if part == "bill_color" else ("black", "white")
    difference = np.abs(_render(seed, **{part: low}, **changes)
                        - _render(seed, **{part: high}, **changes)).sum(-1)
    full_contrast = np.abs(np.subtract(PALETTE_RGB[low], PALETTE_RGB[high])).sum()
    return difference > 0.8 * full_contrast


def _nearest_color(rgb: np.ndarray, names) -> str:
    return min(names, key=lambda name: np.abs(np.subtract(PALETTE_RGB[name], rgb)).sum())


@pytest.mark.parametrize("part", toybirds.COLOR_ATTRIBUTES)
@pytest.mark.parametrize("size", ["small", "large"])
def test_every_part_colour_reads_back_from_its_region(part, size):
    for seed in range(3):
        core = _part_core(seed, part, size=size, bill_length="short")
        assert core.sum() >= 2, (part, size, seed)
        for color in ATTRIBUTES[part]:
            image = _render(seed, **{part: color}, size=size, bill_length="short")
            observed = np.median(image[core], axis=0)
            assert _nearest_color(observed, ATTRIBUTES[part]) == color, (part, size, seed)


def test_crown_region_sits_above_the_belly_region():
    for seed in range(5):
        crown_rows = np.nonzero(_part_core(seed, "crown_color"))[0]
        belly_rows = np.nonzero(_part_core(seed, "belly_color"))[0]
        assert crown_rows.mean() < belly_rows.mean() - 5


def test_long_bill_and_large_size_cover_clearly_more_pixels():
    for seed in range(5):
        short = _part_core(seed, "bill_color", bill_length="short").sum()
        long = _part_core(seed, "bill_color", bill_length="long").sum()
        assert long > 2 * short
        small = _part_core(seed, "wing_color", size="small").sum()
        large = _part_core(seed, "wing_color", size="large").sum()
        assert large > 1.5 * small


def test_backgrounds_differ_at_the_corners():
    corners = {}
    for background in ATTRIBUTES["background"]:
        image = _render(0, background=background)
        patches = [image[:6, :6], image[:6, -6:], image[-6:, :6], image[-6:, -6:]]
        corners[background] = np.mean([p.reshape(-1, 3).mean(0) for p in patches], axis=0)
    for first, second in itertools.combinations(corners, 2):
        assert np.abs(corners[first] - corners[second]).sum() > 60, (first, second)


def test_nuisance_variation_moves_the_bird_without_changing_attributes():
    images = [_render(seed) for seed in range(6)]
    cores = [_part_core(seed, "crown_color") for seed in range(6)]
    assert len({tuple(np.argwhere(core).mean(0).round()) for core in cores}) > 1
    assert all(not np.array_equal(images[0], image) for image in images[1:])
