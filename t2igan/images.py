"""Sample grids: generated images in rows (one per caption), captions printed beside them."""

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from t2igan.io import atomic_write


def to_uint8(images) -> np.ndarray:
    """(..., 3) float images in [-1, 1] -> uint8 in [0, 255], rounded."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid_inputs(noise: np.ndarray, text_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (caption, noise) pair in grid order: (C, Z) noise and (R, T) embeddings ->
    (R*C, Z) noise and (R*C, T) embeddings, row r holding caption r with noise 0..C-1."""
    rows, columns = len(text_embeddings), len(noise)
    return (np.tile(noise, (rows, 1)).astype(np.float32),
            np.repeat(text_embeddings, columns, axis=0).astype(np.float32))  # fmt: skip


def image_grid(images: np.ndarray, captions: list[str] | None = None, *, padding: int = 2,
               caption_width: int = 280) -> np.ndarray:
    """(rows, columns, S, S, 3) uint8 -> one (H, W, 3) uint8 picture.

    With `captions` (one per row), each row's caption is printed to the right of it.
    """
    rows, columns, size = images.shape[0], images.shape[1], images.shape[2]
    text_width = caption_width if captions else 0
    height = rows * (size + padding) + padding
    width = columns * (size + padding) + padding + text_width
    canvas = np.full((height, width, 3), 255, np.uint8)
    for row in range(rows):
        for column in range(columns):
            top = padding + row * (size + padding)
            left = padding + column * (size + padding)
            canvas[top : top + size, left : left + size] = images[row, column]
    if not captions:
        return canvas
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    wrap = max(10, caption_width // 6)
    for row, caption in enumerate(captions):
        lines = textwrap.wrap(caption, wrap)[: max(1, size // 11)]
        draw.multiline_text(
            (width - text_width + 4, padding + row * (size + padding) + 2),
            "\n".join(lines), fill=(0, 0, 0), font=font, spacing=1,
        )  # fmt: skip
    return np.asarray(picture)


def save_png(path: str | Path, picture: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 picture as PNG, atomically."""
    return atomic_write(path, lambda temp_path: Image.fromarray(picture).save(temp_path, format="PNG"))
