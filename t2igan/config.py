"""Start-of-run validation of the composed config: every problem, one line each.

Hydra already refuses unknown group options and overrides of unknown keys; this catches
what it cannot: typos inside YAML files and presets, wrong types and impossible values.
"""

import math
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from t2igan.errors import UserError
from t2igan.gan import METRIC_NAMES, MODE_SEEKING_SPACES
from t2igan.augment import POLICIES
from t2igan.data.decode import CROPS
from t2igan.losses import LOSS_KINDS
from t2igan.metrics.matcher import POOLS
from t2igan.models import ARCHITECTURES
from t2igan.models.blocks import NORMS
from t2igan.models.discriminator import AUGMENTATIONS
from t2igan.text.encoder import POOLINGS


class ConfigError(UserError):
    """The config cannot run; the message has one line per problem."""


def _integer(minimum: int) -> Callable:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"must be an integer >= {minimum}"

    return check


def _integer_in(low: int, high: int) -> Callable:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be an integer in [{low}, {high}]"

    return check


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return "must be a number"
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            return f"must be in {left}{low}, {high}{right}"

    return check


def _choice(*options) -> Callable:
    def check(value):
        if value not in options:
            return f"must be one of {list(options)}"

    return check


def _text(value):
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"


def _optional_text(value):
    if value is not None and (not isinstance(value, str) or not value):
        return "must be null or a non-empty string"


def _boolean(value):
    if not isinstance(value, bool):
        return "must be true or false"


