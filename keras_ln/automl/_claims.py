"""The claims made for layer normalization, measured on the user's data.

For configurations that differ only in their normalization (a dict
normalization -> unfitted keras_ln estimator, or a scikit-learn `Pipeline`
ending in one), on the user's `X`, `y` and fold assignment, this module
measures the five properties the literature claims for layer normalization
(Ba, Kiros & Hinton, 2016) against batch normalization and none:

1. `per_example_change`: statistics are per example. In training mode, the
   largest change of one example's output when the rest of its batch is
   replaced (layer norm and none: 0 up to float rounding; batch norm: > 0).
2. `batch_size_effect`: robust to the batch size. Each configuration refit
   at batch sizes 4, 16, 64 and 256 (capped by the training rows of the
   smallest fold), with H2O's cross-validation metric (on the pooled held-out
   predictions, as `AutoML` and H2O compute it) per batch size.
3. `convergence`: faster convergence. Epochs and seconds until the
   validation loss comes within 1% of its best, per fold and their median,
   and the learning curves (figure: median over folds, band min-max).
4. `gradient_flow` (sequences only): the norm of the gradient of the loss
   with respect to the hidden state at every time step, and the spread of
   the hidden states over time.
5. `overhead`: training time per epoch relative to the un-normalized net.

Each claim is a function returning a tidy `pandas.DataFrame` with the
columns `COLUMNS` (claim, normalization, quantity, value, and the keys fold,
batch_size, step, epoch and detail, empty where they do not apply), and a
`plot_*` function drawing its figure from such a table (so the figures can
be redrawn from `claims.csv`; they live in `_claims_figures`). Claim 4
lives in `_claims_gradients`, what the claims share in `_claims_common`.
`measure_claims` runs them all under one time budget and writes
`claims.csv` and the figures.

Which loss curve the convergence claim reads: `validation_loss_curve_` of
the fitted estimators, which they record only when early stopping is in use
(`early_stopping=True` and a held-out part of at least 50 rows, see
`keras_ln.sklearn`); it is then the loss on that held-out part of the
training rows, per epoch. Otherwise the curve is the training loss
(`loss_curve_`). The `detail` column says which (`validation_loss` or
`training_loss`). Seconds are the epochs times the fit's mean seconds per
epoch.

Everything is seeded: an estimator whose `random_state` is None gets `seed`,
the batches and sequences drawn for claims 1 and 4 come from
`numpy.random.default_rng(seed)` (the same rows for every normalization).
Only the timings vary from run to run.
"""

import dataclasses
import os
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.utils import _safe_indexing

from keras_ln.automl._claims_common import COLUMNS
from keras_ln.automl._claims_common import _INT_KEYS
from keras_ln.automl._claims_common import _final
from keras_ln.automl._claims_common import _is_sequence_model
from keras_ln.automl._claims_common import _labelled
from keras_ln.automl._claims_common import _measurement_mode
from keras_ln.automl._claims_common import _network_input
from keras_ln.automl._claims_common import _prepared
from keras_ln.automl._claims_common import _row
from keras_ln.automl._claims_common import _splits
from keras_ln.automl._claims_common import _table
from keras_ln.automl._claims_common import _training_output
from keras_ln.automl._claims_gradients import gradient_flow
from keras_ln.automl._leaderboard import resolve_sort_metric
from keras_ln.automl._metrics import fold_metric
from keras_ln.automl._claims_figures import FIGURES
from keras_ln.automl._claims_figures import plot_batch_size
from keras_ln.automl._claims_figures import plot_convergence
from keras_ln.automl._claims_figures import plot_gradient_flow
from keras_ln.automl._claims_figures import plot_overhead
from keras_ln.automl._claims_figures import plot_per_example
from keras_ln.automl._claims_figures import write_figures
from keras_ln.automl._metrics import h2o_metrics

BATCH_SIZES = (4, 16, 64, 256)

# "Converged": the watched loss within this fraction of its best.
WITHIN = 0.01

__all__ = [
    "BATCH_SIZES",
    "COLUMNS",
    "FIGURES",
    "FoldFit",
    "batch_size_effect",
    "capped_batch_sizes",
    "convergence",
    "fit_folds",
    "gradient_flow",
    "measure_claims",
    "overhead",
    "per_example_change",
    "plot_batch_size",
    "plot_convergence",
    "plot_gradient_flow",
    "plot_overhead",
    "plot_per_example",
    "write_figures",
]


