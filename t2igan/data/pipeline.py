"""The training input pipeline: in-memory images and caption embeddings -> batches.

Batch k is a pure function of (seed, k): epochs are stateless permutations and the caption of
each image is drawn with a stateless RNG, so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

import numpy as np
import tensorflow as tf


def training_batches(
    images: np.ndarray,
    caption_embeddings: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    crop_size: int | None = None,
    random_flip: bool = False,
    negative_embeddings: np.ndarray | None = None,
    has_negative: np.ndarray | None = None,
) -> tf.data.Dataset:
    """An endless dataset of `(real_images, text_embeddings)` from step `start_step` on.

    `images` (N, L, L, 3) uint8, `caption_embeddings` (N, C, D): C captions per image. Yields
    real_images (B, S, S, 3) float32 in [-1, 1] and text_embeddings (B, D) float32, one random
    caption per image. S is `crop_size` (a random S x S crop of each image; None: S = L), and
    `random_flip` mirrors each image with probability 1/2. Each epoch is a fresh permutation
    of the N images; the last N mod B images of a permutation wait for the next one.

    `negative_embeddings` (N, C, D) with `has_negative` (N, C) bool: a negative for each
    caption (`t2igan.text.negatives`), where it has one. Then each batch is `(real_images,
    text_embeddings, negative_embeddings (B, D), has_negative (B,))`, the negatives of the
    captions drawn; batches are otherwise the same as without them.
    """
    num_images, captions_per_image = caption_embeddings.shape[:2]
    if (negative_embeddings is None) != (has_negative is None):
        raise ValueError("negative_embeddings and has_negative go together")
    if negative_embeddings is not None and (negative_embeddings.shape != caption_embeddings.shape
                                            or has_negative.shape != caption_embeddings.shape[:2]):
        raise ValueError(f"negatives of shape {negative_embeddings.shape} / {has_negative.shape} "
                         f"for captions of shape {caption_embeddings.shape}")
    if num_images < batch_size:
        raise ValueError(f"batch size {batch_size} is larger than the dataset ({num_images} images)")
    steps_per_epoch = num_images // batch_size
    image_size = images.shape[1]
    if crop_size is not None and crop_size > image_size:
        raise ValueError(f"crop size {crop_size} is larger than the images ({image_size} px)")
    images = tf.constant(images)
    caption_embeddings = tf.constant(caption_embeddings, dtype=tf.float32)
    if negative_embeddings is not None:
        negative_embeddings = tf.constant(negative_embeddings, dtype=tf.float32)
        has_negative = tf.constant(has_negative, dtype=tf.bool)

    def batch_at(step):
        epoch = step // steps_per_epoch
        position = step % steps_per_epoch
        order = tf.argsort(tf.random.stateless_uniform([num_images], seed=tf.stack([seed, epoch])))
        order = tf.cast(order, tf.int64)
        indices = order[position * batch_size : (position + 1) * batch_size]
        caption_choice = tf.random.stateless_uniform(
            [batch_size], seed=tf.stack([seed + 1, step]), maxval=captions_per_image, dtype=tf.int64
        )
        real_images = tf.gather(images, indices)  # uint8 until cropped: less to copy
        if crop_size is not None and crop_size < image_size:
            # A separate random window per image: row and column indices gathered per sample.
            corners = tf.random.stateless_uniform([2, batch_size, 1], seed=tf.stack([seed + 2, step]),
                                                  maxval=image_size - crop_size + 1, dtype=tf.int64)  # fmt: skip
            window = tf.range(crop_size, dtype=tf.int64)[None, :]
            real_images = tf.gather(real_images, corners[0] + window, axis=1, batch_dims=1)
            real_images = tf.gather(real_images, corners[1] + window, axis=2, batch_dims=1)
        if random_flip:
            flip = tf.random.stateless_uniform([batch_size, 1, 1, 1], seed=tf.stack([seed + 3, step])) < 0.5
            real_images = tf.where(flip, tf.reverse(real_images, axis=[2]), real_images)
        real_images = tf.cast(real_images, tf.float32) / 127.5 - 1.0
        chosen = tf.stack([indices, caption_choice], axis=-1)
        text_embeddings = tf.gather_nd(caption_embeddings, chosen)
        if negative_embeddings is None:
            return real_images, text_embeddings
        negatives = tf.gather_nd(negative_embeddings, chosen), tf.gather_nd(has_negative, chosen)
        return real_images, text_embeddings, *negatives

    seed = tf.constant(seed, tf.int64)
    steps = tf.data.Dataset.counter(start=start_step, dtype=tf.int64)
    return steps.map(batch_at, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
