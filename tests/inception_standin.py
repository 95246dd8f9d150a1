"""A small stand-in for the reference `inception-2015-12-05` graph: the same tensor names and
shapes (`ResizeBilinear:0` 299 x 299 in, `pool_3:0` (B, 1, 1, 2048), `softmax/logits/MatMul`
with (2048, 1008) weights, a batch-1 reshape before it as in the original), random weights."""

import numpy as np


def build_stand_in(path, seed: int = 0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        decoded = tf.compat.v1.placeholder(tf.float32, [None, None, 3], name="DecodeJpeg")
        expanded = tf.expand_dims(decoded, 0, name="ExpandDims")
        resized = tf.compat.v1.image.resize_bilinear(expanded, [299, 299], name="ResizeBilinear")
        normalised = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1 / 128.0, name="Mul")
        kernel = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 16)).astype(np.float32))
        conv = tf.nn.relu(tf.nn.conv2d(normalised, kernel, strides=4, padding="SAME"))
        pooled = tf.reduce_mean(conv, axis=[1, 2])
        projection = tf.constant(rng.normal(0, 1, (16, 2048)).astype(np.float32))
        pool_3 = tf.reshape(tf.matmul(pooled, projection), [-1, 1, 1, 2048], name="pool_3")
        flat = tf.reshape(pool_3, [1, 2048], name="pool_3/_reshape")
        weights = tf.constant(rng.normal(0, 0.05, (2048, 1008)).astype(np.float32), name="softmax/weights")
        logits = tf.matmul(flat, weights, name="softmax/logits/MatMul")
        tf.nn.softmax(tf.nn.bias_add(logits, tf.zeros([1008]), name="softmax/logits"), name="softmax")
    with open(path, "wb") as handle:
        handle.write(graph.as_graph_def().SerializeToString())
    return path
