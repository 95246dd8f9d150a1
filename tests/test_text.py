import numpy as np
import pytest

from t2igan.text import encoder
from t2igan.text.encoder import CaptionEmbedder, TextEncoderError


def test_embeds_with_the_bundled_model_and_caches(tmp_path, monkeypatch):
    embedder = CaptionEmbedder(model=None, dim=384, cache_dir=tmp_path, show_progress=False)
    captions = ["this bird has a red crown", "a small bird with blue wings", "this bird has a red crown"]
    vectors = embedder.embed(captions)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert not np.allclose(vectors[0], vectors[1])

    def no_model(*args, **kwargs):
        raise AssertionError("the encoder must not load when every caption is cached")

    monkeypatch.setattr(encoder, "_load_sentence_transformer", no_model)
    again = CaptionEmbedder(model=None, dim=384, cache_dir=tmp_path, show_progress=False)
    np.testing.assert_array_equal(again.embed(captions[::-1]), vectors[::-1])


def test_only_new_captions_are_encoded(tmp_path, monkeypatch):
    encoded = []

    class FakeModel:
        def encode(self, captions, **kwargs):
            encoded.extend(captions)
            return np.array([[len(c), 1.0] for c in captions], np.float32)

    monkeypatch.setattr(encoder, "_load_sentence_transformer", lambda *a: FakeModel())
    embedder = CaptionEmbedder(model="fake", dim=2, cache_dir=tmp_path, show_progress=False)
    embedder.embed(["a", "bb"])
    vectors = embedder.embed(["bb", "ccc", "a"])
    assert encoded == ["a", "bb", "ccc"]
    np.testing.assert_array_equal(vectors[:, 0], [2, 3, 1])
    # Another model has its own store.
    CaptionEmbedder(model="other", dim=2, cache_dir=tmp_path, show_progress=False).embed(["a"])
    assert encoded[-1] == "a" and len(list(tmp_path.glob("*.npz"))) == 2


def test_a_model_of_another_width_is_a_clear_error(tmp_path, monkeypatch):
    class WideModel:
        def encode(self, captions, **kwargs):
            return np.zeros((len(captions), 768), np.float32)

    monkeypatch.setattr(encoder, "_load_sentence_transformer", lambda *a: WideModel())
    with pytest.raises(TextEncoderError, match="768-d.*text.dim=768"):
        CaptionEmbedder(model="wide", dim=384, cache_dir=tmp_path).embed(["a bird"])
    assert not list(tmp_path.glob("*.npz"))


def test_a_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(TextEncoderError, match="cannot load sentence encoder"):
        CaptionEmbedder(model=str(tmp_path / "nope"), dim=384, cache_dir=tmp_path).embed(["x"])
