"""`python -m t2igan.prepare data=<name> [data.root=<folder>]`: get a dataset ready to train.

Checks the layout, decodes, crops and resizes every image once into `cache/data/`, embeds every
caption once into `cache/text/`, and prints what it kept and what it skipped (and why). Training
does the same on first use; running this first shows a dataset's problems in seconds instead
of at the start of a run. Re-running reuses both caches; a changed source prepares again.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from t2igan.errors import exit_on_user_error


def prepare(cfg: DictConfig) -> dict:
    """Prepare the dataset and caption embeddings `cfg` names; returns the splits."""
    from t2igan.config import validate
    from t2igan.data.datasets import load_dataset
    from t2igan.text.encoder import CaptionEmbedder
    from t2igan.train import absolute_paths

    validate(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    absolute_paths(config)
    progress = config["trainer"]["progress"]
    splits = load_dataset(**config["data"], cache_dir=Path(config["paths"]["cache"]) / "data",
                          progress=progress)  # fmt: skip
    embedder = CaptionEmbedder(**config["text"], show_progress=progress)
    captions = [caption for split in splits.values() for image in split.captions for caption in image]
    embedder.embed(captions)
    print(f"data={config['data']['name']}: {len(splits['train']):,} train / {len(splits['test']):,} test "
          f"images at {splits['test'].images.shape[1]} px, {len(set(captions)):,} distinct captions "
          f"embedded ({embedder.path})")  # fmt: skip
    return splits


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
