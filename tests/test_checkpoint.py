import numpy as np
import pytest

import t2igan  # noqa: F401
from t2igan.checkpoint import CheckpointError, read_header, restore_checkpoint, save_checkpoint
from t2igan.gan import build_gan

TINY = dict(
    architecture="stackgan", image_size=64, noise_dim=8, condition_dim=4, text_dim=6, width=0.0625,
    generator_channels=1024, discriminator_channels=64, dropout=0.0, augment=["flip"],
    loss="bce", kl_weight=2.0, wrong_weight=0.5, real_label=1.0, ema_decay=0.9, d_norm="batch", minibatch_std=False,
    g_lr=1e-3, d_lr=1e-3, beta_1=0.5, beta_2=0.999,
)  # fmt: skip


def train_steps(gan, steps: int):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4, 64, 64, 3)).astype("float32")
    text = rng.standard_normal((4, TINY["text_dim"])).astype("float32")
    for _ in range(steps):
        gan.train_step((images, text))


def all_values(gan):
    from t2igan.checkpoint import variable_groups

    return [np.asarray(v.numpy()) for group in variable_groups(gan).values() for v in group]


def test_round_trip_restores_every_variable_and_the_step(tmp_path):
    gan = build_gan(**TINY, seed=1)
    train_steps(gan, 2)
    path = save_checkpoint(tmp_path / "checkpoint.npz", gan, note="hello")
    assert read_header(path)["step"] == 2 and read_header(path)["note"] == "hello"

    fresh = build_gan(**TINY, seed=2)
    header = restore_checkpoint(path, fresh)
    assert header["step"] == 2 and fresh.step == 2
    for expected, actual in zip(all_values(gan), all_values(fresh)):
        np.testing.assert_array_equal(expected, actual)


def test_the_matcher_critics_heads_are_checkpointed(tmp_path):
    from t2igan.metrics.matcher import Matcher, build_matcher

    matcher = Matcher(build_matcher(64, TINY["text_dim"], embedding_dim=8, width=4))
    settings = {**TINY, "matcher_critic_weight": 1.0, "matcher": matcher}
    gan = build_gan(**settings, seed=1)
    train_steps(gan, 2)
    path = save_checkpoint(tmp_path / "checkpoint.npz", gan)
    fresh = build_gan(**settings, seed=2)
    restore_checkpoint(path, fresh)
    assert len(fresh.matcher_critic.head_variables) > 0
    for expected, actual in zip(gan.matcher_critic.head_variables, fresh.matcher_critic.head_variables):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())
    with pytest.raises(CheckpointError):  # a run without the critic cannot take its checkpoint
        restore_checkpoint(path, build_gan(**TINY, seed=1))


def test_a_checkpoint_of_another_model_is_refused_untouched(tmp_path):
    gan = build_gan(**TINY, seed=1)
    path = save_checkpoint(tmp_path / "checkpoint.npz", gan)
    other = build_gan(**{**TINY, "width": 0.125}, seed=1)
    before = all_values(other)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        restore_checkpoint(path, other)
    for expected, actual in zip(before, all_values(other)):
        np.testing.assert_array_equal(expected, actual)
    with pytest.raises(CheckpointError, match="does not fit"):
        restore_checkpoint(path, build_gan(**{**TINY, "text_dim": 7}, seed=1))


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", None])
def test_corrupt_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "checkpoint.npz"
    if content is None:  # a real checkpoint cut in half
        save_checkpoint(path, build_gan(**TINY, seed=1))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError):
        restore_checkpoint(path, build_gan(**TINY, seed=1))


def test_a_foreign_npz_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, kernel=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a t2igan checkpoint"):
        read_header(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_header(tmp_path / "missing.npz")


def test_training_changes_weights_and_ema_follows(tmp_path):
    gan = build_gan(**TINY, seed=1)
    before_g = [w.numpy() for w in gan.generator.trainable_weights]
    before_ema = [w.numpy() for w in gan.generator_ema.trainable_weights]
    train_steps(gan, 3)
    moved = [not np.allclose(a, b.numpy()) for a, b in zip(before_g, gan.generator.trainable_weights)]
    assert all(moved)
    ema_moved = [not np.allclose(a, b.numpy()) for a, b in zip(before_ema, gan.generator_ema.trainable_weights)]
    assert all(ema_moved)
    # The EMA lags behind G: it is strictly between the start and G's current weights.
    start, ema, current = before_g[0], gan.generator_ema.trainable_weights[0].numpy(), gan.generator.trainable_weights[0].numpy()
    assert 0 < np.abs(ema - current).sum() < np.abs(start - current).sum()
    assert gan.step == 3 and int(gan.d_optimizer.iterations) == 3


def test_changed_keys_names_what_defines_a_run():
    from t2igan.runs import changed_keys, run_name

    config = {"model": {"name": "m", "width": 0.25}, "data": {"name": "d"}, "optim": {"d_lr": 2e-4},
              "trainer": {"steps": 10, "run_name": None}, "paths": {"root": "/a"}}  # fmt: skip
    longer = {**config, "trainer": {"steps": 20, "run_name": None}, "paths": {"root": "/b"}}
    assert changed_keys(config, longer) == [] and run_name(config) == run_name(longer)
    slower = {**config, "optim": {"d_lr": 1e-4}}
    assert changed_keys(config, slower) == ["optim.d_lr"] and run_name(config) != run_name(slower)


def test_starting_over_never_reuses_a_used_folder(tmp_path):
    from t2igan.runs import RunFolder

    folder = RunFolder(tmp_path / "run")
    assert folder.unused() == folder
    folder.path.mkdir()
    folder.write_state(mlflow_run_id=None)
    assert folder.unused().path.name == "run-2"
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "checkpoint.npz").write_bytes(b"")
    assert folder.unused().path.name == "run-3"
