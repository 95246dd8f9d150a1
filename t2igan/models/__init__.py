"""Generator and discriminator architectures, built from plain keyword arguments.

`architecture` names a pair: "stackgan" is the seed project's StackGAN Stage-I network,
"fusion" the DF-GAN-style model with text fused into every generator block.
"""

from t2igan.models.discriminator import Discriminator, build_discriminator
from t2igan.models.fusion import FusionDiscriminator, build_fusion_generator
from t2igan.models.generator import build_generator

ARCHITECTURES = ("stackgan", "fusion")


def make_generator(
    architecture: str,
    *,
    text_dim: int,
    noise_dim: int,
    condition_dim: int,
    image_size: int,
    generator_channels: int,
    width: float,
    phrase_tokens: int = 0,
    phrase_key_dim: int = 64,
    phrase_max_size: int | None = None,
    project_text: bool = True,
    seed: int | None = None,
    name: str = "generator",
):
    """The generator of `architecture`: `[noise, text_embeddings] -> [images, mu, log_sigma]`
    (`phrase_tokens` > 0: the fusion generator's phrase attention, `phrase_key_dim` wide, in
    the blocks up to `phrase_max_size`; `project_text` false: the fusion generator's 4x4 map
    from the noise alone; see `build_fusion_generator`)."""
    build = {"stackgan": build_generator, "fusion": build_fusion_generator}[_known(architecture)]
    fusion_options = (dict(phrase_tokens=phrase_tokens, phrase_key_dim=phrase_key_dim,
                           phrase_max_size=phrase_max_size, project_text=project_text)
                      if _is_fusion(architecture, phrase_tokens, project_text=project_text)
                      else {})  # fmt: skip
    return build(
        text_dim=text_dim, noise_dim=noise_dim, condition_dim=condition_dim, image_size=image_size,
        base_channels=generator_channels, width=width, seed=seed, name=name, **fusion_options,
    )  # fmt: skip


def make_discriminator(
    architecture: str,
    *,
    text_dim: int,
    condition_dim: int,
    image_size: int,
    discriminator_channels: int,
    width: float,
    dropout: float,
    augment: tuple[str, ...],
    norm: str,
    minibatch_std: bool,
    contrastive_dim: int = 0,
    phrase_tokens: int = 0,
    seed: int | None = None,
):
    """The discriminator of `architecture`, with `encode(images)` and `judge(features, text)`."""
    common = dict(
        text_dim=text_dim, image_size=image_size, base_channels=discriminator_channels,
        width=width, dropout=dropout, augment=tuple(augment), norm=norm,
        minibatch_std=minibatch_std, contrastive_dim=contrastive_dim, seed=seed,
    )  # fmt: skip
    if _is_fusion(architecture, phrase_tokens):
        return FusionDiscriminator(**common, phrase_tokens=phrase_tokens)
    return build_discriminator(**common, condition_dim=condition_dim)


def _is_fusion(architecture: str, phrase_tokens: int, *, project_text: bool = True) -> bool:
    """Whether `architecture` is the fusion pair; the fusion model's own options (phrase tokens,
    no text in G's projection) are an error for any other."""
    if _known(architecture) != "fusion" and phrase_tokens:
        raise ValueError(f"phrase_tokens={phrase_tokens} needs the fusion architecture, not {architecture!r}")
    if architecture != "fusion" and not project_text:
        raise ValueError(f"project_text=false needs the fusion architecture, not {architecture!r}")
    return architecture == "fusion"


def _known(architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {ARCHITECTURES}")
    return architecture


__all__ = [
    "ARCHITECTURES", "Discriminator", "FusionDiscriminator",
    "build_discriminator", "build_fusion_generator", "build_generator", "make_discriminator",
    "make_generator",
]  # fmt: skip
