"""`hydra/sweeper=optuna`: an Optuna (>= 4) sweeper for `python -m t2igan.train -m`.

Why our own: the hydra-optuna-sweeper on PyPI (1.3.0) pins optuna < 3, whose sqlite storage
fails under SQLAlchemy 2 (which MLflow brings), and it has no pruning. This one runs the study
with `Study.optimize` (heartbeats, failed-trial bookkeeping), launches each trial through
Hydra's launcher into the same `train(cfg)` as a single run, and records the sweep in MLflow:
one parent run, each trial a child run.
"""

import contextlib
import fcntl
import logging
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from t2igan import sweep as sweeps

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.t2igan_sweeper.optuna_sweeper.OptunaSweeper"
    space: str = "balance"  # sweeps/<space>.yaml, or a path to a .yaml file
    n_trials: int | None = None  # trials in the whole study, all workers together; null: the space's
    study_name: str | None = None  # null: t2igan-<space>
    storage: str | None = None  # any Optuna RDB URL; null: sqlite:///<paths.root>/optuna.db
    sampler: str = "tpe"  # tpe | random | grid (grid: choice() params only)
    startup_trials: int = 4  # TPE: random trials before it models the space
    seed: int = 0  # the sampler's seed
    heartbeat_seconds: int = 60  # a trial silent for 2x this is failed and queued again


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="t2igan")


def _distribution(key: str, expression: str, parser: OverridesParser):
    """An Optuna distribution from a Hydra sweep expression (see t2igan.sweep.SearchSpace)."""
    import optuna.distributions as d

    value = parser.parse_overrides([f"{key}={expression}"])[0].value()
    if isinstance(value, ChoiceSweep):
        return d.CategoricalDistribution(value.list)
    if isinstance(value, IntervalSweep):
        if "int" in value.tags:
            return d.IntDistribution(int(value.start), int(value.end), log="log" in value.tags)
        return d.FloatDistribution(value.start, value.end, log="log" in value.tags)
    if isinstance(value, RangeSweep):
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return d.IntDistribution(value.start, value.stop - value.step, step=value.step)
        return d.CategoricalDistribution(list(value))
    raise sweeps.SweepError(f"{key}={expression} is not a search expression: use choice(...), "
                            "interval(lo, hi), tag(log, interval(lo, hi)) or range(lo, hi, step)")  # fmt: skip


def _override(key: str, value: Any) -> str:
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