class _Budget:
    """Wall-clock budget: no new unit of work starts once it is spent."""

    def __init__(self, seconds=None):
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"Expected `budget_secs` to be None or >= 0. Received: {seconds!r}")
        self.seconds = seconds
        self.start = time.perf_counter()

    def spent(self):
        return self.seconds is not None and time.perf_counter() - self.start >= self.seconds


def _skipped(claim, normalization, **keys):
    return _row(claim, normalization, "skipped", 1.0, detail="time budget spent", **keys)


def _failed(claim, normalization, error, **keys):
    """A unit of work that raised (e.g. a fit that diverged at batch size 4):
    reported, and the other units go on."""
    return _row(claim, normalization, "failed", 1.0, detail=f"{type(error).__name__}: {error}"[:300], **keys)


# --- fits shared by convergence and overhead ---------------------------------
@dataclasses.dataclass
class FoldFit:
    """One configuration fitted on the training rows of one fold.

    Attributes
    ----------
    normalization : str
        'layer', 'batch' or 'none'.
    fold : int
    estimator : object or None
        The fitted estimator (or Pipeline); None once dropped.
    fit_seconds : float
        Wall-clock seconds of `fit`.
    n_iter : int
        Epochs run.
    loss_curve : list of float
        Training loss per epoch (`loss_curve_`).
    validation_loss_curve : list of float or None
        Validation loss per epoch (`validation_loss_curve_`), None without
        early stopping.
    test_rows : ndarray
        Indices of the fold's held-out rows.
    prediction : ndarray
        Predictions on them (class probabilities in the order of `np.unique(y)`,
        or values).
    """

    normalization: str
    fold: int
    estimator: object
    fit_seconds: float
    n_iter: int
    loss_curve: list
    validation_loss_curve: list
    test_rows: np.ndarray
    prediction: np.ndarray


def _predict(est, X, classes):
    if classes is None:
        return np.asarray(est.predict(X), dtype=float).ravel()
    proba = np.zeros((len(X), len(classes)))
    proba[:, np.searchsorted(classes, _final(est).classes_)] = est.predict_proba(X)
    return proba


