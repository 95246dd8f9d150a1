"""The feature networks metrics can use, built on first use from the `metrics` settings."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from t2igan.errors import UserError
from t2igan.metrics.registry import FeatureNetwork


def make_networks(*, cache_dir: str | Path, image_size: int, matcher_file: str | Path,
                  inception_path: str | None = None, inception_sha256: str | None = None,
                  download: bool = True, keras_model: str | None = None, batch_size: int = 64,
                  judge_cache: str | Path | None = None, progress: bool = True) -> Callable[[str], FeatureNetwork]:  # fmt: skip
    """`networks(name)` for MetricSuite: "inception" (the reference FID network), "judge" (the
    toybirds judge, from `judge_cache`), "matcher" (the R-precision matcher at `matcher_file`:
    its image tower, and its text tower for captions) or "keras" (the saved Keras model at `keras_model`)."""

    def build(name: str) -> FeatureNetwork:
        if name == "inception":
            from t2igan.metrics.inception import InceptionNetwork, locate_inception

            graph = locate_inception(inception_path, Path(cache_dir) / "inception", sha256=inception_sha256,
                                     download=download)  # fmt: skip
            network = InceptionNetwork(graph, batch_size=batch_size)
            return FeatureNetwork("inception-2015-12-05", lambda images: network(images)[0], network)
        if name == "judge":
            from t2igan.metrics.judge import load_or_train_judge

            judge = load_or_train_judge(judge_cache or Path(cache_dir) / "judge", image_size=image_size,
                                        progress=progress)  # fmt: skip
            return FeatureNetwork("toybirds-judge", judge.features)
        if name == "matcher":
            from t2igan.metrics.matcher import encode, encode_texts, load_matcher

            matcher = load_matcher(matcher_file)
            return FeatureNetwork(f"matcher-{Path(matcher_file).stem}", lambda images: encode(matcher, images),
                                  texts=lambda embeddings: encode_texts(matcher, embeddings))  # fmt: skip
        if name == "keras":
            if not keras_model:
                raise UserError("fd_keras metrics need metrics.keras_model=<a saved .keras model>")
            import keras

            try:
                model = keras.models.load_model(keras_model)
            except (OSError, ValueError) as error:
                raise UserError(f"cannot load metrics.keras_model={keras_model}: {error}") from None

            def features(images: np.ndarray) -> np.ndarray:
                outputs = [np.asarray(model(images[i : i + batch_size], training=False))
                           for i in range(0, len(images), batch_size)]  # fmt: skip
                return np.concatenate(outputs).reshape(len(images), -1)

            return FeatureNetwork(f"keras-{Path(keras_model).stem}", features)
        raise UserError(f"unknown feature network {name!r}")

    return build
