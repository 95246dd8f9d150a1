"""A stronger conditioning model: text fused into every generator block, a projection critic.

The seed's StackGAN Stage-I network lets the caption in once on each side (concatenated with
the noise at G's input, and with D's 4x4 features); on toybirds its generator learns shapes
and backgrounds but not the colours a caption asks for. Here every generator block modulates
its normalised features with a per-channel scale and shift computed from the sentence
embedding (DF-GAN's text affine, Tao et al. 2022, on BigGAN's conditional BatchNorm), and the
discriminator judges the image
against the caption both through DF-GAN's joint convolution over [features, text] and through
a projection term <embed(text), features> (Miyato & Koyama 2018) that scores the match
directly.

With phrase tokens (`model.phrase_tokens` > 0, the default: the caption's phrases embedded
one by one beside its vector) both sides also read the phrases where they apply, as AttnGAN's
word attention does: every position of every generator block attends over the phrases and is
scaled and shifted by what it read (`PhraseAttention`), and the discriminator scores each
phrase against the image region that phrase attends to (`PhraseMatch`). One sentence vector
blends "a red crown, blue wings" into both colours on both parts; a phrase keeps its colour
with its part.
"""

import keras
from keras import layers, ops

from t2igan.models.blocks import (
    NORMS,
    BatchNorm,
    ContrastiveHeads,
    batch_spread_channel,
    build_with_heads,
    normalized,
    pyramid_levels,
    scaled_channels,
    spectral_if,
)
from t2igan.text.encoder import sentence_of


def text_scale(text_dim: int) -> float:
    """Sentence encoders such as all-MiniLM-L6-v2 return unit-length vectors, whose entries
    (~1/sqrt(T)) would be drowned by N(0, 1) noise next to them; scaled by sqrt(T) each entry
    has unit variance, like the noise."""
    return float(text_dim) ** 0.5


@keras.saving.register_keras_serializable(package="t2igan")
class TextAffine(layers.Layer):
    """DF-GAN's affine fusion: features * gamma(condition) + beta(condition), per channel.

    `condition` (B, K) -> gamma, beta (B, C) by two small MLPs whose last layers start at
    gamma = 1, beta = 0, so a fresh block passes its features through unchanged.
    """

    def __init__(self, channels: int, hidden: int, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.hidden = channels, hidden
        self.gamma = keras.Sequential([
            layers.Dense(hidden, activation="relu"),
            layers.Dense(channels, kernel_initializer="zeros", bias_initializer="ones"),
        ], name="gamma")  # fmt: skip
        self.beta = keras.Sequential([
            layers.Dense(hidden, activation="relu"),
            layers.Dense(channels, kernel_initializer="zeros", bias_initializer="zeros"),
        ], name="beta")  # fmt: skip

    def call(self, features, condition):
        gamma = ops.cast(self.gamma(condition), features.dtype)[:, None, None, :]
        beta = ops.cast(self.beta(condition), features.dtype)[:, None, None, :]
        return features * gamma + beta

    def compute_output_shape(self, features_shape, condition_shape):
        return features_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "hidden": self.hidden}


def phrase_mask(phrases):
    """(B, K, D) phrase embeddings -> (B, K) float32, 1 for a phrase, 0 for padding (zeros)."""
    return ops.cast(ops.any(ops.not_equal(phrases, 0), axis=-1), "float32")


def _attend(scores, mask, axis):
    """Softmax of float32 `scores` over `axis`, where padded phrases (`mask` 0, broadcast to
    `scores`) get no weight. The mask is added as a bias of its own (small) shape, which is
    cheaper than selecting at every position of `scores`."""
    return ops.softmax(scores + (mask - 1.0) * 1e9, axis=axis)


