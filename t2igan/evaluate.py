"""`python -m t2igan.evaluate checkpoint=... metrics=[fid2k_test,kid2k_test,is2k]`: score a
checkpoint with named metric protocols, write a JSON report and log to its MLflow run.

The dataset, text encoder and model come from the checkpoint's own config, so a report is
reproducible from the checkpoint alone; the metric names fix sample counts and reference
splits (t2igan/metrics/registry.py). `judge` (toybirds only) reads the judge's metrics as training
logs them (attr_acc, diversity, fd_judge and their per-attribute keys), with the checkpoint's
metrics.judge_* or, for a checkpoint from before they existed, today's defaults: how a run
trained under an older protocol is re-read under the current one.
"""

import json
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from t2igan.errors import UserError, exit_on_user_error

METRICS_DEFAULTS = Path(__file__).resolve().parents[1] / "conf" / "metrics" / "default.yaml"
METRIC_SETTINGS = ("inception_path", "inception_sha256", "download", "keras_model", "batch_size")
JUDGE = "judge"  # metrics=[judge]: the toybirds judge's metrics (t2igan/metrics/toybirds.py)
JUDGE_SETTINGS = ("judge_diversity_captions", "judge_diversity_noises", "judge_eval_seed")


def evaluate(cfg: DictConfig) -> dict:
    """Score `cfg.checkpoint`; returns the report (also written to `cfg.out` or beside it)."""
    from t2igan.checkpoint import read_header
    from t2igan.config import EVAL_METRICS
    from t2igan.data.datasets import load_dataset
    from t2igan.io import atomic_write_text
    from t2igan.metrics.registry import parse_metric
    from t2igan.sampler import Sampler, resolve_checkpoint
    from t2igan.train import judge_evaluation, standard_metrics

    names = list(cfg.metrics)
    others = [name for name in names if name != JUDGE]
    for name in others:  # a misspelt name fails here, not after minutes of work
        parse_metric(name)
    path = resolve_checkpoint(cfg.checkpoint, tracking_uri=cfg.tracking_uri)
    header = read_header(path)
    config = header.get("config") or {}
    if "data" not in config:
        raise UserError(f"{path} carries no training config")
    judged_otherwise = JUDGE in names and not set(JUDGE_SETTINGS) <= set(config.get("metrics", {}))
    config["metrics"] = metrics_config(config, {key: cfg[key] for key in METRIC_SETTINGS})
    splits = load_dataset(**config["data"], cache_dir=Path(config["paths"]["cache"]) / "data", progress=cfg.progress)
    if JUDGE in names and splits["test"].attributes is None:
        raise UserError(f"metrics=[{JUDGE}] reads toybirds attributes back; {config['data']['name']} has none")
    sampler = Sampler.from_checkpoint(path)
    parts = [standard_metrics(config, splits, sampler.embedder, progress=cfg.progress, names=others)] if others else []
    if JUDGE in names:
        parts.append(judge_evaluation(splits["test"], sampler.embedder, config, progress=cfg.progress))
    started = time.perf_counter()
    results = {}
    for part in parts:
        results.update(part(lambda noise, embeddings: sampler.generate(noise, embeddings, progress=False)))
    report = {
        "checkpoint": str(path), "step": header.get("step"), "dataset": config["data"]["name"],
        "seconds": round(time.perf_counter() - started, 1),
        "metrics": {name.removeprefix("eval/"): value for name, value in results.items()},
    }  # fmt: skip
    out = Path(cfg.out) if cfg.out else path.parent / f"metrics-step{header.get('step', 0)}.json"
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    for name, value in report["metrics"].items():
        print(f"{name:>24s}  {value:.4f}")
    print(f"wrote {out}")
    run_id = header.get("mlflow_run_id")
    if cfg.log and run_id:
        if judged_otherwise:  # its eval/* history is another protocol's: the report alone has these
            print(f"the judge's readings are not logged to MLflow run {run_id}: it logged its own under "
                  "the judge settings of before stop 34 (16 captions drawn by its seed); they are in the report")
            # EVAL_METRICS are the judge's keys; their per-attribute keys extend them.
            results = {name: value for name, value in results.items() if not name.startswith(EVAL_METRICS)}
        _log_to_run(run_id, results, header.get("step", 0), out, cfg.tracking_uri or _tracking_uri(config))
    return report


def metrics_config(config: dict, settings: dict) -> dict:
    """The metrics group a checkpoint is evaluated with: conf/metrics/default.yaml, then what the
    checkpoint's config sets (a checkpoint from before a key existed gets today's default), then
    this command's `settings` (where the weights are, batch size)."""
    return {**_metrics_defaults(config["paths"]), **config.get("metrics", {}), **settings}


def _metrics_defaults(paths: dict) -> dict:
    """conf/metrics/default.yaml resolved against the checkpoint's paths."""
    defaults = OmegaConf.create({"paths": paths, "metrics": OmegaConf.load(METRICS_DEFAULTS)})
    return OmegaConf.to_container(defaults, resolve=True)["metrics"]


def _tracking_uri(config: dict) -> str:
    from t2igan.tracking import tracking_uri

    return tracking_uri(config.get("tracking", {}).get("uri"), config["paths"]["root"])


def _log_to_run(run_id: str, results: dict, step: int, report: Path, uri: str) -> None:
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    now = int(time.time() * 1000)
    try:
        client.log_batch(run_id, metrics=[Metric(name, float(value), now, step) for name, value in results.items()])
        client.log_artifact(run_id, str(report), "evaluation")
    except MlflowException as error:
        print(f"warning: could not log to MLflow run {run_id} at {uri}: {str(error).splitlines()[0]}")
        return
    print(f"logged to MLflow run {run_id}")


# A config root of its own, like t2igan.generate.
@hydra.main(config_path="../conf/evaluate", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
