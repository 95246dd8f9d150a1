"""Differentiable augmentation of the discriminator's input images, and instance noise.

DiffAugment (Zhao et al. 2020, mit-han-lab/data-efficient-gans `DiffAugment_tf.py`) with
StyleGAN2-ADA's per-sample probability (Karras et al. 2020): every operation is applied to each
image of the batch independently with probability `probability`, so 0 is exactly the identity
and 1 is plain DiffAugment. Everything is differentiable with respect to the images, so G's
gradients pass through it; the same function must treat real, fake and mismatched inputs,
which is why the training step calls it in its one discriminator helper and nowhere else.

Images are (B, S, S, 3) in [-1, 1], NHWC, any batch size (also unknown in a traced step); S
must be known when the step is traced.
"""

import keras
import tensorflow as tf
from keras import ops

# Applied in this order whatever order the config lists them in.
POLICIES = ("flip", "color", "translation", "cutout")

# DiffAugment's ranges: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5).
BRIGHTNESS_RANGE = (-0.5, 0.5)
SATURATION_RANGE = (0.0, 2.0)
CONTRAST_RANGE = (0.5, 1.5)
TRANSLATION_RATIO = 1 / 8  # largest shift, as a fraction of the image side
CUTOUT_RATIO = 1 / 2  # side of the cut-out square, as a fraction of the image side


def augment_images(images, *, policy: tuple[str, ...], probability, seed_generator):
    """Randomly augmented copies of `images`, differentiable with respect to them.

    images: (B, S, S, 3) in [-1, 1], float32 or a mixed-precision float; the work is done in
        float32 and the result cast back to the input dtype.
    policy: names from POLICIES; an empty tuple returns `images` unchanged.
        "flip": mirror left-right (applied with probability/2, as ADA's xflip, so p = 1 is an
            unbiased random flip).
        "color": brightness, then saturation around each pixel's channel mean, then contrast
            around the image mean (three operations, each drawn separately). Can leave [-1, 1]
            (as in DiffAugment): D sees the values unclipped.
        "translation": shift by whole pixels, up to S/8 in each axis, filling with 0 (mid-grey
            in [-1, 1]; DiffAugment's zero padding, which it also applies to [-1, 1] images).
        "cutout": set a square of side S/2 at a uniformly random centre to 0 (mid-grey); the
            square may hang over the border.
    probability: python float or scalar tensor/variable in [0, 1]: the chance that each
        operation is applied to each image, drawn independently per operation and per image.
        Passing a variable lets a controller (ADA) change it without retracing the step.
    seed_generator: a `keras.random.SeedGenerator`; all randomness is drawn from it.

    Returns (B, S, S, 3) in the dtype of `images`.
    """
    unknown = sorted(set(policy) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown augmentation policy {unknown}; known: {POLICIES}")
    if isinstance(probability, (int, float)):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"augmentation probability must be in [0, 1], got {probability}")
        if probability == 0.0:
            return images
    if not policy:
        return images
    dtype = images.dtype
    augmented = ops.cast(images, "float32")
    probability = ops.cast(probability, "float32")

    operations = []  # (operation, chance per image)
    if "flip" in policy:
        operations.append((_flip, 0.5 * probability))
    if "color" in policy:
        operations += [
            (_brightness, probability),
            (_saturation, probability),
            (_contrast, probability),
        ]
    if "translation" in policy:
        operations.append((_translation, probability))
    if "cutout" in policy:
        operations.append((_cutout, probability))
    for operation, chance in operations:
        # An image keeps its input unless its own draw falls below `chance`: exact identity at 0.
        draws = keras.random.uniform((ops.shape(augmented)[0], 1, 1, 1), seed=seed_generator)
        augmented = ops.where(draws < chance, operation(augmented, seed_generator), augmented)
    return ops.cast(augmented, dtype)


