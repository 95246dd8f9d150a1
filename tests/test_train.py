"""End to end: the command a user runs, and what they would look at afterwards."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2igan.checkpoint import read_header

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def command(*overrides):
    return [sys.executable, "-m", "t2igan.train", "experiment=smoke", "trainer.progress=false", *overrides]


def environment(root: Path) -> dict:
    # The default store, under root: no MLFLOW_TRACKING_URI from the caller's environment.
    inherited = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return {**inherited, "T2IGAN_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def run(root: Path, *overrides) -> subprocess.CompletedProcess:
    result = subprocess.run(command(*overrides), cwd=REPO, env=environment(root),
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def only_run_folder(root: Path) -> Path:
    (folder,) = (root / "runs").iterdir()
    return folder


def mlflow_runs(root: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t2igan")
    return client, client.search_runs([experiment.experiment_id])


def test_a_run_records_everything_and_a_rerun_resumes_it(tmp_path):
    run(tmp_path)
    folder = only_run_folder(tmp_path)
    assert read_header(folder / "checkpoint.npz")["step"] == 4
    grid = np.asarray(Image.open(folder / "samples" / "step_0000004.png"))
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.std() > 0
    assert (folder / "config.yaml").read_text().startswith("seed: 0")

    client, (mlflow_run,) = mlflow_runs(tmp_path)
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["model.width"] == "0.0625"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", mlflow_run.data.tags["mlflow.source.git.commit"])
    history = client.get_metric_history(mlflow_run.info.run_id, "d/total")
    assert [m.step for m in history] == [2, 4]
    for name in ("d_score/real", "d_score/fake", "d_score/wrong", "g/kl", "grad_norm/g", "perf/images_per_second"):
        assert name in mlflow_run.data.metrics, name
    artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"config.yaml", "checkpoint.npz"} <= artifacts

    again = run(tmp_path, "trainer.steps=6")
    assert "at step 4" in again.stdout
    assert read_header(folder / "checkpoint.npz")["step"] == 6
    client, (resumed,) = mlflow_runs(tmp_path)  # the same MLflow run, continued
    assert resumed.info.run_id == mlflow_run.info.run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "d/total")] == [2, 4, 6]

    done = run(tmp_path, "trainer.steps=6")  # nothing left to train: no new step, no new model
    assert "already trained to step 6" in done.stdout
    client, (finished,) = mlflow_runs(tmp_path)
    assert finished.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(finished.info.run_id, "d/total")] == [2, 4, 6]

    run(tmp_path, "trainer.steps=2", "trainer.resume=false")  # starts over beside the old run
    assert read_header(folder / "checkpoint.npz")["step"] == 6
    assert read_header(folder.with_name(f"{folder.name}-2") / "checkpoint.npz")["step"] == 2
    assert len(mlflow_runs(tmp_path)[1]) == 2


def test_kill_minus_nine_then_the_same_command_finishes_the_run(tmp_path):
    overrides = ("trainer.steps=40", "trainer.checkpoint_every=2", "trainer.sample_every=1000")
    process = subprocess.Popen(command(*overrides), cwd=REPO, env=environment(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = list((tmp_path / "runs").glob("*/checkpoint.npz"))
        if found and read_header(found[0])["step"] >= 4:
            checkpoint = found[0]
            break
        time.sleep(0.2)
    assert checkpoint is not None and process.poll() is None, "no checkpoint before the run ended"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = read_header(checkpoint)["step"]
    assert 4 <= killed_at < 40

    result = run(tmp_path, *overrides)
    assert f"at step {killed_at}" in result.stdout
    assert read_header(checkpoint)["step"] == 40
    _, (mlflow_run,) = mlflow_runs(tmp_path)
    assert mlflow_run.info.status == "FINISHED"


def test_optim_decay_from_lowers_both_learning_rates_over_the_end_of_the_run(tmp_path):
    run(tmp_path, "optim.decay_from=0.5")  # 4 steps: factors 1, 1, 1, 1/2 (t2igan.controllers.LinearDecay)
    client, (mlflow_run,) = mlflow_runs(tmp_path)
    for name in ("balance/g_lr", "balance/d_lr"):  # interval means (log_every=2) of adam's 2e-4
        history = client.get_metric_history(mlflow_run.info.run_id, name)
        assert [(m.step, m.value) for m in history] == [(2, pytest.approx(2e-4)), (4, pytest.approx(1.5e-4))]


def test_rotated_colours_and_phrase_tokens_train_and_the_checkpoint_generates(tmp_path, monkeypatch):
    # One run for both (each end-to-end run costs the suite ~40 s): D's mismatched pairs include
    # rotated captions, and G and D read each caption's phrases.
    result = run(tmp_path, "balance.rotated_colours=1", "model=fusion", "model.phrase_tokens=3")
    assert re.search(r"rotated colours: \d+% of the training captions name colours for two places",
                     result.stdout)  # fmt: skip
    client, (mlflow_run,) = mlflow_runs(tmp_path)
    scores = [m.value for m in client.get_metric_history(mlflow_run.info.run_id, "d_score/rotated")]
    assert len(scores) == 2 and all(0.0 < score < 1.0 for score in scores)

    from t2igan.sampler import Sampler

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sampler = Sampler.from_checkpoint(only_run_folder(tmp_path) / "checkpoint.npz")
    embeddings = sampler.embed(["a bird with red wings and a blue crown"])
    assert embeddings.shape == (1, 4, 384)  # the caption, its three phrases
    images = sampler.generate(np.zeros((1, 100), np.float32), embeddings)
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_train_returns_the_objective(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from t2igan.train import train

    monkeypatch.setenv("T2IGAN_ROOT", str(tmp_path))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", "tracking=off", "trainer.progress=false",
                                           "trainer.objective=d/total"])  # fmt: skip
    value = train(cfg)
    assert isinstance(value, float) and np.isfinite(value) and value > 0
    assert not (tmp_path / "mlflow.db").exists()
    # The saved EMA generator has BatchNorm statistics of its own (trainer.standing_statistics),
    # not copies of G's.
    (checkpoint,) = (tmp_path / "runs").glob("*/checkpoint.npz")
    with np.load(checkpoint) as store:
        layout = read_header(checkpoint)["layout"]
        means = {group: [store[f"{group}/{index:04d}"] for index, (path, _) in enumerate(layout[group])
                         if path.endswith("moving_mean")] for group in ("generator", "generator_ema")}  # fmt: skip
    assert means["generator"] and all(
        not np.allclose(own, copied) for own, copied in zip(means["generator_ema"], means["generator"]))


def test_trainer_minutes_stops_a_run_and_counts_its_time_over_resumes(tmp_path, monkeypatch, capsys):
    from hydra import compose, initialize_config_dir

    from t2igan.train import train

    monkeypatch.setenv("T2IGAN_ROOT", str(tmp_path))

    def train_with(*overrides):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            train(compose("config", overrides=["experiment=smoke", "tracking=off", "trainer.progress=false",
                                               "trainer.checkpoint_every=1000", *overrides]))  # fmt: skip
        return read_header(only_run_folder(tmp_path) / "checkpoint.npz")

    # A budget shorter than any step: the run stops after its first, on any machine.
    header = train_with("trainer.steps=50", "trainer.minutes=1e-6")
    assert header["step"] == 1 and header["train_seconds"] >= 6e-5
    assert "stopped at step 1 of 50: trainer.minutes=1e-06 used up" in capsys.readouterr().out
    assert train_with("trainer.steps=50", "trainer.minutes=1e-6")["step"] == 1  # spent: no more steps
    assert "has used its trainer.minutes=1e-06" in capsys.readouterr().out
    # The budget is not part of the run's identity: a larger one continues the same run.
    resumed = train_with("trainer.steps=3", "trainer.minutes=60")
    assert resumed["step"] == 3 and resumed["train_seconds"] > header["train_seconds"]


@pytest.mark.parametrize("recipe", [[], ["trainer.precision=mixed_bfloat16", "model=fusion",
                                     "balance=matching_critic", "metrics.matcher_epochs=1"]])  # fmt: skip
def test_a_run_is_judged_during_training_and_the_judge_can_be_its_objective(tmp_path, monkeypatch, recipe):
    """trainer.eval_every: the toybirds judge's metrics reach MLflow, the checkpoint and the
    objective. A small judge (seconds to train, not the protocol's minutes) stands in. In
    mixed_bfloat16 only G and D compute in bfloat16: the judge and the matcher (trained here on
    first use, then cached for every run) stay float32."""
    from hydra import compose, initialize_config_dir

    import keras

    from t2igan.metrics import judge as judge_module
    from t2igan.metrics.matcher import load_matcher
    from t2igan.train import train

    load_or_train_judge = judge_module.load_or_train_judge
    judges = []  # every judge the run builds

    def small_judge(*args, **kwargs):  # built where the run asks for it, from weights cached here
        judges.append(load_or_train_judge(tmp_path / "judge", image_size=64, num_images=256, epochs=1,
                                          progress=False))  # fmt: skip
        return judges[-1]

    small_judge()  # trained and cached before the run
    judges.clear()
    monkeypatch.setattr(judge_module, "load_or_train_judge", small_judge)
    monkeypatch.setenv("T2IGAN_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", "trainer.progress=false", "trainer.eval_every=2",
                                           "trainer.objective=eval/attr_acc", *recipe])  # fmt: skip
    value = train(cfg)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set by mlflow during the run
    assert keras.mixed_precision.global_policy().name == "float32"
    assert judges and all({layer.dtype_policy.name for layer in judge.model.layers} == {"float32"}
                          for judge in judges)  # fmt: skip
    matchers = list((tmp_path / "cache" / "metrics").rglob("toybirds-[0-9a-f]*.keras"))
    assert len(matchers) == (1 if recipe else 0)
    assert all({layer.dtype_policy.name for layer in load_matcher(path).model.layers} == {"float32"}
               for path in matchers)  # fmt: skip

    assert 0.0 <= value <= 1.0
    header = read_header(only_run_folder(tmp_path) / "checkpoint.npz")
    assert header["metrics"]["eval/attr_acc"] == value
    assert {"eval/diversity", "eval/fd_judge", "eval/attr_acc_chance"} <= set(header["metrics"])
    client, (mlflow_run,) = mlflow_runs(tmp_path)
    history = client.get_metric_history(mlflow_run.info.run_id, "eval/attr_acc")
    assert [point.step for point in history] == [2, 4]


def _open_tracker(uri: str) -> str:
    from t2igan.tracking import MlflowTracker

    tracker = MlflowTracker(uri=uri, experiment="t2igan", run_name="together")
    tracker.finish()
    return tracker.run_id


def test_a_local_sqlite_store_keeps_artifacts_beside_it_not_in_the_working_folder(tmp_path, monkeypatch):
    # tracking.uri=sqlite:///<path> (or MLFLOW_TRACKING_URI): MLflow alone would put a new
    # experiment's artifacts in ./mlruns of whatever folder the command ran in.
    import numpy as np

    from t2igan.tracking import MlflowTracker

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracker = MlflowTracker(uri=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", experiment="t2igan", run_name="r")
    tracker.log_image(np.zeros((4, 4, 3), np.uint8), key="samples", step=1)
    tracker.finish()
    assert list((tmp_path / "store" / "mlartifacts").rglob("samples*.png"))
    assert not list(elsewhere.iterdir())


def test_runs_started_together_share_a_new_tracking_store(tmp_path):
    # Without the store lock most of these fail: each process creates the new sqlite file's
    # tables ("table ... already exists") or the experiment.
    import multiprocessing

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        run_ids = pool.map(_open_tracker, [uri] * 3)
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "t2igan"]
    assert sorted(r.info.run_id for r in client.search_runs([experiment.experiment_id])) == sorted(set(run_ids))


def test_a_diverged_run_keeps_its_last_good_checkpoint_and_a_retry_clears_it(tmp_path, monkeypatch):
    import json

    from hydra import compose, initialize_config_dir

    from t2igan.callbacks import MetricLogger, TrainingFailed
    from t2igan.train import train

    monkeypatch.setenv("T2IGAN_ROOT", str(tmp_path))
    overrides = ["experiment=smoke", "tracking=off", "trainer.progress=false", "trainer.steps=4",
                 "trainer.log_every=2", "trainer.checkpoint_every=2"]  # fmt: skip
    act = MetricLogger.act

    def nan_from_step_4(self, step, logs):  # a loss turns non-finite after the step-2 checkpoint
        act(self, step, {**logs, "d/total": float("nan")} if step >= 4 else logs)

    monkeypatch.setattr(MetricLogger, "act", nan_from_step_4)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = compose("config", overrides=overrides)
    with pytest.raises(TrainingFailed, match="non-finite d/total"):
        train(config)
    folder = only_run_folder(tmp_path)
    assert read_header(folder / "checkpoint.npz")["step"] == 2
    state = json.loads((folder / "run.json").read_text())
    assert "non-finite d/total at step 4" in state["failure_reason"]

    monkeypatch.setattr(MetricLogger, "act", act)
    train(config)  # the same command retries from the last good checkpoint
    assert read_header(folder / "checkpoint.npz")["step"] == 4
    assert json.loads((folder / "run.json").read_text())["failure_reason"] is None
