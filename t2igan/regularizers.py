"""Discriminator regularisers: tensors (and a critic) in, one float32 scalar out.

Each returns the penalty already weighted by its own coefficient, to be added to `d/total` by
the training step; none applies optimizers or reads state, except `LeCamAnchors`, which holds
the two running means LeCam regularisation needs.

A `critic` is any callable `(images (B, S, S, 3), text_embeddings (B, T)) -> (B, 1) logits`:
in the GAN, the helper that augments and runs D, so the penalties see what the losses see.
The gradient penalties differentiate the critic with an inner `tf.GradientTape`; called under
the training step's tape over D's variables, that tape records the inner gradient too, so the
penalty's own gradient with respect to D's weights (second order) reaches D's update.
"""

import keras
import tensorflow as tf
from keras import ops


def _input_gradients(critic, *inputs):
    """d sum(critic(*inputs)) / d input for each input, in float32: per-sample gradients,
    since each logit depends on its own sample only (up to batch-coupling layers)."""
    inputs = [tf.convert_to_tensor(x) for x in inputs]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(inputs)
        total = ops.sum(ops.cast(critic(*inputs), "float32"))
    return [ops.cast(gradient, "float32") for gradient in tape.gradient(total, inputs)]


def _squared_norm_per_sample(gradient):
    return ops.sum(ops.reshape(ops.square(gradient), (ops.shape(gradient)[0], -1)), axis=1)  # (B,)


def matching_aware_gradient_penalty(critic, images, text_embeddings, *, weight=2.0, power=6.0,
                                     text_scale=1.0):
    """DF-GAN's matching-aware gradient penalty (Tao et al. 2022, tobran/DF-GAN `MA_GP`).

    images: (B, S, S, 3) real images in [-1, 1]; text_embeddings: (B, T) their own captions.
    The gradient of sum(logits) is taken with respect to both inputs, flattened and
    concatenated per sample; penalty = weight * mean_B(||grad||_2 ** power). DF-GAN uses
    weight 2 and power 6 on (real image, matching caption) pairs, which smooths D around the
    real data manifold in both image and text directions.

    ||grad|| ** power is computed as (||grad||^2) ** (power / 2), which has a finite gradient
    at a zero gradient (a square root there would not) for power >= 2.

    `text_scale`: the critic reads its text as `text_embeddings * text_scale` (the fusion D
    scales unit-length sentence embeddings to unit variance per entry); the text gradient is
    taken with respect to what it reads, as DF-GAN's D reads its encoder's unnormalised
    sentence vectors. Otherwise the gradient is text_scale (~20) times larger and its 6th
    power starts near 1e8.
    """
    image_gradient, text_gradient = _input_gradients(critic, images, text_embeddings)
    text_gradient = text_gradient / text_scale
    squared_norm = _squared_norm_per_sample(image_gradient) + _squared_norm_per_sample(
        text_gradient
    )
    return weight * ops.mean(ops.power(squared_norm, power / 2.0))


def r1_penalty(critic, images, text_embeddings, *, gamma: float):
    """R1 (Mescheder et al. 2018): gamma / 2 * mean_B ||d critic(images, text) / d images||^2.

    images: (B, S, S, 3) real images in [-1, 1]; text_embeddings: (B, T) their own captions,
    held fixed (only the image gradient is penalised). `gamma` is the R1 weight (StyleGAN2:
    0.0002 to 100 depending on resolution and data set; 0 gives 0).

    With lazy regularisation (the penalty computed every k discriminator steps only, as in
    StyleGAN2), the caller multiplies the result by k so the average strength is unchanged.
    """
    (image_gradient,) = _input_gradients(lambda x: critic(x, text_embeddings), images)
    return gamma / 2.0 * ops.mean(_squared_norm_per_sample(image_gradient))


def lecam_penalty(real_logits, fake_logits, ema_real, ema_fake):
    """LeCam regularisation (Tseng et al. 2021, google/lecam-gan `lecam_loss.py`), unweighted.

    mean(relu(real_logits - ema_fake)^2) + mean(relu(ema_real - fake_logits)^2)

    real_logits, fake_logits: (B, 1) or (B,) D's logits on (real image, caption) and (fake
    image, caption) pairs. ema_real, ema_fake: scalar anchors, the running means of D's real
    and fake logits (`LeCamAnchors`), treated as constants. Real logits are pulled down to the
    fake anchor and fake logits up to the real anchor, only where they are past it: zero when
    every real logit is below ema_fake and every fake logit above ema_real. The caller weights
    it (the paper: 0.3 for StyleGAN2, 0.01 for BigGAN) and adds it to `d/total`.
    """
    real_logits, fake_logits = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
    ema_real = ops.stop_gradient(ops.cast(ema_real, "float32"))
    ema_fake = ops.stop_gradient(ops.cast(ema_fake, "float32"))
    return ops.mean(ops.square(ops.relu(real_logits - ema_fake))) + ops.mean(
        ops.square(ops.relu(ema_real - fake_logits))
    )


class LeCamAnchors:
    """Running means of D's mean real and fake logits, the anchors of `lecam_penalty`.

    An exponential moving average with `decay` per update (0.99, as in google/lecam-gan),
    started at 0 and bias-corrected (TensorFlow's `zero_debias=True` in the reference code):
    after t updates, anchor = average_t / (1 - decay ** t), so the first anchor is the first
    batch mean rather than 1% of it. Before any update both anchors read 0.

    The state lives in three non-trainable float32 `keras.Variable`s (`variables`), so it can
    be checkpointed with the GAN and `update` can run inside a traced training step.
    """

    def __init__(self, decay: float = 0.99, name: str = "lecam"):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam EMA decay must be in [0, 1), got {decay}")
        self.decay = decay

        def variable(suffix):
            return keras.Variable(
                0.0, dtype="float32", trainable=False, autocast=False, name=f"{name}_{suffix}"
            )

        self.real_average = variable("real_average")  # biased (not yet corrected) averages
        self.fake_average = variable("fake_average")
        self.updates = variable("updates")

    @property
    def variables(self) -> list:
        return [self.real_average, self.fake_average, self.updates]

    @property
    def ema_real(self):
        """The bias-corrected real anchor (scalar float32 tensor)."""
        return self._corrected(self.real_average)

    @property
    def ema_fake(self):
        """The bias-corrected fake anchor (scalar float32 tensor)."""
        return self._corrected(self.fake_average)

    def _corrected(self, average):
        updates = ops.convert_to_tensor(self.updates)
        # Floored at 1 - decay (its value after one update): no division by 0 before the first.
        correction = ops.maximum(1.0 - ops.power(self.decay, updates), 1.0 - self.decay)
        return ops.where(updates > 0, ops.convert_to_tensor(average) / correction, 0.0)

    def update(self, real_logits, fake_logits):
        """Fold this batch's mean logits into the averages; returns (ema_real, ema_fake).

        Call it before `lecam_penalty`, with the same logits (the reference updates first,
        so the current batch is part of its anchors). Gradients do not flow into the anchors.
        """
        for average, logits in ((self.real_average, real_logits), (self.fake_average, fake_logits)):
            batch_mean = ops.stop_gradient(ops.mean(ops.cast(logits, "float32")))
            average.assign(self.decay * average + (1.0 - self.decay) * batch_mean)
        self.updates.assign_add(1.0)
        return self.ema_real, self.ema_fake
