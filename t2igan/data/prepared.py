"""A layout's images decoded, cropped and resized once, into one `.npz` per source state.

The cache key covers the layout's listing (names, captions, boxes, each image's size and
modification time) and the preparation options, so editing, adding or removing a source file
prepares again, and an unchanged source is never decoded twice. Nothing under the dataset root
is written.
"""

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from t2igan.data.decode import UnreadableImage, load_square
from t2igan.data.layouts import SPLITS, list_layout
from t2igan.data.listing import DatasetError, Entry, Listing, Skips
from t2igan.io import atomic_save_npz

# Bump when decoding, cropping or the file format changes, so stale caches are not reused.
PREPARE_VERSION = 2
# StackGAN's margin for random crops: images are stored at 76/64 of the training size.
CROP_MARGIN = 76 / 64


def load_size(image_size: int, random_crop: bool) -> int:
    """The stored size of training images: with random crops, StackGAN's 76/64 margin."""
    return int(image_size * CROP_MARGIN) if random_crop else image_size


@dataclass
class Prepared:
    """Arrays of a prepared dataset: `images[split]` (N, S, S, 3) uint8, `captions[split]`
    N lists of `captions_per_image` strings, and the preparation `report` (counts, skips)."""

    images: dict[str, np.ndarray]
    captions: dict[str, list[list[str]]]
    report: dict
    path: Path


def _fingerprint(layout: str, root: Path, listing: Listing, options: dict) -> str:
    digest = hashlib.sha1(json.dumps([PREPARE_VERSION, layout, str(root), options], sort_keys=True).encode())
    for split in SPLITS:
        for entry in listing.splits[split]:
            try:
                stat = entry.image.stat()
                state = [stat.st_size, stat.st_mtime_ns]
            except OSError:
                state = None
            digest.update(json.dumps([split, entry.name, entry.captions, entry.box, state]).encode())
    return digest.hexdigest()[:16]


def _fixed_captions(captions: tuple[str, ...], count: int) -> list[str]:
    """Exactly `count` captions: the first `count`, or all of them repeated in turn."""
    return [captions[i % len(captions)] for i in range(count)]


def _decode_split(entries: list[Entry], *, size: int, final_size: int, crop: str, skips: Skips,
                  progress: bool, description: str) -> tuple[np.ndarray, list[Entry]]:  # fmt: skip
    """Decode every entry (threads: PIL releases the GIL); returns the images that decoded and
    their entries. Images are resized to `size`, then centre-cropped to `final_size`."""
    offset = (size - final_size) // 2

    def decode(entry: Entry):
        try:
            image = load_square(entry.image, size, crop=crop, box=entry.box)
        except UnreadableImage as error:
            return entry, None, str(error)
        return entry, image[offset : offset + final_size, offset : offset + final_size], None

    # Filled in place: no second copy of the split at its peak (COCO at 76 px is 1.4 GB).
    images = np.empty((len(entries), final_size, final_size, 3), np.uint8)
    kept = []
    workers = min(8, len(os.sched_getaffinity(0)))  # the CPUs this process may use
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(decode, entries)
        for entry, image, reason in tqdm(results, total=len(entries), desc=description, unit="img",
                                         disable=not progress):  # fmt: skip
            if image is None:
                skips.add("unreadable image", f"{entry.name}: {reason}")
                continue
            images[len(kept)] = image
            kept.append(entry)
    return images[: len(kept)], kept


def _report_section(skips: Skips) -> dict:
    return {reason: {"count": len(names), "examples": names[:5]} for reason, names in sorted(skips.reasons.items())}


def _pack_captions(captions: list[list[str]]) -> dict[str, np.ndarray]:
    """Captions as UTF-8 bytes plus end offsets: a fixed-width string array would pad every
    caption to the longest one, at 4 bytes per character."""
    encoded = [caption.encode("utf-8") for image in captions for caption in image]
    ends = np.cumsum([len(data) for data in encoded], dtype=np.int64)
    return {"utf8": np.frombuffer(b"".join(encoded), np.uint8), "ends": ends}


def _unpack_captions(utf8: np.ndarray, ends: np.ndarray, per_image: int) -> list[list[str]]:
    data = utf8.tobytes()
    starts = np.concatenate([[0], ends[:-1]])
    flat = [data[a:b].decode("utf-8") for a, b in zip(starts.tolist(), ends.tolist())]
    return [flat[i : i + per_image] for i in range(0, len(flat), per_image)]


