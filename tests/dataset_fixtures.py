"""Tiny datasets in the real layouts (CUB, Oxford-102, COCO, the seed's, captioned folders),
each with deliberately broken files, written by the tests into a temporary folder."""

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CAPTIONS = [f"a small bird with a {colour} crown and {shade} wings" for colour, shade in
            zip(["red", "blue", "green", "yellow", "white", "black", "brown", "grey", "orange", "pink"],
                ["dark", "light", "long", "short", "striped", "spotted", "plain", "pale", "bright", "dull"])]  # fmt: skip


def picture(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A random RGB picture with a distinct flat colour per seed (width x height)."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(30, 220, 3)
    pixels = np.clip(colour + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def write_captions(path: Path, count: int = 10, offset: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(CAPTIONS[(offset + i) % len(CAPTIONS)] for i in range(count)) + "\n")


def truncated_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(seed, (64, 64)).save(path, "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def save_in_mode(image: Image.Image, path: Path, mode: str) -> None:
    """Save `image` converted to one of the modes users' folders contain."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        levels = (np.asarray(image.convert("L"), np.uint16) * 257).astype(np.uint16)
        Image.fromarray(levels).save(path)  # uint16 -> mode I;16
    elif mode == "P":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    elif mode == "CMYK":
        image.convert("CMYK").save(path, "JPEG")
    else:
        image.convert(mode).save(path)


def source_state(root: Path) -> str:
    """A hash of every file's path, bytes and modification time under `root`."""
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{stat.st_mtime_ns}".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def make_cub(root: Path, *, train: int = 6, test: int = 3) -> Path:
    """`root/birds` in the StackGAN/AttnGAN layout, plus broken files (see BROKEN_CUB)."""
    birds = root / "birds"
    cub = birds / "CUB_200_2011"
    classes = {"train": "001.Black_footed_Albatross", "test": "002.Laysan_Albatross"}
    index, boxes, names = [], [], {"train": [], "test": []}
    image_id = 0
    for split, count in (("train", train + 4), ("test", test)):
        for i in range(count):
            image_id += 1
            key = f"{classes[split]}/{classes[split].split('.')[1]}_{i:04d}_{image_id}"
            index.append(f"{image_id} {key}.jpg")
            boxes.append(f"{image_id} 10.0 8.0 20.0 16.0")
            names[split].append(key)
            image_path = cub / "images" / f"{key}.jpg"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            picture(image_id).save(image_path, "JPEG", quality=95)
            write_captions(birds / "text" / f"{key}.txt", offset=image_id)
    # The last four train images are broken, one way each.
    broken = names["train"][-4:]
    truncated_jpeg(cub / "images" / f"{broken[0]}.jpg", 99)
    (cub / "images" / f"{broken[1]}.jpg").write_bytes(b"")
    (birds / "text" / f"{broken[2]}.txt").write_bytes(b"\xff\xfe not \x80 utf-8\n")
    (birds / "text" / f"{broken[3]}.txt").unlink()
    # Grayscale and CMYK JPEGs are real images: converted, not skipped.
    save_in_mode(picture(1), cub / "images" / f"{names['train'][0]}.jpg", "L")
    save_in_mode(picture(2), cub / "images" / f"{names['train'][1]}.jpg", "CMYK")
    write_captions(birds / "text" / f"{names['train'][2]}.txt", count=3)  # fewer than 10
    (cub / "images.txt").write_text("\n".join(index) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    for split in ("train", "test"):
        (birds / split).mkdir(parents=True)
        with open(birds / split / "filenames.pickle", "wb") as handle:
            pickle.dump(names[split], handle, protocol=2)
    return birds


BROKEN_CUB = {"unreadable image": 2, "caption file not UTF-8": 1, "no caption file": 1}


def make_flowers(root: Path) -> Path:
    """`root/flowers`: jpg/, text_c10/class_*/ and Reed's class split; a palette PNG named
    .jpg and an image without captions."""
    flowers = root / "flowers"
    classes = {"class_00001": "train", "class_00002": "train", "class_00003": "test"}
    number = 0
    for class_name in classes:
        for _ in range(3):
            number += 1
            stem = f"image_{number:05d}"
            picture(number, (50, 60)).save(_mkdir(flowers / "jpg") / f"{stem}.jpg")
            write_captions(flowers / "text_c10" / class_name / f"{stem}.txt", offset=number)
    # A palette PNG behind a .jpg name: decoded by content, not by name.
    picture(100).convert("P", palette=Image.Palette.ADAPTIVE).save(flowers / "jpg" / "image_00002.jpg", "PNG")
    number += 1
    picture(number).save(flowers / "jpg" / f"image_{number:05d}.jpg")  # no caption: skipped
    (flowers / "trainvalclasses.txt").write_text("class_00001\nclass_00002\n")
    (flowers / "testclasses.txt").write_text("class_00003\n")
    return flowers


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_coco(root: Path) -> Path:
    """`root/coco` with captions_train2014.json / captions_val2014.json; one listed image is
    missing on disk and one has no caption."""
    coco = root / "coco"
    for split, count in (("train2014", 5), ("val2014", 3)):
        images, annotations = [], []
        for i in range(count):
            image_id = 100 * (split == "val2014") + i + 1
            file_name = f"COCO_{split}_{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": file_name, "width": 48, "height": 40})
            if not (split == "train2014" and i == 3):  # one image has no caption
                for k in range(5 + (i % 2)):  # COCO has 5 to 7 captions per image
                    annotations.append({"id": len(annotations), "image_id": image_id,
                                        "caption": CAPTIONS[(i + k) % len(CAPTIONS)] + " "})  # fmt: skip
            if not (split == "train2014" and i == 4):  # one listed image is missing
                picture(image_id).save(_mkdir(coco / split) / file_name)
        _mkdir(coco / "annotations")
        (coco / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations})
        )
    return coco


def make_seed(root: Path) -> Path:
    """`root/seed`: images/<class>/ and captions/<class>/, an RGBA PNG, a zero-byte caption
    file and an image without captions."""
    seed = root / "seed"
    for c, class_name in enumerate(["cardinal", "jay"]):
        for i in range(10):
            picture(10 * c + i).save(_mkdir(seed / "images" / class_name) / f"bird_{i}.jpg")
            write_captions(seed / "captions" / class_name / f"bird_{i}.txt", count=2, offset=i)
    save_in_mode(picture(50), seed / "images" / "jay" / "bird_9.png", "RGBA")
    (seed / "images" / "jay" / "bird_9.jpg").unlink()
    (seed / "captions" / "jay" / "bird_8.txt").write_bytes(b"")
    picture(60).save(seed / "images" / "jay" / "uncaptioned.jpg")
    return seed


def make_folder(root: Path, convention: str) -> Path:
    """`root/folder` captioned by metadata.jsonl ("jsonl") or by .txt files ("txt")."""
    folder = _mkdir(root / "folder")
    records = []
    for i in range(12):
        picture(i).save(folder / f"photo_{i:02d}.png")
        text = CAPTIONS[i % 10] if i % 2 else [CAPTIONS[i % 10], CAPTIONS[(i + 1) % 10]]
        if convention == "txt":
            write_captions(folder / f"photo_{i:02d}.txt", count=1 + i % 2, offset=i)
        else:
            records.append(json.dumps({"file_name": f"photo_{i:02d}.png", "text": text}))
    if convention == "jsonl":
        records += ["{not json", json.dumps({"file_name": "gone.png", "text": "a missing image"})]
        (folder / "metadata.jsonl").write_text("\n".join(records) + "\n")
    save_in_mode(picture(70), folder / "photo_11.png", "I;16")
    return folder