def _image_size(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value & (value - 1):
        return "must be a power of two >= 8 (the generator doubles a 4x4 map)"


def _list_of(*options) -> Callable:
    def check(value):
        if not isinstance(value, list) or any(name not in options for name in value):
            return f"must be a list drawn from {list(options)}"

    return check


_augmentations = _list_of(*AUGMENTATIONS)
_policies = _list_of(*POLICIES)


def _metric_names(value):
    from t2igan.metrics.registry import MetricError, parse_metric

    if not isinstance(value, list):
        return "must be a list of metric names"
    for name in value:
        try:
            parse_metric(str(name))
        except MetricError as error:
            return str(error)


def _split_files(value):
    if not isinstance(value, dict) or set(value) != {"train", "test"} or not all(
        isinstance(path, str) and path for path in value.values()
    ):
        return "must be null or {train: <file>, test: <file>}"


def _optional(check: Callable) -> Callable:
    def optional(value):
        return None if value is None else check(value)

    return optional


# What train() can return: a training metric, averaged over the last log interval.
# The judge's metrics (t2igan.metrics.toybirds), computed every trainer.eval_every steps.
EVAL_METRICS = ("eval/attr_acc", "eval/diversity", "eval/fd_judge")
OBJECTIVES = (*METRIC_NAMES, "perf/images_per_second", *EVAL_METRICS)
POSITIVE = _integer(1)
NON_NEGATIVE = _number(0.0, 1e6)
RATE = _number(0.0, 1.0, high_open=True)
LEARNING_RATE = _number(0.0, 1.0, low_open=True)

SCHEMA: dict[str, dict[str, Callable]] = {
    "paths": {"root": _text, "cache": _text, "runs": _text},
    "data": {},  # per dataset: DATA_SCHEMAS
    "text": {
        "model": _optional_text, "dim": POSITIVE, "batch_size": POSITIVE, "device": _text,
        "offline": _boolean, "cache_dir": _text, "pooling": _choice(*POOLINGS),
        "phrase_tokens": _integer(0),
    },
    "model": {
        "name": _text, "architecture": _choice(*ARCHITECTURES), "image_size": _image_size,
        "noise_dim": POSITIVE, "condition_dim": POSITIVE,
        "text_dim": POSITIVE, "phrase_tokens": _integer(0), "phrase_key_dim": POSITIVE,
        "phrase_max_size": _image_size, "project_text": _boolean,
        "width": _number(0.0, 16.0, low_open=True),
        "generator_channels": POSITIVE, "discriminator_channels": POSITIVE,
        "dropout": RATE, "augment": _augmentations,
    },
    "optim": {
        "name": _text, "g_lr": LEARNING_RATE, "d_lr": LEARNING_RATE,
        "beta_1": RATE, "beta_2": RATE, "decay_from": _optional(RATE),
    },
    "balance": {
        "name": _text, "loss": _choice(*LOSS_KINDS), "kl_weight": _number(0.0, 1e6),
        "wrong_weight": _number(0.0, 1.0), "rotated_colours": _number(0.0, 1.0),
        "real_label": _number(0.0, 1.0, low_open=True),
        "ema_decay": RATE, "d_norm": _choice(*NORMS), "minibatch_std": _boolean,
        "n_critic": _integer_in(1, 16), "ma_gp_weight": NON_NEGATIVE, "ma_gp_power": _number(2.0, 16.0),
        "r1_gamma": NON_NEGATIVE, "r1_every": POSITIVE, "lecam_weight": NON_NEGATIVE,
        "instance_noise": _number(0.0, 2.0), "diffaugment": _policies,
        "augment_p": _number(0.0, 1.0), "ada_target": _optional(_number(-1.0, 1.0, low_open=True, high_open=True)),
        "ada_kimg": _number(0.0, 1e6, low_open=True), "auto_balance": _boolean,
        "mode_seeking_weight": NON_NEGATIVE, "mode_seeking_spaces": _list_of(*MODE_SEEKING_SPACES),
        "mode_seeking_per_caption": _boolean,
        "matching_weight": NON_NEGATIVE,
        "matching_temperature": _number(0.0, 10.0, low_open=True), "ada_interval": POSITIVE,
        "matching_augment": _policies, "matching_floor": _boolean, "phrase_matching_weight": NON_NEGATIVE, "matcher_critic_weight": NON_NEGATIVE,
        "matcher_critic_channels": POSITIVE, "matcher_critic_augment": _policies,
        "matcher_critic_phrases": _boolean,
        "contrastive_weight": NON_NEGATIVE, "contrastive_dim": POSITIVE,
        "contrastive_temperature": _number(0.0, 10.0, low_open=True),
        "auto_target_gap": _number(-1.0, 1.0), "auto_band": _number(0.0, 1.0),
        "auto_factor": _number(1.0, 10.0, low_open=True), "auto_range": _number(1.0, 1e3),
    },
    "trainer": {
        "steps": POSITIVE, "minutes": _optional(_number(0.0, 1e6, low_open=True)),
        "batch_size": _integer(2), "log_every": POSITIVE,
        "sample_every": POSITIVE, "checkpoint_every": POSITIVE, "sample_captions": POSITIVE,
        "sample_noises": POSITIVE, "steps_per_execution": POSITIVE,
        "precision": _choice("float32", "mixed_bfloat16"), "jit_compile": _boolean,
        "run_name": _optional_text, "resume": _boolean, "objective": _text, "progress": _boolean,
        "eval_every": _integer(0), "collapse_patience": _integer(0),
        "collapse_real_above": RATE, "collapse_fake_below": RATE, "collapse_fooled_above": RATE,
        "collapse_diversity_below": _number(0.0, 10.0), "collapse_diversity_patience": POSITIVE,
        "standing_statistics": _integer(0),
    },
    "metrics": {
        "names": _metric_names, "inception_path": _optional_text, "inception_sha256": _optional_text,
        "download": _boolean, "keras_model": _optional_text, "matcher_epochs": POSITIVE,
        "matcher_batch_size": _integer(2), "matcher_width": POSITIVE, "matcher_text_hidden": POSITIVE,
        "matcher_embedding_dim": POSITIVE, "matcher_learning_rate": LEARNING_RATE,
        "matcher_temperature": _number(0.0, 10.0, low_open=True), "matcher_augment": _policies,
        "matcher_pool": _choice(*POOLS), "phrase_matcher_epochs": POSITIVE,
        "phrase_matcher_region_size": _choice(4, 8, 16, 32), "phrase_matcher_sharpness": _number(0.0, 100.0, low_open=True),
        "phrase_matcher_temperature": _number(0.0, 10.0, low_open=True), "judge_diversity_captions": _integer(0),
        "judge_diversity_noises": _integer(2), "judge_eval_seed": _optional(_integer(0)), "batch_size": POSITIVE,
        "cache_dir": _text,
    },
    "tracking": {
        "enabled": _boolean, "uri": _optional_text, "experiment": _text, "log_checkpoint": _boolean,
        "log_model": _boolean,
    },
}  # fmt: skip
TOP_LEVEL = {"seed": _integer(0)}

_REAL_DATA = {
    "name": _text, "root": _text, "image_size": _image_size, "captions_per_image": POSITIVE,
    "crop": _choice(*CROPS), "random_crop": _boolean, "random_flip": _boolean,
    "num_train": _optional(POSITIVE), "num_test": _optional(POSITIVE),
}
_SPLIT_BY_FILE = {"split_file": _optional_text, "test_fraction": _number(0.0, 1.0, low_open=True, high_open=True)}
DATA_SCHEMAS: dict[str, dict[str, Callable]] = {
    "toybirds": {
        "name": _text, "num_train": POSITIVE, "num_test": POSITIVE,
        "image_size": _image_size, "captions_per_image": POSITIVE,
        "heldout_fraction": _number(0.0, 1.0, low_open=True, high_open=True), "seed": _integer(0),
    },
    "cub": _REAL_DATA | {"text_dir": _optional_text, "split_files": _optional(_split_files)},
    "flowers": _REAL_DATA | {"text_dir": _optional_text, "split_files": _optional(_split_files)},
    "coco": _REAL_DATA | {"train_split": _text, "test_split": _text},
    "seed": _REAL_DATA | _SPLIT_BY_FILE | {"image_dir": _text, "caption_dir": _text},
    "folder": _REAL_DATA | _SPLIT_BY_FILE,
}  # fmt: skip


# Keys a group may leave out: the fusion model's phrase attention and text in its 4x4 projection
# (the seed's network has neither).
OPTIONAL_KEYS = {"model": ("phrase_key_dim", "phrase_max_size", "project_text")}


def problems(cfg: DictConfig) -> list[str]:
    """Everything wrong with `cfg`, as `key: what is wrong` lines; empty if it can run."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:  # an interpolation that cannot resolve
        return [f"config does not resolve: {error}".splitlines()[0]]
    found = []
    known = set(SCHEMA) | set(TOP_LEVEL) | {"experiment", "hydra"}
    found += [f"{key}: unknown top-level key" for key in config if key not in known]
    for key, check in TOP_LEVEL.items():
        if (message := check(config.get(key))) is not None:
            found.append(f"{key}: {message} (got {config.get(key)!r})")
    for section, checks in SCHEMA.items():
        values = config.get(section)
        if section == "data" and isinstance(values, dict):
            if values.get("name") not in DATA_SCHEMAS:
                found.append(f"data.name: unknown dataset {values.get('name')!r} (known: {', '.join(DATA_SCHEMAS)})")
                continue
            checks = DATA_SCHEMAS[values["name"]]
        if not isinstance(values, dict):
            found.append(f"{section}: missing config group")
            continue
        for key in values.keys() - checks.keys():
            found.append(f"{section}.{key}: unknown key (known: {', '.join(sorted(checks))})")
        for key, check in checks.items():
            if key not in values:
                if key not in OPTIONAL_KEYS.get(section, ()):
                    found.append(f"{section}.{key}: missing")
            elif (message := check(values[key])) is not None:
                found.append(f"{section}.{key}: {message} (got {values[key]!r})")
    found += _cross_checks(config)
    return found


def _cross_checks(config: dict) -> list[str]:
    found = []
    model, data, trainer = config.get("model", {}), config.get("data", {}), config.get("trainer", {})
    if model.get("image_size") != data.get("image_size"):
        found.append(
            f"model.image_size ({model.get('image_size')}) must equal data.image_size "
            f"({data.get('image_size')})"
        )
    if model.get("text_dim") != config.get("text", {}).get("dim"):
        found.append("model.text_dim must equal text.dim")
    if model.get("phrase_tokens") != config.get("text", {}).get("phrase_tokens"):
        found.append("model.phrase_tokens must equal text.phrase_tokens")
    if model.get("phrase_tokens") and model.get("architecture") != "fusion":
        found.append(f"model.phrase_tokens > 0 needs model=fusion (its attention reads them); "
                     f"model.architecture is {model.get('architecture')!r}")
    if model.get("project_text") is False and model.get("architecture") != "fusion":
        found.append(f"model.project_text=false needs model=fusion (the seed's generator has its text in "
                     f"its projection only); model.architecture is {model.get('architecture')!r}")
    balance = config.get("balance", {})
    region_size = config.get("metrics", {}).get("phrase_matcher_region_size")
    if balance.get("phrase_matching_weight") and model.get("phrase_tokens") and isinstance(region_size, int) \
            and isinstance(model.get("image_size"), int) and region_size >= model["image_size"]:
        found.append(f"metrics.phrase_matcher_region_size ({region_size}) must be below model.image_size "
                     f"({model['image_size']}): the phrases attend over a map of the matcher's CNN")
    penalties = [key for key in ("ma_gp_weight", "r1_gamma") if balance.get(key)]
    if penalties and balance.get("d_norm") == "batch":
        found.append(f"balance.{penalties[0]} > 0 needs per-sample gradients: use balance.d_norm="
                     "spectral or none (BatchNorm couples the batch)")
    if balance.get("ada_target") is not None and not balance.get("diffaugment"):
        found.append("balance.ada_target adapts the probability of balance.diffaugment, which is empty")
    if data.get("name") == "toybirds" and isinstance(data.get("image_size"), int) and data["image_size"] < 32:
        found.append(f"data.image_size: toybirds draws at 32 px or more (got {data['image_size']})")
    metric_names = config.get("metrics", {}).get("names") or []
    standard = {f"eval/{name}" for name in metric_names if isinstance(name, str)}
    if trainer.get("objective") not in OBJECTIVES and trainer.get("objective") not in standard:
        found.append(
            f"trainer.objective: unknown metric {trainer.get('objective')!r} "
            f"(known: {', '.join(OBJECTIVES)})"
        )
    if str(trainer.get("objective")).startswith("eval/") and not trainer.get("eval_every"):
        found.append(f"trainer.objective={trainer['objective']} needs trainer.eval_every > 0")
    if trainer.get("objective") in EVAL_METRICS and data.get("name") != "toybirds":
        found.append(f"trainer.objective={trainer['objective']} is a toybirds judge metric")
    if balance.get("mode_seeking_weight") and isinstance(trainer.get("batch_size"), int) and trainer["batch_size"] >= 2 \
            and trainer["batch_size"] % 2:
        found.append("balance.mode_seeking_weight > 0 pairs the batch in halves: trainer.batch_size must be even")
    batch_size = trainer.get("batch_size")
    if isinstance(batch_size, int) and isinstance(data.get("num_train"), int):
        if batch_size > data["num_train"]:
            found.append(f"trainer.batch_size ({batch_size}) exceeds data.num_train ({data['num_train']})")
    return found


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` listing every problem of `cfg`, or return if there is none."""
    found = problems(cfg)
    if found:
        raise ConfigError("invalid config:\n  " + "\n  ".join(found))
