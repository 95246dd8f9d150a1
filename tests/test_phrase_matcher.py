"""The phrase matcher (DAMSM's word level, phrases for words) and G's phrase-matching term."""

import keras
import numpy as np
import pytest

from t2igan.losses import contrastive_losses
from t2igan.metrics.phrase_matcher import (
    PhraseMatcher,
    build_phrase_matcher,
    load_phrase_matcher,
    phrase_region_scores,
    train_phrase_matcher,
)

TEXT_DIM = 6


def numpy_scores(regions, phrases, mask, sharpness):
    """phrase_region_scores written out for one image and one caption."""
    regions = regions / np.linalg.norm(regions, axis=-1, keepdims=True)
    phrases = phrases / np.linalg.norm(phrases, axis=-1, keepdims=True)
    relevances = []
    for phrase in phrases:
        cosines = regions @ phrase
        weights = np.exp(sharpness * cosines) / np.exp(sharpness * cosines).sum()
        mix = weights @ regions
        relevances.append(mix @ phrase / np.linalg.norm(mix))
    return float(np.sum(np.array(relevances) * mask) / mask.sum())


def test_phrase_region_scores_follow_damsms_attention_and_ignore_padding():
    rng = np.random.default_rng(0)
    regions = rng.standard_normal((3, 5, 4)).astype("float32")  # 3 images, 5 regions
    phrases = rng.standard_normal((2, 3, 4)).astype("float32")  # 2 captions, 3 phrases
    mask = np.array([[1, 1, 1], [1, 1, 0]], "float32")  # the second caption's last phrase is padding
    scores = keras.ops.convert_to_numpy(phrase_region_scores(regions, phrases, mask, sharpness=5.0))
    expected = [[numpy_scores(regions[i], phrases[t], mask[t], 5.0) for t in range(2)] for i in range(3)]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    changed = phrases.copy()
    changed[1, 2] = 7.0  # padding does not count, whatever it holds
    np.testing.assert_allclose(keras.ops.convert_to_numpy(phrase_region_scores(regions, changed, mask, sharpness=5.0)),
                               scores, rtol=1e-6)  # fmt: skip
    diagonal = phrase_region_scores(regions[:2], phrases, mask, sharpness=5.0, pairwise=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(diagonal), np.diag(scores[:2]), rtol=1e-5)


def test_a_phrase_scores_the_region_it_finds_not_the_image_as_a_whole():
    # Two regions: a "red crown" region and a "blue wing" region (orthogonal). A caption whose
    # phrases are those two scores ~1 with sharp attention; one phrase that matches no region
    # scores ~0 whatever the rest of the image holds.
    regions = np.eye(4, dtype="float32")[None, :2]  # (1, 2, 4)
    own = np.eye(4, dtype="float32")[None, :2]  # (1, 2, 4): each phrase equals a region
    elsewhere = np.eye(4, dtype="float32")[None, 2:]  # phrases with no region of their own
    mask = np.ones((1, 2), "float32")
    score = lambda phrases: float(phrase_region_scores(regions, phrases, mask, sharpness=50.0)[0, 0])  # noqa: E731
    assert score(own) == pytest.approx(1.0, abs=1e-6)
    assert score(elsewhere) == pytest.approx(0.0, abs=1e-6)


def test_contrastive_losses_counts_identical_captions_as_own():
    scores = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]], "float32")
    distinct = np.eye(3, dtype="float32")
    losses = keras.ops.convert_to_numpy(contrastive_losses(scores, distinct, temperature=1.0))
    log_softmax = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(losses, -np.diag(log_softmax), rtol=1e-6)
    same = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1]], "float32")  # captions 1 and 2 are one caption
    shared = keras.ops.convert_to_numpy(contrastive_losses(scores, same, temperature=1.0))
    np.testing.assert_allclose(shared[1:], -log_softmax[1:, 1:].mean(axis=1), rtol=1e-6)


