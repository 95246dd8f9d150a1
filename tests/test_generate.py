"""Generation from a trained checkpoint: the CLI, the Sampler, and the MLflow model."""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# One xdist worker runs the whole module, so the trained run below is trained once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("generate")]
REPO = Path(__file__).resolve().parents[1]


def environment(root: Path) -> dict:
    return {**os.environ, "T2IGAN_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained through the command line: (root, checkpoint path, MLflow run id)."""
    root = tmp_path_factory.mktemp("trained")
    result = subprocess.run(
        [sys.executable, "-m", "t2igan.train", "experiment=smoke", "trainer.progress=false", "trainer.steps=6"],
        cwd=REPO, env=environment(root), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (root / "runs").iterdir()
    run_id = json.loads((folder / "run.json").read_text())["mlflow_run_id"]
    return root, folder / "checkpoint.npz", run_id


def compose_generate(**values):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf" / "generate"), version_base="1.3"):
        return compose("config", overrides=[f"{key}={json.dumps(value)}" for key, value in values.items()])


def tiles(path: Path, rows: int, columns: int, size: int = 64, padding: int = 2) -> np.ndarray:
    grid = np.asarray(Image.open(path))
    return np.stack([
        np.stack([grid[padding + r * (size + padding):][:size, padding + c * (size + padding):][:, :size]
                  for c in range(columns)])
        for r in range(rows)
    ])  # fmt: skip


def test_same_seed_same_images_other_caption_other_images(trained, tmp_path):
    from t2igan.generate import generate

    _, checkpoint, _ = trained
    first = generate(compose_generate(checkpoint=str(checkpoint), text="a red bird", n=3, out=str(tmp_path / "a.png")))
    again = generate(compose_generate(checkpoint=str(checkpoint), text="a red bird", n=3, out=str(tmp_path / "b.png")))
    other = generate(compose_generate(checkpoint=str(checkpoint), text="a large bird with blue wings on the sand",
                                      n=3, out=str(tmp_path / "c.png")))  # fmt: skip
    np.testing.assert_array_equal(tiles(first, 1, 3), tiles(again, 1, 3))
    assert not np.array_equal(tiles(first, 1, 3), tiles(other, 1, 3))
    reseeded = generate(compose_generate(checkpoint=str(checkpoint), text="a red bird", n=3, seed=5,
                                         out=str(tmp_path / "d.png")))  # fmt: skip
    assert not np.array_equal(tiles(first, 1, 3), tiles(reseeded, 1, 3))


def test_the_generator_embeds_captions_as_its_run_did(trained, monkeypatch):
    from t2igan import sampler
    from t2igan.checkpoint import read_header

    _, checkpoint, _ = trained
    assert sampler.Sampler.from_checkpoint(checkpoint).embedder.pooling == "sentence"
    header = read_header(checkpoint)
    header["config"]["text"]["pooling"] = "phrases"  # as a text.pooling=phrases run records it
    monkeypatch.setattr(sampler, "read_header", lambda path: header)
    assert sampler.Sampler.from_checkpoint(checkpoint).embedder.pooling == "phrases"


def test_captions_file_writes_a_grid_and_one_image_per_sample(trained, tmp_path):
    from t2igan.generate import generate

    _, checkpoint, _ = trained
    captions = tmp_path / "captions.txt"
    captions.write_text("a red bird\n\na bird with a long bill\nthis bird is on the sand\n", encoding="utf-8")
    grid = generate(compose_generate(checkpoint=str(checkpoint), captions=str(captions), n=2,
                                     out=str(tmp_path / "grid.png")))  # fmt: skip
    singles = sorted((tmp_path / "grid").glob("*.png"))
    assert len(singles) == 3 * 2
    np.testing.assert_array_equal(np.asarray(Image.open(singles[-1])), tiles(grid, 3, 2)[2, 1])


def test_interpolation_ends_are_the_two_captions_images(trained, tmp_path):
    from t2igan.generate import generate

    _, checkpoint, _ = trained
    start, end = "a red bird with black wings", "a small yellow bird on the sand"
    strip = generate(compose_generate(checkpoint=str(checkpoint), mode="interpolate", text=start, text2=end,
                                      n=5, out=str(tmp_path / "strip.png")))  # fmt: skip
    # Column 0 of a grid uses the same first noise vector as the strip.
    first = generate(compose_generate(checkpoint=str(checkpoint), text=start, n=1, out=str(tmp_path / "s.png")))
    last = generate(compose_generate(checkpoint=str(checkpoint), text=end, n=1, out=str(tmp_path / "e.png")))
    walk = tiles(strip, 1, 5)[0]
    np.testing.assert_array_equal(walk[0], tiles(first, 1, 1)[0, 0])
    np.testing.assert_array_equal(walk[-1], tiles(last, 1, 1)[0, 0])
    assert not np.array_equal(walk[0], walk[-1])


def test_command_line_by_run_id_and_its_errors(trained, tmp_path):
    root, _, run_id = trained
    out = tmp_path / "by_run.png"
    command = [sys.executable, "-m", "t2igan.generate", f"checkpoint={run_id}", "text='a blue bird'", "n=2", f"out={out}"]
    result = subprocess.run(command, cwd=root, env=environment(root), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(out).size[1] == 68  # one row of 64 px plus padding

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, kernel=np.zeros(3))
    for checkpoint, message in [(foreign, "not a t2igan checkpoint"), (tmp_path / "missing.npz", "not a file")]:
        bad = subprocess.run([*command[:3], f"checkpoint={checkpoint}", "text=x", f"out={tmp_path / 'x.png'}"],
                             cwd=root, env=environment(root), capture_output=True, text=True, timeout=300)  # fmt: skip
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "x.png").exists()


def test_the_logged_pyfunc_model_predicts_in_process(trained, monkeypatch):
    import mlflow

    root, _, run_id = trained
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; monkeypatch restores it afterwards.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/generator")
    import pandas as pd

    predictions = model.predict(pd.DataFrame({"caption": ["a red bird", "a blue bird"]}), params={"n": 2})
    assert list(predictions["caption"]) == ["a red bird"] * 2 + ["a blue bird"] * 2
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(png)))) for png in predictions["image_png_base64"]]
    assert all(image.shape == (64, 64, 3) for image in images)
    assert not np.array_equal(images[0], images[1])  # two noise samples


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mlflow_models_serve_answers_a_request(trained):
    root, _, run_id = trained
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run_id}/generator",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        # The server runs `uvicorn` from PATH: the virtual environment's bin, as when activated.
        cwd=root, env={**environment(root), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        body = json.dumps({"inputs": {"caption": ["a red bird"]}, "params": {"n": 2, "seed": 1}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=120) as response:
            predictions = json.loads(response.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [row["sample"] for row in predictions] == [0, 1]
    image = Image.open(io.BytesIO(base64.b64decode(predictions[0]["image_png_base64"])))
    assert image.size == (64, 64)
