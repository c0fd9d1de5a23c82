"""Outputs and gradients of every native op, written to an .npz file.

    python -m tests.layers.native_outputs OUT.npz [LIBRARY]

Run by `test_native_cpu_independence.py` in a process of its own per
library (TensorFlow loads one library of these ops per process): LIBRARY is
a build of `keras_ln.layers._native` to load instead of the default one.
Covers the layer-norm ops, the LN-LSTM, LN-GRU and BatchNormLSTM forward
and backward-through-time ops (outputs and every gradient, in training),
and fits through the MLPs' native training loop (with its Adam update), in
float32 and float64, on batches of one shard and of several.
"""

import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_ln.layers import _native  # noqa: E402

if len(sys.argv) > 2:
    _native.library_path = lambda: sys.argv[2]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
import keras_ln  # noqa: E402
from keras_ln.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from keras_ln.sklearn import _execution  # noqa: E402

DTYPES = ("float32", "float64")


def layer_norm_ops(out):
    mod = _native.ops()
    rng = np.random.default_rng(1)
    # One, two, four and eight shards (LayerNormShards); rows that fill
    # no register tile; one feature.
    for dtype in DTYPES:
        for shape in [(256, 64), (37, 17), (5, 3), (64, 1), (300, 257), (1024, 130), (1000, 264)]:
            for has_gamma, has_beta in [(True, True), (False, True), (True, False)]:
                x = tf.constant((rng.normal(size=shape) * 3 + 1).astype(dtype))
                dy = tf.constant(rng.normal(size=shape).astype(dtype))
                param = lambda on: tf.constant(  # noqa: E731
                    rng.normal(size=shape[1]).astype(dtype) if on else np.zeros(0, dtype))
                gamma, beta = param(has_gamma), param(has_beta)
                y, stats = mod.keras_ln_layer_norm_forward(x, gamma, beta, tf.constant(1e-3, dtype))
                grads = mod.keras_ln_layer_norm_backward(dy, x, stats, gamma)
                key = f"layer_norm {dtype} {shape} {has_gamma:d}{has_beta:d}"
                for name, a in zip(("y", "stats", "dx", "dgamma", "dbeta"), (y, stats, *grads)):
                    out[f"{key} {name}"] = a.numpy()


def recurrent_layers(out):
    layers = {
        "LayerNormLSTM": lambda dtype: keras_ln.LayerNormLSTM(
            24, return_sequences=True, dtype=dtype, use_kernel="native"),
        "LayerNormGRU": lambda dtype: keras_ln.LayerNormGRU(
            20, return_sequences=True, dtype=dtype, use_kernel="native"),
        "BatchNormLSTM": lambda dtype: keras_ln.BatchNormLSTM(
            18, return_sequences=True, dtype=dtype, use_kernel="native"),
    }
    for dtype in DTYPES:
        for name, make in layers.items():
            for batch in (200, 37):
                keras.utils.set_random_seed(0)
                layer = make(dtype)
                x = np.random.default_rng(batch).normal(size=(batch, 6, 5))
                x = tf.constant(x.astype(dtype))
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x, training=True)
                    loss = tf.reduce_sum(y * y) + 0.3 * tf.reduce_sum(y)
                grads = tape.gradient(loss, [x] + layer.trainable_weights)
                out[f"{name} {dtype} {batch} y"] = y.numpy()
                for i, g in enumerate(grads):
                    out[f"{name} {dtype} {batch} grad {i}"] = g.numpy()


def mlp_fits(out):
    runs = []
    native_epochs = _execution._Program._native_epochs
    _execution._Program._native_epochs = lambda self, *a: runs.append(1) or native_epochs(self, *a)
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        X = rng.normal(size=(1000, 12)).astype(dtype)
        y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int)
        fits = {
            f"MLPClassifier {dtype} {norm} {act}": (
                MLPClassifier((40, 37), activation=act, normalization=norm, alpha=1e-3,
                              batch_size=200, max_iter=3, random_state=0), y)
            for norm in (None, "layer") for act in ("relu", "tanh")
        }
        fits[f"MLPRegressor {dtype} layer batch 37"] = (
            MLPRegressor((33,), normalization="layer", batch_size=37, max_iter=2, random_state=0),
            np.stack([X[:, 0], X[:, 1] * X[:, 3]], 1))
        for key, (est, target) in fits.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(X, target)
            for i, w in enumerate(est.model_.get_weights()):
                out[f"{key} weight {i}"] = w
            out[f"{key} loss curve"] = np.array(est.loss_curve_)
    return len(runs)


def main(path):
    if _native.ops() is None:
        raise SystemExit(f"no native ops: {_native.load_error()}")
    out = {}
    layer_norm_ops(out)
    recurrent_layers(out)
    out["native loop fits"] = np.array(mlp_fits(out))
    out["library"] = np.array(_native.library_path())
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
