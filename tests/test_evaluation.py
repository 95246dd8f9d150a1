"""Standard metrics: KID, IS, R-precision on known inputs; the Inception loader and resize on
a stand-in graph; the registry end to end; `python -m t2igan.evaluate` on a real checkpoint."""

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inception_standin import build_stand_in
from t2igan.config import EVAL_METRICS
from t2igan.data.toybirds import ATTRIBUTE_NAMES
from t2igan.metrics.inception import InceptionNetwork, InceptionUnavailable, locate_inception, resize_for_inception
from t2igan.metrics.registry import MetricError, parse_metric
from t2igan.metrics.scores import inception_score, kernel_inception_distance, mismatched_captions, r_precision

REPO = Path(__file__).resolve().parents[1]


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    same = kernel_inception_distance(a, b, num_subsets=20, max_subset_size=300)
    small = kernel_inception_distance(a, b + 0.3, num_subsets=20, max_subset_size=300)
    large = kernel_inception_distance(a, b + 1.0, num_subsets=20, max_subset_size=300)
    assert abs(same) < 0.01 and same < small < large and large > 0.1


def test_inception_score_of_uniform_and_of_confident_distinct_predictions():
    assert inception_score(np.zeros((100, 10)), splits=5)[0] == pytest.approx(1.0)
    confident = np.full((1000, 10), -50.0)
    confident[np.arange(1000), np.arange(1000) % 10] = 50.0  # each split: 10 classes, evenly
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std < 1e-6


def test_r_precision_is_one_for_a_perfect_matcher_and_a_hundredth_for_a_random_one():
    rng = np.random.default_rng(0)
    captions = rng.normal(size=(3000, 16))
    mismatched = mismatched_captions(3000, 3000, seed=1)
    assert not (mismatched == np.arange(3000)[:, None]).any()
    assert r_precision(captions + 0.01 * rng.normal(size=captions.shape), captions, mismatched) == 1.0
    chance = r_precision(rng.normal(size=(3000, 16)), captions, mismatched)
    assert 0.004 < chance < 0.02


def test_the_resize_matches_pil_bicubic():
    rng = np.random.default_rng(0)
    for size in (64, 512):  # up- and downsampling
        image = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        ours = np.asarray(resize_for_inception(image[None]))[0]
        pil = np.stack([np.asarray(Image.fromarray(image[..., c]).convert("F").resize((299, 299), Image.BICUBIC))
                        for c in range(3)], axis=-1)  # fmt: skip
        assert np.abs(ours - np.clip(pil, 0, 255)).mean() < 1.5, size


def test_metric_names_fix_their_protocol():
    assert parse_metric("fid50k_test").num_samples == 50_000
    assert parse_metric("kid2000_train").split == "train"
    assert parse_metric("is30k").network == "inception"
    assert parse_metric("fd_judge600_test").network == "judge"
    assert parse_metric("r_precision").network == "matcher"
    for bad in ("fid", "fid50k", "is30k_test", "fid1_test", "psnr10k_test"):
        with pytest.raises(MetricError):
            parse_metric(bad)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    return build_stand_in(tmp_path_factory.mktemp("inception") / "classify_image_graph_def.pb")


def test_the_inception_loader_finds_the_graph_or_says_where_to_put_it(tmp_path, stand_in):
    assert locate_inception(stand_in, tmp_path / "cache", download=False) == stand_in
    archive = tmp_path / "inception-2015-12-05.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(stand_in, arcname="classify_image_graph_def.pb")
    extracted = locate_inception(tmp_path, tmp_path / "cache", download=False)  # a folder with the .tgz
    assert extracted.read_bytes() == Path(stand_in).read_bytes()
    assert locate_inception(None, tmp_path / "cache", download=False) == extracted  # now cached
    with pytest.raises(InceptionUnavailable, match="put inception-2015-12-05.tgz .* in .*empty"):
        locate_inception(None, tmp_path / "empty", download=False)
    (tmp_path / "junk.pb").write_bytes(b"not a graph")
    with pytest.raises(InceptionUnavailable):
        InceptionNetwork(tmp_path / "junk.pb")


def test_inception_features_and_logits_on_the_stand_in_are_per_image(stand_in):
    network = InceptionNetwork(stand_in, batch_size=3)
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    features, logits = network(images)
    assert features.shape == (5, 2048) and logits.shape == (5, 1008)
    alone, _ = network(images[3:4])
    np.testing.assert_allclose(alone[0], features[3], rtol=1e-5, atol=1e-5)


