"""Image files -> square RGB uint8 arrays, whatever mode the file is in.

Source files are only ever opened for reading. Grayscale, CMYK, palette, transparent and
16-bit images are converted to 8-bit RGB (transparency composited on white); EXIF rotation is
applied. A file that cannot be decoded raises `UnreadableImage` with the decoder's reason.
"""

import math
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

# How a source image becomes a square before resizing: StackGAN's bird crop (a square of
# 1.5 x max(w, h) centred on the bounding box, clipped to the image), the centred square of
# the shorter side, or the whole image squashed to a square.
CROPS = ("bbox", "center", "none")


class UnreadableImage(Exception):
    """The file is not an image PIL can decode (corrupt, truncated, empty, unknown format)."""


def bird_crop_box(width: int, height: int, box: tuple[float, float, float, float]) -> tuple[int, ...]:
    """StackGAN/AttnGAN's crop around bounding box (x, y, w, h): (left, top, right, bottom)."""
    x, y, w, h = box
    radius = int(max(w, h) * 0.75)
    center_x, center_y = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return (max(0, center_x - radius), max(0, center_y - radius),
            min(width, center_x + radius), min(height, center_y + radius))  # fmt: skip


def center_crop_box(width: int, height: int) -> tuple[int, ...]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode; transparent pixels become white."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # PIL's own convert("L") clips everything above 255 to white. 16-bit files are scaled
        # by 257; 32-bit integer or float images by what their values show (0-1, 0-255, 16-bit).
        levels = np.asarray(image, dtype=np.float64)
        peak = float(levels.max()) if levels.size else 0.0
        if image.mode.startswith("I;16") or peak > 255:
            levels = levels / 257.0
        elif image.mode == "F" and peak <= 1.0:
            levels = levels * 255.0
        image = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}  # fmt: skip


def load_square(
    path: str | Path,
    size: int,
    *,
    crop: str = "center",
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """The image at `path` cropped square (`crop`, see CROPS) and resized: (size, size, 3) uint8.

    `box` is the (x, y, w, h) bounding box `crop="bbox"` centres on, in the file's pixels (as
    stored, before EXIF rotation); with no box, "bbox" falls back to "center". Resizing is PIL
    bicubic with antialiasing; the square is then turned upright by the file's EXIF
    orientation (cropping the stored pixels first gives the same square, and keeps boxes valid).
    """
    try:
        if Path(path).stat().st_size == 0:
            raise UnreadableImage("empty file")
        with Image.open(path) as image:
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            width, height = image.size
            if crop == "bbox" and box is not None:
                region = bird_crop_box(width, height, box)
            elif crop == "none":
                region = (0, 0, width, height)
            else:
                region = center_crop_box(width, height)
            if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
                # Let the JPEG decoder skip detail the resize would throw away (2-8x faster).
                scale_x = size / max(1, region[2] - region[0])
                scale_y = size / max(1, region[3] - region[1])
                image.draft(image.mode, (math.ceil(width * scale_x), math.ceil(height * scale_y)))
                shrink_x, shrink_y = image.size[0] / width, image.size[1] / height
                left, top, right, bottom = region
                region = (max(0, round(left * shrink_x)), max(0, round(top * shrink_y)),
                          min(image.size[0], round(right * shrink_x)), min(image.size[1], round(bottom * shrink_y)))  # fmt: skip
            image = to_rgb(image)
            square = image.crop(region).resize((size, size), Image.BICUBIC)
            if orientation in _UPRIGHT:
                square = square.transpose(_UPRIGHT[orientation])
            return np.asarray(square, dtype=np.uint8)
    except UnidentifiedImageError:
        raise UnreadableImage("not an image format PIL knows") from None
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"too large to decode safely ({error})") from error
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as error:
        # Decoders raise all of these on corrupt, truncated or unknown files.
        raise UnreadableImage(f"{type(error).__name__}: {error}") from error
