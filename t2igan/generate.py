"""`python -m t2igan.generate checkpoint=... text="..." n=8 out=samples.png`: images from text.

Loads the EMA generator of a training checkpoint (a path, or an MLflow run id whose run logged
one), embeds the captions with the checkpoint's own text encoder, and writes a PNG grid: one
row per caption, one column per noise vector (the same noise in every row). `mode=interpolate`
writes a strip that walks from `text` to `text2` (and/or between two noise vectors).
"""

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from t2igan.errors import UserError, exit_on_user_error

MODES = ("grid", "interpolate")
INTERPOLATIONS = ("text", "noise", "both")


def truncated_noise(rng: np.random.Generator, shape: tuple[int, ...], truncation: float | None) -> np.ndarray:
    """Standard normal noise; with `truncation`, values beyond +-truncation are redrawn
    (BigGAN's truncation trick: smaller is less diverse and more typical)."""
    noise = rng.standard_normal(shape)
    if truncation is not None:
        if truncation <= 0:
            raise UserError(f"truncation must be > 0 or null, got {truncation}")
        outside = np.abs(noise) > truncation
        while outside.any():
            noise[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(noise) > truncation
    return noise.astype(np.float32)


def interpolation_inputs(start_embedding, end_embedding, start_noise, end_noise, steps: int, what: str):
    """(steps, T) embeddings and (steps, Z) noise walking linearly from start to end.

    `what` is "text" (noise stays at `start_noise`), "noise" (text stays at the start) or "both".
    """
    if what not in INTERPOLATIONS:
        raise UserError(f"interpolate must be one of {INTERPOLATIONS}, got {what!r}")
    weights = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    text_end = end_embedding if what in ("text", "both") else start_embedding
    noise_end = end_noise if what in ("noise", "both") else start_noise
    text_weights = weights.reshape((steps,) + (1,) * np.ndim(start_embedding))  # (T,) or (1 + K, T)
    embeddings = (1 - text_weights) * start_embedding[None] + text_weights * text_end[None]
    noise = (1 - weights) * start_noise[None] + weights * noise_end[None]
    return embeddings.astype(np.float32), noise.astype(np.float32)


def read_captions(path: str | Path) -> list[str]:
    """One caption per non-empty line of a UTF-8 text file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read captions file {path}: {error}")
    captions = [line.strip() for line in lines if line.strip()]
    if not captions:
        raise UserError(f"captions file {path} has no captions")
    return captions


def generate(cfg: DictConfig) -> Path:
    """Write the picture `cfg` asks for and return its path."""
    from t2igan.images import grid_inputs, image_grid, save_png, to_uint8
    from t2igan.sampler import Sampler

    if cfg.mode not in MODES:
        raise UserError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    captions = read_captions(cfg.captions) if cfg.captions else ([cfg.text] if cfg.text else [])
    if not captions:
        raise UserError('give text="a caption" or captions=<file with one caption per line>')
    if cfg.n < 1:
        raise UserError(f"n must be >= 1, got {cfg.n}")
    sampler = Sampler.from_checkpoint(cfg.checkpoint, tracking_uri=cfg.tracking_uri)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)

    if cfg.mode == "interpolate":
        if not cfg.text2 and cfg.interpolate != "noise":
            raise UserError('mode=interpolate needs text2="the caption to end at"')
        ends = sampler.embed([captions[0], cfg.text2 or captions[0]])
        noise = truncated_noise(rng, (2, sampler.noise_dim), cfg.truncation)
        embeddings, noise = interpolation_inputs(ends[0], ends[1], noise[0], noise[1], cfg.n, cfg.interpolate)
        images = to_uint8(sampler.generate(noise, embeddings, batch_size=cfg.batch_size))
        label = f"{captions[0]}  ->  {cfg.text2}" if cfg.interpolate != "noise" else captions[0]
        path = save_png(out, image_grid(images[None], [label]))
        print(f"wrote {path} ({cfg.n} steps, interpolating {cfg.interpolate})")
        return path

    noise = truncated_noise(rng, (cfg.n, sampler.noise_dim), cfg.truncation)
    all_noise, all_embeddings = grid_inputs(noise, sampler.embed(captions))
    images = to_uint8(sampler.generate(all_noise, all_embeddings, batch_size=cfg.batch_size))
    images = images.reshape(len(captions), cfg.n, *images.shape[1:])
    path = save_png(out, image_grid(images, captions))
    if cfg.captions:  # one file per sample too, beside the grid
        folder = out.with_suffix("")
        for row, column in np.ndindex(images.shape[:2]):
            save_png(folder / f"caption{row:03d}_sample{column:03d}.png", images[row, column])
        (folder / "captions.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
        print(f"wrote {path} and {images.shape[0] * images.shape[1]} images in {folder}/")
    else:
        print(f"wrote {path} ({len(captions)} caption(s) x {cfg.n} samples)")
    return path


# A config root of its own: in conf/, `text=` would select the `text` group of training.
@hydra.main(config_path="../conf/generate", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    generate(cfg)


if __name__ == "__main__":
    main()