def test_a_metric_suite_scores_a_generator_against_real_images(tmp_path, stand_in):
    from t2igan.data.datasets import CaptionedImages
    from t2igan.metrics.networks import make_networks
    from t2igan.metrics.registry import MetricSuite

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    test = CaptionedImages(real, [[f"caption {i}", f"other {i}"] for i in range(40)])
    networks = make_networks(cache_dir=tmp_path, image_size=32, matcher_file=tmp_path / "none.keras",
                             inception_path=str(stand_in), download=False)  # fmt: skip
    suite = MetricSuite(["fid40_test", "kid40_test", "is40"], splits={"test": test},
                        embed=lambda captions: np.zeros((len(captions), 8), np.float32), noise_dim=4, seed=0,
                        networks=networks, reference_cache=tmp_path / "reference", image_size=32, progress=False)  # fmt: skip
    copies = suite(lambda noise, text: real[: len(noise)] / 127.5 - 1.0)  # the real images themselves
    grey = suite(lambda noise, text: np.zeros((len(noise), 32, 32, 3), np.float32))
    assert copies["eval/fid40_test"] < 1e-3 < grey["eval/fid40_test"]
    assert copies["eval/kid40_test"] < grey["eval/kid40_test"]
    assert {"eval/is40", "eval/is40_std"} <= set(copies)
    assert len(list((tmp_path / "reference").glob("*.npz"))) == 1  # real statistics cached once


def test_a_saved_matcher_loads_as_two_frozen_towers_in_one_space(tmp_path):
    from t2igan.metrics.matcher import build_matcher, encode, encode_texts, load_matcher

    model = build_matcher(32, 12, embedding_dim=8, width=4, augment=("translation",))
    model.save(tmp_path / "matcher.keras")
    matcher = load_matcher(tmp_path / "matcher.keras")
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    texts = np.random.default_rng(1).normal(size=(5, 12)).astype(np.float32)
    pair = np.asarray(model((images.astype(np.float32) / 127.5 - 1.0, texts)))
    image_vectors, text_vectors = encode(matcher, images), encode_texts(matcher, texts)
    assert image_vectors.shape == text_vectors.shape == (5, 8)
    np.testing.assert_allclose(image_vectors, pair[:, :8], atol=1e-5)
    np.testing.assert_allclose(text_vectors, pair[:, 8:], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1.0, atol=1e-5)
    assert not matcher.images.trainable and not matcher.texts.trainable
    # The augmentation is the matcher's training-time view only: the towers never see it.
    augment, floats = matcher.model.get_layer("augment"), images.astype(np.float32) / 127.5 - 1.0
    assert augment.policy == ("translation",)  # saved with the matcher
    np.testing.assert_array_equal(np.asarray(augment(floats, training=False)), floats)
    assert not np.array_equal(np.asarray(augment(floats, training=True)), floats)


