"""The convergence study: its run commands compose, and its table reads what the runs left."""

import json
import shutil

import hydra
import numpy as np
import pytest
from omegaconf import OmegaConf

from t2igan import study
from t2igan.checkpoint import save_checkpoint
from t2igan.config import problems
from tests.test_balance import tiny_gan

STUDY = OmegaConf.to_container(OmegaConf.load(study.CONFIG), resolve=True)


@pytest.mark.parametrize("recipe", list(STUDY["recipes"]))
def test_every_recipe_composes_into_a_valid_training_config(recipe):
    overrides = study.train_command(STUDY, recipe, seed=2, extra=[])[3:]
    with hydra.initialize_config_dir(config_dir=str(study.CONFIG.parent), version_base="1.3"):
        cfg = hydra.compose("config", overrides=overrides)
    assert problems(cfg) == []
    assert cfg.seed == 2 and cfg.trainer.run_name == study.run_name(STUDY, recipe, 2, [])
    assert cfg.trainer.run_name.startswith(f"study-{recipe}-") and cfg.trainer.run_name.endswith("-s2")
    assert cfg.trainer.eval_every > 0  # the table needs the judge's numbers


def test_a_changed_recipe_gets_new_run_names():
    changed = {**STUDY, "recipes": {**STUDY["recipes"], "seed": {
        **STUDY["recipes"]["seed"], "overrides": [*STUDY["recipes"]["seed"]["overrides"], "trainer.steps=10"]}}}
    assert study.run_name(changed, "seed", 0, []) != study.run_name(STUDY, "seed", 0, [])
    assert study.run_name(STUDY, "seed", 0, ["paths.runs=/elsewhere"]) == study.run_name(STUDY, "seed", 0, [])
    assert study.run_name(STUDY, "seed", 0, ["trainer.steps=10"]) != study.run_name(STUDY, "seed", 0, [])


def test_an_edited_preset_gets_new_run_names(tmp_path, monkeypatch):
    # The recipe's overrides are unchanged; the balance preset it names is not.
    conf = tmp_path / "conf"
    shutil.copytree(study.CONFIG.parent, conf)
    monkeypatch.setattr(study, "CONFIG", conf / "study.yaml")
    before = study.run_name(STUDY, "seed", 0, [])
    preset = conf / "balance" / "seed.yaml"
    preset.write_text(preset.read_text().replace("name: seed", "name: seed\n  wrong_weight: 0.25"))
    assert study.run_name(STUDY, "seed", 0, []) != before


def fake_run(runs, name, accuracy, collapse=None, failure=None):
    folder = runs / name
    folder.mkdir(parents=True)
    metrics = {"eval/attr_acc": accuracy, "eval/diversity": 0.5, "eval/fd_judge": 3.0,
               "eval/attr_acc_chance": 0.25, "eval/attr_acc/crown_color": accuracy}  # fmt: skip
    save_checkpoint(folder / "checkpoint.npz", tiny_gan(), metrics=metrics)
    state = {"train_seconds": 600.0, **({"collapse_reason": collapse} if collapse else {}),
             **({"failure_reason": failure} if failure else {})}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(state))
    (folder / "samples").mkdir()
    from t2igan.images import save_png

    save_png(folder / "samples" / "step_0000010.png", np.full((20, 30, 3), 200, np.uint8))


def test_report_tabulates_mean_and_spread_over_seeds_and_counts_collapses(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, study.run_name(STUDY, "seed", 0, []), 0.2, collapse="step 9: discriminator wins")
    fake_run(runs, study.run_name(STUDY, "seed", 1, []), 0.4)
    fake_run(runs, study.run_name(STUDY, "default", 0, []), 0.9)
    fake_run(runs, "study-default-s1", 0.1)  # an older recipe's run: not this study's
    code = study.main(["--report-only", "--recipes", "seed", "default", "--seeds", "0", "1",
                       "--out", str(tmp_path / "out"), "--set", f"paths.runs={runs}"])  # fmt: skip
    assert code == 0
    table = (tmp_path / "out" / "results.md").read_text()
    seed_row = next(line for line in table.splitlines() if line.startswith("| seed"))
    assert "seed (2 seeds) | 0.300 ± 0.141 |" in seed_row
    assert "| 1/2 | 0/2 | 0 | 10.000 ± 0.000 |" in seed_row  # 0 steps: tiny untrained GANs
    assert "| default (1 seeds) | 0.900 |" in table
    assert "0.250" in table  # the chance level
    assert (tmp_path / "out" / "samples.png").exists()


def test_runs_folder_follows_the_project_root(tmp_path, monkeypatch):
    monkeypatch.setenv("T2IGAN_ROOT", str(tmp_path))
    assert study.runs_folder(STUDY, []) == tmp_path / "runs"
    assert study.runs_folder(STUDY, [f"paths.runs={tmp_path}/elsewhere"]) == tmp_path / "elsewhere"


def test_a_diverged_run_is_counted_and_not_retried(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    fake_run(runs, study.run_name(STUDY, "auto", 0, []), 0.3, failure="non-finite d/fake at step 7")
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: pytest.fail("retried a diverged run"))
    code = study.main(["--recipes", "auto", "--seeds", "0", "--out", str(tmp_path / "out"),
                       "--set", f"paths.runs={runs}"])  # fmt: skip
    assert code == 0
    assert "diverged earlier (non-finite d/fake at step 7)" in capsys.readouterr().out
    auto_row = next(line for line in (tmp_path / "out" / "results.md").read_text().splitlines()
                    if line.startswith("| auto"))  # fmt: skip
    assert "| 0/1 | 1/1 |" in auto_row
