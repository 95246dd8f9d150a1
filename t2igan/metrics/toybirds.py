"""In-domain metrics for toybirds, read by the judge from one generation pass over the test split.

- `eval/attr_acc`: over every (test caption, attribute it mentions) pair, the fraction the judge
  reads back right from the image generated for that caption; `eval/attr_acc/<attribute>` per
  attribute (NaN if no chosen caption mentions it); `eval/attr_acc_chance`, the same average for
  a judge answering uniformly at random (mention-weighted 1 / number of values).
- `eval/diversity`: for `diversity_captions` test captions, the spread of judge features over
  `diversity_noises` noises, divided by the spread over up to as many real test images that share
  every attribute the caption mentions (test images only: train never has the held-out colour
  triples); the mean of those ratios. Spread = mean Euclidean
  distance between distinct pairs (unbiased whatever the sample size, so 16 generated and 5 real
  images compare fairly). 1.0: as varied as real images; 0: one image per caption.
  `eval/diversity/<attribute>`: over those captions that leave the attribute unmentioned, how
  often two of a caption's generated images differ in it as the judge reads it, divided by how
  often two of its real images differ (their true values); pairs counted as for the spread.
  1.0: G picks the unmentioned attribute as variedly as real birds have it; 0: always the same
  value per caption; NaN where no such caption has varied real images. Which attributes G
  leaves to its noise and which it fixes per caption.
- `eval/fd_judge`: Fréchet distance between judge features of the N generated images and of the
  N real test images, in squared feature units.
"""

from collections.abc import Callable
from typing import Protocol

import numpy as np

from t2igan.data.datasets import CaptionedImages
from t2igan.data.toybirds import ATTRIBUTE_NAMES, ATTRIBUTES
from t2igan.images import to_uint8
from t2igan.metrics.frechet import feature_statistics, frechet_distance

# generate(noise (B, noise_dim) float32, text_embeddings (B, T) float32)
#     -> images (B, S, S, 3) float in [-1, 1], NumPy or a tensor.
Generate = Callable[[np.ndarray, np.ndarray], object]


