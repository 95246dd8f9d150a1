"""Keras callbacks that watch a TextToImageGAN train: progress, metrics, samples, checkpoints.

They only read what the training step produces and pass it on; the step does not know they
exist. Each acts every `every` steps of the run's global step (the generator update count,
which survives a resume).
"""

import math
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from t2igan.errors import UserError
from t2igan.images import grid_inputs, image_grid, save_png, to_uint8

PROGRESS_KEYS = ("d/total", "g/total", "d_score/real", "d_score/fake", "d_score/wrong")


class TrainingFailed(UserError):
    """Training stopped because it cannot recover (non-finite losses)."""


class _EveryN(keras.callbacks.Callback):
    """Calls `act(step, logs)` each time the global step crosses a multiple of `every`, and
    once more at the end if `at_end` and the last step was not covered. `seconds` adds up the
    time spent acting: what logging, sampling or checkpointing costs the run."""

    at_end = False

    def __init__(self, every: int):
        super().__init__()
        self.every = every
        self.last_step = None
        self.seconds = 0.0

    def on_train_begin(self, logs=None):
        self.last_step = self.model.step

    def act(self, step: int, logs: dict) -> None:
        raise NotImplementedError

    def _act_timed(self, step: int, logs) -> None:
        started = time.perf_counter()
        self.last_step = step
        self.act(step, logs or {})
        self.seconds += time.perf_counter() - started

    def on_train_batch_end(self, batch, logs=None):
        step = self.model.step
        if step // self.every > self.last_step // self.every:
            self._act_timed(step, logs)

    def on_train_end(self, logs=None):
        if self.at_end and self.model.step != self.last_step:
            self._act_timed(self.model.step, logs)


class MetricLogger(_EveryN):
    """Every `every` steps: interval means of the GAN's metrics plus images/s to the tracker.

    Resets the GAN's running means afterwards, so each logged value covers one interval.
    Non-finite losses stop training and set `failure`. `latest` holds the last values.
    """

    def __init__(self, tracker, every: int, batch_size: int):
        super().__init__(every)
        self.tracker = tracker
        self.batch_size = batch_size
        self.latest: dict[str, float] = {}
        self.failure: str | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._clock = (time.perf_counter(), self.model.step)

    def act(self, step: int, logs: dict) -> None:
        values = {name: float(value) for name, value in logs.items()}
        started, start_step = self._clock
        now = time.perf_counter()
        values["perf/images_per_second"] = (step - start_step) * self.batch_size / (now - started)
        self._clock = (now, step)
        self.latest = values
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            self.failure = f"non-finite {', '.join(bad)} at step {step}"
            self.model.stop_training = True
        self.tracker.log_metrics(values, step=step)
        for metric in self.model.metrics:
            metric.reset_state()


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar over the run's steps with images/s, ETA and the latest losses."""

    def __init__(self, total_steps: int, batch_size: int, enabled: bool = True):
        super().__init__()
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.enabled = enabled

    def on_train_begin(self, logs=None):
        self.bar = tqdm(
            total=self.total_steps, initial=self.model.step, unit="step", disable=not self.enabled,
            dynamic_ncols=True, desc="train",
        )  # fmt: skip
        self._postfix_time = 0.0

    def on_train_batch_end(self, batch, logs=None):
        step = self.model.step
        self.bar.update(step - self.bar.n)
        now = time.monotonic()
        if logs and now - self._postfix_time > 1.0:  # reading values syncs; once a second is plenty
            self._postfix_time = now
            rate = self.bar.format_dict.get("rate") or 0.0
            postfix = {"img/s": f"{rate * self.batch_size:.0f}"}
            postfix.update({key.split("/")[-1] if key.startswith("d_score") else key: f"{float(logs[key]):.3f}"
                            for key in PROGRESS_KEYS if key in logs})  # fmt: skip
            self.bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, logs=None):
        self.bar.close()


class TimeBudget(keras.callbacks.Callback):
    """The run's training clock, and `trainer.minutes`: stops training once the run has trained
    `seconds` in all (None: never). `spent` is what earlier invocations of the run trained, as
    its checkpoint recorded it; `elapsed()` adds this invocation's time so far (evaluations,
    sample grids and checkpoints included), which each checkpoint records in turn, so a run
    resumed after a crash is not given the time it lost."""

    def __init__(self, seconds: float | None, spent: float = 0.0):
        super().__init__()
        self.seconds, self.spent = seconds, spent
        self.reached = False
        self._since = None

    @property
    def exhausted(self) -> bool:
        """Whether the budget was used up before this invocation."""
        return self.seconds is not None and self.spent >= self.seconds

    def elapsed(self) -> float:
        return self.spent + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def on_train_begin(self, logs=None):
        self._since = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds is not None and not self.reached and self.elapsed() >= self.seconds:
            self.reached = True
            self.model.stop_training = True


