"""The toybirds judge: a small CNN that reads every toybirds attribute back from an image.

It scores generated images against their captions (`t2igan.metrics.toybirds`) and gives the
feature space for in-domain Fréchet distance and diversity. It is trained once per settings on
its own renders (seed `TRAINING_SEED`, never the GAN's data seed 0), which cover all 1,000
(crown, wing, belly) colour triples, the GAN's held-out test triples included, and is cached.

`python -m t2igan.metrics.judge [--cache DIR]` prints its accuracy per attribute on renders it
never saw (the test split of data seed 0) next to chance, and its training time.
"""

import argparse
import hashlib
import json
import time
from pathlib import Path

import keras
import numpy as np

from t2igan.data.datasets import TOYBIRDS_VERSION
from t2igan.data.toybirds import ATTRIBUTE_NAMES, ATTRIBUTES, COLORS, PALETTE_RGB, make_toybirds
from t2igan.io import atomic_save_npz

# Bump when the architecture or training recipe changes, so cached weights are not reused.
JUDGE_VERSION = 1
TRAINING_SEED = 1000  # the judge's own renders; the GAN's data seed is 0
NUM_IMAGES = 6000  # rendered training images, all triples
EPOCHS = 6
BATCH_SIZE = 32
LEARNING_RATE = 1e-3  # Adam, cosine-decayed to 0 over training
WIDTH = 32  # channels at S/2; 2x at S/4, 4x at S/8
FEATURE_DIM = 128
# Softness of the palette-membership channels, in RGB levels: wider than the +-10 colour jitter
# and antialiased edges, narrower than the >= 110 (L1) gaps between palette colours.
PALETTE_SIGMA = 30.0
INFERENCE_BATCH_SIZE = 256


class PaletteMembership(keras.layers.Layer):
    """(B, S, S, 3) float RGB in [0, 255] -> (B, S, S, 3 + 10): RGB scaled to [-1, 1], then one
    Gaussian membership in (0, 1] per palette colour (1 at its nominal RGB). No weights: it hands
    the network toybirds' colour words so its convolutions only have to learn where they are."""

    def call(self, rgb):
        palette = keras.ops.convert_to_tensor(
            np.array([PALETTE_RGB[name] for name in COLORS], np.float32))  # (10, 3)
        squared_distances = (keras.ops.sum(rgb * rgb, axis=-1, keepdims=True)
                             - 2.0 * keras.ops.matmul(rgb, keras.ops.transpose(palette))
                             + keras.ops.sum(palette * palette, axis=-1))
        membership = keras.ops.exp(-keras.ops.relu(squared_distances) / (2 * PALETTE_SIGMA**2))
        return keras.ops.concatenate([rgb / 127.5 - 1.0, membership], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3 + len(COLORS))


