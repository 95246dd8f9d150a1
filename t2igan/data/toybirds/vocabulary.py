"""ToyBirds' attribute vocabulary: the attributes, their value words, and their encoding."""

import numpy as np

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
