"""Metrics by name, where the name fixes the protocol, for training and `t2igan.evaluate`.

| name | protocol |
|---|---|
| `fid{N}k_{split}`, `fid{N}_{split}` | FID: N generated images (captions of `split`, cycled) against all real `split` images, reference Inception pool_3 |
| `kid{N}k_{split}` | KID on the same features (x 1000 in reports, as papers print it) |
| `is{N}k` | Inception Score of N images generated from test captions, 10 splits (`is...` and `is..._std`) |
| `fd_judge{N}_{split}`, `fd_matcher{N}_{split}`, `fd_keras{N}_{split}` | Fréchet distance on another feature network: the toybirds judge, the R-precision matcher's image encoder, or any saved Keras model (`metrics.keras_model`) |
| `r_precision` | each test image's generated image ranks its caption among 99 mismatched test captions with the matcher; top-1 share |

Real-image statistics are cached per feature network and split contents (so per dataset,
split and resolution). Generation and feature extraction stream in batches, so 30k+ samples
need memory for the statistics, not the images.
"""

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from t2igan.errors import UserError
from t2igan.images import to_uint8
from t2igan.io import atomic_save_npz
from t2igan.metrics.frechet import StreamingFeatureStatistics, frechet_distance
from t2igan.metrics.scores import inception_score, kernel_inception_distance, mismatched_captions, r_precision
from t2igan.text.encoder import sentence_of

_PATTERN = re.compile(r"(?P<kind>fid|kid|is|fd_judge|fd_matcher|fd_keras)(?P<count>\d+)(?P<thousands>k?)"
                      r"(?:_(?P<split>train|test))?")  # fmt: skip
NETWORK_OF = {"fid": "inception", "kid": "inception", "is": "inception", "fd_judge": "judge",
              "fd_matcher": "matcher", "fd_keras": "keras", "r_precision": "matcher"}  # fmt: skip
KID_SAMPLES = 10_000  # features kept for KID's subsets, per side


class MetricError(UserError):
    """An unknown metric name or a metric that cannot run on this dataset."""


@dataclass(frozen=True)
class Protocol:
    name: str
    kind: str
    num_samples: int | None  # None: one per image of the split
    split: str

    @property
    def network(self) -> str:
        return NETWORK_OF[self.kind]


def parse_metric(name: str) -> Protocol:
    """The protocol a metric name fixes; MetricError for a name that is not one."""
    if name == "r_precision":
        return Protocol(name, "r_precision", None, "test")
    match = _PATTERN.fullmatch(name)
    if match is None or (match["kind"] != "is" and match["split"] is None) or (match["kind"] == "is" and match["split"]):
        raise MetricError(f"unknown metric {name!r}: use fid50k_test, kid10k_test, is30k, fd_judge2000_test, "
                          "fd_matcher5k_train, fd_keras1000_test or r_precision")  # fmt: skip
    count = int(match["count"]) * (1000 if match["thousands"] else 1)
    if count < 2:
        raise MetricError(f"{name}: needs at least 2 samples")
    return Protocol(name, match["kind"], count, match["split"] or "test")


class FeatureNetwork:
    """uint8 images -> features (and logits, for Inception); `identity` names it in caches."""

    def __init__(self, identity: str, features: Callable[[np.ndarray], np.ndarray],
                 logits: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                 texts: Callable[[np.ndarray], np.ndarray] | None = None):  # fmt: skip
        self.identity, self._features, self._both = identity, features, logits
        # (N, T) caption embeddings -> the features' space, for networks that compare images
        # with captions (the matcher's text tower); None: the embeddings are in it already.
        self.texts = texts or (lambda embeddings: embeddings)

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._features(images), np.float64)

    def features_and_logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._both is None:
            raise MetricError(f"{self.identity} has no logits")
        return self._both(images)


@dataclass
class _Accumulator:
    wants_statistics: bool
    statistics: StreamingFeatureStatistics | None = None  # made on the first batch
    kept: list | None = None  # features for KID / R-precision
    keep_at_most: int | None = None  # KID uses KID_SAMPLES; R-precision needs every image
    logits: list | None = None

    def add(self, features: np.ndarray) -> None:
        """One batch of (B, F) features into the statistics and the kept features."""
        if self.wants_statistics:
            self.statistics = self.statistics or StreamingFeatureStatistics(features.shape[1])
            self.statistics.update(features)
        if self.kept is not None:
            kept = sum(len(batch) for batch in self.kept)
            if self.keep_at_most is None or kept < self.keep_at_most:
                self.kept.append(features.astype(np.float32))


