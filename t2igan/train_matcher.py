"""`python -m t2igan.train_matcher data=...`: train the R-precision matcher of a dataset.

An image encoder and a text head over the frozen sentence embeddings learn to place each
training image next to its captions (contrastive), then are kept in `metrics.cache_dir/matcher/`, where
`r_precision` and `fd_matcher...` find it. It prints the R-precision of the real test images
with their own captions: the best a generator can score with this matcher.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from t2igan.errors import exit_on_user_error
from t2igan.text.encoder import sentence_of


def train_matcher_command(cfg: DictConfig) -> float:
    """Train and save the matcher `cfg` describes; returns real test images' R-precision."""
    from t2igan.config import validate
    from t2igan.data.datasets import load_dataset
    from t2igan.text.encoder import CaptionEmbedder
    from t2igan.train import absolute_paths

    validate(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    absolute_paths(config)
    progress = config["trainer"]["progress"]
    splits = load_dataset(**config["data"], cache_dir=Path(config["paths"]["cache"]) / "data", progress=progress)
    embedder = CaptionEmbedder(**config["text"], show_progress=progress)
    _, score = train_and_save_matcher(config, splits, embedder, progress=progress)
    return score


def train_and_save_matcher(config: dict, splits: dict, embedder, *, progress: bool) -> tuple[Path, float]:
    """Train the matcher of `config`'s dataset on its training split, save it where metrics and
    balance.matching_weight look for it, and report real test images' R-precision."""
    from t2igan.metrics.matcher import Matcher, encode, encode_texts, matcher_path, train_matcher
    from t2igan.metrics.scores import mismatched_captions, r_precision

    metrics, size = config["metrics"], config["model"]["image_size"]
    train = splits["train"]
    images = train.centred_images(size)
    # The matcher reads caption vectors only (with text.phrase_tokens, row 0 of each embedding).
    flat = sentence_of(embedder.embed([caption for captions in train.captions for caption in captions]))
    embeddings = flat.reshape(len(train), -1, flat.shape[-1])
    batch_size = min(metrics["matcher_batch_size"], len(train))
    model, seconds = train_matcher(
        images, embeddings, epochs=metrics["matcher_epochs"], batch_size=batch_size,
        width=metrics["matcher_width"], text_hidden=metrics["matcher_text_hidden"],
        embedding_dim=metrics["matcher_embedding_dim"], learning_rate=metrics["matcher_learning_rate"],
        temperature=metrics["matcher_temperature"], pool=metrics["matcher_pool"],
        augment=tuple(metrics["matcher_augment"]), seed=config["seed"], progress=progress,
    )  # fmt: skip
    path = matcher_path(config)
    _save_atomically(model, path)

    test = splits["test"]
    own = [captions[i % len(captions)] for i, captions in enumerate(test.captions)]
    score = float("nan")
    if len(test) > 99:
        matcher = Matcher(model)
        texts = encode_texts(matcher, sentence_of(embedder.embed(own)))
        score = r_precision(encode(matcher, test.images), texts,
                            mismatched_captions(len(test), len(test), seed=config["seed"]))  # fmt: skip
    print(f"matcher trained in {seconds:.0f} s, saved to {path}; real test images' R-precision "
          f"{score:.3f} (chance 0.01)" + ("" if len(test) > 99 else ": needs more than 99 test images"))  # fmt: skip
    if test.attributes is not None:  # toybirds: which attributes can G learn from it?
        readings = attribute_readings(Matcher(model), test, embedder)
        print("it reads the real test images' attributes zero-shot at "
              + ", ".join(f"{name} {value:.2f}" for name, value in readings.items()))
    return path, score


def _save_atomically(model, path: Path) -> None:
    """Save `model` at `path` through a temporary file, so a crash never leaves half a matcher
    where the next run would load it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.keras")
    model.save(temporary)
    os.replace(temporary, path)


def train_and_save_phrase_matcher(config: dict, splits: dict, embedder, *, progress: bool) -> Path:
    """Train the phrase matcher of `config` (t2igan.metrics.phrase_matcher) on the training
    split, save it where balance.phrase_matching_weight looks for it, and report how often it
    prefers real test images' own captions over their colour-rotated versions."""
    from t2igan.metrics.phrase_matcher import phrase_matcher_path, phrase_matcher_settings, train_phrase_matcher

    train, settings = splits["train"], phrase_matcher_settings(config)
    tokens = embedder.embed([caption for captions in train.captions for caption in captions])
    tokens = tokens.reshape(len(train), -1, *tokens.shape[1:])  # (N, C, 1 + K, T)
    settings["batch_size"] = min(settings["batch_size"], len(train))
    model, seconds = train_phrase_matcher(train.centred_images(config["model"]["image_size"]), tokens,
                                          seed=config["seed"], progress=progress, **settings)  # fmt: skip
    path = phrase_matcher_path(config)
    _save_atomically(model, path)
    binding = rotated_caption_binding(model, splits["test"], embedder, sharpness=settings["sharpness"])
    print(f"phrase matcher trained in {seconds:.0f} s, saved to {path}"
          + (f"; it scores real test images' own captions above their colour-rotated versions "
             f"{binding[0]:.0%} of the time ({binding[1]} captions)" if binding else ""))  # fmt: skip
    return path


def rotated_caption_binding(model, split, embedder, *, sharpness: float) -> tuple[float, int] | None:
    """(share, count): of `split`'s first captions that name colours for two places, how often
    the `build_phrase_matcher` model scores the image with its own caption above the same
    caption with its colours moved to the wrong places (t2igan.text.negatives); None if none does."""
    import numpy as np

    from t2igan.metrics.phrase_matcher import PhraseMatcher
    from t2igan.text.negatives import rotate_colours

    pairs = [(index, captions[0], rotate_colours(captions[0])) for index, captions in enumerate(split.captions)]
    pairs = [pair for pair in pairs if pair[2] is not None]
    if not pairs:
        return None
    indices, own, rotated = (list(column) for column in zip(*pairs))
    matcher = PhraseMatcher(model.get_layer("image_tower"), model.get_layer("phrase_tower"), sharpness=sharpness)
    own_tokens, rotated_tokens = embedder.embed(own), embedder.embed(rotated)
    wins = []
    for start in range(0, len(indices), 256):
        batch = slice(start, start + 256)
        regions = matcher.regions(split.images[indices[batch]].astype(np.float32) / 127.5 - 1.0)
        wins.append(np.asarray(matcher.scores(regions, own_tokens[batch], pairwise=False))
                    > np.asarray(matcher.scores(regions, rotated_tokens[batch], pairwise=False)))  # fmt: skip
    return float(np.concatenate(wins).mean()), len(indices)


def attribute_readings(matcher, split, embedder, prompt_seeds: int = 5) -> dict[str, float]:
    """Toybirds: per attribute, how often the matcher places a test image nearest the caption
    of its own value ("this is a bird; its head is red"), each value's caption vector averaged
    over `prompt_seeds` templates. The balance.matching_weight term can only teach G what the
    matcher reads."""
    import numpy as np

    from t2igan.data.toybirds import ATTRIBUTE_NAMES, ATTRIBUTES, attribute_prompts
    from t2igan.metrics.matcher import encode, encode_texts, zero_shot_accuracy

    # Every prompt in one embedding call and one text-tower pass (each embed call reads the
    # cache), attribute by attribute, seed by seed.
    captions = [caption for name in ATTRIBUTE_NAMES for seed in range(prompt_seeds)
                for caption in attribute_prompts(name, seed)]  # fmt: skip
    vectors = encode_texts(matcher, sentence_of(embedder.embed(captions)))
    values = [len(ATTRIBUTES[name]) for name in ATTRIBUTE_NAMES]
    blocks = np.split(vectors, np.cumsum([prompt_seeds * count for count in values])[:-1])
    prompts = {name: block.reshape(prompt_seeds, count, -1).mean(axis=0)
               for name, count, block in zip(ATTRIBUTE_NAMES, values, blocks)}  # fmt: skip
    return zero_shot_accuracy(encode(matcher, split.images), prompts, split.attributes)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    train_matcher_command(cfg)


if __name__ == "__main__":
    main()
