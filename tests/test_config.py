"""Tests for the Hydra config: every group option composes, validates and builds; bad values
are reported one line each; the command line refuses them before writing anything."""

import dataclasses
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict

from t2igan.config import ConfigError, problems, validate
from t2igan.errors import UserError
from t2igan.train import _without_name, gan_options

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF = REPO_ROOT / "conf"
EXPECTED_GROUPS = {"data", "text", "model", "optim", "balance", "trainer", "tracking", "experiment",
                   "paths", "metrics"}  # fmt: skip
# Folders that are another entry point's config root, not option groups of the training config.
ENTRY_POINT_CONFIGS = {"generate", "evaluate"}
TINY_WIDTH = 0.0625  # keeps a built GAN at a few thousand parameters per layer


def _group_options() -> list[tuple[str, str]]:
    """Every (group, option) under conf/, found on disk so a new option is tested unasked."""
    return [
        (group.name, option.stem)
        for group in sorted(path for path in CONF.iterdir() if path.is_dir() and path.name not in ENTRY_POINT_CONFIGS)
        for option in sorted(group.glob("*.yaml"))
    ]


GROUP_OPTIONS = _group_options()
BUILD_OPTIONS = [(group, option) for group, option in GROUP_OPTIONS
                 if group in ("model", "balance", "optim")]  # fmt: skip


