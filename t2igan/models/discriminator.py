"""StackGAN Stage-I discriminator: (image, sentence embedding) -> one matching logit."""

import keras
from keras import layers, ops

from t2igan.models.blocks import (
    NORMS,
    ConditioningAugmentation,
    ContrastiveHeads,
    batch_spread_channel,
    build_with_heads,
    normalized,
    pyramid_levels,
    scaled_channels,
    spectral_if,
)

AUGMENTATIONS = ("flip",)


@keras.saving.register_keras_serializable(package="t2igan")
class Discriminator(keras.Model):
    """The seed project's discriminator, split where the text joins the image.

    `encode` runs the augmentation and the image tower: (B, S, S, 3) -> (B, 4, 4, C).
    `judge` joins those features with a text condition replicated over the 4x4 grid and
    returns (B, 1) logits. Keeping them apart lets the training step encode a batch of real
    images once and judge it against both its own and mismatched captions.

    `augment` names the augmentations of the input layer (only "flip", horizontal, for now);
    an empty tuple means none. `dropout` is the rate before the final dense layer. `norm` is
    one of NORMS: with the seed's BatchNorm, D wins on toybirds (D(fake) 0.01 by step 2,000,
    G's samples noise); "spectral" is SN-GAN's remedy.
    `minibatch_std` adds ProGAN's batch-spread channel to the joint head (one more input
    channel there), which penalises a generator that collapses to one image.
    `contrastive_dim` > 0 adds `ContrastiveHeads` of that width (`contrastive`); 0 means none.
    """

    def __init__(
        self,
        *,
        text_dim: int = 384,
        condition_dim: int = 128,
        image_size: int = 64,
        base_channels: int = 64,
        width: float = 1.0,
        dropout: float = 0.0,
        augment: tuple[str, ...] = ("flip",),
        norm: str = "batch",
        minibatch_std: bool = False,
        contrastive_dim: int = 0,
        seed: int | None = None,
        name: str = "discriminator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        unknown = set(augment) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; known: {AUGMENTATIONS}")
        if norm not in NORMS:
            raise ValueError(f"unknown discriminator norm {norm!r}; known: {NORMS}")
        self.norm = norm
        self.text_input_scale = 1.0  # it reads the embeddings as given (MA-GP's text gradient)
        self.minibatch_std = minibatch_std
        self.text_dim = text_dim
        self.image_size = image_size
        levels = pyramid_levels(image_size)
        self.feature_size = image_size >> levels

        self.augmentation = keras.Sequential(name="augmentation")
        if "flip" in augment:
            self.augmentation.add(layers.RandomFlip("horizontal", seed=seed))
        # In Keras 3 an empty Sequential cannot be called; an Identity keeps one code path.
        self.augmentation.add(layers.Identity())

        tower = [keras.Input((image_size, image_size, 3))]
        for level in range(levels):
            tower += [
                *normalized(layers.Conv2D(
                    scaled_channels(base_channels << level, width), kernel_size=4, strides=2,
                    padding="same", use_bias=norm != "batch", name=f"down{level + 1}",
                ), norm),  # fmt: skip
                layers.LeakyReLU(0.2),
            ]
        self.image_encoder = keras.Sequential(tower, name="image_encoder")
        feature_channels = scaled_channels(base_channels << (levels - 1), width)

        self.conditioning = ConditioningAugmentation(condition_dim, seed=seed, name="conditioning")
        self.joint = keras.Sequential(
            [
                keras.Input((self.feature_size, self.feature_size,
                             feature_channels + condition_dim + int(minibatch_std))),  # fmt: skip
                *normalized(layers.Conv2D(
                    feature_channels, kernel_size=1, use_bias=norm != "batch", name="joint"
                ), norm),  # fmt: skip
                layers.LeakyReLU(0.2),
                layers.Flatten(),
                layers.Dropout(dropout, seed=seed),
                # float32 logits under mixed precision: the losses need their range.
                spectral_if(layers.Dense(1, name="logit", dtype="float32"), self.norm),
            ],
            name="joint",
        )
        self.contrastive = (ContrastiveHeads(contrastive_dim, text_scale=self.text_input_scale, name="contrastive")
                            if contrastive_dim else None)
        # Create every weight now, so parameter counts and checkpoints need no data.
        build_with_heads(self, image_size, text_dim)

    def encode(self, images, training=None):
        """(B, S, S, 3) in [-1, 1] -> image features (B, 4, 4, C)."""
        return self.image_encoder(self.augmentation(images, training=training), training=training)

    def judge(self, features, text_embeddings, training=None):
        """Image features (B, 4, 4, C) and (B, text_dim) embeddings -> (B, 1) logits."""
        condition, _, _ = self.conditioning(text_embeddings, training=training)
        grid = ops.tile(condition[:, None, None, :], (1, self.feature_size, self.feature_size, 1))
        joined = [features, grid]
        if self.minibatch_std:
            joined.append(batch_spread_channel(features))
        return self.joint(ops.concatenate(joined, axis=-1), training=training)

    def call(self, inputs, training=None):
        images, text_embeddings = inputs
        return self.judge(self.encode(images, training=training), text_embeddings, training=training)


def build_discriminator(**kwargs) -> Discriminator:
    """A built discriminator; keyword arguments as `Discriminator`."""
    return Discriminator(**kwargs)