class AttributeJudge(Protocol):
    """What the evaluator needs of a judge (`t2igan.metrics.judge.Judge` is one)."""

    def read(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 -> (N, A) int32 attribute value indices and (N, F) float32
        features, from one pass over the images."""

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, F) float32 (`read`'s features alone)."""


def toybirds_caption_indices(num_images: int, captions_per_image: int) -> np.ndarray:
    """(num_images,) int64: caption i % captions_per_image of image i, so every caption
    template position is used about equally often."""
    return np.arange(num_images) % captions_per_image


def mean_pairwise_distance(features: np.ndarray) -> float:
    """(n, F), n >= 2 -> mean Euclidean distance over the n(n-1)/2 distinct pairs."""
    features = np.asarray(features, np.float64)
    squared_norms = np.sum(features**2, axis=1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * features @ features.T
    upper = np.triu_indices(len(features), k=1)
    return float(np.sqrt(np.clip(squared[upper], 0.0, None)).mean())


def pair_disagreement(values: np.ndarray) -> np.ndarray:
    """(n, A) ints, n >= 2 -> (A,): the fraction of the n(n-1)/2 distinct pairs whose values
    differ, per column (Gini-Simpson without the small-sample bias, so n = 16 and n = 5 compare)."""
    values = np.asarray(values)
    n = len(values)
    same = [np.sum(counts * (counts - 1)) for counts in (np.unique(column, return_counts=True)[1]
                                                         for column in values.T)]
    return 1.0 - np.array(same, np.float64) / (n * (n - 1))


class ToyBirdsEvaluator:
    """Scores a generator on toybirds' test captions; see the module docstring for the keys.

    judge: reads attributes and features from uint8 images (read; features for the real ones).
    split: the test CaptionedImages, with `attributes` (N, A) and `mentions` (N, C, A).
    caption_embeddings: (N, T) float32 embedding of caption `caption_indices[i]` of image i.
    caption_indices: (N,) ints in [0, C), the caption scored for each test image.
    noise_dim: generator noise size; noise is drawn once here from NumPy's default_rng(seed),
        so every evaluation of a run sees the same noise and scores are comparable over time.
    diversity_captions: captions used for `eval/diversity` (0 leaves the key out), chosen
        with the same seed among those with >= 2 matching real test images (all of them if
        fewer). The mean over captions moves with which are drawn: on a trained generator 16
        read up to 0.07 off 128, which agree with 256 within 0.01.
    diversity_noises: images generated per diversity caption, and the most real images it is
        compared with.
    batch_size: images per generate() call.
    Real-image features and statistics are computed once, here.
    """

    def __init__(self, judge: AttributeJudge, split: CaptionedImages,
                 caption_embeddings: np.ndarray, caption_indices: np.ndarray, *,
                 noise_dim: int, diversity_captions: int = 128, diversity_noises: int = 16,
                 seed: int = 0, batch_size: int = 256):
        if split.attributes is None or split.mentions is None:
            raise ValueError("the split needs attributes and mentions (toybirds)")
        num_images = len(split)
        caption_indices = np.asarray(caption_indices)
        caption_embeddings = np.asarray(caption_embeddings, np.float32)
        if caption_indices.shape != (num_images,) or len(caption_embeddings) != num_images:
            raise ValueError(f"need one caption index and embedding per image ({num_images}); "
                             f"got {caption_indices.shape} and {caption_embeddings.shape}")
        if diversity_captions > 0 and diversity_noises < 2:
            raise ValueError(f"diversity_noises must be >= 2, got {diversity_noises}")
        self.judge, self.batch_size = judge, batch_size
        self.image_shape = tuple(split.images.shape[1:])
        self.caption_embeddings = caption_embeddings
        self.true_attributes = split.attributes  # (N, A)
        self.mentioned = split.mentions[np.arange(num_images), caption_indices]  # (N, A) bool
        num_values = np.array([len(ATTRIBUTES[name]) for name in ATTRIBUTE_NAMES])
        self.chance = float((self.mentioned / num_values).sum() / self.mentioned.sum())

        rng = np.random.default_rng(seed)
        self.noise = rng.standard_normal((num_images, noise_dim)).astype(np.float32)
        real_features = np.asarray(judge.features(split.images), np.float64)
        self.real_mu, self.real_sigma = feature_statistics(real_features)

        self.diversity_images = self._choose_diversity_images(rng, diversity_captions)
        self.diversity_noise = rng.standard_normal(
            (len(self.diversity_images), diversity_noises, noise_dim)).astype(np.float32)
        references = self._diversity_references(rng, diversity_noises)
        self.real_spreads = np.array([mean_pairwise_distance(real_features[images]) for images in references])
        # (captions, A): how often two of each caption's real images differ per attribute.
        self.real_disagreement = np.array([pair_disagreement(self.true_attributes[images])
                                           for images in references]).reshape(len(references), len(ATTRIBUTE_NAMES))

    def _matching_images(self, image: int) -> np.ndarray:
        """Indices of test images that share every attribute image's caption mentions."""
        mentioned = self.mentioned[image]
        same = self.true_attributes[:, mentioned] == self.true_attributes[image, mentioned]
        return np.flatnonzero(same.all(axis=1))

    def _choose_diversity_images(self, rng: np.random.Generator, count: int) -> np.ndarray:
        chosen = []
        for image in rng.permutation(len(self.true_attributes)):
            if len(chosen) == count:
                break
            if len(self._matching_images(image)) >= 2:
                chosen.append(image)
        if count > 0 and not chosen:
            raise ValueError("no test caption has two real images that match it; "
                             "use a larger test split or diversity_captions=0")
        return np.array(chosen, np.int64)

    def _diversity_references(self, rng: np.random.Generator, noises: int) -> list[np.ndarray]:
        references = []
        for image in self.diversity_images:
            matches = self._matching_images(image)
            references.append(rng.choice(matches, size=min(noises, len(matches)), replace=False))
        return references

    def _attribute_diversity(self, readings: np.ndarray) -> dict[str, float]:
        """(captions, noises, A) judge readings of the diversity images -> eval/diversity/<attribute>."""
        generated = np.array([pair_disagreement(caption) for caption in readings])
        unmentioned = ~self.mentioned[self.diversity_images]
        metrics = {}
        for k, name in enumerate(ATTRIBUTE_NAMES):
            real = self.real_disagreement[unmentioned[:, k], k].sum()
            metrics[f"eval/diversity/{name}"] = (float(generated[unmentioned[:, k], k].sum() / real)
                                                 if real > 0 else float("nan"))
        return metrics

    def _generate(self, generate: Generate, noise: np.ndarray,
                  embeddings: np.ndarray) -> np.ndarray:
        """(M, Z) noise and (M, T) embeddings -> (M, S, S, 3) uint8, batch_size at a time."""
        batches = []
        for start in range(0, len(noise), self.batch_size):
            stop = start + self.batch_size
            images = to_uint8(generate(noise[start:stop], embeddings[start:stop]))
            expected = (len(noise[start:stop]), *self.image_shape)
            if images.shape != expected:
                raise ValueError(f"generate returned images of shape {images.shape}, "
                                 f"expected {expected}")
            batches.append(images)
        return np.concatenate(batches)

    def __call__(self, generate: Generate) -> dict[str, float]:
        """Generates N + diversity_captions * diversity_noises images and scores them."""
        num_images = len(self.noise)
        diversity_count, noises = self.diversity_noise.shape[:2]
        noise = np.concatenate([self.noise, self.diversity_noise.reshape(-1, self.noise.shape[1])])
        embeddings = np.concatenate([
            self.caption_embeddings,
            np.repeat(self.caption_embeddings[self.diversity_images], noises, axis=0)])
        images = self._generate(generate, noise, embeddings)
        predictions, features = self.judge.read(images)
        predictions, features = np.asarray(predictions), np.asarray(features, np.float64)
        diversity_predictions = predictions[num_images:]
        predictions = predictions[:num_images]

        correct = (predictions == self.true_attributes) & self.mentioned
        metrics = {"eval/attr_acc": float(correct.sum() / self.mentioned.sum()),
                   "eval/attr_acc_chance": self.chance}
        for k, name in enumerate(ATTRIBUTE_NAMES):
            mentions = self.mentioned[:, k].sum()
            metrics[f"eval/attr_acc/{name}"] = (float(correct[:, k].sum() / mentions)
                                                if mentions else float("nan"))
        if diversity_count:
            diversity_features = features[num_images:].reshape(diversity_count, noises, -1)
            spreads = np.array([mean_pairwise_distance(f) for f in diversity_features])
            metrics["eval/diversity"] = float(np.mean(spreads / np.maximum(self.real_spreads,
                                                                           1e-12)))
            metrics.update(self._attribute_diversity(diversity_predictions.reshape(diversity_count, noises, -1)))
        mu, sigma = feature_statistics(features[:num_images])
        metrics["eval/fd_judge"] = frechet_distance(mu, sigma, self.real_mu, self.real_sigma)
        return metrics
