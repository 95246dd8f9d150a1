"""The on-disk layouts users already have, read into train/test `Listing`s.

- `cub`: StackGAN / AttnGAN / DF-GAN's `birds/` folder (CUB-200-2011 + Reed et al. captions);
- `flowers`: Oxford-102 `jpg/` + Reed et al.'s `text_c10/`;
- `coco`: COCO `annotations/captions_<split>.json` + image folders;
- `seed`: class folders of images and of caption files, as Keras' `image_dataset_from_directory`
  and `text_dataset_from_directory` read them;
- `folder`: any folder of images with `metadata.jsonl` or a `.txt` caption beside each image.
Every function takes the dataset root and its config's layout options, reads only small files,
and never writes anything under the root.
"""

import json
from pathlib import Path

from t2igan.data.listing import (
    DatasetError, Entry, Listing, Skips, image_files, in_test_split, read_captions,
    read_name_list, require, split_hash,
)  # fmt: skip

SPLITS = ("train", "test")


def _split_file_names(root: Path, layout: str, split_files: dict | None) -> dict[str, list[str]] | None:
    """Names per split from `split_files` ({train: path, test: path}, relative to root), else
    from `<root>/<split>/filenames.{pickle,txt}`; None if neither is there."""
    if split_files:
        if set(split_files) != set(SPLITS):
            raise DatasetError(f"{layout}: split_files needs exactly 'train' and 'test' entries")
        return {split: read_name_list(require(root / split_files[split], f"the {split} split file", layout))
                for split in SPLITS}  # fmt: skip
    found = {}
    for split in SPLITS:
        for candidate in (root / split / "filenames.pickle", root / split / "filenames.txt"):
            if candidate.exists():
                found[split] = read_name_list(candidate)
                break
    return found if len(found) == 2 else None


def _class_split(root: Path) -> dict[str, set[str]] | None:
    """Reed et al.'s class split (`trainvalclasses.txt`, `testclasses.txt`), if present."""
    files = {"train": root / "trainvalclasses.txt", "test": root / "testclasses.txt"}
    if not all(path.exists() for path in files.values()):
        return None
    return {split: set(read_name_list(path)) for split, path in files.items()}


def _no_split(layout: str, root: Path) -> DatasetError:
    return DatasetError(
        f"{layout}: no train/test split under {root}: expected train/filenames.pickle and "
        "test/filenames.pickle (StackGAN/AttnGAN's split), trainvalclasses.txt and testclasses.txt "
        "(Reed et al.'s), or data.split_files={train: <file>, test: <file>} with one name per line"
    )


def _strip_suffix(name: str) -> str:
    name = name.replace("\\", "/").strip("/")
    return name.rsplit(".", 1)[0] if Path(name).suffix.lower() in (".jpg", ".jpeg", ".png") else name


