"""ToyBirds captions: CUB-style phrases and sentence templates, and `describe`."""

from dataclasses import dataclass

import numpy as np

from t2igan.data.toybirds.vocabulary import ATTRIBUTE_NAMES, ATTRIBUTES, _validate_attributes

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


def attribute_prompts(name: str, seed: int = 0) -> list[str]:
    """One caption per value of attribute `name` (ATTRIBUTES order) that names only it, in the
    dataset's own words and the same template for every value ("this is a bird; its head is red"):
    what a zero-shot reading of that attribute compares an image with."""
    if name not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {name!r}; known: {ATTRIBUTE_NAMES}")
    base = {attribute: values[0] for attribute, values in ATTRIBUTES.items()}
    return [_caption({**base, name: value}, {name}, np.random.default_rng(seed)) for value in ATTRIBUTES[name]]
