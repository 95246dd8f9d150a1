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

from t2igan.data.toybirds.captions import _BACKGROUND_PHRASES, CAPTION_TEMPLATES, attribute_prompts, describe
from t2igan.data.toybirds.drawing import COLOR_JITTER, PALETTE_RGB, render_bird
from t2igan.data.toybirds.splits import (
    HELDOUT_ATTRIBUTES,
    ToyBirdsSplit,
    heldout_combinations,
    make_toybirds,
)
from t2igan.data.toybirds.vocabulary import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    BILL_COLORS,
    COLOR_ATTRIBUTES,
    COLORS,
    decode_attributes,
    encode_attributes,
)

__all__ = [
    "ATTRIBUTES", "ATTRIBUTE_NAMES", "BILL_COLORS", "CAPTION_TEMPLATES", "COLORS",
    "COLOR_ATTRIBUTES", "COLOR_JITTER", "HELDOUT_ATTRIBUTES", "PALETTE_RGB", "ToyBirdsSplit",
    "attribute_prompts", "decode_attributes", "describe", "encode_attributes", "heldout_combinations",
    "make_toybirds", "render_bird",
]
