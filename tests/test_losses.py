import math

import numpy as np
import pytest

import t2igan  # noqa: F401
from t2igan import losses


def softplus(x):
    return math.log1p(math.exp(x))


def test_bce_discriminator_terms_on_known_logits():
    real, fake, wrong = np.array([[2.0], [0.0]]), np.array([[-1.0], [1.0]]), np.array([[0.5], [0.5]])
    terms = losses.discriminator_loss(real, fake, wrong, kind="bce", wrong_weight=0.5)
    expected_real = (softplus(-2.0) + softplus(0.0)) / 2  # -log sigmoid(x)
    expected_fake = (softplus(-1.0) + softplus(1.0)) / 2  # -log(1 - sigmoid(x))
    expected_wrong = softplus(0.5)
    assert float(terms["d/real"]) == pytest.approx(expected_real, rel=1e-6)
    assert float(terms["d/fake"]) == pytest.approx(expected_fake, rel=1e-6)
    assert float(terms["d/wrong"]) == pytest.approx(expected_wrong, rel=1e-6)
    total = expected_real + 0.5 * expected_fake + 0.5 * expected_wrong
    assert float(terms["d/total"]) == pytest.approx(total, rel=1e-6)


def test_label_smoothing_changes_only_the_real_term():
    real = np.array([3.0])
    plain = losses.discriminator_loss(real, real * 0, real * 0, kind="bce")
    smoothed = losses.discriminator_loss(real, real * 0, real * 0, kind="bce", real_label=0.9)
    # BCE with target 0.9: -(0.9 log s(x) + 0.1 log(1 - s(x))) = softplus(x) - 0.9 x
    assert float(smoothed["d/real"]) == pytest.approx(softplus(3.0) - 2.7, rel=1e-6)
    assert float(smoothed["d/fake"]) == float(plain["d/fake"])


def test_hinge_terms_on_known_logits():
    terms = losses.discriminator_loss(
        np.array([0.5, 2.0]), np.array([-2.0, 0.0]), np.array([1.0, -1.0]), kind="hinge", wrong_weight=0.25
    )
    assert float(terms["d/real"]) == pytest.approx(0.25)  # relu(1 - x): 0.5, 0
    assert float(terms["d/fake"]) == pytest.approx(0.5)  # relu(1 + x): 0, 1
    assert float(terms["d/wrong"]) == pytest.approx(1.0)  # 2, 0
    assert float(terms["d/total"]) == pytest.approx(0.25 + 0.75 * 0.5 + 0.25 * 1.0)
    generator = losses.generator_loss(np.array([1.0, 3.0]), np.zeros(2), np.zeros(2), kind="hinge")
    assert float(generator["g/adv"]) == pytest.approx(-2.0)


def test_kl_divergence_closed_form():
    assert float(losses.kl_divergence(np.zeros((2, 4)), np.zeros((2, 4)))) == pytest.approx(0.0)
    mu, log_sigma = np.array([[1.0, 0.0]]), np.array([[0.0, math.log(2.0)]])
    # Per dimension: 0.5 (mu^2 + sigma^2 - 1) - log sigma; averaged over the two.
    expected = (0.5 * 1.0 + (0.5 * 3.0 - math.log(2.0))) / 2
    assert float(losses.kl_divergence(mu, log_sigma)) == pytest.approx(expected, rel=1e-6)


def test_generator_total_weights_the_kl_term():
    fake = np.array([0.0, 0.0])
    mu, log_sigma = np.ones((2, 3)), np.zeros((2, 3))
    terms = losses.generator_loss(fake, mu, log_sigma, kind="bce", kl_weight=2.0)
    assert float(terms["g/adv"]) == pytest.approx(math.log(2.0))
    assert float(terms["g/kl"]) == pytest.approx(0.5)
    assert float(terms["g/total"]) == pytest.approx(math.log(2.0) + 1.0)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="wasserstein"):
        losses.discriminator_loss(np.zeros(1), np.zeros(1), np.zeros(1), kind="wasserstein")