def coloured_dataset(count=64, size=32, phrases=2, seed=0):
    """Images whose top and bottom halves each take one of two colours, and captions whose two
    phrase vectors name them (part k's colour c: a fixed random vector per (k, c)); the caption
    vector is their sum, so it is the same for a caption and its parts swapped only if the
    colours are. Returns (images (N, S, S, 3) uint8, tokens (N, 1, 1 + K, T), the colours
    swapped between the parts: tokens (N, 1 + K, T), where they differ: (N,) bool)."""
    rng = np.random.default_rng(seed)
    colours = np.array([[230, 30, 30], [30, 30, 230]], np.uint8)
    words = rng.standard_normal((phrases, 2, TEXT_DIM)).astype("float32")
    choice = rng.integers(0, 2, (count, phrases))
    images = np.zeros((count, size, size, 3), np.uint8)
    images[:, : size // 2] = colours[choice[:, 0]][:, None, None]
    images[:, size // 2 :] = colours[choice[:, 1]][:, None, None]
    tokens = np.zeros((count, 1, 1 + phrases, TEXT_DIM), np.float32)
    for k in range(phrases):
        tokens[:, 0, 1 + k] = words[k, choice[:, k]]
    tokens[:, 0, 0] = tokens[:, 0, 1:].sum(axis=1)
    swapped = tokens[:, 0].copy()
    swapped[:, 1], swapped[:, 2] = words[0, choice[:, 1]], words[1, choice[:, 0]]
    return images, tokens, swapped, choice[:, 0] != choice[:, 1]


SETTINGS = dict(embedding_dim=8, width=4, text_hidden=16, region_size=8)


@pytest.mark.slow
def test_the_phrase_matcher_learns_which_phrase_is_where_and_loads_as_saved(tmp_path):
    from t2igan.metrics.phrase_matcher import phrase_matcher_losses

    images, tokens, swapped, differ = coloured_dataset()
    options = dict(temperature=0.1, sentence_temperature=0.1, sharpness=5.0)
    untrained = build_phrase_matcher(32, TEXT_DIM, seed=0, **SETTINGS)
    batch_images, batch_tokens = images[:32].astype("float32") / 127.5 - 1.0, tokens[:32, 0]
    before = float(phrase_matcher_losses(untrained, batch_images, batch_tokens, training=False, **options)[1])
    model, seconds = train_phrase_matcher(images, tokens, epochs=30, batch_size=16, learning_rate=3e-3,
                                          seed=0, progress=False, **options, **SETTINGS)  # fmt: skip
    after = float(phrase_matcher_losses(model, batch_images, batch_tokens, training=False, **options)[1])
    assert after < before - 1.0 and seconds > 0, (before, after)

    path = tmp_path / "phrases.keras"
    model.save(path)
    matcher = load_phrase_matcher(path, sharpness=5.0)
    assert isinstance(matcher, PhraseMatcher) and not matcher.image_tower.trainable
    saved = PhraseMatcher(model.get_layer("image_tower"), model.get_layer("phrase_tower"), sharpness=5.0)
    for loaded in (saved, matcher):  # the loaded towers score as the trained ones
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(loaded.scores(loaded.regions(batch_images), batch_tokens)),
            keras.ops.convert_to_numpy(saved.scores(saved.regions(batch_images), batch_tokens)), rtol=1e-5,
        )  # fmt: skip
    # Binding: an image scores its own caption above the same colours on the wrong parts.
    all_images = images[differ].astype("float32") / 127.5 - 1.0
    regions = matcher.regions(all_images)
    own, wrong = (keras.ops.convert_to_numpy(matcher.scores(regions, captions, pairwise=False))
                  for captions in (tokens[differ, 0], swapped[differ]))  # fmt: skip
    assert differ.sum() >= 16 and np.mean(own > wrong) >= 0.9, np.mean(own > wrong)
