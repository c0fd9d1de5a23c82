"""Evidence: layer normalization uses per-example statistics, so it does not care about the batch.

Two claims of Ba et al. (2016), shown on scikit-learn's bundled digits:

1. Per-example statistics. In training mode, the output of batch
   normalization for one example changes with the other examples of the
   batch; the output of layer normalization does not (it is computed from
   that example alone), and it is the same in training and inference.
2. Robustness to the batch size. Trained with tiny batches, a batch-normalized
   MLP suffers from noisy batch statistics and from the mismatch between
   batch statistics (training) and moving averages (inference); a
   layer-normalized MLP trains the same way at every batch size.

    python examples/evidence_batch_independence.py [--epochs 8]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras  # noqa: E402
import keras_ln  # noqa: E402

NORMS = {
    "layer": keras_ln.LayerNormalization,
    "batch": keras.layers.BatchNormalization,
    "none": None,
}


def build(norm, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    for _ in range(2):
        layers.append(keras.layers.Dense(128))
        if NORMS[norm] is not None:
            layers.append(NORMS[norm]())
        layers.append(keras.layers.Activation("relu"))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    return keras.Sequential(layers)


def per_example_statistics(x):
    print("1. Does an example's output depend on the rest of its batch? (training mode)")
    # Batches of one size with the example first, the rest drawn at random:
    # a matrix product of another row count may sum in another order (its
    # last bits then follow the batch's size, whatever the normalization).
    probe, rest = x[:1], x[1:]
    batches = [np.concatenate([probe, rest[np.random.default_rng(seed).choice(len(rest), 31, replace=False)]])
               for seed in range(6)]
    for norm in ("layer", "batch"):
        model = build(norm)
        first, *others = [keras.ops.convert_to_numpy(model(b, training=True))[0] for b in batches]
        spread = max(np.abs(out - first).max() for out in others)
        inference = keras.ops.convert_to_numpy(model(batches[0], training=False))[0]
        print(
            f"   {norm:>5s} norm: max change of its output across 5 batches = {spread:.2e}; "
            f"training vs inference output differ by {np.abs(inference - first).max():.2e}"
        )


def batch_size_robustness(x_train, x_test, y_train, y_test, epochs):
    print(f"\n2. Test accuracy after {epochs} epochs, by batch size")
    sizes = (2, 8, 128)
    print("   norm   " + "".join(f"batch={b:<6d}" for b in sizes))
    for norm in NORMS:
        row = []
        for batch_size in sizes:
            model = build(norm)
            model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
            model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
            row.append(model.evaluate(x_test, y_test, verbose=0)[1])
        print(f"   {norm:<6s} " + "".join(f"{a:<12.4f}" for a in row))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    per_example_statistics(x_train)
    batch_size_robustness(x_train, x_test, y_train, y_test, args.epochs)


if __name__ == "__main__":
    main()
