"""Binding negatives: a caption with its colours moved to the wrong parts.

A generator that draws "a red crown and blue wings" as a blue crown and red wings has every
colour the caption names, only on the wrong parts; on toybirds that is most of the default
recipe's colour errors. A discriminator whose mismatched captions are other images' captions
never has to check which part carries which colour, because a random caption almost always
names other colours. `rotate_colours` makes the caption D must reject instead: the same words
with each colour moved to the next place the caption names one ("a blue crown and red wings"),
so the colours present are the same and only their places differ.
"""

import re

import numpy as np

from t2igan.errors import UserError

# Basic colour terms (Berlin & Kay's eleven, with "grey"/"gray" and the words CUB and
# Oxford-102 captions use for them) plus the bird and flower shades their captions name often.
COLOUR_WORDS = (
    "red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black",
    "white", "grey", "gray", "gold", "golden", "tan", "buff", "olive", "maroon", "magenta",
)  # fmt: skip
_COLOUR = r"(?:" + "|".join(COLOUR_WORDS) + r")"
# One place's colours: colour words joined by nothing, "and", "or", commas, hyphens or slashes
# ("black and white", "olive-green"). Rotating within one would say the same thing.
_JOINER = r"(?:\s*[,/-]\s*|\s+(?:and|or)\s+|\s+)"
_COLOUR_RUN = re.compile(rf"\b{_COLOUR}(?:{_JOINER}{_COLOUR})*\b", re.IGNORECASE)
_WORD = re.compile(rf"\b{_COLOUR}\b", re.IGNORECASE)
_SAME_COLOUR = {"gray": "grey", "golden": "gold"}  # spellings of one colour


def rotate_colours(caption: str) -> str | None:
    """The caption with the colours of each place it names moved to the next place, the last
    place's to the first ("red crown, blue wings, green belly" -> "blue crown, green wings, red
    belly"; "black and white wings, a red bill" -> "red wings, a black and white bill"); None
    if fewer than two places have different colours. A place whose colours equal the next
    place's keeps them, so every rotation changes at least two places. The first letter's case
    is kept ("Red" -> "Blue"); "gray" is "grey" and "golden" is "gold"."""
    runs = list(_COLOUR_RUN.finditer(caption))
    colours = [_colours(run.group(0)) for run in runs]
    texts = {}  # each distinct place's colours, in order, as the caption first writes them
    for run, colour in zip(runs, colours):
        texts.setdefault(colour, run.group(0).lower())
    if len(texts) < 2:
        return None
    distinct = list(texts)
    following = dict(zip(distinct, distinct[1:] + distinct[:1]))
    pieces, end = [], 0
    for run, colour in zip(runs, colours):
        text = texts[following[colour]]
        text = text.capitalize() if run.group(0)[0].isupper() else text
        pieces += [caption[end : run.start()], text]
        end = run.end()
    return "".join(pieces) + caption[end:]


def _colours(run: str) -> tuple[str, ...]:
    """The colours a run names, in order, one spelling per colour."""
    words = (word.lower() for word in _WORD.findall(run))
    return tuple(_SAME_COLOUR.get(word, word) for word in words)


def rotated_colour_negatives(embedder, train_split) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, ...) embeddings of each training caption with its colours rotated (as `embedder`
    gives them: (D,) per caption, or (1 + K, D) with phrase tokens), and (N, C) bool:
    which captions have such a rotation (zeros elsewhere). `embedder` embeds a list of captions
    (a CaptionEmbedder); `train_split` has N images of C captions each."""
    rotated = [rotate_colours(caption) for captions in train_split.captions for caption in captions]
    has_negative = np.array([caption is not None for caption in rotated])
    if not has_negative.any():
        raise UserError("balance.rotated_colours > 0, but no training caption names two colours "
                        "for different places (t2igan.text.negatives); "
                        "set balance.rotated_colours=0")  # fmt: skip
    print(f"rotated colours: {has_negative.mean():.0%} of the training captions name colours for "
          "two places or more and get a negative with them moved to the wrong places")
    vectors = embedder.embed([caption for caption in rotated if caption is not None])
    negatives = np.zeros((len(rotated), *vectors.shape[1:]), np.float32)
    negatives[has_negative] = vectors
    shape = (len(train_split), -1)
    return negatives.reshape(*shape, *vectors.shape[1:]), has_negative.reshape(shape)
