"""The text-to-image GAN as one keras.Model: G, D, an EMA copy of G, and the training step."""

import keras
import tensorflow as tf
from keras import ops

from t2igan import losses

METRIC_NAMES = (
    "d/real", "d/fake", "d/wrong", "d/total",
    "g/adv", "g/kl", "g/total",
    "d_score/real", "d_score/fake", "d_score/wrong",
    "grad_norm/d", "grad_norm/g",
)  # fmt: skip


class TextToImageGAN(keras.Model):
    """A conditional GAN trained with the matching-aware objective.

    Each `train_step` takes a batch `(real_images (B, S, S, 3) in [-1, 1], text_embeddings
    (B, T))`, pairs every image with the caption of its neighbour in the batch for the
    mismatched term, and makes one discriminator update followed by one generator update.
    G runs once per step: D is updated on the detached fakes, then judges the same fakes again
    for G's loss. Metrics are running means that the logging callback resets each interval.

    `ema_decay` is the per-step decay of the generator EMA used for samples (0 copies G);
    it ramps up from 0 over the first steps, as in StyleGAN, so early samples are not stale.
    """

    def __init__(
        self,
        generator: keras.Model,
        generator_ema: keras.Model,
        discriminator: keras.Model,
        *,
        noise_dim: int = 100,
        loss_kind: str = "bce",
        kl_weight: float = 2.0,
        wrong_weight: float = 0.5,
        real_label: float = 1.0,
        ema_decay: float = 0.999,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator = generator
        self.generator_ema = generator_ema
        self.discriminator = discriminator
        self.noise_dim = noise_dim
        self.loss_kind = loss_kind
        self.kl_weight = kl_weight
        self.wrong_weight = wrong_weight
        self.real_label = real_label
        self.ema_decay = ema_decay
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        for ema_weight, weight in zip(generator_ema.weights, generator.weights):
            ema_weight.assign(weight)

    def compile(self, g_optimizer: keras.optimizers.Optimizer, d_optimizer: keras.optimizers.Optimizer, **kwargs):
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        # Built now so that a checkpoint can be restored into them before the first step.
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def step(self) -> int:
        """Training steps done (generator updates), restored with the optimizer state."""
        return int(self.g_optimizer.iterations.numpy())

    def call(self, inputs, training=False):
        noise, text_embeddings = inputs
        return self.generator([noise, text_embeddings], training=training)[0]

    def generate(self, noise, text_embeddings, *, use_ema: bool = True):
        """(B, noise_dim) noise and (B, T) embeddings -> (B, S, S, 3) images in [-1, 1]."""
        generator = self.generator_ema if use_ema else self.generator
        return generator([noise, text_embeddings], training=False)[0]

    def _discriminate(self, images, *text_embeddings):
        """D's logits for `images` against each embedding batch; the images are encoded once."""
        features = self.discriminator.encode(images, training=True)
        return [self.discriminator.judge(features, text, training=True) for text in text_embeddings]

    def train_step(self, data):
        real_images, text_embeddings = (ops.convert_to_tensor(x) for x in data)
        batch_size = ops.shape(real_images)[0]
        mismatched_embeddings = ops.roll(text_embeddings, shift=1, axis=0)
        noise = keras.random.normal((batch_size, self.noise_dim), seed=self.seed_generator)

        with tf.GradientTape() as g_tape:
            fake_images, mu, log_sigma = self.generator([noise, text_embeddings], training=True)
            with g_tape.stop_recording():
                d_terms, d_scores, d_grad_norm = self._discriminator_update(
                    real_images, ops.stop_gradient(fake_images), text_embeddings, mismatched_embeddings
                )
            (fake_logits,) = self._discriminate(fake_images, text_embeddings)
            g_terms = losses.generator_loss(
                fake_logits, mu, log_sigma, kind=self.loss_kind, kl_weight=self.kl_weight
            )
        g_variables = self.generator.trainable_variables
        g_grads = g_tape.gradient(g_terms["g/total"], g_variables)
        self.g_optimizer.apply(g_grads, g_variables)
        self._update_ema()

        values = {**d_terms, **g_terms, **d_scores}
        values["grad_norm/d"] = d_grad_norm
        values["grad_norm/g"] = tf.linalg.global_norm(g_grads)
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def _discriminator_update(self, real_images, fake_images, text_embeddings, mismatched_embeddings):
        d_variables = self.discriminator.trainable_variables
        with tf.GradientTape() as d_tape:
            real_logits, wrong_logits = self._discriminate(
                real_images, text_embeddings, mismatched_embeddings
            )
            (fake_logits,) = self._discriminate(fake_images, text_embeddings)
            d_terms = losses.discriminator_loss(
                real_logits,
                fake_logits,
                wrong_logits,
                kind=self.loss_kind,
                wrong_weight=self.wrong_weight,
                real_label=self.real_label,
            )
        d_grads = d_tape.gradient(d_terms["d/total"], d_variables)
        self.d_optimizer.apply(d_grads, d_variables)
        d_scores = {
            "d_score/real": ops.mean(ops.sigmoid(real_logits)),
            "d_score/fake": ops.mean(ops.sigmoid(fake_logits)),
            "d_score/wrong": ops.mean(ops.sigmoid(wrong_logits)),
        }
        return d_terms, d_scores, tf.linalg.global_norm(d_grads)

    def _update_ema(self):
        step = ops.cast(self.g_optimizer.iterations, "float32")
        decay = ops.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
        for ema_weight, weight in zip(self.generator_ema.trainable_weights, self.generator.trainable_weights):
            ema_weight.assign(decay * ema_weight + (1.0 - decay) * weight)
        # BatchNorm statistics are copied, not averaged: they describe G's current activations.
        for ema_weight, weight in zip(self.generator_ema.non_trainable_weights, self.generator.non_trainable_weights):
            ema_weight.assign(weight)


def build_gan(
    *,
    image_size: int,
    noise_dim: int,
    condition_dim: int,
    text_dim: int,
    width: float,
    generator_channels: int,
    discriminator_channels: int,
    dropout: float,
    augment: list[str],
    loss: str,
    kl_weight: float,
    wrong_weight: float,
    real_label: float,
    ema_decay: float,
    d_norm: str,
    minibatch_std: bool,
    g_lr: float,
    d_lr: float,
    beta_1: float,
    beta_2: float,
    seed: int | None = None,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
) -> TextToImageGAN:
    """A compiled GAN from the `model`, `balance` and `optim` groups' plain values.

    Learning rates and betas configure one Adam optimizer per network; `jit_compile` and
    `steps_per_execution` go to `keras.Model.compile`.
    """
    from t2igan.models import build_discriminator, build_generator

    generator_args = dict(
        text_dim=text_dim, noise_dim=noise_dim, condition_dim=condition_dim,
        image_size=image_size, base_channels=generator_channels, width=width,
    )  # fmt: skip
    gan = TextToImageGAN(
        build_generator(**generator_args, seed=seed),
        build_generator(**generator_args, name="generator_ema"),
        build_discriminator(
            text_dim=text_dim, condition_dim=condition_dim, image_size=image_size,
            base_channels=discriminator_channels, width=width, dropout=dropout,
            augment=tuple(augment), norm=d_norm, minibatch_std=minibatch_std, seed=seed,
        ),  # fmt: skip
        noise_dim=noise_dim,
        loss_kind=loss,
        kl_weight=kl_weight,
        wrong_weight=wrong_weight,
        real_label=real_label,
        ema_decay=ema_decay,
        seed=seed,
    )
    gan.compile(
        g_optimizer=keras.optimizers.Adam(g_lr, beta_1=beta_1, beta_2=beta_2, name="g_adam"),
        d_optimizer=keras.optimizers.Adam(d_lr, beta_1=beta_1, beta_2=beta_2, name="d_adam"),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return gan
