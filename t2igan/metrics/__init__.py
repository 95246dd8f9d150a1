"""Metrics for generated images. For toybirds: a judge CNN that reads attributes back from images
(`judge`), Fréchet distance on its features (`frechet`), and the in-domain evaluator that scores a
generator on the test captions in one generation pass (`toybirds`).

Names are imported on first use, so `import t2igan.metrics` does not load Keras.
"""

import importlib

_EXPORTS = {
    "frechet": ("StreamingFeatureStatistics", "feature_statistics", "frechet_distance"),
    "judge": ("Judge", "attribute_accuracy", "build_judge_model", "load_or_train_judge",
              "train_judge"),
    "toybirds": ("ToyBirdsEvaluator", "toybirds_caption_indices"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
