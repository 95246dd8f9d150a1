"""Controllers that adapt a run between training steps, from the numbers the step reports.

Each is a small Python object with `update(signal)`, called by a Keras callback once per
interval with that interval's means (the names the training step logs: `d_score/real`,
`d_score/fake`, `d_score/wrong` are mean sigmoids of D's logits, `d/total`, `g/total`,
`grad_norm/d`, `grad_norm/g`, and `eval/diversity` when an evaluation ran). They never run
inside the traced step: the callback writes their output into a variable the step reads
(an augmentation probability, a learning-rate scale) or stops training.
"""

import math


def _finite(value) -> bool:
    return math.isfinite(float(value))


class AdaController:
    """StyleGAN2-ADA's augmentation probability p (Karras et al. 2020, `training_loop.py`).

    Every `interval` steps, with r_t the mean of sign(D's logits on real pairs) over those
    steps (+1: D calls them real, so r_t near 1 means D is overfitting the training images):
        p += sign(r_t - target) * batch_size * interval / speed_images, clipped to [0, 1].
    `speed_images` is how many real images p takes to go from 0 to 1 (ADA: 500k, `ada_kimg`).
    ADA clamps only at 0; the upper clip at 1 keeps p a probability.

    batch_size: images per step; interval: steps between updates (ADA: 4); target: ADA's
    0.6; initial: p at the start (0 = no augmentation; a resumed run passes its saved p).
    """

    def __init__(
        self,
        *,
        batch_size: int,
        interval: int,
        target: float = 0.6,
        speed_images: int = 500_000,
        initial: float = 0.0,
    ):
        if batch_size <= 0 or interval <= 0 or speed_images <= 0:
            raise ValueError(
                f"ADA needs positive batch_size, interval and speed_images, got "
                f"{batch_size}, {interval}, {speed_images}"
            )
        if not -1.0 <= target <= 1.0:
            raise ValueError(f"ADA target is a mean of signs, in [-1, 1]; got {target}")
        if not 0.0 <= initial <= 1.0:
            raise ValueError(f"ADA initial probability must be in [0, 1], got {initial}")
        self.target = target
        self.step_size = batch_size * interval / speed_images
        self.p = float(initial)

    def update(self, real_sign_mean: float) -> float:
        """Moves p by one step towards keeping r_t at the target; returns the new p.

        A non-finite r_t (a diverged run) leaves p where it is; `CollapseDetector` reports it.
        """
        if not _finite(real_sign_mean):
            return self.p
        direction = (
            math.copysign(1.0, real_sign_mean - self.target)
            if real_sign_mean != self.target
            else 0.0
        )
        self.p = min(1.0, max(0.0, self.p + direction * self.step_size))
        return self.p


class AutoBalance:
    """Keeps D's lead over G inside a band by scaling one knob that strengthens D.

    The knob is a positive multiplier, e.g. D's learning rate = base rate * `value`. Every
    interval, the gap = signals[real_key] - signals[fake_key] (by default D's mean sigmoid
    score on real pairs minus on fake pairs, in [-1, 1]) is compared with the band
    [target_gap - band, target_gap + band]:
        gap above the band (D winning: real near 1, fake near 0)  -> value /= factor
        gap below the band (G winning: D cannot tell them apart)  -> value *= factor
        inside the band                                            -> unchanged
    and `value` is clipped to [low, high]. The dead band and the small multiplicative step
    keep it from oscillating on interval-to-interval noise; a steady push takes
    log(high / low) / log(factor) intervals to cross the whole range (about 23 by default).
    For a knob that strengthens G instead, use 1 / value.

    The default band, gap 0.25 to 0.55, holds a D that clearly separates real from fake
    (e.g. 0.7 vs 0.3) without saturating (0.95 vs 0.05 is a D that starves G of gradient).
    """

    def __init__(
        self,
        *,
        target_gap: float = 0.4,
        band: float = 0.15,
        factor: float = 1.2,
        low: float = 0.125,
        high: float = 8.0,
        initial: float = 1.0,
        real_key: str = "d_score/real",
        fake_key: str = "d_score/fake",
    ):
        if factor <= 1.0:
            raise ValueError(f"AutoBalance factor must be > 1, got {factor}")
        if band < 0.0:
            raise ValueError(f"AutoBalance band must be >= 0, got {band}")
        if not 0.0 < low <= initial <= high:
            raise ValueError(
                f"AutoBalance needs 0 < low <= initial <= high, got {low}, {initial}, {high}"
            )
        self.target_gap = target_gap
        self.band = band
        self.factor = factor
        self.low = low
        self.high = high
        self.real_key = real_key
        self.fake_key = fake_key
        self.value = float(initial)

    def update(self, signals: dict[str, float]) -> float:
        """Moves `value` one factor against the side that is winning; returns the new value.

        A missing key is an error (wrong signal names); a non-finite gap leaves `value` as is.
        """
        missing = [key for key in (self.real_key, self.fake_key) if key not in signals]
        if missing:
            raise KeyError(f"AutoBalance needs signals {missing}; got {sorted(signals)}")
        gap = float(signals[self.real_key]) - float(signals[self.fake_key])
        if not math.isfinite(gap):
            return self.value
        if gap > self.target_gap + self.band:
            self.value /= self.factor
        elif gap < self.target_gap - self.band:
            self.value *= self.factor
        self.value = min(self.high, max(self.low, self.value))
        return self.value


