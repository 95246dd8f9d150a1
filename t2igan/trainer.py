"""The training schedule of one run: resume, fit with callbacks, checkpoint, report.

`fit` takes built objects and plain values; the loss maths lives in `t2igan.losses` and the
update rule in `TextToImageGAN.train_step`.
"""

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from t2igan.callbacks import (
    BalanceControl,
    Checkpointer,
    CollapseWatch,
    Evaluation,
    MetricLogger,
    ObjectiveReport,
    ProgressBar,
    SampleGrid,
    TimeBudget,
    TrainingFailed,
)
from t2igan.checkpoint import restore_checkpoint, save_checkpoint
from t2igan.data.pipeline import training_batches
from t2igan.io import atomic_write_text
from t2igan.runs import changed_keys
from t2igan.sweep import Pruned
from t2igan.tracking import flatten, git_commit

FIT_OPTIONS = (
    "steps", "batch_size", "log_every", "sample_every", "checkpoint_every",
    "sample_captions", "sample_noises", "resume", "objective", "progress", "eval_every", "minutes",
    "standing_statistics",
)  # fmt: skip
# Objectives where higher is better (Inception Score and R-precision by their prefix).
MAXIMIZED = ("eval/attr_acc", "eval/diversity", "perf/images_per_second")


def is_maximized(objective: str) -> bool:
    return objective in MAXIMIZED or objective.startswith(("eval/is", "eval/r_precision"))


def collapse_penalty(objective: str) -> float:
    """The objective value of a run stopped by the collapse detector: worse than any run
    that finished."""
    return -math.inf if is_maximized(objective) else math.inf


def _embed_splits(embedder, train_split, sample_split, sample_captions: int):
    captions = [caption for image_captions in train_split.captions for caption in image_captions]
    # The grid's rows: the first caption of each of the first test images.
    grid_captions = [image_captions[0] for image_captions in sample_split.captions[:sample_captions]]
    vectors = embedder.embed(captions + grid_captions)
    train_embeddings = vectors[: len(captions)].reshape(len(train_split), -1, *vectors.shape[1:])
    return train_embeddings, grid_captions, vectors[len(captions) :]


def _statistics_inputs(train_embeddings: np.ndarray, count: int, noise_dim: int, seed: int):
    """`count` random training captions (N, C, T) with noise, fixed for the run: what the EMA
    generator's standing statistics are measured on."""
    rng = np.random.default_rng([seed, 7])
    images = rng.integers(len(train_embeddings), size=count)
    captions = rng.integers(train_embeddings.shape[1], size=count)
    return rng.standard_normal((count, noise_dim)).astype(np.float32), train_embeddings[images, captions]


