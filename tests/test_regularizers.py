import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import t2igan  # noqa: F401
from t2igan.regularizers import (
    LeCamAnchors,
    lecam_penalty,
    matching_aware_gradient_penalty,
    r1_penalty,
)

BATCH, SIZE, TEXT = 4, 8, 5
RNG = np.random.default_rng(0)
IMAGE_WEIGHTS = tf.Variable(RNG.normal(size=(SIZE, SIZE, 3)), dtype="float32")
TEXT_WEIGHTS = tf.Variable(RNG.normal(size=(TEXT,)), dtype="float32")


def linear_critic(images, text_embeddings):
    """sum(w_x * x) + sum(w_t * t) per sample as (B, 1) logits; input gradient (w_x, w_t)."""
    image_part = tf.reduce_sum(images * IMAGE_WEIGHTS, axis=(1, 2, 3))
    text_part = tf.reduce_sum(text_embeddings * TEXT_WEIGHTS, axis=1)
    return tf.expand_dims(image_part + text_part, 1)


def inputs():
    images = tf.constant(RNG.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)), "float32")
    text_embeddings = tf.constant(RNG.normal(size=(BATCH, TEXT)), "float32")
    return images, text_embeddings


def squared_norms():
    return float(tf.reduce_sum(IMAGE_WEIGHTS**2)), float(tf.reduce_sum(TEXT_WEIGHTS**2))


@pytest.mark.parametrize("weight, power", [(2.0, 6.0), (1.0, 2.0), (0.5, 3.0)])
def test_matching_aware_gradient_penalty_closed_form_on_a_linear_critic(weight, power):
    image_norm, text_norm = squared_norms()
    expected = weight * math.sqrt(image_norm + text_norm) ** power
    penalty = matching_aware_gradient_penalty(linear_critic, *inputs(), weight=weight, power=power)
    assert float(penalty) == pytest.approx(expected, rel=1e-4)


def test_matching_aware_gradient_penalty_takes_the_text_gradient_as_the_critic_reads_the_text():
    # A critic that reads text * s has gradient s * w_t in the embedding, w_t in what it reads.
    scale = 4.0
    image_norm, text_norm = squared_norms()
    expected = 2.0 * (image_norm + text_norm) ** 3  # weight 2, power 6

    def scaling_critic(images, text_embeddings):
        return linear_critic(images, text_embeddings * scale)

    penalty = matching_aware_gradient_penalty(scaling_critic, *inputs(), weight=2.0, power=6.0, text_scale=scale)
    assert float(penalty) == pytest.approx(expected, rel=1e-4)
    unscaled = matching_aware_gradient_penalty(scaling_critic, *inputs(), weight=2.0, power=6.0)
    assert float(unscaled) == pytest.approx(2.0 * (image_norm + scale**2 * text_norm) ** 3, rel=1e-4)


def test_r1_closed_form_on_a_linear_critic_ignores_the_text_gradient():
    image_norm, _ = squared_norms()
    assert float(r1_penalty(linear_critic, *inputs(), gamma=10.0)) == pytest.approx(
        5.0 * image_norm, rel=1e-5
    )
    assert float(r1_penalty(linear_critic, *inputs(), gamma=0.0)) == 0.0


def test_penalties_take_per_sample_norms():
    # critic = (|x_i|^2 + |t_i|^2) / 2 per sample: its input gradient is (x_i, t_i), so
    # R1 = gamma/2 * mean_i |x_i|^2 and MA-GP = weight * mean_i (|x_i|^2 + |t_i|^2)^(power/2).
    images, text_embeddings = inputs()

    def quadratic_critic(x, t):
        return 0.5 * (tf.reduce_sum(x**2, axis=(1, 2, 3)) + tf.reduce_sum(t**2, axis=1))[:, None]

    image_norms = tf.reduce_sum(images**2, axis=(1, 2, 3)).numpy()
    text_norms = tf.reduce_sum(text_embeddings**2, axis=1).numpy()
    r1 = r1_penalty(quadratic_critic, images, text_embeddings, gamma=1.0)
    assert float(r1) == pytest.approx(0.5 * image_norms.mean(), rel=1e-5)
    magp = matching_aware_gradient_penalty(
        quadratic_critic, images, text_embeddings, weight=2.0, power=6.0
    )
    assert float(magp) == pytest.approx(2.0 * np.mean((image_norms + text_norms) ** 3), rel=1e-4)


def test_penalty_gradients_reach_the_critic_weights_inside_an_outer_tape():
    # d/dw of weight * (|w_x|^2 + |w_t|^2)^(power/2), power 6: weight * 6 * (|w|^2)^2 * w.
    image_norm, text_norm = squared_norms()
    squared = image_norm + text_norm
    with tf.GradientTape() as outer:
        penalty = matching_aware_gradient_penalty(linear_critic, *inputs(), weight=2.0, power=6.0)
    image_gradient, text_gradient = outer.gradient(penalty, [IMAGE_WEIGHTS, TEXT_WEIGHTS])
    assert image_gradient is not None and text_gradient is not None
    np.testing.assert_allclose(
        text_gradient.numpy(), 2.0 * 6.0 * squared**2 * TEXT_WEIGHTS.numpy(), rtol=1e-4
    )
    np.testing.assert_allclose(
        image_gradient.numpy(), 2.0 * 6.0 * squared**2 * IMAGE_WEIGHTS.numpy(), rtol=1e-4
    )

    with tf.GradientTape() as outer:
        penalty = r1_penalty(linear_critic, *inputs(), gamma=4.0)
    image_gradient, text_gradient = outer.gradient(penalty, [IMAGE_WEIGHTS, TEXT_WEIGHTS])
    np.testing.assert_allclose(
        image_gradient.numpy(), 4.0 * IMAGE_WEIGHTS.numpy(), rtol=1e-5
    )  # gamma/2 * 2 w
    assert text_gradient is None