@pytest.fixture(autouse=True)
def _environment(monkeypatch, tmp_path):
    # paths.root and tracking.uri read the environment; pin both so results do not depend on it.
    monkeypatch.setenv("T2IGAN_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def compose():
    """`compose(*overrides)` -> the composed config, as `python -m t2igan.train` would see it."""
    with hydra.initialize_config_dir(config_dir=str(CONF), version_base="1.3"):

        def _compose(*overrides: str, hydra_config: bool = False):
            return hydra.compose("config", overrides=list(overrides),
                                 return_hydra_config=hydra_config)  # fmt: skip

        yield _compose


# ----------------------------------------------------------------------------- composition


def test_every_config_group_is_discovered():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert EXPECTED_GROUPS <= groups
    assert {"model", "balance", "optim"} == {group for group, _ in BUILD_OPTIONS}


def test_default_config_has_no_problems(compose):
    cfg = compose()
    assert problems(cfg) == []
    validate(cfg)  # must not raise


def test_the_default_experiment_is_the_recipe_the_readme_times(compose):
    # README, "Where convergence stands": phrase attention in G and D, and the matcher critic's
    # heads scoring the phrases too; an edit that drops either changes the measured default.
    cfg = compose()
    assert (cfg.model.name, cfg.balance.name) == ("fusion", "matching_critic")
    assert cfg.model.phrase_tokens > 0
    assert cfg.balance.matcher_critic_phrases is True
    # Stop 34: diversity past 0.5 on 128 captions came with mode seeking in the matcher's space and
    # the phrase matcher at half weight.
    assert list(cfg.balance.mode_seeking_spaces) == ["pixels", "matcher"]
    assert cfg.balance.phrase_matching_weight == 0.5


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_without_problems(compose, group, option):
    choices = compose(f"{group}={option}", hydra_config=True).hydra.runtime.choices
    assert choices[group] == option  # the override really selected this file

    cfg = compose(f"{group}={option}")
    assert problems(cfg) == []
    if group != "experiment":  # experiments are `@package _global_` presets
        assert isinstance(OmegaConf.to_container(cfg[group], resolve=True), dict)


@pytest.mark.parametrize(("group", "option"), BUILD_OPTIONS, ids=[f"{g}={o}" for g, o in BUILD_OPTIONS])
def test_model_balance_and_optim_options_build_a_gan(compose, group, option):
    from t2igan.gan import Balance, build_gan
    from t2igan.metrics.matcher import Matcher, build_matcher
    from t2igan.metrics.phrase_matcher import PhraseMatcher, build_towers
    from t2igan.train import _drop_phrase_matching_without_phrases

    cfg = compose(f"{group}={option}", f"model.width={TINY_WIDTH}")
    assert problems(cfg) == []
    config = OmegaConf.to_container(cfg, resolve=True)
    _drop_phrase_matching_without_phrases(config)  # as train() does
    model, balance, optim = config["model"], config["balance"], config["optim"]
    # Untrained matchers of the right shapes stand in for the trained ones (balance=matching...).
    matcher = (Matcher(build_matcher(model["image_size"], model["text_dim"], embedding_dim=8, width=4))
               if Balance.from_options(_without_name(balance)).uses_matcher else None)  # fmt: skip
    phrase_matcher = None
    if balance["phrase_matching_weight"] > 0:
        towers = build_towers(model["image_size"], model["text_dim"], embedding_dim=8, width=4, text_hidden=8)
        phrase_matcher = PhraseMatcher(towers[0], towers[2], sharpness=5.0)
    gan = build_gan(**gan_options(config), matcher=matcher, phrase_matcher=phrase_matcher,
                    seed=config["seed"])  # the call train() makes  # fmt: skip

    size, batch = model["image_size"], 2
    noise = np.random.default_rng(0).standard_normal((batch, model["noise_dim"])).astype("float32")
    tokens = model["phrase_tokens"]  # the fusion model reads (1 + K) vectors per caption
    text_embeddings = np.zeros((batch, 1 + tokens, model["text_dim"]) if tokens else (batch, model["text_dim"]), "float32")
    images = np.asarray(gan.generate(noise, text_embeddings))
    assert images.shape == (batch, size, size, 3)  # (2, 64, 64, 3) for the seed network
    assert np.all(np.abs(images) <= 1.0)
    logits = gan.discriminator((images, text_embeddings))
    assert tuple(logits.shape) == (batch, 1)

    # The group's values reached the objects, not constructor defaults.
    expected = {key: tuple(value) if isinstance(value, list) else value
                for key, value in _without_name(balance).items()}  # fmt: skip
    assert dataclasses.asdict(gan.balance) == expected
    assert math.isclose(float(gan.augment_probability.numpy()), balance["augment_p"])
    for optimizer, rate in ((gan.g_optimizer, optim["g_lr"]), (gan.d_optimizer, optim["d_lr"])):
        assert math.isclose(float(optimizer.learning_rate), rate, rel_tol=1e-6)
        assert (optimizer.beta_1, optimizer.beta_2) == (optim["beta_1"], optim["beta_2"])


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["+model.widht=0.5"], "model.widht"),
        (["trainer.steps=abc"], "trainer.steps"),
        (["trainer.steps=1.5"], "trainer.steps"),
        (["model.width=0"], "model.width"),
        (["model.dropout=1.0"], "model.dropout"),
        (["optim.g_lr=-1"], "optim.g_lr"),
        (["trainer.batch_size=1"], "trainer.batch_size"),
        (["balance.loss=wasserstein"], "balance.loss"),
        (["trainer.precision=float8"], "trainer.precision"),
        (["trainer.objective=g/totl"], "trainer.objective"),
        (["metrics.matcher_pool=max"], "metrics.matcher_pool"),
        (["optim.decay_from=1.0"], "optim.decay_from"),
        (["balance.rotated_colours=1.5"], "balance.rotated_colours"),
        (["balance.mode_seeking_spaces=[pixels,judge]"], "balance.mode_seeking_spaces"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_a_bad_value_is_one_problem_naming_its_key(compose, overrides, key):
    found = problems(compose(*overrides))
    assert len(found) == 1, found
    assert found[0].startswith(f"{key}:")
    assert "\n" not in found[0]


def test_image_size_mismatch_names_both_keys(compose):
    found = problems(compose("data.image_size=32"))
    assert len(found) == 1, found
    assert "data.image_size" in found[0] and "model.image_size" in found[0]


def test_phrase_matching_is_off_for_a_model_without_phrases(compose, capsys):
    from t2igan.train import _drop_phrase_matching_without_phrases

    def resolved(*overrides):
        config = OmegaConf.to_container(compose(*overrides), resolve=True)
        _drop_phrase_matching_without_phrases(config)
        return config["balance"]["phrase_matching_weight"]

    assert resolved() == 0.5  # the default reads phrases and matches them (at half weight)
    assert resolved("model=stackgan_stage1") == 0.0 and "no phrases" in capsys.readouterr().out
    assert problems(compose("model=stackgan_stage1")) == []  # the default experiment on the seed's network
    found = problems(compose("metrics.phrase_matcher_region_size=6"))
    assert len(found) == 1 and found[0].startswith("metrics.phrase_matcher_region_size:"), found
    found = problems(compose("metrics.phrase_matcher_region_size=32", "data.image_size=32", "model.image_size=32"))
    assert len(found) == 1 and found[0].startswith("metrics.phrase_matcher_region_size (32)"), found
    assert problems(compose("model=stackgan_stage1", "metrics.phrase_matcher_region_size=32", "data.image_size=32",
                            "model.image_size=32")) == []  # no phrases: the phrase matcher is never built


def test_batch_larger_than_the_training_set_is_a_problem(compose):
    assert problems(compose("data.num_train=32", "trainer.batch_size=32")) == []
    found = problems(compose("data.num_train=32", "trainer.batch_size=34"))
    assert len(found) == 1, found
    assert "trainer.batch_size" in found[0] and "data.num_train" in found[0]


@pytest.mark.parametrize(
    "override",
    ["model.width=16", "model.dropout=0.5", "optim.g_lr=1.0", "trainer.batch_size=2",
     "balance.loss=hinge", "trainer.precision=mixed_bfloat16 balance=stackgan",
     "trainer.precision=mixed_bfloat16", "tracking.uri=sqlite:///x.db", "optim.decay_from=0",
     "optim=ttur optim.decay_from=0.75", "balance.rotated_colours=1"],
)  # fmt: skip
def test_valid_edge_values_are_accepted(compose, override):
    assert problems(compose(*override.split())) == []


@pytest.mark.parametrize("override", ["model.width=nan", "optim.g_lr=nan", "balance.kl_weight=nan"])
def test_nan_is_not_a_valid_number(compose, override):
    found = problems(compose(override))
    assert len(found) == 1 and found[0].startswith(override.split("=")[0] + ":")


def test_validate_raises_with_every_problem(compose):
    cfg = compose("model.width=0", "optim.g_lr=-1", "trainer.precision=float8")
    found = problems(cfg)
    assert len(found) == 3, found
    with pytest.raises(ConfigError) as raised:
        validate(cfg)
    assert isinstance(raised.value, UserError)  # what the command line turns into one line
    for problem in found:
        assert problem in str(raised.value)


def test_an_unknown_top_level_key_is_a_problem(compose):
    found = problems(compose("+learning_rate=0.1"))
    assert found == ["learning_rate: unknown top-level key"]


def test_an_unresolvable_interpolation_is_one_problem(compose):
    cfg = compose()
    with open_dict(cfg):
        cfg.text.cache_dir = "${paths.nowhere}/text"
    found = problems(cfg)
    assert len(found) == 1 and found[0].startswith("config does not resolve")


# ----------------------------------------------------------------------------- command line


def _run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if key not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}  # fmt: skip
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        T2IGAN_ROOT=str(tmp_path),
        HF_HUB_OFFLINE="1",
    )
    # cwd=tmp_path, so a write to a relative path would be seen by _assert_nothing_written too.
    return subprocess.run([sys.executable, "-m", "t2igan.train", *overrides], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=90)  # fmt: skip


