"""The text-to-image GAN as one keras.Model: G, D, an EMA copy of G, and the training step."""

from dataclasses import dataclass, fields

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from t2igan import losses
from t2igan.augment import augment_images, instance_noise
from t2igan.metrics.matcher import Matcher
from t2igan.metrics.phrase_matcher import PhraseMatcher, same_captions
from t2igan.models.matcher_critic import MatcherCritic
from t2igan.regularizers import LeCamAnchors, lecam_penalty, matching_aware_gradient_penalty, r1_penalty
from t2igan.text.encoder import sentence_of

METRIC_NAMES = (
    "d/real", "d/fake", "d/wrong", "d/total",
    "g/adv", "g/kl", "g/mode_seeking", "g/matching", "g/phrase_matching", "g/contrastive", "g/total",
    "d_score/real", "d_score/fake", "d_score/wrong", "d_score/rotated", "d_sign/real",
    "d/ma_gp", "d/r1", "d/lecam", "d/contrastive", "d/matcher_critic", "g/matcher_critic",
    "grad_norm/d", "grad_norm/g",
    "balance/augment_p", "balance/d_lr", "balance/g_lr",
)  # fmt: skip
# Where mode seeking measures how far two noises' samples of one caption lie apart.
MODE_SEEKING_SPACES = ("pixels", "thumbnails", "discriminator", "matcher", "matcher_residual")
THUMBNAIL_SIDE = 8  # mode seeking's "thumbnails": G's images average-pooled to 8x8
MATCHER_SPACES = {"matcher", "matcher_residual"}


@dataclass(frozen=True)
class Balance:
    """The knobs that keep D and G in balance: the `balance` config group's values.

    The defaults are StackGAN's recipe with every extra off (conf/balance/stackgan.yaml,
    which a test keeps equal to these). Weights of 0, an empty `diffaugment` and a null
    `ada_target` switch a mechanism off. See conf/balance/stackgan.yaml for one line on each.
    """

    loss: str = "bce"
    kl_weight: float = 2.0
    wrong_weight: float = 0.5
    rotated_colours: float = 0.0
    real_label: float = 1.0
    ema_decay: float = 0.999
    d_norm: str = "batch"
    minibatch_std: bool = False
    n_critic: int = 1
    ma_gp_weight: float = 0.0
    ma_gp_power: float = 6.0
    r1_gamma: float = 0.0
    r1_every: int = 16
    lecam_weight: float = 0.0
    instance_noise: float = 0.0
    diffaugment: tuple[str, ...] = ()
    augment_p: float = 1.0
    ada_target: float | None = None
    ada_kimg: float = 100.0
    ada_interval: int = 4
    auto_balance: bool = False
    auto_target_gap: float = 0.4
    auto_band: float = 0.15
    auto_factor: float = 1.2
    auto_range: float = 8.0
    mode_seeking_weight: float = 0.0
    mode_seeking_spaces: tuple[str, ...] = ("pixels",)
    mode_seeking_per_caption: bool = False
    matching_weight: float = 0.0
    matching_temperature: float = 0.1
    matching_augment: tuple[str, ...] = ()
    matching_floor: bool = False
    phrase_matching_weight: float = 0.0
    matcher_critic_weight: float = 0.0
    matcher_critic_channels: int = 64
    matcher_critic_augment: tuple[str, ...] = ("translation",)
    matcher_critic_phrases: bool = False
    contrastive_weight: float = 0.0
    contrastive_dim: int = 256
    contrastive_temperature: float = 0.1

    @classmethod
    def from_options(cls, options: dict) -> "Balance":
        """The options of the `balance` config group (lists become tuples); an unknown
        name is an error."""
        unknown = set(options) - {field.name for field in fields(cls)}
        if unknown:
            raise TypeError(f"unknown balance options {sorted(unknown)}")
        lists = ("diffaugment", "matching_augment", "matcher_critic_augment", "mode_seeking_spaces")
        tuples = {key: tuple(options[key]) for key in lists if key in options}
        return cls(**{**options, **tuples})

    @property
    def uses_matcher(self) -> bool:
        """Whether G trains against the dataset's frozen matcher (its matching term, its critic or
        mode seeking in its space)."""
        return (self.matching_weight > 0 or self.matcher_critic_weight > 0
                or (self.mode_seeking_weight > 0 and bool(MATCHER_SPACES & set(self.mode_seeking_spaces))))


