"""The balance options reach the training step: D steps, penalties, augmentation, controllers."""

import math

import keras
import numpy as np
import pytest

from t2igan.checkpoint import restore_checkpoint, save_checkpoint
from t2igan.gan import batch_norms, build_gan

TINY = dict(
    image_size=32, noise_dim=8, condition_dim=4, text_dim=6, width=0.0625, dropout=0.0,
    augment=[], g_lr=1e-3, d_lr=1e-3, beta_1=0.5, beta_2=0.999, d_norm="none",
)  # fmt: skip
ARCHITECTURES = {
    "stackgan": dict(architecture="stackgan", generator_channels=1024, discriminator_channels=64),
    "fusion": dict(architecture="fusion", generator_channels=256, discriminator_channels=32),
}


@pytest.fixture(autouse=True)
def _deterministic_weights():
    # Weight initialisation draws from Keras' global seed: fixed, so that a property of an
    # untrained D (e.g. whether LeCam's hinge is active on the first batch) cannot flip per run.
    keras.utils.set_random_seed(0)


def tiny_gan(architecture="stackgan", **balance):
    return build_gan(**TINY, **ARCHITECTURES[architecture], seed=1, **balance)


def tiny_matcher():
    """An untrained matcher for TINY's images and captions (float32, as a trained one loads)."""
    from t2igan.metrics.matcher import Matcher, build_matcher

    return Matcher(build_matcher(32, TINY["text_dim"], embedding_dim=8, width=4))


def batch(size=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (size, 32, 32, 3)).astype("float32")
    return images, rng.standard_normal((size, TINY["text_dim"])).astype("float32")


def run_steps(gan, steps):
    data = batch()
    return [{name: float(value) for name, value in gan.train_step(data).items()} for _ in range(steps)]


@pytest.mark.parametrize("architecture", ["stackgan", "fusion"])
def test_n_critic_makes_that_many_discriminator_updates_per_generator_update(architecture):
    gan = tiny_gan(architecture, n_critic=3)
    run_steps(gan, 2)
    assert int(gan.g_optimizer.iterations.numpy()) == 2
    assert int(gan.d_optimizer.iterations.numpy()) == 6


def test_regularisers_are_logged_only_when_switched_on():
    off = run_steps(tiny_gan(), 1)[-1]
    assert off["d/ma_gp"] == off["d/r1"] == off["d/lecam"] == 0.0
    on = run_steps(tiny_gan(ma_gp_weight=2.0, lecam_weight=0.3, r1_gamma=1.0, r1_every=1), 1)[-1]
    assert on["d/ma_gp"] > 0 and on["d/r1"] > 0 and on["d/lecam"] > 0


def test_lazy_r1_is_applied_every_r1_every_discriminator_steps():
    gan = tiny_gan(r1_gamma=1.0, r1_every=2)
    applied = []
    for _ in range(4):
        for tracker in gan.metrics:  # one value per step instead of a running mean
            tracker.reset_state()
        applied.append(run_steps(gan, 1)[-1]["d/r1"] > 0)
    # The penalty is due when D's update count is a multiple of 2: before updates 1 and 3.
    assert applied == [True, False, True, False]


def test_augmentation_probability_zero_leaves_discriminator_inputs_untouched():
    images, text = batch()
    plain = tiny_gan()
    augmented = tiny_gan(diffaugment=("color", "translation", "cutout"), augment_p=0.0)
    augmented.discriminator.set_weights(plain.discriminator.get_weights())
    np.testing.assert_allclose(
        np.asarray(augmented._critic(images, text)), np.asarray(plain._critic(images, text)), rtol=1e-5
    )
    augmented.augment_probability.assign(1.0)  # what ADA does between steps
    assert not np.allclose(np.asarray(augmented._critic(images, text)), np.asarray(plain._critic(images, text)))