@keras.saving.register_keras_serializable(package="t2igan")
class PhraseAttention(layers.Layer):
    """Each position of a feature map reads the caption's phrases and is scaled and shifted by
    what it read: AttnGAN's word attention, applied as a per-position text affine.

    `(features (B, H, W, C), phrases (B, K, D))` -> features * (1 + gamma(context)) +
    beta(context), where `context` (B, H, W, key_dim) is each position's softmax-weighted mean
    of the phrases' values (keys and queries `key_dim` wide; padded phrases, all zeros, get no
    weight). gamma and beta start at zero, so a fresh layer passes its features through.
    """

    def __init__(self, channels: int, key_dim: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.key_dim = channels, key_dim
        self.query = layers.Dense(key_dim, use_bias=False, name="query")
        self.key = layers.Dense(key_dim, use_bias=False, name="key")
        self.value = layers.Dense(key_dim, activation="relu", name="value")
        self.gamma = layers.Dense(channels, kernel_initializer="zeros", name="gamma")
        self.beta = layers.Dense(channels, kernel_initializer="zeros", name="beta")

    def build(self, features_shape, phrases_shape):
        # Built here because `call` reads the query's kernel without calling the layer.
        self.query.build(features_shape)
        self.key.build(phrases_shape)
        self.value.build(phrases_shape)
        self.gamma.build((*phrases_shape[:-1], self.key_dim))
        self.beta.build((*phrases_shape[:-1], self.key_dim))

    def call(self, features, phrases):
        # Computed per phrase, not per position: <query(x), key(p)> = <x, W_q key(p)>, and as
        # the attention weights sum to 1, gamma(sum_k w_k value_k) = sum_k w_k gamma(value_k)
        # (the same for beta). The layer is the one the docstring describes, but no key_dim-wide
        # tensor is made at every position: at 64x64 the maps are 16 channels wide (width 0.25)
        # against 64-wide queries and values, and the step is cheaper (README, "Performance").
        query_kernel = ops.cast(self.query.kernel, "float32")  # (C, d)
        keys = ops.einsum("bkd,cd->bkc", ops.cast(self.key(phrases), "float32"), query_kernel) / self.key_dim**0.5
        scores = ops.einsum("bhwc,bkc->bhwk", features, ops.cast(keys, features.dtype))
        weights = _attend(ops.cast(scores, "float32"), phrase_mask(phrases)[:, None, None, :], axis=-1)
        weights = ops.cast(weights, features.dtype)
        values = self.value(phrases)  # (B, K, d)

        def per_position(per_phrase):  # (B, K, C) -> (B, H, W, C), mixed by each position's weights
            return ops.einsum("bhwk,bkc->bhwc", weights, ops.cast(per_phrase, features.dtype))

        return features * (1.0 + per_position(self.gamma(values))) + per_position(self.beta(values))

    def compute_output_shape(self, features_shape, phrases_shape):
        return features_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "key_dim": self.key_dim}


