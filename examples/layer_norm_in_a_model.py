"""keras_ln.LayerNormalization in a model: a drop-in for keras' layer.

Trains the same small classifier on scikit-learn's bundled digits twice, once
with `keras.layers.LayerNormalization` and once with
`keras_ln.LayerNormalization`, from the same initial weights, and shows that

- both layers compute the same function (outputs agree to float32 round-off),
- training follows the same path (the same test accuracy, to an example or
  two: float32 round-off differs between the layers),
- a `.keras` file round trip gives identical outputs,
- how much faster the training step is with keras_ln's layer: epochs of the
  two models timed in turns (`--rounds` each), so that a slow spell of the
  machine slows both, and the median of the rounds' ratios. The layer norms
  are a part of the step beside the products and keras' own work, so the
  whole step gains less than the layer alone (benchmarks/bench_layer_norm.py).

    python examples/layer_norm_in_a_model.py [--epochs 10] [--rounds 15]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras  # noqa: E402
import keras_ln  # noqa: E402


def build(norm_layer):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu"),
        norm_layer(),
        keras.layers.Dense(256, activation="relu"),
        norm_layer(),
        keras.layers.Dense(10, activation="softmax"),
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each model")
    parser.add_argument("--rounds", type=int, default=15, help="timed epochs of each model, in turns")
    args = parser.parse_args(argv)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)

    models = {}
    for name, layer in [("keras", keras.layers.LayerNormalization), ("keras_ln", keras_ln.LayerNormalization)]:
        model = build(layer)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        models[name] = model
        print(f"{name:>9s}: {args.epochs} epochs, test accuracy {accuracy:.4f}")

    theirs, ours = models["keras"], models["keras_ln"]
    probe = build(keras_ln.LayerNormalization)
    probe.set_weights(theirs.get_weights())  # keras' trained weights into keras_ln's layers
    diff = np.abs(keras.ops.convert_to_numpy(probe(x_test)) - keras.ops.convert_to_numpy(theirs(x_test))).max()
    print(f"same weights, keras vs keras_ln layers: max |difference| of outputs = {diff:.2e}")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        ours.save(path)
        loaded = keras.saving.load_model(path)
        same = np.array_equal(keras.ops.convert_to_numpy(loaded(x_test)), keras.ops.convert_to_numpy(ours(x_test)))
    print(f".keras round trip gives identical outputs: {same}")

    # One more epoch of each, in turns (the training above has traced both steps).
    ratios = []
    for turn in range(args.rounds):
        seconds = {}
        for name in (("keras", "keras_ln") if turn % 2 == 0 else ("keras_ln", "keras")):
            start = time.perf_counter()
            models[name].fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
            seconds[name] = time.perf_counter() - start
        ratios.append(seconds["keras"] / seconds["keras_ln"])
    print(f"training epoch time, keras / keras_ln: {np.median(ratios):.2f}x "
          f"(median of {args.rounds} rounds; from {min(ratios):.2f}x to {max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
