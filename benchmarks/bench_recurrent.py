"""Speed of the recurrent layers against keras' LSTM/GRU and RNN(cell).

One run, TensorFlow backend on CPU: batch 64, 100 steps, 32 features, 128
units. For each layer it times a training step (a `tf.function`-compiled
forward + backward + Adam update of `layer -> Dense(1)` on an MSE loss) and
inference (a `tf.function`-compiled forward), interleaving the contenders
round by round so that a noisy, shared machine slows them alike, and prints
the medians and the ratios against the anchors measured in the same run
(and, for the ratios with a target, the median of the rounds' paired ratios
with a 90% distribution-free interval and the verdict, `_paired.py`):

- `LayerNormLSTM` vs `keras.layers.LSTM` and vs `RNN(LayerNormLSTMCell)`
  (the cell-per-step design of tensorflow-addons), vs a cell rebuilt
  the way tfa wrote it (three `keras.layers.LayerNormalization` sublayers),
  vs itself with its XLA kernel instead of the native ops ("XLA":
  `use_kernel="xla"`), and vs itself without a kernel ("generic": keras'
  loop);
- `LayerNormGRU` vs `keras.layers.GRU` and vs `RNN(LayerNormGRUCell)`,
  and vs itself with its XLA kernel and without a kernel, as the LSTM;
- `FusedLSTM` / `FusedGRU` (keras' LSTM / GRU run by the native kernels) vs
  `keras.layers.LSTM` / `GRU`, and the normalized layers vs them: what the
  norms cost with the same kind of kernel;
- `BatchNormLSTM` (and `RNN(BatchNormLSTMCell)`) vs `keras.layers.LSTM`,
  vs itself with its TensorFlow kernel instead of the native ops ("XLA":
  `use_kernel="xla"`), and vs itself without a kernel ("generic").

Usage: `python benchmarks/bench_recurrent.py [--rounds 15] [--xla]`
(`--xla` compiles the steps with `jit_compile=True` instead).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Every model's training and inference steps are tf.functions of their own,
# each traced once: not the retracing that TensorFlow's warning about many
# traced functions is about.
tf.get_logger().setLevel("ERROR")

import keras_ln  # noqa: E402

from _paired import CONFIDENCE  # noqa: E402  (benchmarks/_paired.py)
from _paired import paired_ratio  # noqa: E402
from _paired import round_orders  # noqa: E402

BATCH, STEPS, FEATURES, UNITS = 64, 100, 32, 128


class TfaStyleLayerNormLSTMCell(keras.layers.LSTMCell):
    """tensorflow-addons' LayerNormLSTMCell design, rebuilt on keras 3 for
    this benchmark only: an LSTMCell whose step normalizes with three
    `keras.layers.LayerNormalization` sublayers (carrying the normalized
    state, as tfa did)."""

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_norm = keras.layers.LayerNormalization()
        self.recurrent_norm = keras.layers.LayerNormalization()
        self.state_norm = keras.layers.LayerNormalization()

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel_norm.build((None, 4 * self.units))
        self.recurrent_norm.build((None, 4 * self.units))
        self.state_norm.build((None, self.units))

    def call(self, inputs, states, training=False):
        h, c = states
        z = self.kernel_norm(keras.ops.matmul(inputs, self.kernel))
        z = z + self.recurrent_norm(
            keras.ops.matmul(h, self.recurrent_kernel)
        )
        z = z + self.bias
        zi, zf, zg, zo = keras.ops.split(z, 4, axis=-1)
        c = self.recurrent_activation(zf) * c + self.recurrent_activation(
            zi
        ) * self.activation(zg)
        c = self.state_norm(c)
        h = self.recurrent_activation(zo) * self.activation(c)
        return h, [h, c]


def contenders():
    return {
        "keras LSTM": lambda: keras.layers.LSTM(UNITS),
        "FusedLSTM": lambda: keras_ln.FusedLSTM(UNITS),
        "LayerNormLSTM": lambda: keras_ln.LayerNormLSTM(UNITS),
        "LayerNormLSTM (XLA)": lambda: keras_ln.LayerNormLSTM(
            UNITS, use_kernel="xla"),
        "LayerNormLSTM (generic)": lambda: keras_ln.LayerNormLSTM(
            UNITS, use_kernel=False),
        "RNN(LayerNormLSTMCell)": lambda: keras.layers.RNN(
            keras_ln.LayerNormLSTMCell(UNITS)
        ),
        "RNN(tfa-style cell)": lambda: keras.layers.RNN(
            TfaStyleLayerNormLSTMCell(UNITS)
        ),
        "keras GRU": lambda: keras.layers.GRU(UNITS),
        "FusedGRU": lambda: keras_ln.FusedGRU(UNITS),
        "LayerNormGRU": lambda: keras_ln.LayerNormGRU(UNITS),
        "LayerNormGRU (XLA)": lambda: keras_ln.LayerNormGRU(
            UNITS, use_kernel="xla"),
        "LayerNormGRU (generic)": lambda: keras_ln.LayerNormGRU(
            UNITS, use_kernel=False),
        "RNN(LayerNormGRUCell)": lambda: keras.layers.RNN(
            keras_ln.LayerNormGRUCell(UNITS)
        ),
        "BatchNormLSTM": lambda: keras_ln.BatchNormLSTM(UNITS),
        "BatchNormLSTM (XLA)": lambda: keras_ln.BatchNormLSTM(
            UNITS, use_kernel="xla"),
        "BatchNormLSTM (generic)": lambda: keras_ln.BatchNormLSTM(
            UNITS, use_kernel=False),
        "RNN(BatchNormLSTMCell)": lambda: keras.layers.RNN(
            keras_ln.BatchNormLSTMCell(UNITS, max_steps=STEPS)
        ),
    }


def make_steps(make_layer, x, y, jit_compile):
    model = keras.Sequential(
        [keras.Input((STEPS, FEATURES)), make_layer(), keras.layers.Dense(1)]
    )
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit_compile)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    @tf.function(jit_compile=jit_compile)
    def predict_step(x):
        return model(x, training=False)

    def train():
        train_step(x, y).numpy()

    def infer():
        predict_step(x).numpy()

    return train, infer


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--xla", action="store_true")
    parser.add_argument(
        "--only", default="",
        help="comma-separated substrings: time only the matching layers",
    )
    args = parser.parse_args()
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((BATCH, STEPS, FEATURES)), "float32")
    y = tf.constant(rng.standard_normal((BATCH, 1)), "float32")
    runners = {}
    for name, make_layer in contenders().items():
        if wanted and not any(w in name for w in wanted):
            continue
        keras.utils.set_random_seed(0)
        # "(generic)": the fused layer without its TensorFlow kernel; "(XLA)":
        # with its XLA kernel instead of the native ops (`use_kernel`).
        train, infer = make_steps(make_layer, x, y, args.xla)
        for _ in range(2):  # trace, compile, warm up
            train()
            infer()
        runners[name] = (train, infer)

    times = {name: ([], []) for name in runners}
    # Each round takes the layers in an order of its own (`round_orders`).
    for order in round_orders(runners, args.rounds):
        for name in order:
            train, infer = runners[name]
            times[name][0].append(timed(train))
            times[name][1].append(timed(infer))
    med = {
        name: (statistics.median(t), statistics.median(i))
        for name, (t, i) in times.items()
    }

    print(
        f"batch {BATCH}, {STEPS} steps, {FEATURES} features, {UNITS} units; "
        f"TensorFlow {tf.__version__}, keras {keras.__version__}, CPU; "
        f"{'XLA' if args.xla else 'tf.function'}; median of {args.rounds} "
        "interleaved rounds"
    )
    print(f"{'layer':<24}{'train ms':>10}{'infer ms':>10}")
    for name, (t, i) in med.items():
        print(f"{name:<24}{1e3 * t:>10.1f}{1e3 * i:>10.1f}")
    print()
    print(f"{'ratio (lower is faster)':<46}{'train':>8}{'infer':>8}")
    # (contender, anchor, note, target of the training step, of inference)
    pairs = [
        ("FusedLSTM", "keras LSTM", "the same LSTM, native kernel", None, None),
        ("LayerNormLSTM", "keras LSTM", "target train <= 1.3", 1.3, None),
        ("LayerNormLSTM", "FusedLSTM", "cost of the norms, same kernel", None, None),
        ("BatchNormLSTM", "FusedLSTM", "cost of the norms, same kernel", None, None),
        ("LayerNormLSTM", "RNN(LayerNormLSTMCell)", "target train <= 0.5", 0.5, None),
        ("LayerNormLSTM", "RNN(tfa-style cell)", "", None, None),
        ("LayerNormLSTM", "LayerNormLSTM (generic)", "kernel vs generic", None, None),
        ("LayerNormLSTM", "LayerNormLSTM (XLA)", "native vs XLA kernel", None, None),
        ("FusedGRU", "keras GRU", "the same GRU, native kernel", None, None),
        ("LayerNormGRU", "keras GRU", "target train <= 1.3", 1.3, None),
        ("LayerNormGRU", "FusedGRU", "cost of the norm, same kernel", None, None),
        ("LayerNormGRU", "RNN(LayerNormGRUCell)", "target train <= 0.5", 0.5, None),
        ("LayerNormGRU", "LayerNormGRU (generic)", "kernel vs generic", None, None),
        ("LayerNormGRU", "LayerNormGRU (XLA)", "native vs XLA kernel", None, None),
        ("BatchNormLSTM", "keras LSTM", "target train, infer <= 1.0", 1.0, 1.0),
        ("BatchNormLSTM", "BatchNormLSTM (generic)", "kernel vs generic", None, None),
        ("BatchNormLSTM", "BatchNormLSTM (XLA)", "native vs XLA kernel", None, None),
        ("BatchNormLSTM", "RNN(BatchNormLSTMCell)", "", None, None),
    ]
    verdicts = []
    for a, b, note, train_target, infer_target in pairs:
        if a not in med or b not in med:
            continue
        rt = med[a][0] / med[b][0]
        ri = med[a][1] / med[b][1]
        print(f"{a + ' / ' + b:<46}{rt:>8.2f}{ri:>8.2f}  {note}")
        for part, index, target in (("train", 0, train_target), ("infer", 1, infer_target)):
            if target is not None:
                text, verdict = paired_ratio(times[a][index], times[b][index], target)
                verdicts.append(f"{a + ' / ' + b + ', ' + part:<53}{text:>20}  <= {target}: {verdict}")
    if verdicts:
        print(f"\ntargets: the median of the rounds' paired ratios, its {CONFIDENCE:.0%} interval and the verdict")
        print("\n".join(verdicts))


if __name__ == "__main__":
    main()
