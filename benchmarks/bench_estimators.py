"""Fit/predict time of keras_ln.sklearn.MLPClassifier against Keras' own wrapper.

Both sides train the same network (`keras_ln.models.build_mlp`, one hidden
layer of 100 ReLU units, float32; for two classes one sigmoid output, as
sklearn's MLP, which Keras' wrapper reads as [1 - p, p]) with the same Adam
(learning rate 1e-3, epsilon 1e-8), batch size (200) and number of epochs,
on breast_cancer (standardized), in this process, one after the other:

1. fit (50 epochs) and predict, median of `--repeats` runs; keras_ln also
   cold, i.e. with its cache of traced training steps emptied before each
   fit (the keras wrapper traces anew in every fit anyway);
2. per-fit overhead: fit with one epoch;
3. GridSearchCV over normalization ("layer", "batch", None) x two learning
   rates x 3 folds (`--grid-epochs` epochs per fit).

Ratios are `keras wrapper time / keras_ln time`: above 1 means keras_ln is
faster.

4. scikit-learn's own `MLPClassifier` and `MLPRegressor` as the anchor: the
   same network (one hidden layer of 100 ReLU units), Adam, batch 200, the
   same number of epochs, no early stopping, on `make_classification` /
   `make_regression` data in float32 at 500 x 30 (50 epochs), 20,000 x 50
   (5 epochs) and 100,000 x 100 (3 epochs); fit time of keras_ln over
   sklearn's (below 1 means keras_ln is faster), for `normalization=None`
   and `"layer"`, with both sides' training accuracy / R^2, and keras_ln's
   single-row `predict` time. The sides take turns, round by round
   (`--anchor-repeats` rounds): keras_ln's first fit of each shape traces or
   XLA-compiles its loop and is shown apart ("1st"). `--sizes small` runs
   the first size only.

Each anchor ratio is paired: keras_ln's fit over the anchor's of the same
round (so that a slow spell of the shared machine, which slows both, cancels
out), the median of the rounds' ratios, with a 90% distribution-free
confidence interval for that median (order statistics, scipy's
`quantile_test`). Against a target the interval gives the verdict: "met"
where it lies at or below the target, "missed" where it lies above, and
"within noise" where it contains the target (more rounds narrow it).

Keras' wrapper is `keras.wrappers.SKLearnClassifier`; its progress
bars (it calls `model.predict` without `verbose=0`) are swallowed.

`--intra-op-threads N` sets TensorFlow's intra-op thread count for this
process (`tf.config.threading.set_intra_op_parallelism_threads`, a
process-wide choice that keras_ln leaves to its user) before anything
runs; sklearn's side is unchanged. On a machine where handing a small task
to another thread costs more than it saves, one thread makes keras_ln's
XLA loop faster (see the README).

    python benchmarks/bench_estimators.py [--repeats 5] [--grid-epochs 20] [--intra-op-threads N]
"""

import argparse
import contextlib
import gc
import io
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.datasets import make_regression  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keras_ln.models as keras_ln_models  # noqa: E402
from keras_ln.models import build_mlp  # noqa: E402
from keras_ln.models import build_recurrent  # noqa: E402
from keras_ln.sklearn import LSTMClassifier  # noqa: E402
from keras_ln.sklearn import MLPClassifier  # noqa: E402
from keras_ln.sklearn import MLPRegressor  # noqa: E402
from keras_ln.sklearn._execution import _PROGRAMS  # noqa: E402
from keras_ln._system import available_cores  # noqa: E402

from _paired import CONFIDENCE  # noqa: E402  (benchmarks/_paired.py)
from _paired import paired_ratio  # noqa: E402

BATCH = 200


def keras_network(X, y, normalization=None, learning_rate=1e-3):
    """The network of both sides, compiled for Keras' wrapper. The wrapper
    one-hot encodes the labels and reads one output per class; keras_ln's
    classifier, as sklearn's MLP, has one sigmoid output p for two classes:
    the same network here, presented as [1 - p, p] (its categorical
    cross-entropy is then the binary log-loss of p)."""
    n_classes = y.shape[1] if y.ndim > 1 else len(np.unique(y))
    binary = n_classes == 2
    model = build_mlp(
        X.shape[1], 1 if binary else n_classes, (100,),
        normalization=normalization,
        output_activation="sigmoid" if binary else "softmax",
        dtype="float32",
    )
    if binary:
        both = keras.layers.Lambda(
            lambda p: keras.ops.concatenate([1.0 - p, p], axis=-1), name="both_classes"
        )(model.outputs[0])
        model = keras.Model(model.inputs, both, name=model.name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, epsilon=1e-8),
        loss="categorical_crossentropy",
        jit_compile=False,
    )
    return model


