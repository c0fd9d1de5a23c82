"""Reference models cross-validated next to the nets: a GLM and a constant.

Every AutoML run adds two rows to its leaderboard, cross-validated on the
nets' folds and scored with the same metric definitions:

- ``Baseline_GLM``: the nets' preprocessing (sequences: the same scaling,
  then flattened to T × F columns, padding as the scaled mean 0)
  followed by `sklearn.linear_model.LogisticRegressionCV` (L2, ten C values
  chosen by 3-fold logloss) or `sklearn.linear_model.RidgeCV` (13 alphas from
  1e-3 to 1e3, efficient leave-one-out). The regularization is chosen by an
  inner cross-validation on the rows the GLM is fitted on, so within the
  outer cross-validation it never sees the held-out fold.
- ``Baseline_constant``: `sklearn.dummy.DummyClassifier` (strategy="prior":
  the class shares of the training rows) or `sklearn.dummy.DummyRegressor`
  (the training mean).

Their normalization column is "n/a". They are references, not candidates:
they do not count against ``max_models``, they are not base models of the
stacked ensembles, and `AutoML` never picks one as its leader.
"""

import inspect
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.base import TransformerMixin
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import check_is_fitted

from keras_ln.automl._metrics import fold_metric
from keras_ln.automl._metrics import h2o_metrics

BASELINE_GLM = "Baseline_GLM"
BASELINE_CONSTANT = "Baseline_constant"
BASELINE_IDS = (BASELINE_GLM, BASELINE_CONSTANT)
RIDGE_ALPHAS = tuple(np.logspace(-3, 3, 13))

__all__ = ["BASELINE_CONSTANT", "BASELINE_GLM", "BASELINE_IDS", "FlattenSequences", "cross_validate_baselines",
           "make_baselines"]


class FlattenSequences(TransformerMixin, BaseEstimator):
    """Sequences as one row each: (n, T, F) -> (n, T·F), for the GLM.

    Takes a NaN-padded array or a list of (T_i, F) arrays (what the nets'
    preprocessing hands over for ragged sequences); every sequence is padded
    (or cut) to the number of time steps seen in `fit`, and missing values
    (padding) become 0, the mean of the scaled features.
    """

    def fit(self, X, y=None):
        X = self._pad(X, None)
        self.n_timesteps_, self.n_features_in_ = X.shape[1], X.shape[2]
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = self._pad(X, self.n_timesteps_)
        return np.nan_to_num(X.reshape(len(X), -1), nan=0.0)

    @staticmethod
    def _pad(X, n_timesteps):
        if isinstance(X, np.ndarray) and X.ndim == 3:
            arrays, longest = X, X.shape[1]
        else:
            arrays = [np.asarray(x, dtype=float) for x in X]
            longest = max(len(x) for x in arrays)
        T = longest if n_timesteps is None else n_timesteps
        out = np.full((len(arrays), T, np.shape(arrays[0])[-1]), np.nan)
        for i, x in enumerate(arrays):
            out[i, : min(T, len(x))] = x[:T]
        return out


def _logistic_regression_cv():
    kwargs = {"Cs": 10, "cv": 3, "scoring": "neg_log_loss", "max_iter": 1000}
    params = inspect.signature(LogisticRegressionCV).parameters
    # scikit-learn 1.8-1.9 warn about their coming default changes unless these are given
    for name, value in (("l1_ratios", (0.0,)), ("use_legacy_attributes", False)):
        if name in params and isinstance(params[name].default, str) and params[name].default == "warn":
            kwargs[name] = value
    return LogisticRegressionCV(**kwargs)


def make_baselines(task, preprocessing, sequences=False):
    """The two unfitted baseline pipelines, ``{model_id: Pipeline}``.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    preprocessing : transformer
        The nets' preprocessing (cloned, never fitted here).
    sequences : bool
        X is (n, T, F): the GLM gets the scaled sequences flattened.
    """
    glm = _logistic_regression_cv() if task != "regression" else RidgeCV(alphas=RIDGE_ALPHAS)
    glm_steps = [("scale", clone(preprocessing))]
    if sequences:
        glm_steps.append(("flatten", FlattenSequences()))
    glm_steps.append(("model", glm))
    if task != "regression":
        constant = DummyClassifier(strategy="prior")
    else:
        constant = DummyRegressor(strategy="mean")
    return {BASELINE_GLM: Pipeline(glm_steps), BASELINE_CONSTANT: constant}


def _predict(est, X, classes):
    if classes is None:
        return np.asarray(est.predict(X), dtype=float).ravel()
    proba = np.zeros((len(X), len(classes)))
    proba[:, np.searchsorted(classes, est.classes_)] = est.predict_proba(X)
    return proba


def cross_validate_baselines(task, X, y, splits, preprocessing, sort_col, *, classes=None, sequences=False,
                             refit=False):
    """Cross-validate the baselines on ``splits`` (and refit them on all rows when ``refit``).

    Returns
    -------
    dict
        model_id -> ``(row, fold_rows, cv_pred, full)``: the leaderboard row
        (normalization "n/a"; training_time_ms the fit on all rows when
        ``refit``, else the mean fit per fold), per-fold sort metric rows, the
        cross-validated predictions (class probabilities in the order of
        ``classes``) and the estimator fitted on all rows (None without ``refit``).
    """
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # as for the nets: a GLM at its max_iter still counts
        for model_id, est in make_baselines(task, preprocessing, sequences).items():
            out[model_id] = _cross_validate(task, X, y, splits, model_id, est, sort_col, classes, refit)
    return out


def _cross_validate(task, X, y, splits, model_id, est, sort_col, classes, refit):
    cv_pred = np.zeros((len(y), len(classes))) if classes is not None else np.zeros(len(y))
    fit_s = pred_s = 0.0
    fold_rows = []
    for k, (train, test) in enumerate(splits):
        t0 = time.perf_counter()
        fold_est = clone(est).fit(_safe_indexing(X, train), y[train])
        t1 = time.perf_counter()
        cv_pred[test] = _predict(fold_est, _safe_indexing(X, test), classes)
        pred_s += time.perf_counter() - t1
        fit_s += t1 - t0
        fold_rows.append({"model_id": model_id, "normalization": "n/a", "fold": k,
                          sort_col: fold_metric(task, y[test], cv_pred[test], classes, sort_col)})
    row = {"model_id": model_id, **h2o_metrics(task, y, cv_pred, classes), "normalization": "n/a",
           "training_time_ms": 1000.0 * fit_s / len(splits),
           "predict_time_per_row_ms": 1000.0 * pred_s / len(y)}
    full = None
    if refit:
        t0 = time.perf_counter()
        full = clone(est).fit(X, y)
        row["training_time_ms"] = 1000.0 * (time.perf_counter() - t0)
    return row, fold_rows, cv_pred, full