def _assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "cache").exists()
    assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob("mlruns"))
    # Not even Hydra's job folder: single runs write no .hydra/ or log files.
    assert not list(tmp_path.rglob("*")), list(tmp_path.rglob("*"))


def test_cli_invalid_value_exits_2_with_one_line_and_writes_nothing(tmp_path):
    # experiment=smoke: should validation ever let this through, the run is seconds, not hours.
    result = _run_train(tmp_path, "experiment=smoke", "model.width=0")
    assert result.returncode == 2, result.stderr
    assert "model.width" in result.stderr
    assert "error: invalid config" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    _assert_nothing_written(tmp_path)


def test_cli_unknown_group_option_fails_without_traceback(tmp_path):
    result = _run_train(tmp_path, "model=nonexistent")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert "model/nonexistent" in output
    _assert_nothing_written(tmp_path)


def test_cli_unknown_override_key_fails_without_traceback(tmp_path):
    result = _run_train(tmp_path, "trainer.stepz=3")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert "trainer.stepz" in output
    _assert_nothing_written(tmp_path)


def _readme_train_commands() -> list[list[str]]:
    commands = []
    for line in (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        # Hydra's own flag, and sweeps (tests/test_sweep.py checks those), are not single runs.
        single = line.startswith("python -m t2igan.train") and not line.startswith("python -m t2igan.train -m ")
        if single and "--cfg" not in line:
            commands.append(shlex.split(line.split("#")[0])[3:])
    return commands


@pytest.mark.parametrize("overrides", _readme_train_commands(), ids=" ".join)
def test_every_training_command_in_the_readme_composes_and_validates(compose, overrides):
    assert problems(compose(*overrides)) == []


def test_the_readme_shows_training_commands():
    assert ["model=stackgan_stage1", "optim.d_lr=1e-4"] in _readme_train_commands()


def test_balance_defaults_in_python_equal_the_stackgan_base_preset(compose):
    """`Balance()`'s defaults are conf/balance/stackgan.yaml, the base of every preset."""
    from t2igan.gan import Balance

    balance = _without_name(OmegaConf.to_container(compose("balance=stackgan").balance))
    assert dataclasses.asdict(Balance()) == {
        key: tuple(value) if isinstance(value, list) else value for key, value in balance.items()
    }


@pytest.mark.parametrize("balance", [option for group, option in GROUP_OPTIONS if group == "balance"])
def test_every_balance_preset_composes_with_both_models(compose, balance):
    for model in ("fusion", "stackgan_stage1"):
        assert problems(compose(f"model={model}", f"balance={balance}")) == [], (model, balance)


def test_controller_settings_come_from_the_config(compose):
    from t2igan.train import _controllers

    cfg = compose("balance=ada", "balance.auto_balance=true", "balance.auto_range=4",
                  "balance.ada_interval=8", "trainer.collapse_real_above=0.95",
                  "trainer.collapse_diversity_patience=2", "optim.decay_from=0.25", "trainer.steps=100")  # fmt: skip
    assert problems(cfg) == []
    config = OmegaConf.to_container(cfg, resolve=True)
    controllers = _controllers(config["balance"], config["optim"], config["trainer"])
    assert controllers["ada_interval"] == 8
    assert controllers["ada"].target == 0.6
    assert (controllers["auto_balance"].low, controllers["auto_balance"].high) == (0.25, 4.0)
    detector = controllers["collapse_detector"]
    assert (detector.real_score_above, detector.diversity_patience) == (0.95, 2)
    assert (controllers["lr_decay"].steps, controllers["lr_decay"].first) == (100, 25)
    off = _controllers(config["balance"], {**config["optim"], "decay_from": None},
                       {**config["trainer"], "collapse_patience": 0})  # fmt: skip
    assert off["collapse_detector"] is None and off["lr_decay"] is None


def test_the_matcher_is_one_per_text_pooling_and_sentence_keeps_its_older_name(compose):
    from t2igan.metrics.matcher import matcher_path

    sentence = OmegaConf.to_container(compose(), resolve=True)
    phrases = OmegaConf.to_container(compose("text.pooling=phrases"), resolve=True)
    before_pooling = {**sentence, "text": {k: v for k, v in sentence["text"].items() if k != "pooling"}}
    assert matcher_path(sentence) == matcher_path(before_pooling)  # cached matchers stay valid
    assert matcher_path(phrases) != matcher_path(sentence)  # one trained on other embeddings is another


def test_phrase_tokens_belong_to_the_fusion_model_and_share_the_caption_vectors_matcher(compose):
    from t2igan.metrics.matcher import matcher_path

    fusion = OmegaConf.to_container(compose("model=fusion"), resolve=True)
    assert fusion["model"]["phrase_tokens"] == fusion["text"]["phrase_tokens"] == 5  # the embedder follows
    seed = OmegaConf.to_container(compose("model=stackgan_stage1"), resolve=True)
    assert seed["model"]["phrase_tokens"] == seed["text"]["phrase_tokens"] == 0
    found = problems(compose("model=stackgan_stage1", "model.phrase_tokens=5"))
    assert len(found) == 1 and "model=fusion" in found[0], found
    plain = OmegaConf.to_container(compose("model=fusion", "model.phrase_tokens=0"), resolve=True)
    assert matcher_path(fusion) == matcher_path(plain)  # the matcher reads row 0, the caption vector
    assert "phrase_key_dim" not in seed["model"]  # the attention's options are the fusion model's own
    found = problems(compose("model.phrase_max_size=24", "model.phrase_key_dim=0"))
    assert sorted(problem.split(":")[0] for problem in found) == ["model.phrase_key_dim", "model.phrase_max_size"]


def test_only_the_fusion_generator_can_leave_the_text_out_of_its_projection(compose):
    assert problems(compose("model=fusion", "model.project_text=false")) == []
    found = problems(compose("model=stackgan_stage1", "+model.project_text=false"))
    assert len(found) == 1 and "model.project_text=false needs model=fusion" in found[0], found
    assert [problem.split(":")[0] for problem in problems(compose("model=fusion", "model.project_text=no"))] \
        == ["model.project_text"]