def fit(
    gan,
    *,
    train_split,
    sample_split,
    embedder,
    folder,
    open_tracker: Callable,
    config: dict,
    seed: int,
    steps: int,
    batch_size: int,
    log_every: int,
    sample_every: int,
    checkpoint_every: int,
    sample_captions: int,
    sample_noises: int,
    resume: bool,
    objective: str,
    progress: bool,
    log_checkpoint: bool,
    log_model: bool,
    eval_every: int = 0,
    minutes: float | None = None,
    standing_statistics: int = 0,
    evaluate: Callable | None = None,
    negatives: tuple[np.ndarray, np.ndarray] | None = None,
    ada=None,
    ada_interval: int = 4,
    auto_balance=None,
    lr_decay=None,
    collapse_detector=None,
    report_objective: Callable[[int, float], bool] | None = None,
) -> float:
    """Train `gan` to `steps` generator updates in `folder`, resuming from its checkpoint, or
    until it has trained `minutes` in all (summed over resumes; None: no time limit).

    `open_tracker(run_id)` opens the tracking run (reopening `run_id`, or a new one for None);
    it is called once the checkpoint is restored and the captions embedded, so a failure
    before that leaves no tracking run behind, and every failure after it ends the run FAILED.
    `config` is the resolved config, recorded with the run (folder, tracker, checkpoint).
    `evaluate(generate) -> {name: value}` (e.g. the toybirds judge's metrics) runs every
    `eval_every` steps and at the end. `ada` (AdaController), `auto_balance` (AutoBalance),
    `lr_decay` (LinearDecay) and `collapse_detector` (CollapseDetector) are optional
    controllers; None switches one off.
    `standing_statistics` > 0 measures the EMA generator's BatchNorm statistics on that many fixed
    training captions before it draws, is judged or is saved (0: it keeps G's).
    `negatives` (`t2igan.text.negatives.rotated_colour_negatives`: (N, C, D) embeddings and
    (N, C) bool) go into the batches for D's mismatched pairs; `balance.rotated_colours` > 0
    needs them, and they are refused without it.
    `report_objective(step, value) -> stop` receives each new objective value (a sweep trial
    reporting to its study); when it returns True, training stops, the checkpoint is saved,
    the tracking run ends KILLED and `t2igan.sweep.Pruned` is raised.
    Returns the last value of metric `objective` (an interval mean, or the last evaluation);
    NaN if training failed to produce it, and `collapse_penalty(objective)` if the collapse
    detector stopped the run.
    """
    if (negatives is not None) != (gan.balance.rotated_colours > 0):
        raise ValueError("negatives and balance.rotated_colours > 0 go together")
    negative_embeddings, has_negative = negatives or (None, None)
    collapsed = folder.read_state().get("collapse_reason") if resume else None
    if collapsed:
        print(f"{folder.path.name} was stopped by the collapse detector ({collapsed}); "
              "trainer.resume=false starts it over")
        return collapse_penalty(objective)
    header = {}
    if resume and folder.checkpoint.exists():
        header = restore_checkpoint(folder.checkpoint, gan)
        print(f"resuming {folder.path.name} at step {gan.step} from {folder.checkpoint}")
        changed = changed_keys(header.get("config", {}), config)
        if changed:  # only possible with an explicit trainer.run_name
            print(f"warning: the config differs from the checkpoint's in {', '.join(changed)}; "
                  "weights and optimizer state (learning rates included) come from the checkpoint")
    train_embeddings, grid_captions, grid_embeddings = _embed_splits(
        embedder, train_split, sample_split, sample_captions
    )
    if standing_statistics:
        gan.use_standing_statistics(*_statistics_inputs(train_embeddings, standing_statistics, gan.noise_dim, seed),
                                    batch_size=batch_size)  # fmt: skip
    tracker = open_tracker(folder.read_state().get("mlflow_run_id") if resume else None)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_state(mlflow_run_id=tracker.run_id)
    if folder.read_state().get("failure_reason"):  # a retry from the last good checkpoint
        folder.write_state(failure_reason=None)
    status = "FAILED"
    try:
        _record_run(tracker, folder, config)
        logger = MetricLogger(tracker, log_every, batch_size)
        logger.latest = dict(header.get("metrics", {}))
        # The run's clock: checkpoints record it, trainer.minutes stops training by it.
        budget = TimeBudget(None if minutes is None else minutes * 60.0, spent=header.get("train_seconds", 0.0))

        def save(step: int) -> None:
            if logger.failure:  # never replace the last good checkpoint with diverged weights
                return
            gan.refresh_standing_statistics()
            save_checkpoint(folder.checkpoint, gan, config=config, metrics=logger.latest,
                            mlflow_run_id=tracker.run_id, train_seconds=budget.elapsed())  # fmt: skip

        noise = np.random.default_rng(seed).standard_normal((sample_noises, gan.noise_dim))
        grid = SampleGrid(tracker, sample_every, folder.samples, grid_captions, grid_embeddings, noise)
        checkpointer = Checkpointer(checkpoint_every, save)
        evaluation = Evaluation(tracker, eval_every, evaluate, logger) if evaluate and eval_every else None
        callbacks = [ProgressBar(steps, batch_size, enabled=progress), logger]
        callbacks += [evaluation] if evaluation else []
        callbacks += [grid]
        if ada is not None or auto_balance is not None or lr_decay is not None:
            callbacks.append(BalanceControl(ada=ada, ada_interval=ada_interval, auto=auto_balance, decay=lr_decay,
                                            base_g_lr=float(config["optim"]["g_lr"]),
                                            base_d_lr=float(config["optim"]["d_lr"]), logger=logger))  # fmt: skip
        watch = CollapseWatch(collapse_detector, tracker, logger, evaluation) if collapse_detector else None
        callbacks += [watch] if watch else []
        pruning = ObjectiveReport(report_objective, objective, logger, evaluation, steps) if report_objective else None
        callbacks += [pruning] if pruning else []
        # Before the checkpointer, so the final checkpoint follows the step the budget stopped at.
        callbacks += [budget, checkpointer]
        trains = gan.step < steps and not budget.exhausted
        if trains:
            start_step, started = gan.step, time.perf_counter()
            gan.fit(
                training_batches(train_split.images, train_embeddings, batch_size=batch_size,
                                 seed=seed, start_step=gan.step, crop_size=train_split.crop_size,
                                 random_flip=train_split.random_flip, has_negative=has_negative,
                                 negative_embeddings=negative_embeddings),
                epochs=1,
                shuffle=False,
                steps_per_epoch=steps - gan.step,
                verbose=0,
                callbacks=callbacks,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            _report_costs(tracker, gan.step, gan.step - start_step, batch_size, seconds,
                          logger, grid, checkpointer)  # fmt: skip
            # Wall time over every invocation of this run: what the study reports.
            folder.write_state(train_seconds=folder.read_state().get("train_seconds", 0.0) + seconds)
            if budget.reached:
                print(f"stopped at step {gan.step} of {steps}: trainer.minutes={minutes:g} used up")
                tracker.set_tags({"stopped_by": f"trainer.minutes={minutes:g} at step {gan.step}"})
        elif budget.exhausted:
            print(f"{folder.path.name} has used its trainer.minutes={minutes:g} (trained to step {gan.step}); "
                  "a larger trainer.minutes continues it")
        else:
            print(f"{folder.path.name} is already trained to step {gan.step} (trainer.steps={steps})")
        if logger.failure:
            tracker.set_tags({"failure_reason": logger.failure})
            folder.write_state(failure_reason=logger.failure)  # for the study's table
            raise TrainingFailed(f"training diverged: {logger.failure}")
        if pruning is not None and pruning.reason is not None:  # a sweep's loser: no model to log
            tracker.set_tags({"pruned_reason": pruning.reason})
            status = "KILLED"
            raise Pruned(pruning.reason)
        if log_checkpoint and trains:
            tracker.log_artifact(folder.checkpoint)
        if log_model and trains:
            gan.refresh_standing_statistics()
            generator = save_checkpoint(folder.generator, gan, groups=("generator_ema",), config=config)
            tracker.log_generator(generator, grid_captions[:2])
        status = "FINISHED"
        if watch is not None and watch.reason is not None:
            folder.write_state(collapse_reason=watch.reason)
            return collapse_penalty(objective)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)
    return float(logger.latest.get(objective, math.nan))