def wrapper(epochs, **model_kwargs):
    return keras.wrappers.SKLearnClassifier(
        model=keras_network,
        model_kwargs=model_kwargs,
        fit_kwargs={"epochs": epochs, "batch_size": BATCH, "verbose": 0},
    )


def ours(epochs, normalization=None, learning_rate_init=1e-3):
    # tol=0 and n_iter_no_change > epochs: exactly `epochs` epochs, as Keras.
    return MLPClassifier(
        (100,), normalization=normalization, alpha=0.0, batch_size=BATCH,
        learning_rate_init=learning_rate_init, max_iter=epochs, tol=0.0,
        n_iter_no_change=epochs + 1, random_state=0,
    )


# Seconds to pause before a timed fit in the anchor comparisons: the worker
# threads of the previous fit's library (OpenBLAS's spin for ~0.1 s after a
# call, TensorFlow's pools) must not compete with the next fit for the cores.
SETTLE = 0.5


def timed(fn, collect=True, settle=0.0):
    """Seconds `fn` takes, and its result. As `timeit`, Python's cyclic
    garbage collector is paused during the call, and (`collect`, for fits)
    run before it: a full collection, which the many objects of
    TensorFlow's traced graphs make take about 0.2 s here, otherwise lands
    in whichever fit triggers it. (Not before sub-millisecond calls, which
    it would leave with cold caches.)"""
    if collect:
        gc.collect()
    if settle:
        time.sleep(settle)
    gc.disable()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            result = fn()
            return time.perf_counter() - start, result
    finally:
        gc.enable()


def median_times(make, X, y, repeats):
    fits, predicts = [], []
    for _ in range(repeats):
        fit_time, est = timed(lambda: make().fit(X, y))
        predict_time, _ = timed(lambda: est.predict(X))
        fits.append(fit_time)
        predicts.append(predict_time)
    return statistics.median(fits), statistics.median(predicts)


# Rows, features, epochs, and the target ratio (None: no target).
ANCHOR_SIZES = ((500, 30, 50, 1.0), (20_000, 50, 5, None), (100_000, 100, 3, 0.33))


def sklearn_anchor(repeats, sizes):
    """keras_ln's MLPs against scikit-learn's, same network, optimizer, batches and epochs."""
    print("\nAgainst sklearn.neural_network (fit time keras_ln / sklearn; below 1: keras_ln faster)")
    print("(sklearn, None, layer: interleaved rounds; the median of the rounds' paired ratios after the"
          f" first, with its {CONFIDENCE:.0%} interval, and the verdict against the target; 1st: the first"
          " fit of that shape in the process, with the loop's trace or XLA compilation)")
    print(f"{'task':10s} {'rows x features, epochs':24s} {'sklearn':>8s} {'None':>18s} {'layer':>18s} "
          f"{'target':>7s} {'verdicts None / layer':>27s} {'None 1st':>9s} {'layer 1st':>9s} "
          f"{'score sk / None / layer':>24s} {'1-row predict':>14s}")
    common = dict(hidden_layer_sizes=(100,), batch_size=BATCH, tol=0.0, random_state=0)
    for n, f, epochs, target in sizes:
        for task in ("classifier", "regressor"):
            if task == "classifier":
                X, y = make_classification(n, f, n_informative=min(f, 10), random_state=0)
                sk_cls, ours_cls = SkMLPClassifier, MLPClassifier
            else:
                X, y = make_regression(n, f, n_informative=min(f, 10), noise=1.0, random_state=0)
                y = (y - y.mean()) / y.std()
                sk_cls, ours_cls = SkMLPRegressor, MLPRegressor
            X = StandardScaler().fit_transform(X).astype("float32")
            params = dict(common, max_iter=epochs, n_iter_no_change=epochs + 1)
            for norm in (None, "layer"):  # warm-up: one-off kernels and traces
                timed(lambda: ours_cls(**params, normalization=norm).fit(X[:256], y[:256]))
            # Round by round, sklearn and both of keras_ln's fits one after
            # the other, so that a slow spell of this shared machine slows
            # them alike (paired ratios, round by round).
            times = {"sk": [], None: [], "layer": []}
            fitted = {}
            for _ in range(repeats):
                for side in times:
                    if side == "sk":
                        t, fitted[side] = timed(lambda: sk_cls(**params).fit(X, y), settle=SETTLE)
                    else:
                        t, fitted[side] = timed(
                            lambda: ours_cls(**params, normalization=side).fit(X, y), settle=SETTLE)
                    times[side].append(t)
            # The first round's keras_ln fits are the first of this shape in
            # the process (the warm-up above is smaller): they trace or
            # XLA-compile the loop, and are the "1st" columns. The ratios
            # are of the later rounds (with one cold fit among them, the
            # median of the warm ones was pulled up).
            warm = {side: t[1:] or t for side, t in times.items()}
            sk_time = statistics.median(warm["sk"])
            sk_score = fitted["sk"].score(X, y)
            cells = [paired_ratio(warm[norm], warm["sk"], target) for norm in (None, "layer")]
            firsts = [times[norm][0] / sk_time for norm in (None, "layer")]
            scores = [fitted[norm].score(X, y) for norm in (None, "layer")]
            est = fitted[None]
            est.predict(X[:1])
            single = statistics.median(timed(lambda: est.predict(X[:1]), collect=False)[0]
                                       for _ in range(20))
            verdicts = " / ".join(v for _, v in cells) if target is not None else "-"
            print(f"{task:10s} {f'{n} x {f}, {epochs}':24s} {sk_time:7.2f}s {cells[0][0]:>18s} "
                  f"{cells[1][0]:>18s} {'-' if target is None else f'<= {target:.2f}':>7s} {verdicts:>27s} "
                  f"{firsts[0]:9.2f} {firsts[1]:9.2f} "
                  f"{sk_score:8.3f} / {scores[0]:.3f} / {scores[1]:.3f} {1000 * single:11.2f} ms", flush=True)


