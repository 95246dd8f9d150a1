"""GAN objectives as pure functions: logits in, a dict of named scalar terms out.

Term names are the ones logged: `d/real`, `d/fake`, `d/wrong`, `d/total` for the
discriminator, `g/adv`, `g/kl`, `g/total` for the generator. No optimizers, no state.
"""

from keras import ops

LOSS_KINDS = ("bce", "hinge")


def _float32(x):
    # Losses are reduced in float32 whatever precision the networks compute in.
    return ops.cast(x, "float32")


def _softplus_mean(x):
    return ops.mean(ops.softplus(x))


def kl_divergence(mu, log_sigma):
    """KL(N(mu, sigma^2) || N(0, 1)) averaged over batch and condition dimensions.

    The mean (not the sum) over dimensions follows StackGAN, whose KL weight of 2.0 assumes it.
    """
    mu, log_sigma = _float32(mu), _float32(log_sigma)
    return ops.mean(0.5 * (ops.square(mu) + ops.exp(2.0 * log_sigma) - 1.0) - log_sigma)


def discriminator_loss(
    real_logits,
    fake_logits,
    wrong_logits,
    *,
    kind: str = "bce",
    wrong_weight: float = 0.5,
    real_label: float = 1.0,
):
    """The matching-aware discriminator objective (Reed et al. 2016, StackGAN).

    D sees three pairs: (real image, its caption) -> real, (fake image, its caption) -> fake,
    (real image, a mismatched caption) -> fake. Fake and wrong share the "fake" half:
    `d/total = d/real + (1 - wrong_weight) * d/fake + wrong_weight * d/wrong`.

    `kind="bce"` is the logistic loss (`real_label` < 1 is one-sided label smoothing);
    `kind="hinge"` the hinge loss of DF-GAN/BigGAN, where `real_label` does not apply.
    All logits are (B, 1) or (B,).
    """
    real_logits, fake_logits, wrong_logits = map(_float32, (real_logits, fake_logits, wrong_logits))
    if kind == "bce":
        # BCE(x, y) = softplus(x) - y * x for logits x and targets y.
        real = _softplus_mean(real_logits) - real_label * ops.mean(real_logits)
        fake = _softplus_mean(fake_logits)
        wrong = _softplus_mean(wrong_logits)
    elif kind == "hinge":
        real = ops.mean(ops.relu(1.0 - real_logits))
        fake = ops.mean(ops.relu(1.0 + fake_logits))
        wrong = ops.mean(ops.relu(1.0 + wrong_logits))
    else:
        raise ValueError(f"unknown loss kind {kind!r}; known: {LOSS_KINDS}")
    total = real + (1.0 - wrong_weight) * fake + wrong_weight * wrong
    return {"d/real": real, "d/fake": fake, "d/wrong": wrong, "d/total": total}


def generator_loss(fake_logits, mu, log_sigma, *, kind: str = "bce", kl_weight: float = 2.0):
    """Fool D on (fake image, its caption), keep the text condition near its N(0, 1) prior.

    `kind="bce"` is the non-saturating loss -log D(G(z, t), t); `kind="hinge"` is -D(G(z, t), t).
    `kl_weight` scales the conditioning-augmentation KL term (StackGAN: 2.0; 0 switches it off).
    """
    fake_logits = _float32(fake_logits)
    if kind == "bce":
        adv = _softplus_mean(-fake_logits)
    elif kind == "hinge":
        adv = -ops.mean(fake_logits)
    else:
        raise ValueError(f"unknown loss kind {kind!r}; known: {LOSS_KINDS}")
    kl = kl_divergence(mu, log_sigma)
    return {"g/adv": adv, "g/kl": kl, "g/total": adv + kl_weight * kl}


def mode_seeking_loss(images_a, images_b, noise_a, noise_b, *, eps: float = 1e-5):
    """MSGAN's mode-seeking term (Mao et al. 2019), for G to minimise.

    Two batches generated from the same captions with different noise: (B, S, S, 3) images
    and (B, Z) noise each. The ratio mean|images_a - images_b| / mean|noise_a - noise_b|
    measures how much the images move with the noise; the loss is its inverse, so a
    generator that maps every noise vector of a caption to one image (per-caption mode
    collapse) pays a large penalty.
    """
    images_a, images_b, noise_a, noise_b = map(_float32, (images_a, images_b, noise_a, noise_b))
    ratio = ops.mean(ops.abs(images_a - images_b)) / ops.mean(ops.abs(noise_a - noise_b))
    return 1.0 / (ratio + eps)


def per_caption_mode_seeking_loss(images_a, images_b, noise_a, noise_b, *, eps: float = 1e-5):
    """Mode seeking caption by caption, arguments as for `mode_seeking_loss`: the batch mean of
    -log(each pair's own image change per noise change, r_i), divided by r, the mean of the r_i
    (held constant).

    MSGAN's term pulls every pair apart alike (with equal noise distances its derivative in r_i
    is -1 / (B r^2) for every i), so G can pay it where change is cheapest, in some captions,
    while others keep one image. Here pair i is pulled by 1 / (B r_i r): a pair at the mean ratio
    about as hard as by MSGAN's term, a caption whose two images nearly coincide harder in
    proportion (r / r_i). The pull grows as 1 / r_i, not as 1 / r_i^2 as 1 / r_i per pair would;
    only `eps` caps it where a pair's images coincide exactly.
    """
    images_a, images_b, noise_a, noise_b = map(_float32, (images_a, images_b, noise_a, noise_b))

    def per_row(difference):
        return ops.mean(ops.reshape(ops.abs(difference), (ops.shape(difference)[0], -1)), axis=1)

    ratios = per_row(images_a - images_b) / per_row(noise_a - noise_b)
    return ops.mean(-ops.log(ratios + eps)) / ops.stop_gradient(ops.mean(ratios) + eps)


def matching_loss(image_embeddings, text_embeddings, *, temperature: float = 0.1):
    """AttnGAN's sentence-level DAMSM term: each image should match its own caption better
    than the batch's other captions. (B, E) image embeddings and (B, E) caption embeddings
    in one space; softmax over the batch's captions of cosine / temperature, cross-entropy
    against the image's own caption (identical captions in the batch all count as its own).
    The mean of `matching_losses`.
    """
    return ops.mean(matching_losses(image_embeddings, text_embeddings, temperature=temperature))


def matching_losses(image_embeddings, text_embeddings, *, temperature: float = 0.1):
    """`matching_loss` image by image: (B,) float32 cross-entropies."""
    images = _float32(image_embeddings)
    texts = _float32(text_embeddings)
    images = images / (ops.norm(images, axis=1, keepdims=True) + 1e-8)
    texts = texts / (ops.norm(texts, axis=1, keepdims=True) + 1e-8)
    return contrastive_losses(ops.matmul(images, ops.transpose(texts)), same_rows(texts), temperature=temperature)


def same_rows(unit_vectors):
    """(B, E) unit vectors -> (B, B) float32: 1 where two rows are the same (cosine > 0.9999):
    identical captions, which a batch-contrastive loss counts as each other's own."""
    return ops.cast(ops.matmul(unit_vectors, ops.transpose(unit_vectors)) > 0.9999, "float32")


def contrastive_losses(scores, same, *, temperature: float):
    """(B,) float32 cross-entropies of each row's softmax over `scores` (B, B) / `temperature`
    against its own column(s), which `same` (B, B) marks (`same_rows`), shared equally."""
    targets = same / ops.sum(same, axis=1, keepdims=True)
    return -ops.sum(targets * ops.log_softmax(_float32(scores) / temperature, axis=1), axis=1)