def prepare(
    layout: str,
    *,
    root: str | Path,
    cache_dir: str | Path,
    image_size: int,
    captions_per_image: int,
    crop: str,
    random_crop: bool,
    num_train: int | None = None,
    num_test: int | None = None,
    progress: bool = True,
    **layout_options,
) -> Prepared:
    """Prepare dataset `layout` (see t2igan.data.layouts) found at `root`, or reuse its cache.

    Training images are stored at `load_size(image_size, random_crop)` for random crops; test
    images at `image_size` (the centre of the same resize). `num_train` / `num_test` keep the
    first N entries of a split (None: all). Raises DatasetError when a split ends up empty or
    a file cannot be read (permissions, a full disk).
    """
    root = Path(root).expanduser().resolve()
    try:
        return _prepare(layout, root, Path(cache_dir), image_size=image_size,
                        captions_per_image=captions_per_image, crop=crop, random_crop=random_crop,
                        limits=(num_train, num_test), progress=progress, layout_options=layout_options)  # fmt: skip
    except OSError as error:
        raise DatasetError(f"data={layout}: {type(error).__name__}: {error}") from error


def _prepare(layout: str, root: Path, cache_dir: Path, *, image_size: int, captions_per_image: int,
             crop: str, random_crop: bool, limits: tuple, progress: bool, layout_options: dict) -> Prepared:  # fmt: skip
    if layout == "cub":
        layout_options["need_boxes"] = crop == "bbox"
    listing = list_layout(layout, root, **layout_options)
    for split, limit in zip(SPLITS, limits):
        if limit is not None:
            listing.splits[split] = listing.splits[split][:limit]
    options = dict(image_size=image_size, captions_per_image=captions_per_image, crop=crop,
                   random_crop=random_crop)  # fmt: skip
    # One cache file per (layout, root): a changed source replaces it rather than piling up.
    source = hashlib.sha1(f"{layout}|{root}".encode()).hexdigest()[:8]
    path = cache_dir / f"{layout}-{source}-{_fingerprint(layout, root, listing, options)}.npz"
    if not path.exists():
        _decode_into(path, layout, listing, image_size=image_size, captions_per_image=captions_per_image,
                     crop=crop, random_crop=random_crop, progress=progress)  # fmt: skip
        for stale in cache_dir.glob(f"{layout}-{source}-*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    with np.load(path, allow_pickle=False) as store:
        stored = json.loads(str(store["report"]))
        images = {split: store[f"{split}/images"] for split in SPLITS}
        captions = {split: _unpack_captions(store[f"{split}/captions_utf8"], store[f"{split}/captions_ends"],
                                            captions_per_image) for split in SPLITS}  # fmt: skip
    # What the listing skipped is read fresh (it is not part of the cache key); what decoding
    # skipped and noted comes from the cache.
    report = {
        "layout": layout, "root": str(root),
        "images": {split: len(captions[split]) for split in SPLITS},
        "skipped": _report_section(listing.skips) | stored["skipped"],
        "notes": _report_section(listing.notes) | stored["notes"],
    }  # fmt: skip
    for split in SPLITS:
        if not captions[split]:
            raise DatasetError(f"data={layout}: no usable {split} images under {root}\n" + format_report(report))
    return Prepared(images=images, captions=captions, report=report, path=path)


def _decode_into(path: Path, layout: str, listing: Listing, *, image_size: int, captions_per_image: int,
                 crop: str, random_crop: bool, progress: bool) -> None:  # fmt: skip
    """Decode the listing's images and write them, their captions and what was skipped to `path`."""
    decode_skips, notes = Skips(), Skips()
    arrays = {}
    stored_size = load_size(image_size, random_crop)
    for split in SPLITS:
        final = stored_size if split == "train" else image_size
        arrays[f"{split}/images"], kept = _decode_split(
            listing.splits[split], size=stored_size, final_size=final, crop=crop, skips=decode_skips,
            progress=progress, description=f"prepare {layout} {split}",
        )  # fmt: skip
        for entry in kept:
            if len(entry.captions) < captions_per_image:
                notes.add(f"fewer than {captions_per_image} captions (repeated in turn)", entry.name)
        packed = _pack_captions([_fixed_captions(entry.captions, captions_per_image) for entry in kept])
        arrays[f"{split}/captions_utf8"], arrays[f"{split}/captions_ends"] = packed["utf8"], packed["ends"]
    summary = {"skipped": _report_section(decode_skips), "notes": _report_section(notes)}
    atomic_save_npz(path, report=np.array(json.dumps(summary)), **arrays)


def format_report(report: dict) -> str:
    """What a preparation kept and skipped, for the terminal."""
    counts = report["images"]
    lines = [f"data={report['layout']} ({report['root']}): {counts['train']:,} train and "
             f"{counts['test']:,} test images"]  # fmt: skip
    for title, section in (("skipped", report["skipped"]), ("note", report["notes"])):
        for reason, found in section.items():
            shown = ", ".join(found["examples"][:3]) + (", ..." if found["count"] > 3 else "")
            lines.append(f"  {title}: {found['count']:,} {reason} (e.g. {shown})")
    return "\n".join(lines)
