"""Optuna sweeps: search spaces, trial bookkeeping, and real sweeps of tiny runs."""

import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from t2igan.sweep import SweepError, counts_toward_budget, load_search_space, outcome

REPO = Path(__file__).resolve().parents[1]
TINY = ["experiment=smoke", "trainer.progress=false", "tracking.log_model=false", "tracking.log_checkpoint=false"]


def write_space(folder: Path, name: str, **content) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


# --- search spaces and bookkeeping ------------------------------------------------------------


def test_every_shipped_search_space_loads_and_its_baseline_is_in_range():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.t2igan_sweeper.optuna_sweeper import _distribution

    spaces = sorted((REPO / "sweeps").glob("*.yaml"))
    assert spaces
    parser = OverridesParser.create()
    for path in spaces:
        space = load_search_space(path.stem, REPO / "sweeps")
        distributions = {key: _distribution(key, expression, parser) for key, expression in space.params.items()}
        for key, value in (space.baseline or {}).items():
            distribution = distributions[key]
            if hasattr(distribution, "choices"):
                assert value in distribution.choices, (path.name, key)
            else:
                assert distribution.low <= value <= distribution.high, (path.name, key)


def test_search_expressions_become_optuna_distributions():
    import optuna.distributions as d
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.t2igan_sweeper.optuna_sweeper import _distribution

    parser = OverridesParser.create()
    assert _distribution("a", "tag(log, interval(1e-5, 1e-3))", parser) == d.FloatDistribution(1e-5, 1e-3, log=True)
    assert _distribution("a", "interval(0, 0.5)", parser) == d.FloatDistribution(0.0, 0.5)
    assert _distribution("a", "tag(int, interval(1, 4))", parser) == d.IntDistribution(1, 4)
    assert _distribution("a", "range(2, 10, 2)", parser) == d.IntDistribution(2, 8, step=2)
    assert _distribution("balance", "choice(hinge, r1)", parser) == d.CategoricalDistribution(["hinge", "r1"])
    with pytest.raises(SweepError, match="not a search expression"):
        _distribution("a", "3", parser)


def test_a_missing_or_empty_space_is_one_clear_error(tmp_path):
    with pytest.raises(SweepError, match="no search space 'nope'.*known: balance"):
        load_search_space("nope", REPO / "sweeps")
    with pytest.raises(SweepError, match="params"):
        load_search_space(str(write_space(tmp_path, "empty", n_trials=3)), tmp_path)
    with pytest.raises(SweepError, match="top-level keys"):
        load_search_space(str(write_space(tmp_path, "typo", parms={"a": "choice(1, 2)"})), tmp_path)


def _trial(state: str, **user_attrs):
    return SimpleNamespace(state=SimpleNamespace(name=state), user_attrs=user_attrs)


def test_interrupted_and_surplus_trials_do_not_use_up_the_budget():
    assert counts_toward_budget(_trial("COMPLETE")) and counts_toward_budget(_trial("PRUNED"))
    assert counts_toward_budget(_trial("RUNNING")) and counts_toward_budget(_trial("WAITING"))
    assert counts_toward_budget(_trial("FAIL", fail_reason="ConfigError: ..."))
    assert not counts_toward_budget(_trial("FAIL"))  # heartbeat lost: queued again
    assert not counts_toward_budget(_trial("FAIL", interrupted=True))
    assert not counts_toward_budget(_trial("PRUNED", surplus=True))


def test_what_training_returns_decides_the_trial_state():
    assert outcome(0.5) == ("complete", None)
    assert outcome(math.nan)[0] == "fail"
    assert outcome(math.inf) == ("pruned", "stopped by the collapse detector")
    assert outcome(-math.inf)[0] == "pruned"
    assert outcome(None)[0] == "fail"


def _readme_sweep_commands() -> list[list[str]]:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    return [shlex.split(line.split("#")[0])[4:] for line in lines if line.startswith("python -m t2igan.train -m ")]


