import math

import numpy as np
import pytest

from t2igan.controllers import AdaController, AutoBalance, CollapseDetector, LinearDecay

# --- ADA ---------------------------------------------------------------------------------------


def test_ada_step_is_images_per_interval_over_speed():
    ada = AdaController(batch_size=32, interval=4, speed_images=500_000)
    assert ada.step_size == pytest.approx(128 / 500_000)
    assert ada.update(0.9) == pytest.approx(128 / 500_000)  # r_t above target: more augmentation
    assert ada.update(0.9) == pytest.approx(2 * 128 / 500_000)
    assert ada.update(0.1) == pytest.approx(128 / 500_000)  # below: less
    assert ada.update(0.6) == pytest.approx(128 / 500_000)  # exactly on target: sign 0


def test_ada_moves_by_sign_not_by_distance_and_is_clipped_to_a_probability():
    ada = AdaController(batch_size=10, interval=10, speed_images=1_000, initial=0.5)
    assert ada.update(0.61) == pytest.approx(0.6)
    assert ada.update(1.0) == pytest.approx(0.7)
    for _ in range(10):
        ada.update(1.0)
    assert ada.p == 1.0
    for _ in range(20):
        ada.update(-1.0)
    assert ada.p == 0.0


def test_ada_goes_from_zero_to_one_in_speed_images():
    ada = AdaController(batch_size=64, interval=4, speed_images=512_000)
    updates = 0
    while ada.p < 1.0:
        ada.update(1.0)
        updates += 1
    assert updates * 64 * 4 == pytest.approx(512_000, rel=1e-3)


def test_ada_ignores_a_non_finite_signal_and_validates():
    ada = AdaController(batch_size=8, interval=4, initial=0.3)
    assert ada.update(math.nan) == 0.3
    with pytest.raises(ValueError):
        AdaController(batch_size=8, interval=4, initial=1.5)
    with pytest.raises(ValueError):
        AdaController(batch_size=0, interval=4)


# --- AutoBalance -------------------------------------------------------------------------------


def scores(real, fake):
    return {"d_score/real": real, "d_score/fake": fake, "d/total": 1.0}


def test_autobalance_weakens_d_when_it_wins_and_strengthens_it_when_g_wins():
    balance = AutoBalance(target_gap=0.4, band=0.15, factor=1.25)
    assert balance.update(scores(0.97, 0.03)) == pytest.approx(1 / 1.25)
    assert balance.update(scores(0.97, 0.03)) == pytest.approx(1 / 1.25**2)
    balance = AutoBalance(target_gap=0.4, band=0.15, factor=1.25)
    assert balance.update(scores(0.52, 0.48)) == pytest.approx(1.25)


def test_autobalance_stays_put_inside_the_band():
    balance = AutoBalance(target_gap=0.4, band=0.15, initial=2.0)
    for real, fake in [(0.7, 0.3), (0.7, 0.44), (0.75, 0.22), (0.6, 0.2)]:  # gaps 0.26 .. 0.53
        assert balance.update(scores(real, fake)) == 2.0


def test_autobalance_respects_its_bounds():
    balance = AutoBalance(factor=2.0, low=0.25, high=4.0)
    for _ in range(10):
        balance.update(scores(1.0, 0.0))
    assert balance.value == 0.25
    for _ in range(10):
        balance.update(scores(0.5, 0.5))
    assert balance.value == 4.0


def test_autobalance_reads_configurable_signals_and_refuses_missing_ones():
    balance = AutoBalance(real_key="d_score/real", fake_key="d_score/wrong")
    assert balance.update({"d_score/real": 0.99, "d_score/wrong": 0.01}) < 1.0
    with pytest.raises(KeyError, match="d_score/wrong"):
        balance.update({"d_score/real": 0.9})
    assert balance.update({"d_score/real": math.nan, "d_score/wrong": 0.1}) == balance.value
    with pytest.raises(ValueError):
        AutoBalance(factor=1.0)


# --- CollapseDetector --------------------------------------------------------------------------


