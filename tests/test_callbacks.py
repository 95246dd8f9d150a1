"""The callbacks that evaluate, steer and stop a run, on a tiny GAN with stand-in controllers."""

import numpy as np
import tensorflow as tf

from t2igan.callbacks import BalanceControl, CollapseWatch, Evaluation, MetricLogger
from t2igan.controllers import AdaController
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
