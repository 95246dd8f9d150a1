"""The reference Inception network of FID, KID and IS: TensorFlow's `inception-2015-12-05`.

This is the graph the original FID code (TTUR) and Inception Score code used, and that
pytorch-fid and clean-fid port. It runs here as the frozen TensorFlow graph itself, fed at
its resized-input tensor with images resized the "clean" way: quantised to uint8, then
bicubic with antialiasing to 299 x 299 (PIL's filter). Features are `pool_3` (2048-d); logits
are `pool_3` times the softmax layer's weights without its bias, as the reference IS code did.

The weights cannot be bundled: they come from `inception-2015-12-05.tgz` or the
`classify_image_graph_def.pb` inside it, at a configured path or in the cache; where a network
exists they are downloaded once, and checked against a SHA-256 when one is configured.
"""

import hashlib
import shutil
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

from t2igan.errors import UserError

URL = "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
ARCHIVE = "inception-2015-12-05.tgz"
GRAPH_FILE = "classify_image_graph_def.pb"
INPUT_TENSOR = "ResizeBilinear:0"  # (1, 299, 299, 3) floats in [0, 255]; fed with any batch
POOL_TENSOR = "pool_3:0"  # (B, 1, 1, 2048)
SOFTMAX_MATMUL = "softmax/logits/MatMul"  # its second input: (2048, 1008) weights
SIZE = 299
FEATURES = 2048


class InceptionUnavailable(UserError):
    """The reference weights are not on disk and could not be fetched."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract_graph(archive: Path, target: Path) -> Path:
    with tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if Path(m.name).name == GRAPH_FILE and m.isfile()), None)
        if member is None:
            raise InceptionUnavailable(f"{archive} has no {GRAPH_FILE}")
        with tar.extractfile(member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    return target


def locate_inception(path: str | Path | None, cache_dir: str | Path, *, sha256: str | None = None,
                     download: bool = True) -> Path:  # fmt: skip
    """The `classify_image_graph_def.pb` to use: `path` (the .pb, the .tgz, or a folder with
    either), else the cache, else downloaded into the cache (when `download` and a network
    exists). `sha256` (of the .tgz) is checked on download; None checks nothing."""
    cache = Path(cache_dir)
    graph = cache / GRAPH_FILE
    candidates = []
    if path is not None:
        path = Path(path).expanduser()
        candidates += [path / GRAPH_FILE, path / ARCHIVE] if path.is_dir() else [path]
    candidates += [graph, cache / ARCHIVE]
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix == ".pb":
            return candidate
        if candidate.is_file() and candidate.name.endswith((".tgz", ".tar.gz")):
            cache.mkdir(parents=True, exist_ok=True)
            return _extract_graph(candidate, graph)
    if path is not None:
        raise InceptionUnavailable(f"metrics.inception_path={path}: no {GRAPH_FILE} or {ARCHIVE} there")
    if download:
        cache.mkdir(parents=True, exist_ok=True)
        archive = cache / ARCHIVE
        partial = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(URL, timeout=30) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise InceptionUnavailable(_missing_message(cache, f"download failed: {error}")) from None
        if sha256 is not None and _sha256(partial) != sha256.lower():
            partial.unlink()
            raise InceptionUnavailable(f"{URL} does not match metrics.inception_sha256; not used")
        partial.rename(archive)
        return _extract_graph(archive, graph)
    raise InceptionUnavailable(_missing_message(cache, "downloads are off"))


def _missing_message(cache: Path, why: str) -> str:
    return (f"the reference Inception weights are missing ({why}): download {URL} on a machine "
            f"with network and put {ARCHIVE} (or the {GRAPH_FILE} inside it) in {cache}/, or set "
            "metrics.inception_path=<file or folder>")  # fmt: skip


def resize_for_inception(images: np.ndarray) -> "np.ndarray":
    """(B, H, W, 3) uint8 -> (B, 299, 299, 3) float32 in [0, 255]: bicubic with antialiasing,
    the same filter as PIL's BICUBIC (a = -0.5)."""
    import tensorflow as tf

    if images.dtype != np.uint8:
        raise ValueError(f"Inception metrics take uint8 images (quantise first), got {images.dtype}")
    resized = tf.image.resize(tf.cast(images, tf.float32), [SIZE, SIZE], method="bicubic", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


class InceptionNetwork:
    """The frozen graph as a function: uint8 images -> (pool_3 features, logits).

    `graph_path` is a GraphDef with the reference tensor names (`ResizeBilinear:0` in,
    `pool_3:0` and `softmax/logits/MatMul` inside); tests build a small stand-in with them.
    """

    def __init__(self, graph_path: str | Path, *, batch_size: int = 64):
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(Path(graph_path).read_bytes())
        except Exception as error:  # a truncated or foreign file
            raise InceptionUnavailable(f"{graph_path} is not a TensorFlow GraphDef ({error})") from None
        names = {node.name for node in graph_def.node}
        for tensor in (INPUT_TENSOR, POOL_TENSOR, SOFTMAX_MATMUL + ":0"):
            if tensor.split(":")[0] not in names:
                raise InceptionUnavailable(f"{graph_path} has no {tensor}: not the inception-2015-12-05 graph")

        def forward(images):
            (pool,) = tf.compat.v1.import_graph_def(graph_def, input_map={INPUT_TENSOR: images},
                                                   return_elements=[POOL_TENSOR], name="inception")  # fmt: skip
            weights = tf.compat.v1.get_default_graph().get_operation_by_name(f"inception/{SOFTMAX_MATMUL}").inputs[1]
            features = tf.reshape(pool, [-1, FEATURES])
            return features, tf.matmul(features, weights)

        spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
        self._forward = tf.compat.v1.wrap_function(forward, [spec])
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, H, W, 3) uint8 -> features (B, 2048) and logits (B, 1008), float64."""
        features, logits = [], []
        for start in range(0, len(images), self.batch_size):
            batch_features, batch_logits = self._forward(resize_for_inception(images[start : start + self.batch_size]))
            features.append(np.asarray(batch_features, np.float64))
            logits.append(np.asarray(batch_logits, np.float64))
        return np.concatenate(features), np.concatenate(logits)