def test_controller_state_is_checkpointed(tmp_path):
    gan = tiny_gan(diffaugment=("color",), augment_p=0.0, lecam_weight=0.1)
    run_steps(gan, 2)
    gan.augment_probability.assign(0.37)
    gan.d_optimizer.learning_rate.assign(5e-4)
    path = save_checkpoint(tmp_path / "checkpoint.npz", gan)

    fresh = tiny_gan(diffaugment=("color",), augment_p=0.0, lecam_weight=0.1)
    restore_checkpoint(path, fresh)
    assert float(fresh.augment_probability.numpy()) == pytest.approx(0.37)
    assert float(fresh.d_optimizer.learning_rate.numpy()) == pytest.approx(5e-4)
    assert float(fresh.lecam_anchors.updates.numpy()) == 2.0


def test_unknown_balance_option_is_refused():
    with pytest.raises(TypeError, match="unknown balance options"):
        tiny_gan(ma_gp=2.0)


@pytest.mark.parametrize("per_caption", [False, True])
def test_mode_seeking_draws_each_caption_twice_and_penalises_images_that_ignore_noise(per_caption, monkeypatch):
    from t2igan import losses

    used = []
    for name in ("mode_seeking_loss", "per_caption_mode_seeking_loss"):
        loss = getattr(losses, name)
        monkeypatch.setattr(losses, name,
                            lambda *args, name=name, loss=loss: used.append(name) or loss(*args))  # fmt: skip
    gan = tiny_gan("fusion", mode_seeking_weight=1.0, mode_seeking_per_caption=per_caption)
    _, text = batch()
    fake_text = np.asarray(gan._fake_captions(text))
    np.testing.assert_array_equal(fake_text[:2], fake_text[2:])
    np.testing.assert_array_equal(fake_text[:2], text[:2])
    terms = run_steps(gan, 1)[-1]
    assert set(used) == {"per_caption_mode_seeking_loss" if per_caption else "mode_seeking_loss"}
    assert terms["g/total"] == pytest.approx(terms["g/adv"] + terms["g/mode_seeking"], rel=1e-4)
    if not per_caption:  # per caption it is a mean of -log ratios, of either sign
        assert terms["g/mode_seeking"] > 0


@pytest.mark.parametrize("space", ["discriminator", "matcher", "matcher_residual"])
def test_mode_seeking_in_a_feature_space_spreads_unit_rms_features(space):
    matcher = tiny_matcher()
    gan = tiny_gan("fusion", mode_seeking_weight=1.0, mode_seeking_spaces=[space], matcher=matcher)
    images, text = batch()
    features = gan._encode(images)
    (samples,) = gan._mode_seeking_samples(images, 10.0 * features, text)
    samples = keras.ops.convert_to_numpy(samples)
    width = int(np.prod(features.shape[1:])) if space == "discriminator" else 8
    assert samples.shape == (4, width)
    np.testing.assert_allclose(np.sqrt(np.mean(samples**2, axis=1)), 1.0, rtol=1e-4)
    if space == "matcher_residual":  # nothing left along the caption's own embedding
        captions = keras.ops.convert_to_numpy(matcher.texts(text))
        np.testing.assert_allclose(np.sum(samples * captions, axis=1), 0.0, atol=1e-5)
    terms = run_steps(gan, 1)[-1]
    assert terms["g/mode_seeking"] > 0
    assert terms["g/total"] == pytest.approx(terms["g/adv"] + terms["g/mode_seeking"], rel=1e-4)


