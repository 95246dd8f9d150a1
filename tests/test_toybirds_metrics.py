"""ToyBirdsEvaluator against fake generators whose right answers are known.

The judge here is an oracle: it knows the true attributes of every real test image by its bytes
and answers pseudo-randomly for anything else, and its features are 8x8 block means of the
pixels. That keeps these tests to seconds and makes every expected value exact; the trained
judge's own accuracy is tested in test_judge.py.
"""

import hashlib

import numpy as np
import pytest

from t2igan.data.datasets import CaptionedImages
from t2igan.data.toybirds import ATTRIBUTE_NAMES, ATTRIBUTES, make_toybirds
from t2igan.metrics.toybirds import (
    ToyBirdsEvaluator,
    mean_pairwise_distance,
    pair_disagreement,
    toybirds_caption_indices,
)

NUM_TEST, CAPTIONS, NOISE_DIM, IMAGE_SIZE = 300, 4, 8, 32
NUM_VALUES = np.array([len(ATTRIBUTES[name]) for name in ATTRIBUTE_NAMES])


class OracleJudge:
    """Reads the true attributes of the split's own images and a fixed random guess for any
    other image; features are 8x8 block means. `calls` counts passes over images."""

    def __init__(self, split: CaptionedImages):
        self.known = {hashlib.sha1(image.tobytes()).digest(): attributes
                      for image, attributes in zip(split.images, split.attributes)}
        self.calls = 0

    def read(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return self._attributes(images), self._features(images)

    def features(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self._features(images)

    def _attributes(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8
        rows = []
        for image in images:
            key = hashlib.sha1(image.tobytes()).digest()
            if key in self.known:
                rows.append(self.known[key])
            else:  # a uniform guess, fixed by the image
                rng = np.random.default_rng(list(key))
                rows.append((rng.random(len(NUM_VALUES)) * NUM_VALUES).astype(np.int32))
        return np.array(rows, np.int32).reshape(len(images), len(NUM_VALUES))

    def _features(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8
        blocks = images.reshape(len(images), IMAGE_SIZE // 8, 8, IMAGE_SIZE // 8, 8, 3)
        return blocks.mean(axis=(2, 4)).reshape(len(images), -1).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def split() -> CaptionedImages:
    test = make_toybirds(1, NUM_TEST, seed=0, image_size=IMAGE_SIZE,
                         captions_per_image=CAPTIONS)["test"]
    return CaptionedImages(test.images, test.captions, test.attributes, test.mentions)


def make_evaluator(split: CaptionedImages, **options) -> ToyBirdsEvaluator:
    # The "embedding" of image i's caption is just i, so fake generators know which image it is.
    embeddings = np.arange(len(split), dtype=np.float32)[:, None]
    indices = toybirds_caption_indices(len(split), CAPTIONS)
    return ToyBirdsEvaluator(OracleJudge(split), split, embeddings, indices,
                             noise_dim=NOISE_DIM, **options)


def as_generated(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 127.5 - 1.0  # uint8 -> [-1, 1], as a generator outputs


def own_image_generator(split: CaptionedImages):
    """Returns the real image of the caption's own test image, whatever the noise."""
    return lambda noise, embeddings: as_generated(split.images[embeddings[:, 0].astype(int)])


def matching_image_generator(split: CaptionedImages, fixed: tuple[str, ...] = ()):
    """Returns a real image, picked by the noise, that has every attribute the caption names
    (and the `fixed` attributes of the caption's own image, named or not)."""
    mentioned = split.mentions[np.arange(len(split)), toybirds_caption_indices(len(split),
                                                                               CAPTIONS)].copy()
    mentioned[:, [ATTRIBUTE_NAMES.index(name) for name in fixed]] = True

    def generate(noise, embeddings):
        picks = []
        for row, image in zip(noise, embeddings[:, 0].astype(int)):
            same = split.attributes[:, mentioned[image]] == split.attributes[image,
                                                                             mentioned[image]]
            pool = np.flatnonzero(same.all(axis=1))
            picks.append(pool[int(abs(row[0]) * 1e6) % len(pool)])
        return as_generated(split.images[picks])

    return generate


def noise_generator(noise, embeddings):
    rng = np.random.default_rng(int(abs(noise[0, 0]) * 1e6))
    return rng.uniform(-1.0, 1.0, (len(noise), IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def test_real_images_score_perfect_attributes_zero_distance_and_zero_diversity(split):
    metrics = make_evaluator(split)(own_image_generator(split))
    assert metrics["eval/attr_acc"] == 1.0
    assert all(metrics[f"eval/attr_acc/{name}"] == 1.0 for name in ATTRIBUTE_NAMES)
    assert metrics["eval/fd_judge"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["eval/diversity"] == 0.0  # one image per caption, whatever the noise


def test_noise_images_score_attributes_at_chance_and_far_in_distance(split):
    evaluator = make_evaluator(split)
    metrics = evaluator(noise_generator)
    assert 0.15 < metrics["eval/attr_acc_chance"] < 0.5
    assert metrics["eval/attr_acc"] == pytest.approx(metrics["eval/attr_acc_chance"], abs=0.05)
    real = evaluator(own_image_generator(split))
    assert metrics["eval/fd_judge"] > 1.0 > 1e3 * real["eval/fd_judge"]


def test_varied_images_of_the_right_attributes_are_diverse_and_correct(split):
    metrics = make_evaluator(split)(matching_image_generator(split))
    assert metrics["eval/attr_acc"] == 1.0
    # Sampling with replacement from small pools of real images repeats some, so below 1.
    assert 0.3 < metrics["eval/diversity"] < 1.5
    per_attribute = [metrics[f"eval/diversity/{name}"] for name in ATTRIBUTE_NAMES]
    assert all(0.3 < value < 1.5 for value in per_attribute if not np.isnan(value)), per_attribute


def test_attribute_diversity_is_zero_for_an_attribute_fixed_per_caption(split):
    metrics = make_evaluator(split)(matching_image_generator(split, fixed=("size",)))
    assert metrics["eval/diversity/size"] == 0.0
    others = [metrics[f"eval/diversity/{name}"] for name in ATTRIBUTE_NAMES if name != "size"]
    assert all(value > 0.3 for value in others if not np.isnan(value)), others
    same_image = make_evaluator(split)(own_image_generator(split))
    values = [same_image[f"eval/diversity/{name}"] for name in ATTRIBUTE_NAMES]
    assert all(value == 0.0 or np.isnan(value) for value in values), values


def test_pair_disagreement_counts_distinct_pairs_that_differ():
    values = np.array([[0, 3], [0, 3], [1, 3], [1, 3]])
    np.testing.assert_allclose(pair_disagreement(values), [4 / 6, 0.0])
    np.testing.assert_allclose(pair_disagreement(np.array([[0], [1]])), [1.0])


def test_chance_level_is_weighted_by_what_the_captions_mention(split):
    mentions = np.zeros_like(split.mentions)
    half = len(split) // 2
    mentions[:half, :, ATTRIBUTE_NAMES.index("size")] = True  # 2 values
    mentions[half:, :, ATTRIBUTE_NAMES.index("crown_color")] = True  # 10 values
    mentions[half:, :, ATTRIBUTE_NAMES.index("background")] = True  # 4 values
    narrowed = CaptionedImages(split.images, split.captions, split.attributes, mentions)
    metrics = make_evaluator(narrowed, diversity_captions=0)(own_image_generator(narrowed))
    expected = (half * 0.5 + (len(split) - half) * (0.1 + 0.25)) / (half + 2 * (len(split) - half))
    assert metrics["eval/attr_acc_chance"] == pytest.approx(expected)
    assert "eval/diversity" not in metrics
    assert np.isnan(metrics["eval/attr_acc/wing_color"])  # never mentioned


def test_noise_is_fixed_per_seed_and_batches_cover_every_image(split):
    seen = []

    def recording_generator(noise, embeddings):
        seen.append((noise.copy(), embeddings[:, 0].astype(int)))
        return own_image_generator(split)(noise, embeddings)

    evaluator = make_evaluator(split, batch_size=64, diversity_captions=5, diversity_noises=4)
    first = evaluator(recording_generator)
    first_noise = np.concatenate([noise for noise, _ in seen])
    seen.clear()
    assert evaluator(recording_generator) == first
    np.testing.assert_array_equal(np.concatenate([noise for noise, _ in seen]), first_noise)
    assert max(len(noise) for noise, _ in seen) == 64
    images = np.concatenate([index for _, index in seen])
    assert len(images) == NUM_TEST + 5 * 4
    np.testing.assert_array_equal(images[:NUM_TEST], np.arange(NUM_TEST))
    assert len(set(images[NUM_TEST:])) == 5
    other_seed = make_evaluator(split, seed=1)
    assert not np.array_equal(other_seed.noise, evaluator.noise)


def test_real_features_are_computed_once(split):
    evaluator = make_evaluator(split)
    calls_after_init = evaluator.judge.calls
    evaluator(own_image_generator(split))
    assert evaluator.judge.calls - calls_after_init == 1  # one pass: predictions and features


def test_wrong_shapes_and_missing_ground_truth_are_rejected(split):
    evaluator = make_evaluator(split, diversity_captions=0)
    with pytest.raises(ValueError, match="shape"):
        evaluator(lambda noise, embeddings: np.zeros((len(noise), 16, 16, 3), np.float32))
    no_truth = CaptionedImages(split.images, split.captions)
    with pytest.raises(ValueError, match="attributes and mentions"):
        ToyBirdsEvaluator(OracleJudge(split), no_truth, np.zeros((NUM_TEST, 1), np.float32),
                          np.zeros(NUM_TEST, int), noise_dim=NOISE_DIM)


def test_mean_pairwise_distance_of_known_points():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert mean_pairwise_distance(points) == pytest.approx((5.0 + 0.0 + 5.0) / 3)


def test_caption_indices_cycle_through_the_captions():
    np.testing.assert_array_equal(toybirds_caption_indices(5, 2), [0, 1, 0, 1, 0])


class NumberingEmbedder:
    """Embeds each distinct caption as its number in order of first use."""

    def __init__(self):
        self.numbers = {}

    def embed(self, captions: list[str]) -> np.ndarray:
        return np.array([[self.numbers.setdefault(caption, len(self.numbers))] for caption in captions], np.float32)


@pytest.mark.parametrize("eval_seed", [0, None])
def test_a_run_is_judged_on_the_captions_and_noises_the_metrics_group_sets(split, monkeypatch, tmp_path, eval_seed):
    """metrics.judge_*: how many captions and noises eval/diversity reads, and the seed that draws
    them and the evaluation's noise: a fixed one scores runs of every seed on the same captions;
    null falls back to the run's seed."""
    from t2igan.metrics import judge as judge_module
    from t2igan.train import judge_evaluation

    monkeypatch.setattr(judge_module, "load_or_train_judge", lambda *args, **kwargs: OracleJudge(split))
    metrics = {"judge_diversity_captions": 5, "judge_diversity_noises": 4, "judge_eval_seed": eval_seed}
    model = {"image_size": IMAGE_SIZE, "noise_dim": NOISE_DIM}

    embedder = NumberingEmbedder()

    def evaluator_of_run(seed: int) -> ToyBirdsEvaluator:
        config = {"seed": seed, "model": model, "metrics": metrics, "paths": {"cache": str(tmp_path)}}
        return judge_evaluation(split, embedder, config, progress=False)

    first, second = evaluator_of_run(seed=1), evaluator_of_run(seed=2)
    assert first.diversity_noise.shape == (5, 4, NOISE_DIM)
    # Image i is scored on its caption i % CAPTIONS, as toybirds_caption_indices cycles them.
    scored = [split.captions[i][i % CAPTIONS] for i in range(NUM_TEST)]
    np.testing.assert_array_equal(first.caption_embeddings, embedder.embed(scored))
    same_draw = np.array_equal(first.diversity_images, second.diversity_images)
    assert same_draw == np.array_equal(first.noise, second.noise) == (eval_seed is not None)
    expected = make_evaluator(split, diversity_captions=5, diversity_noises=4, seed=1 if eval_seed is None else 0)
    np.testing.assert_array_equal(first.diversity_images, expected.diversity_images)
    np.testing.assert_array_equal(first.noise, expected.noise)