def test_mode_seeking_loss_is_the_inverse_image_change_per_noise_change():
    images_a, images_b = np.zeros((2, 4, 4, 3), "float32"), np.full((2, 4, 4, 3), 0.5, "float32")
    noise_a, noise_b = np.zeros((2, 8), "float32"), np.full((2, 8), 2.0, "float32")
    assert float(losses.mode_seeking_loss(images_a, images_b, noise_a, noise_b)) == pytest.approx(4.0, rel=1e-3)
    # Images that ignore the noise: the loss is as large as eps allows.
    assert float(losses.mode_seeking_loss(images_a, images_a, noise_a, noise_b)) > 1e4


def test_per_caption_mode_seeking_pulls_each_pair_by_its_own_ratio():
    import tensorflow as tf

    images_a = np.zeros((2, 4, 4, 3), "float32")
    images_b = np.stack([np.full((4, 4, 3), 0.5), np.full((4, 4, 3), 0.1)]).astype("float32")
    noise_a, noise_b = np.zeros((2, 8), "float32"), np.full((2, 8), 2.0, "float32")
    ratios = np.array([0.25, 0.05])  # the second caption's images nearly coincide
    loss = losses.per_caption_mode_seeking_loss(images_a, images_b, noise_a, noise_b)
    assert float(loss) == pytest.approx(np.mean(-np.log(ratios)) / np.mean(ratios), rel=1e-3)

    def pulls(loss_fn, second_images):  # how hard each pair's second image is pushed from its first
        moved = tf.Variable(second_images)
        with tf.GradientTape() as tape:
            value = loss_fn(images_a, moved, noise_a, noise_b)
        return -np.asarray(tape.gradient(value, moved)).sum(axis=(1, 2, 3))

    per_caption = pulls(losses.per_caption_mode_seeking_loss, images_b)
    batch = pulls(losses.mode_seeking_loss, images_b)
    assert per_caption[1] / per_caption[0] == pytest.approx(5.0, rel=1e-3)  # r_0 / r_1
    assert batch[1] / batch[0] == pytest.approx(1.0, rel=1e-3)  # MSGAN: every pair alike
    # Pairs at the batch's ratio are pulled as hard as by MSGAN's term.
    even = np.full((2, 4, 4, 3), 0.25, "float32")
    np.testing.assert_allclose(pulls(losses.per_caption_mode_seeking_loss, even),
                               pulls(losses.mode_seeking_loss, even), rtol=1e-3)  # fmt: skip
    assert np.all(pulls(losses.mode_seeking_loss, even) > 0)


def test_matching_losses_are_the_matching_loss_image_by_image():
    from t2igan.losses import matching_loss, matching_losses

    rng = np.random.default_rng(4)
    images, captions = rng.standard_normal((2, 5, 3)).astype("float32")
    per_image = np.asarray(matching_losses(images, captions, temperature=0.5))
    logits = (images / np.linalg.norm(images, axis=1, keepdims=True)) @ (
        captions / np.linalg.norm(captions, axis=1, keepdims=True)).T / 0.5
    expected = -np.diag(logits) + np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(per_image, expected, rtol=1e-5)
    assert float(matching_loss(images, captions, temperature=0.5)) == pytest.approx(per_image.mean(), rel=1e-6)


def test_matching_loss_rewards_images_that_point_at_their_own_caption():
    from t2igan.losses import matching_loss

    captions = np.eye(4, dtype=np.float32)
    assert float(matching_loss(captions, captions, temperature=0.01)) < 1e-3
    shuffled = float(matching_loss(captions[[1, 0, 3, 2]], captions, temperature=0.01))
    assert shuffled > 50  # every image points at another caption
    assert float(matching_loss(np.ones((4, 4), np.float32), captions)) == pytest.approx(np.log(4), rel=1e-5)
    # Identical captions in a batch are all an image's own: no penalty for matching either.
    twice = np.concatenate([captions[:2], captions[:2]])
    assert float(matching_loss(twice, twice, temperature=0.01)) == pytest.approx(np.log(2), abs=1e-3)
