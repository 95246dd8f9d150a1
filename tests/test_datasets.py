"""Real dataset layouts on tiny generated fixtures: listing, decoding, skipping, caching."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dataset_fixtures as fixtures
from t2igan.data import prepared as prepared_module
from t2igan.data.decode import UnreadableImage, bird_crop_box, load_square
from t2igan.data.listing import DatasetError, read_name_list
from t2igan.data.prepared import prepare

REPO = Path(__file__).resolve().parents[1]


def prepare_quietly(layout: str, root: Path, cache: Path, **options):
    settings = dict(image_size=32, captions_per_image=5, crop="center", random_crop=True, progress=False)
    return prepare(layout, root=root, cache_dir=cache, **(settings | options))


def run_module(tmp_path: Path, module: str, *arguments: str) -> subprocess.CompletedProcess:
    environment = {"T2IGAN_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
                   "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", module, *arguments], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16", "LA", "1"])
def test_every_image_mode_becomes_rgb_uint8(tmp_path, mode):
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")
    fixtures.save_in_mode(fixtures.picture(3), path, mode)
    image = load_square(path, 16)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    if mode in ("L", "I;16", "LA"):  # grey stays grey, at the same level (16-bit is scaled)
        grey_level = np.asarray(fixtures.picture(3).convert("L")).mean()
        assert np.array_equal(image[..., 0], image[..., 2])
        assert abs(image.mean() - grey_level) < 4
    elif mode != "1":  # each channel keeps its level: not swapped, clipped or inverted
        source = np.asarray(fixtures.picture(3).resize((16, 16), Image.BICUBIC), np.float64)
        tolerance = 25 if mode in ("CMYK", "P") else 3  # JPEG and a 256-colour palette are lossy
        assert np.abs(image.mean(axis=(0, 1)) - source.mean(axis=(0, 1))).max() < tolerance


def test_transparent_pixels_become_white_and_sixteen_bit_keeps_its_levels(tmp_path):
    Image.new("RGBA", (8, 8), (200, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (load_square(tmp_path / "clear.png", 8) == 255).all()
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(tmp_path / "grey16.png")  # 128 * 257
    assert (load_square(tmp_path / "grey16.png", 8) == 128).all()


@pytest.mark.parametrize("broken", ["truncated", "empty", "text"])
def test_broken_files_are_unreadable_images(tmp_path, broken):
    path = tmp_path / "broken.jpg"
    if broken == "truncated":
        fixtures.truncated_jpeg(path, 0)
    elif broken == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("not an image")
    with pytest.raises(UnreadableImage):
        load_square(path, 8)


@pytest.mark.parametrize("crop", ["center", "none", "bbox"])
def test_large_jpegs_decoded_at_reduced_size_have_no_dark_edges(tmp_path, crop):
    # The JPEG decoder's reduced-size draft must not shift the crop off the decoded image.
    for width, height in ((405, 400), (519, 377), (333, 498)):
        Image.new("RGB", (width, height), (200, 200, 200)).save(tmp_path / "flat.jpg", quality=95)
        box = (width * 0.3, height * 0.2, width * 0.3, height * 0.4)
        image = load_square(tmp_path / "flat.jpg", 76, crop=crop, box=box)
        assert image.min() >= 190, (width, height)


def test_exif_orientation_is_applied_after_the_crop(tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (255, 0, 0)  # left half red, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    Image.fromarray(pixels).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    upright = load_square(tmp_path / "turned.jpg", 20, crop="none")
    assert upright[2, 10, 0] > 200 and upright[-3, 10, 0] < 50  # the red half is now on top


def test_bird_crop_is_stackgans_square_around_the_box():
    # Box (x=10, y=20, w=40, h=20): radius 0.75 * 40 = 30 around its centre (30, 30).
    assert bird_crop_box(200, 200, (10, 20, 40, 20)) == (0, 0, 60, 60)
    assert bird_crop_box(200, 200, (100, 100, 40, 20)) == (90, 80, 150, 140)
    assert bird_crop_box(120, 130, (100, 100, 40, 20)) == (90, 80, 120, 130)  # clipped to the image


def test_bbox_crop_shows_the_box_region(tmp_path):
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[40:60, 40:60] = 255  # a white box in the middle, where the bounding box says
    Image.fromarray(pixels).save(tmp_path / "bird.png")
    cropped = load_square(tmp_path / "bird.png", 30, crop="bbox", box=(40, 40, 20, 20))
    whole = load_square(tmp_path / "bird.png", 30, crop="center")
    assert cropped.mean() > 3 * whole.mean()  # the box fills 1/2.25 of the crop, 1/25 of the image


# --- split files ------------------------------------------------------------------------------


def test_split_pickles_load_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "evil.pickle").write_bytes(pickle.dumps([Exploit()]))
    with pytest.raises(DatasetError, match="not a pickled list of file names"):
        read_name_list(tmp_path / "evil.pickle")
    assert not marker.exists()
    (tmp_path / "dict.pickle").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DatasetError, match="list of strings"):
        read_name_list(tmp_path / "dict.pickle")


def test_python2_split_pickles_and_text_split_files_are_read(tmp_path):
    # Protocol 2 as Python 2 wrote StackGAN's files: a list of byte strings (SHORT_BINSTRING).
    (tmp_path / "py2.pickle").write_bytes(b"\x80\x02]q\x00(U\x05a/b_1q\x01U\x05c/d_2q\x02e.")
    assert read_name_list(tmp_path / "py2.pickle") == ["a/b_1", "c/d_2"]
    (tmp_path / "split.txt").write_text("# test images\na/b_1\n\nc/d_2\n")
    assert read_name_list(tmp_path / "split.txt") == ["a/b_1", "c/d_2"]


# --- layouts ------------------------------------------------------------------------------------


def test_cub_layout_is_prepared_with_crops_and_skips_counted(tmp_path):
    birds = fixtures.make_cub(tmp_path)
    before = fixtures.source_state(birds)
    result = prepare_quietly("cub", birds, tmp_path / "cache", crop="bbox", captions_per_image=10)
    assert result.images["train"].shape == (6, 38, 38, 3)  # 32 * 76/64 for random crops
    assert result.images["test"].shape == (3, 32, 32, 3)
    assert {reason: found["count"] for reason, found in result.report["skipped"].items()} == fixtures.BROKEN_CUB
    assert result.report["notes"]["fewer than 10 captions (repeated in turn)"]["count"] == 1
    assert all(len(captions) == 10 for captions in result.captions["train"])
    assert len(set(result.captions["train"][2])) == 3  # three captions, repeated in turn
    assert fixtures.source_state(birds) == before  # nothing in the source was touched


def test_flowers_layout_with_reeds_class_split(tmp_path):
    result = prepare_quietly("flowers", fixtures.make_flowers(tmp_path), tmp_path / "cache")
    assert result.report["images"] == {"train": 6, "test": 3}
    assert result.report["skipped"] == {}  # the uncaptioned image is in no class: not listed


def test_coco_layout_reads_caption_json(tmp_path):
    result = prepare_quietly("coco", fixtures.make_coco(tmp_path), tmp_path / "cache")
    assert result.report["images"] == {"train": 3, "test": 3}
    assert {r: f["count"] for r, f in result.report["skipped"].items()} == {"missing image file": 1,
                                                                            "no caption": 1}  # fmt: skip
    assert result.captions["test"][0][0].endswith("wings")  # whitespace normalised


def test_seed_layout_pairs_class_folders(tmp_path):
    seed = fixtures.make_seed(tmp_path)
    result = prepare_quietly("seed", seed, tmp_path / "cache", test_fraction=0.25)
    assert sum(result.report["images"].values()) == 19  # 21 images, 2 without usable captions
    assert {r: f["count"] for r, f in result.report["skipped"].items()} == {"empty caption file": 1,
                                                                            "no caption file": 1}  # fmt: skip
    assert result.report["images"]["test"] >= 1
    (seed / "test.txt").write_text("images/cardinal/bird_0.jpg\nimages/jay/bird_9.png\n")
    by_file = prepare_quietly("seed", seed, tmp_path / "cache", split_file="test.txt")
    assert by_file.report["images"] == {"train": 17, "test": 2}
    assert (by_file.images["test"][1] > 0).all()  # the RGBA PNG, composited


@pytest.mark.parametrize("convention", ["jsonl", "txt"])
def test_folder_layout_in_both_conventions(tmp_path, convention):
    folder = fixtures.make_folder(tmp_path, convention)
    result = prepare_quietly("folder", folder, tmp_path / "cache", test_fraction=0.25)
    assert sum(result.report["images"].values()) == 12 and result.report["images"]["test"] >= 1
    skipped = {r: f["count"] for r, f in result.report["skipped"].items()}
    assert skipped == ({"bad metadata.jsonl line": 1, "missing image file": 1} if convention == "jsonl" else {})


def test_folder_train_and_test_subfolders_are_the_splits(tmp_path):
    for split, count in (("train", 4), ("test", 2)):
        for i in range(count):
            fixtures.picture(i).save(fixtures._mkdir(tmp_path / split) / f"{i}.png")
            (tmp_path / split / f"{i}.txt").write_text(fixtures.CAPTIONS[i])
    result = prepare_quietly("folder", tmp_path, tmp_path / "cache")
    assert result.report["images"] == {"train": 4, "test": 2}


def test_symlinked_class_folders_are_read_and_loops_end(tmp_path):
    seed = fixtures.make_seed(tmp_path / "real")
    root = tmp_path / "linked"
    (root / "images").mkdir(parents=True)
    (root / "images" / "cardinal").symlink_to(seed / "images" / "cardinal", target_is_directory=True)
    (root / "images" / "cardinal_again").symlink_to(root / "images", target_is_directory=True)  # a loop
    (root / "captions").symlink_to(seed / "captions", target_is_directory=True)
    result = prepare_quietly("seed", root, tmp_path / "cache", test_fraction=0.25)
    assert sum(result.report["images"].values()) == 10  # the cardinal class, once


def test_a_small_folder_still_holds_out_one_test_image(tmp_path):
    for i in range(3):
        fixtures.picture(i).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(fixtures.CAPTIONS[i])
    assert prepare_quietly("folder", tmp_path, tmp_path / "cache").report["images"] == {"train": 2, "test": 1}


# --- the cache ------------------------------------------------------------------------------------


def test_a_prepared_dataset_is_reused_until_its_source_changes(tmp_path, monkeypatch):
    coco = fixtures.make_coco(tmp_path)
    first = prepare_quietly("coco", coco, tmp_path / "cache")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(prepared_module, "load_square", no_decoding)
        again = prepare_quietly("coco", coco, tmp_path / "cache")
    assert again.path == first.path and np.array_equal(again.images["train"], first.images["train"])

    fixtures.picture(77).save(coco / "train2014" / "COCO_train2014_000000000001.jpg")  # edited
    changed = prepare_quietly("coco", coco, tmp_path / "cache")
    assert changed.path != first.path
    assert not np.array_equal(changed.images["train"][0], first.images["train"][0])


# --- errors -----------------------------------------------------------------------------------------


def test_layout_errors_name_what_was_expected_where(tmp_path):
    birds = fixtures.make_cub(tmp_path)
    with pytest.raises(DatasetError, match="looks like CUB_200_2011 itself"):
        prepare_quietly("cub", birds / "CUB_200_2011", tmp_path / "cache")
    for split in ("train", "test"):
        (birds / split / "filenames.pickle").unlink()
    with pytest.raises(DatasetError, match="no train/test split .*train/filenames.pickle"):
        prepare_quietly("cub", birds, tmp_path / "cache")
    with pytest.raises(DatasetError, match="jpg/ folder at .*birds/jpg"):
        prepare_quietly("flowers", birds, tmp_path / "cache")  # CUB is not Oxford-102


@pytest.mark.slow
def test_prepare_command_reports_problems_in_one_line_without_a_traceback(tmp_path):
    result = run_module(tmp_path, "t2igan.prepare", "data=cub", f"data.root={tmp_path}/nowhere")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: data=cub: data.root" in result.stderr and "nowhere is not a folder" in result.stderr


def test_split_file_names_that_match_nothing_are_reported(tmp_path):
    seed = fixtures.make_seed(tmp_path)
    (seed / "test.txt").write_text("images/cardinal/bird_0.jpg\ncardinal/bird_1.jpg\n")  # 2nd: no images/
    result = prepare_quietly("seed", seed, tmp_path / "cache", split_file="test.txt")
    assert result.report["images"]["test"] == 1
    assert result.report["skipped"]["name in test.txt matches no captioned image"]["examples"] == ["cardinal/bird_1.jpg"]


def test_skips_found_by_the_listing_are_reported_fresh_on_a_cache_hit(tmp_path):
    folder = fixtures.make_folder(tmp_path, "jsonl")
    first = prepare_quietly("folder", folder, tmp_path / "cache")
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    (folder / "metadata.jsonl").write_text("\n".join(line for line in lines if line != "{not json") + "\n")
    again = prepare_quietly("folder", folder, tmp_path / "cache")
    assert again.path == first.path  # the same images and captions: no decoding
    assert "bad metadata.jsonl line" in first.report["skipped"]
    assert "bad metadata.jsonl line" not in again.report["skipped"]


def test_malformed_coco_entries_are_skipped_or_one_clear_error(tmp_path):
    coco = fixtures.make_coco(tmp_path)
    path = coco / "annotations" / "captions_train2014.json"
    content = json.loads(path.read_text())
    content["images"].append({"id": "odd", "file_name": None})
    content["annotations"].append({"id": 999, "image_id": 1, "caption": None})
    path.write_text(json.dumps(content))
    result = prepare_quietly("coco", coco, tmp_path / "cache")
    assert result.report["skipped"]["image entry without a file name"]["count"] == 1
    assert all("None" not in caption for captions in result.captions["train"] for caption in captions)
    path.write_text("[" * 100000)
    with pytest.raises(DatasetError, match="not a COCO captions file"):
        prepare_quietly("coco", coco, tmp_path / "cache")


@pytest.mark.slow
def test_the_prepare_command_caches_images_and_caption_embeddings(tmp_path):
    folder = fixtures.make_folder(tmp_path / "source", "txt")
    result = run_module(tmp_path, "t2igan.prepare", "data=folder", f"data.root={folder}", "trainer.progress=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"data=folder ({folder}): 11 train and 1 test images" in result.stdout
    assert len(list((tmp_path / "cache" / "data").glob("folder-*.npz"))) == 1
    assert list((tmp_path / "cache" / "text").glob("*.npz"))


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "model", "counts"), [
    ("cub", "stackgan_stage1", "6 train and 3 test images"),
    ("coco", "fusion", "3 train and 3 test images"),
    ("folder", "stackgan_stage1", "11 train and 1 test images"),
])  # fmt: skip
def test_training_on_a_real_layout_prepares_it_and_trains(tmp_path, layout, model, counts):
    from t2igan.checkpoint import read_header

    make = {"cub": fixtures.make_cub, "coco": fixtures.make_coco,
            "folder": lambda path: fixtures.make_folder(path, "txt")}[layout]  # fmt: skip
    root = make(tmp_path / "source")
    result = run_module(tmp_path, "t2igan.train", "experiment=smoke", "trainer.progress=false", "tracking=off",
                        f"data={layout}", f"data.root={root}", f"model={model}", "trainer.batch_size=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"data={layout} ({root}): {counts}" in result.stdout
    (folder,) = (tmp_path / "runs").iterdir()
    assert read_header(folder / "checkpoint.npz")["step"] == 4
    grid = np.asarray(Image.open(folder / "samples" / "step_0000004.png"))
    assert grid.shape[0] > 64 and grid.std() > 0  # one row per test caption (up to two)
