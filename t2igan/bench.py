"""`python -m t2igan.bench`: training and generation throughput, in images per second.

Measures the StackGAN Stage-I train step (one D and one G update per batch) on in-memory
tensors and through the real input pipeline, the input pipeline alone, and generation with
the EMA generator. A benchmark, not a test: it prints numbers and asserts nothing. Shared
2-core machines are noisy (the same step has been seen at both 187 and 305 img/s), so each
figure is timed several times and reported as median and best.
"""

import argparse
import statistics
import time

import numpy as np

import t2igan  # noqa: F401  (pins the Keras backend)

DEFAULTS = dict(
    architecture="stackgan", image_size=64, noise_dim=100, condition_dim=128, text_dim=384, generator_channels=1024,
    discriminator_channels=64, dropout=0.0, augment=["flip"], loss="bce", kl_weight=2.0,
    wrong_weight=0.5, real_label=1.0, ema_decay=0.999, d_norm="batch", minibatch_std=False, g_lr=2e-4, d_lr=2e-4, beta_1=0.5,
    beta_2=0.999,
)  # fmt: skip


def _timed(run, steps: int, warmup: int, repeats: int = 1) -> list[float]:
    """Seconds per step of `run(steps)`, `repeats` times, after `run(warmup)`."""
    run(warmup)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(steps)
        seconds.append((time.perf_counter() - started) / steps)
    return seconds


def bench_precision(precision: str, *, width: float, batch_size: int, steps: int, warmup: int,
                    repeats: int, num_images: int) -> dict[str, list[float]]:
    """Images/s of each figure, one value per repeat."""
    import keras
    import tensorflow as tf

    from t2igan.data.pipeline import training_batches
    from t2igan.gan import build_gan

    keras.mixed_precision.set_global_policy(precision)
    gan = build_gan(**DEFAULTS, width=width, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num_images, 64, 64, 3), dtype=np.uint8)
    embeddings = rng.standard_normal((num_images, 10, 384)).astype(np.float32)
    in_memory = tf.data.Dataset.from_tensors(
        (tf.constant(images[:batch_size], tf.float32) / 127.5 - 1.0, tf.constant(embeddings[:batch_size, 0]))
    ).repeat()
    pipeline = training_batches(images, embeddings, batch_size=batch_size, seed=0)

    def fit(dataset):
        return lambda n: gan.fit(dataset, epochs=1, steps_per_epoch=n, verbose=0, shuffle=False)

    def drain(n):
        for _ in pipeline.take(n):
            pass

    noise = rng.standard_normal((256, 100)).astype(np.float32)
    text = rng.standard_normal((256, 384)).astype(np.float32)
    generate = tf.function(lambda: gan.generate(noise, text))

    def generate_n(n):
        for _ in range(n):
            generate().numpy()

    def rates(images_per_step, *timing):
        return [images_per_step / seconds for seconds in _timed(*timing, repeats=repeats)]

    return {
        "train, in-memory tensors": rates(batch_size, fit(in_memory), steps, warmup),
        "train, input pipeline": rates(batch_size, fit(pipeline), steps, warmup),
        "input pipeline alone": rates(batch_size, drain, steps * 10, warmup),
        "generate, EMA G, batch 256": rates(256, generate_n, max(2, steps // 3), 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0, help="model width multiplier")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed train steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats per figure; median and best are printed")
    parser.add_argument("--precision", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--num-images", type=int, default=2048, help="images in the pipeline")
    args = parser.parse_args(argv)
    import tensorflow as tf

    print(f"stackgan_stage1, width {args.width}, batch {args.batch_size}, 64x64; "
          f"TensorFlow {tf.__version__}, {len(tf.config.list_physical_devices('GPU'))} GPU(s)")  # fmt: skip
    for precision in args.precision:
        figures = bench_precision(
            precision, width=args.width, batch_size=args.batch_size, steps=args.steps,
            warmup=args.warmup, repeats=args.repeats, num_images=args.num_images,
        )  # fmt: skip
        for name, rates in figures.items():
            print(f"  {precision:15s} {name:28s} median {statistics.median(rates):9.1f} img/s"
                  f"   best {max(rates):9.1f} img/s")  # fmt: skip


if __name__ == "__main__":
    main()