def _fit_fold(config, label, X, y, k, train, test, classes, seed, **params):
    est = _prepared(config, seed, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        est.fit(_safe_indexing(X, train), y[train])
        seconds = time.perf_counter() - t0
        prediction = _predict(est, _safe_indexing(X, test), classes)
    final = _final(est)
    val = getattr(final, "validation_loss_curve_", None)
    return FoldFit(
        normalization=label, fold=k, estimator=est, fit_seconds=seconds, n_iter=int(final.n_iter_),
        loss_curve=list(final.loss_curve_), validation_loss_curve=None if val is None else list(val),
        test_rows=test, prediction=prediction,
    )


def _classes(y, task):
    return None if task == "regression" else np.unique(y)


def fit_folds(configs, X, y, folds, task, *, seed=0, budget_secs=None):
    """Fit every configuration on the training rows of every fold.

    Parameters
    ----------
    configs : dict
        Normalization ('layer', 'batch', None) -> unfitted keras_ln estimator
        or Pipeline ending in one.
    X : array-like, DataFrame or list of sequences
    y : array-like of shape (n_samples,)
    folds : array-like of int of shape (n_samples,)
        Fold index of every row (`keras_ln.automl.make_folds`).
    task : {"binary", "multiclass", "regression"}
    seed : int, default=0
        `random_state` of the estimators that have none.
    budget_secs : float or None
        No new fit starts once this many seconds have passed.

    Returns
    -------
    fits : list of FoldFit
        Fold by fold, normalizations in the order layer, batch, none.
    skipped : DataFrame
        One row per fit the budget skipped (claim "fits", quantity
        `skipped`) or that raised (quantity `failed`, the error in `detail`).
    """
    fits, skipped = _fit_folds(_labelled(configs), X, np.asarray(y), _splits(folds), task, seed, _Budget(budget_secs))
    return fits, _table(skipped)


def _fit_folds(labels, X, y, splits, task, seed, budget, on_fold=None):
    classes = _classes(y, task)
    fits, skipped = [], []
    for k, train, test in splits:
        for label, config in labels.items():
            if budget.spent():
                skipped.append(_skipped("fits", label, fold=k))
                continue
            try:
                fits.append(_fit_fold(config, label, X, y, k, train, test, classes, seed))
            except Exception as error:  # noqa: BLE001 (reported, the other fits go on)
                skipped.append(_failed("fits", label, error, fold=k))
        if on_fold is not None:
            on_fold(k, train, [f for f in fits if f.fold == k])
    return fits, skipped


# --- 1. per-example statistics -----------------------------------------------
def per_example_change(fitted, X, *, batch_size=32, n_examples=2, n_batches=4, seed=0):
    """Largest change of an example's training-mode output when the rest of
    its batch is replaced.

    For each of the first `n_examples` rows of `X`, `n_batches` batches of
    `batch_size` rows (capped by the rows of `X`) are drawn that hold that
    row first and other rows, at random, elsewhere; the network runs in
    training mode (batch statistics for batch norm) with dropout off and its
    moving statistics untouched. The change is the largest absolute
    difference between the row's outputs over its batches: the logits for
    classifiers, the (standardized) prediction for regressors, i.e. what the
    loss is computed from.

    Parameters
    ----------
    fitted : dict
        Normalization -> fitted keras_ln estimator or Pipeline ending in one.
    X : array-like, DataFrame or list of sequences
        At least 3 rows, as the estimators take them.
    batch_size, n_examples, n_batches : int
    seed : int, default=0
        Seeds the batches (the same ones for every normalization).

    Returns
    -------
    DataFrame
        Claim "per_example"; quantities `max_abs_change`, `output_std` (the
        standard deviation of the outputs, the scale the change compares
        with) and `relative_change` (their ratio), with `batch_size`.
    """
    import keras

    rows = []
    for label, est in _labelled(fitted).items():
        x = _network_input(est, X)
        n = len(x)
        if n < 3:
            raise ValueError(f"Expected X with at least 3 rows. Received: {n}")
        size = min(int(batch_size), n)
        rng = np.random.default_rng(seed)
        model = _final(est).model_
        view = _training_output(model)
        worst, outputs = 0.0, []
        with _measurement_mode(model):
            tv = [v.value for v in view.trainable_variables]
            ntv = [v.value for v in view.non_trainable_variables]
            for i in range(min(int(n_examples), n)):
                others = np.delete(np.arange(n), i)
                own = []
                for _ in range(int(n_batches)):
                    batch = np.r_[i, rng.choice(others, size - 1, replace=False)]
                    out, _ = view.stateless_call(tv, ntv, keras.ops.convert_to_tensor(x[batch]), training=True)
                    out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
                    own.append(out[0])
                    outputs.append(out)
                own = np.array(own)
                worst = max(worst, float(np.max(np.abs(own - own[0]))))
        scale = float(np.std(np.concatenate(outputs)))
        for quantity, value in (
            ("max_abs_change", worst),
            ("output_std", scale),
            ("relative_change", worst / scale if scale > 0 else np.nan),
        ):
            rows.append(_row("per_example", label, quantity, value, batch_size=size))
    return _table(rows)


# --- 2. batch size -----------------------------------------------------------
def batch_size_effect(configs, X, y, folds, task, *, batch_sizes=BATCH_SIZES, sort_metric="AUTO", seed=0,
                      budget_secs=None):
    """Cross-validation metric of every configuration refit at each batch size.

    Batch sizes are capped by the training rows of the smallest fold (and
    merged where the cap makes two equal). The metric is H2O's sort metric
    (`resolve_sort_metric(task, sort_metric)`), on the held-out predictions
    of all folds pooled (as the leaderboard's), and per fold. Everything
    else is the configuration's, its epochs (`max_iter`, early stopping)
    too: a smaller batch also takes more optimizer steps per epoch, which
    `epochs` and `fit_seconds` let the reader weigh.

    Returns
    -------
    DataFrame
        Claim "batch_size"; quantity the metric's column name (e.g. `auc`)
        per `batch_size` (fold empty: the cross-validation metric; else one
        fold's), `fit_seconds` and `epochs` per fold; rows with quantity
        `skipped` for the fits the budget skipped. `detail` of the metric
        rows says "higher is better" or "lower is better".
    """
    rows = _batch_size_rows(_labelled(configs), X, np.asarray(y), _splits(folds), task, batch_sizes, sort_metric,
                            seed, _Budget(budget_secs))
    return _table(rows)


def capped_batch_sizes(n_train, batch_sizes=BATCH_SIZES):
    """The batch sizes capped by `n_train` rows, distinct and sorted."""
    return sorted({min(int(b), int(n_train)) for b in batch_sizes})


def _batch_size_rows(labels, X, y, splits, task, batch_sizes, sort_metric, seed, budget):
    col, descending = resolve_sort_metric(task, sort_metric)
    better = "higher is better" if descending else "lower is better"
    classes = _classes(y, task)
    sizes = capped_batch_sizes(min(len(train) for _, train, _ in splits), batch_sizes)
    rows = []
    for label, config in labels.items():
        for size in sizes:
            pooled = np.zeros((len(y), len(classes))) if classes is not None else np.zeros(len(y))
            done = True
            for k, train, test in splits:
                if budget.spent():
                    rows.append(_skipped("batch_size", label, fold=k, batch_size=size))
                    done = False
                    continue
                try:
                    fit = _fit_fold(config, label, X, y, k, train, test, classes, seed, batch_size=size)
                except Exception as error:  # noqa: BLE001 (reported, the other fits go on)
                    rows.append(_failed("batch_size", label, error, fold=k, batch_size=size))
                    done = False
                    continue
                pooled[test] = fit.prediction
                rows.append(_row("batch_size", label, col, fold_metric(task, y[test], fit.prediction, classes, col),
                                 fold=k, batch_size=size, detail=better))
                rows.append(_row("batch_size", label, "fit_seconds", fit.fit_seconds, fold=k, batch_size=size))
                rows.append(_row("batch_size", label, "epochs", fit.n_iter, fold=k, batch_size=size))
            if done:
                value = h2o_metrics(task, y, pooled, classes)[col]
                rows.append(_row("batch_size", label, col, value, batch_size=size, detail=better))
    return rows


# --- 3. convergence ----------------------------------------------------------
def _epochs_within(curve, within=WITHIN):
    """First epoch (1-based) whose loss is within `within` of the best."""
    curve = np.asarray(curve, dtype=float)
    best = np.nanmin(curve)
    return int(np.flatnonzero(curve <= best + within * abs(best))[0]) + 1


def convergence(fits, *, within=WITHIN):
    """Epochs and seconds until the loss comes within 1% of its best.

    Parameters
    ----------
    fits : list of FoldFit
        From `fit_folds`.
    within : float, default=0.01

    Returns
    -------
    DataFrame
        Claim "convergence": the curve of every fold (quantity
        `validation_loss` or `training_loss`, with `fold` and `epoch`);
        `epochs_to_best` (epochs until within 1% of the best),
        `seconds_to_best` and `epochs_run` per fold and their median over
        folds (fold empty). `detail` names the curve used:
        `validation_loss_curve_` where the fit recorded one (early
        stopping), else `loss_curve_`.
    """
    rows = []
    summary = {}
    for fit in fits:
        if fit.validation_loss_curve:
            curve, name = fit.validation_loss_curve, "validation_loss"
        else:
            curve, name = fit.loss_curve, "training_loss"
        for epoch, value in enumerate(curve, start=1):
            rows.append(_row("convergence", fit.normalization, name, value, fold=fit.fold, epoch=epoch))
        epochs = _epochs_within(curve, within)
        seconds = epochs * fit.fit_seconds / max(fit.n_iter, 1)
        for quantity, value in (("epochs_to_best", epochs), ("seconds_to_best", seconds),
                                ("epochs_run", fit.n_iter)):
            rows.append(_row("convergence", fit.normalization, quantity, value, fold=fit.fold, detail=name))
            summary.setdefault((fit.normalization, quantity), []).append((value, name))
    for (label, quantity), values in summary.items():
        names = sorted({name for _, name in values})
        rows.append(_row("convergence", label, quantity, float(np.median([v for v, _ in values])),
                         detail="+".join(names)))
    return _table(rows)


# --- 4. gradient flow (sequences): `_claims_gradients.gradient_flow` ----------


# --- 5. overhead -------------------------------------------------------------
def overhead(fits):
    """Training seconds per epoch, relative to the un-normalized net.

    Per fold `seconds_per_epoch` (fit seconds / epochs run, so any tracing
    of a first fit is spread over its epochs), their median over folds
    (fold empty), and `relative_to_none`: that median divided by the one of
    normalization 'none' (absent without a 'none' configuration).

    Returns
    -------
    DataFrame
        Claim "overhead".
    """
    rows = []
    medians = {}
    for fit in fits:
        rows.append(_row("overhead", fit.normalization, "seconds_per_epoch", fit.fit_seconds / max(fit.n_iter, 1),
                         fold=fit.fold))
    per_epoch = _table(rows)
    for label, group in per_epoch.groupby("normalization", sort=False):
        medians[label] = float(group["value"].median())
        rows.append(_row("overhead", label, "seconds_per_epoch", medians[label]))
    if "none" in medians:
        for label, value in medians.items():
            rows.append(_row("overhead", label, "relative_to_none", value / medians["none"]))
    return _table(rows)


# --- all of them -------------------------------------------------------------
def measure_claims(configs, X, y, folds, task, out_dir=None, budget_secs=None, seed=0, *, sort_metric="AUTO",
                   batch_sizes=BATCH_SIZES):
    """Measure every claim for the configurations on the user's data.

    Order of work (cheap claims first, so that a small budget still gives
    them): the fits of the first fold (every normalization), then on those
    fitted estimators the per-example change and, for sequences, the
    gradient flow; the fits of the other folds; convergence and overhead
    from all the fits; then the refits at each batch size. No unit of work
    (one fit, one measurement) starts once `budget_secs` have passed; the
    units skipped are rows with quantity `skipped` (and listed in
    `df.attrs["skipped"]`); a unit that raised (e.g. a fit that diverged)
    is a row with quantity `failed` and the error in `detail` (and listed in
    `df.attrs["failed"]`), and the others go on; the seconds each part took
    are rows of claim "cost" (quantity `seconds`, `detail` the part).

    Parameters
    ----------
    configs : dict
        Normalization ('layer', 'batch', None) -> unfitted keras_ln
        estimator or Pipeline ending in one (e.g. the best configuration of
        each normalization).
    X : array-like, DataFrame or list of sequences
    y : array-like of shape (n_samples,)
    folds : array-like of int of shape (n_samples,)
        Fold index per row (`keras_ln.automl.make_folds`).
    task : {"binary", "multiclass", "regression"}
    out_dir : str or path, default=None
        Where to write `claims.csv` and the figures (`FIGURES`); None writes
        nothing.
    budget_secs : float, default=None
        Wall-clock budget; None is unbounded.
    seed : int, default=0
    sort_metric : str, default="AUTO"
        The metric of the batch-size claim (H2O's sort metrics).
    batch_sizes : sequence of int, default=(4, 16, 64, 256)

    Returns
    -------
    DataFrame
        All claims' rows (`COLUMNS`).
    """
    labels = _labelled(configs)
    if not labels:
        raise ValueError("Expected `configs` with at least one configuration. Received: {}")
    y = np.asarray(y)
    splits = _splits(folds)
    if len(y) != len(np.asarray(folds)):
        raise ValueError(f"Expected one fold per row ({len(y)}). Received: {len(np.asarray(folds))} folds")
    kinds = {_is_sequence_model(c) for c in labels.values()}
    if len(kinds) > 1:
        raise ValueError("Expected configurations all for sequences or all for tables. Received: both")
    sequences = kinds.pop()
    budget = _Budget(budget_secs)
    parts = []
    cost = {}

    def timed(part, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            cost[part] = cost.get(part, 0.0) + time.perf_counter() - t0

    def first_fold(k, train, fits):
        if k != splits[0][0]:
            for f in fits:  # keep no more than needed
                f.estimator = None
            return
        fitted = {f.normalization: f.estimator for f in fits}
        X_train = _safe_indexing(X, train)
        for label in labels:
            claims = ("per_example", "gradient_flow") if sequences else ("per_example",)
            for claim in claims:
                if label not in fitted or budget.spent():
                    parts.append(_table([_skipped(claim, label)]))
                else:
                    measure = per_example_change if claim == "per_example" else gradient_flow
                    args = (X_train,) if claim == "per_example" else (X_train, y[train])
                    try:
                        parts.append(timed(claim, measure, {label: fitted[label]}, *args, seed=seed))
                    except Exception as error:  # noqa: BLE001 (reported, the other claims go on)
                        parts.append(_table([_failed(claim, label, error)]))
        for f in fits:  # keep no more than needed
            f.estimator = None

    t0 = time.perf_counter()
    fits, skipped = _fit_folds(labels, X, y, splits, task, seed, budget, on_fold=first_fold)
    cost["fits"] = time.perf_counter() - t0 - cost.get("per_example", 0.0) - cost.get("gradient_flow", 0.0)
    parts.append(_table(skipped))
    if fits:
        parts.append(timed("convergence", convergence, fits))
        parts.append(timed("overhead", overhead, fits))
    parts.append(timed("batch_size", lambda: _table(_batch_size_rows(labels, X, y, splits, task, batch_sizes,
                                                                      sort_metric, seed, budget))))
    rows = [_row("cost", None, "seconds", value, detail=part) for part, value in cost.items()]
    df = pd.concat([p for p in parts if len(p)] + [_table(rows)], ignore_index=True)
    df = _table(df.to_dict("records"))
    for quantity in ("skipped", "failed"):
        df.attrs[quantity] = [
            " ".join([r.claim, r.normalization] + [f"{key}={getattr(r, key)}" for key in _INT_KEYS
                                                   if not pd.isna(getattr(r, key))])
            + (f" ({r.detail})" if quantity == "failed" else "")
            for r in df[df["quantity"] == quantity].itertuples()
        ]
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        df.to_csv(os.path.join(out_dir, "claims.csv"), index=False)
        write_figures(df, out_dir)
    return df