def build_judge_model(image_size: int, *, width: int = WIDTH, seed: int = 0,
                      batchnorm_momentum: float = 0.99) -> keras.Model:
    """Images (B, S, S, 3) uint8 -> {"features": (B, FEATURE_DIM) float32 (post-ReLU),
    attribute name: (B, len(values)) logits, for each of ATTRIBUTE_NAMES}.

    S is a multiple of 16 and >= 32. Palette memberships, a 2x2 stride-2 stem and a 1x1 conv,
    then 3x3 conv-BN-ReLU blocks with two 2x max-pools (max keeps the bill, a few pixels wide),
    then global max and mean pooling into the features.
    Horizontal flips (training only) double the poses: toybirds face either way.
    batchnorm_momentum only matters in training (see `train_judge`).
    """
    layer_seeds = iter(np.random.default_rng([seed, 7]).integers(0, 2**31, size=32).tolist())

    def dense(units, **options):
        init = keras.initializers.GlorotUniform(seed=next(layer_seeds))
        return keras.layers.Dense(units, kernel_initializer=init, **options)

    def conv_block(x, channels, kernel=3, strides=1):
        init = keras.initializers.GlorotUniform(seed=next(layer_seeds))
        x = keras.layers.Conv2D(channels, kernel, strides=strides, padding="same",
                                use_bias=False, kernel_initializer=init)(x)
        x = keras.layers.BatchNormalization(momentum=batchnorm_momentum)(x)
        return keras.layers.ReLU()(x)

    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    x = keras.layers.RandomFlip("horizontal", seed=next(layer_seeds))(
        keras.ops.cast(images, "float32"))
    x = PaletteMembership()(x)
    x = conv_block(x, width * 3 // 2, kernel=2, strides=2)  # (B, S/2, S/2, 1.5w)
    x = conv_block(x, width, kernel=1)
    x = conv_block(x, width)
    x = keras.layers.MaxPooling2D()(x)  # (B, S/4, S/4, w)
    x = conv_block(conv_block(x, 2 * width), 2 * width)
    x = keras.layers.MaxPooling2D()(x)  # (B, S/8, S/8, 2w)
    x = conv_block(x, 4 * width)
    pooled = keras.layers.Concatenate()(
        [keras.layers.GlobalMaxPooling2D()(x), keras.layers.GlobalAveragePooling2D()(x)])
    features = dense(FEATURE_DIM, activation="relu", name="features")(pooled)
    heads = {name: dense(len(ATTRIBUTES[name]), name=name)(features) for name in ATTRIBUTE_NAMES}
    return keras.Model(images, {"features": features, **heads}, name="toybirds_judge")


class Judge:
    """A trained judge. Reads uint8 images in batches of INFERENCE_BATCH_SIZE, so any N fits.

    `training_seconds`: wall time of rendering plus training, None when unknown.
    """

    def __init__(self, model: keras.Model, *, training_seconds: float | None = None):
        self.model = model
        self.image_size = int(model.input.shape[1])
        self.feature_dim = FEATURE_DIM
        self.training_seconds = training_seconds

    def read(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 -> attribute value indices (N, A) int32, columns in
        ATTRIBUTE_NAMES order, and features (N, FEATURE_DIM) float32."""
        images = np.asarray(images)
        expected = (self.image_size, self.image_size, 3)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"the judge reads (N, {self.image_size}, {self.image_size}, 3) uint8 "
                             f"images (t2igan.images.to_uint8 converts [-1, 1] floats), got "
                             f"{images.dtype} {images.shape}")
        predictions = np.zeros((len(images), len(ATTRIBUTE_NAMES)), np.int32)
        features = np.zeros((len(images), FEATURE_DIM), np.float32)
        for start in range(0, len(images), INFERENCE_BATCH_SIZE):
            stop = start + INFERENCE_BATCH_SIZE
            outputs = self.model.predict_on_batch(images[start:stop])
            features[start:stop] = np.asarray(outputs["features"])
            for column, name in enumerate(ATTRIBUTE_NAMES):
                predictions[start:stop, column] = np.argmax(np.asarray(outputs[name]), axis=-1)
        return predictions, features

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, A) int32 attribute value indices (ATTRIBUTE_NAMES order)."""
        return self.read(images)[0]

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, FEATURE_DIM) float32 penultimate-layer features."""
        return self.read(images)[1]


class _ShuffledBatches(keras.utils.PyDataset):
    """(images, {attribute: labels}) batches, reshuffled each epoch by a seeded NumPy generator
    (Keras' own shuffling would draw from TensorFlow's global seed)."""

    def __init__(self, images: np.ndarray, attributes: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.images, self.attributes, self.batch_size = images, attributes, batch_size
        self.rng = np.random.default_rng([seed, 11])
        self.order = self.rng.permutation(len(images))

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        labels = {name: self.attributes[rows, k] for k, name in enumerate(ATTRIBUTE_NAMES)}
        return self.images[rows], labels

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.images))


def render_judge_training_set(image_size: int, num_images: int,
                              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(num_images, S, S, 3) uint8 renders and their (num_images, A) int32 attributes.

    Joins toybirds' train and test splits of `seed` in the 850:150 ratio of their colour
    triples, so every triple is about equally likely, the test-only ones included.
    """
    num_train = max(1, round(num_images * 0.85))
    splits = make_toybirds(num_train, num_images - num_train, seed=seed,
                           image_size=image_size, captions_per_image=1)
    return (np.concatenate([splits["train"].images, splits["test"].images]),
            np.concatenate([splits["train"].attributes, splits["test"].attributes]))


def train_judge(*, image_size: int = 64, num_images: int = NUM_IMAGES, epochs: int = EPOCHS,
                seed: int = TRAINING_SEED, progress: bool = True) -> Judge:
    """Renders `num_images` birds with `seed` and trains a judge on them for `epochs` epochs.

    progress: print a line per epoch (Keras verbose=2). Deterministic up to TensorFlow's
    floating-point reduction order on the machine.
    """
    started = time.perf_counter()
    if progress:
        print(f"judge: rendering {num_images} toybirds at {image_size}x{image_size} "
              f"(seed {seed})", flush=True)
    images, attributes = render_judge_training_set(image_size, num_images, seed)
    batches = _ShuffledBatches(images, attributes, BATCH_SIZE, seed)
    steps = epochs * len(batches)
    # Batch-norm moving statistics average over about the last tenth of training: short runs
    # (tests) need them to catch up with the weights, long ones gain from a steadier average.
    momentum = float(np.clip(1.0 - 10.0 / steps, 0.9, 0.99))
    model = build_judge_model(image_size, seed=seed, batchnorm_momentum=momentum)
    heads = {name: model.output[name] for name in ATTRIBUTE_NAMES}
    classifier = keras.Model(model.input, heads)  # shares the judge's layers, without features
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    classifier.compile(optimizer=keras.optimizers.Adam(schedule),
                       loss={name: loss for name in ATTRIBUTE_NAMES},
                       metrics={name: ["accuracy"] for name in ATTRIBUTE_NAMES})
    classifier.fit(batches, epochs=epochs, verbose=2 if progress else 0)
    return Judge(model, training_seconds=time.perf_counter() - started)


def judge_cache_path(cache_dir: str | Path, *, image_size: int, num_images: int, epochs: int,
                     seed: int) -> Path:
    """Where the weights for these settings live: cache_dir/judge-<hash of settings>.npz."""
    settings = dict(image_size=image_size, num_images=num_images, epochs=epochs, seed=seed,
                    judge_version=JUDGE_VERSION, toybirds_version=TOYBIRDS_VERSION)
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"judge-{key}.npz"


def load_or_train_judge(cache_dir: str | Path, *, image_size: int = 64,
                        num_images: int = NUM_IMAGES, epochs: int = EPOCHS,
                        seed: int = TRAINING_SEED, progress: bool = True) -> Judge:
    """The judge for these settings from `cache_dir`, trained and saved (atomically) on a miss.

    The defaults are the metric's protocol; smaller settings are for tests.
    """
    path = judge_cache_path(cache_dir, image_size=image_size, num_images=num_images,
                            epochs=epochs, seed=seed)
    if path.exists():
        model = build_judge_model(image_size, seed=seed)
        with np.load(path, allow_pickle=False) as store:
            model.set_weights([store[f"weight_{i:03d}"] for i in range(len(model.weights))])
            return Judge(model, training_seconds=float(store["training_seconds"]))
    judge = train_judge(image_size=image_size, num_images=num_images, epochs=epochs, seed=seed,
                        progress=progress)
    weights = {f"weight_{i:03d}": w for i, w in enumerate(judge.model.get_weights())}
    atomic_save_npz(path, training_seconds=np.float64(judge.training_seconds), **weights)
    return judge


def attribute_accuracy(judge: Judge, images: np.ndarray,
                       attributes: np.ndarray) -> dict[str, float]:
    """Fraction of (N, S, S, 3) uint8 images whose value the judge reads right, per attribute,
    against (N, A) int32 true attributes."""
    correct = judge.predict(images) == attributes
    return {name: float(correct[:, k].mean()) for k, name in enumerate(ATTRIBUTE_NAMES)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="cache/judge", help="weights folder (cache/judge)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-heldout", type=int, default=600,
                        help="test renders of data seed 0 to score (600)")
    args = parser.parse_args(argv)
    cached = judge_cache_path(args.cache, image_size=args.image_size, num_images=NUM_IMAGES,
                              epochs=EPOCHS, seed=TRAINING_SEED).exists()
    judge = load_or_train_judge(args.cache, image_size=args.image_size)
    heldout = make_toybirds(1, args.num_heldout, seed=0, image_size=args.image_size,
                            captions_per_image=1)["test"]
    accuracy = attribute_accuracy(judge, heldout.images, heldout.attributes)
    print(f"judge accuracy on {len(heldout)} held-out renders (data seed 0, test split)")
    print(f"{'attribute':14s} {'values':>6s} {'chance':>7s} {'accuracy':>9s}")
    for name in ATTRIBUTE_NAMES:
        values = len(ATTRIBUTES[name])
        print(f"{name:14s} {values:6d} {1 / values:7.3f} {accuracy[name]:9.4f}")
    note = "; weights read from the cache" if cached else ""
    print(f"training: {judge.training_seconds:.1f} s, rendering included "
          f"({NUM_IMAGES} images x {EPOCHS} epochs{note})")


if __name__ == "__main__":
    main()