class MetricSuite:
    """Evaluates named metrics on a generator: `suite(generate) -> {"eval/<name>": value}`.

    `splits` maps split names to CaptionedImages (real images larger than `image_size`, kept
    for random crops, are centre-cropped); `embed(captions)` gives their embeddings;
    `networks(name)` builds a feature network on first use ("inception", "judge", "matcher",
    "keras"). Each (split, sample count) is generated once for all metrics that share it.
    """

    def __init__(self, names: list[str], *, splits: dict, embed: Callable, noise_dim: int, seed: int,
                 networks: Callable[[str], FeatureNetwork], reference_cache: str | Path, image_size: int,
                 batch_size: int = 64, progress: bool = True):  # fmt: skip
        self.protocols = [parse_metric(name) for name in names]
        for protocol in self.protocols:
            if protocol.split not in splits:
                raise MetricError(f"{protocol.name}: the dataset has no {protocol.split} split")
            if protocol.kind == "r_precision" and len(splits["test"]) <= 99:
                raise MetricError(f"r_precision ranks among 99 mismatched captions: needs more than 99 test "
                                  f"images, the dataset has {len(splits['test'])}")  # fmt: skip
        self.splits, self.embed, self.noise_dim, self.seed = splits, embed, noise_dim, seed
        self._network_factory, self._networks, self._references = networks, {}, {}
        self.reference_cache, self.image_size = Path(reference_cache), image_size
        self.batch_size, self.progress = batch_size, progress

    def network(self, name: str) -> FeatureNetwork:
        if name not in self._networks:
            self._networks[name] = self._network_factory(name)
        return self._networks[name]

    def __call__(self, generate: Callable) -> dict[str, float]:
        results = {}
        groups: dict[tuple[str, int | None], list[Protocol]] = {}
        for protocol in self.protocols:
            groups.setdefault((protocol.split, protocol.num_samples), []).append(protocol)
        for (split, count), protocols in groups.items():
            results |= self._evaluate_group(generate, split, count, protocols)
        return results

    # ------------------------------------------------------------------ generated images

    def _captions(self, split: str, count: int | None) -> tuple[list[str], int]:
        """Sample i draws image i mod N's caption (i div N) mod C, after caption i mod C of
        image i for the first N: every image's captions in turn."""
        captions = self.splits[split].captions
        num_images, per_image = len(captions), len(captions[0])
        count = num_images if count is None else count
        chosen = [captions[i % num_images][(i % num_images + i // num_images) % per_image] for i in range(count)]
        return chosen, count

    def _evaluate_group(self, generate: Callable, split: str, count: int | None,
                        protocols: list[Protocol]) -> dict[str, float]:  # fmt: skip
        captions, count = self._captions(split, count)
        embeddings = np.asarray(self.embed(captions), np.float32)
        noise = np.random.default_rng(self.seed).standard_normal((count, self.noise_dim)).astype(np.float32)
        needs = {protocol.network for protocol in protocols}
        accumulators = {name: self._accumulator(name, protocols) for name in needs}
        batches = range(0, count, self.batch_size)
        for start in tqdm(batches, desc=f"evaluate {split} x{count}", unit="batch", disable=not self.progress):
            stop = start + self.batch_size
            images = to_uint8(generate(noise[start:stop], embeddings[start:stop]))
            for name, accumulator in accumulators.items():
                self._add(name, accumulator, images)
        results = {}
        for protocol in protocols:
            accumulator = accumulators[protocol.network]
            results |= self._score(protocol, accumulator, embeddings)
        return results

    def _accumulator(self, network: str, protocols: list[Protocol]) -> _Accumulator:
        kinds = {p.kind for p in protocols if p.network == network}
        wants_statistics = bool(kinds & {"fid", "fd_judge", "fd_matcher", "fd_keras"})
        return _Accumulator(
            wants_statistics=wants_statistics,
            kept=[] if kinds & {"kid", "r_precision"} else None,
            keep_at_most=None if "r_precision" in kinds else KID_SAMPLES,
            logits=[] if "is" in kinds else None,
        )  # fmt: skip

    def _add(self, name: str, accumulator: _Accumulator, images: np.ndarray) -> None:
        network = self.network(name)
        if accumulator.logits is not None:
            features, logits = network.features_and_logits(images)
            accumulator.logits.append(logits)
        else:
            features = network.features(images)
        accumulator.add(features)

    def _score(self, protocol: Protocol, accumulator: _Accumulator, embeddings: np.ndarray) -> dict[str, float]:
        key = f"eval/{protocol.name}"
        if protocol.kind == "is":
            mean, std = inception_score(np.concatenate(accumulator.logits))
            return {key: mean, f"{key}_std": std}
        if protocol.kind == "r_precision":
            images = np.concatenate(accumulator.kept)
            mismatched = mismatched_captions(len(images), len(embeddings), seed=self.seed)
            texts = self.network(protocol.network).texts(sentence_of(embeddings))
            return {key: r_precision(images, texts, mismatched)}
        reference = self._reference(protocol.network, protocol.split)
        if protocol.kind == "kid":
            fake = np.concatenate(accumulator.kept)[:KID_SAMPLES]
            return {key: 1000.0 * kernel_inception_distance(reference["kept"], fake, seed=self.seed)}
        mu, sigma = accumulator.statistics.statistics()
        return {key: frechet_distance(mu, sigma, reference["mu"], reference["sigma"])}

    # ------------------------------------------------------------------ real images

    def _reference(self, network: str, split: str) -> dict[str, np.ndarray]:
        """Mean, covariance and up to KID_SAMPLES features of the real `split` images, cached
        on disk by the network's identity and the split's pixels, and in memory for the
        suite's later metrics and evaluations."""
        if (network, split) not in self._references:
            self._references[network, split] = self._load_or_compute_reference(network, split)
        return self._references[network, split]

    def _load_or_compute_reference(self, network: str, split: str) -> dict[str, np.ndarray]:
        images = self.splits[split].centred_images(self.image_size)
        content = hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
        feature_network = self.network(network)
        identity = re.sub(r"[^A-Za-z0-9_.-]", "_", feature_network.identity)
        path = self.reference_cache / f"{identity}-{split}-{images.shape[1]}px-{content}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as store:
                return {key: store[key] for key in ("mu", "sigma", "kept")}
        accumulator = _Accumulator(wants_statistics=True, kept=[], keep_at_most=KID_SAMPLES)
        batches = range(0, len(images), self.batch_size)
        for start in tqdm(batches, desc=f"reference {split} ({network})", unit="batch", disable=not self.progress):
            accumulator.add(feature_network.features(images[start : start + self.batch_size]))
        mu, sigma = accumulator.statistics.statistics()
        reference = {"mu": mu, "sigma": sigma, "kept": np.concatenate(accumulator.kept)[:KID_SAMPLES]}
        atomic_save_npz(path, **reference)
        return reference
