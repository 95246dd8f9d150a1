"""Fréchet distance between Gaussians fitted to feature vectors (the math behind FID).

d² = ||mu1 - mu2||² + tr(sigma1) + tr(sigma2) - 2 tr((sigma1^½ sigma2 sigma1^½)^½)

The cross term uses the symmetric form: sigma1^½ sigma2 sigma1^½ is symmetric positive
semi-definite, so its square root's trace is the sum of the square roots of its eigenvalues
(`numpy.linalg.eigh`, real by construction). This equals tr((sigma1 sigma2)^½), which FID code
usually computes with `scipy.linalg.sqrtm` on the non-symmetric product, where rounding can
leave complex parts and negative eigenvalues to patch over; it also needs no SciPy.
"""

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) features, N >= 2 -> mean (F,) and covariance (F, F), float64, ddof=1 as in FID."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be (N, F) with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; rounding's tiny negative eigenvalues count as 0."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray,
                     mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu: (F,) means; sigma: (F, F) symmetric PSD covariances, in feature units; the result is in
    squared feature units, >= 0 (clipped there: rounding can take identical inputs to -1e-12).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,) or sigma1.shape != (dim, dim) \
            or sigma2.shape != (dim, dim):
        raise ValueError(f"shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    sqrt_sigma1 = _symmetric_sqrt(sigma1)
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt_product = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    difference = mu1 - mu2
    distance = difference @ difference + np.trace(sigma1) + np.trace(sigma2) \
        - 2.0 * trace_sqrt_product
    return float(max(distance, 0.0))


class StreamingFeatureStatistics:
    """Mean and covariance of features that arrive in batches, e.g. 50k generated images.

    Merges each batch's mean and centred scatter into the running ones (Chan et al.'s pairwise
    update) in float64, so the result matches `feature_statistics` on the concatenated features
    without the cancellation of accumulating raw sums of x xᵀ.
    """

    def __init__(self, feature_dim: int):
        self.feature_dim = feature_dim
        self.count = 0
        self.mean = np.zeros(feature_dim, np.float64)
        self.scatter = np.zeros((feature_dim, feature_dim), np.float64)  # sum of centred x xᵀ

    def update(self, features: np.ndarray) -> None:
        """Adds a (B, F) batch; B may be 0."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"expected (B, {self.feature_dim}) features, got {features.shape}")
        batch_count = len(features)
        if batch_count == 0:
            return
        batch_mean = features.mean(axis=0)
        centred = features - batch_mean
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.scatter += centred.T @ centred + np.outer(delta, delta) * (
            self.count * batch_count / total)
        self.mean += delta * (batch_count / total)
        self.count = total

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (F,) and covariance (F, F) of everything added so far (ddof=1; needs 2 rows)."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors, have {self.count}")
        return self.mean.copy(), self.scatter / (self.count - 1)
