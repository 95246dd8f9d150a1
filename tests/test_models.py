import numpy as np
import pytest

import t2igan  # noqa: F401  (pins the Keras backend)
from t2igan.models import build_discriminator, build_generator
from t2igan.models.blocks import BatchNorm, ConditioningAugmentation


def non_trainable(model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.non_trainable_weights)


def test_generator_has_the_seed_parameter_counts():
    generator = build_generator()
    assert generator.count_params() == 14_980_800
    assert non_trainable(generator) == 1_920
    per_layer = {layer.name: layer.count_params() for layer in generator.layers}
    assert per_layer["conditioning"] == 98_560
    assert per_layer["project"] == 3_735_552
    convolution_and_norm = [per_layer[f"up{i}"] + per_layer[f"up{i}_norm"] for i in range(1, 5)]
    assert convolution_and_norm == [8_390_656, 2_098_176, 524_800, 131_328]
    assert per_layer["to_rgb"] == 1_728


def test_discriminator_has_the_seed_parameter_counts():
    discriminator = build_discriminator(dropout=0.5)
    assert discriminator.count_params() == 3_195_905
    assert non_trainable(discriminator) == 2_944
    tower = discriminator.image_encoder.layers
    convolution_and_norm = [
        tower[i].count_params() + tower[i + 1].count_params() for i in range(0, len(tower), 3)
    ]
    assert convolution_and_norm == [3_328, 131_584, 525_312, 2_099_200]
    assert discriminator.conditioning.count_params() == 98_560
    joint = {layer.name: layer.count_params() for layer in discriminator.joint.layers}
    assert (joint["joint"], joint["joint_norm"], joint["logit"]) == (327_680, 2_048, 8_193)


def test_shapes_and_ranges():
    generator = build_generator(width=0.125)
    noise = np.random.default_rng(0).standard_normal((3, 100)).astype("float32")
    text = np.random.default_rng(1).standard_normal((3, 384)).astype("float32")
    images, mu, log_sigma = generator([noise, text], training=False)
    assert images.shape == (3, 64, 64, 3) and mu.shape == log_sigma.shape == (3, 128)
    assert float(np.max(np.abs(images))) <= 1.0
    discriminator = build_discriminator(width=0.125)
    features = discriminator.encode(images)
    assert features.shape == (3, 4, 4, 64)
    assert discriminator.judge(features, text).shape == (3, 1)


def test_width_scales_channels_but_keeps_topology():
    narrow, full = build_generator(width=0.25), build_generator()
    assert [type(layer) for layer in narrow.layers] == [type(layer) for layer in full.layers]
    assert narrow.get_layer("up1").filters == 128 and full.get_layer("up1").filters == 512
    assert build_discriminator(width=0.25).image_encoder.layers[0].filters == 16


def test_conditioning_augmentation_samples_in_training_only():
    layer = ConditioningAugmentation(8, seed=0)
    text = np.ones((4, 16), "float32")
    condition, mu, _ = layer(text, training=False)
    np.testing.assert_array_equal(condition, mu)
    sampled, mu, _ = layer(text, training=True)
    assert not np.allclose(sampled, mu)


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_matches_keras(training):
    import keras

    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 6)).astype("float32")
    ours, reference = BatchNorm(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    ours.build(x.shape)
    reference.build(x.shape)
    for layer in (ours, reference):
        layer.moving_mean.assign(np.full(6, 0.5, "float32"))
        layer.moving_variance.assign(np.full(6, 4.0, "float32"))
    np.testing.assert_allclose(ours(x, training=training), reference(x, training=training), atol=1e-4)
    np.testing.assert_allclose(ours.moving_mean, reference.moving_mean, atol=1e-5)
    # TensorFlow's fused op updates the moving variance with the unbiased batch variance.
    np.testing.assert_allclose(ours.moving_variance, reference.moving_variance, rtol=0.05)


@pytest.mark.parametrize("norm", ["spectral", "none"])
def test_discriminator_without_batch_norm(norm):
    import keras

    discriminator = build_discriminator(width=0.125, norm=norm)
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in discriminator.image_encoder.layers + discriminator.joint.layers)  # fmt: skip
    wrapped = [layer for layer in discriminator.image_encoder.layers if isinstance(layer, keras.layers.SpectralNormalization)]
    assert len(wrapped) == (4 if norm == "spectral" else 0)
    images = np.zeros((2, 64, 64, 3), "float32")
    assert discriminator((images, np.zeros((2, 384), "float32")), training=True).shape == (2, 1)
    with pytest.raises(ValueError, match="unknown discriminator norm"):
        build_discriminator(norm="layer")


