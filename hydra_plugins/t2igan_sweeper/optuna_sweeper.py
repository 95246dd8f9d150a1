"""`hydra/sweeper=optuna`: an Optuna (5) sweeper for `python -m t2igan.train -m`.

Why our own: the hydra-optuna-sweeper on PyPI (1.3.0) pins optuna < 3, whose sqlite storage
fails under SQLAlchemy 2 (which MLflow brings), and it has no pruning. This one runs the study
with `Study.optimize` (heartbeats, failed-trial bookkeeping), launches each trial through
Hydra's launcher into the same `train(cfg)` as a single run, and records the sweep in MLflow:
one parent run, each trial a child run.
"""

import hashlib
import json
import logging
import math
import re
import tempfile
import time
import uuid
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
from t2igan.errors import exit_on_user_error
from t2igan.io import sqlite_lock

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
    seed: int | None = None  # the sampler's seed; null: its own per worker, so workers differ
    heartbeat_seconds: int = 60  # a trial silent for 5x this is failed and queued again


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="t2igan")


def _distribution(key: str, expression: str, parser: OverridesParser):
    """An Optuna distribution from a Hydra sweep expression (see t2igan.sweep.SearchSpace)."""
    import optuna.distributions as d

    try:
        value = parser.parse_overrides([f"{key}={expression}"])[0].value()
        if isinstance(value, ChoiceSweep):
            return d.CategoricalDistribution(value.list)
        if isinstance(value, IntervalSweep):
            if "int" in value.tags:
                return d.IntDistribution(int(value.start), int(value.end), log="log" in value.tags)
            return d.FloatDistribution(value.start, value.end, log="log" in value.tags)
        if isinstance(value, RangeSweep) and all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            values = list(range(value.start, value.stop, value.step))
            if value.step > 0 and values:
                return d.IntDistribution(values[0], values[-1], step=value.step)
    except Exception as error:  # the grammar's and Optuna's own complaints
        raise sweeps.SweepError(f"{key}={expression}: {_one_line(error)}") from None
    raise sweeps.SweepError(f"{key}={expression} is not a search expression: use choice(...), interval(lo, hi), "
                            "tag(log, interval(lo, hi)) or range(lo, hi, step) with a positive integer step")  # fmt: skip


