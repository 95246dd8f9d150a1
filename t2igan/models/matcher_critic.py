"""A second discriminator on the frozen matcher's image features (balance.matcher_critic_weight).

Vision-aided GAN (Kumari et al. 2022) and Projected GAN (Sauer et al. 2021) let D judge
images through a frozen pretrained network, whose features already separate what matters, so
D learns from them in far fewer steps than from pixels. Nothing pretrained may be downloaded
here, so the network is the dataset's own R-precision matcher (t2igan.metrics.matcher), which
has learned from captions alone which colours and shapes they talk about. Small trainable
heads on its 16x16, 8x8 and 4x4 activations each judge the image against the caption, as
the fusion discriminator does (a joint convolution over [features, text] plus a projection
term). Unlike the frozen matcher's own matching loss, which G learns to game with patterns
the matcher misreads, the heads keep learning from real, fake and mismatched pairs.
"""

import keras
from keras import layers, ops

from t2igan.models.blocks import SpectralNorm
from t2igan.models.fusion import PhraseMatch, text_match_terms, text_scale
from t2igan.text.encoder import sentence_of


class MatcherCritic(keras.Model):
    """`features(images)`: each head's 4x4 map of the frozen tower's activations (what does not
    depend on the caption, so an image batch judged against two captions is brought down once);
    `judge(features, text_embeddings)`: (B, 1) float32 logits, the mean of one head per map.

    `image_tower` is the matcher's image encoder (`Matcher.images`: a CNN of stride-2 blocks
    down to 4x4, each ending in LeakyReLU); it is used frozen (inference mode, not trained).
    Each head brings its map down to 4x4 with spectrally normalised stride-2 4x4 convolutions
    (one 3x3 convolution for a map that is 4x4 already) of `channels` channels.
    `phrases`: each head also scores the caption's phrases against the regions they attend to
    (`PhraseMatch`, as the fusion discriminator does); the text is then (B, 1 + K, text_dim),
    caption vector first. Without it the heads read the caption vector alone.
    """

    def __init__(self, image_tower: keras.Model, *, text_dim: int, channels: int = 64, phrases: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        maps = [layer.output for layer in image_tower.layers if isinstance(layer, layers.LeakyReLU)][1:]
        if not maps:
            raise ValueError("the matcher's image tower has no LeakyReLU blocks after its first to judge from")
        self.extractor = keras.Model(image_tower.input, maps, name="matcher_features")
        self.extractor.trainable = False
        self.text_input_scale = text_scale(text_dim)
        self.heads = []
        for index, features in enumerate(maps):
            size = features.shape[1]
            inputs = keras.Input(features.shape[1:])
            x = inputs
            if size == 4:
                x = SpectralNorm(layers.Conv2D(channels, 3, padding="same"))(x)
                x = layers.LeakyReLU(0.2)(x)
            while size > 4:
                x = SpectralNorm(layers.Conv2D(channels, 4, strides=2, padding="same"))(x)
                x = layers.LeakyReLU(0.2)(x)
                size //= 2
            down = keras.Model(inputs, x, name=f"head{index}_down")
            joint = keras.Sequential([
                keras.Input((4, 4, channels + text_dim)),
                SpectralNorm(layers.Conv2D(channels, 3, padding="same")),
                layers.LeakyReLU(0.2),
                layers.Flatten(),
                SpectralNorm(layers.Dense(1, dtype="float32")),
            ], name=f"head{index}_joint")  # fmt: skip
            projection = SpectralNorm(layers.Dense(channels, use_bias=False, dtype="float32"),
                                      name=f"head{index}_projection")  # fmt: skip
            projection.build((None, text_dim))
            phrase_match = None
            if phrases:
                phrase_match = PhraseMatch(channels, name=f"head{index}_phrase_match")
                phrase_match(ops.zeros((1, 4, 4, channels)), ops.zeros((1, 1, text_dim)))  # creates its weights
            self.heads.append(_Head(down, joint, projection, phrase_match))

    @property
    def head_variables(self) -> list:
        """What training changes (and a checkpoint keeps): the heads', not the frozen tower's."""
        return [variable for head in self.heads for variable in head.variables]

    def maps(self, images):
        """(B, S, S, 3) in [-1, 1] -> the frozen tower's maps, largest first."""
        return self.extractor(images, training=False)

    def features(self, images, training=None):
        """(B, S, S, 3) in [-1, 1] -> one (B, 4, 4, channels) map per head."""
        return [head.down(maps, training=training) for maps, head in zip(self.maps(images), self.heads)]

    def judge(self, features, text_embeddings, training=None):
        text = ops.cast(text_embeddings, "float32") * self.text_input_scale
        logits = 0.0
        for x, head in zip(features, self.heads):
            joint, projected = text_match_terms(x, sentence_of(text), head.joint, head.projection,
                                                training=training)  # fmt: skip
            logits = logits + joint + projected
            if head.phrase_match is not None:
                logits = logits + head.phrase_match(x, text[:, 1:], training=training)
        return logits / len(self.heads)


class _Head(keras.layers.Layer):
    """One map's head: `down` to 4x4, then `joint` and `projection` against the caption, and
    `phrase_match` (or None) against its phrases."""

    def __init__(self, down, joint, projection, phrase_match=None, **kwargs):
        super().__init__(**kwargs)
        self.down, self.joint, self.projection, self.phrase_match = down, joint, projection, phrase_match
