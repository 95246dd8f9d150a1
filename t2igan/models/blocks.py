"""Layers shared by the generator and the discriminator."""

import keras
from keras import layers, ops

from t2igan.text.encoder import sentence_of


@keras.saving.register_keras_serializable(package="t2igan")
class ConditioningAugmentation(layers.Layer):
    """StackGAN's conditioning augmentation: a sentence embedding -> a Gaussian condition.

    One dense layer maps the embedding to (mu, log_sigma), each `condition_dim` wide. In
    training the condition is sampled, `mu + exp(log_sigma) * eps`, which smooths the
    conditioning manifold; at inference it is `mu`, so a caption and a noise vector fix the
    image. Returns `(condition, mu, log_sigma)`, each (B, condition_dim).
    """

    def __init__(self, condition_dim: int = 128, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.condition_dim = condition_dim
        self.dense = layers.Dense(2 * condition_dim, name="dense")
        # StackGAN rectifies (mu, log_sigma) with a leaky ReLU before the split.
        self.activation = layers.LeakyReLU(0.2)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, text_embeddings, training=None):
        mu_log_sigma = self.activation(self.dense(text_embeddings))
        mu, log_sigma = ops.split(mu_log_sigma, 2, axis=-1)
        if not training:
            return mu, mu, log_sigma
        eps = keras.random.normal(ops.shape(mu), dtype=mu.dtype, seed=self.seed_generator)
        return mu + ops.exp(log_sigma) * eps, mu, log_sigma

    def compute_output_shape(self, input_shape):
        shape = (*input_shape[:-1], self.condition_dim)
        return shape, shape, shape

    def get_config(self):
        return {**super().get_config(), "condition_dim": self.condition_dim}


def scaled_channels(channels: int, width: float) -> int:
    """Channel count `channels` scaled by the width multiplier, never below 4."""
    return max(4, int(round(channels * width)))


def pyramid_levels(image_size: int, base_resolution: int = 4) -> int:
    """How many stride-2 stages lie between `base_resolution` and `image_size` (both pixels)."""
    levels = 0
    size = base_resolution
    while size < image_size:
        size *= 2
        levels += 1
    if size != image_size:
        raise ValueError(
            f"image_size must be {base_resolution} times a power of two, got {image_size}"
        )
    return levels


@keras.saving.register_keras_serializable(package="t2igan")
class BatchNorm(layers.BatchNormalization):
    """BatchNormalization over the channel axis of NHWC maps, on TensorFlow's fused kernel.

    Same weights, arguments and maths as `keras.layers.BatchNormalization` (so parameter
    counts and checkpoints are unchanged), but Keras 3 composes the normalisation from
    separate moments and arithmetic ops, which is about 3x slower forward and backward on
    CPU than the single fused TensorFlow op. (TensorFlow updates the moving variance with the
    unbiased batch variance, Keras with the biased one.) Falls back to Keras for anything but 4-D input
    normalised over the last axis.
    """

    def call(self, inputs, training=None, mask=None):
        if keras.backend.backend() != "tensorflow" or len(inputs.shape) != 4 or self.axis % 4 != 3:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        gamma = self.gamma if self.scale else ops.ones_like(self.moving_mean)
        beta = self.beta if self.center else ops.zeros_like(self.moving_mean)
        # Viewed as one (1, B*H*W, 1, C) map: same statistics, but oneDNN picks a kernel that is
        # up to 5x faster for few channels at high resolution (16 channels at 64x64).
        flat = ops.reshape(inputs, (1, -1, 1, inputs.shape[-1]))
        if not training or self.trainable is False:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                flat, gamma, beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=False,
            )  # fmt: skip
            return ops.reshape(outputs, ops.shape(inputs))
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            flat, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
        self.moving_variance.assign(
            self.momentum * self.moving_variance + (1.0 - self.momentum) * variance
        )
        return ops.reshape(outputs, ops.shape(inputs))


def batch_spread_channel(features):
    """ProGAN's minibatch standard deviation: (B, H, W, C) -> (B, H, W, 1) holding how much the
    batch's features vary, so a collapsed batch of fakes looks different from a real one."""
    spread = ops.mean(ops.std(ops.cast(features, "float32"), axis=0))
    return ops.cast(ops.ones_like(features[..., :1], dtype="float32") * spread, features.dtype)


@keras.saving.register_keras_serializable(package="t2igan")
class SpectralNorm(layers.SpectralNormalization):
    """Keras' spectral normalisation (SN-GAN), kept in float32 under mixed precision.

    Keras' wrapper divides the kernel by its largest singular value and writes the result back
    into the kernel on every training call. Under `mixed_bfloat16` it would read the float32
    kernel in the compute dtype, so every write-back rounded D's weights to bfloat16 (8 bits of
    mantissa: Adam's updates of ~1e-4 relative size vanish). Here the wrapper computes in
    float32 (its outputs are float32); the wrapped layer still computes in its own policy.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **{**kwargs, "dtype": "float32"})


def spectral_if(layer, norm: str):
    """`layer` wrapped in spectral normalisation (`SpectralNorm`) when `norm` is "spectral", else
    `layer` itself (the discriminators' `norm` option)."""
    return SpectralNorm(layer, name=f"{layer.name}_sn") if norm == "spectral" else layer


# Discriminator normalisations (both discriminators take all three): "batch": the seed's
# BatchNorm after every conv; "spectral": spectral normalisation of every conv and dense weight
# instead (SN-GAN), no BatchNorm; "none": neither.
NORMS = ("batch", "spectral", "none")


def normalized(convolution, norm: str) -> list:
    """A discriminator conv followed by its normalisation: `[conv, BatchNorm]` for "batch" (the
    seed's D), `[spectral_if(conv)]` for "spectral" or "none"."""
    if norm == "batch":
        return [convolution, BatchNorm(name=f"{convolution.name}_norm")]
    return [spectral_if(convolution, norm)]


@keras.saving.register_keras_serializable(package="t2igan")
class ContrastiveHeads(layers.Layer):
    """XMC-GAN's sentence-image heads on a discriminator (Zhang et al. 2021): D's image
    features, mean-pooled, and the caption, each by one dense layer into a shared space, where
    a batch-contrastive loss teaches D which caption belongs to which real image.

    `(features (B, H, W, C), text (B, T))` -> `(image_vectors (B, dim), text_vectors (B, dim))`,
    float32, not normalised (t2igan.losses.matching_loss compares cosines). The text is first
    multiplied by `text_scale`, as the discriminator's own text input is (`text_input_scale`).
    """

    def __init__(self, dim: int, *, text_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.text_scale = dim, text_scale
        self.image = layers.Dense(dim, name="image", dtype="float32")
        self.text = layers.Dense(dim, name="text", dtype="float32")

    def call(self, features, text):
        pooled = ops.mean(ops.cast(features, "float32"), axis=(1, 2))
        return self.image(pooled), self.text(ops.cast(text, "float32") * self.text_scale)

    def compute_output_shape(self, features_shape, text_shape):
        return (features_shape[0], self.dim), (text_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "text_scale": self.text_scale}


def build_with_heads(discriminator, image_size: int, text_dim: int, phrase_tokens: int = 0) -> None:
    """Create every weight of a discriminator (and its contrastive heads, if any) now, so
    parameter counts and checkpoints need no data."""
    images = ops.zeros((1, image_size, image_size, 3))
    text = ops.zeros((1, 1 + phrase_tokens, text_dim) if phrase_tokens else (1, text_dim))
    if discriminator.contrastive is not None:  # first: the call below marks D built
        discriminator.contrastive(discriminator.encode(images), sentence_of(text))
    discriminator((images, text))
