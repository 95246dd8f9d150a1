"""A run's folder: where its checkpoint, sample grids, resolved config and identity live.

The folder name is fixed by the config (see `run_name`), so re-running the same command after
a crash finds the same folder, the same checkpoint and the same MLflow run.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from t2igan.io import atomic_write_text
from t2igan.tracking import flatten

# Keys that change how long or how visibly a run trains, not what it trains: a re-run that
# changes only these (e.g. more steps) continues the same run.
NOT_IDENTITY = {
    "paths", "tracking", "hydra",
    "trainer.steps", "trainer.minutes", "trainer.log_every", "trainer.sample_every", "trainer.checkpoint_every",
    "trainer.sample_captions", "trainer.sample_noises", "trainer.steps_per_execution",
    "trainer.run_name", "trainer.resume", "trainer.objective", "trainer.progress",
    "trainer.eval_every", "trainer.collapse_patience", "trainer.collapse_real_above",
    "trainer.collapse_fake_below", "trainer.collapse_fooled_above",
    "trainer.collapse_diversity_below", "trainer.collapse_diversity_patience", "trainer.standing_statistics",
    "text.batch_size", "text.device", "text.cache_dir",
}  # fmt: skip


def _identity(config: dict, prefix: str = "") -> dict:
    kept = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name in NOT_IDENTITY:
            continue
        kept[key] = _identity(value, f"{name}.") if isinstance(value, dict) else value
    return kept


def changed_keys(before: dict, after: dict) -> list[str]:
    """The run-defining keys whose values differ between two resolved configs."""
    old, new = flatten(_identity(before)), flatten(_identity(after))
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def run_name(config: dict) -> str:
    """`trainer.run_name`, or `<model>-<data>-<8 hex of the config that defines the run>`."""
    if config["trainer"].get("run_name"):
        return config["trainer"]["run_name"]
    digest = hashlib.sha1(json.dumps(_identity(config), sort_keys=True).encode()).hexdigest()
    return f"{config['model']['name']}-{config['data']['name']}-{digest[:8]}"


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.npz"

    @property
    def generator(self) -> Path:
        """The EMA generator alone, with the config: what generation and serving need."""
        return self.path / "generator.npz"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def state_file(self) -> Path:
        return self.path / "run.json"

    def unused(self) -> "RunFolder":
        """This folder if no run has used it, else the first unused `<name>-2`, `<name>-3`, ...
        (so starting over never overwrites an earlier run's checkpoint)."""
        candidate, number = self, 1
        while candidate.checkpoint.exists() or candidate.state_file.exists():
            number += 1
            candidate = RunFolder(self.path.with_name(f"{self.path.name}-{number}"))
        return candidate

    def read_state(self) -> dict:
        """What an earlier invocation recorded (the MLflow run id), or {} for a new run."""
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_state(self, **state) -> None:
        """Record `state` (JSON values), keeping what earlier calls recorded under other keys."""
        atomic_write_text(self.state_file, json.dumps({**self.read_state(), **state}, indent=2))