def test_mode_seeking_in_thumbnails_ignores_texture_and_sees_layout():
    gan = tiny_gan("fusion", mode_seeking_weight=1.0, mode_seeking_spaces=["thumbnails"])
    side = batch()[0].shape[1]
    checker = np.indices((side, side)).sum(axis=0) % 2 * 2.0 - 1.0  # finest texture: averages to 0
    textured = np.broadcast_to(checker[None, :, :, None], (4, side, side, 3)).astype(np.float32)
    (samples,) = gan._mode_seeking_samples(textured, None, None)
    samples = keras.ops.convert_to_numpy(samples)
    assert samples.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(samples, 0.0, atol=1e-6)
    half_lit = np.zeros((4, side, side, 3), np.float32)
    half_lit[:, : side // 2] = 1.0  # a large area: the top half lit
    (samples,) = gan._mode_seeking_samples(half_lit, None, None)
    samples = keras.ops.convert_to_numpy(samples)
    np.testing.assert_allclose(samples[:, :4], 1.0)
    np.testing.assert_allclose(samples[:, 4:], 0.0)
    terms = run_steps(gan, 1)[-1]
    assert terms["g/mode_seeking"] > 0


def test_mode_seeking_sums_its_term_over_the_spaces():
    matcher = tiny_matcher()
    terms = {}
    for spaces in (["pixels"], ["matcher"], ["pixels", "matcher"]):
        keras.utils.set_random_seed(0)
        gan = tiny_gan("fusion", mode_seeking_weight=1.0, mode_seeking_spaces=spaces, matcher=matcher)
        terms[len(spaces), spaces[-1]] = gan._generator_terms(*_generator_inputs(gan))["g/mode_seeking"]
    assert float(terms[2, "matcher"]) == pytest.approx(float(terms[1, "pixels"] + terms[1, "matcher"]), rel=1e-5)


def _generator_inputs(gan):
    real_images, text = batch()
    noise = keras.random.normal((4, TINY["noise_dim"]), seed=3)
    fake_text = gan._fake_captions(text)
    fake_images, mu, log_sigma = gan.generator([noise, fake_text], training=True)
    return fake_images, fake_text, noise, mu, log_sigma, real_images


def test_mode_seeking_in_the_matchers_space_needs_a_matcher():
    with pytest.raises(ValueError, match="needs a matcher"):
        tiny_gan("fusion", mode_seeking_weight=1.0, mode_seeking_spaces=["pixels", "matcher"])
    tiny_gan("fusion", mode_seeking_weight=0.0, mode_seeking_spaces=["matcher"])  # off: no matcher needed


def test_discriminator_numbers_are_averaged_over_its_n_critic_updates():
    # R1 is due on D's updates 0, 2, 4, ... With n_critic = 2 the last update of every step is
    # odd, so only an average over both updates shows the penalty.
    gan = tiny_gan(n_critic=2, r1_gamma=1.0, r1_every=2)
    assert all(values["d/r1"] > 0 for values in run_steps(gan, 2))


def test_the_matching_term_trains_g_against_a_frozen_matcher():
    with pytest.raises(ValueError, match="needs a matcher"):
        tiny_gan(matching_weight=1.0)
    matcher = tiny_matcher()
    frozen = [w.numpy().copy() for w in matcher.model.weights]
    gan = tiny_gan(matching_weight=1.0, matcher=matcher)
    logged = run_steps(gan, 2)[-1]
    assert logged["g/matching"] > 0
    assert logged["g/total"] > logged["g/adv"]  # the term is part of G's loss
    assert all(np.array_equal(w.numpy(), f) for w, f in zip(matcher.model.weights, frozen))  # not trained
    assert not {id(w) for w in matcher.model.weights} & {id(w) for w in gan.trainable_weights}
    assert run_steps(tiny_gan(), 1)[-1]["g/matching"] == 0.0  # off by default


@pytest.mark.parametrize("mode_seeking_weight", [0.0, 1.0])
def test_the_matching_floor_charges_only_what_gs_images_match_worse_than_their_captions_real_image(
    mode_seeking_weight,
):
    from t2igan.losses import matching_losses
    from t2igan.text.encoder import sentence_of

    matcher = tiny_matcher()
    gan = tiny_gan("fusion", matching_weight=1.0, matching_floor=True, matcher=matcher,
                   mode_seeking_weight=mode_seeking_weight)  # fmt: skip
    real_images, text = batch()
    fake_text = gan._fake_captions(text)
    as_real = gan._fake_captions(real_images)  # each fake row's caption's real image
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(gan._matching_losses(as_real, fake_text, real_images)),
                                  0.0)  # fmt: skip
    fake_images = batch(seed=1)[0]
    floored = keras.ops.convert_to_numpy(gan._matching_losses(fake_images, fake_text, real_images))
    captions = matcher.texts(sentence_of(fake_text))
    fake, real = (keras.ops.convert_to_numpy(matching_losses(matcher.images(images), captions))
                  for images in (fake_images, as_real))  # fmt: skip
    np.testing.assert_allclose(floored, np.maximum(fake - real, 0.0), rtol=1e-5, atol=1e-6)
    assert np.any(fake > real) and np.any(fake < real)  # both sides of the floor are tested
    unfloored = tiny_gan("fusion", matching_weight=1.0, matcher=matcher, mode_seeking_weight=mode_seeking_weight)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(unfloored._matching_losses(fake_images, fake_text,
                                                                                    real_images)), fake, rtol=1e-5)  # fmt: skip
    assert run_steps(gan, 1)[-1]["g/matching"] >= 0.0


