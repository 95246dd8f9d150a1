"""Fréchet distance against closed forms, and the streaming statistics against one-shot ones."""

import numpy as np
import pytest

from t2igan.metrics.frechet import (
    StreamingFeatureStatistics,
    feature_statistics,
    frechet_distance,
)


def random_covariance(rng: np.random.Generator, dim: int) -> np.ndarray:
    factor = rng.normal(size=(dim, dim))
    return factor @ factor.T / dim + 0.1 * np.eye(dim)


def test_diagonal_gaussians_match_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected,
                                                                                   rel=1e-10)


def test_one_dimension_is_the_wasserstein_distance_of_normals():
    # W2²(N(m1, a²), N(m2, b²)) = (m1 - m2)² + (a - b)²
    distance = frechet_distance(np.array([1.0]), np.array([[4.0]]),
                                np.array([-2.0]), np.array([[9.0]]))
    assert distance == pytest.approx(3.0**2 + (2.0 - 3.0) ** 2)


def test_identical_statistics_give_zero_and_a_shift_gives_its_squared_length():
    rng = np.random.default_rng(1)
    mu, sigma = rng.normal(size=32), random_covariance(rng, 32)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    shift = np.full(32, 0.5)
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(32 * 0.25, rel=1e-8)


def test_full_covariances_agree_with_scipy_sqrtm_and_are_symmetric():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    sigma1, sigma2 = random_covariance(rng, 16), random_covariance(rng, 16)
    cross = np.real(linalg.sqrtm(sigma1 @ sigma2))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * cross)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(
        frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-8)


def test_rank_deficient_covariances_stay_finite_and_non_negative():
    features = np.random.default_rng(3).normal(size=(10, 64))  # 10 samples: rank <= 9
    mu, sigma = feature_statistics(features)
    distance = frechet_distance(mu, sigma, mu, sigma)
    assert np.isfinite(distance) and 0.0 <= distance < 1e-6


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_statistics_are_mean_and_unbiased_covariance():
    features = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, [2.0, 2.0])
    np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])


def test_streaming_statistics_equal_one_shot_statistics():
    rng = np.random.default_rng(4)
    # A large common offset is where naive sums of x xᵀ lose the covariance to cancellation.
    features = (1e4 + rng.normal(size=(1003, 8)) @ rng.normal(size=(8, 8))).astype(np.float32)
    streaming = StreamingFeatureStatistics(feature_dim=8)
    for start, stop in [(0, 1), (1, 257), (257, 257), (257, 900), (900, 1003)]:
        streaming.update(features[start:stop])
    mu, sigma = streaming.statistics()
    expected_mu, expected_sigma = feature_statistics(features)
    assert streaming.count == 1003
    np.testing.assert_allclose(mu, expected_mu, rtol=1e-12)
    np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-9, atol=1e-9)


def test_streaming_statistics_need_two_rows_and_the_right_width():
    streaming = StreamingFeatureStatistics(feature_dim=3)
    streaming.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        streaming.statistics()
    with pytest.raises(ValueError, match="expected"):
        streaming.update(np.zeros((2, 4)))