def instance_noise(images, stddev, seed_generator):
    """`images` plus N(0, stddev^2) noise per pixel (Sønderby et al. 2016, Arjovsky & Bottou 2017).

    images: (B, S, S, 3) in [-1, 1]; stddev: python float or scalar tensor/variable in image
    units (the [-1, 1] scale), usually annealed to 0 by the caller; 0 returns the images
    unchanged. Apply to real and fake alike (in the discriminator helper, after augmentation).
    """
    if isinstance(stddev, (int, float)):
        if stddev < 0:
            raise ValueError(f"instance noise stddev must be >= 0, got {stddev}")
        if stddev == 0:
            return images
    dtype = images.dtype
    images = ops.cast(images, "float32")
    noise = keras.random.normal(ops.shape(images), seed=seed_generator)
    return ops.cast(images + ops.cast(stddev, "float32") * noise, dtype)


def _uniform_per_image(images, seed_generator, value_range):
    low, high = value_range
    return keras.random.uniform(
        (ops.shape(images)[0], 1, 1, 1), minval=low, maxval=high, seed=seed_generator
    )


def _flip(images, seed_generator):
    return ops.flip(images, axis=2)


def _brightness(images, seed_generator):
    return images + _uniform_per_image(images, seed_generator, BRIGHTNESS_RANGE)


def _saturation(images, seed_generator):
    mean = ops.mean(images, axis=3, keepdims=True)
    return (images - mean) * _uniform_per_image(images, seed_generator, SATURATION_RANGE) + mean


def _contrast(images, seed_generator):
    mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
    return (images - mean) * _uniform_per_image(images, seed_generator, CONTRAST_RANGE) + mean


def _translation(images, seed_generator):
    batch_size, height, width = ops.shape(images)[0], ops.shape(images)[1], ops.shape(images)[2]
    for axis, size in ((1, height), (2, width)):
        largest = int(size * TRANSLATION_RATIO)
        shift = keras.random.randint(
            (batch_size, 1), minval=-largest, maxval=largest + 1, dtype="int32", seed=seed_generator
        )
        images = _shift(images, shift, axis=axis, size=size)
    return images


def _shift(images, shift, *, axis: int, size: int):
    """Moves each image's content by `shift` (B, 1) pixels along `axis` (1 rows, 2 columns),
    filling the uncovered pixels with 0: output[i] = input[i - shift]."""
    source = ops.expand_dims(ops.arange(size, dtype="int32"), 0) - shift  # (B, size)
    inside = ops.logical_and(source >= 0, source < size)
    gathered = tf.gather(images, ops.clip(source, 0, size - 1), axis=axis, batch_dims=1)
    mask_shape = (-1, size, 1, 1) if axis == 1 else (-1, 1, size, 1)
    return ops.where(ops.reshape(inside, mask_shape), gathered, 0.0)


def _cutout(images, seed_generator):
    batch_size, height, width = ops.shape(images)[0], ops.shape(images)[1], ops.shape(images)[2]
    inside = []
    for size in (height, width):
        side = int(size * CUTOUT_RATIO)
        # DiffAugment's centre range: [0, size] for an even side, [0, size) for an odd one.
        centre = keras.random.randint(
            (batch_size, 1),
            minval=0,
            maxval=size + 1 - side % 2,
            dtype="int32",
            seed=seed_generator,
        )
        start = centre - side // 2
        position = ops.expand_dims(ops.arange(size, dtype="int32"), 0)  # (1, size)
        inside.append(ops.logical_and(position >= start, position < start + side))  # (B, size)
    rows, columns = inside
    square = ops.logical_and(
        ops.reshape(rows, (-1, height, 1, 1)), ops.reshape(columns, (-1, 1, width, 1))
    )
    return ops.where(square, 0.0, images)


@keras.saving.register_keras_serializable(package="t2igan")
class TrainingAugmentation(keras.layers.Layer):
    """`augment_images` with `policy`, every operation on every image, when called with
    training=True; the identity otherwise. A model's own augmentation: the matcher trains
    behind it, so that it reads attributes wherever they are drawn (balance.matching_augment
    then shows it G's images the same way)."""

    def __init__(self, policy: tuple[str, ...] = (), seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.policy, self.seed = tuple(policy), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or not self.policy:
            return images
        return augment_images(images, policy=self.policy, probability=1.0, seed_generator=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "policy": list(self.policy), "seed": self.seed}
