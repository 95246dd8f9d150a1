"""The R-precision matcher: an image encoder trained contrastively into the frozen sentence
embedding space of the captions (AttnGAN's DAMSM plays this role with its own text encoder).

`python -m t2igan.train_matcher data=...` trains one per dataset and keeps it in the cache;
`r_precision` and `fd_matcher...` use it, and `balance.matching_weight` trains G against it
(AttnGAN's DAMSM loss). It takes images in [-1, 1] (`encode` converts uint8); its output is
a unit vector in the caption embeddings' space, compared with a caption's embedding directly.
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from t2igan.errors import UserError


class MatcherMissing(UserError):
    """No matcher has been trained for this dataset."""


def matcher_path(cache_dir: str | Path, data: dict) -> Path:
    """Where the matcher of dataset config `data` lives: one per dataset configuration."""
    key = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{data['name']}-{key}.keras"


def build_image_encoder(image_size: int, text_dim: int, *, width: int = 32, seed: int = 0):
    """(B, S, S, 3) images in [-1, 1] -> (B, text_dim) unit vectors: a small CNN. Float input,
    so G's images can be scored differentiably (balance.matching_weight)."""
    import keras

    initializer = keras.initializers.HeNormal(seed=seed)
    images = keras.Input((image_size, image_size, 3))
    x = images
    channels = width
    while x.shape[1] > 4:
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", kernel_initializer=initializer)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.LeakyReLU(0.2)(x)
        channels = min(channels * 2, 8 * width)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(text_dim, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    outputs = keras.layers.UnitNormalization()(x)
    return keras.Model(images, outputs, name="image_encoder")


def contrastive_loss(text_embeddings, image_embeddings):
    """The matcher's training loss (Keras' (y_true, y_pred) order): t2igan.losses.matching_loss."""
    from t2igan.losses import matching_loss

    return matching_loss(image_embeddings, text_embeddings, temperature=0.07)


def train_matcher(images: np.ndarray, caption_embeddings: np.ndarray, *, epochs: int, batch_size: int,
                  width: int = 32, learning_rate: float = 1e-3, seed: int = 0, progress: bool = True):  # fmt: skip
    """Train an image encoder on (N, S, S, 3) uint8 images and (N, C, T) caption embeddings
    (a random one of each image's C captions per step). Returns (model, seconds)."""
    import keras

    from t2igan.data.pipeline import training_batches

    keras.utils.set_random_seed(seed)
    model = build_image_encoder(images.shape[1], caption_embeddings.shape[2], width=width, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=contrastive_loss)
    steps = len(images) // batch_size
    batches = training_batches(images, caption_embeddings, batch_size=batch_size, seed=seed)
    started = time.perf_counter()
    model.fit(batches, epochs=epochs, steps_per_epoch=steps, verbose=1 if progress else 0)
    return model, time.perf_counter() - started


def load_matcher(path: str | Path):
    import keras

    path = Path(path)
    if not path.exists():
        raise MatcherMissing(f"no R-precision matcher at {path}: train one with "
                             "`python -m t2igan.train_matcher data=<the dataset>`")  # fmt: skip
    return keras.models.load_model(path, custom_objects={"contrastive_loss": contrastive_loss})


def encode(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, T) unit vectors."""
    return np.concatenate([np.asarray(model(images[i : i + batch_size].astype(np.float32) / 127.5 - 1.0,
                                            training=False))
                           for i in range(0, len(images), batch_size)])  # fmt: skip
