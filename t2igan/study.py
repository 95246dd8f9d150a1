"""`python -m t2igan.study`: the convergence study -- recipes x seeds on toybirds, one table.

The recipes, seeds and shared budget are in conf/study.yaml. Every run is an ordinary
`python -m t2igan.train` with a fixed run name (`study-<recipe>-<hash>-s<seed>`, the hash of the
recipe's overrides with the common ones, so a changed recipe never reuses an old run), so the study is
resumable: re-running it skips finished runs and resumes an interrupted one from its
checkpoint. A run that diverged (a non-finite loss) is an outcome, not an interruption: it is
kept, counted in the "diverged" column with its last good evaluation, and not retried. At the
end it reads each run's last evaluation from its checkpoint and writes
`<out>/results.md` (the table), `<out>/results.json` and `<out>/samples.png` (the last
sample grid of each recipe's first seed, side by side). It may take an hour or more:
`nohup make study > study.log 2>&1 &` runs it in the background. The "steps" column shows the
fewest steps any seed of a recipe reached: less than the budget means unfinished or stopped.
"""

import argparse
import hashlib
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from t2igan.runs import RunFolder

COLUMNS = ("eval/attr_acc", "eval/diversity", "eval/fd_judge")
CONFIG = Path(__file__).resolve().parent.parent / "conf" / "study.yaml"


def run_name(study: dict, recipe: str, seed: int, extra: list[str]) -> str:
    """`study-<recipe>-<hash>-s<seed>`: the hash covers everything that shapes the run -- the
    common and recipe overrides, `--set` overrides other than paths, and the training config
    they compose to -- so editing a recipe or a preset it uses (conf/balance/matching.yaml, say)
    starts new runs instead of resuming or tabulating the old recipe's."""
    shaping = [*study["common"], *study["recipes"][recipe]["overrides"],
               *(override for override in extra if not override.startswith("paths."))]  # fmt: skip
    digest = hashlib.sha1(json.dumps([shaping, _composed_name(shaping)]).encode()).hexdigest()[:6]
    return f"study-{recipe}-{digest}-s{seed}"


def _compose(overrides: list[str]):
    """The training config (conf/config.yaml beside the study's config) with `overrides`."""
    import hydra

    with hydra.initialize_config_dir(config_dir=str(CONFIG.parent), version_base="1.3"):
        return hydra.compose("config", overrides=overrides)


def _composed_name(overrides: list[str]) -> str:
    """The default run name (a hash of the run-defining config) of the config `overrides` compose."""
    from omegaconf import OmegaConf

    from t2igan.runs import run_name as config_run_name

    return config_run_name(OmegaConf.to_container(_compose(overrides), resolve=True))


def train_command(study: dict, recipe: str, seed: int, extra: list[str]) -> list[str]:
    """The `t2igan.train` command line of one study run."""
    return [
        sys.executable, "-m", "t2igan.train", *study["common"], *study["recipes"][recipe]["overrides"],
        f"seed={seed}", f"trainer.run_name={run_name(study, recipe, seed, extra)}", *extra,
    ]  # fmt: skip


def runs_folder(study: dict, extra: list[str]) -> Path:
    """Where the study's runs go: `paths.runs` of the composed training config (which follows
    T2IGAN_ROOT and any `paths.*` override), as an absolute path."""
    return Path(_compose([*study["common"], *extra]).paths.runs).resolve()