def build_fusion_generator(
    *,
    text_dim: int = 384,
    noise_dim: int = 100,
    condition_dim: int = 128,
    image_size: int = 64,
    base_channels: int = 1024,
    width: float = 1.0,
    phrase_tokens: int = 0,
    phrase_key_dim: int = 64,
    phrase_max_size: int | None = None,
    project_text: bool = True,
    seed: int | None = None,
    name: str = "generator",
) -> keras.Model:
    """A generator whose every block is steered by the caption (conditional BatchNorm).

    `[noise, text]` (with `project_text` false the noise alone, as in DF-GAN) is projected to a
    4x4 map of `base_channels` * `width` channels; each block upsamples 2x (nearest), convolves
    3x3, normalises with BatchNorm and then applies a per-channel scale and shift computed from
    `[noise, text]` (`TextAffine`, DF-GAN's fusion; the BatchNorm keeps the activations' scale
    in check, as BigGAN's conditional BatchNorm does), then ReLU. Channels halve per block; a
    3x3 convolution makes RGB. The text is scaled by `text_scale`; `condition_dim` is the width
    of the text-affine MLPs' hidden layer. There is no conditioning augmentation: the returned
    mu and log_sigma are zeros, so the KL term is 0.
    With `phrase_tokens` = K > 0 the text input is (B, 1 + K, text_dim) (`CaptionEmbedder`'s
    caption vector, then its phrases): the caption vector conditions as above and every block
    whose output is at most `phrase_max_size` wide (None: every block) also applies
    `PhraseAttention` (keys `phrase_key_dim` wide) over the phrases after its text affine.

    Inputs `[noise (B, noise_dim), text_embeddings (B, text_dim)]`; outputs
    `[images (B, S, S, 3) in [-1, 1], mu (B, 1), log_sigma (B, 1)]`. `seed` is unused (the
    layers initialise from Keras' global seed) and kept for a common signature.
    """
    del seed
    levels = pyramid_levels(image_size)
    noise = keras.Input((noise_dim,), name="noise")
    text_shape = (1 + phrase_tokens, text_dim) if phrase_tokens else (text_dim,)
    text_embeddings = keras.Input(text_shape, name="text_embeddings")
    text = layers.Rescaling(text_scale(text_dim), name="text_scale")(sentence_of(text_embeddings))
    if phrase_tokens:
        phrases = layers.Rescaling(text_scale(text_dim), name="phrase_scale")(text_embeddings[:, 1:])

    # DF-GAN's condition: noise beside the text in every block, so that noise keeps shaping the
    # image at every resolution (with the text alone there, each caption collapses to one image).
    condition = layers.Concatenate(name="condition")([noise, text])
    channels = scaled_channels(base_channels, width)
    # Without the text here the 4x4 layout (where the bird is, how large) starts from the noise,
    # and the caption reaches it only through the blocks' affines.
    start = condition if project_text else noise
    x = layers.Dense(4 * 4 * channels, use_bias=False, name="project")(start)
    x = layers.Reshape((4, 4, channels))(x)
    x = BatchNorm(name="project_norm")(x)
    x = layers.ReLU()(x)
    for level in range(1, levels + 1):
        x = layers.UpSampling2D(2, name=f"up{level}")(x)
        x = layers.Conv2D(scaled_channels(base_channels >> level, width), 3, padding="same",
                          use_bias=False, name=f"conv{level}")(x)  # fmt: skip
        x = BatchNorm(center=False, scale=False, name=f"conv{level}_norm")(x)
        x = TextAffine(x.shape[-1], condition_dim, name=f"conv{level}_text")(x, condition)
        if phrase_tokens and (phrase_max_size is None or 4 << level <= phrase_max_size):
            x = PhraseAttention(x.shape[-1], phrase_key_dim, name=f"conv{level}_phrases")(x, phrases)
        x = layers.ReLU()(x)
    images = layers.Conv2D(
        3, 3, padding="same", activation="tanh", name="to_rgb", dtype="float32"
    )(x)  # fmt: skip
    no_kl = ops.zeros_like(noise[:, :1])
    return keras.Model([noise, text_embeddings], [images, no_kl, no_kl], name=name)


