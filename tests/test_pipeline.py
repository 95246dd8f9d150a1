import numpy as np
import pytest

import t2igan  # noqa: F401
from t2igan.data.pipeline import training_batches


def make_data(num_images=10, captions=3, dim=4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num_images, 8, 8, 3), dtype=np.uint8)
    # Embedding value encodes (image, caption) so the pairing can be checked.
    embeddings = np.zeros((num_images, captions, dim), np.float32)
    embeddings[..., 0] = np.arange(num_images)[:, None]
    embeddings[..., 1] = np.arange(captions)[None, :]
    return images, embeddings


def take(dataset, count):
    return [(np.asarray(x), np.asarray(t)) for x, t in dataset.take(count)]


def test_batches_pair_images_with_their_own_captions():
    images, embeddings = make_data()
    for real_images, text in take(training_batches(images, embeddings, batch_size=4, seed=0), 5):
        assert real_images.shape == (4, 8, 8, 3) and text.shape == (4, 4)
        assert real_images.min() >= -1.0 and real_images.max() <= 1.0
        owners = text[:, 0].astype(int)
        np.testing.assert_allclose(real_images, images[owners] / 127.5 - 1.0, atol=1e-6)
        assert set(text[:, 1].astype(int)) <= {0, 1, 2}


def test_each_epoch_is_a_permutation():
    images, embeddings = make_data(num_images=8)
    batches = take(training_batches(images, embeddings, batch_size=4, seed=3), 4)
    first_epoch = np.concatenate([text[:, 0] for _, text in batches[:2]])
    second_epoch = np.concatenate([text[:, 0] for _, text in batches[2:]])
    assert sorted(first_epoch) == sorted(second_epoch) == list(range(8))
    assert not np.array_equal(first_epoch, second_epoch)


def test_a_resumed_stream_continues_exactly():
    images, embeddings = make_data()
    full = take(training_batches(images, embeddings, batch_size=4, seed=7), 6)
    resumed = take(training_batches(images, embeddings, batch_size=4, seed=7, start_step=4), 2)
    for (x_full, t_full), (x_resumed, t_resumed) in zip(full[4:], resumed):
        np.testing.assert_array_equal(x_full, x_resumed)
        np.testing.assert_array_equal(t_full, t_resumed)
    other_seed = take(training_batches(images, embeddings, batch_size=4, seed=8), 1)
    assert not np.array_equal(full[0][1], other_seed[0][1])


def test_negatives_come_with_the_caption_drawn_and_leave_the_batches_alone():
    images, embeddings = make_data()
    negatives = embeddings + 100.0  # the negative of caption (i, c) encodes (i, c) too
    has_negative = (np.arange(3) % 2 == 0)[None, :].repeat(10, axis=0)  # captions 0 and 2 have one
    plain = take(training_batches(images, embeddings, batch_size=4, seed=5), 4)
    extended = list(training_batches(images, embeddings, batch_size=4, seed=5, negative_embeddings=negatives,
                                     has_negative=has_negative).take(4))  # fmt: skip
    for (real_images, text), (real_with, text_with, negative, has) in zip(plain, extended):
        np.testing.assert_array_equal(real_images, real_with)
        np.testing.assert_array_equal(text, text_with)
        np.testing.assert_array_equal(negative, text + 100.0)
        np.testing.assert_array_equal(has, text[:, 1] % 2 == 0)
    with pytest.raises(ValueError, match="go together"):
        training_batches(images, embeddings, batch_size=4, seed=5, negative_embeddings=negatives)
    with pytest.raises(ValueError, match="negatives of shape"):
        training_batches(images, embeddings, batch_size=4, seed=5, negative_embeddings=negatives[:, :2],
                         has_negative=has_negative[:, :2])  # fmt: skip


def test_random_crops_and_flips_are_windows_of_each_image_and_differ_per_image():
    num_images = 16
    # Each image is a ramp (row * 16 + column), so a window's top-left pixel names its corner.
    ramp = (np.arange(10)[:, None] * 16 + np.arange(10)[None, :]).astype(np.uint8)
    images = np.broadcast_to(ramp[None, :, :, None], (num_images, 10, 10, 3)).copy()
    _, embeddings = make_data(num_images=num_images)
    dataset = training_batches(images, embeddings, batch_size=16, seed=1, crop_size=8, random_flip=True)
    (real_images, _), = take(dataset, 1)
    assert real_images.shape == (16, 8, 8, 3)
    pixels = np.rint((real_images[..., 0] + 1.0) * 127.5).astype(int)
    corners, flips = set(), 0
    for window in pixels:
        flipped = window[0, 0] > window[0, -1]
        flips += flipped
        window = window[:, ::-1] if flipped else window
        top, left = divmod(int(window[0, 0]), 16)
        np.testing.assert_array_equal(window, ramp[top : top + 8, left : left + 8])
        corners.add((top, left))
    assert len(corners) > 3 and 0 < flips < 16  # a window and a coin flip per image


@pytest.mark.parametrize("crop_size", [None, 8])
def test_without_a_smaller_crop_size_images_pass_unchanged(crop_size):
    images, embeddings = make_data()
    (real_images, text), = take(training_batches(images, embeddings, batch_size=4, seed=0, crop_size=crop_size), 1)
    np.testing.assert_allclose(real_images, images[text[:, 0].astype(int)] / 127.5 - 1.0, atol=1e-6)