class LinearDecay:
    """pix2pix / CycleGAN's learning-rate schedule, as a factor on the base rates: 1 for the
    updates before `start` * `steps`, then falling linearly towards 0 at step `steps`.

    `factor(step)` is for the update that takes the run from `step` to `step + 1`, so the last
    one (step `steps` - 1) still moves, at 1 / (the decaying updates) of the base rate.
    `steps` is the run's length (trainer.steps): a resumed run given more steps recomputes the
    schedule for its new length.
    """

    def __init__(self, *, steps: int, start: float):
        if steps <= 0 or not 0.0 <= start < 1.0:
            raise ValueError(f"LinearDecay needs steps > 0 and 0 <= start < 1, got {steps}, {start}")
        self.steps = steps
        self.first = int(start * steps)

    def __call__(self, step: int) -> float:
        if step < self.first:
            return 1.0
        return max(0.0, (self.steps - step) / (self.steps - self.first))


class CollapseDetector:
    """Decides that a run has failed, from its interval signals, and says why in one line.

    Fires on the first of:
    - any non-finite signal (at once);
    - the discriminator wins: d_score/real > `real_score_above` and d_score/fake <
      `fake_score_below` for `patience_intervals` consecutive intervals (D is certain about
      everything, so G's gradient vanishes);
    - the discriminator is fooled: d_score/fake > `fooled_score_above` for
      `patience_intervals` consecutive intervals (D calls G's images real with confidence, far
      past the 0.5 of a balanced game: D has stopped learning, e.g. dead units or a learning
      rate of 0, and G is no longer being taught anything);
    - diversity collapse: eval/diversity < `diversity_below` for `diversity_patience`
      consecutive evaluations (mode collapse: every caption gets the same image).
    A signal absent from an update neither extends nor breaks its streak, so evaluations that
    run only every few intervals count as consecutive evaluations.

    Once fired, `update` keeps returning the same reason, also held in `reason`.
    """

    def __init__(
        self,
        *,
        patience_intervals: int = 5,
        real_score_above: float = 0.99,
        fake_score_below: float = 0.01,
        fooled_score_above: float = 0.9,
        diversity_below: float = 0.1,
        diversity_patience: int = 3,
    ):
        if patience_intervals < 1 or diversity_patience < 1:
            raise ValueError(
                f"patience must be >= 1, got {patience_intervals} intervals, "
                f"{diversity_patience} evaluations"
            )
        self.patience_intervals = patience_intervals
        self.real_score_above = real_score_above
        self.fake_score_below = fake_score_below
        self.fooled_score_above = fooled_score_above
        self.diversity_below = diversity_below
        self.diversity_patience = diversity_patience
        self.streaks = {"discriminator wins": 0, "discriminator fooled": 0, "diversity collapse": 0}
        self.reason: str | None = None

    def update(self, step: int, signals: dict[str, float]) -> str | None:
        """The reason the run failed at or before `step` (training steps), or None."""
        if self.reason is None:
            self.reason = self._check(step, {name: float(value) for name, value in signals.items()})
        return self.reason

    def _check(self, step: int, signals: dict[str, float]) -> str | None:
        for name, value in signals.items():
            if not math.isfinite(value):
                return f"step {step}: non-finite {name} = {value} (diverged)"
        real, fake = signals.get("d_score/real"), signals.get("d_score/fake")
        if real is not None and fake is not None:
            wins = real > self.real_score_above and fake < self.fake_score_below
            if self._extend("discriminator wins", wins, self.patience_intervals):
                return (
                    f"step {step}: discriminator wins: d_score/real {real:.3f} > "
                    f"{self.real_score_above} and d_score/fake {fake:.3g} < "
                    f"{self.fake_score_below} for {self.patience_intervals} intervals"
                )
        if fake is not None:
            fooled = fake > self.fooled_score_above
            if self._extend("discriminator fooled", fooled, self.patience_intervals):
                return (
                    f"step {step}: discriminator fooled: d_score/fake {fake:.3f} > "
                    f"{self.fooled_score_above} for {self.patience_intervals} intervals "
                    "(D has stopped learning)"
                )
        diversity = signals.get("eval/diversity")
        if diversity is not None:
            collapsed = diversity < self.diversity_below
            if self._extend("diversity collapse", collapsed, self.diversity_patience):
                return (
                    f"step {step}: diversity collapse: eval/diversity {diversity:.3g} < "
                    f"{self.diversity_below} for {self.diversity_patience} evaluations "
                    "(mode collapse)"
                )
        return None

    def _extend(self, condition: str, holds: bool, patience: int) -> bool:
        self.streaks[condition] = self.streaks[condition] + 1 if holds else 0
        return self.streaks[condition] >= patience
