import os
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing in the suite may reach a model hub; the text encoder loads from site-packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def protocol_judge(tmp_path_factory) -> tuple[Path, str]:
    """The toybirds judge at the metric's protocol, trained once per session by its command
    line (1-2 minutes): (its cache folder, what the command printed). Tests that only need a
    judge cached for a toybirds run copy the folder instead of training another."""
    cache = tmp_path_factory.mktemp("protocol-judge")
    result = subprocess.run([sys.executable, "-m", "t2igan.metrics.judge", "--cache", str(cache)],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    return cache, result.stdout


def pytest_collection_modifyitems(items):
    """Modules with end-to-end runs (marked slow) first, each module's tests kept together and
    in order (so module fixtures are built once): with several xdist workers the long runs then
    overlap one another and the short unit tests fill in at the end, instead of one long run
    finishing alone on one worker while the others idle."""
    slow_modules = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow_modules)  # stable: order kept within
