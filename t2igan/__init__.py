"""t2igan: train text-to-image GANs that converge (TensorFlow backend of Keras 3)."""

import os

# Keras reads its backend once, at first import: pin it before anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up chatter (oneDNN, CPU feature notes) drowns the progress bar.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
