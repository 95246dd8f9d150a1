"""The phrase matcher: AttnGAN's word-level DAMSM with the caption's phrases for its words.

The sentence matcher (t2igan.metrics.matcher) reads one vector per caption, and a caption's
vector barely says which part carries which colour: "black wings and a grey belly" and "grey
wings and a black belly" embed at cosine 0.99, and on toybirds' real test images the trained
sentence matcher prefers the true caption over such a colour-rotated one only 75% of the
time. So its caption-matching term (balance.matching_weight) cannot teach G where a colour
goes. Here each phrase ("black wings") finds its region of the image by attention and is
scored against it, so a black belly does not satisfy "black wings".

Two towers, trained contrastively on real images (both directions, image -> captions and
caption -> images, as DAMSM): an image tower (the sentence matcher's CNN) whose
`region_size` x `region_size` map is projected to `embedding_dim` region vectors, and a
phrase tower (one hidden layer, as the sentence matcher's text tower) over the frozen phrase
embeddings of `text.phrase_tokens`. It is trained on first use and cached; G trains against
it frozen (balance.phrase_matching_weight).
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from t2igan.errors import UserError

# Bump when the architecture or its training changes, so cached phrase matchers are retrained.
PHRASE_MATCHER_VERSION = 1


class PhraseMatcher:
    """The frozen towers: `regions(images)` ((B, S, S, 3) in [-1, 1] -> (B, P, E) region
    vectors) and `phrases(tokens)` ((B, 1 + K, T) caption tokens, row 0 the caption's vector,
    rows 1..K its phrases, zeros past the last -> (B, K, E) phrase vectors). `sharpness` is
    the attention's inverse temperature over the regions (DAMSM's gamma_1)."""

    def __init__(self, image_tower, phrase_tower, *, sharpness: float):
        self.image_tower, self.phrase_tower, self.sharpness = image_tower, phrase_tower, sharpness
        for tower in (image_tower, phrase_tower):
            tower.trainable = False

    def regions(self, images, training=False):
        return self.image_tower(images, training=training)[1]

    def phrases(self, tokens, training=False):
        return self.phrase_tower(tokens[:, 1:], training=training)

    def scores(self, regions, tokens, *, pairwise: bool = True):
        """How well each caption's phrases find themselves in each image: (B, B) for every
        image-caption pair, or (B,) for image i with caption i (`pairwise=False`)."""
        from t2igan.models.fusion import phrase_mask

        return phrase_region_scores(regions, self.phrases(tokens), phrase_mask(tokens[:, 1:]),
                                    sharpness=self.sharpness, pairwise=pairwise)  # fmt: skip


def phrase_region_scores(regions, phrases, mask, *, sharpness: float, pairwise: bool = True):
    """DAMSM's word-region relevance with phrases for words, float32.

    `regions` (Bi, P, E), `phrases` (Bt, K, E), `mask` (Bt, K). Phrase k of caption t attends
    over image i's regions (softmax of `sharpness` * cosine), and its relevance is the cosine
    between the phrase and the attended mix of regions; a caption's score is the mean over its
    phrases (the mask's 1s). Returns (Bi, Bt), or (B,) for the pairs i = t (`pairwise=False`,
    Bi = Bt). The mix's length is computed from the regions' Gram matrix, so no (Bi, Bt, K, E)
    tensor is formed."""
    from keras import ops

    regions = _unit(ops.cast(regions, "float32"))
    phrases = _unit(ops.cast(phrases, "float32"))
    mask = ops.cast(mask, "float32")
    gram = ops.einsum("ipe,iqe->ipq", regions, regions)
    if pairwise:
        cosines = ops.einsum("ipe,tke->itkp", regions, phrases)
        weights = ops.softmax(sharpness * cosines, axis=-1)
        length = ops.einsum("itkp,ipq,itkq->itk", weights, gram, weights)
        mask = mask[None]
    else:
        cosines = ops.einsum("ipe,ike->ikp", regions, phrases)
        weights = ops.softmax(sharpness * cosines, axis=-1)
        length = ops.einsum("ikp,ipq,ikq->ik", weights, gram, weights)
    relevance = ops.sum(weights * cosines, axis=-1) * ops.rsqrt(length + 1e-8)
    return ops.sum(relevance * mask, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)


def _unit(vectors):
    from keras import ops

    return vectors * ops.rsqrt(ops.sum(ops.square(vectors), axis=-1, keepdims=True) + 1e-12)


def build_towers(image_size: int, text_dim: int, *, embedding_dim: int = 256, width: int = 32,
                 text_hidden: int = 512, region_size: int = 8, seed: int = 0):
    """(image tower, sentence tower, phrase tower) as Keras models. The image tower is the
    sentence matcher's CNN (stride-2 blocks of `width`, doubling up to 8x, down to 4x4); its
    `region_size` map, projected by a 1x1 convolution, gives the regions, and its pooled 4x4
    map the sentence vector the sentence tower's caption vectors are matched with (DAMSM's
    sentence half, which shapes the tower during training; G is trained on the regions)."""
    import keras

    from t2igan.metrics.matcher import build_text_encoder, conv_blocks
    from t2igan.models.fusion import text_scale

    if region_size < 4 or region_size >= image_size or region_size & (region_size - 1):
        raise UserError(f"metrics.phrase_matcher_region_size must be a power of 2 from 4 to below the "
                        f"image size {image_size}, got {region_size}")  # fmt: skip
    initializer = keras.initializers.HeNormal(seed=seed)
    images = keras.Input((image_size, image_size, 3))
    blocks = conv_blocks(images, width=width, seed=seed)
    (tapped,) = [block for block in blocks if block.shape[1] == region_size]
    regions = keras.layers.Conv2D(embedding_dim, 1, kernel_initializer=initializer)(tapped)
    regions = keras.layers.Reshape((region_size * region_size, embedding_dim), name="regions")(regions)
    x = blocks[-1]
    sentence = keras.layers.Dense(embedding_dim, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(
        keras.layers.GlobalAveragePooling2D()(x))
    image_tower = keras.Model(images, [sentence, regions], name="image_tower")
    sentence_tower = build_text_encoder(text_dim, embedding_dim, hidden=text_hidden, seed=seed)
    phrases = keras.Input((None, text_dim))  # (B, K, T): Dense layers act on the last axis
    x = keras.layers.Rescaling(text_scale(text_dim))(phrases)
    x = keras.layers.Dense(text_hidden, activation="relu", kernel_initializer=keras.initializers.HeNormal(seed=seed))(x)
    x = keras.layers.Dense(embedding_dim, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    phrase_tower = keras.Model(phrases, x, name="phrase_tower")
    return image_tower, sentence_tower, phrase_tower


def build_phrase_matcher(image_size: int, text_dim: int, **settings):
    """The towers of `build_towers` as one Keras model (saved as one file): `[images (B, S, S, 3)
    in [-1, 1], caption vectors (B, T), phrases (B, K, T)]` -> `[image sentence vectors (B, E),
    regions (B, P, E), caption vectors (B, E), phrase vectors (B, K, E)]`."""
    import keras

    image_tower, sentence_tower, phrase_tower = build_towers(image_size, text_dim, **settings)
    images = keras.Input((image_size, image_size, 3), name="images")
    captions = keras.Input((text_dim,), name="captions")
    phrases = keras.Input((None, text_dim), name="phrases")
    sentence, regions = image_tower(images)
    outputs = [sentence, regions, sentence_tower(captions), phrase_tower(phrases)]
    return keras.Model([images, captions, phrases], outputs, name="phrase_matcher")


def phrase_matcher_losses(model, images, tokens, *, temperature: float, sentence_temperature: float,
                          sharpness: float, training: bool):
    """(sentence loss, phrase loss), float32 scalars, of the `build_phrase_matcher` model on
    real `images` (B, S, S, 3) in [-1, 1] with their captions' `tokens` (B, 1 + K, T): each
    image should score its own caption above the batch's others and each caption its own image
    (identical captions all count as own), by sentence vectors and by phrase-region scores."""
    from keras import ops

    from t2igan.losses import contrastive_losses, matching_losses
    from t2igan.models.fusion import phrase_mask

    sentence, regions, captions, phrases = model([images, tokens[:, 0], tokens[:, 1:]], training=training)
    sentence_loss = ops.mean(matching_losses(sentence, captions, temperature=sentence_temperature))
    scores = phrase_region_scores(regions, phrases, phrase_mask(tokens[:, 1:]), sharpness=sharpness)
    same = same_captions(tokens[:, 0])
    phrase_loss = ops.mean(contrastive_losses(scores, same, temperature=temperature)
                           + contrastive_losses(ops.transpose(scores), same, temperature=temperature))
    return sentence_loss, phrase_loss


def same_captions(caption_vectors):
    """(B, T) caption vectors -> (B, B) float32: 1 where two rows are the same caption."""
    from keras import ops

    from t2igan.losses import same_rows

    return same_rows(_unit(ops.cast(caption_vectors, "float32")))


def train_phrase_matcher(images: np.ndarray, tokens: np.ndarray, *, epochs: int, batch_size: int,
                         learning_rate: float, temperature: float, sentence_temperature: float,
                         sharpness: float, seed: int = 0, progress: bool = True, **settings):
    """Train on (N, S, S, 3) uint8 images and (N, C, 1 + K, T) caption tokens (a random one of
    each image's C captions per step) with Adam; `settings` go to `build_towers`. Returns (the
    `build_phrase_matcher` model, seconds)."""
    import keras
    import tensorflow as tf

    from t2igan.data.pipeline import training_batches

    keras.utils.set_random_seed(seed)
    model = build_phrase_matcher(images.shape[1], tokens.shape[-1], seed=seed, **settings)
    optimizer = keras.optimizers.Adam(learning_rate)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(real_images, batch_tokens):
        with tf.GradientTape() as tape:
            sentence_loss, phrase_loss = phrase_matcher_losses(
                model, real_images, batch_tokens, temperature=temperature,
                sentence_temperature=sentence_temperature, sharpness=sharpness, training=True,
            )  # fmt: skip
            loss = sentence_loss + phrase_loss
        optimizer.apply(tape.gradient(loss, variables), variables)
        return sentence_loss, phrase_loss

    steps = len(images) // batch_size
    batches = iter(training_batches(images, tokens, batch_size=batch_size, seed=seed))
    started = time.perf_counter()
    for epoch in range(epochs):
        bar = keras.utils.Progbar(steps, verbose=1 if progress else 0, unit_name="step")
        if progress:
            print(f"phrase matcher, epoch {epoch + 1}/{epochs}")
        for index in range(steps):
            sentence_loss, phrase_loss = step(*next(batches))
            bar.update(index + 1, [("sentence_loss", float(sentence_loss)), ("phrase_loss", float(phrase_loss))])
    return model, time.perf_counter() - started


class PhraseMatcherMissing(UserError):
    """No phrase matcher has been trained for these settings."""


def phrase_matcher_settings(config: dict) -> dict:
    """The `metrics.phrase_matcher_*` settings of a resolved run config, as
    `train_phrase_matcher` takes them (the towers' sizes are the sentence matcher's)."""
    metrics = config["metrics"]
    return {
        "epochs": metrics["phrase_matcher_epochs"], "batch_size": metrics["matcher_batch_size"],
        "learning_rate": metrics["matcher_learning_rate"], "temperature": metrics["phrase_matcher_temperature"],
        "sentence_temperature": metrics["matcher_temperature"], "sharpness": metrics["phrase_matcher_sharpness"],
        "embedding_dim": metrics["matcher_embedding_dim"], "width": metrics["matcher_width"],
        "text_hidden": metrics["matcher_text_hidden"], "region_size": metrics["phrase_matcher_region_size"],
    }  # fmt: skip


def phrase_matcher_path(config: dict) -> Path:
    """Where the phrase matcher of a resolved run config lives, under `metrics.cache_dir/matcher/`:
    one per dataset, text encoder, phrase count and settings (trained with the seed of the
    first run that needs it and shared by later ones, as the sentence matcher is)."""
    text = config["text"]
    identity = {
        "data": config["data"], "text": [text["model"], text["dim"], text["pooling"], text["phrase_tokens"]],
        "settings": phrase_matcher_settings(config), "version": PHRASE_MATCHER_VERSION,
    }  # fmt: skip
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return Path(config["metrics"]["cache_dir"]) / "matcher" / f"{config['data']['name']}-phrases-{key}.keras"


def load_phrase_matcher(path: str | Path, *, sharpness: float) -> PhraseMatcher:
    import keras

    path = Path(path)
    if not path.exists():
        raise PhraseMatcherMissing(f"no phrase matcher at {path}: a run with balance.phrase_matching_weight > 0 "
                                   "trains one on first use")  # fmt: skip
    model = keras.models.load_model(path, compile=False)
    return PhraseMatcher(model.get_layer("image_tower"), model.get_layer("phrase_tower"), sharpness=sharpness)

