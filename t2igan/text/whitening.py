"""Whitened caption embeddings: every direction the training captions vary in, at one scale.

Sentence embeddings are anisotropic: on toybirds five directions hold a third of the training
captions' variance and fifty hold 95%, while what tells "a red crown and blue wings" from "a
blue crown and red wings" lies in directions of little variance (the two embeddings' cosine
is 0.99). A network reading them learns those directions slowly. Whitening (Su et al. 2021,
"Whitening sentence representations") rescales every direction to unit variance, with a floor
so that directions of almost no variance are not blown up to noise.
"""

import numpy as np


class Whitening:
    """`(vectors - mean) @ matrix`: ZCA whitening fitted on training caption embeddings.

    The result keeps the sentence encoder's scale convention (entries ~1/sqrt(T), as for
    unit-length embeddings), so the networks' input scaling (`t2igan.models.fusion.text_scale`)
    applies unchanged.
    """

    def __init__(self, mean: np.ndarray, matrix: np.ndarray):
        self.mean = np.asarray(mean, np.float32)  # (T,)
        self.matrix = np.asarray(matrix, np.float32)  # (T, T)

    @classmethod
    def fit(cls, embeddings: np.ndarray, floor: float) -> "Whitening":
        """Fit on (M, T) embeddings. Each eigenvalue of their covariance is raised by `floor`
        times the largest before it is divided out: a direction with that much variance or
        more ends up near unit variance, one with much less is scaled up by at most
        1 / sqrt(floor) relative to the largest."""
        embeddings = np.asarray(embeddings, np.float64)
        if embeddings.ndim != 2 or len(embeddings) < 2:
            raise ValueError(f"need (M >= 2, T) embeddings to fit a whitening, got {embeddings.shape}")
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {floor}")
        mean = embeddings.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(embeddings - mean, rowvar=False))
        eigenvalues = np.maximum(eigenvalues, 0.0)  # round-off makes a rank-deficient one negative
        scale = 1.0 / np.sqrt(eigenvalues + floor * eigenvalues.max())
        matrix = (eigenvectors * scale) @ eigenvectors.T / np.sqrt(embeddings.shape[1])
        return cls(mean, matrix)

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(N, T) embeddings -> (N, T) float32 whitened embeddings."""
        return ((np.asarray(vectors, np.float32) - self.mean) @ self.matrix).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        """What a checkpoint stores to whiten captions as the run did (`from_arrays`)."""
        return {"mean": self.mean, "matrix": self.matrix}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "Whitening":
        return cls(arrays["mean"], arrays["matrix"])