def test_the_matcher_critic_is_a_second_discriminator_on_the_frozen_matcher():
    with pytest.raises(ValueError, match="needs a matcher"):
        tiny_gan("fusion", matcher_critic_weight=1.0)
    matcher = tiny_matcher()
    frozen = [w.numpy().copy() for w in matcher.model.weights]
    gan = tiny_gan("fusion", matcher_critic_weight=0.5, matcher=matcher)
    critic = gan.matcher_critic
    # One head per map after the tower's first block: 8x8 and 4x4 for 32x32 images.
    assert [tuple(f.shape[1:3]) for f in critic.maps(np.zeros((1, 32, 32, 3), "float32"))] == [(8, 8), (4, 4)]
    assert [tuple(f.shape[1:]) for f in critic.features(np.zeros((1, 32, 32, 3), "float32"))] == [(4, 4, 64)] * 2
    heads = [w.numpy().copy() for w in critic.trainable_variables]
    assert heads and {id(w) for w in critic.trainable_variables} <= {id(w) for w in gan._d_variables()}
    logged = run_steps(gan, 2)[-1]
    assert logged["d/matcher_critic"] > 0 and logged["g/matcher_critic"] > 0
    # G pays it at its weight beside fooling D (no other term is on).
    assert logged["g/total"] == pytest.approx(logged["g/adv"] + 0.5 * logged["g/matcher_critic"], rel=1e-4)
    assert all(not np.array_equal(w.numpy(), h) for w, h in zip(critic.trainable_variables, heads))  # heads learn
    assert all(np.array_equal(w.numpy(), f) for w, f in zip(matcher.model.weights, frozen))  # the matcher does not
    off = run_steps(tiny_gan("fusion"), 1)[-1]
    assert off["d/matcher_critic"] == 0.0 and off["g/matcher_critic"] == 0.0


def test_the_matcher_critics_heads_score_phrases_only_when_asked():
    matcher = tiny_matcher()
    without_phrases = tiny_gan("fusion", matcher_critic_weight=0.5, matcher_critic_phrases=True, matcher=matcher)
    assert all(head.phrase_match is None for head in without_phrases.matcher_critic.heads)  # as D: none to score
    images, _ = batch()
    tokens = np.random.default_rng(3).standard_normal((4, 3, TINY["text_dim"])).astype("float32")
    other_phrases = tokens.copy()
    other_phrases[:, 1:] = np.random.default_rng(4).standard_normal((4, 2, TINY["text_dim"]))

    def logits(phrases: bool):
        gan = build_gan(**{**TINY, "d_norm": "spectral"}, **ARCHITECTURES["fusion"], seed=1, phrase_tokens=2,
                        matcher_critic_weight=0.5, matcher_critic_phrases=phrases, matcher=matcher)  # fmt: skip
        critic = gan.matcher_critic
        features = critic.features(images)
        return critic, [keras.ops.convert_to_numpy(critic.judge(features, text)) for text in (tokens, other_phrases)]

    plain, (same, changed) = logits(False)
    np.testing.assert_array_equal(same, changed)  # the caption vector alone
    scoring, (same, changed) = logits(True)
    assert np.abs(same - changed).max() > 1e-4  # each head scores the phrases too
    assert len(scoring.head_variables) > len(plain.head_variables)  # and checkpoints their weights


