"""Experiment tracking as a side channel: the training loop hands numbers to a Tracker.

`MlflowTracker` writes to any MLflow tracking URI (the default: a sqlite file under the
project root); `NullTracker` keeps nothing. Training never asks which one it has.
"""

import subprocess
from pathlib import Path

import numpy as np

from t2igan.io import sqlite_lock, sqlite_path


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}: a nested config as MLflow params."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit(directory: str | Path) -> str | None:
    """The commit checked out at `directory` (suffixed `-dirty` with local changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if status.strip() else commit


class NullTracker:
    """Tracking switched off."""

    run_id = None
    resumed = False

    def log_params(self, params: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_generator(self, path: str | Path, example_captions: list[str]) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


class MlflowTracker:
    """One MLflow run, created or (with `run_id`) reopened.

    `uri` is the tracking URI. An experiment this tracker creates in a local sqlite store keeps
    its artifacts in `mlartifacts/` beside the database (as `mlflow server` does), not in
    MLflow's `./mlruns` under whatever folder the command ran in; a server decides for itself.
    `tags` are set on the run (e.g. `mlflow.parentRunId`, which makes it a child run).
    """

    def __init__(
        self,
        *,
        uri: str,
        experiment: str,
        run_name: str,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ):
        import mlflow
        from mlflow.tracking import MlflowClient

        self._mlflow = mlflow
        # The first client of a new sqlite store creates its tables: runs started together
        # would both create them ("table ... already exists") or both create the experiment.
        with sqlite_lock(uri):
            self.client = MlflowClient(tracking_uri=uri)
            existing = self.client.get_experiment_by_name(experiment)
            if existing is not None:
                experiment_id = existing.experiment_id
            else:
                artifacts = local_artifact_root(uri)
                location = artifacts.as_uri() if artifacts else None
                experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        self.resumed = False
        if run_id is not None and self._reopenable(run_id, experiment_id):
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            self.resumed = True
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        if tags and self.resumed:
            self.set_tags(tags)

    def _reopenable(self, run_id: str, experiment_id: str) -> bool:
        """Whether `run_id` is a live run of this experiment (not deleted, not elsewhere)."""
        try:
            info = self.client.get_run(run_id).info
        except self._mlflow.exceptions.MlflowException:
            return False
        return info.lifecycle_stage == "active" and info.experiment_id == experiment_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        # MLflow caps a param value at 6000 characters.
        entries = [Param(key, value[:6000]) for key, value in params.items()]
        for start in range(0, len(entries), 100):
            self.client.log_batch(self.run_id, params=entries[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self.client.log_image(self.run_id, image, key=key, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_generator(self, path: str | Path, example_captions: list[str]) -> None:
        """Log the generator file at `path` as the pyfunc model `generator` of this run."""
        import pandas as pd

        from t2igan.serving import GeneratorModel, serving_requirements, signature

        self._mlflow.set_tracking_uri(self.client.tracking_uri)
        with self._mlflow.start_run(run_id=self.run_id):
            self._mlflow.pyfunc.log_model(
                name="generator",
                python_model=GeneratorModel(),
                artifacts={"generator": str(path)},
                signature=signature(),
                input_example=pd.DataFrame({"caption": example_captions}),
                # Listed, not inferred: inference would load the model in a subprocess.
                pip_requirements=serving_requirements(),
            )
        # Leaving the `with` ended the run; training decides the final status.
        self.client.update_run(self.run_id, status="RUNNING")

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def local_artifact_root(uri: str) -> Path | None:
    """`mlartifacts/` beside the database of a local sqlite URI; None for any other store."""
    database = sqlite_path(uri)
    return None if database is None else database.resolve().parent / "mlartifacts"


def default_tracking_uri(root: str | Path) -> str:
    """`sqlite:////abs/root/mlflow.db`: absolute, so it holds wherever the process runs."""
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def tracking_uri(uri: str | None, root: str | Path) -> str:
    """Where a run's `tracking` config sends it: `uri`, or the sqlite file under `root`."""
    return uri or default_tracking_uri(root)


def make_tracker(*, enabled: bool, uri: str | None, experiment: str, root: str | Path,
                 run_name: str, run_id: str | None = None, tags: dict[str, str] | None = None,
                 **_unused):  # fmt: skip
    """The tracker the `tracking` config asks for: MLflow at `uri` (None: sqlite under
    `root`), reopening `run_id` when it exists, or a NullTracker when disabled."""
    if not enabled:
        return NullTracker()
    return MlflowTracker(
        uri=tracking_uri(uri, root),
        experiment=experiment,
        run_name=run_name,
        run_id=run_id,
        tags=tags,
    )