def read_run(folder: Path) -> dict:
    """A study run's outcome from its folder: last evaluation, collapse, training time."""
    from t2igan.checkpoint import read_header

    state = RunFolder(folder).read_state()
    header = read_header(folder / "checkpoint.npz")
    metrics = header.get("metrics", {})
    chance = metrics.get("eval/attr_acc_chance")
    per_attribute = {key.split("/")[-1]: value for key, value in metrics.items() if key.startswith("eval/attr_acc/")}
    return {
        **{column: metrics.get(column, math.nan) for column in COLUMNS},
        "chance": chance,
        "per_attribute": per_attribute,
        "collapse": state.get("collapse_reason"),
        "failure": state.get("failure_reason"),
        "train_seconds": state.get("train_seconds", math.nan),
        "step": header.get("step", 0),
    }


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def results_table(study: dict, results: dict[str, list[dict]]) -> str:
    """Markdown: one row per recipe, mean ± sd over seeds, plus each colour attribute."""
    colours = ("crown_color", "wing_color", "belly_color", "bill_color")
    header = ("| recipe | attribute accuracy | " + " | ".join(c.replace("_color", "") for c in colours)
              + " | diversity (1 = real) | Fréchet (judge) | collapsed | diverged | steps | minutes |")  # fmt: skip
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for recipe, runs in results.items():
        colour_cells = [_mean_sd([r["per_attribute"].get(c) for r in runs]) for c in colours]
        collapsed = sum(r["collapse"] is not None for r in runs)
        diverged = sum(r["failure"] is not None for r in runs)
        minutes = _mean_sd([r["train_seconds"] / 60 for r in runs])
        lines.append(
            f"| {recipe} ({len(runs)} seeds) | {_mean_sd([r['eval/attr_acc'] for r in runs])} | "
            + " | ".join(colour_cells)
            + f" | {_mean_sd([r['eval/diversity'] for r in runs])} | {_mean_sd([r['eval/fd_judge'] for r in runs])}"
            f" | {collapsed}/{len(runs)} | {diverged}/{len(runs)}"
            f" | {min(r['step'] for r in runs)} | {minutes} |"
        )
    chance = next((r["chance"] for runs in results.values() for r in runs if r["chance"]), None)
    if chance:
        lines.append(f"\nChance level of attribute accuracy: {chance:.3f}.")
    return "\n".join(lines) + "\n"


def side_by_side(pictures: dict[str, Path]) -> np.ndarray:
    """The recipes' last sample grids next to each other, each under its recipe name."""
    images = {name: Image.open(path).convert("RGB") for name, path in pictures.items() if path}
    label_height = 16
    width = sum(image.width for image in images.values()) + 8 * (len(images) - 1)
    height = max(image.height for image in images.values()) + label_height
    canvas = Image.new("RGB", (width, height), "white")
    draw, font, left = ImageDraw.Draw(canvas), ImageFont.load_default(), 0
    for name, image in images.items():
        draw.text((left + 4, 2), name, fill=(0, 0, 0), font=font)
        canvas.paste(image, (left, label_height))
        left += image.width + 8
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="study definition (YAML)")
    parser.add_argument("--recipes", nargs="*", help="only these recipes (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, help="only these seeds (default: the config's)")
    parser.add_argument("--out", type=Path, default=Path("study"), help="where the table and pictures go")
    parser.add_argument("--report-only", action="store_true", help="train nothing; tabulate what exists")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra training override for every run (repeatable)")
    args = parser.parse_args(argv)

    study = OmegaConf.to_container(OmegaConf.load(args.config), resolve=True)
    recipes = args.recipes or list(study["recipes"])
    seeds = args.seeds if args.seeds is not None else study["seeds"]
    unknown = set(recipes) - set(study["recipes"])
    if unknown:
        print(f"error: unknown recipe(s) {sorted(unknown)}; known: {list(study['recipes'])}", file=sys.stderr)
        return 2
    runs_root = runs_folder(study, args.overrides)

    for recipe in recipes if not args.report_only else []:
        for seed in seeds:
            name = run_name(study, recipe, seed, args.overrides)
            failure = RunFolder(runs_root / name).read_state().get("failure_reason")
            if failure:
                print(f"== {name}: diverged earlier ({failure}); kept as it is", flush=True)
                continue
            print(f"== {name}: {study['recipes'][recipe]['description']}", flush=True)
            subprocess.run(train_command(study, recipe, seed, args.overrides), check=False)

    from t2igan.images import save_png

    folders = {recipe: [runs_root / run_name(study, recipe, seed, args.overrides) for seed in seeds]
               for recipe in recipes}  # fmt: skip
    results = {recipe: [read_run(folder) for folder in folders[recipe] if (folder / "checkpoint.npz").exists()]
               for recipe in recipes}  # fmt: skip
    results = {recipe: runs for recipe, runs in results.items() if runs}
    args.out.mkdir(parents=True, exist_ok=True)
    table = results_table(study, results)
    (args.out / "results.md").write_text(table)
    finite = {recipe: [{key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                        for key, value in run.items()} for run in runs]
              for recipe, runs in results.items()}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(finite, indent=2))
    grids = {}
    for recipe in results:
        samples = sorted((folders[recipe][0] / "samples").glob("step_*.png"))
        grids[recipe] = samples[-1] if samples else None
    if any(grids.values()):
        save_png(args.out / "samples.png", side_by_side(grids))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