def _override(key: str, value: Any) -> str:
    """`key=value` in Hydra's override grammar: floats exact, None as null, other strings quoted."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, float):
        return f"{key}={value!r}"
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return f"{key}='{value}'" if "'" not in value else f'{key}="{value}"'
    return f"{key}={value}"


class OptunaSweeper(Sweeper):
    def __init__(self, space: str, n_trials: int | None, study_name: str | None, storage: str | None,
                 sampler: str, startup_trials: int, seed: int | None, heartbeat_seconds: int):  # fmt: skip
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
            heartbeat_interval=self.heartbeat_seconds, grace_period=5 * self.heartbeat_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
        )  # fmt: skip
        if self.sampler_kind == "grid":  # _read_arguments made sure every param is a choice
            grid = {key: list(dist.choices) for key, dist in self.distributions.items()}
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

    @exit_on_user_error  # one line, as every t2igan command
    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        # Each trial's outcome is printed here, with its reason; Optuna's own lines repeat it.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        space = sweeps.load_search_space(self.space_name, self._sweeps_dir())
        self._read_arguments(space, arguments)
        baseline = [_override(k, v) for k, v in (space.baseline or {}).items() if k != sweeps.LR_RATIO]
        first = self._checked_config(self.fixed + baseline)
        from t2igan.trainer import is_maximized

        self.objective_name = first.trainer.objective
        direction = "maximize" if is_maximized(self.objective_name) else "minimize"
        self.n_trials = self.n_trials if self.n_trials is not None else space.n_trials
        if self.sampler_kind == "grid":  # a grid has only so many points
            self.n_trials = min(self.n_trials, math.prod(len(d.choices) for d in self.distributions.values()))
        self.study_name = self.study_name or f"t2igan-{space.name}"
        root = Path(first.paths.root).resolve()
        self.storage_url = self.storage_url or f"sqlite:///{root / 'optuna.db'}"
        signature = _signature(self.objective_name, direction, self.fixed, self.expressions, self.fixed_ratio)
        # Serialise study set-up (creation, baseline, parent run) between workers on one machine;
        # with a database server, start one worker before the others.
        with sqlite_lock(self.storage_url):
            study = self._make_study(space, direction)
            if "signature" not in study.user_attrs:
                study.set_user_attr("signature", signature)
                study.set_user_attr("uuid", uuid.uuid4().hex[:6])
                if space.baseline and self.sampler_kind != "grid":
                    study.enqueue_trial(dict(space.baseline))
            elif study.user_attrs["signature"] != signature:
                raise sweeps.SweepError(
                    f"study {self.study_name} in {self.storage_url} was started with another objective, "
                    "search space or fixed overrides; continue it unchanged, or start another with "
                    "hydra.sweeper.study_name=<name>")  # fmt: skip
            self.run_prefix = f"{self.study_name}-{study.user_attrs['uuid']}"
            optuna.storages.fail_stale_trials(study)  # trials whose worker died: failed, queued again
            self.parent = _ParentRun.open(study, first.tracking, root) if first.tracking.enabled else None
        finished, running, waiting = _progress(study)
        print(f"sweep {self.study_name}: {direction} {self.objective_name} over {', '.join(self.expressions)}; "
              f"{finished} of {self.n_trials} trials finished, {running} running, {waiting} queued "
              f"(storage {self.storage_url})", flush=True)  # fmt: skip
        status = "FINISHED"
        try:
            if finished + running < self.n_trials or waiting:
                study.optimize(self._objective, n_trials=None, catch=(Exception,), callbacks=[self._stop_when_full])
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            best = self._finish(study, status)
        return best

    def _read_arguments(self, space: sweeps.SearchSpace, arguments: list[str]) -> None:
        """Search expressions from the space and the command line; plain overrides apply to
        every trial and win over a searched key (`d_lr_ratio=2` fixes the ratio)."""
        self.expressions = dict(space.params)
        self.fixed, self.fixed_ratio = list(space.overrides), None
        for override in self.parser.parse_overrides(arguments):
            key = override.get_key_element()
            if override.is_sweep_override():
                self.expressions[key] = override.input_line.split("=", 1)[1]  # the expression as typed
                continue
            self.expressions.pop(key, None)
            if key == sweeps.LR_RATIO:
                self.fixed_ratio = float(override.value())
            else:
                self.fixed.append(override.input_line)
        ratio = sweeps.LR_RATIO in self.expressions or self.fixed_ratio is not None
        d_lr = "optim.d_lr" in self.expressions or any(o.startswith("optim.d_lr=") for o in self.fixed)
        if ratio and d_lr:
            raise sweeps.SweepError("give either d_lr_ratio or optim.d_lr, not both")
        self.distributions = {key: _distribution(key, expression, self.parser)
                              for key, expression in self.expressions.items()}  # fmt: skip
        if self.sampler_kind == "grid" and not all(hasattr(d, "choices") for d in self.distributions.values()):
            raise sweeps.SweepError("hydra.sweeper.sampler=grid takes choice(...) params only")

    def _checked_config(self, overrides: list[str]) -> DictConfig:
        """The trial config of `overrides`, or a SweepError naming every problem."""
        from t2igan.config import problems

        try:
            config = self._trial_config(overrides)
        except Exception as error:  # Hydra's composition errors: unknown keys, bad values
            raise sweeps.SweepError(f"the sweep's trials do not compose: {_one_line(error)}") from None
        found = problems(OmegaConf.masked_copy(config, [key for key in config if key != "hydra"]))
        if found:
            raise sweeps.SweepError("the sweep's trials would not run:\n  " + "\n  ".join(found))
        return config

    def _stop_when_full(self, study, trial) -> None:
        finished, running, waiting = _progress(study)
        if not waiting and finished + running >= self.n_trials:
            study.stop()

    # ------------------------------------------------------------------ one trial

    def _objective(self, trial) -> float:
        import optuna

        ranked = sorted(t.number for t in trial.study.get_trials(deepcopy=False) if sweeps.counts_toward_budget(t))
        if trial.number not in ranked[: self.n_trials]:
            trial.set_user_attr("surplus", True)  # another worker filled the budget meanwhile
            trial.study.stop()
            raise optuna.TrialPruned("the study already has its trials")
        if "run_number" not in trial.user_attrs:  # retries inherit it, and so resume its run
            trial.set_user_attr("run_number", trial.number)
        started = time.perf_counter()
        link = None
        try:
            overrides = self._suggest(trial)
            tags = {"optuna.study": self.study_name, "optuna.trial": str(trial.number)}
            tags |= {f"optuna.param.{key}": str(value) for key, value in trial.params.items()}
            if self.parent:
                tags["mlflow.parentRunId"] = self.parent.run_id  # MLflow's own: a child run
            link = sweeps.TrialLink(report=lambda step, value: _report(trial, step, value), tags=tags)
            with sweeps.activate(link):
                (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            state, reason, value = _result(result)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            # Queued again: the next run of the sweep resumes it from its checkpoint.
            trial.study.enqueue_trial(trial.params, user_attrs={"run_number": trial.user_attrs["run_number"]})
            raise
        except Exception as error:  # composing or launching it failed: the trial fails, the study goes on
            state, reason, value = "fail", _one_line(error), math.nan
        seconds = time.perf_counter() - started
        trial.set_user_attr("seconds", round(seconds, 1))
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        verdict = f"{self.objective_name}={value:.4g}" if state == "complete" else f"{state}: {reason}"
        print(f"[trial {trial.number}] {shown} -> {verdict} ({seconds:.0f} s)", flush=True)
        if self.parent and link is not None and link.run_id:
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
        overrides = self.fixed + [f"trainer.run_name={self.run_prefix}-trial{trial.user_attrs['run_number']}"]
        overrides += [_override(k, v) for k, v in sampled.items() if k != sweeps.LR_RATIO]
        ratio = sampled.get(sweeps.LR_RATIO, self.fixed_ratio)
        if ratio is not None:
            g_lr = float(self._trial_config(overrides).optim.g_lr)
            overrides.append(_override("optim.d_lr", float(f"{ratio * g_lr:.6g}")))
        return overrides

    # ------------------------------------------------------------------ the end

    def _finish(self, study, status: str) -> dict:
        from optuna.trial import TrialState

        states = [t.state for t in study.get_trials(deepcopy=False)]
        summary = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in TrialState if states.count(s))
        _, running, waiting = _progress(study)
        if self.parent:  # FINISHED once no trial is left to run, whichever worker ends last
            final = status if status != "FINISHED" else ("FINISHED" if not running and not waiting else None)
            self.parent.summarise(study, self.objective_name, status=final)
        if TrialState.COMPLETE not in states:
            print(f"sweep {self.study_name}: no trial completed ({summary})")
            return {}
        best = study.best_trial
        print(f"sweep {self.study_name}: {summary}; best trial {best.number}: "
              f"{self.objective_name}={best.value:.4g} with {best.params}")  # fmt: skip
        return {"best_params": best.params, "best_value": best.value}


def _progress(study) -> tuple[int, int, int]:
    """(finished, running, queued) trials that count toward the budget."""
    counted = [t.state.name for t in study.get_trials(deepcopy=False) if sweeps.counts_toward_budget(t)]
    running, waiting = counted.count("RUNNING"), counted.count("WAITING")
    return len(counted) - running - waiting, running, waiting


def _result(result) -> tuple[str, str | None, float]:
    """(state, reason, value) of a launched job."""
    if result.status == JobStatus.COMPLETED:
        state, reason = sweeps.outcome(result.return_value)
        return state, reason, (float(result.return_value) if state == "complete" else math.nan)
    error = result._return_value  # a failed job holds its exception
    if isinstance(error, sweeps.Pruned):
        return "pruned", str(error), math.nan
    return "fail", _one_line(error), math.nan


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in f"{type(error).__name__}: {error}".splitlines()]
    return " ".join(line for line in lines if line)


def _signature(objective: str, direction: str, fixed: list[str], expressions: dict, ratio) -> str:
    """What makes two runs of a sweep the same study."""
    content = json.dumps([objective, direction, sorted(fixed), sorted(expressions.items()), ratio])
    return hashlib.sha1(content.encode()).hexdigest()[:12]


def _report(trial, step: int, value: float) -> bool:
    if not math.isfinite(value):
        return False  # NaN or inf mean divergence or collapse, which training handles itself
    trial.report(value, step)
    return trial.should_prune()


PRUNER_SETTINGS = {"median": {"startup_trials", "warmup_steps"}, "threshold": {"lower", "upper", "warmup_steps"},
                   "none": set()}  # fmt: skip


def _pruner(settings: dict):
    import optuna

    settings = dict(settings)
    kind = settings.pop("kind", "median")
    if kind not in PRUNER_SETTINGS:
        raise sweeps.SweepError(f"pruner.kind must be one of {sorted(PRUNER_SETTINGS)} (got {kind!r})")
    if unknown := set(settings) - PRUNER_SETTINGS[kind]:
        raise sweeps.SweepError(f"pruner {kind} takes {sorted(PRUNER_SETTINGS[kind])}, not {sorted(unknown)}")
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.get("startup_trials", 3),
                                           n_warmup_steps=settings.get("warmup_steps", 0))  # fmt: skip
    if kind == "threshold":
        return optuna.pruners.ThresholdPruner(lower=settings.get("lower"), upper=settings.get("upper"),
                                              n_warmup_steps=settings.get("warmup_steps", 0))  # fmt: skip
    return optuna.pruners.NopPruner()


class _ParentRun:
    """The sweep's MLflow run (an MlflowTracker): children point at it; it ends with the best
    params and plots."""

    def __init__(self, tracker):
        self.tracker, self.run_id = tracker, tracker.run_id

    @classmethod
    def open(cls, study, tracking: DictConfig, root: Path) -> "_ParentRun":
        from t2igan.tracking import make_tracker

        run_id = study.user_attrs.get("mlflow_parent_run_id")
        tracker = make_tracker(**OmegaConf.to_container(tracking, resolve=True), root=root,
                               run_name=f"sweep-{study.study_name}", run_id=run_id)  # fmt: skip
        if tracker.run_id != run_id:  # a new study, or its parent run was deleted
            study.set_user_attr("mlflow_parent_run_id", tracker.run_id)
            tracker.set_tags({"optuna.study": study.study_name, "t2igan.sweep": "parent"})
        return cls(tracker)

    def tag_child(self, run_id: str, state: str, reason: str | None) -> None:
        self.tracker.client.set_tag(run_id, "optuna.state", state)
        if reason:
            self.tracker.client.set_tag(run_id, "optuna.reason", reason[:5000])

    def summarise(self, study, objective: str, *, status: str | None) -> None:
        """Best trial (tags `best.<param>`, metric `best/<objective>`) and Optuna's plots;
        ends the run with `status` unless it is None (trials still to run)."""
        from optuna.trial import TrialState

        if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            best = study.best_trial
            self.tracker.log_metrics({f"best/{objective}": best.value}, step=best.number)
            self.tracker.set_tags({f"best.{key}": str(value) for key, value in best.params.items()}
                                  | {"best.trial": str(best.number)})  # fmt: skip
            with tempfile.TemporaryDirectory() as folder:
                for path in _plots(study, Path(folder)).values():
                    self.tracker.log_artifact(path, "optuna")
        if status is not None:
            self.tracker.finish(status)


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