def test_rotated_colours_replace_the_neighbours_caption_where_a_caption_has_a_negative():
    gan = tiny_gan(rotated_colours=1.0)
    images, text = batch()
    negatives, has_negative = -text, np.array([True, False, True, False])
    neighbours = np.roll(text, 1, axis=0)
    mismatched, rotated = (np.asarray(x) for x in gan._mismatched(text, (negatives, has_negative)))
    np.testing.assert_array_equal(mismatched[has_negative], negatives[has_negative])
    np.testing.assert_array_equal(mismatched[~has_negative], neighbours[~has_negative])
    np.testing.assert_array_equal(rotated, has_negative)
    # Off, or no negatives in the batch: the neighbours' captions, as before.
    for plain, extras in ((tiny_gan(), (negatives, has_negative)), (gan, ())):
        mismatched, rotated = (np.asarray(x) for x in plain._mismatched(text, extras))
        np.testing.assert_array_equal(mismatched, neighbours)
        assert not rotated.any()
    # A share below 1 draws that share of the captions that have one.
    captions = np.random.default_rng(1).standard_normal((2000, TINY["text_dim"])).astype("float32")
    negatives = (-captions, np.ones(2000, bool))
    _, rotated = tiny_gan(rotated_colours=0.25)._mismatched(captions, negatives)
    assert np.mean(rotated) == pytest.approx(0.25, abs=0.03)


def test_d_score_rotated_is_ds_mean_score_over_the_rotated_pairs_only():
    gan = tiny_gan(rotated_colours=1.0)
    images, text = batch()
    every = gan.train_step((images, text, -text, np.ones(4, bool)))
    # Every mismatched pair rotated: the same pairs as d_score/wrong.
    assert float(every["d_score/rotated"]) == pytest.approx(float(every["d_score/wrong"]), rel=1e-5)
    # A step without rotated pairs leaves the interval's mean alone (it is not a score of 0).
    none = gan.train_step((images, text, -text, np.zeros(4, bool)))
    previous = float(every["d_score/rotated"])
    assert float(none["d_score/rotated"]) == pytest.approx(previous, rel=1e-6)
    assert run_steps(tiny_gan(), 1)[-1]["d_score/rotated"] == 0.0  # off: 0


@pytest.mark.parametrize("d_norm, penalty", [("batch", {}), ("spectral", {"ma_gp_weight": 2.0}),
                                             ("none", {"ma_gp_weight": 2.0})])  # fmt: skip
def test_the_fusion_model_trains_with_every_discriminator_norm_and_ma_gp(d_norm, penalty):
    gan = build_gan(**{**TINY, "d_norm": d_norm}, **ARCHITECTURES["fusion"], seed=1, **penalty)
    logged = run_steps(gan, 2)[-1]
    assert all(math.isfinite(value) for value in logged.values()), logged
    assert (logged["d/ma_gp"] > 0) == bool(penalty)


@pytest.mark.parametrize("architecture", ["stackgan", "fusion"])
def test_the_contrastive_term_trains_d_heads_on_real_pairs_and_g_through_them(architecture):
    assert tiny_gan(architecture).discriminator.contrastive is None  # no heads unless asked for
    gan = tiny_gan(architecture, contrastive_weight=1.0, contrastive_dim=8)
    heads = gan.discriminator.contrastive
    before = [weight.numpy().copy() for weight in heads.weights]
    logged = run_steps(gan, 2)[-1]
    assert logged["d/contrastive"] > 0 and logged["g/contrastive"] > 0
    assert logged["g/total"] > logged["g/adv"]  # G pays it
    assert all(not np.array_equal(weight.numpy(), old) for weight, old in zip(heads.weights, before))  # D learns it
    assert run_steps(tiny_gan(architecture), 1)[-1]["g/contrastive"] == 0.0  # off by default