@keras.saving.register_keras_serializable(package="t2igan")
class FusionDiscriminator(keras.Model):
    """DF-GAN's residual discriminator with a projection term, split where the text joins.

    `encode`: (B, S, S, 3) in [-1, 1] -> (B, 4, 4, C) through residual downsampling blocks
    (conv4x4/2 -> conv3x3 beside an average-pooled 1x1 shortcut, the residual scaled by a
    learned gate that starts at 0). `judge`: features and (B, text_dim) embeddings -> (B, 1)
    logits = joint(features, text) + <project(text), sum-pooled features>. The joint head is
    DF-GAN's conv3x3 over [features, text tiled over 4x4], then a dense logit after `dropout`.

    `norm` is "spectral" (spectral normalisation of every conv and dense weight), "batch"
    (BatchNorm after every conv, as the seed's discriminator; the presets built on StackGAN's
    objective use it) or "none";
    `minibatch_std` adds ProGAN's batch-spread channel to the joint head. `augment` is only
    "flip" (horizontal) or nothing, as in the StackGAN discriminator. `contrastive_dim` > 0 adds
    `ContrastiveHeads` of that width (`contrastive`); 0 means none. `phrase_tokens` = K > 0
    takes (B, 1 + K, text_dim) text (caption vector, then phrases): the joint and projection
    terms read the caption vector, and `PhraseMatch` adds each phrase's score against the
    region it attends to.
    """

    def __init__(
        self,
        *,
        text_dim: int = 384,
        image_size: int = 64,
        base_channels: int = 64,
        width: float = 1.0,
        dropout: float = 0.0,
        augment: tuple[str, ...] = ("flip",),
        norm: str = "spectral",
        minibatch_std: bool = False,
        contrastive_dim: int = 0,
        phrase_tokens: int = 0,
        seed: int | None = None,
        name: str = "discriminator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if norm not in NORMS:
            raise ValueError(f"unknown discriminator norm {norm!r}; known: {NORMS}")
        if set(augment) - {"flip"}:
            raise ValueError(f"unknown augmentation {sorted(set(augment) - {'flip'})}; known: ['flip']")
        self.norm, self.minibatch_std = norm, minibatch_std
        self.text_dim, self.image_size = text_dim, image_size
        self.text_input_scale = text_scale(text_dim)  # what `judge` multiplies the text by
        levels = pyramid_levels(image_size)
        self.feature_size = image_size >> levels
        self.augmentation = keras.Sequential(
            [layers.RandomFlip("horizontal", seed=seed)] if "flip" in augment else [layers.Identity()],
            name="augmentation",
        )

        def channels(level: int) -> int:
            return scaled_channels(base_channels << min(level, 3), width)

        images = keras.Input((image_size, image_size, 3))
        x = self._normalized(layers.Conv2D(channels(0), 3, padding="same", name="from_rgb"), x=images)
        for level in range(levels):
            x = self._down_block(x, channels(level + 1), name=f"down{level + 1}")
        self.image_encoder = keras.Model(images, x, name="image_encoder")
        feature_channels = x.shape[-1]

        self.joint = keras.Sequential([
            keras.Input((self.feature_size, self.feature_size,
                         feature_channels + text_dim + int(minibatch_std))),
            *normalized(layers.Conv2D(feature_channels, 3, padding="same", name="joint"), self.norm),
            layers.LeakyReLU(0.2),
            layers.Flatten(),
            layers.Dropout(dropout, seed=seed),
            spectral_if(layers.Dense(1, name="logit", dtype="float32"), self.norm),
        ], name="joint")  # fmt: skip
        self.projection = spectral_if(
            layers.Dense(feature_channels, use_bias=False, name="projection", dtype="float32"), self.norm
        )
        self.contrastive = (ContrastiveHeads(contrastive_dim, text_scale=self.text_input_scale, name="contrastive")
                            if contrastive_dim else None)
        self.phrase_match = (PhraseMatch(feature_channels, norm=self.norm, name="phrase_match")
                             if phrase_tokens else None)  # fmt: skip
        build_with_heads(self, image_size, text_dim, phrase_tokens)

    def _down_block(self, x, out_channels: int, name: str):
        residual = layers.LeakyReLU(0.2)(x)
        conv1 = layers.Conv2D(out_channels, 4, strides=2, padding="same", name=f"{name}_conv1")
        residual = self._normalized(conv1, x=residual)
        residual = layers.LeakyReLU(0.2)(residual)
        conv2 = layers.Conv2D(out_channels, 3, padding="same", name=f"{name}_conv2")
        residual = self._normalized(conv2, x=residual)
        residual = Gate(name=f"{name}_gate")(residual)
        shortcut = layers.AveragePooling2D(2)(x)
        if x.shape[-1] != out_channels:
            shortcut = self._normalized(layers.Conv2D(out_channels, 1, name=f"{name}_shortcut"), x=shortcut)
        return layers.Add(name=name)([shortcut, residual])

    def _normalized(self, convolution, x):
        """`x` through a conv and its normalisation, as `self.norm` asks."""
        for layer in normalized(convolution, self.norm):
            x = layer(x)
        return x

    def encode(self, images, training=None):
        """(B, S, S, 3) in [-1, 1] -> image features (B, 4, 4, C)."""
        return self.image_encoder(self.augmentation(images, training=training), training=training)

    def judge(self, features, text_embeddings, training=None):
        """Image features (B, 4, 4, C) and (B, text_dim) embeddings (or (B, 1 + K, text_dim)
        with phrase tokens) -> (B, 1) float32 logits."""
        text = ops.cast(text_embeddings, "float32") * self.text_input_scale
        extra = [batch_spread_channel(features)] if self.minibatch_std else []
        joint, projected = text_match_terms(features, sentence_of(text), self.joint, self.projection, extra,
                                            training=training)  # fmt: skip
        if self.phrase_match is None:
            return joint + projected
        return joint + projected + self.phrase_match(features, text[:, 1:], training=training)

    def call(self, inputs, training=None):
        images, text_embeddings = inputs
        return self.judge(self.encode(images, training=training), text_embeddings, training=training)


def text_match_terms(features, text, joint, projection, extra=(), training=None):
    """How well image features (B, H, W, C) match scaled caption embeddings `text` (B, T), as
    two (B, 1) float32 logit terms: `joint` (DF-GAN's joint convolution head) over the features
    with the caption tiled beside them (and any `extra` channels), and a projection
    discriminator's inner product of the sum-pooled features with `projection(text)`."""
    height, width = features.shape[1], features.shape[2]
    grid = ops.tile(ops.cast(text, features.dtype)[:, None, None, :], (1, height, width, 1))
    joint_logit = joint(ops.concatenate([features, grid, *extra], axis=-1), training=training)
    pooled = ops.sum(ops.cast(features, "float32"), axis=(1, 2))
    projected = ops.sum(pooled * projection(text, training=training), axis=-1, keepdims=True)
    return joint_logit, projected


@keras.saving.register_keras_serializable(package="t2igan")
class PhraseMatch(layers.Layer):
    """The discriminator's phrase term: each phrase finds its region of the image and is scored
    against it, the mean over the caption's phrases a (B, 1) float32 logit.

    `(features (B, H, W, C), phrases (B, K, D))`: phrase k attends over the H x W positions
    (queries `keys(phrase)`, keys the features), and its score is <projection(phrase), region>,
    the region being the attention-weighted sum of the features scaled to H x W positions (so
    the term has the size of the sentence projection over sum-pooled features). Padded phrases
    (zeros) count for nothing. `norm` "spectral" normalises both dense weights, as D's others.
    """

    def __init__(self, channels: int, *, norm: str = "spectral", **kwargs):
        super().__init__(**kwargs)
        self.channels, self.norm = channels, norm
        self.keys = spectral_if(layers.Dense(channels, use_bias=False, name="keys", dtype="float32"), norm)
        self.projection = spectral_if(
            layers.Dense(channels, use_bias=False, name="projection", dtype="float32"), norm
        )

    def call(self, features, phrases, training=None):
        positions = features.shape[1] * features.shape[2]
        features = ops.reshape(ops.cast(features, "float32"), (-1, positions, features.shape[-1]))
        phrases = ops.cast(phrases, "float32")
        mask = phrase_mask(phrases)  # (B, K)
        scores = ops.einsum("bkc,bpc->bkp", self.keys(phrases, training=training), features)
        weights = _attend(scores / self.channels**0.5, mask[:, :, None], axis=-1)
        regions = positions * ops.einsum("bkp,bpc->bkc", weights, features)
        scores = ops.sum(regions * self.projection(phrases, training=training), axis=-1)  # (B, K)
        return ops.sum(scores * mask, axis=-1, keepdims=True) / ops.maximum(
            ops.sum(mask, axis=-1, keepdims=True), 1.0
        )

    def compute_output_shape(self, features_shape, phrases_shape):
        return (features_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "norm": self.norm}


@keras.saving.register_keras_serializable(package="t2igan")
class Gate(layers.Layer):
    """Multiplies its input by a learned scalar that starts at 0 (DF-GAN's residual gamma), so
    each residual block starts as its shortcut."""

    def build(self, input_shape):
        self.gate = self.add_weight(shape=(), initializer="zeros", name="gate")

    def call(self, x):
        return x * ops.cast(self.gate, x.dtype)
