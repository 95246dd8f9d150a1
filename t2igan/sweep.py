"""Optuna sweeps over the training config: search spaces, trial outcomes, and the link that
lets a running trial report to its study.

The Hydra side lives in `hydra_plugins/t2igan_sweeper` (`hydra/sweeper=optuna`); it runs each
trial through the same `t2igan.train.train(cfg)` as a single run. While a trial trains, the
sweeper makes a `TrialLink` active: training reports its objective through it (Optuna's
pruner may answer "stop") and opens its MLflow run as a child of the sweep's parent run.
Nothing here imports Optuna at module level, so training without a sweep never loads it.
"""

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from t2igan.errors import UserError

# A search-space dimension that is not a config key: D's learning rate as a multiple of G's.
LR_RATIO = "d_lr_ratio"


class Pruned(Exception):
    """The study's pruner stopped this trial early; the message says when and why."""


class SweepError(UserError):
    """A search space or sweeper setting cannot be used."""


@dataclass
class TrialLink:
    """What a running trial needs from its study.

    `report(step, value)` records the objective's intermediate value and returns True when
    the pruner says to stop. `tags` go on the trial's MLflow run (with the sweep's parent run
    as `mlflow.parentRunId`); training stores that run's id in `run_id`.
    """

    report: Callable[[int, float], bool]
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None


_active: TrialLink | None = None


def active_trial() -> TrialLink | None:
    """The trial being trained in this process, or None outside a sweep."""
    return _active


@contextlib.contextmanager
def activate(link: TrialLink) -> Iterator[TrialLink]:
    global _active
    _active = link
    try:
        yield link
    finally:
        _active = None


@dataclass(frozen=True)
class SearchSpace:
    """A named search space (`sweeps/<name>.yaml`).

    `params` maps a config key (or `d_lr_ratio`) to a Hydra sweep expression:
    `choice(a, b)`, `interval(lo, hi)`, `range(lo, hi, step)`, `tag(log, interval(lo, hi))`.
    `overrides` apply to every trial; `baseline` (params) is enqueued as the first trial so the
    study compares against it; `n_trials` and `pruner` are the defaults for this space.
    """

    name: str
    params: dict[str, str]
    overrides: tuple[str, ...] = ()
    baseline: dict | None = None
    n_trials: int = 12
    pruner: dict = field(default_factory=lambda: {"kind": "median", "startup_trials": 3, "warmup_steps": 0})
    description: str = ""


SPACE_KEYS = {"params", "overrides", "baseline", "n_trials", "pruner", "description"}


def load_search_space(space: str, sweeps_dir: Path) -> SearchSpace:
    """`space` is a name in `sweeps_dir` (without .yaml) or a path to a YAML file."""
    path = Path(space) if space.endswith((".yaml", ".yml")) else sweeps_dir / f"{space}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in sweeps_dir.glob("*.yaml")) if sweeps_dir.is_dir() else []
        raise SweepError(f"no search space {space!r}: expected {path} (known: {', '.join(known) or 'none'})")
    content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(content, dict) or set(content) - SPACE_KEYS:
        raise SweepError(f"{path}: top-level keys must be among {sorted(SPACE_KEYS)}")
    params = {str(key): str(value) for key, value in (content.get("params") or {}).items()}
    if not params:
        raise SweepError(f"{path}: `params` is empty; nothing to search")
    overrides = content.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise SweepError(f"{path}: `overrides` must be a list of key=value strings")
    n_trials = content.get("n_trials", 12)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise SweepError(f"{path}: `n_trials` must be a positive integer (got {n_trials!r})")
    unknown = set(content.get("baseline") or {}) - set(params)
    if unknown:
        raise SweepError(f"{path}: baseline keys {sorted(unknown)} are not in `params`")
    return SearchSpace(
        name=path.stem, params=params, overrides=tuple(overrides),
        baseline=content.get("baseline"), n_trials=n_trials,
        pruner=content.get("pruner") or SearchSpace.__dataclass_fields__["pruner"].default_factory(),
        description=str(content.get("description", "")),
    )  # fmt: skip


def counts_toward_budget(trial) -> bool:
    """Whether a trial (an Optuna FrozenTrial) uses up one of the sweep's `n_trials`.

    Finished, pruned, running and queued trials do, and so do trials that failed with a
    reason. A trial interrupted by a crash or Ctrl-C does not: it is queued again (its run
    resumes from its checkpoint), and a surplus trial opened by a racing worker does not.
    """
    if trial.user_attrs.get("surplus"):
        return False
    if trial.state.name == "FAIL":
        return "fail_reason" in trial.user_attrs
    return True


def outcome(value) -> tuple[str, str | None]:
    """("complete" | "pruned" | "fail", reason) for what a trial's training returned: a
    finite objective completes; the collapse detector's infinite penalty is a prune; NaN fails."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "fail", f"the objective is not a number: {value!r}"
    if math.isnan(value):
        return "fail", "the objective is NaN (training diverged or never logged it)"
    if math.isinf(value):
        return "pruned", "stopped by the collapse detector"
    return "complete", None
