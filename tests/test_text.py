import numpy as np
import pytest

from t2igan.text import encoder
from t2igan.text.encoder import CaptionEmbedder, TextEncoderError, sentence_of, split_phrases


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


@pytest.mark.parametrize(
    ("caption", "phrases"),
    [
        ("bird has red chest, red wings and black bill", ["bird has red chest", "red wings", "black bill"]),
        ("a bird seen against the sky, with a red crown and a short beak",
         ["a bird seen against the sky", "with a red crown", "a short beak"]),
        ("this bird is small", ["this bird is small"]),
        ("A Bird With Sandy Wings; Long Bill", ["A Bird", "Sandy Wings", "Long Bill"]),
        ("wandering handsome bird", ["wandering handsome bird"]),  # "and"/"with" only as words
        ("a red crown, ", ["a red crown"]),
    ],
)  # fmt: skip
def test_captions_split_into_phrases_at_commas_and_conjunctions(caption, phrases):
    assert split_phrases(caption) == phrases


def test_phrase_pooling_averages_the_phrases_at_their_length_and_shares_the_cache(tmp_path, monkeypatch):
    encoded = []
    basis = {"red crown": [3.0, 0.0, 0.0], "blue wings": [0.0, 3.0, 0.0], "a bird": [0.0, 0.0, 3.0]}

    class FakeModel:
        def encode(self, captions, **kwargs):
            encoded.extend(captions)
            return np.array([basis[c] for c in captions], np.float32)

    monkeypatch.setattr(encoder, "_load_sentence_transformer", lambda *a: FakeModel())
    embedder = CaptionEmbedder(model="fake", dim=3, cache_dir=tmp_path, show_progress=False, pooling="phrases")
    vectors = embedder.embed(["red crown and blue wings", "a bird", "blue wings, red crown"])
    np.testing.assert_allclose(vectors[0], [3 / np.sqrt(2), 3 / np.sqrt(2), 0.0], rtol=1e-6)  # length 3, as each
    np.testing.assert_allclose(vectors[1], [0.0, 0.0, 3.0])
    np.testing.assert_allclose(vectors[2], vectors[0], rtol=1e-6)  # the order of the phrases does not matter
    assert encoded == ["red crown", "blue wings", "a bird"]  # each phrase once, into the model's store
    sentences = CaptionEmbedder(model="fake", dim=3, cache_dir=tmp_path, show_progress=False)
    np.testing.assert_array_equal(sentences.embed(["a bird"]), [[0.0, 0.0, 3.0]])  # cached by the phrase run
    assert embedder.embed([]).shape == (0, 3)


def test_an_unknown_pooling_is_a_clear_error(tmp_path):
    with pytest.raises(TextEncoderError, match="text.pooling"):
        CaptionEmbedder(model=None, dim=384, cache_dir=tmp_path, pooling="words")


@pytest.mark.parametrize("caption, rotated", [
    ("a red crown and blue wings", "a blue crown and red wings"),
    ("red crown, blue wings and a green belly", "blue crown, green wings and a red belly"),
    ("Red crown, red bill and white wings", "White crown, white bill and red wings"),  # every use moves
    ("a bird among green leaves with yellow wings", "a bird among yellow leaves with green wings"),
    ("black and white wings and a red bill", "red wings and a black and white bill"),  # places move whole
    ("a red and white bird", None),  # one place: "a white and red bird" says the same
    ("olive-green wings, a grey crown", "grey wings, a olive-green crown"),
    ("a grey bill and gray wings", None),  # one colour, two spellings
    ("a golden crown and a gold bill", None),
    ("bird with black wings", None),
    ("a bird on sandy ground", None),
    ("a bluebird with reddish wings", None),  # whole words only
])  # fmt: skip
def test_rotate_colours_moves_each_places_colours_to_the_next_place(caption, rotated):
    from t2igan.text.negatives import rotate_colours

    assert rotate_colours(caption) == rotated