@pytest.mark.parametrize("arguments", _readme_sweep_commands(), ids=" ".join)
def test_every_sweep_command_in_the_readme_names_a_space_whose_trials_compose(arguments, monkeypatch, tmp_path):
    import hydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from t2igan.config import problems

    monkeypatch.setenv("T2IGAN_ROOT", str(tmp_path))
    assert arguments[0] == "hydra/sweeper=optuna"
    settings = dict(argument.split("=", 1) for argument in arguments if argument.startswith("hydra.sweeper."))
    space = load_search_space(settings.get("hydra.sweeper.space", "balance"), REPO / "sweeps")
    parsed = OverridesParser.create().parse_overrides([a for a in arguments[1:] if not a.startswith("hydra")])
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    baseline = [f"{key}={value}" for key, value in (space.baseline or {}).items() if key != "d_lr_ratio"]
    with hydra.initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        assert problems(hydra.compose("config", overrides=[*space.overrides, *plain, *baseline])) == []


# --- real sweeps ------------------------------------------------------------------------------


def sweep(root: Path, space: Path, *overrides: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    environment.update(T2IGAN_ROOT=str(root), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "t2igan.train", "-m", "hydra/sweeper=optuna",
               f"hydra.sweeper.space={space}", *overrides]  # fmt: skip
    # SIGINT at its default, as in a terminal: a test run started as a background job of a
    # non-interactive shell inherits SIGINT ignored, and the interrupt test would then be a no-op.
    return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return stdout


def load_study(root: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")


def mlflow_runs(root: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t2igan")
    return client, client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_a_sweep_records_its_trials_in_optuna_and_mlflow_and_resumes_without_repeats(tmp_path):
    from optuna.trial import TrialState

    space = write_space(tmp_path, "tiny", n_trials=3, overrides=TINY, pruner={"kind": "none"},
                        params={"model.dropout": "interval(0.0, 0.5)", "d_lr_ratio": "tag(log, interval(0.5, 2.0))"})  # fmt: skip
    output = finish(sweep(tmp_path, space, "hydra.sweeper.sampler=random"))
    assert "best trial" in output
    study = load_study(tmp_path, "t2igan-tiny")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3

    client, runs = mlflow_runs(tmp_path)
    (parent,) = [run for run in runs if run.data.tags.get("t2igan.sweep") == "parent"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 4 and len(children) == 3
    assert sorted(run.data.tags["optuna.trial"] for run in children) == ["0", "1", "2"]
    for run in children:  # D's learning rate is the sampled ratio times G's
        trial = study.trials[int(run.data.tags["optuna.trial"])]
        ratio = float(run.data.params["optim.d_lr"]) / float(run.data.params["optim.g_lr"])
        assert ratio == pytest.approx(trial.params["d_lr_ratio"], rel=1e-4)
    assert parent.data.tags["best.trial"] == str(study.best_trial.number)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")} == {
        "optuna/optimization_history.png", "optuna/param_importances.png"}  # fmt: skip

    again = finish(sweep(tmp_path, space, "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=4"))
    assert "3 of 4 trials finished" in again and again.count("[trial") == 1  # only the new one runs
    study = load_study(tmp_path, "t2igan-tiny")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    _, runs = mlflow_runs(tmp_path)
    assert len(runs) == 5  # the same parent, one more child


@pytest.mark.slow
def test_failed_and_pruned_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    from optuna.trial import TrialState

    # Grid order is fixed by the sampler's seed; batch size 1 fails validation, and the
    # threshold pruner stops every trial at its first report (g/total > 0).
    space = write_space(tmp_path, "mixed", n_trials=3, overrides=TINY + ["trainer.steps=6"],
                        params={"trainer.batch_size": "choice(4, 1, 6)"},
                        pruner={"kind": "threshold", "upper": 0.0})  # fmt: skip
    output = finish(sweep(tmp_path, space, "hydra.sweeper.sampler=grid"))
    study = load_study(tmp_path, "t2igan-mixed")
    by_size = {t.params["trainer.batch_size"]: t for t in study.trials}
    assert by_size[1].state == TrialState.FAIL and "trainer.batch_size" in by_size[1].user_attrs["fail_reason"]
    assert by_size[4].state == by_size[6].state == TrialState.PRUNED
    assert "pruned by the study at step 2" in by_size[4].user_attrs["pruned_reason"]
    assert "no trial completed" in output
    _, runs = mlflow_runs(tmp_path)
    pruned_runs = [run for run in runs if run.data.tags.get("optuna.state") == "pruned"]
    assert len(pruned_runs) == 2 and all(run.info.status == "KILLED" for run in pruned_runs)


@pytest.mark.slow
def test_two_workers_on_one_storage_share_the_study(tmp_path):
    from optuna.trial import TrialState

    space = write_space(tmp_path, "shared", n_trials=4, overrides=TINY, pruner={"kind": "none"},
                        params={"model.dropout": "interval(0.0, 0.5)"})  # fmt: skip
    workers = [sweep(tmp_path, space, "hydra.sweeper.sampler=random") for _ in range(2)]
    for worker in workers:
        finish(worker)
    study = load_study(tmp_path, "t2igan-shared")
    counted = [t for t in study.trials if counts_toward_budget(t)]
    assert len(counted) == 4 and all(t.state == TrialState.COMPLETE for t in counted)
    assert len({t.params["model.dropout"] for t in counted}) == 4  # no worker repeated another's trial
    _, runs = mlflow_runs(tmp_path)
    assert len([run for run in runs if run.data.tags.get("t2igan.sweep") == "parent"]) == 1


@pytest.mark.slow
def test_a_trial_is_not_pruned_at_its_last_step(tmp_path):
    from optuna.trial import TrialState

    # The only report would come at the final step (log_every = steps = 2): the run is over,
    # so the threshold pruner, which stops everything else, does not get to decide.
    space = write_space(tmp_path, "last", n_trials=1, overrides=TINY + ["trainer.steps=2"],
                        params={"model.dropout": "interval(0.0, 0.5)"}, pruner={"kind": "threshold", "upper": 0.0})  # fmt: skip
    finish(sweep(tmp_path, space))
    assert [t.state for t in load_study(tmp_path, "t2igan-last").trials] == [TrialState.COMPLETE]


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_its_trial_and_does_not_repeat_finished_ones(tmp_path):
    from optuna.trial import TrialState

    # 40 steps: trial 1 checkpoints at step 2 and still has 38 steps (and 19 checkpoints) to go
    # when the SIGINT below, sent within 0.2 s of that checkpoint, reaches it.
    space = write_space(tmp_path, "stop", n_trials=3, overrides=TINY + ["trainer.steps=40", "trainer.checkpoint_every=2"],
                        params={"model.dropout": "interval(0.0, 0.5)"}, pruner={"kind": "none"})  # fmt: skip
    first = sweep(tmp_path, space)
    for line in first.stdout:  # wait for trial 0 to finish, then interrupt trial 1
        if line.startswith("[trial 0]"):
            break
    # Interrupt trial 1 once it is training (it has checkpointed), however slow the machine.
    deadline = time.monotonic() + 300
    while len(list((tmp_path / "runs").glob("*/checkpoint.npz"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=300)
    interrupted = [t for t in load_study(tmp_path, "t2igan-stop").trials if t.user_attrs.get("interrupted")]
    assert [t.number for t in interrupted] == [1]

    finish(sweep(tmp_path, space))
    study = load_study(tmp_path, "t2igan-stop")
    counted = [t for t in study.trials if counts_toward_budget(t)]
    assert len(counted) == 3 and all(t.state == TrialState.COMPLETE for t in counted)
    assert sum(t.number == 0 for t in counted) == 1  # finished trials are not run again
    for trial in interrupted:  # its retry continued the same run folder
        (retry,) = [t for t in counted if t.user_attrs["run_number"] == trial.user_attrs["run_number"]]
        assert retry.number != trial.number and retry.params == trial.params
