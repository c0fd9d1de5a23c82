"""Stacked ensembles like H2O AutoML's: AllModels and BestOfFamily.

An ensemble combines the cross-validated predictions of its base models (the
level-one data: one column per base model) with a metalearner: non-negative
weights that sum to one, chosen to minimize the task's loss on the level-one
rows (squared error for regression, logloss of the combined class
probabilities for classification). The ensemble predicts the weighted mean of
its base models' predictions (class probabilities for classification).

The metalearner and H2O's
-------------------------
H2O's default metalearner is a GLM with non-negative coefficients and an
intercept, fitted on the base models' predictions (regression values, the
probability of the positive class, or every class probability). The weights
here are also non-negative and linear, but constrained to the probability
simplex and without intercept: the weighted mean of the base predictions, as
in the Super Learner's ``method.NNLS``/``method.NNloglik`` (R's SuperLearner,
which normalizes its non-negative weights to sum to one). So the ensemble's
probabilities are probabilities by construction, an ensemble of identical
base models is that model, and a single good model keeps weight one; what is
given up is the GLM's recalibration (an intercept and a scale). Both
problems are convex (least squares on the simplex; the log-likelihood of a
mixture of the base models' probabilities is concave in the weights) and are
solved with SciPy's SLSQP from equal weights; weights below 1e-6 are set to
zero and the rest renormalized.

Honest cross-validated metrics
------------------------------
The ensemble's cross-validated predictions come from cross-validating the
metalearner on the level-one data with the base models' folds: for fold k the
weights are fitted on the level-one rows of the other folds and applied to
fold k's level-one rows. No row is predicted with weights fitted on it. The
ensemble refit on all training rows combines the base models refit on all
rows with the weights fitted on all level-one rows.

Which models
------------
``StackedEnsemble_AllModels`` stacks every net of the search;
``StackedEnsemble_BestOfFamily`` stacks the best net (by the leaderboard's
sort metric) of each normalization ("layer", "batch", "none"), H2O's "best
model of each algorithm family". The baselines (`_baselines`) are references,
not base models. AllModels needs at least two nets, BestOfFamily at least two
normalizations present.
"""

import time

import numpy as np
from scipy.optimize import minimize

from keras_ln.automl._metrics import fold_metric
from keras_ln.automl._metrics import h2o_metrics

ALL_MODELS = "StackedEnsemble_AllModels"
BEST_OF_FAMILY = "StackedEnsemble_BestOfFamily"
ENSEMBLE_IDS = (ALL_MODELS, BEST_OF_FAMILY)
FAMILIES = ("layer", "batch", "none")  # the leaderboard's normalization column
_TINY_WEIGHT = 1e-6
_PROBA_FLOOR = 1e-15  # H2O's logloss clipping

__all__ = ["ALL_MODELS", "BEST_OF_FAMILY", "ENSEMBLE_IDS", "StackedEnsemble", "best_of_family",
           "cross_validate_weights", "fit_weights", "stacked_ensembles"]


# ---------------------------------------------------------------------------
# the metalearner
# ---------------------------------------------------------------------------
def _level_one(task, y, preds, classes):
    """Level-one matrix (n, M): the predictions (regression) or the probability of the true class."""
    if task == "regression":
        return np.column_stack([np.asarray(p, dtype=float).ravel() for p in preds])
    idx = np.searchsorted(classes, y)
    rows = np.arange(len(y))
    return np.column_stack([np.asarray(p, dtype=float)[rows, idx] for p in preds])


def fit_weights(task, Z, y=None):
    """Non-negative weights summing to one that minimize the loss of ``Z @ w``.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    Z : ndarray of shape (n_samples, n_models)
        Regression: the base models' predictions. Classification: the
        probability each base model gives to the row's true class.
    y : ndarray of shape (n_samples,)
        Regression targets (unused for classification).

    Returns
    -------
    ndarray of shape (n_models,)
    """
    Z = np.asarray(Z, dtype=float)
    n, m = Z.shape
    if m == 1:
        return np.ones(1)
    if task == "regression":
        y = np.asarray(y, dtype=float).ravel()
        scale = max(float(np.mean((y - y.mean()) ** 2)), 1e-12)

        def loss(w):
            r = Z @ w - y
            return float(r @ r) / n / scale, 2.0 * (Z.T @ r) / n / scale
    else:

        def loss(w):
            p = np.maximum(Z @ w, _PROBA_FLOOR)
            return float(-np.mean(np.log(p))), -(Z.T @ (1.0 / p)) / n

    w0 = np.full(m, 1.0 / m)
    res = minimize(loss, w0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones(m)}],
                   options={"ftol": 1e-12, "maxiter": 1000})
    w = np.clip(res.x, 0.0, None)
    w[w < _TINY_WEIGHT] = 0.0
    if not np.isfinite(w).all() or w.sum() <= 0 or loss(w / w.sum())[0] > loss(w0)[0]:
        w = w0  # a failed solve never does worse than the plain mean
    return w / w.sum()


def _combine(preds, w):
    out = 0.0
    for p, wm in zip(preds, w):
        if wm > 0:
            out = out + wm * np.asarray(p, dtype=float)
    return out