def _statistics_inputs(count, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((count, TINY["noise_dim"])).astype("float32"),
            rng.standard_normal((count, TINY["text_dim"])).astype("float32"))  # fmt: skip


def test_standing_statistics_are_the_ema_generators_own_batch_statistics():
    gan = tiny_gan("fusion")  # (StackGAN's generator samples its condition in training mode)
    run_steps(gan, 3)  # the EMA generator's weights now differ from G's, whose statistics it holds
    noise, text = _statistics_inputs(64)
    with_batch_statistics = np.asarray(gan.generator_ema([noise, text], training=True)[0])
    copied = np.asarray(gan.generate(noise, text))
    gan.use_standing_statistics(noise, text, batch_size=64)
    gan.refresh_standing_statistics()
    standing = np.asarray(gan.generate(noise, text))
    # One batch of 64: its statistics normalise it in inference as they did in training mode
    # (up to the unbiased variance the running statistics keep).
    standing_error = np.abs(standing - with_batch_statistics).mean()
    assert standing_error < 1e-3
    assert np.abs(copied - with_batch_statistics).mean() > 10 * standing_error


@pytest.mark.parametrize("architecture", ["stackgan", "fusion"])
def test_standing_statistics_average_the_batches_and_leave_training_alone(architecture):
    gan = tiny_gan(architecture)
    run_steps(gan, 2)
    norm = batch_norms(gan.generator_ema)[-1]
    before_norm = keras.Model(gan.generator_ema.inputs, norm.input)
    noise, text = _statistics_inputs(48)
    sampled = [layer.seed_generator.state for layer in gan.generator_ema.layers if hasattr(layer, "seed_generator")]
    start = [state.numpy() for state in sampled]  # StackGAN's condition is sampled: same draws below
    batch_means = [np.asarray(before_norm([noise[i:i + 16], text[i:i + 16]], training=True)).mean(axis=(0, 1, 2))
                   for i in (0, 16, 32)]  # fmt: skip
    momentum = norm.momentum
    for state, value in zip(sampled, start):
        state.assign(value)
    gan.use_standing_statistics(noise, text, batch_size=16)
    gan.refresh_standing_statistics()
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean(batch_means, axis=0), rtol=1e-4, atol=1e-5)
    assert norm.momentum == momentum
    measured = norm.moving_mean.numpy()
    gan.refresh_standing_statistics()  # same step: nothing to do
    np.testing.assert_array_equal(norm.moving_mean.numpy(), measured)
    run_steps(gan, 1)  # training copies G's running statistics again, as without standing statistics
    g_norm = batch_norms(gan.generator)[-1]
    np.testing.assert_array_equal(norm.moving_mean.numpy(), g_norm.moving_mean.numpy())


@pytest.fixture
def float32_afterwards():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("architecture", ["stackgan", "fusion"])
def test_the_default_recipe_trains_in_mixed_bfloat16_with_float32_spectral_norm(float32_afterwards, architecture):
    matcher = tiny_matcher()  # float32, as trained
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    gan = build_gan(**{**TINY, "d_norm": "spectral"}, **ARCHITECTURES[architecture], seed=1, minibatch_std=True,
                    matching_weight=1.0, mode_seeking_weight=1.0, matcher_critic_weight=0.5, matcher=matcher)
    logged = run_steps(gan, 2)[-1]
    assert all(math.isfinite(value) for value in logged.values()), logged
    kernels = [layer.kernel for layer in _spectral_norms(gan.discriminator) + _spectral_norms(gan.matcher_critic)]
    assert len(kernels) > 4
    for kernel in kernels:  # normalised in float32: not rounded to bfloat16 by the write-back
        value = keras.ops.convert_to_numpy(kernel)
        assert value.dtype == np.float32
        rounded = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(value, "bfloat16"), "float32"))
        assert not np.array_equal(value, rounded)


def _spectral_norms(model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.SpectralNormalization)]  # fmt: skip


