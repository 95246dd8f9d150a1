"""Scores computed from features: KID, Inception Score and R-precision (pure NumPy).

FID is `frechet.frechet_distance` on feature statistics. Conventions follow the references:
KID as in StyleGAN2-ADA's `metrics/kernel_inception_distance.py` (cubic polynomial kernel,
unbiased MMD² averaged over random subsets), IS as in the improved-GAN code (10 splits,
softmax without the layer's bias), R-precision as in AttnGAN / DM-GAN (the true caption among
99 mismatched ones, top-1).
"""

import numpy as np


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, *, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> float:  # fmt: skip
    """Unbiased MMD² between (N, F) and (M, F) features with k(x, y) = (x.y / F + 1)³.

    Averages `num_subsets` estimates on random subsets of min(N, M, max_subset_size) rows of
    each; about 0 for two samples of one distribution (it can be slightly negative).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    dim = real.shape[1]
    size = min(len(real), len(fake), max_subset_size)
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples of each, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), size, replace=False)]
        y = real[rng.choice(len(real), size, replace=False)]
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        between = (x @ y.T / dim + 1) ** 3
        total += (within.sum() - np.diag(within).sum()) / (size - 1) - between.sum() * 2 / size
    return float(total / num_subsets / size)


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over `splits` of exp(E[KL(p(y|x) || p(y))]), (N, C) logits."""
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    scores = []
    for part in np.array_split(probabilities, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def r_precision(image_embeddings: np.ndarray, caption_embeddings: np.ndarray,
                mismatched: np.ndarray) -> float:  # fmt: skip
    """The share of images whose own caption scores highest (cosine) among itself and the
    captions `mismatched` (N, 99) indexes, for (N, E) image and (K, E) caption embeddings;
    image i's own caption is caption i."""
    images = image_embeddings / np.linalg.norm(image_embeddings, axis=1, keepdims=True)
    captions = caption_embeddings / np.linalg.norm(caption_embeddings, axis=1, keepdims=True)
    own = np.einsum("ne,ne->n", images, captions[: len(images)])
    others = np.einsum("ne,nke->nk", images, captions[mismatched])
    return float(np.mean(own > others.max(axis=1)))


def mismatched_captions(num_images: int, num_captions: int, candidates: int = 99,
                        seed: int = 0) -> np.ndarray:  # fmt: skip
    """(N, candidates) indexes of captions other than each image's own (index i), drawn
    without replacement; the caption pool must hold more than `candidates` captions."""
    if num_captions <= candidates:
        raise ValueError(f"R-precision ranks among {candidates} mismatched captions: needs more than "
                         f"{candidates} captions, got {num_captions}")  # fmt: skip
    rng = np.random.default_rng(seed)
    chosen = np.empty((num_images, candidates), np.int64)
    for i in range(num_images):
        pick = rng.choice(num_captions - 1, candidates, replace=False)
        chosen[i] = pick + (pick >= i)  # skip the image's own caption
    return chosen