class SampleGrid(_EveryN):
    """Every `every` steps and at the end: a grid of fixed captions x fixed noise from the EMA G.

    `text_embeddings` (R, T) and `noise` (C, Z) stay fixed for the whole run, so grids at
    different steps compare like with like. Saved as `<folder>/step_XXXXXXX.png` and logged
    to the tracker as image `samples` at that step.
    """

    def __init__(self, tracker, every: int, folder: str | Path, captions: list[str],
                 text_embeddings: np.ndarray, noise: np.ndarray):
        super().__init__(every)
        self.tracker = tracker
        self.folder = Path(folder)
        self.captions = captions
        self.noise, self.text_embeddings = grid_inputs(noise, text_embeddings)
        self.shape = (len(captions), len(noise))
        self.last_path: Path | None = None

    def render(self) -> np.ndarray:
        self.model.refresh_standing_statistics()
        images = to_uint8(self.model.generate(self.noise, self.text_embeddings))
        return image_grid(images.reshape(*self.shape, *images.shape[1:]), self.captions)

    def write(self, step: int) -> None:
        picture = self.render()
        self.last_path = save_png(self.folder / f"step_{step:07d}.png", picture)
        self.tracker.log_image(picture, key="samples", step=step)

    at_end = True

    def act(self, step: int, logs: dict) -> None:
        self.write(step)


class Checkpointer(_EveryN):
    """Every `every` steps and at the end: `save(step)` (the caller decides what and where)."""

    def __init__(self, every: int, save: Callable[[int], None]):
        super().__init__(every)
        self.save = save

    at_end = True

    def act(self, step: int, logs: dict) -> None:
        self.save(step)


class Evaluation(_EveryN):
    """Every `every` steps and at the end: `evaluate(generate)` on the EMA generator, e.g. the
    toybirds judge's metrics, logged to the tracker and added to `logger.latest` (so they can
    be the run's objective and are saved with the checkpoint). `latest` holds the last values."""

    at_end = True

    def __init__(self, tracker, every: int, evaluate: Callable, logger: MetricLogger):
        super().__init__(every)
        self.tracker = tracker
        self.evaluate = evaluate
        self.logger = logger
        self.latest: dict[str, float] = {}

    def act(self, step: int, logs: dict) -> None:
        self.model.refresh_standing_statistics()
        self.latest = {name: float(value) for name, value in self.evaluate(self.model.generate).items()}
        self.logger.latest.update(self.latest)
        self.tracker.log_metrics(self.latest, step=step)


class BalanceControl(keras.callbacks.Callback):
    """Runs the controllers that adapt training between steps and writes their output into the
    variables the step reads.

    `ada` (an AdaController or None): every `ada_interval` steps, from the mean sign of D's
    real logits since its last update, sets the augmentation probability.
    `auto` (an AutoBalance or None): each time `logger` logs, from its interval means, sets D's
    learning rate to `base_d_lr` times the controller's scale.
    `decay` (a LinearDecay, or any step -> factor, or None): before every update, sets G's and
    D's learning rates to `base_g_lr` and `base_d_lr` (times `auto`'s scale) times its factor.
    """

    def __init__(self, *, ada=None, ada_interval: int = 4, auto=None, decay=None,
                 base_g_lr: float = 0.0, base_d_lr: float = 0.0, logger: MetricLogger | None = None):
        super().__init__()
        self.ada, self.ada_interval = ada, ada_interval
        self.auto, self.decay, self.logger = auto, decay, logger
        self.base_g_lr, self.base_d_lr = base_g_lr, base_d_lr
        self._last_logged = None

    def _factor(self, step: int) -> float:
        return 1.0 if self.decay is None else self.decay(step)

    def _d_lr(self, step: int) -> float:
        return self.base_d_lr * (1.0 if self.auto is None else self.auto.value) * self._factor(step)

    def on_train_begin(self, logs=None):
        # The variables are the state (checkpointed); a resumed run's controllers start there.
        gan = self.model
        self._ada_step = gan.step
        if self.ada is not None:
            self.ada.p = float(gan.augment_probability.numpy())
            gan.ada_signal.reset_state()
        if self.auto is not None:
            # The rate was last set for the update from step - 1 (a fresh run's: the base rate).
            last = self._factor(gan.step - 1) if gan.step else 1.0
            self.auto.value = float(gan.d_optimizer.learning_rate.numpy()) / (self.base_d_lr * last)
            self._last_logged = self.logger.last_step

    def on_train_batch_begin(self, batch, logs=None):
        gan = self.model
        if self.decay is not None:
            gan.g_optimizer.learning_rate.assign(self.base_g_lr * self._factor(gan.step))
            gan.d_optimizer.learning_rate.assign(self._d_lr(gan.step))

    def on_train_batch_end(self, batch, logs=None):
        gan, step = self.model, self.model.step
        if self.ada is not None and step // self.ada_interval > self._ada_step // self.ada_interval:
            self._ada_step = step
            gan.augment_probability.assign(self.ada.update(float(gan.ada_signal.result())))
            gan.ada_signal.reset_state()
        if self.auto is not None and self.logger.last_step != self._last_logged:
            self._last_logged = self.logger.last_step
            self.auto.update(self.logger.latest)
            # With the last update's factor, so a checkpoint taken now holds the new scale
            # where on_train_begin looks for it; the next update's factor is set before it runs.
            gan.d_optimizer.learning_rate.assign(self._d_lr(step - 1))


