"""`python -m t2igan.train [overrides]`: train a text-to-image GAN from the composed config.

The composition root and the only module that reads the Hydra config: it validates it, turns
each group into objects built from plain arguments, and hands them to `t2igan.trainer.fit`.
`train(cfg)` returns the objective, so a sweep optimises exactly what a single run reports.
"""

import contextlib
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from t2igan.errors import UserError


def absolute_paths(config: dict) -> None:
    # Hydra may change the working directory of a job; everything is anchored here, once.
    for key in ("root", "cache", "runs"):
        config["paths"][key] = str(Path(config["paths"][key]).resolve())
    config["text"]["cache_dir"] = str(Path(config["text"]["cache_dir"]).resolve())
    config["metrics"]["cache_dir"] = str(Path(config["metrics"]["cache_dir"]).resolve())
    if "root" in config["data"]:
        config["data"]["root"] = str(Path(config["data"]["root"]).expanduser().resolve())


def _without_name(group: dict) -> dict:
    """The group's values for a builder: all but its `name`."""
    return {key: value for key, value in group.items() if key != "name"}


def gan_options(config: dict) -> dict:
    """`build_gan`'s arguments from a resolved config's model, balance and optim groups (all but
    their names, and optim.decay_from: the learning-rate schedule is a controller, `_controllers`)."""
    optim = {key: value for key, value in _without_name(config["optim"]).items() if key != "decay_from"}
    return {**_without_name(config["model"]), **_without_name(config["balance"]), **optim}