class TextToImageGAN(keras.Model):
    """A conditional GAN trained with the matching-aware objective.

    Each `train_step` takes a batch `(real_images (B, S, S, 3) in [-1, 1], text_embeddings
    (B, T))`, pairs every image with the caption of its neighbour in the batch for the
    mismatched term (or, with `balance.rotated_colours`, with its own caption's negative where
    the batch carries one: `(..., negative_embeddings (B, T), has_negative (B,))`), and makes
    `balance.n_critic` discriminator updates followed by one generator update. G runs once per
    D update: the last D update sees the detached fakes that D then judges again for G's loss.
    Every D input -- real, fake, mismatched, in both updates -- passes through `_encode`, the
    one place augmentation and instance noise are applied. Metrics are running means that the
    logging callback resets each interval.

    `augment_probability` and D's learning rate are variables that controllers (ADA,
    automatic balancing) change between steps; `ada_signal` accumulates mean sign(D(real))
    for ADA independently of the logging interval. The EMA of G (decay `balance.ema_decay`,
    0 copies G) ramps up over the first steps, as in StyleGAN, so early samples are not stale.
    """

    def __init__(
        self,
        generator: keras.Model,
        generator_ema: keras.Model,
        discriminator: keras.Model,
        *,
        noise_dim: int = 100,
        balance: Balance = Balance(),
        matcher: Matcher | None = None,
        phrase_matcher: PhraseMatcher | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if balance.uses_matcher and matcher is None:
            raise ValueError("balance.matching_weight > 0, matcher_critic_weight > 0 or mode seeking "
                             "in a matcher space needs a matcher (t2igan.metrics.matcher.Matcher)")
        if balance.phrase_matching_weight > 0 and phrase_matcher is None:
            raise ValueError("balance.phrase_matching_weight > 0 needs a phrase matcher "
                             "(t2igan.metrics.phrase_matcher.PhraseMatcher)")
        self.generator = generator
        self.matcher = matcher  # frozen towers: it scores G's images, it does not learn here
        self.phrase_matcher = phrase_matcher  # the same, phrase by phrase
        self.generator_ema = generator_ema
        self.discriminator = discriminator
        # A second discriminator on the frozen matcher's features; trained by d_optimizer with D.
        # Its heads score phrases (if asked) where the text has them, as D does.
        critic_phrases = balance.matcher_critic_phrases and getattr(discriminator, "phrase_match", None) is not None
        self.matcher_critic = (MatcherCritic(matcher.images, text_dim=discriminator.text_dim,
                                             channels=balance.matcher_critic_channels, phrases=critic_phrases,
                                             name="matcher_critic")
                               if balance.matcher_critic_weight > 0 else None)  # fmt: skip
        self.noise_dim = noise_dim
        self.balance = balance
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.augment_seed_generator = keras.random.SeedGenerator(None if seed is None else seed + 1)
        self.augment_probability = keras.Variable(
            balance.augment_p, dtype="float32", trainable=False, name="augment_probability"
        )
        self.lecam_anchors = LeCamAnchors()
        self.ada_signal = keras.metrics.Mean(name="ada_signal")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        for ema_weight, weight in zip(generator_ema.weights, generator.weights):
            ema_weight.assign(weight)
        self._statistics_inputs = None  # see use_standing_statistics
        self._statistics_step = None

    def compile(self, g_optimizer: keras.optimizers.Optimizer, d_optimizer: keras.optimizers.Optimizer, **kwargs):
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        # Built now so that a checkpoint can be restored into them before the first step.
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self._d_variables())

    def _d_variables(self) -> list:
        """What d_optimizer trains: D's variables, then the matcher critic's heads' (if on)."""
        heads = self.matcher_critic.trainable_variables if self.matcher_critic is not None else []
        return self.discriminator.trainable_variables + heads

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def state_variables(self) -> list:
        """Training state outside the networks and optimizers: random and controller state."""
        return [self.seed_generator.state, self.augment_seed_generator.state,
                self.augment_probability, *self.lecam_anchors.variables]  # fmt: skip

    @property
    def step(self) -> int:
        """Training steps done (generator updates), restored with the optimizer state."""
        return int(self.g_optimizer.iterations.numpy())

    def call(self, inputs, training=False):
        noise, text_embeddings = inputs
        return self.generator([noise, text_embeddings], training=training)[0]

    def use_standing_statistics(self, noise, text_embeddings, *, batch_size: int) -> None:
        """Measure the EMA generator's BatchNorm statistics on these inputs before it generates.

        Training copies G's running statistics into the EMA generator, but they describe G's
        activations, not those of the averaged weights; BigGAN recomputes them for the averaged
        generator ("standing statistics"). `noise` (M, Z) and `text_embeddings` (M, T) are run
        through it `batch_size` at a time, as in training (each batch normalised by its own
        statistics), and the batches' statistics averaged; `refresh_standing_statistics` does
        it once per step. Training itself is unchanged: the next step copies G's again.
        """
        self._statistics_inputs = (np.asarray(noise, np.float32), np.asarray(text_embeddings, np.float32),
                                   batch_size)  # fmt: skip
        self._statistics_step = None

    def refresh_standing_statistics(self) -> None:
        """Set the EMA generator's BatchNorm statistics to their mean over the inputs of
        `use_standing_statistics`, unless done at this step already (or never asked for)."""
        if self._statistics_inputs is None or self._statistics_step == self.step:
            return
        noise, text_embeddings, batch_size = self._statistics_inputs
        norms = batch_norms(self.generator_ema)
        momenta = [norm.momentum for norm in norms]
        try:
            for count, start in enumerate(range(0, len(noise), batch_size), start=1):
                for norm in norms:  # running statistics = mean of the batches' so far
                    norm.momentum = (count - 1) / count
                stop = start + batch_size
                self.generator_ema([noise[start:stop], text_embeddings[start:stop]], training=True)
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum
        self._statistics_step = self.step

    def generate(self, noise, text_embeddings, *, use_ema: bool = True):
        """(B, noise_dim) noise and (B, T) embeddings -> (B, S, S, 3) images in [-1, 1]."""
        generator = self.generator_ema if use_ema else self.generator
        return generator([noise, text_embeddings], training=False)[0]

    def _encode(self, images):
        """D's image features of `images`, augmented and noised first. The only way D sees
        images in training, so real, fake and mismatched inputs are all treated alike."""
        images = augment_images(
            images, policy=self.balance.diffaugment, probability=self.augment_probability,
            seed_generator=self.augment_seed_generator,
        )  # fmt: skip
        images = instance_noise(images, self.balance.instance_noise, self.augment_seed_generator)
        return self.discriminator.encode(images, training=True)

    def _judge(self, features, *text_embeddings):
        """D's logits for encoded images against each embedding batch."""
        return [self.discriminator.judge(features, text, training=True) for text in text_embeddings]

    def _critic(self, images, text_embeddings):
        (logits,) = self._judge(self._encode(images), text_embeddings)
        return logits

    def _matcher_critic(self, images, *text_embeddings):
        """The matcher critic's logits for `images` against each embedding batch; its inputs
        are shifted (balance.matcher_critic_augment), as G's images are for the matcher."""
        images = augment_images(images, policy=self.balance.matcher_critic_augment, probability=1.0,
                                seed_generator=self.augment_seed_generator)  # fmt: skip
        features = self.matcher_critic.features(images, training=True)
        return [self.matcher_critic.judge(features, text, training=True) for text in text_embeddings]

    def _contrastive(self, features, text_embeddings):
        """XMC-GAN's sentence-image term through D's contrastive heads: each image's features
        should sit nearest its own caption among the batch's (weighted)."""
        image_vectors, text_vectors = self.discriminator.contrastive(features, sentence_of(text_embeddings))
        return self.balance.contrastive_weight * losses.matching_loss(
            image_vectors, text_vectors, temperature=self.balance.contrastive_temperature
        )

    def _mismatched(self, text_embeddings, negatives):
        """(B, T) captions for D's mismatched pairs, and (B,) float32 1 where a pair is the
        image's own caption with its colours rotated: the neighbour's caption in the batch,
        replaced by the caption's negative (`negatives`: the batch's negative embeddings and
        which captions have one) with probability `balance.rotated_colours` where it has one."""
        neighbours = ops.roll(text_embeddings, shift=1, axis=0)
        if not negatives or self.balance.rotated_colours <= 0:
            return neighbours, ops.zeros(ops.shape(text_embeddings)[:1], "float32")
        negative_embeddings, has_negative = negatives
        draw = keras.random.uniform(ops.shape(has_negative), seed=self.seed_generator)
        rotated = ops.logical_and(ops.convert_to_tensor(has_negative, "bool"),
                                  draw < self.balance.rotated_colours)  # fmt: skip
        rotated_rows = ops.reshape(rotated, (-1,) + (1,) * (len(text_embeddings.shape) - 1))
        mismatched = ops.where(rotated_rows, ops.convert_to_tensor(negative_embeddings), neighbours)
        return mismatched, ops.cast(rotated, "float32")

    def train_step(self, data):
        real_images, text_embeddings = (ops.convert_to_tensor(x) for x in data[:2])
        batch_size = ops.shape(real_images)[0]
        mismatched_embeddings, rotated = self._mismatched(text_embeddings, data[2:])

        earlier_d_values = []
        for _ in range(self.balance.n_critic - 1):
            noise = keras.random.normal((batch_size, self.noise_dim), seed=self.seed_generator)
            fake_embeddings = self._fake_captions(text_embeddings)
            fake_images = self.generator([noise, fake_embeddings], training=True)[0]
            earlier_d_values.append(self._discriminator_update(
                real_images, ops.stop_gradient(fake_images), text_embeddings,
                mismatched_embeddings, fake_embeddings, rotated,
            ))  # fmt: skip
        noise = keras.random.normal((batch_size, self.noise_dim), seed=self.seed_generator)
        fake_embeddings = self._fake_captions(text_embeddings)
        with tf.GradientTape() as g_tape:
            fake_images, mu, log_sigma = self.generator([noise, fake_embeddings], training=True)
            with g_tape.stop_recording():
                d_values = self._discriminator_update(
                    real_images, ops.stop_gradient(fake_images), text_embeddings,
                    mismatched_embeddings, fake_embeddings, rotated,
                )  # fmt: skip
            g_terms = self._generator_terms(fake_images, fake_embeddings, noise, mu, log_sigma, real_images)
        g_variables = self.generator.trainable_variables
        g_grads = g_tape.gradient(g_terms["g/total"], g_variables)
        self.g_optimizer.apply(g_grads, g_variables)
        self._update_ema()

        # D's numbers are means over its n_critic updates (lazy R1, for one, is due in only some).
        d_values = {name: ops.mean(ops.stack([ops.cast(values[name], "float32")
                                              for values in (*earlier_d_values, d_values)]))
                    for name in d_values}  # fmt: skip
        values = {**d_values, **g_terms}
        values["grad_norm/g"] = tf.linalg.global_norm(g_grads)
        values["balance/augment_p"] = self.augment_probability
        values["balance/d_lr"] = self.d_optimizer.learning_rate
        values["balance/g_lr"] = self.g_optimizer.learning_rate
        # d_score/rotated: a mean over the interval's rotated pairs (steps without any add nothing).
        weights = {"d_score/rotated": ops.sum(rotated)}
        for name, value in values.items():
            self.trackers[name].update_state(value, sample_weight=weights.get(name))
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def _generator_terms(self, fake_images, fake_embeddings, noise, mu, log_sigma, real_images) -> dict:
        """G's loss terms: fool D, the KL term, and (if on) mode seeking between the two halves,
        the caption-matching term through D's contrastive heads and the frozen matcher's."""
        balance = self.balance
        fake_features = self._encode(fake_images)
        (fake_logits,) = self._judge(fake_features, fake_embeddings)
        terms = losses.generator_loss(fake_logits, mu, log_sigma, kind=balance.loss, kl_weight=balance.kl_weight)
        terms["g/matcher_critic"] = ops.zeros((), "float32")
        if self.matcher_critic is not None:
            (critic_logits,) = self._matcher_critic(fake_images, fake_embeddings)
            terms["g/matcher_critic"] = losses.generator_loss(critic_logits, mu, log_sigma, kind=balance.loss,
                                                              kl_weight=0.0)["g/adv"]  # fmt: skip
            terms["g/total"] += balance.matcher_critic_weight * terms["g/matcher_critic"]
        terms["g/contrastive"] = ops.zeros((), "float32")
        if balance.contrastive_weight > 0:
            terms["g/contrastive"] = self._contrastive(fake_features, fake_embeddings)
            terms["g/total"] += terms["g/contrastive"]
        terms["g/mode_seeking"] = ops.zeros((), "float32")
        if balance.mode_seeking_weight > 0:
            noise_a, noise_b = ops.split(noise, 2, axis=0)
            mode_seeking = (losses.per_caption_mode_seeking_loss if balance.mode_seeking_per_caption
                            else losses.mode_seeking_loss)  # fmt: skip
            for samples in self._mode_seeking_samples(fake_images, fake_features, fake_embeddings):
                samples_a, samples_b = ops.split(samples, 2, axis=0)
                terms["g/mode_seeking"] += mode_seeking(samples_a, samples_b, noise_a, noise_b)
            terms["g/total"] += balance.mode_seeking_weight * terms["g/mode_seeking"]
        terms["g/matching"] = ops.zeros((), "float32")
        if balance.matching_weight > 0:
            terms["g/matching"] = ops.mean(self._matching_losses(fake_images, fake_embeddings, real_images))
            terms["g/total"] += balance.matching_weight * terms["g/matching"]
        terms["g/phrase_matching"] = ops.zeros((), "float32")
        if balance.phrase_matching_weight > 0:
            terms["g/phrase_matching"] = ops.mean(self._phrase_matching_losses(fake_images, fake_embeddings))
            terms["g/total"] += balance.phrase_matching_weight * terms["g/phrase_matching"]
        return terms

    def _phrase_matching_losses(self, fake_images, fake_embeddings):
        """(B,) float32: AttnGAN's word-level DAMSM term with phrases for words. Each of G's
        images, shifted as for the sentence matcher (balance.matching_augment), should score its
        own caption's phrases above the batch's other captions' in the frozen phrase matcher,
        where each phrase is scored against the region it finds (so a colour on the wrong part
        does not count), at balance.matching_temperature."""
        images = augment_images(fake_images, policy=self.balance.matching_augment, probability=1.0,
                                seed_generator=self.augment_seed_generator)  # fmt: skip
        scores = self.phrase_matcher.scores(self.phrase_matcher.regions(images), fake_embeddings)
        return losses.contrastive_losses(scores, same_captions(sentence_of(fake_embeddings)),
                                         temperature=self.balance.matching_temperature)  # fmt: skip

    def _matching_losses(self, fake_images, fake_embeddings, real_images):
        """(B,) float32: how far the frozen matcher places each of G's images from its own caption
        among the batch's (`losses.matching_losses`). G's images are augmented first (if asked) so
        that G cannot satisfy the matcher with a fixed pattern at a fixed place instead of the
        caption's attributes. With `balance.matching_floor`, each counts only what it lies past
        the batch's real image of the same caption, seen the same way: matching a caption better
        than real birds do means fixing what the caption leaves open (against the other captions,
        a bird with no unnamed wing colour another caption names scores best)."""
        balance = self.balance
        caption_embeddings = self.matcher.texts(sentence_of(fake_embeddings), training=False)

        def per_image(images):
            images = augment_images(images, policy=balance.matching_augment, probability=1.0,
                                    seed_generator=self.augment_seed_generator)  # fmt: skip
            return losses.matching_losses(self.matcher.images(images, training=False), caption_embeddings,
                                          temperature=balance.matching_temperature)  # fmt: skip

        fake_losses = per_image(fake_images)
        if not balance.matching_floor:
            return fake_losses
        real_losses = ops.stop_gradient(per_image(self._fake_captions(real_images)))
        return ops.maximum(fake_losses - real_losses, 0.0)

    def _mode_seeking_samples(self, fake_images, fake_features, fake_embeddings) -> list:
        """What mode seeking spreads apart, one (B, ...) tensor per balance.mode_seeking_spaces:
        G's images, the same average-pooled to THUMBNAIL_SIDE x THUMBNAIL_SIDE ("thumbnails":
        only changes in layout, size and large areas count, not texture that jitters with the
        noise), or their features in D's space (as D sees them, augmented if it is), the
        frozen matcher's, or the matcher's less its component along the caption's own matcher
        embedding ("matcher_residual": what the caption leaves open). Features are scaled to unit
        root-mean-square entry per sample, so that distances read on the pixels' scale."""
        samples = []
        for space in self.balance.mode_seeking_spaces:
            if space == "pixels":
                samples.append(fake_images)
                continue
            if space == "thumbnails":
                pool = max(1, ops.shape(fake_images)[1] // THUMBNAIL_SIDE)
                samples.append(ops.average_pool(ops.cast(fake_images, "float32"), pool, strides=pool))
                continue
            if space == "discriminator":
                features = ops.reshape(ops.cast(fake_features, "float32"), (ops.shape(fake_features)[0], -1))
            elif space in MATCHER_SPACES:
                features = ops.cast(self.matcher.images(fake_images, training=False), "float32")
                if space == "matcher_residual":
                    caption = ops.cast(self.matcher.texts(sentence_of(fake_embeddings), training=False), "float32")
                    features -= ops.sum(features * caption, axis=1, keepdims=True) * caption
            else:
                raise ValueError(f"unknown mode seeking space {space!r}; known: {MODE_SEEKING_SPACES}")
            samples.append(features * ops.rsqrt(ops.mean(ops.square(features), axis=1, keepdims=True) + 1e-8))
        return samples

    def _fake_captions(self, text_embeddings):
        """The captions G draws for: the batch's own, or with mode seeking its first half twice,
        so each of those captions gets two images from different noise (B must be even). Given
        the real images, the same rows give each fake its caption's real image."""
        if self.balance.mode_seeking_weight <= 0:
            return text_embeddings
        first_half = text_embeddings[: ops.shape(text_embeddings)[0] // 2]
        return ops.concatenate([first_half, first_half], axis=0)

    def _discriminator_update(self, real_images, fake_images, text_embeddings, mismatched_embeddings,
                              fake_embeddings, rotated):
        """One D update; returns its loss terms, scores and gradient norm by metric name.
        `rotated` (B,) marks the mismatched pairs whose caption is the image's own with its
        colours rotated: `d_score/rotated` is D's mean score on them (0 when there are none)."""
        balance = self.balance
        d_variables = self._d_variables()
        with tf.GradientTape() as d_tape:
            real_features = self._encode(real_images)
            real_logits, wrong_logits = self._judge(real_features, text_embeddings, mismatched_embeddings)
            (fake_logits,) = self._judge(self._encode(fake_images), fake_embeddings)
            d_terms = losses.discriminator_loss(
                real_logits, fake_logits, wrong_logits, kind=balance.loss,
                wrong_weight=balance.wrong_weight, real_label=balance.real_label,
            )  # fmt: skip
            d_terms.update(self._regularizers(real_images, text_embeddings, real_logits, fake_logits))
            d_terms["d/contrastive"] = ops.zeros((), "float32")
            if balance.contrastive_weight > 0:  # D learns which caption is whose from real pairs only
                d_terms["d/contrastive"] = self._contrastive(real_features, text_embeddings)
            total = d_terms["d/total"]
            d_terms["d/matcher_critic"] = ops.zeros((), "float32")
            if self.matcher_critic is not None:  # the same objective, on the frozen matcher's features
                critic_real, critic_wrong = self._matcher_critic(real_images, text_embeddings, mismatched_embeddings)
                (critic_fake,) = self._matcher_critic(fake_images, fake_embeddings)
                d_terms["d/matcher_critic"] = losses.discriminator_loss(
                    critic_real, critic_fake, critic_wrong, kind=balance.loss,
                    wrong_weight=balance.wrong_weight, real_label=balance.real_label,
                )["d/total"]  # fmt: skip
                total = total + balance.matcher_critic_weight * d_terms["d/matcher_critic"]
            total = total + d_terms["d/ma_gp"] + d_terms["d/r1"] + d_terms["d/lecam"] + d_terms["d/contrastive"]
        d_grads = d_tape.gradient(total, d_variables)
        self.d_optimizer.apply(d_grads, d_variables)
        real_signs = ops.mean(ops.sign(ops.cast(real_logits, "float32")))
        wrong_scores = ops.reshape(ops.sigmoid(ops.cast(wrong_logits, "float32")), (-1,))  # (B,)
        self.ada_signal.update_state(real_signs)
        return {
            **d_terms,
            "d_score/real": ops.mean(ops.sigmoid(real_logits)),
            "d_score/fake": ops.mean(ops.sigmoid(fake_logits)),
            "d_score/wrong": ops.mean(ops.sigmoid(wrong_logits)),
            # The mean over the rotated pairs; train_step weighs it by their count.
            "d_score/rotated": ops.sum(wrong_scores * rotated) / ops.maximum(ops.sum(rotated), 1.0),
            "d_sign/real": real_signs,
            "grad_norm/d": tf.linalg.global_norm(d_grads),
        }

    def _regularizers(self, real_images, text_embeddings, real_logits, fake_logits) -> dict:
        """The weighted D regularisers that are switched on; 0 for the others."""
        balance = self.balance
        zero = ops.zeros((), "float32")
        terms = {"d/ma_gp": zero, "d/r1": zero, "d/lecam": zero}
        if balance.ma_gp_weight > 0:
            terms["d/ma_gp"] = matching_aware_gradient_penalty(
                self._critic, real_images, text_embeddings,
                weight=balance.ma_gp_weight, power=balance.ma_gp_power,
                text_scale=self.discriminator.text_input_scale,
            )  # fmt: skip
        if balance.r1_gamma > 0:
            # Lazy R1 (StyleGAN2): every r1_every-th D update, scaled by r1_every.
            due = ops.equal(ops.mod(self.d_optimizer.iterations, balance.r1_every), 0)
            terms["d/r1"] = ops.cond(
                due,
                lambda: balance.r1_every * r1_penalty(
                    self._critic, real_images, text_embeddings, gamma=balance.r1_gamma
                ),
                lambda: zero,
            )  # fmt: skip
        if balance.lecam_weight > 0:
            self.lecam_anchors.update(real_logits, fake_logits)
            terms["d/lecam"] = balance.lecam_weight * lecam_penalty(
                real_logits, fake_logits, self.lecam_anchors.ema_real, self.lecam_anchors.ema_fake
            )
        return terms

    def _update_ema(self):
        step = ops.cast(self.g_optimizer.iterations, "float32")
        decay = ops.minimum(self.balance.ema_decay, (1.0 + step) / (10.0 + step))
        for ema_weight, weight in zip(self.generator_ema.trainable_weights, self.generator.trainable_weights):
            ema_weight.assign(decay * ema_weight + (1.0 - decay) * weight)
        # BatchNorm statistics are copied, not averaged: they describe G's current activations
        # (refresh_standing_statistics measures the EMA generator's own before it generates).
        for ema_weight, weight in zip(self.generator_ema.non_trainable_weights, self.generator.non_trainable_weights):
            ema_weight.assign(weight)


def batch_norms(model: keras.Model) -> list:
    """Every BatchNormalization layer in `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(batch_norms(layer))
    return found


def build_gan(
    *,
    architecture: str,
    image_size: int,
    noise_dim: int,
    condition_dim: int,
    text_dim: int,
    width: float,
    generator_channels: int,
    discriminator_channels: int,
    dropout: float,
    augment: list[str],
    g_lr: float,
    d_lr: float,
    beta_1: float,
    beta_2: float,
    seed: int | None = None,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    matcher: Matcher | None = None,
    phrase_matcher: PhraseMatcher | None = None,
    phrase_tokens: int = 0,
    phrase_key_dim: int = 64,
    phrase_max_size: int | None = None,
    project_text: bool = True,
    **balance,
) -> TextToImageGAN:
    """A compiled GAN from the `model`, `balance` and `optim` groups' plain values.

    `balance` holds the fields of `Balance` (unknown names are an error); `matcher` (the frozen
    image and text towers of t2igan.metrics.matcher) is needed when `Balance.uses_matcher`,
    `phrase_matcher` (t2igan.metrics.phrase_matcher) when `balance.phrase_matching_weight` > 0.
    Learning rates and betas configure one Adam optimizer per network; `jit_compile` and
    `steps_per_execution` go to `keras.Model.compile`.
    """
    balance = Balance.from_options(balance)
    from t2igan.models import make_discriminator, make_generator

    generator_args = dict(
        text_dim=text_dim, noise_dim=noise_dim, condition_dim=condition_dim,
        image_size=image_size, generator_channels=generator_channels, width=width,
        phrase_tokens=phrase_tokens, phrase_key_dim=phrase_key_dim, phrase_max_size=phrase_max_size,
        project_text=project_text,
    )  # fmt: skip
    gan = TextToImageGAN(
        make_generator(architecture, **generator_args, seed=seed),
        make_generator(architecture, **generator_args, name="generator_ema"),
        make_discriminator(
            architecture, text_dim=text_dim, condition_dim=condition_dim, image_size=image_size,
            discriminator_channels=discriminator_channels, width=width, dropout=dropout,
            augment=tuple(augment), norm=balance.d_norm, minibatch_std=balance.minibatch_std,
            contrastive_dim=balance.contrastive_dim if balance.contrastive_weight > 0 else 0,
            phrase_tokens=phrase_tokens, seed=seed,
        ),  # fmt: skip
        noise_dim=noise_dim,
        balance=balance,
        matcher=matcher,
        phrase_matcher=phrase_matcher,
        seed=seed,
    )
    gan.compile(
        g_optimizer=keras.optimizers.Adam(g_lr, beta_1=beta_1, beta_2=beta_2, name="g_adam"),
        d_optimizer=keras.optimizers.Adam(d_lr, beta_1=beta_1, beta_2=beta_2, name="d_adam"),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return gan