class CollapseWatch(keras.callbacks.Callback):
    """Stops a run that has failed, as `detector` (a CollapseDetector) decides from each
    logged interval's means plus the diversity of the latest evaluation not yet seen, if any.

    The reason (one line) is kept in `reason`, tagged on the tracking run as
    `collapse_reason`, and printed.
    """

    def __init__(self, detector, tracker, logger: MetricLogger, evaluation: Evaluation | None):
        super().__init__()
        self.detector, self.tracker = detector, tracker
        self.logger, self.evaluation = logger, evaluation
        self.reason: str | None = None
        self._last_logged = None

    def on_train_begin(self, logs=None):
        # The logger's and the evaluation's on_train_begin ran first.
        self._last_logged = self.logger.last_step
        self._last_evaluated = None if self.evaluation is None else self.evaluation.last_step

    def on_train_batch_end(self, batch, logs=None):
        step = self.logger.last_step
        if self.reason is not None or step == self._last_logged:
            return
        self._last_logged = step
        signals = {name: value for name, value in self.logger.latest.items() if not name.startswith("eval/")}
        evaluation = self.evaluation
        if evaluation is not None and evaluation.last_step != self._last_evaluated:
            self._last_evaluated = evaluation.last_step
            # Only the evaluation's own signal: per-attribute accuracies are NaN by design when no
            # evaluated caption mentions that attribute, which is not divergence.
            if "eval/diversity" in evaluation.latest:
                signals["eval/diversity"] = evaluation.latest["eval/diversity"]
        self.reason = self.detector.update(step, signals)
        if self.reason is not None:
            print(f"stopping: {self.reason}")
            self.tracker.set_tags({"collapse_reason": self.reason})
            self.model.stop_training = True


class ObjectiveReport(keras.callbacks.Callback):
    """Hands each new value of the run's objective to `report(step, value)` (a sweep trial's
    link to its study): after every log interval for a training metric, after every
    evaluation for an `eval/` metric, before `final_step`. When `report` returns True (the
    study's pruner says the trial is unpromising) training stops and `reason` says when and why."""

    def __init__(self, report: Callable[[int, float], bool], objective: str, logger: MetricLogger,
                 evaluation: Evaluation | None, final_step: int):  # fmt: skip
        super().__init__()
        self.report, self.objective, self.final_step = report, objective, final_step
        self.source = evaluation if objective.startswith("eval/") else logger
        self.reason: str | None = None
        self._last_reported = None

    def on_train_begin(self, logs=None):
        self._last_reported = self.source.last_step if self.source is not None else None

    def on_train_batch_end(self, batch, logs=None):
        source = self.source
        if source is None or self.reason is not None or source.last_step == self._last_reported:
            return
        self._last_reported = step = source.last_step
        if step >= self.final_step:  # the run is over: its result is the objective, not a report
            return
        value = source.latest.get(self.objective)
        if value is not None and self.report(step, float(value)):
            self.reason = f"pruned by the study at step {step} ({self.objective}={value:.4g})"
            print(f"stopping: {self.reason}")
            self.model.stop_training = True