def train(cfg: DictConfig) -> float:
    """Train the run `cfg` describes (resuming it if it has a checkpoint); return the objective."""
    import keras

    from t2igan import trainer
    from t2igan.config import validate
    from t2igan.data.datasets import load_dataset
    from t2igan.data.listing import DatasetError
    from t2igan.gan import Balance, build_gan
    from t2igan.metrics.matcher import matcher_path
    from t2igan.metrics.phrase_matcher import phrase_matcher_path
    from t2igan.runs import RunFolder, run_name
    from t2igan.sweep import active_trial
    from t2igan.text.encoder import CaptionEmbedder
    from t2igan.text.negatives import rotated_colour_negatives
    from t2igan.tracking import make_tracker

    validate(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    absolute_paths(config)
    data, text, model, balance, optim, run = (config[key] for key in
                                              ("data", "text", "model", "balance", "optim", "trainer"))  # fmt: skip
    _drop_phrase_matching_without_phrases(config)
    keras.mixed_precision.set_global_policy("float32")  # see _precision
    keras.utils.set_random_seed(config["seed"])

    splits = load_dataset(**data, cache_dir=Path(config["paths"]["cache"]) / "data", progress=run["progress"])
    if len(splits["train"]) < run["batch_size"]:  # real datasets are counted only once prepared
        raise DatasetError(f"trainer.batch_size ({run['batch_size']}) exceeds the {len(splits['train'])} "
                           f"training images of data={data['name']}")  # fmt: skip
    embedder = CaptionEmbedder(**text, show_progress=run["progress"])
    # Before the matcher, which may train for minutes: a dataset without such captions fails now.
    negatives = (rotated_colour_negatives(embedder, splits["train"])
                 if balance["rotated_colours"] > 0 else None)  # fmt: skip
    uses_matcher = Balance.from_options(_without_name(balance)).uses_matcher
    if uses_matcher:
        # G trains against this matcher, so it defines the run too: after a matcher change
        # (MATCHER_VERSION) the same command starts a new run instead of resuming the old one
        # against a matcher it never saw. Recorded with the config, in MLflow and the checkpoint.
        config["matcher"] = matcher_path(config).name
    if balance["phrase_matching_weight"] > 0:  # the same for the phrase matcher
        config["phrase_matcher"] = phrase_matcher_path(config).name
    name = run_name(config)
    folder = RunFolder(Path(config["paths"]["runs"]) / name)
    if not run["resume"]:
        folder = folder.unused()
        name = folder.path.name
    matcher = _matcher(config, splits, embedder, progress=run["progress"]) if uses_matcher else None
    phrase_matcher = (_phrase_matcher(config, splits, embedder, progress=run["progress"])
                      if balance["phrase_matching_weight"] > 0 else None)  # fmt: skip
    with _precision(run["precision"]):
        gan = build_gan(
            **gan_options(config), seed=config["seed"], jit_compile=run["jit_compile"],
            steps_per_execution=run["steps_per_execution"], matcher=matcher, phrase_matcher=phrase_matcher,
        )  # fmt: skip

    evaluate = _evaluation(splits, embedder, config, progress=run["progress"]) if run["eval_every"] else None

    trial = active_trial()  # inside an Optuna sweep: report to the study, child MLflow run

    def open_tracker(run_id: str | None):
        tracker = make_tracker(**config["tracking"], root=config["paths"]["root"], run_name=name,
                               run_id=run_id, tags=trial.tags if trial else None)  # fmt: skip
        if trial:
            trial.run_id = tracker.run_id
        return tracker

    return trainer.fit(
        gan,
        train_split=splits["train"],
        sample_split=splits["test"],
        embedder=embedder,
        folder=folder,
        open_tracker=open_tracker,
        config=config,
        seed=config["seed"],
        **{key: run[key] for key in trainer.FIT_OPTIONS},
        log_checkpoint=config["tracking"]["log_checkpoint"],
        log_model=config["tracking"]["log_model"],
        evaluate=evaluate,
        negatives=negatives,
        **_controllers(balance, optim, run),
        report_objective=trial.report if trial else None,
    )


@contextlib.contextmanager
def _precision(policy: str):
    """Build G and D (only them) in trainer.precision. The judge, the matcher and the metric
    networks stay float32 whatever it is: they are cached and shared by every run (a matcher
    trained in bfloat16 would be cached as the float32 one) and they fix the metrics' protocol."""
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _matcher(config: dict, splits: dict, embedder, *, progress: bool):
    """The dataset's R-precision matcher, which balance.matching_weight trains G against (and
    balance.matcher_critic_weight's discriminator judges through);
    trained first (once, cached) if the dataset has none yet, as the judge is."""
    from t2igan.metrics.matcher import load_matcher, matcher_path
    from t2igan.train_matcher import train_and_save_matcher

    path = matcher_path(config)
    if not path.exists():
        print(f"balance.matching_weight: no matcher for this dataset yet; training one ({path})")
        train_and_save_matcher(config, splits, embedder, progress=progress)
    return load_matcher(path)


def _drop_phrase_matching_without_phrases(config: dict) -> None:
    """balance.phrase_matching_weight matches the caption's phrases; a model that reads none
    (model.phrase_tokens=0, the seed's network) trains without the term, as the matcher
    critic's heads score no phrases there, so that a preset keeps composing with every model.
    The resolved config (and so the run's name and record) says what is trained."""
    if config["balance"]["phrase_matching_weight"] > 0 and not config["model"]["phrase_tokens"]:
        print("balance.phrase_matching_weight is off for this model: model.phrase_tokens=0 gives it no phrases")
        config["balance"]["phrase_matching_weight"] = 0.0


def _phrase_matcher(config: dict, splits: dict, embedder, *, progress: bool):
    """The phrase matcher balance.phrase_matching_weight trains G against; trained first (once,
    cached) if these settings have none yet."""
    from t2igan.metrics.phrase_matcher import load_phrase_matcher, phrase_matcher_path
    from t2igan.train_matcher import train_and_save_phrase_matcher

    path = phrase_matcher_path(config)
    if not path.exists():
        print(f"balance.phrase_matching_weight: no phrase matcher for these settings yet; training one ({path})")
        train_and_save_phrase_matcher(config, splits, embedder, progress=progress)
    return load_phrase_matcher(path, sharpness=config["metrics"]["phrase_matcher_sharpness"])


def _evaluation(splits: dict, embedder, config: dict, *, progress: bool):
    """What runs every trainer.eval_every steps: the toybirds judge (on toybirds) and the
    standard metrics of `metrics.names`; None when there is nothing to evaluate."""
    parts = []
    if splits["test"].attributes is not None:
        parts.append(judge_evaluation(splits["test"], embedder, config, progress=progress))
    if config["metrics"]["names"]:
        parts.append(standard_metrics(config, splits, embedder, progress=progress))
    if not parts:
        return None
    return lambda generate: {name: value for part in parts for name, value in part(generate).items()}


def standard_metrics(config: dict, splits: dict, embedder, *, progress: bool, names: list[str] | None = None):
    """A MetricSuite for `names` (default: metrics.names) on this run's dataset and settings."""
    from t2igan.metrics.matcher import matcher_path
    from t2igan.metrics.networks import make_networks
    from t2igan.metrics.registry import MetricSuite

    metrics, model = config["metrics"], config["model"]
    networks = make_networks(
        cache_dir=metrics["cache_dir"], image_size=model["image_size"],
        matcher_file=matcher_path(config),
        inception_path=metrics["inception_path"], inception_sha256=metrics["inception_sha256"],
        download=metrics["download"], keras_model=metrics["keras_model"], batch_size=metrics["batch_size"],
        judge_cache=Path(config["paths"]["cache"]) / "judge", progress=progress,
    )  # fmt: skip
    return MetricSuite(names if names is not None else metrics["names"], splits=splits, embed=embedder.embed,
                       noise_dim=model["noise_dim"], seed=config["seed"], networks=networks,
                       reference_cache=Path(metrics["cache_dir"]) / "reference", image_size=model["image_size"],
                       batch_size=metrics["batch_size"], progress=progress)  # fmt: skip


def judge_evaluation(test_split, embedder, config: dict, *, progress: bool):
    """The toybirds judge's metrics on the test split's captions (one per image, cycling
    templates), as metrics.judge_* set them: a ToyBirdsEvaluator."""
    from t2igan.metrics import ToyBirdsEvaluator, load_or_train_judge, toybirds_caption_indices

    model = config["model"]
    judge = load_or_train_judge(Path(config["paths"]["cache"]) / "judge",
                                image_size=model["image_size"], progress=progress)  # fmt: skip
    indices = toybirds_caption_indices(len(test_split), len(test_split.captions[0]))
    embeddings = embedder.embed([captions[i] for captions, i in zip(test_split.captions, indices)])
    metrics = config["metrics"]
    seed = config["seed"] if metrics["judge_eval_seed"] is None else metrics["judge_eval_seed"]
    return ToyBirdsEvaluator(judge, test_split, embeddings, indices, noise_dim=model["noise_dim"],
                             diversity_captions=metrics["judge_diversity_captions"],
                             diversity_noises=metrics["judge_diversity_noises"], seed=seed)  # fmt: skip


def _controllers(balance: dict, optim: dict, run: dict) -> dict:
    """The balance and optim groups' controllers for `trainer.fit`; None where one is off."""
    from t2igan.controllers import AdaController, AutoBalance, CollapseDetector, LinearDecay

    ada = None
    if balance["ada_target"] is not None:
        ada = AdaController(
            batch_size=run["batch_size"], interval=balance["ada_interval"], target=balance["ada_target"],
            speed_images=int(balance["ada_kimg"] * 1000), initial=balance["augment_p"],
        )  # fmt: skip
    return {
        "ada": ada,
        "auto_balance": AutoBalance(
            target_gap=balance["auto_target_gap"], band=balance["auto_band"],
            factor=balance["auto_factor"], low=1.0 / balance["auto_range"], high=balance["auto_range"],
        ) if balance["auto_balance"] else None,
        "lr_decay": LinearDecay(steps=run["steps"], start=optim["decay_from"])
        if optim["decay_from"] is not None else None,
        "collapse_detector": CollapseDetector(
            patience_intervals=run["collapse_patience"], real_score_above=run["collapse_real_above"],
            fake_score_below=run["collapse_fake_below"], fooled_score_above=run["collapse_fooled_above"],
            diversity_below=run["collapse_diversity_below"],
            diversity_patience=run["collapse_diversity_patience"],
        ) if run["collapse_patience"] else None,
        "ada_interval": balance["ada_interval"],
    }


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        return train(cfg)
    except UserError as error:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper decides what a failed trial means
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