@contextlib.contextmanager
def _study_lock(storage: str):
    """Serialise study set-up (creation, baseline, parent run) between workers on one machine;
    with a database server, start one worker before the others."""
    if not storage.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(storage.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OptunaSweeper(Sweeper):
    def __init__(self, space: str, n_trials: int | None, study_name: str | None, storage: str | None,
                 sampler: str, startup_trials: int, seed: int, heartbeat_seconds: int):  # fmt: skip
        self.space_name, self.n_trials, self.study_name = space, n_trials, study_name
        self.storage_url, self.sampler_kind, self.startup_trials = storage, sampler, startup_trials
        self.seed, self.heartbeat_seconds = seed, heartbeat_seconds

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.parser = OverridesParser.create(config_loader=hydra_context.config_loader)

    # ------------------------------------------------------------------ the study

    def _sweeps_dir(self) -> Path:
        """`sweeps/` beside the primary config folder (`conf/`), wherever the process runs."""
        for source in self.config.hydra.runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return Path(source.path).parent / "sweeps"
        return Path.cwd() / "sweeps"

    def _trial_config(self, overrides: list[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                  sweep_overrides=overrides)  # fmt: skip

    def _make_study(self, space: sweeps.SearchSpace, direction: str):
        import optuna

        storage = optuna.storages.RDBStorage(
            self.storage_url,
            engine_kwargs={"connect_args": {"timeout": 120}} if self.storage_url.startswith("sqlite") else None,
            heartbeat_interval=self.heartbeat_seconds, grace_period=2 * self.heartbeat_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
        )  # fmt: skip
        if self.sampler_kind == "grid":
            grid = {key: list(dist.choices) for key, dist in self.distributions.items()
                    if isinstance(dist, optuna.distributions.CategoricalDistribution)}  # fmt: skip
            if len(grid) != len(self.distributions):
                raise sweeps.SweepError("sampler=grid takes choice(...) params only")
            sampler = optuna.samplers.GridSampler(grid, seed=self.seed)
        elif self.sampler_kind == "random":
            sampler = optuna.samplers.RandomSampler(seed=self.seed)
        elif self.sampler_kind == "tpe":
            sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=self.startup_trials)
        else:
            raise sweeps.SweepError(f"hydra.sweeper.sampler must be tpe, random or grid (got {self.sampler_kind!r})")
        pruner = _pruner(space.pruner)
        return optuna.create_study(study_name=self.study_name, storage=storage, sampler=sampler,
                                   pruner=pruner, direction=direction, load_if_exists=True)  # fmt: skip

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        # Each trial's outcome is printed here, with its reason; Optuna's own lines repeat it.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        space = sweeps.load_search_space(self.space_name, self._sweeps_dir())
        # Command-line sweep expressions join the space; plain overrides apply to every trial.
        params = dict(space.params)
        fixed = list(space.overrides)
        for override in self.parser.parse_overrides(arguments):
            key = override.get_key_element()
            if override.is_sweep_override():
                params[key] = override.input_line.split("=", 1)[1]  # the expression as typed
            else:
                fixed.append(f"{key}={override.get_value_element_as_str()}")
        self.distributions = {key: _distribution(key, expression, self.parser) for key, expression in params.items()}
        self.fixed = fixed
        first = self._trial_config(fixed)
        paths, tracking = first.paths, first.tracking
        from t2igan.trainer import is_maximized

        self.objective_name = first.trainer.objective
        direction = "maximize" if is_maximized(self.objective_name) else "minimize"
        self.n_trials = self.n_trials or space.n_trials
        self.study_name = self.study_name or f"t2igan-{space.name}"
        root = Path(paths.root).resolve()
        self.storage_url = self.storage_url or f"sqlite:///{root / 'optuna.db'}"
        with _study_lock(self.storage_url):
            study = self._make_study(space, direction)
            if space.baseline and not study.trials:
                study.enqueue_trial(dict(space.baseline))
            self.parent = _ParentRun.open(study, tracking, root) if tracking.enabled else None
        done = sum(sweeps.counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
        print(f"sweep {self.study_name}: {direction} {self.objective_name} over {', '.join(params)}; "
              f"{done} of {self.n_trials} trials done, running or queued (storage {self.storage_url})")  # fmt: skip
        if done < self.n_trials:
            study.optimize(self._objective, n_trials=None, catch=(Exception,), callbacks=[self._stop_when_full])
        best = self._finish(study)
        return best

    def _stop_when_full(self, study, trial) -> None:
        if sum(sweeps.counts_toward_budget(t) for t in study.get_trials(deepcopy=False)) >= self.n_trials:
            study.stop()

    # ------------------------------------------------------------------ one trial

    def _objective(self, trial) -> float:
        import optuna

        ranked = sorted(t.number for t in trial.study.get_trials(deepcopy=False) if sweeps.counts_toward_budget(t))
        if trial.number not in ranked[: self.n_trials]:
            trial.set_user_attr("surplus", True)  # another worker filled the budget meanwhile
            trial.study.stop()
            raise optuna.TrialPruned("the study already has its trials")
        overrides = self._suggest(trial)
        tags = {"optuna.study": self.study_name, "optuna.trial": str(trial.number)}
        if self.parent:
            tags["mlflow.parentRunId"] = self.parent.run_id  # MLflow's own: a child run
        link = sweeps.TrialLink(report=lambda step, value: _report(trial, step, value), tags=tags)
        started = time.perf_counter()
        try:
            with sweeps.activate(link):
                (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            # Queued again: the next run of the sweep resumes it from its checkpoint.
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": _run_number(trial)})
            raise
        seconds = time.perf_counter() - started
        trial.set_user_attr("seconds", round(seconds, 1))
        value = math.nan
        if result.status == JobStatus.COMPLETED:
            value = result.return_value
            state, reason = sweeps.outcome(value)
        elif isinstance(error := result._return_value, sweeps.Pruned):  # a failed job holds its exception
            state, reason = "pruned", str(error)
        else:  # the trial's own failure; the study goes on
            lines = [line.strip() for line in f"{type(error).__name__}: {error}".splitlines()]
            state, reason = "fail", " ".join(line for line in lines if line)
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        verdict = f"{self.objective_name}={value:.4g}" if state == "complete" else f"{state}: {reason}"
        print(f"[trial {trial.number}] {shown} -> {verdict} ({seconds:.0f} s)")
        if self.parent and link.run_id:
            self.parent.tag_child(link.run_id, state, reason)
        if state == "pruned":
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        if state == "fail":
            trial.set_user_attr("fail_reason", reason)
            return math.nan  # recorded as FAIL; the study goes on
        return float(value)

    def _suggest(self, trial) -> list[str]:
        """The trial's overrides: fixed ones, sampled ones, and D's lr from the ratio."""
        import optuna.distributions as d

        sampled = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, d.CategoricalDistribution):
                sampled[key] = trial.suggest_categorical(key, dist.choices)
            elif isinstance(dist, d.IntDistribution):
                sampled[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                sampled[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
        # One run folder (and MLflow run) per trial; a retried trial resumes its original's.
        overrides = self.fixed + [f"trainer.run_name={self.study_name}-trial{_run_number(trial)}"]
        overrides += [_override(k, v) for k, v in sampled.items() if k != sweeps.LR_RATIO]
        if sweeps.LR_RATIO in sampled:
            g_lr = float(self._trial_config(overrides).optim.g_lr)
            overrides.append(_override("optim.d_lr", float(f"{sampled[sweeps.LR_RATIO] * g_lr:.6g}")))
        return overrides

    # ------------------------------------------------------------------ the end

    def _finish(self, study) -> dict:
        from optuna.trial import TrialState

        states = [t.state for t in study.get_trials(deepcopy=False)]
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        summary = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in TrialState if states.count(s))
        if not complete:
            print(f"sweep {self.study_name}: no trial completed ({summary})")
            return {}
        best = study.best_trial
        print(f"sweep {self.study_name}: {summary}; best trial {best.number}: "
              f"{self.objective_name}={best.value:.4g} with {best.params}")  # fmt: skip
        if self.parent:
            running = states.count(TrialState.RUNNING) + states.count(TrialState.WAITING)
            self.parent.summarise(study, self.objective_name, finished=not running)
        return {"best_params": best.params, "best_value": best.value}


def _run_number(trial) -> int:
    """The number of the trial whose run this one continues: its own, unless it is a retry
    of a trial a crash (heartbeat lost) or Ctrl-C interrupted."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    retried = frozen.system_attrs.get("failed_trial", frozen.user_attrs.get("retry_of"))
    return trial.number if retried is None else int(retried)


def _report(trial, step: int, value: float) -> bool:
    if not math.isfinite(value):
        return False  # NaN or inf mean divergence or collapse, which training handles itself
    trial.report(value, step)
    return trial.should_prune()


def _pruner(settings: dict):
    import optuna

    settings = dict(settings)
    kind = settings.pop("kind", "median")
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.pop("startup_trials", 3),
                                           n_warmup_steps=settings.pop("warmup_steps", 0))  # fmt: skip
    if kind == "threshold":
        return optuna.pruners.ThresholdPruner(lower=settings.pop("lower", None), upper=settings.pop("upper", None),
                                              n_warmup_steps=settings.pop("warmup_steps", 0))  # fmt: skip
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise sweeps.SweepError(f"pruner.kind must be median, threshold or none (got {kind!r})")


class _ParentRun:
    """The sweep's MLflow run: children point at it; it ends with the best params and plots."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def open(cls, study, tracking: DictConfig, root: Path) -> "_ParentRun":
        from t2igan.tracking import make_tracker

        run_id = study.user_attrs.get("mlflow_parent_run_id")
        tracker = make_tracker(**OmegaConf.to_container(tracking, resolve=True), root=root,
                               run_name=f"sweep-{study.study_name}", run_id=run_id)  # fmt: skip
        if run_id is None:
            study.set_user_attr("mlflow_parent_run_id", tracker.run_id)
            tracker.set_tags({"optuna.study": study.study_name, "t2igan.sweep": "parent"})
        return cls(tracker.client, tracker.run_id)

    def tag_child(self, run_id: str, state: str, reason: str | None) -> None:
        self.client.set_tag(run_id, "optuna.state", state)
        if reason:
            self.client.set_tag(run_id, "optuna.reason", reason[:5000])

    def summarise(self, study, objective: str, *, finished: bool) -> None:
        from mlflow.entities import Metric

        best = study.best_trial
        self.client.log_batch(self.run_id, metrics=[Metric(f"best/{objective}", best.value, int(time.time() * 1000), best.number)])
        for key, value in best.params.items():
            self.client.set_tag(self.run_id, f"best.{key}", str(value))
        self.client.set_tag(self.run_id, "best.trial", str(best.number))
        with tempfile.TemporaryDirectory() as folder:
            for name, path in _plots(study, Path(folder)).items():
                self.client.log_artifact(self.run_id, str(path), "optuna")
        if finished:
            self.client.set_terminated(self.run_id, status="FINISHED")


def _plots(study, folder: Path) -> dict[str, Path]:
    """Optuna's optimisation history and parameter importances as PNGs (those it can draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    made = {}
    for name, draw in (("optimization_history", plots.plot_optimization_history),
                       ("param_importances", plots.plot_param_importances)):  # fmt: skip
        try:
            axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. too few trials
            log.info("no %s plot: %s", name, error)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        made[name] = folder / f"{name}.png"
        figure.savefig(made[name], dpi=100)
        plt.close(figure)
    return made