def test_training_captions_get_the_embeddings_of_their_rotated_colours():
    from t2igan.data.datasets import CaptionedImages
    from t2igan.errors import UserError
    from t2igan.text.negatives import rotated_colour_negatives

    def split(captions):
        return CaptionedImages(np.zeros((len(captions), 8, 8, 3), np.uint8), captions)

    class LengthEmbedder:  # each caption's vector is its length; keeps what it embedded
        def __init__(self):
            self.embedded = []

        def embed(self, captions):
            self.embedded.extend(captions)
            return np.array([[len(caption), 1.0] for caption in captions], np.float32)

    embedder = LengthEmbedder()
    negatives, has_negative = rotated_colour_negatives(
        embedder, split([["a red crown and blue wings", "a bird"], ["black wings", "red cap, grey bill"]]))
    assert embedder.embedded == ["a blue crown and red wings", "grey cap, red bill"]
    np.testing.assert_array_equal(has_negative, [[True, False], [False, True]])
    np.testing.assert_array_equal(negatives, [[[26, 1], [0, 0]], [[0, 0], [18, 1]]])

    class TokenEmbedder:  # phrase tokens: (1 + K, D) per caption
        def embed(self, captions):
            return np.array([[[len(caption), 1.0], [1.0, 1.0]] for caption in captions], np.float32)

    negatives, _ = rotated_colour_negatives(TokenEmbedder(), split([["a red crown and blue wings", "a bird"]]))
    np.testing.assert_array_equal(negatives, [[[[26, 1], [1, 1]], [[0, 0], [0, 0]]]])
    with pytest.raises(UserError, match="no training caption names two colours"):
        rotated_colour_negatives(embedder, split([["a bird"], ["black and white wings"]]))


def test_phrase_tokens_are_the_caption_vector_then_its_phrases_padded_with_zeros(tmp_path, monkeypatch):
    basis = {"red crown and blue wings": [1.0, 1.0, 0.0], "red crown": [3.0, 0.0, 0.0],
             "blue wings": [0.0, 3.0, 0.0], "a bird": [0.0, 0.0, 3.0]}  # fmt: skip

    class FakeModel:
        def encode(self, captions, **kwargs):
            return np.array([basis[c] for c in captions], np.float32)

    monkeypatch.setattr(encoder, "_load_sentence_transformer", lambda *a: FakeModel())

    def embedder(**options):
        return CaptionEmbedder(model="fake", dim=3, cache_dir=tmp_path, show_progress=False, **options)

    tokens = embedder(phrase_tokens=2).embed(["red crown and blue wings", "a bird"])
    assert tokens.shape == (2, 3, 3) and tokens.dtype == np.float32
    np.testing.assert_array_equal(tokens[0], [[1, 1, 0], [3, 0, 0], [0, 3, 0]])
    np.testing.assert_array_equal(tokens[1], [[0, 0, 3], [0, 0, 3], [0, 0, 0]])  # one phrase, then padding
    np.testing.assert_array_equal(sentence_of(tokens), embedder().embed(["red crown and blue wings", "a bird"]))
    first = embedder(phrase_tokens=1).embed(["red crown and blue wings"])  # the first K phrases
    np.testing.assert_array_equal(first[0], [[1, 1, 0], [3, 0, 0]])
    pooled = embedder(phrase_tokens=2, pooling="phrases").embed(["red crown and blue wings"])
    np.testing.assert_allclose(pooled[0, 0], [3 / np.sqrt(2), 3 / np.sqrt(2), 0.0], rtol=1e-6)  # row 0 as pooled
    np.testing.assert_array_equal(pooled[0, 1:], tokens[0, 1:])
    assert embedder(phrase_tokens=2).embed([]).shape == (0, 3, 3)
    with pytest.raises(TextEncoderError, match="phrase_tokens"):
        embedder(phrase_tokens=-1)


def test_the_store_is_read_again_only_after_another_embedder_wrote_it(tmp_path, monkeypatch):
    encoded, reads = [], []

    class FakeModel:
        def encode(self, captions, **kwargs):
            encoded.extend(captions)
            return np.array([[len(c), 1.0] for c in captions], np.float32)

    monkeypatch.setattr(encoder, "_load_sentence_transformer", lambda *a: FakeModel())
    load = np.load
    monkeypatch.setattr(encoder.np, "load", lambda *a, **k: reads.append(1) or load(*a, **k))

    def embedder():
        return CaptionEmbedder(model="fake", dim=2, cache_dir=tmp_path, show_progress=False)

    first = embedder()
    for _ in range(3):
        np.testing.assert_array_equal(first.embed(["a bird"]), [[6, 1]])
    assert len(reads) == 0  # it wrote the store itself and keeps it
    np.testing.assert_array_equal(embedder().embed(["a red bird"]), [[10, 1]])  # reads it, adds one
    assert len(reads) == 1
    np.testing.assert_array_equal(first.embed(["a red bird", "a bird"]), [[10, 1], [6, 1]])
    assert len(reads) == 2 and encoded == ["a bird", "a red bird"]  # re-read, nothing encoded twice