def test_penalties_work_in_a_traced_step_with_a_keras_critic():
    image_input = keras.Input((SIZE, SIZE, 3))
    text_input = keras.Input((TEXT,))
    features = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="tanh")(image_input))
    joined = keras.layers.Concatenate()([features, text_input])
    critic_model = keras.Model([image_input, text_input], keras.layers.Dense(1)(joined))

    @tf.function(
        input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3)), tf.TensorSpec((None, TEXT))]
    )
    def step(images, text_embeddings):
        with tf.GradientTape() as tape:

            def critic(x, t):
                return critic_model([x, t])

            penalty = matching_aware_gradient_penalty(critic, images, text_embeddings) + r1_penalty(
                critic, images, text_embeddings, gamma=1.0
            )
        return penalty, tape.gradient(penalty, critic_model.trainable_variables)

    penalty, gradients = step(*inputs())
    assert np.isfinite(float(penalty)) and float(penalty) > 0
    conv_kernel, conv_bias, dense_kernel, dense_bias = gradients
    # Second order reaches every weight the input gradient depends on; the output bias is not one.
    for gradient in (conv_kernel, conv_bias, dense_kernel):
        assert (
            gradient is not None
            and np.all(np.isfinite(gradient.numpy()))
            and np.any(gradient.numpy() != 0)
        )
    assert dense_bias is None


def test_lecam_is_zero_when_logits_are_on_their_side_of_the_anchors():
    real = np.array([[-1.0], [0.5]])  # all below the fake anchor
    fake = np.array([[2.0], [3.0]])  # all above the real anchor
    assert float(lecam_penalty(real, fake, ema_real=1.0, ema_fake=1.0)) == 0.0


def test_lecam_known_value():
    real, fake = np.array([2.0, 0.0, 1.0]), np.array([-1.0, 1.0])
    ema_real, ema_fake = 0.5, -0.5
    # real - ema_fake: 2.5, 0.5, 1.5 -> squares 6.25, 0.25, 2.25 -> mean 2.9167
    # ema_real - fake: 1.5, -0.5 -> relu 1.5, 0 -> squares 2.25, 0 -> mean 1.125
    expected = (6.25 + 0.25 + 2.25) / 3 + 2.25 / 2
    assert float(lecam_penalty(real, fake, ema_real, ema_fake)) == pytest.approx(expected, rel=1e-6)


def test_lecam_gradient_flows_into_logits_not_anchors():
    real, fake = tf.constant([2.0]), tf.constant([-1.0])
    anchors = tf.constant(0.0), tf.constant(0.0)
    with tf.GradientTape() as tape:
        tape.watch([real, fake, *anchors])
        penalty = lecam_penalty(real, fake, *anchors)
    grad_real, grad_fake, grad_ema_real, grad_ema_fake = tape.gradient(
        penalty, [real, fake, *anchors]
    )
    assert float(grad_real[0]) == pytest.approx(4.0) and float(grad_fake[0]) == pytest.approx(-2.0)
    assert grad_ema_real is None and grad_ema_fake is None


def test_lecam_anchors_follow_the_bias_corrected_ema():
    anchors = LeCamAnchors(decay=0.9)
    assert float(anchors.ema_real) == 0.0 and float(anchors.ema_fake) == 0.0
    batches = [
        (np.array([1.0, 3.0]), np.array([-2.0])),
        (np.array([4.0]), np.array([0.0, 1.0])),
        (np.array([-1.0]), np.array([5.0])),
    ]
    biased_real = biased_fake = 0.0
    for t, (real, fake) in enumerate(batches, start=1):
        ema_real, ema_fake = anchors.update(real, fake)
        if t == 1:  # bias correction: the first anchors are the first batch means, not 10% of them
            assert (float(ema_real), float(ema_fake)) == pytest.approx((2.0, -2.0))
        biased_real = 0.9 * biased_real + 0.1 * real.mean()
        biased_fake = 0.9 * biased_fake + 0.1 * fake.mean()
        assert float(ema_real) == pytest.approx(biased_real / (1 - 0.9**t), rel=1e-5)
        assert float(ema_fake) == pytest.approx(biased_fake / (1 - 0.9**t), rel=1e-5)
    assert all(not v.trainable for v in anchors.variables) and len(anchors.variables) == 3


def test_lecam_anchors_update_in_a_traced_step():
    anchors = LeCamAnchors()

    @tf.function
    def step(real, fake):
        ema_real, ema_fake = anchors.update(real, fake)
        return lecam_penalty(real, fake, ema_real, ema_fake)

    step(tf.constant([1.0, 1.0]), tf.constant([-1.0]))
    step(tf.constant([3.0]), tf.constant([-3.0]))
    # Biased: 0.01 * 1 -> 0.0099 + 0.03 = 0.0399; corrected by 1 - 0.99^2 = 0.0199.
    assert float(anchors.ema_real) == pytest.approx(0.0399 / 0.0199, rel=1e-5)
    assert float(anchors.ema_fake) == pytest.approx(-0.0399 / 0.0199, rel=1e-5)
    assert float(anchors.updates) == 2.0
