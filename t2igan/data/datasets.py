"""Datasets by name: each returns train and test splits of captioned images, cached on disk.

`toybirds` is drawn here; the real layouts (cub, flowers, coco, seed, folder) are read by
t2igan.data.layouts and decoded once by t2igan.data.prepared.
"""

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2igan.data import toybirds
from t2igan.data.layouts import LAYOUTS
from t2igan.data.listing import DatasetError
from t2igan.data.prepared import format_report, prepare
from t2igan.io import atomic_save_npz

# Bump when toybirds' drawing or captions change, so stale caches are not reused.
TOYBIRDS_VERSION = 1


@dataclass(frozen=True, eq=False)
class CaptionedImages:
    """One split of a dataset.

    `images` (N, S, S, 3) uint8; `captions` N lists of C strings. `attributes` (N, A) int32 and
    `mentions` (N, C, A) bool are ground truth where the dataset has it (toybirds), else None.
    How training reads the split: `crop_size` takes random crops of that size (None: the
    images as they are), `random_flip` mirrors half of them.
    """

    images: np.ndarray
    captions: list[list[str]]
    attributes: np.ndarray | None = None
    mentions: np.ndarray | None = None
    crop_size: int | None = None
    random_flip: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def centred_images(self, size: int) -> np.ndarray:
        """(N, size, size, 3): the centre of each image, as evaluation sees images that are
        stored larger for training's random crops (the images themselves at their own size)."""
        offset = (self.images.shape[1] - size) // 2
        return self.images[:, offset : offset + size, offset : offset + size]


def _config_key(**config) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def load_toybirds(
    *,
    cache_dir: str | Path,
    num_train: int,
    num_test: int,
    image_size: int = 64,
    captions_per_image: int = 10,
    heldout_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, CaptionedImages]:
    """Render toybirds once per configuration and keep the result in `cache_dir`."""
    config = dict(
        num_train=num_train, num_test=num_test, image_size=image_size,
        captions_per_image=captions_per_image, heldout_fraction=heldout_fraction,
        seed=seed, version=TOYBIRDS_VERSION,
    )  # fmt: skip
    path = Path(cache_dir) / f"toybirds-{_config_key(**config)}.npz"
    if not path.exists():
        splits = toybirds.make_toybirds(
            num_train, num_test, seed=seed, image_size=image_size,
            captions_per_image=captions_per_image, heldout_fraction=heldout_fraction,
        )  # fmt: skip
        arrays = {}
        for name, split in splits.items():
            arrays[f"{name}/images"] = split.images
            arrays[f"{name}/attributes"] = split.attributes
            arrays[f"{name}/mentions"] = split.mentions
            arrays[f"{name}/captions"] = np.array(split.captions, dtype=str).reshape(
                len(split.images), captions_per_image
            )
        atomic_save_npz(path, **arrays)
    with np.load(path, allow_pickle=False) as store:
        return {
            name: CaptionedImages(
                images=store[f"{name}/images"],
                captions=store[f"{name}/captions"].tolist(),
                attributes=store[f"{name}/attributes"],
                mentions=store[f"{name}/mentions"],
            )
            for name in ("train", "test")
        }


def load_prepared(layout: str, *, cache_dir: str | Path, random_flip: bool, progress: bool = True,
                  **options) -> dict[str, CaptionedImages]:  # fmt: skip
    """A real dataset in layout `layout`, prepared once (see t2igan.data.prepared.prepare)."""
    prepared = prepare(layout, cache_dir=cache_dir, progress=progress, **options)
    print(f"{format_report(prepared.report)}\n  prepared images: {prepared.path}")
    crop_size = options["image_size"] if options["random_crop"] else None
    return {
        "train": CaptionedImages(prepared.images["train"], prepared.captions["train"],
                                 crop_size=crop_size, random_flip=random_flip),
        "test": CaptionedImages(prepared.images["test"], prepared.captions["test"]),
    }  # fmt: skip


DATASETS = {"toybirds": load_toybirds} | {
    layout: functools.partial(load_prepared, layout) for layout in LAYOUTS
}


def load_dataset(name: str, *, cache_dir: str | Path, progress: bool = True,
                 **options) -> dict[str, CaptionedImages]:  # fmt: skip
    """The `train` and `test` splits of dataset `name`, with `options` from its config."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if name != "toybirds":
        options["progress"] = progress
    try:
        return DATASETS[name](cache_dir=cache_dir, **options)
    except ValueError as error:  # the dataset's own argument checks
        raise DatasetError(f"data={name}: {error}") from error