def test_phrase_tokens_train_with_the_matcher_penalties_and_rotated_negatives():
    matcher = tiny_matcher()  # reads caption vectors
    gan = build_gan(**{**TINY, "d_norm": "spectral"}, **ARCHITECTURES["fusion"], seed=1, phrase_tokens=2,
                    ma_gp_weight=2.0, rotated_colours=1.0, matching_weight=1.0, matcher_critic_weight=0.5,
                    matcher=matcher)  # fmt: skip
    images, _ = batch()
    tokens = np.random.default_rng(3).standard_normal((4, 3, TINY["text_dim"])).astype("float32")
    tokens[0, 2] = 0.0  # a caption of one phrase
    has_negative = np.array([True, False, True, False])
    mismatched, _ = (np.asarray(x) for x in gan._mismatched(tokens, (-tokens, has_negative)))
    np.testing.assert_array_equal(mismatched[has_negative], -tokens[has_negative])  # whole rows
    np.testing.assert_array_equal(mismatched[~has_negative], np.roll(tokens, 1, axis=0)[~has_negative])
    for _ in range(2):
        logged = {name: float(value) for name, value in
                  gan.train_step((images, tokens, -tokens, has_negative)).items()}  # fmt: skip
    assert all(math.isfinite(value) for value in logged.values()), logged
    assert logged["d/ma_gp"] > 0 and logged["g/matching"] > 0 and logged["d/matcher_critic"] > 0
    assert gan.generate(np.zeros((4, TINY["noise_dim"]), "float32"), tokens).shape == (4, 32, 32, 3)


def test_the_phrase_matching_term_trains_g_against_a_frozen_phrase_matcher():
    from t2igan.losses import contrastive_losses
    from t2igan.metrics.phrase_matcher import PhraseMatcher, build_towers

    with pytest.raises(ValueError, match="needs a phrase matcher"):
        build_gan(**TINY, **ARCHITECTURES["fusion"], seed=1, phrase_tokens=2, phrase_matching_weight=1.0)
    image_tower, _, phrase_tower = build_towers(32, TINY["text_dim"], embedding_dim=8, width=4, text_hidden=16)
    phrase_matcher = PhraseMatcher(image_tower, phrase_tower, sharpness=5.0)
    frozen = [w.numpy().copy() for w in image_tower.weights + phrase_tower.weights]
    tokens = np.random.default_rng(3).standard_normal((4, 3, TINY["text_dim"])).astype("float32")
    tokens[0, 2] = 0.0  # a caption of one phrase

    def logged_after_two_steps(weight):
        gan = build_gan(**TINY, **ARCHITECTURES["fusion"], seed=1, phrase_tokens=2, mode_seeking_weight=1.0,
                        phrase_matching_weight=weight, phrase_matcher=phrase_matcher)  # fmt: skip
        for _ in range(2):
            logged = {name: float(value) for name, value in gan.train_step((batch()[0], tokens)).items()}
        return gan, logged

    gan, logged = logged_after_two_steps(1.0)
    assert logged["g/phrase_matching"] > 0.0 and logged["g/total"] > logged["g/adv"]
    # Mode seeking draws the first half's captions twice: both copies count as each image's own.
    fake_captions = gan._fake_captions(tokens)
    fake_images = gan.generator([keras.ops.zeros((4, TINY["noise_dim"])), fake_captions])[0]
    scores = phrase_matcher.scores(phrase_matcher.regions(fake_images), fake_captions)
    same = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gan._phrase_matching_losses(fake_images, fake_captions)),
                               keras.ops.convert_to_numpy(contrastive_losses(scores, same, temperature=0.1)),
                               rtol=1e-5)  # fmt: skip
    assert all(np.array_equal(w.numpy(), f) for w, f in zip(image_tower.weights + phrase_tower.weights, frozen))
    assert not {id(w) for w in image_tower.weights} & {id(w) for w in gan.trainable_weights}
    assert logged_after_two_steps(0.0)[1]["g/phrase_matching"] == 0.0  # off: not computed
