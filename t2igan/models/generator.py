"""StackGAN Stage-I generator: (noise, sentence embedding) -> 64x64 image."""

import keras
from keras import layers

from t2igan.models.blocks import (
    BatchNorm,
    ConditioningAugmentation,
    pyramid_levels,
    scaled_channels,
)


def build_generator(
    *,
    text_dim: int = 384,
    noise_dim: int = 100,
    condition_dim: int = 128,
    image_size: int = 64,
    base_channels: int = 1024,
    width: float = 1.0,
    seed: int | None = None,
    name: str = "generator",
) -> keras.Model:
    """The seed project's generator, layer for layer.

    Conditioning augmentation turns the (B, text_dim) embedding into a (B, condition_dim)
    condition; it is joined with (B, noise_dim) noise, projected to a 4x4 map of
    `base_channels` channels, and upsampled by stride-2 transposed convolutions (channels
    halving each time, BatchNorm + ReLU) to `image_size`, then a 3x3 convolution to RGB.

    `width` scales every convolution's channel count (1.0 is the seed's 14,980,800
    parameters); the text and noise dimensions stay as they are.

    Inputs `[noise (B, noise_dim), text_embeddings (B, text_dim)]`; outputs
    `[images (B, S, S, 3) in [-1, 1], mu (B, condition_dim), log_sigma (B, condition_dim)]`,
    mu and log_sigma being what the KL term of the loss needs.
    """
    levels = pyramid_levels(image_size)
    noise = keras.Input((noise_dim,), name="noise")
    text_embeddings = keras.Input((text_dim,), name="text_embeddings")
    condition, mu, log_sigma = ConditioningAugmentation(
        condition_dim, seed=seed, name="conditioning"
    )(text_embeddings)

    channels = scaled_channels(base_channels, width)
    x = layers.Concatenate(name="condition_and_noise")([condition, noise])
    x = layers.Dense(4 * 4 * channels, use_bias=False, name="project")(x)
    x = layers.Reshape((4, 4, channels))(x)
    x = layers.ReLU()(x)
    for level in range(1, levels + 1):
        x = layers.Conv2DTranspose(
            scaled_channels(base_channels >> level, width),
            kernel_size=4,
            strides=2,
            padding="same",
            use_bias=False,
            name=f"up{level}",
        )(x)
        x = BatchNorm(name=f"up{level}_norm")(x)
        x = layers.ReLU()(x)
    # float32 images under mixed precision, so that samples and D's input keep full range.
    images = layers.Conv2D(
        3, kernel_size=3, padding="same", use_bias=False, activation="tanh", name="to_rgb",
        dtype="float32",
    )(x)  # fmt: skip
    return keras.Model([noise, text_embeddings], [images, mu, log_sigma], name=name)