def list_cub(root: Path, *, text_dir: str | None = None, split_files: dict | None = None,
             need_boxes: bool = True) -> Listing:  # fmt: skip
    """`root` is the `birds/` folder: CUB_200_2011/{images/, images.txt, bounding_boxes.txt},
    text/<class>/<image>.txt (or text_c10/) and {train,test}/filenames.pickle."""
    layout = "data=cub"
    if not (root / "CUB_200_2011").is_dir() and (root / "images.txt").exists():
        raise DatasetError(f"{layout}: {root} looks like CUB_200_2011 itself; set data.root to "
                           f"its parent folder {root.parent} (which also holds text/ and the splits)")  # fmt: skip
    cub = require(root / "CUB_200_2011", "the CUB_200_2011/ folder", layout)
    index = require(cub / "images.txt", "CUB's images.txt", layout)
    captions_root = _caption_folder(root, text_dir, ("text", "text_c10"), layout)
    paths = {image_id: relative for image_id, relative in _numbered_lines(index, 1, layout)}
    boxes = {}
    if need_boxes:
        box_file = require(cub / "bounding_boxes.txt", "CUB's bounding_boxes.txt (or set data.crop=center)", layout)
        for image_id, values in _numbered_lines(box_file, 4, layout):
            try:
                boxes[paths.get(image_id)] = tuple(float(value) for value in values.split())
            except ValueError:
                raise DatasetError(f"{layout}: {box_file}: {image_id} {values!r} is not 'id x y w h'") from None
    by_key = {_strip_suffix(relative): relative for relative in paths.values()}

    names = _split_file_names(root, layout, split_files)
    if names is None:
        classes = _class_split(root)
        if classes is None:
            raise _no_split(layout, root)
        names = {split: [key for key in by_key if key.split("/")[0] in classes[split]] for split in SPLITS}
    skips = Skips()
    splits = {}
    for split in SPLITS:
        entries = []
        for key in map(_strip_suffix, names[split]):
            relative = by_key.get(key)
            if relative is None:
                skips.add("split entry not in images.txt", key)
                continue
            image = cub / "images" / relative
            if not image.is_file():
                skips.add("missing image file", f"images/{relative}")
                continue
            caption_file = captions_root / f"{key}.txt"
            if not caption_file.is_file():
                skips.add("no caption file", f"{captions_root.name}/{key}.txt")
                continue
            captions = read_captions(caption_file, f"{captions_root.name}/{key}.txt", skips)
            if captions:
                entries.append(Entry(f"images/{relative}", image, tuple(captions), boxes.get(relative)))
        splits[split] = entries
    return Listing(splits, skips)


def _numbered_lines(path: Path, fields: int, layout: str):
    """(id, rest) for each `id rest...` line of a CUB index file whose rest has `fields` fields."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{layout}: cannot read {path}: {error}") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != fields + 1:
            raise DatasetError(f"{layout}: {path} line {number} should be an id and {fields} field(s): {line!r}")
        yield parts[0], " ".join(parts[1:])


def _caption_folder(root: Path, configured: str | None, candidates: tuple[str, ...], layout: str) -> Path:
    if configured:
        return require(root / configured, "the caption folder (data.text_dir)", layout)
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"{layout}: expected a caption folder {' or '.join(candidates)}/ under {root} "
                       "(one <class>/<image>.txt per image)")  # fmt: skip


def list_flowers(root: Path, *, text_dir: str | None = None, split_files: dict | None = None) -> Listing:
    """`root` holds jpg/image_XXXXX.jpg, text_c10/class_XXXXX/image_XXXXX.txt and a split:
    {train,test}/filenames.pickle or Reed's trainvalclasses.txt / testclasses.txt."""
    layout = "data=flowers"
    images = require(root / "jpg", "the Oxford-102 jpg/ folder", layout)
    captions_root = _caption_folder(root, text_dir, ("text_c10", "text"), layout)
    caption_files = {path.stem: path for path in sorted(captions_root.glob("*/*.txt"))}
    image_paths = {path.stem: path for path in image_files(images)}
    names = _split_file_names(root, layout, split_files)
    if names is not None:
        keys = {split: [Path(_strip_suffix(name)).name for name in names[split]] for split in SPLITS}
    else:
        classes = _class_split(root)
        if classes is None:
            raise _no_split(layout, root)
        keys = {split: [stem for stem, path in caption_files.items() if path.parent.name in classes[split]]
                for split in SPLITS}  # fmt: skip
    skips = Skips()
    splits = {}
    for split in SPLITS:
        entries = []
        for key in keys[split]:
            image = image_paths.get(key)
            if image is None:
                skips.add("missing image file", f"jpg/{key}.jpg")
                continue
            caption_file = caption_files.get(key)
            if caption_file is None:
                skips.add("no caption file", f"{captions_root.name}/*/{key}.txt")
                continue
            name = caption_file.relative_to(root).as_posix()
            captions = read_captions(caption_file, name, skips)
            if captions:
                entries.append(Entry(image.relative_to(root).as_posix(), image, tuple(captions)))
        splits[split] = entries
    return Listing(splits, skips)