def _record_run(tracker, folder, config: dict) -> None:
    """The run's identity: params and commit (once; MLflow params are write-once) and the
    resolved config, in the run folder and as an artifact."""
    if not tracker.resumed:
        tracker.log_params(flatten(config))
        commit = git_commit(Path(__file__).parent) or "unknown"
        tracker.set_tags({"mlflow.source.git.commit": commit, "run_folder": str(folder.path)})
    atomic_write_text(folder.config, yaml.safe_dump(config, sort_keys=False))
    tracker.log_artifact(folder.config)


def _report_costs(tracker, step: int, steps_run: int, batch_size: int, seconds: float,
                  logger, grid, checkpointer) -> None:
    """Print and log what the run cost and how much of it went to the side channels."""
    shares = {
        "perf/metric_logging_share": logger.seconds / seconds,
        "perf/sample_grid_share": grid.seconds / seconds,
        "perf/checkpoint_share": checkpointer.seconds / seconds,
    }
    tracker.log_metrics(shares, step=step)
    print(
        f"trained {steps_run} steps in {seconds:.0f} s ({steps_run * batch_size / seconds:.0f} img/s); "
        f"of that, metric logging {shares['perf/metric_logging_share']:.2%}, sample grids "
        f"{shares['perf/sample_grid_share']:.2%}, checkpoints {shares['perf/checkpoint_share']:.2%}"
    )