def test_batch_norm_runs_the_fused_kernel(monkeypatch):
    import tensorflow as tf

    calls = []
    fused = tf.compat.v1.nn.fused_batch_norm
    monkeypatch.setattr(tf.compat.v1.nn, "fused_batch_norm", lambda *a, **k: calls.append(1) or fused(*a, **k))
    layer = BatchNorm()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    layer(x, training=True)
    layer(x, training=False)
    assert len(calls) == 2


def test_phrase_attention_starts_as_the_identity_and_gives_padded_phrases_no_weight():
    from t2igan.models.fusion import PhraseAttention

    rng = np.random.default_rng(0)
    features = rng.standard_normal((2, 4, 4, 8)).astype("float32")
    phrases = rng.standard_normal((2, 3, 6)).astype("float32")
    phrases[1, 2] = 0.0  # the second caption has two phrases
    layer = PhraseAttention(8, key_dim=4)
    np.testing.assert_allclose(layer(features, phrases), features)
    for weight in layer.gamma.weights + layer.beta.weights:  # as if trained
        weight.assign(rng.standard_normal(weight.shape).astype("float32"))
    read = np.asarray(layer(features, phrases))
    assert not np.allclose(read, features)
    np.testing.assert_allclose(np.asarray(layer(features[1:], phrases[1:, :2])), read[1:], rtol=1e-5, atol=1e-5)
    # Each position reads its own mix: with two different phrases, positions differ in what they add.
    gain = (read - features) / np.maximum(np.abs(features), 1e-3)
    assert np.std(gain[0].reshape(16, -1)[:, 0]) > 1e-4


