"""Checkpoints as plain `.npz` files: every variable of a run, no pickled code, atomic writes.

A checkpoint holds the generator, its EMA copy, the discriminator, both optimizers and the
random-generator states, plus a JSON header with the step and whatever the caller adds (the
resolved config, the latest metrics, the MLflow run id). Loading never executes anything from the
file, and a file of another model is refused before any variable is touched.
"""

import json
import zipfile
from pathlib import Path

import numpy as np

from t2igan.errors import UserError
from t2igan.io import atomic_save_npz

# v2: the "gan" group holds the augmentation probability and LeCam anchors besides the RNG state.
FORMAT = "t2igan-checkpoint-v2"


class CheckpointError(UserError):
    """A checkpoint is unreadable, or belongs to another model."""


def variable_groups(gan) -> dict[str, list]:
    """The variables a checkpoint stores, by group, in a fixed order."""
    groups = {
        "generator": gan.generator.variables,
        "generator_ema": gan.generator_ema.variables,
        "discriminator": gan.discriminator.variables,
        "g_optimizer": gan.g_optimizer.variables,
        "d_optimizer": gan.d_optimizer.variables,
        "gan": gan.state_variables,
    }
    if getattr(gan, "matcher_critic", None) is not None:  # balance.matcher_critic_weight: its heads
        groups["matcher_critic"] = gan.matcher_critic.head_variables
    return groups


def save_checkpoint(path: str | Path, gan, *, groups: tuple[str, ...] | None = None, **metadata) -> Path:
    """Write the variables of `gan` and `metadata` (JSON-serialisable) to `path` atomically.

    `groups` limits what is written (e.g. `("generator_ema",)` for a file that only
    generates); None writes everything training needs to resume.
    """
    arrays = {}
    layout = {}
    for group, variables in variable_groups(gan).items():
        if groups is not None and group not in groups:
            continue
        layout[group] = [[variable.path, list(variable.shape)] for variable in variables]
        for index, variable in enumerate(variables):
            arrays[f"{group}/{index:04d}"] = np.asarray(variable.numpy())
    header = {"format": FORMAT, "step": gan.step, "layout": layout, **metadata}
    arrays["header"] = np.array(json.dumps(header))
    return atomic_save_npz(path, **arrays)


def read_header(path: str | Path) -> dict:
    """The JSON header of a checkpoint (step, metadata), without loading the variables."""
    with _open(path) as store:
        return _header(store, path)


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"checkpoint {path} is unreadable (corrupt or not a .npz file): {error}")


def _header(store, path) -> dict:
    try:
        header = json.loads(str(store["header"]))
    except (KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is not a t2igan checkpoint (no readable header): {error}")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {header.get('format')!r}, expected {FORMAT!r}")
    return header


def restore_checkpoint(path: str | Path, gan) -> dict:
    """Load `path` into `gan` (built and compiled) and return its header.

    Every variable's count and shape is checked first, so a checkpoint of another architecture,
    width or text dimension fails with one message and leaves `gan` untouched.
    """
    return restore_variables(path, variable_groups(gan))


def restore_variables(path: str | Path, groups: dict[str, list]) -> dict:
    """Load the named groups of `path` into `groups` ({group: variables}); return the header.

    Groups the checkpoint has but `groups` does not name are not read (a generator alone can
    be loaded from a full training checkpoint).
    """
    with _open(path) as store:
        header = _header(store, path)
        for group, variables in groups.items():
            stored = header["layout"].get(group, [])
            if len(stored) != len(variables):
                raise CheckpointError(
                    f"{path} does not fit this model: {group} has {len(stored)} variables "
                    f"there and {len(variables)} here (another architecture?)"
                )
            for (name, shape), variable in zip(stored, variables):
                if tuple(shape) != tuple(variable.shape):
                    raise CheckpointError(
                        f"{path} does not fit this model: {name} has shape {tuple(shape)} there "
                        f"and {tuple(variable.shape)} here (another width or text dimension?)"
                    )
        try:
            values = {
                group: [store[f"{group}/{index:04d}"] for index in range(len(variables))]
                for group, variables in groups.items()
            }
        except (KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise CheckpointError(f"{path} is truncated or corrupt: {error}")
    for group, variables in groups.items():
        for variable, value in zip(variables, values[group]):
            variable.assign(value)
    return header
