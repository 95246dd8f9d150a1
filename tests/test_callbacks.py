"""The callbacks that evaluate, steer and stop a run, on a tiny GAN with stand-in controllers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from t2igan.callbacks import BalanceControl, CollapseWatch, Evaluation, MetricLogger
from t2igan.controllers import AdaController, AutoBalance, LinearDecay
from t2igan.gan import build_gan

TINY = dict(
    architecture="stackgan", image_size=32, noise_dim=8, condition_dim=4, text_dim=6,
    width=0.0625, generator_channels=1024, discriminator_channels=64, dropout=0.0, augment=[],
    g_lr=1e-3, d_lr=1e-3, beta_1=0.5, beta_2=0.999, d_norm="none",
)  # fmt: skip


class RecordingTracker:
    run_id, resumed = None, False

    def __init__(self):
        self.metrics, self.tags = [], {}

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags):
        self.tags.update(tags)


def fit(gan, steps, callbacks):
    rng = np.random.default_rng(0)
    data = (rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32"), rng.standard_normal((4, 6)).astype("float32"))
    gan.fit(tf.data.Dataset.from_tensors(data).repeat(), epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
            callbacks=callbacks)  # fmt: skip


def test_evaluation_runs_every_n_steps_and_at_the_end_and_feeds_the_objective():
    gan, tracker = build_gan(**TINY, seed=0), RecordingTracker()
    logger = MetricLogger(tracker, every=2, batch_size=4)
    calls = []

    def evaluate(generate):
        images = np.asarray(generate(np.zeros((1, 8), "float32"), np.zeros((1, 6), "float32")))
        calls.append(images.shape)
        return {"eval/attr_acc": 0.1 * len(calls)}

    fit(gan, 5, [logger, Evaluation(tracker, 2, evaluate, logger)])
    evaluated_at = [step for step, metrics in tracker.metrics if "eval/attr_acc" in metrics]
    assert evaluated_at == [2, 4, 5]
    assert calls == [(1, 32, 32, 3)] * 3
    assert logger.latest["eval/attr_acc"] == 0.1 * 3


class FiresOnSecondInterval:
    def __init__(self):
        self.seen = []

    def update(self, step, signals):
        self.seen.append((step, sorted(signals)))
        return f"step {step}: synthetic collapse" if len(self.seen) == 2 else None


def test_collapse_watch_stops_training_and_records_the_reason():
    gan, tracker = build_gan(**TINY, seed=0), RecordingTracker()
    logger = MetricLogger(tracker, every=2, batch_size=4)
    detector = FiresOnSecondInterval()
    watch = CollapseWatch(detector, tracker, logger, evaluation=None)
    fit(gan, 10, [logger, watch])
    assert gan.step == 4  # stopped at the second logged interval, not at 10
    assert watch.reason == "step 4: synthetic collapse"
    assert tracker.tags == {"collapse_reason": "step 4: synthetic collapse"}
    assert "d_score/real" in detector.seen[0][1]  # the interval means reach the detector


class RecordingAda:
    """Stands in for AdaController: records the signals, returns 0.1 more each time."""

    def __init__(self):
        self.p, self.signals = 0.0, []

    def update(self, real_sign_mean):
        self.signals.append(real_sign_mean)
        return 0.1 * len(self.signals)


def test_balance_control_feeds_ada_the_real_sign_mean_every_interval_and_sets_p():
    gan = build_gan(**TINY, seed=0, diffaugment=("color",), augment_p=0.0)
    ada = RecordingAda()
    fit(gan, 8, [BalanceControl(ada=ada, ada_interval=4)])
    assert len(ada.signals) == 2  # steps 4 and 8
    assert all(-1.0 <= signal <= 1.0 for signal in ada.signals)
    assert float(gan.augment_probability.numpy()) == np.float32(0.2)

    gan.augment_probability.assign(0.7)  # as restored from a checkpoint
    resumed = AdaController(batch_size=4, interval=4)
    fit(gan, 1, [BalanceControl(ada=resumed, ada_interval=4)])
    assert resumed.p == np.float32(0.7)  # the controller starts from the variable


class RecordsLearningRates(keras.callbacks.Callback):
    """The rates each update runs with (BalanceControl, listed before it, has set them)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.extend((float(self.model.g_optimizer.learning_rate.numpy()),
                           float(self.model.d_optimizer.learning_rate.numpy())))  # fmt: skip


def test_balance_control_decays_both_rates_and_keeps_auto_balance_scale_across_a_resume():
    gan = build_gan(**{**TINY, "g_lr": 1e-3, "d_lr": 4e-3}, seed=0)
    tracker = RecordingTracker()
    logger = MetricLogger(tracker, every=2, batch_size=4)
    auto = AutoBalance(target_gap=5.0, band=0.0, factor=2.0, low=0.125, high=16.0)  # gap always below: D x2
    rates = RecordsLearningRates()
    control = dict(decay=LinearDecay(steps=6, start=0.5), base_g_lr=1e-3, base_d_lr=4e-3, logger=logger)
    fit(gan, 4, [logger, BalanceControl(auto=auto, **control), rates])
    # Updates from steps 0-3 run at the full rates (the decay starts at step 3: factor 1, then
    # 2/3 and 1/3); D's scale doubles each time the logger logs (steps 2 and 4).
    assert rates.rates == pytest.approx([1e-3, 4e-3, 1e-3, 4e-3, 1e-3, 8e-3, 1e-3, 8e-3])  # (G, D) per update
    assert auto.value == pytest.approx(4.0)  # read back from the float32 rate at the start

    resumed = AutoBalance(target_gap=5.0, band=0.0, factor=2.0, low=0.125, high=16.0)
    rates = RecordsLearningRates()
    fit(gan, 2, [logger, BalanceControl(auto=resumed, **control), rates])
    assert resumed.value == pytest.approx(8.0)  # it started from the 4 the optimizer's rate held, not from 1
    assert rates.rates == pytest.approx([1e-3 * 2 / 3, 4e-3 * 4 * 2 / 3, 1e-3 / 3, 4e-3 * 4 / 3])
