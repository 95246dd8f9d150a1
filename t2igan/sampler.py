"""A trained generator ready to draw images from captions: the EMA generator of a checkpoint
plus the text encoder it was trained with. Used by `t2igan.generate` and the MLflow model."""

import os
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from t2igan.checkpoint import CheckpointError, read_header, restore_variables
from t2igan.errors import UserError

RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve_checkpoint(checkpoint: str | Path, *, tracking_uri: str | None = None) -> Path:
    """A checkpoint file from a path, a run folder, or an MLflow run id (its logged checkpoint)."""
    path = Path(checkpoint)
    if path.is_file():
        return path
    if path.is_dir() and (path / "checkpoint.npz").is_file():
        return path / "checkpoint.npz"
    if RUN_ID.fullmatch(str(checkpoint)):
        import mlflow

        from t2igan.tracking import default_tracking_uri

        uri = tracking_uri or default_tracking_uri(os.environ.get("T2IGAN_ROOT", "."))
        try:
            return Path(mlflow.artifacts.download_artifacts(
                run_id=str(checkpoint), artifact_path="checkpoint.npz", tracking_uri=uri
            ))  # fmt: skip
        except Exception as error:
            raise UserError(f"cannot fetch checkpoint.npz of MLflow run {checkpoint} from {uri}: "
                            f"{str(error).splitlines()[0]}")  # fmt: skip
    raise UserError(
        f"checkpoint {checkpoint} is not a file, a run folder with checkpoint.npz, "
        "or an MLflow run id"
    )


class Sampler:
    """Captions and noise -> images, with a checkpoint's EMA generator and text encoder.

    `generator` is a built generator (any architecture), `embedder` a CaptionEmbedder of the same text
    encoder the generator was trained with.
    """

    def __init__(self, generator, embedder, *, noise_dim: int):
        import tensorflow as tf

        self.generator = generator
        self.embedder = embedder
        self.noise_dim = noise_dim
        self._generate = tf.function(lambda noise, text: generator([noise, text], training=False)[0])

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, *, tracking_uri: str | None = None,
                        cache_dir: str | Path | None = None) -> "Sampler":
        """Load the EMA generator of `checkpoint` (see `resolve_checkpoint`).

        Caption embeddings are cached in `cache_dir`, by default the training run's cache.
        """
        import keras

        from t2igan.models import make_generator
        from t2igan.text.encoder import CaptionEmbedder

        path = resolve_checkpoint(checkpoint, tracking_uri=tracking_uri)
        config = read_header(path).get("config")
        if not isinstance(config, dict) or "model" not in config or "text" not in config:
            raise CheckpointError(f"{path} carries no model config: not a training checkpoint")
        model, text = config["model"], config["text"]
        keras.mixed_precision.set_global_policy("float32")
        generator = make_generator(
            model.get("architecture", "stackgan"), text_dim=model["text_dim"],
            noise_dim=model["noise_dim"], condition_dim=model["condition_dim"],
            image_size=model["image_size"], generator_channels=model["generator_channels"],
            width=model["width"], phrase_tokens=model.get("phrase_tokens", 0),
            phrase_key_dim=model.get("phrase_key_dim", 64), phrase_max_size=model.get("phrase_max_size"),
            project_text=model.get("project_text", True),
        )  # fmt: skip
        restore_variables(path, {"generator_ema": generator.variables})
        embedder = CaptionEmbedder(
            model=text["model"], dim=text["dim"], cache_dir=cache_dir or text["cache_dir"],
            batch_size=text["batch_size"], device=text["device"], offline=text["offline"],
            pooling=text.get("pooling", "sentence"), phrase_tokens=text.get("phrase_tokens", 0),
            show_progress=False,
        )  # fmt: skip
        return cls(generator, embedder, noise_dim=model["noise_dim"])

    def embed(self, captions: list[str]) -> np.ndarray:
        """(N,) captions -> (N, T) embeddings."""
        return self.embedder.embed(captions)

    def generate(self, noise: np.ndarray, text_embeddings: np.ndarray, *, batch_size: int = 256,
                 progress: bool | None = None) -> np.ndarray:
        """(N, Z) noise and (N, T) embeddings -> (N, S, S, 3) float32 images in [-1, 1].

        A progress bar appears for more than one batch (or as `progress` says).
        """
        batches = range(0, len(noise), batch_size)
        show = len(batches) > 1 if progress is None else progress
        images = [
            np.asarray(self._generate(noise[start : start + batch_size].astype(np.float32),
                                      text_embeddings[start : start + batch_size].astype(np.float32)))
            for start in tqdm(batches, desc="generate", unit="batch", disable=not show)
        ]  # fmt: skip
        return np.concatenate(images)