@pytest.mark.parametrize("pool", ["average", "flatten"])
def test_the_image_tower_pools_its_last_map_as_asked(pool):
    from t2igan.metrics.matcher import build_image_encoder

    tower = build_image_encoder(32, 8, width=4, pool=pool)
    # width 4 doubles to 16 channels by the 4x4 map: flattened, the projection sees 16 cells of them.
    assert tower.layers[-2].kernel.shape == ((4 * 4 * 16 if pool == "flatten" else 16), 8)
    vectors = np.asarray(tower(np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="pool must be one of"):
        build_image_encoder(32, 8, width=4, pool="max")


def test_zero_shot_accuracy_counts_images_nearest_their_own_values_caption():
    from t2igan.metrics.matcher import zero_shot_accuracy

    rng = np.random.default_rng(0)
    prompts = {"colour": rng.normal(size=(3, 16)), "size": rng.normal(size=(2, 16))}
    attributes = np.stack([rng.integers(0, 3, 200), rng.integers(0, 2, 200)], axis=1)
    # Each image lies near its own colour's caption vector; its size is not in it at all.
    images = prompts["colour"][attributes[:, 0]] + 0.1 * rng.normal(size=(200, 16))
    readings = zero_shot_accuracy(images, prompts, attributes)
    assert readings["colour"] == 1.0
    assert 0.3 < readings["size"] < 0.7  # chance: 1/2
    # The wrong value's caption nearest reads 0.
    assert zero_shot_accuracy(images, {"colour": prompts["colour"]}, (attributes + 1) % 3)["colour"] == 0.0


def run_module(root: Path, module: str, *arguments: str) -> subprocess.CompletedProcess:
    environment = {"T2IGAN_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", module, *arguments], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.xdist_group("judge")  # beside test_judge.py, so the protocol judge trains once
def test_training_logs_standard_metrics_and_evaluate_scores_the_checkpoint(tmp_path, stand_in, protocol_judge):
    from mlflow.tracking import MlflowClient

    # A toybirds run evaluates with the judge too: the session's, not a second one trained here.
    shutil.copytree(protocol_judge[0], tmp_path / "cache" / "judge")

    # A toybirds run with 120 test images (R-precision ranks among 99 others) and a matcher.
    data = ["experiment=smoke", "trainer.progress=false", "data.num_train=128", "data.num_test=120",
            "metrics.matcher_epochs=1", "tracking.log_model=false"]  # fmt: skip
    matcher = run_module(tmp_path, "t2igan.train_matcher", *data)
    assert "real test images' R-precision" in matcher.stdout
    readings = re.search(r"attributes zero-shot at (.*)", matcher.stdout).group(1)  # toybirds: one per attribute
    assert [pair.split()[0] for pair in readings.split(", ")] == list(ATTRIBUTE_NAMES)
    run_module(tmp_path, "t2igan.train", *data, f"metrics.inception_path={stand_in}", "trainer.eval_every=2",
               "metrics.names=[fid50_test,r_precision]", "trainer.objective=eval/fid50_test")  # fmt: skip
    (folder,) = (tmp_path / "runs").iterdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("t2igan").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/fid50_test")] == [2, 4]
    assert 0.0 <= run.data.metrics["eval/r_precision"] <= 1.0

    logged = client.get_run(run.info.run_id).data.metrics
    result = run_module(tmp_path, "t2igan.evaluate", f"checkpoint={folder}", "metrics=[kid50_test,is50,judge]",
                        f"inception_path={stand_in}", "progress=false")  # fmt: skip
    report = json.loads((folder / "metrics-step4.json").read_text())
    judged = {name.removeprefix("eval/") for name in logged if name.startswith(EVAL_METRICS)}  # the judge's, by attribute too
    assert set(report["metrics"]) == {"kid50_test", "is50", "is50_std"} | judged and report["step"] == 4
    # The run's final generator, re-read on the same captions and noises as its last evaluation.
    for name in ("attr_acc", "diversity", "fd_judge"):
        assert report["metrics"][name] == pytest.approx(logged[f"eval/{name}"], rel=1e-3), name
    assert "logged to MLflow run" in result.stdout
    assert "eval/kid50_test" in client.get_run(run.info.run_id).data.metrics


@pytest.mark.slow
def test_the_default_recipe_trains_its_matcher_once_then_reuses_it(tmp_path):
    # The default experiment's recipe in miniature: fusion (reading phrase tokens) + caption
    # matching + mode seeking + the second discriminator on the matcher's features.
    run = ["experiment=smoke", "model=fusion", "balance=matching_critic", "metrics.matcher_epochs=1",
           "trainer.progress=false", "tracking=off"]  # fmt: skip
    first = run_module(tmp_path, "t2igan.train", *run)
    assert "no matcher for this dataset yet; training one" in first.stdout
    (matcher,) = (tmp_path / "cache" / "metrics" / "matcher").glob("toybirds-[0-9a-f]*.keras")
    trained = matcher.stat().st_mtime_ns
    second = run_module(tmp_path, "t2igan.train", *run, "trainer.resume=false")
    assert "training one" not in second.stdout and matcher.stat().st_mtime_ns == trained
    from t2igan.checkpoint import read_header

    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2  # resume=false started the second run in a new folder
    headers = [read_header(folder / "checkpoint.npz") for folder in folders]
    assert [header["step"] for header in headers] == [4, 4]
    assert {header["config"]["matcher"] for header in headers} == {matcher.name}


@pytest.mark.slow
def test_phrase_matching_trains_its_phrase_matcher_once_then_reuses_it(tmp_path):
    run = ["experiment=smoke", "model=fusion", "balance=matching", "balance.phrase_matching_weight=1",
           "metrics.matcher_epochs=1", "metrics.phrase_matcher_epochs=1", "trainer.progress=false", "tracking=off"]
    first = run_module(tmp_path, "t2igan.train", *run)
    assert "no phrase matcher for these settings yet; training one" in first.stdout
    assert re.search(r"own captions above their colour-rotated versions \d+% of the time", first.stdout)
    (phrase_matcher,) = (tmp_path / "cache" / "metrics" / "matcher").glob("toybirds-phrases-*.keras")
    trained = phrase_matcher.stat().st_mtime_ns
    second = run_module(tmp_path, "t2igan.train", *run, "trainer.resume=false")
    assert "training one" not in second.stdout and phrase_matcher.stat().st_mtime_ns == trained
    from t2igan.checkpoint import read_header

    for folder in (tmp_path / "runs").iterdir():  # the run records which phrase matcher G trained against
        assert read_header(folder / "checkpoint.npz")["config"]["phrase_matcher"] == phrase_matcher.name


def test_a_checkpoint_is_judged_with_its_own_settings_or_todays_defaults_where_it_has_none():
    from t2igan.evaluate import metrics_config

    paths = {"root": "/r", "cache": "/r/cache", "runs": "/r/runs"}
    before_stop_34 = {"paths": paths, "metrics": {"names": [], "batch_size": 64}}
    merged = metrics_config(before_stop_34, {"batch_size": 32})
    assert [merged[key] for key in ("judge_diversity_captions", "judge_diversity_noises", "judge_eval_seed")] == [128, 16, 0]
    assert merged["batch_size"] == 32 and merged["cache_dir"] == "/r/cache/metrics"
    own = metrics_config({"paths": paths, "metrics": {"judge_diversity_captions": 16, "judge_eval_seed": None}}, {})
    assert own["judge_diversity_captions"] == 16 and own["judge_eval_seed"] is None