def healthy(rng):
    real, fake = 0.65 + rng.normal(0, 0.08), 0.35 + rng.normal(0, 0.08)
    return {
        "d_score/real": real, "d_score/fake": fake, "d_score/wrong": fake + 0.05,
        "d/total": 1.2 + rng.normal(0, 0.2), "g/total": 1.0 + rng.normal(0, 0.3),
        "grad_norm/d": abs(rng.normal(3, 1)), "grad_norm/g": abs(rng.normal(2, 1)),
    }  # fmt: skip


def test_linear_decay_is_flat_then_falls_to_zero_at_the_last_step():
    decay = LinearDecay(steps=10, start=0.5)
    assert [decay(step) for step in range(5)] == [1.0] * 5
    assert [decay(step) for step in range(5, 11)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    assert decay(12) == 0.0  # a run resumed with fewer steps than it has trained
    from_start = LinearDecay(steps=4, start=0.0)
    assert [from_start(step) for step in range(4)] == [1.0, 0.75, 0.5, 0.25]  # the last update still moves


@pytest.mark.parametrize("steps, start", [(0, 0.5), (10, 1.0), (10, -0.1)])
def test_linear_decay_refuses_what_is_not_a_schedule(steps, start):
    with pytest.raises(ValueError, match="LinearDecay"):
        LinearDecay(steps=steps, start=start)


def test_collapse_detector_stays_quiet_on_healthy_noisy_signals():
    rng = np.random.default_rng(0)
    detector = CollapseDetector(patience_intervals=3)
    for interval in range(500):
        signals = healthy(rng)
        if interval % 10 == 0:
            signals["eval/diversity"] = 0.4 + rng.normal(0, 0.05)
        assert detector.update(interval * 100, signals) is None


def test_discriminator_win_fires_after_exactly_patience_intervals():
    detector = CollapseDetector(patience_intervals=4)
    collapsed = {"d_score/real": 0.999, "d_score/fake": 0.001, "g/total": 7.0}
    for interval in range(3):
        assert detector.update(interval, collapsed) is None
    reason = detector.update(3, collapsed)
    assert reason.startswith("step 3: discriminator wins") and "0.999" in reason
    assert detector.update(4, healthy(np.random.default_rng(1))) == reason  # sticky
    assert detector.reason == reason


def test_a_healthy_interval_resets_the_streak():
    detector = CollapseDetector(patience_intervals=3)
    collapsed = {"d_score/real": 0.999, "d_score/fake": 0.001}
    sequence = [collapsed, collapsed, scores(0.7, 0.3), collapsed, collapsed]
    assert all(detector.update(step, signals) is None for step, signals in enumerate(sequence))
    assert "discriminator wins" in detector.update(5, collapsed)


def test_fooled_discriminator_fires_after_patience():
    detector = CollapseDetector(patience_intervals=2)
    assert detector.update(0, scores(0.96, 0.95)) is None
    assert "discriminator fooled" in detector.update(1, scores(0.96, 0.95))


def test_non_finite_fires_at_once():
    detector = CollapseDetector(patience_intervals=10)
    assert detector.update(0, scores(0.7, 0.3)) is None
    reason = detector.update(1, {**scores(0.7, 0.3), "g/total": float("nan")})
    assert reason == "step 1: non-finite g/total = nan (diverged)"
    assert "inf" in CollapseDetector().update(5, {"grad_norm/d": np.float32("inf")})


def test_diversity_collapse_counts_evaluations_and_skips_intervals_without_one():
    detector = CollapseDetector(patience_intervals=5, diversity_patience=2)
    low = {**scores(0.7, 0.3), "eval/diversity": 0.02}
    assert detector.update(0, low) is None
    for step in range(1, 6):  # intervals without an evaluation neither extend nor break the streak
        assert detector.update(step, scores(0.7, 0.3)) is None
    reason = detector.update(6, low)
    assert reason.startswith("step 6: diversity collapse") and "0.02" in reason


def test_missing_scores_are_not_a_failure():
    detector = CollapseDetector(patience_intervals=1)
    assert detector.update(0, {"g/total": 1.0}) is None
    assert detector.update(1, {}) is None