def test_phrase_attention_is_each_position_attending_over_the_phrases():
    """The layer computes per phrase; the result is the per-position attention its docstring
    describes (queries and keys, softmax over the caption's phrases, gamma and beta of the
    mixed values), here written out in numpy."""
    from t2igan.models.fusion import PhraseAttention

    rng = np.random.default_rng(3)
    features = rng.standard_normal((2, 3, 5, 6)).astype("float32")
    phrases = rng.standard_normal((2, 4, 7)).astype("float32")
    phrases[0, 3] = 0.0  # padding
    layer = PhraseAttention(6, key_dim=5)
    layer(features, phrases)
    for weight in layer.weights:  # as if trained
        weight.assign(rng.standard_normal(weight.shape).astype("float32") * 0.5)

    def dense(inputs, dense_layer, relu=False):
        out = inputs @ np.asarray(dense_layer.kernel)
        out = out + np.asarray(dense_layer.bias) if dense_layer.use_bias else out
        return np.maximum(out, 0.0) if relu else out

    scores = np.einsum("bhwd,bkd->bhwk", dense(features, layer.query), dense(phrases, layer.key)) / np.sqrt(5)
    scores = np.where((np.abs(phrases).sum(-1) > 0)[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("bhwk,bkd->bhwd", weights, dense(phrases, layer.value, relu=True))
    expected = features * (1.0 + dense(context, layer.gamma)) + dense(context, layer.beta)
    np.testing.assert_allclose(np.asarray(layer(features, phrases)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")  # the one-position case
def test_phrase_match_scores_each_phrase_against_its_region_and_averages_over_the_phrases():
    from t2igan.models.fusion import PhraseMatch

    rng = np.random.default_rng(1)
    phrases = rng.standard_normal((2, 3, 5)).astype("float32")
    phrases[0, 2] = 0.0
    match = PhraseMatch(4, norm="none")
    # One position: every phrase's region is that position's features.
    features = rng.standard_normal((2, 1, 1, 4)).astype("float32")
    score = np.asarray(match(features, phrases))
    projected = np.asarray(match.projection(phrases))  # (2, 3, 4)
    per_phrase = np.einsum("bkc,bc->bk", projected, features[:, 0, 0])
    np.testing.assert_allclose(score[:, 0], [per_phrase[0, :2].mean(), per_phrase[1].mean()], rtol=1e-5)
    # Over a 4x4 map the padded phrase still counts for nothing.
    features = rng.standard_normal((2, 4, 4, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(match(features[:1], phrases[:1, :2])),
                               np.asarray(match(features, phrases))[:1], rtol=1e-5)  # fmt: skip


def test_the_fusion_pair_reads_phrase_tokens_and_the_seed_pair_refuses_them():
    from t2igan.models import make_discriminator, make_generator

    sizes = dict(text_dim=6, condition_dim=4, image_size=16, width=0.0625)
    generator = make_generator("fusion", **sizes, noise_dim=8, generator_channels=256, phrase_tokens=2)
    discriminator = make_discriminator("fusion", **sizes, discriminator_channels=32, dropout=0.0, augment=(),
                                       norm="spectral", minibatch_std=False, phrase_tokens=2)  # fmt: skip
    rng = np.random.default_rng(2)
    text = rng.standard_normal((3, 3, 6)).astype("float32")
    images = generator([rng.standard_normal((3, 8)).astype("float32"), text], training=False)[0]
    assert images.shape == (3, 16, 16, 3)
    features = discriminator.encode(images)
    other_phrases = np.concatenate([text[:, :1], text[::-1, 1:]], axis=1)  # same caption vectors
    assert not np.allclose(discriminator.judge(features, text), discriminator.judge(features, other_phrases))
    with pytest.raises(ValueError, match="fusion"):
        make_generator("stackgan", **sizes, noise_dim=8, generator_channels=1024, phrase_tokens=2)


@pytest.mark.parametrize("project_text", [True, False])
def test_without_text_in_its_projection_a_fresh_fusion_generator_ignores_the_caption(project_text):
    from t2igan.models import make_generator

    # The blocks' text affines and phrase attention start as the identity, so at first the
    # caption reaches the images through the 4x4 projection or not at all.
    generator = make_generator("fusion", text_dim=6, condition_dim=4, image_size=16, width=0.0625, noise_dim=8,
                               generator_channels=256, phrase_tokens=2, project_text=project_text)  # fmt: skip
    rng = np.random.default_rng(3)
    noise = np.repeat(rng.standard_normal((1, 8)).astype("float32"), 2, axis=0)
    images = np.asarray(generator([noise, rng.standard_normal((2, 3, 6)).astype("float32")], training=False)[0])
    assert np.allclose(images[0], images[1], atol=1e-6) == (not project_text)
    other_noise = np.asarray(generator([rng.standard_normal((2, 8)).astype("float32"),
                                        np.zeros((2, 3, 6), "float32")], training=False)[0])  # fmt: skip
    assert not np.allclose(other_noise[0], other_noise[1], atol=1e-6)  # the noise always shapes it
    named = {layer.name: layer for layer in generator.layers}
    assert named["project"].kernel.shape[0] == (8 + 6 if project_text else 8)
    with pytest.raises(ValueError, match="fusion"):
        make_generator("stackgan", text_dim=6, condition_dim=4, image_size=16, width=0.0625, noise_dim=8,
                       generator_channels=1024, project_text=False)  # fmt: skip


def test_phrase_attention_goes_as_deep_and_as_wide_as_the_model_says():
    from t2igan.models import make_generator

    sizes = dict(text_dim=6, condition_dim=4, image_size=32, width=0.0625, noise_dim=8, generator_channels=256)
    text = np.random.default_rng(0).standard_normal((2, 3, 6)).astype("float32")

    def attention(**options):  # {block output size: key width}
        generator = make_generator("fusion", **sizes, phrase_tokens=2, **options)
        assert generator([np.zeros((2, 8), "float32"), text])[0].shape == (2, 32, 32, 3)
        named = {layer.name: layer for layer in generator.layers}
        return {named[f"conv{level}"].output.shape[1]: named[f"conv{level}_phrases"].key_dim
                for level in range(1, 4) if f"conv{level}_phrases" in named}

    assert attention() == {8: 64, 16: 64, 32: 64}  # every block, 64 wide
    assert attention(phrase_key_dim=16, phrase_max_size=16) == {8: 16, 16: 16}
    assert attention(phrase_max_size=8) == {8: 64}