SEQUENCE_SHAPE = (2_000, 50, 8, 5)  # sequences, steps, features, epochs
SEQUENCE_TARGET = 0.5  # keras_ln's fit at least twice as fast as Keras' model.fit


@contextlib.contextmanager
def _keras_own_lstm(active):
    """With `active`, `build_recurrent(normalization=None)` builds keras'
    own `keras.layers.LSTM` instead of `keras_ln.FusedLSTM`."""
    if not active:
        yield
        return
    original = keras_ln_models.recurrent_layer_class

    def keras_lstm(cell="lstm", normalization="layer"):
        if cell == "lstm" and normalization is None:
            return keras.layers.LSTM
        return original(cell, normalization)

    keras_ln_models.recurrent_layer_class = keras_lstm
    try:
        yield
    finally:
        keras_ln_models.recurrent_layer_class = original


def sequence_anchor(repeats, shape=SEQUENCE_SHAPE):
    """LSTMClassifier against Keras' own `model.fit` on the same network;
    for `normalization=None` also against Keras' fit of keras' own LSTM
    layer (the estimators' None network is `keras_ln.FusedLSTM`)."""
    n, steps, features, epochs = shape
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, steps, features)).astype("float32")
    y = (X[:, : steps // 2, 0].sum(1) > 0).astype(int)
    print(f"\nLSTMClassifier against Keras' model.fit ({n} x {steps} x {features} sequences, units (64,), "
          f"batch {BATCH}, {epochs} epochs; fit time keras_ln / Keras, below 1: keras_ln faster; medians of "
          f"the rounds' paired ratios with their {CONFIDENCE:.0%} intervals, target <= {SEQUENCE_TARGET})")
    print(f"{'normalization':14s} {'keras_ln':>9s} {'keras (jit auto)':>17s} {'ratio':>18s} "
          f"{'keras (no jit)':>15s} {'ratio':>18s} {'verdicts':>27s} {'acc keras_ln / keras':>21s}")
    # None twice: Keras' fit of the same network (keras_ln.FusedLSTM, keras'
    # LSTM with the native kernel), then of keras' own keras.layers.LSTM.
    for norm, keras_own in (("layer", False), ("batch", False), (None, False), (None, True)):
        def keras_fit(jit):
            # two classes: one sigmoid output, as LSTMClassifier's
            with _keras_own_lstm(keras_own):
                model = build_recurrent(features, 1, units=(64,), normalization=norm,
                                        output_activation="sigmoid", dtype="float32", seed=0,
                                        max_steps=steps)
            model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8),
                          loss="binary_crossentropy", metrics=["accuracy"], jit_compile=jit)
            history = model.fit(X, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True)
            return history.history["accuracy"][-1]

        def ours_fit():
            est = LSTMClassifier(units=(64,), normalization=norm, batch_size=BATCH, max_iter=epochs,
                                 tol=0.0, n_iter_no_change=epochs + 1, alpha=0.0, random_state=0)
            return est.fit(X, y)

        timed(ours_fit)  # warm-up: each side's traces and kernels
        fits = (("ours", ours_fit), ("auto", lambda: keras_fit("auto")),
                ("none", lambda: keras_fit(False)))
        runs = {name: [] for name, _ in fits}
        for _ in range(repeats):  # interleaved rounds, as the table anchor
            for name, fn in fits:
                runs[name].append(timed(fn, settle=SETTLE))
        times = {}
        for name, done in runs.items():
            # The fits alone are timed: Keras' accuracy comes from its
            # training history, keras_ln's from a prediction afterwards.
            last = done[-1][1]
            times[name] = (statistics.median(t for t, _ in done),
                           last.score(X, y) if name == "ours" else last)
        o, a, f = times["ours"][0], times["auto"][0], times["none"][0]
        ours_times = [t for t, _ in runs["ours"]]
        (auto_text, auto_verdict), (none_text, none_verdict) = (
            paired_ratio(ours_times, [t for t, _ in runs[name]], SEQUENCE_TARGET)
            for name in ("auto", "none"))
        label = "None, keras'" if keras_own else str(norm)
        print(f"{label:14s} {o:8.2f}s {a:16.2f}s {auto_text:>18s} {f:14.2f}s {none_text:>18s} "
              f"{auto_verdict + ' / ' + none_verdict:>27s} "
              f"{times['ours'][1]:10.3f} / {times['auto'][1]:.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--grid-epochs", type=int, default=20)
    parser.add_argument("--anchor-repeats", type=int, default=9,
                        help="rounds of the anchor comparisons (the first is shown apart: 8 paired ratios)")
    parser.add_argument("--sizes", choices=["all", "small"], default="all")
    parser.add_argument("--only-anchor", action="store_true", help="the sklearn comparison alone")
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="TensorFlow's intra-op threads for this process (0: TensorFlow's default)")
    args = parser.parse_args()
    if args.intra_op_threads < 0:
        parser.error(f"--intra-op-threads must be 0 or more, got {args.intra_op_threads}")
    if args.intra_op_threads:
        # Before TensorFlow's context starts (no op has run yet).
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    print(f"TensorFlow intra-op threads: {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}"
          f" ({available_cores()} cores)")
    warnings.simplefilter("ignore", ConvergenceWarning)
    tf.get_logger().setLevel("ERROR")  # Keras' own retracing warnings
    if args.only_anchor:
        sklearn_anchor(args.anchor_repeats, ANCHOR_SIZES[:1] if args.sizes == "small" else ANCHOR_SIZES)
        sequence_anchor(args.anchor_repeats)
        return
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype("float32")
    print(f"breast_cancer {X.shape}, batch {BATCH}, keras {keras.__version__}, "
          f"median of {args.repeats}")
    # Warm-up (imports, one-off kernels) for both sides.
    timed(lambda: ours(1).fit(X, y).predict(X))
    timed(lambda: wrapper(1).fit(X, y).predict(X))

    rows = []
    for label, epochs in ((f"fit {args.epochs} epochs", args.epochs), ("fit 1 epoch (overhead)", 1)):
        k_fit, k_pred = median_times(lambda: wrapper(epochs), X, y, args.repeats)
        o_fit, o_pred = median_times(lambda: ours(epochs), X, y, args.repeats)
        rows.append((label, k_fit, o_fit))
        if epochs == args.epochs:
            rows.append(("predict (569 rows)", k_pred, o_pred))

    # keras_ln traces its training step once per network structure and
    # reuses it across fits; a cold fit (new structure) pays for the trace.
    colds = []
    for _ in range(args.repeats):
        _PROGRAMS.clear()
        colds.append(timed(lambda: ours(args.epochs).fit(X, y))[0])
    rows.insert(1, (f"fit {args.epochs} epochs, cold (new structure)",
                    rows[0][1], statistics.median(colds)))

    grid_k = GridSearchCV(
        wrapper(args.grid_epochs),
        {"model_kwargs": [{"normalization": n, "learning_rate": lr}
                          for n in ("layer", "batch", None) for lr in (1e-3, 1e-2)]},
        cv=3,
    )
    grid_o = GridSearchCV(
        ours(args.grid_epochs),
        {"normalization": ["layer", "batch", None], "learning_rate_init": [1e-3, 1e-2]},
        cv=3,
    )
    k_grid, _ = timed(lambda: grid_k.fit(X, y))
    o_grid, _ = timed(lambda: grid_o.fit(X, y))
    rows.append((f"GridSearchCV 6 x 3 folds, {args.grid_epochs} epochs", k_grid, o_grid))

    print(f"{'':40s} {'keras wrapper':>14s} {'keras_ln':>10s} {'ratio':>7s}")
    for label, k, o in rows:
        print(f"{label:40s} {k:13.3f}s {o:9.3f}s {k / o:7.2f}")
    print(f"accuracy (grid best): keras wrapper {grid_k.best_score_:.3f}, "
          f"keras_ln {grid_o.best_score_:.3f}")
    sklearn_anchor(args.anchor_repeats, ANCHOR_SIZES[:1] if args.sizes == "small" else ANCHOR_SIZES)
    sequence_anchor(args.anchor_repeats)


if __name__ == "__main__":
    main()