def list_coco(root: Path, *, train_split: str = "train2014", test_split: str = "val2014") -> Listing:
    """`root` holds annotations/captions_<split>.json and the images of each split in
    <split>/ or images/<split>/ (train2014 and val2014 by default, as AttnGAN and DF-GAN)."""
    layout = "data=coco"
    skips = Skips()
    splits = {}
    for split, name in zip(SPLITS, (train_split, test_split)):
        annotations = require(root / "annotations" / f"captions_{name}.json",
                              f"COCO's captions_{name}.json", layout)  # fmt: skip
        # The official unzip (train2014/), or AttnGAN / DF-GAN's images/ folder (per split, or flat).
        folder = next((p for p in (root / name, root / "images" / name, root / "images") if p.is_dir()), None)
        if folder is None:
            raise DatasetError(f"{layout}: expected the {name} images in {root / name}/ or "
                               f"{root / 'images' / name}/")  # fmt: skip
        try:
            content = json.loads(annotations.read_bytes())
            files = {image["id"]: image["file_name"] for image in content["images"]}
            captions: dict[int, list[str]] = {}
            for annotation in content["annotations"]:
                caption = annotation["caption"]
                caption = " ".join(caption.split()) if isinstance(caption, str) else ""
                if caption:
                    captions.setdefault(annotation["image_id"], []).append(caption)
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise DatasetError(f"{layout}: {annotations} is not a COCO captions file "
                               f"({type(error).__name__}: {error})") from error  # fmt: skip
        entries = []
        for image_id, file_name in sorted(files.items(), key=lambda item: str(item[0])):
            if not isinstance(file_name, str) or not file_name:
                skips.add("image entry without a file name", f"captions_{name}.json id {image_id}")
                continue
            image = folder / file_name
            if image_id not in captions:
                skips.add("no caption", f"{name}/{file_name}")
            elif not image.is_file():
                skips.add("missing image file", f"{name}/{file_name}")
            else:
                entries.append(Entry(f"{name}/{file_name}", image, tuple(captions[image_id])))
        splits[split] = entries
    return Listing(splits, skips)


def _fraction_or_file_split(root: Path, entries: list[Entry], *, test_fraction: float,
                            split_file: str | None, layout: str, skips: Skips) -> dict[str, list[Entry]]:  # fmt: skip
    """Test entries are those named in `split_file` (paths relative to root), else a stable
    `test_fraction` chosen by hashing each name."""
    if split_file:
        test_names = set(read_name_list(require(root / split_file, "the split file (data.split_file)", layout)))
        is_test = [entry.name in test_names for entry in entries]
        for name in sorted(test_names - {entry.name for entry in entries}):
            skips.add(f"name in {split_file} matches no captioned image", name)
    else:
        is_test = [in_test_split(entry.name, test_fraction) for entry in entries]
        if len(entries) > 1 and not any(is_test):
            # A small folder: still hold out one image (the lowest hash), for the sample grids.
            is_test[min(range(len(entries)), key=lambda i: split_hash(entries[i].name))] = True
    return {"train": [e for e, test in zip(entries, is_test) if not test],
            "test": [e for e, test in zip(entries, is_test) if test]}  # fmt: skip


def list_seed(root: Path, *, image_dir: str = "images", caption_dir: str = "captions",
              test_fraction: float = 0.1, split_file: str | None = None) -> Listing:  # fmt: skip
    """`root/<image_dir>/<class>/<name>.<ext>` with its captions (one per line) in
    `root/<caption_dir>/<class>/<name>.txt`."""
    layout = "data=seed"
    images_root = require(root / image_dir, f"the image class folders ({image_dir}/<class>/)", layout)
    captions_root = require(root / caption_dir, f"the caption class folders ({caption_dir}/<class>/)", layout)
    skips = Skips()
    entries = []
    for image in image_files(images_root):
        relative = image.relative_to(images_root)
        name = f"{image_dir}/{relative.as_posix()}"
        caption_file = captions_root / relative.with_suffix(".txt")
        if not caption_file.is_file():
            skips.add("no caption file", name)
            continue
        captions = read_captions(caption_file, f"{caption_dir}/{relative.with_suffix('.txt').as_posix()}", skips)
        if captions:
            entries.append(Entry(name, image, tuple(captions)))
    splits = _fraction_or_file_split(root, entries, test_fraction=test_fraction, split_file=split_file,
                                     layout=layout, skips=skips)  # fmt: skip
    return Listing(splits, skips)


