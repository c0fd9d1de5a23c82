"""Is an unnormalized keras_ln LSTM that a linear model beats trained worse than Keras' own would be?

On sequential_digits (8x8 digits read row by row) the AutoML's report may warn
that `LSTM_<k>_none`, the portfolio's first recurrent configuration without
normalization, is worse than `Baseline_GLM`. This script trains that
configuration on the same 3 stratified folds (of the demo's training split:
test_size 0.2, seed 1) in the ways below and prints each one's cross-validated
mean per-class error next to a logistic regression's (the GLM baseline's model,
`LogisticRegressionCV` on the flattened sequences):

- Keras' own `keras.layers.LSTM` (same units, initializers, Adam step size,
  batch size), trained with `model.fit` for 50 epochs, and keras_ln's
  `LSTMClassifier` without normalization trained the same way (exactly 50
  epochs: no early stopping, ``tol=0``): the reference. If Keras' LSTM scores
  like keras_ln's, the shortfall is the configuration's on this data, not
  keras_ln's;
- `LSTMClassifier` with normalization "layer" and "batch" for 50 epochs too,
  and all three normalizations as the AutoML trains them (early stopping on a
  10 % validation split, up to 50 epochs): what early stopping costs each.

Each net is fitted once per fold and seed (`--seeds`, three by default: a
single fit's error swings by a few hundredths with its initial weights here);
the script prints every model's mean and standard error, then keras_ln's
unnormalized LSTM less Keras' own, paired by fold and seed, with a 95 %
confidence interval (scipy's paired t-test).

    python benchmarks/keras_reference_lstm.py [--seeds 1 2 3]   # about 5 minutes on 2 cores

Not a `bench_*.py` (`make bench` does not run it).
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from sklearn.linear_model import LogisticRegressionCV  # noqa: E402
from sklearn.metrics import balanced_accuracy_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_ln import datasets  # noqa: E402
from keras_ln.automl._search import PORTFOLIO  # noqa: E402
from keras_ln.sklearn import LSTMClassifier  # noqa: E402

SEED = 1
EPOCHS = 50


def keras_lstm(config, X, y, seed):
    """Keras' own LSTM of the configuration, fitted with `model.fit` for `EPOCHS` epochs."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(X.shape[1:]),
        keras.layers.LSTM(config["units"]),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(config["learning_rate_init"], epsilon=1e-8),
                  "sparse_categorical_crossentropy")
    model.fit(X, y, batch_size=config["batch_size"], epochs=EPOCHS, verbose=0)
    return lambda Z: model.predict(Z, verbose=0).argmax(axis=1)


def main(seeds):
    warnings.simplefilter("ignore")
    X, y, _ = datasets.load_sequential_digits()
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=SEED, stratify=y)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=SEED).split(X_train, y_train))
    config = PORTFOLIO["rnn"][0]
    assert config["cell"] == "lstm" and config["depth"] == 1 and not config["bidirectional"]

    def estimator(normalization, early_stopping=True):
        def fit(X, y, seed):
            stopping = {} if early_stopping else dict(tol=0.0, n_iter_no_change=EPOCHS + 1)
            est = LSTMClassifier(
                (config["units"],), normalization=normalization, learning_rate_init=config["learning_rate_init"],
                batch_size=config["batch_size"], alpha=config["alpha"], dropout=config["dropout"],
                max_iter=EPOCHS, early_stopping=early_stopping, random_state=seed, **stopping).fit(X, y)
            return est.predict
        return fit

    def glm(X, y, seed):
        model = LogisticRegressionCV(max_iter=2000).fit(X.reshape(len(X), -1), y)
        return lambda Z: model.predict(Z.reshape(len(Z), -1))

    reference, ours = f"keras.layers.LSTM, {EPOCHS} epochs", f"LSTMClassifier, None, {EPOCHS} epochs"
    sides = {
        "GLM (LogisticRegressionCV)": glm,
        reference: lambda X, y, seed: keras_lstm(config, X, y, seed),
        ours: estimator(None, early_stopping=False),
        f"LSTMClassifier, layer, {EPOCHS} epochs": estimator("layer", early_stopping=False),
        f"LSTMClassifier, batch, {EPOCHS} epochs": estimator("batch", early_stopping=False),
        "LSTMClassifier, None, early stop": estimator(None),
        "LSTMClassifier, layer, early stop": estimator("layer"),
        "LSTMClassifier, batch, early stop": estimator("batch"),
    }
    print(f"sequential_digits, {len(y_train)} training rows, 3 folds x seeds {list(seeds)}; configuration {config}")
    print(f"{'model':36s} {'CV mean per-class error':>24s} {'(std. error)':>12s} {'time':>7s}")
    errors = {}
    for name, make in sides.items():
        start, errors[name] = time.perf_counter(), []
        for seed in seeds:
            for k, (fit_rows, val_rows) in enumerate(folds):
                predict = make(X_train[fit_rows], y_train[fit_rows], 100 * seed + k)
                errors[name].append(1 - balanced_accuracy_score(y_train[val_rows], predict(X_train[val_rows])))
        e = np.asarray(errors[name])
        print(f"{name:36s} {e.mean():24.4f} {scipy.stats.sem(e):12.4f} {time.perf_counter() - start:6.0f}s",
              flush=True)
    # the reference, paired by seed and fold: keras_ln's unnormalized LSTM less Keras' own
    difference = np.asarray(errors[ours]) - np.asarray(errors[reference])
    test = scipy.stats.ttest_rel(errors[ours], errors[reference])
    low, high = test.confidence_interval(0.95)
    print(f"\nkeras_ln None - Keras' LSTM, {EPOCHS} epochs, paired over {len(difference)} fold fits: "
          f"{difference.mean():+.4f}, 95% CI [{low:+.4f}, {high:+.4f}], p = {test.pvalue:.2f}")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                   help="seeds of the nets' initial weights and batch orders (default: 1 2 3)")
    return p.parse_args()


if __name__ == "__main__":
    main(parse_args().seeds)
