import keras
import numpy as np
import pytest
import tensorflow as tf

import t2igan  # noqa: F401
from t2igan.augment import POLICIES, augment_images, instance_noise

SIZE = 16


def images(batch_size=8, seed=0):
    # (B, S, S, 3) in [-1, 1], straddling 0 so the zero fill of translation/cutout is in range.
    return tf.constant(
        np.random.default_rng(seed).uniform(-1, 1, (batch_size, SIZE, SIZE, 3)), "float32"
    )


def augment(x, policy, probability=1.0, seed=1):
    return augment_images(
        x, policy=policy, probability=probability, seed_generator=keras.random.SeedGenerator(seed)
    )


@pytest.mark.parametrize(
    "probability", [0.0, tf.constant(0.0), keras.Variable(0.0, trainable=False)]
)
def test_probability_zero_is_exactly_the_identity(probability):
    x = images()
    y = augment(x, POLICIES, probability)
    np.testing.assert_array_equal(y.numpy(), x.numpy())


@pytest.mark.parametrize("policy", [(name,) for name in POLICIES] + [POLICIES])
def test_shape_dtype_and_finiteness_are_kept(policy):
    x = images()
    y = augment(x, policy)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.all(np.isfinite(y.numpy()))


def test_mixed_precision_input_comes_back_in_its_dtype():
    y = augment(tf.cast(images(), "bfloat16"), POLICIES)
    assert y.dtype == tf.bfloat16
    assert np.all(np.isfinite(tf.cast(y, "float32").numpy()))


@pytest.mark.parametrize(
    "policy", [("flip",), ("translation",), ("cutout",), ("flip", "translation", "cutout")]
)
def test_geometric_policies_stay_within_the_input_range(policy):
    x = images()
    y = augment(x, policy).numpy()
    assert y.min() >= x.numpy().min() and y.max() <= x.numpy().max()


@pytest.mark.parametrize("policy", [("flip",), ("color",), ("translation",), ("cutout",)])
def test_probability_one_changes_most_images(policy):
    x = images(batch_size=32)
    y = augment(x, policy)
    changed = np.any(y.numpy() != x.numpy(), axis=(1, 2, 3))
    # flip is applied with p/2 (ADA's xflip); the others to every image (a zero shift is rare).
    assert changed.mean() > (0.25 if policy == ("flip",) else 0.8)


def test_intermediate_probability_augments_about_that_fraction():
    x = images(batch_size=400)
    y = augment(x, ("cutout",), probability=0.3)
    changed = np.any(y.numpy() != x.numpy(), axis=(1, 2, 3)).mean()
    assert 0.2 < changed < 0.4


def test_translation_moves_content_by_whole_pixels_with_zero_fill():
    x = images(batch_size=32)
    y = augment(x, ("translation",)).numpy()
    largest = SIZE // 8
    for source, moved in zip(x.numpy(), y):
        matches = [
            (dy, dx)
            for dy in range(-largest, largest + 1)
            for dx in range(-largest, largest + 1)
            if np.array_equal(moved, _shifted(source, dy, dx))
        ]
        assert matches, "every image is its input shifted by at most S/8 pixels"


def _shifted(image, dy, dx):
    padded = np.pad(image, ((SIZE, SIZE), (SIZE, SIZE), (0, 0)))
    return padded[SIZE - dy : 2 * SIZE - dy, SIZE - dx : 2 * SIZE - dx]


def test_cutout_zeroes_at_most_a_half_side_square():
    x = images(batch_size=16)
    y = augment(x, ("cutout",)).numpy()
    for source, cut in zip(x.numpy(), y):
        zeroed = np.any(cut != source, axis=-1)
        rows, columns = np.nonzero(zeroed)
        assert np.all(cut[zeroed] == 0.0)
        assert rows.max() - rows.min() < SIZE // 2 and columns.max() - columns.min() < SIZE // 2


@pytest.mark.parametrize("policy", [(name,) for name in POLICIES] + [POLICIES])
def test_gradients_flow_through_every_policy(policy):
    x = images()
    weights = tf.constant(np.random.default_rng(3).normal(size=x.shape), "float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(augment(x, policy) * weights)
    gradient = tape.gradient(loss, x)
    assert gradient is not None
    assert np.all(np.isfinite(gradient.numpy())) and np.any(gradient.numpy() != 0.0)


def test_works_in_a_traced_step_with_unknown_batch_size_and_variable_probability():
    seed_generator = keras.random.SeedGenerator(5)
    probability = keras.Variable(1.0, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32)])
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = augment_images(
                x, policy=POLICIES, probability=probability, seed_generator=seed_generator
            )
            loss = tf.reduce_sum(y)
        return y, tape.gradient(loss, x)

    for batch_size in (3, 5):
        x = images(batch_size)
        y, gradient = step(x)
        assert y.shape == x.shape and gradient.shape == x.shape
        assert np.any(y.numpy() != x.numpy())
    probability.assign(0.0)  # what a controller does between steps: no retrace, exact identity
    x = images(4)
    np.testing.assert_array_equal(step(x)[0].numpy(), x.numpy())
    assert step.experimental_get_tracing_count() == 1


def test_fresh_randomness_each_call_and_reproducible_from_the_seed():
    x = images()
    seed_generator = keras.random.SeedGenerator(7)
    first = augment_images(x, policy=POLICIES, probability=1.0, seed_generator=seed_generator)
    second = augment_images(x, policy=POLICIES, probability=1.0, seed_generator=seed_generator)
    assert np.any(first.numpy() != second.numpy())
    np.testing.assert_array_equal(first.numpy(), augment(x, POLICIES, seed=7).numpy())


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown augmentation policy"):
        augment(images(), ("rotate",))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        augment(images(), ("color",), probability=1.5)


def test_instance_noise_is_identity_at_zero_and_has_the_requested_spread():
    x = images(batch_size=64)
    np.testing.assert_array_equal(
        instance_noise(x, 0.0, keras.random.SeedGenerator(0)).numpy(), x.numpy()
    )
    np.testing.assert_array_equal(
        instance_noise(x, tf.constant(0.0), keras.random.SeedGenerator(0)).numpy(), x.numpy()
    )
    noise = (instance_noise(x, 0.2, keras.random.SeedGenerator(0)) - x).numpy()
    assert noise.std() == pytest.approx(0.2, rel=0.05) and abs(noise.mean()) < 0.01


def test_color_operations_use_diffaugment_ranges():
    from t2igan import augment as module

    x = images(batch_size=256)
    seed_generator = keras.random.SeedGenerator(11)
    # brightness: one offset per image in [-0.5, 0.5]
    offsets = (module._brightness(x, seed_generator) - x).numpy()
    per_image = offsets[:, 0, 0, 0]
    np.testing.assert_allclose(
        offsets, per_image[:, None, None, None] * np.ones_like(offsets), atol=1e-6
    )
    assert -0.5 <= per_image.min() < -0.4 and 0.4 < per_image.max() <= 0.5
    # saturation and contrast: distances from the mean scaled by one factor per image
    for operation, axes, (low, high) in [
        (module._saturation, 3, (0.0, 2.0)),
        (module._contrast, (1, 2, 3), (0.5, 1.5)),
    ]:
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        factors = ((operation(x, seed_generator) - mean) / (x - mean)).numpy()
        per_image = factors[:, 0, 0, 0]
        np.testing.assert_allclose(
            factors, per_image[:, None, None, None] * np.ones_like(factors), rtol=1e-3, atol=1e-3
        )
        spread = high - low
        assert (
            low <= per_image.min() < low + 0.1 * spread
            and high - 0.1 * spread < per_image.max() <= high
        )