def _captioned_images(folder: Path, root: Path, skips: Skips) -> list[Entry]:
    """The captioned images of one folder: from its metadata.jsonl, or from .txt files."""
    metadata = folder / "metadata.jsonl"
    named = {}
    if metadata.exists():
        try:
            lines = metadata.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DatasetError(f"data=folder: cannot read {metadata}: {error}") from error
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                file_name, text = record["file_name"], record["text"]
            except (ValueError, KeyError, TypeError, RecursionError):
                skips.add("bad metadata.jsonl line", f"{metadata.relative_to(root).as_posix()}:{number}")
                continue
            texts = [text] if isinstance(text, str) else text if isinstance(text, list) else []
            captions = tuple(" ".join(str(t).split()) for t in texts if str(t).strip())
            named[str(file_name).replace("\\", "/")] = captions
    entries = []
    for image in image_files(folder):
        name = image.relative_to(root).as_posix()
        if metadata.exists():
            captions = named.get(image.relative_to(folder).as_posix())
            if captions is None:
                skips.add("not in metadata.jsonl", name)
            elif not captions:
                skips.add("empty caption", name)
            else:
                entries.append(Entry(name, image, captions))
            continue
        caption_file = image.with_suffix(".txt")
        if not caption_file.is_file():
            skips.add("no caption file", name)
            continue
        captions = read_captions(caption_file, caption_file.relative_to(root).as_posix(), skips)
        if captions:
            entries.append(Entry(name, image, tuple(captions)))
    for file_name in named.keys() - {e.image.relative_to(folder).as_posix() for e in entries}:
        if not (folder / file_name).exists():
            skips.add("missing image file", (folder / file_name).relative_to(root).as_posix())
    return entries


def list_folder(root: Path, *, test_fraction: float = 0.1, split_file: str | None = None) -> Listing:
    """Images anywhere under `root`, captioned by `metadata.jsonl` (`file_name`, `text`: a
    string or a list) or by a same-named `.txt` beside each image. With `train/` and `test/`
    subfolders (and no split file) those are the splits."""
    layout = "data=folder"
    skips = Skips()
    if not split_file and (root / "train").is_dir() and (root / "test").is_dir():
        if (root / "metadata.jsonl").exists():  # one file for both, naming train/... and test/...
            entries = _captioned_images(root, root, skips)
            splits = {split: [e for e in entries if e.name.startswith(f"{split}/")] for split in SPLITS}
        else:
            splits = {split: _captioned_images(root / split, root, skips) for split in SPLITS}
    else:
        entries = _captioned_images(root, root, skips)
        splits = _fraction_or_file_split(root, entries, test_fraction=test_fraction,
                                         split_file=split_file, layout=layout, skips=skips)  # fmt: skip
    if not any(splits.values()):
        raise DatasetError(f"{layout}: no captioned images under {root}: expected images with a "
                           "metadata.jsonl (file_name, text) or a .txt caption file beside each")  # fmt: skip
    return Listing(splits, skips)


LAYOUTS = {"cub": list_cub, "flowers": list_flowers, "coco": list_coco, "seed": list_seed, "folder": list_folder}
# What data.root must be, for the one error every layout gives when it is not a folder.
ROOT_HOLDS = {
    "cub": "the birds/ folder that holds CUB_200_2011/, text/ and train/, test/",
    "flowers": "the folder that holds jpg/ and text_c10/",
    "coco": "the folder that holds annotations/ and the image folders",
    "seed": "the folder that holds the image and caption class folders (data.image_dir, data.caption_dir)",
    "folder": "the folder of captioned images",
}


def list_layout(layout: str, root: Path, **options) -> Listing:
    """The listing of dataset `layout` at `root` (see LAYOUTS), with `options` from its config."""
    if not root.is_dir():
        raise DatasetError(f"data={layout}: data.root {root} is not a folder; point it at {ROOT_HOLDS[layout]}")
    return LAYOUTS[layout](root, **options)