def cross_validate_weights(task, y, preds, splits, classes=None):
    """Cross-validated ensemble predictions: for each (train, test) split the
    weights are fitted on the level-one rows of ``train`` only and applied to
    the rows of ``test``.

    Returns ``(cv_pred, fold_weights)``, fold_weights of shape (n_splits, M).
    """
    Z = _level_one(task, y, preds, classes)
    cv_pred = np.zeros_like(np.asarray(preds[0], dtype=float))
    fold_weights = []
    for train, test in splits:
        w = fit_weights(task, Z[train], y[train] if task == "regression" else None)
        cv_pred[test] = _combine([np.asarray(p)[test] for p in preds], w)
        fold_weights.append(w)
    return cv_pred, np.array(fold_weights)


# ---------------------------------------------------------------------------
# which base models
# ---------------------------------------------------------------------------
def best_of_family(net_board):
    """The first (best) model of each normalization in a sorted leaderboard of nets."""
    ids = []
    for family in FAMILIES:
        cand = net_board.loc[net_board["normalization"] == family, "model_id"]
        if len(cand):
            ids.append(cand.iloc[0])
    return ids


def stacked_ensembles(task, y, splits, net_board, cv_predictions, sort_col, classes=None):
    """Cross-validate H2O's two ensembles over the nets of a sorted leaderboard.

    Parameters
    ----------
    net_board : pandas.DataFrame
        The nets' leaderboard rows (model_id, normalization,
        predict_time_per_row_ms, ...), sorted best first.
    cv_predictions : dict
        model_id -> cross-validated predictions of the nets.

    Returns
    -------
    dict
        model_id -> ``(row, fold_rows, cv_pred, weights)``: a leaderboard row
        (normalization "ensemble", training_time_ms the metalearner's fits,
        predict_time_per_row_ms the sum over base models with positive
        weight), per-fold sort metric rows, the honest cross-validated
        predictions, and ``{base model_id: weight}`` fitted on all level-one rows.
    """
    specs = {}
    all_ids = list(net_board["model_id"])
    if len(all_ids) >= 2:
        specs[ALL_MODELS] = all_ids
    family_ids = best_of_family(net_board)
    if len(family_ids) >= 2:
        specs[BEST_OF_FAMILY] = family_ids
    predict_ms = dict(zip(net_board["model_id"], net_board["predict_time_per_row_ms"]))
    out = {}
    for model_id, ids in specs.items():
        preds = [cv_predictions[m] for m in ids]
        t0 = time.perf_counter()
        cv_pred, _ = cross_validate_weights(task, y, preds, splits, classes)
        w = fit_weights(task, _level_one(task, y, preds, classes), y if task == "regression" else None)
        fit_ms = 1000.0 * (time.perf_counter() - t0)
        weights = dict(zip(ids, w.tolist()))
        row = {"model_id": model_id, **h2o_metrics(task, y, cv_pred, classes), "normalization": "ensemble",
               "training_time_ms": fit_ms,
               "predict_time_per_row_ms": float(sum(predict_ms[m] for m in ids if weights[m] > 0))}
        fold_rows = [{"model_id": model_id, "normalization": "ensemble", "fold": k,
                      sort_col: fold_metric(task, y[test], cv_pred[test], classes, sort_col)}
                     for k, (_, test) in enumerate(splits)]
        out[model_id] = (row, fold_rows, cv_pred, weights)
    return out


# ---------------------------------------------------------------------------
# the refit ensemble
# ---------------------------------------------------------------------------
class StackedEnsemble:
    """Weighted mean of fitted base models' predictions (class probabilities for classifiers).

    Parameters
    ----------
    estimators : dict
        model_id -> fitted estimator (a classifier with ``predict_proba`` and
        ``classes_``, or a regressor).
    weights : dict
        model_id -> non-negative weight; the weights sum to one. Models of
        weight 0 may be left out of ``estimators``.
    classes : ndarray of shape (n_classes,) or None
        The class labels (the columns of ``predict_proba``); None for regression.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> X, y = np.zeros((4, 1)), np.array([0.0, 1.0, 2.0, 3.0])
    >>> ens = StackedEnsemble({"a": DummyRegressor().fit(X, y),
    ...                        "b": DummyRegressor(strategy="constant", constant=0.0).fit(X, y)},
    ...                       {"a": 0.5, "b": 0.5})
    >>> ens.predict(X[:1])
    array([0.75])
    """

    def __init__(self, estimators, weights, classes=None):
        self.estimators = estimators
        self.weights = weights
        self.classes = classes

    @property
    def classes_(self):
        if self.classes is None:
            raise AttributeError("a regression ensemble has no classes_")
        return self.classes

    def _used(self):
        return [(m, w) for m, w in self.weights.items() if w > 0]

    def predict_proba(self, X):
        if self.classes is None:
            raise AttributeError("a regression ensemble has no predict_proba")
        out = np.zeros((len(X), len(self.classes)))
        for model_id, w in self._used():
            est = self.estimators[model_id]
            out[:, np.searchsorted(self.classes, est.classes_)] += w * np.asarray(est.predict_proba(X), dtype=float)
        return out

    def predict(self, X):
        if self.classes is not None:
            return np.asarray(self.classes)[np.argmax(self.predict_proba(X), axis=1)]
        return _combine([np.asarray(self.estimators[m].predict(X), dtype=float).ravel() for m, _ in self._used()],
                        [w for _, w in self._used()])

    def __repr__(self):
        weights = ", ".join(f"{m!r}: {w:.3g}" for m, w in self._used())
        return f"StackedEnsemble({{{weights}}})"
