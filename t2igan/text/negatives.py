"""Binding negatives: a caption with its colours moved to the wrong parts.

A generator that draws "a red crown and blue wings" as a blue crown and red wings has every
colour the caption names, only on the wrong parts; on toybirds that is most of the default
recipe's colour errors. A discriminator whose mismatched captions are other images' captions
never has to check which part carries which colour, because a random caption almost always
names other colours. `rotate_colours` makes the caption D must reject instead: the same words
with each colour replaced by the next one the caption names ("a blue crown and red wings"),
so the colours present are the same and only their places differ.
"""

import re

# Basic colour terms (Berlin & Kay's eleven, with "grey"/"gray" and the words CUB and
# Oxford-102 captions use for them) plus the bird and flower shades their captions name often.
COLOUR_WORDS = (
    "red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black",
    "white", "grey", "gray", "gold", "golden", "tan", "buff", "olive", "maroon", "magenta",
)  # fmt: skip
_COLOUR = re.compile(r"\b(" + "|".join(COLOUR_WORDS) + r")\b", re.IGNORECASE)
_SAME_COLOUR = {"gray": "grey", "golden": "gold"}  # spellings of one colour: never swapped


def rotate_colours(caption: str) -> str | None:
    """The caption with each colour word replaced by the next distinct colour it names, the
    last by the first ("red crown, blue wings, green belly" -> "blue crown, green wings, red
    belly"); None if it names fewer than two distinct colours. Case is kept per word
    ("Red" -> "Blue"); "gray" is "grey" and "golden" is "gold"."""
    colours = list(dict.fromkeys(_colour(word) for word in _COLOUR.findall(caption)))
    if len(colours) < 2:
        return None
    following = dict(zip(colours, colours[1:] + colours[:1]))

    def replace(match: re.Match) -> str:
        word = following[_colour(match.group(0))]
        return word.capitalize() if match.group(0)[0].isupper() else word

    return _COLOUR.sub(replace, caption)


def _colour(word: str) -> str:
    word = word.lower()
    return _SAME_COLOUR.get(word, word)
