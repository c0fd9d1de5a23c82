"""H2O-style AutoML over keras_ln's estimators.

`AutoML` searches the estimator families that fit the data (MLP for tabular
X of shape (n, F), LSTM/GRU for sequences of shape (n, T, F)) over the
normalizations ("layer", "batch", None) and a declared space of sizes,
learning rates and dropout. Every candidate is cross-validated with
``sklearn.model_selection`` (StratifiedKFold for classification, KFold for
regression, shuffled with ``seed``); the leaderboard holds H2O AutoML's own
columns for the task, computed from the cross-validated predictions with the
same definitions H2O uses (see `h2o_metrics`), and is sorted like H2O's.

Example
-------
>>> from keras_ln.automl import AutoML
>>> from keras_ln.datasets import load_breast_cancer
>>> X, y, _ = load_breast_cancer()
>>> aml = AutoML(max_models=6, max_runtime_secs=120, nfolds=3, seed=1).fit(X, y)
>>> aml.leaderboard.head()          # doctest: +SKIP
>>> aml.leader.predict(X[:5])       # doctest: +SKIP
"""

import itertools
import math
import sys
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.model_selection import KFold, ParameterGrid, PredefinedSplit, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "AutoML",
    "LEADERBOARD_COLUMNS",
    "SORT_METRICS",
    "h2o_metrics",
    "make_folds",
    "resolve_sort_metric",
    "sort_leaderboard",
]

# H2O AutoML's leaderboard columns (H2O 3.46, sort_metric="AUTO"), checked
# against a real H2O run in tests/integrations/test_h2o_automl.py.
LEADERBOARD_COLUMNS = {
    "binary": ["model_id", "auc", "logloss", "aucpr", "mean_per_class_error", "rmse", "mse"],
    "multiclass": ["model_id", "mean_per_class_error", "logloss", "rmse", "mse"],
    "regression": ["model_id", "rmse", "mse", "mae", "rmsle", "mean_residual_deviance"],
}
EXTRA_COLUMNS = ["normalization", "training_time_ms", "predict_time_per_row_ms"]

# sort_metric values H2O accepts per task ("deviance" is mean_residual_deviance).
SORT_METRICS = {
    "binary": ("auc", "aucpr", "logloss", "mean_per_class_error", "rmse", "mse"),
    "multiclass": ("mean_per_class_error", "logloss", "rmse", "mse"),
    "regression": ("deviance", "rmse", "mse", "mae", "rmsle"),
}
# H2O's sort_metric="AUTO": AUC (binary), mean_per_class_error (multinomial),
# deviance (regression).
_AUTO_SORT = {"binary": "auc", "multiclass": "mean_per_class_error", "regression": "mean_residual_deviance"}
_DESCENDING = {"auc", "aucpr"}

_LOGLOSS_EPS = 1e-15  # H2O clips probabilities at 1e-15 in its logloss
_clock = time.monotonic  # the budget's clock (a module attribute so that tests can drive it)


# ---------------------------------------------------------------------------
# Metrics, defined as H2O defines them
# ---------------------------------------------------------------------------
def _binary_curve(p1, y):
    """Cumulative TP/FP counts at each distinct threshold, from high to low."""
    order = np.argsort(-p1, kind="mergesort")
    p_sorted, y_sorted = p1[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    tps = np.cumsum(y_sorted)[distinct].astype(float)
    fps = np.cumsum(1 - y_sorted)[distinct].astype(float)
    return tps, fps


def _h2o_auc(tps, fps):
    P, N = tps[-1], fps[-1]
    if N == 0:
        return 1.0
    if P == 0:
        return 0.0
    tp0 = np.r_[0.0, tps[:-1]]
    fp0 = np.r_[0.0, fps[:-1]]
    return float(np.sum((fps - fp0) * (tps + tp0) / 2.0) / P / N)


def _h2o_aucpr(tps, fps):
    """H2O's AUC-PR: the PR curve interpolated between thresholds (XGBoost's rule)."""
    P, N = tps[-1], fps[-1]
    if N == 0:
        return 1.0
    if P == 0:
        return 0.0
    area, prevtp, prevfp = 0.0, 0.0, 0.0
    for tp, fp in zip(tps, fps):
        if tp == prevtp:
            a, b = 1.0, 0.0
        else:
            h = (fp - prevfp) / (tp - prevtp)
            a = 1.0 + h
            b = (prevfp - h * prevtp) / P
        tpp, prevtpp = tp / P, prevtp / P
        if b != 0.0:
            area += (tpp - prevtpp - b / a * (math.log(a * tpp + b) - math.log(a * prevtpp + b))) / a
        else:
            area += (tpp - prevtpp) / a
        prevtp, prevfp = tp, fp
    return float(area)


def _h2o_binary_mean_per_class_error(tps, fps):
    """Mean per-class error at the threshold maximizing F1 (H2O's default CM)."""
    P, N = tps[-1], fps[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tps / (tps + fps)
        recall = tps / P
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where(np.isnan(f1), -np.inf, f1)
    i = int(np.argmax(f1))  # first maximum, thresholds from high to low, like H2O
    errs = []
    if N > 0:
        errs.append(fps[i] / N)
    if P > 0:
        errs.append((P - tps[i]) / P)
    return float(np.mean(errs))


def h2o_metrics(task, y_true, y_pred, classes=None):
    """H2O's leaderboard metrics for one set of predictions.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    y_true : array-like of shape (n_samples,)
        Class labels (classification) or targets (regression).
    y_pred : array-like
        Classification: class probabilities of shape (n_samples, n_classes),
        columns in the order of ``classes``. Regression: predictions of shape
        (n_samples,).
    classes : array-like of shape (n_classes,), default=None
        Class labels in column order; defaults to ``np.unique(y_true)``.

    Returns
    -------
    dict
        The metric columns of ``LEADERBOARD_COLUMNS[task]`` (without model_id).

    Notes
    -----
    The definitions follow H2O's ``ModelMetricsBinomial``/``Multinomial``/
    ``Regression`` and ``AUC2``:

    - logloss: ``-mean(log(max(p_true, 1e-15)))``;
    - mse (classification): ``mean((1 - p_true)**2)``, the probability given to
      the true class; rmse its square root;
    - mean_per_class_error: mean over classes of the share of that class's rows
      predicted wrong; binary at the threshold that maximizes F1 (H2O's default
      confusion matrix), multiclass with the arg-max class;
    - auc: trapezoid over (FPR, TPR) at every distinct probability;
    - aucpr: area under the PR curve interpolated between thresholds (XGBoost's
      rule, as H2O computes it), not scikit-learn's step-wise average precision;
    - regression: rmse, mse, mae, rmsle = ``sqrt(mean((log1p(pred) - log1p(y))**2))``
      (NaN when a prediction or target is below -1), mean_residual_deviance = mse
      (gaussian).

    H2O bins the binary probabilities into at most 400 thresholds; with at most
    400 distinct probabilities the two computations agree exactly, above that
    H2O's auc/aucpr are approximations of these exact values.
    """
    if task not in LEADERBOARD_COLUMNS:
        raise ValueError(f"Expected `task` in {tuple(LEADERBOARD_COLUMNS)}. Received: task={task!r}")
    y_true = np.asarray(y_true)
    if task == "regression":
        y = y_true.astype(float).ravel()
        p = np.asarray(y_pred, dtype=float).ravel()
        if p.shape != y.shape:
            raise ValueError(f"`y_pred` has shape {p.shape}, expected {y.shape}.")
        err = p - y
        mse = float(np.mean(err**2))
        if np.any(p < -1) or np.any(y < -1):
            rmsle = float("nan")
        else:
            rmsle = float(np.sqrt(np.mean((np.log1p(p) - np.log1p(y)) ** 2)))
        return {
            "rmse": math.sqrt(mse),
            "mse": mse,
            "mae": float(np.mean(np.abs(err))),
            "rmsle": rmsle,
            "mean_residual_deviance": mse,
        }

    classes = np.unique(y_true) if classes is None else np.asarray(classes)
    proba = np.asarray(y_pred, dtype=float)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
        raise ValueError(
            f"Expected `y_pred` of shape ({len(y_true)}, {len(classes)}) "
            f"(probabilities per class). Received: shape {proba.shape}"
        )
    index = {c: i for i, c in enumerate(classes.tolist())}
    try:
        idx = np.array([index[c] for c in y_true.tolist()])
    except KeyError as exc:
        raise ValueError(f"`y_true` holds a label not in `classes`: {exc}") from None
    p_true = proba[np.arange(len(idx)), idx]
    mse = float(np.mean((1.0 - p_true) ** 2))
    out = {
        "logloss": float(-np.mean(np.log(np.maximum(_LOGLOSS_EPS, p_true)))),
        "rmse": math.sqrt(mse),
        "mse": mse,
    }
    if task == "binary":
        if len(classes) != 2:
            raise ValueError(f"task='binary' needs 2 classes. Received: {len(classes)}")
        tps, fps = _binary_curve(proba[:, 1], (idx == 1).astype(int))
        out["auc"] = _h2o_auc(tps, fps)
        out["aucpr"] = _h2o_aucpr(tps, fps)
        out["mean_per_class_error"] = _h2o_binary_mean_per_class_error(tps, fps)
    else:
        pred = np.argmax(proba, axis=1)
        present = np.unique(idx)
        out["mean_per_class_error"] = float(np.mean([np.mean(pred[idx == k] != k) for k in present]))
    return {k: out[k] for k in LEADERBOARD_COLUMNS[task][1:]}


def resolve_sort_metric(task, sort_metric="AUTO"):
    """The leaderboard column H2O sorts by, and whether larger is better."""
    if sort_metric is None or str(sort_metric).upper() == "AUTO":
        col = _AUTO_SORT[task]
    else:
        name = str(sort_metric).lower()
        if name not in SORT_METRICS[task]:
            raise ValueError(
                f"Expected `sort_metric` to be 'AUTO' or one of {SORT_METRICS[task]} for a "
                f"{task} task. Received: sort_metric={sort_metric!r}"
            )
        col = "mean_residual_deviance" if name == "deviance" else name
    return col, col in _DESCENDING


def sort_leaderboard(df, task, sort_metric="AUTO"):
    """Sort a leaderboard like H2O: best first by the sort metric, NaN last."""
    col, descending = resolve_sort_metric(task, sort_metric)
    return df.sort_values(col, ascending=not descending, kind="mergesort", na_position="last").reset_index(
        drop=True
    )


def make_folds(y, task, nfolds=5, seed=None):
    """Fold index of every row: StratifiedKFold (classification) or KFold, shuffled with seed."""
    if not isinstance(nfolds, (int, np.integer)) or nfolds < 2:
        raise ValueError(f"Expected `nfolds` to be an int >= 2. Received: nfolds={nfolds!r}")
    y = np.asarray(y)
    cv_cls = KFold if task == "regression" else StratifiedKFold
    cv = cv_cls(n_splits=nfolds, shuffle=True, random_state=seed)
    folds = np.empty(len(y), dtype=int)
    for k, (_, test) in enumerate(cv.split(np.zeros((len(y), 1)), y)):
        folds[test] = k
    return folds


# ---------------------------------------------------------------------------
# The search space
# ---------------------------------------------------------------------------
class SequenceScaler(TransformerMixin, BaseEstimator):
    """Standardize every feature of (n, T, F) sequences over samples and steps."""

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float32)
        flat = X.reshape(-1, X.shape[-1])
        self.mean_ = flat.mean(axis=0)
        self.scale_ = flat.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        return ((X - self.mean_) / self.scale_).astype(np.float32)


# Declared spaces; the first entry of each list is the default configuration,
# which is trained first (with every normalization) like H2O's default models.
MLP_SPACE = {
    "hidden_layer_sizes": [(64,), (128,), (64, 64), (32,), (128, 64)],
    "learning_rate_init": [1e-3, 3e-3, 1e-2],
    "dropout": [0.0, 0.1, 0.3],
    "alpha": [1e-4, 1e-3],
}
RNN_SPACE = {
    "units": [(32,), (64,), (32, 32)],
    "cell": ["lstm", "gru"],
    "learning_rate_init": [3e-3, 1e-3, 1e-2],
    "dropout": [0.0, 0.1],
}
_NORM_TAG = {"layer": "LN", "batch": "BN", None: "none"}


def _estimator_classes():
    from keras_ln import sklearn as kls  # deferred: pulls in the keras estimators

    return {
        ("mlp", True): kls.MLPClassifier,
        ("mlp", False): kls.MLPRegressor,
        ("rnn", True): kls.LSTMClassifier,
        ("rnn", False): kls.LSTMRegressor,
    }


class _ProgressBar:
    """A text progress bar over the models being trained (one line per model when not a terminal)."""

    def __init__(self, total, stream=None, width=30, label="keras_ln AutoML"):
        self.total, self.stream, self.width, self.label = total, stream or sys.stderr, width, label
        self.start = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, done, note=""):
        frac = done / self.total if self.total else 0.0
        fill = int(round(self.width * min(frac, 1.0)))
        elapsed = time.monotonic() - self.start
        total = self.total if self.total else "?"
        line = (f"{self.label} |{'#' * fill}{'.' * (self.width - fill)}| {done}/{total} models "
                f"{elapsed:4.0f}s {note}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class AutoML:
    """H2O-style AutoML over keras_ln's MLP and LSTM/GRU estimators.

    Parameters
    ----------
    max_models : int or None, default=None
        Most models to train (one model = one configuration with one
        normalization, cross-validated). None: only ``max_runtime_secs`` limits.
    max_runtime_secs : float or None, default=None
        No new model starts after this many seconds; the models that finished
        are reported. If both are None, ``max_runtime_secs=3600`` like H2O.
    nfolds : int, default=5
        Folds of the cross-validation that fills the leaderboard.
    seed : int or None, default=None
        Seeds the fold assignment, the sampling of the search space and every
        estimator's ``random_state``.
    sort_metric : str, default="AUTO"
        As H2O's: "AUTO" sorts by auc (binary), mean_per_class_error
        (multiclass), mean_residual_deviance (regression).
    normalizations : tuple, default=("layer", "batch", None)
        Every sampled configuration is trained once with each of these.
    max_iter : int, default=50
        Epochs per fit.
    early_stopping : bool, default=True
        Passed to the estimators (holds out 10% of each training fold).
    batch_size : int or "auto", default="auto"
    refit : {"leader", "all"}, default="leader"
        Refit the leader only, or every model, on all training rows (the
        refitted models are in ``models_``).
    verbose : int, default=0
        >0 shows a progress bar over the models on stderr.

    Attributes
    ----------
    leaderboard : pandas.DataFrame
        H2O's columns for the task, then normalization ("layer", "batch",
        "none"), training_time_ms (the fit on all training rows with
        ``refit="all"``, else the mean fit time per fold) and
        predict_time_per_row_ms (from the cross-validated predictions);
        sorted like H2O's.
    leader : estimator
        The best model, refit on all training rows.
    task_ : str
    folds_ : ndarray of shape (n_samples,)
        Fold index of every training row.
    cv_predictions_ : dict
        model_id -> cross-validated predictions (probabilities per class for
        classification, in the order of ``classes_``).
    fold_scores_ : pandas.DataFrame
        model_id, normalization, fold and the sort metric on that fold's rows.
    models_ : dict
        model_id -> estimator refit on all training rows (see ``refit``).
    params_ : dict
        model_id -> the estimator's parameters.
    classes_ : ndarray (classification)
    failed_ : dict
        model_id -> error of the models whose training failed; like H2O
        AutoML, a failing model is skipped (with a RuntimeWarning).
    stopped_by_ : str
        "max_models", "max_runtime_secs" or "search space exhausted".
    runtime_secs_ : float
        Wall time of the search (without the leader's refit).
    """

    def __init__(
        self,
        max_models=None,
        max_runtime_secs=None,
        nfolds=5,
        seed=None,
        sort_metric="AUTO",
        normalizations=("layer", "batch", None),
        *,
        max_iter=50,
        early_stopping=True,
        batch_size="auto",
        refit="leader",
        verbose=0,
    ):
        self.max_models = max_models
        self.max_runtime_secs = max_runtime_secs
        self.nfolds = nfolds
        self.seed = seed
        self.sort_metric = sort_metric
        self.normalizations = normalizations
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.batch_size = batch_size
        self.refit = refit
        self.verbose = verbose

    # -- validation ---------------------------------------------------------
    def _validate(self):
        if self.max_models is not None and (
            not isinstance(self.max_models, (int, np.integer)) or self.max_models < 1
        ):
            raise ValueError(f"Expected `max_models` to be a positive int or None. Received: {self.max_models!r}")
        if self.max_runtime_secs is not None and not (
            isinstance(self.max_runtime_secs, (int, float)) and self.max_runtime_secs > 0
        ):
            raise ValueError(
                f"Expected `max_runtime_secs` to be a positive number or None. Received: {self.max_runtime_secs!r}"
            )
        if not isinstance(self.nfolds, (int, np.integer)) or self.nfolds < 2:
            raise ValueError(f"Expected `nfolds` to be an int >= 2. Received: nfolds={self.nfolds!r}")
        norms = tuple(self.normalizations) if self.normalizations is not None else ()
        if not norms or any(n not in _NORM_TAG for n in norms) or len(set(norms)) != len(norms):
            raise ValueError(
                "Expected `normalizations` to be a non-empty tuple of distinct values from "
                f"('layer', 'batch', None). Received: {self.normalizations!r}"
            )
        if self.refit not in ("leader", "all"):
            raise ValueError(f"Expected `refit` in ('leader', 'all'). Received: refit={self.refit!r}")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"Expected `max_iter` to be a positive int. Received: {self.max_iter!r}")
        return norms

    def _candidates(self, family, norms):
        """Yield (model_id, params) in search order until the declared space is exhausted.

        The default configuration comes first, then a seeded random walk through
        the whole grid; each configuration is yielded once per normalization.
        """
        space = MLP_SPACE if family == "mlp" else RNN_SPACE
        default = {k: v[0] for k, v in space.items()}
        grid = ParameterGrid(space)  # a random walk through the whole declared space
        sampled = (grid[int(i)] for i in np.random.default_rng(self.seed).permutation(len(grid)))
        seen, k = set(), 0
        for params in itertools.chain([default], sampled):
            key = tuple(sorted((n, repr(v)) for n, v in params.items()))
            if key in seen:
                continue
            seen.add(key)
            k += 1
            for norm in norms:
                if family == "rnn" and norm == "batch" and params["cell"] == "gru":
                    continue  # BatchNorm GRU is not provided by keras_ln
                if family == "mlp":
                    name = "MLP"
                else:
                    name = params["cell"].upper()
                yield f"{name}_{k}_{_NORM_TAG[norm]}", {**params, "normalization": norm}

    def _make(self, family, classification, params, seed):
        est_cls = _estimator_classes()[(family, classification)]
        est = est_cls(
            **params,
            max_iter=self.max_iter,
            early_stopping=self.early_stopping,
            batch_size=self.batch_size,
            random_state=seed,
            verbose=0,
        )
        scaler = StandardScaler() if family == "mlp" else SequenceScaler()
        return Pipeline([("scale", scaler), ("model", est)])

    # -- fit ----------------------------------------------------------------
    def fit(self, X, y, *, folds=None, task=None):
        """Search, cross-validate, rank, and refit the leader.

        Parameters
        ----------
        X : array-like of shape (n, F) (tabular) or (n, T, F) (sequences)
        y : array-like of shape (n,)
        folds : array-like of shape (n,) of int, default=None
            A fold index per row (0..nfolds-1). None: `make_folds` with
            ``nfolds`` and ``seed``.
        task : {"binary", "multiclass", "regression"} or None
            None infers it (`keras_ln.datasets.infer_task`).
        """
        from keras_ln.datasets import infer_task

        norms = self._validate()
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim not in (2, 3):
            raise ValueError(
                f"Expected `X` of shape (n_samples, n_features) or (n_samples, n_timesteps, "
                f"n_features). Received: X with shape {X.shape}"
            )
        if len(X) != len(y):
            raise ValueError(f"`X` and `y` have different lengths: {len(X)} != {len(y)}")
        if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
            raise ValueError("`X` must be numeric without NaN or infinite values.")
        self.task_ = task or infer_task(y)
        if self.task_ not in LEADERBOARD_COLUMNS:
            raise ValueError(f"Expected `task` in {tuple(LEADERBOARD_COLUMNS)}. Received: task={task!r}")
        classification = self.task_ != "regression"
        if classification:
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError("`y` holds a single class; classification needs at least 2.")
        sort_col, _ = resolve_sort_metric(self.task_, self.sort_metric)

        if folds is None:
            folds = make_folds(y, self.task_, self.nfolds, self.seed)
        else:
            folds = np.asarray(folds)
            if folds.shape != (len(y),) or not np.issubdtype(folds.dtype, np.integer) or folds.min() < 0:
                raise ValueError(f"Expected `folds` of non-negative ints with shape ({len(y)},). Received: {folds!r}")
        self.folds_ = folds
        splits = list(PredefinedSplit(folds).split())

        family = "mlp" if X.ndim == 2 else "rnn"
        budget = self.max_runtime_secs
        if budget is None and self.max_models is None:
            budget = 3600
        start = _clock()
        rows, fold_rows = [], []
        self.cv_predictions_, self.params_, self.models_, self.stopped_by_ = {}, {}, {}, None
        self.failed_ = {}
        bar = _ProgressBar(self.max_models or 0) if self.verbose else None
        seed = self.seed if self.seed is not None else 0
        for model_id, params in self._candidates(family, norms):
            if self.max_models is not None and len(rows) >= self.max_models:
                self.stopped_by_ = "max_models"
                break
            if budget is not None and _clock() - start >= budget:
                self.stopped_by_ = "max_runtime_secs"
                break
            if bar:
                bar.update(len(rows), f"training {model_id}")
            try:
                row, model_folds, cv_pred, full = self._train_one(
                    X, y, splits, family, classification, model_id, params, seed, sort_col)
            except Exception as exc:  # noqa: BLE001 - like H2O AutoML: a failing model is skipped
                self.failed_[model_id] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"AutoML: {model_id} failed and is skipped: {self.failed_[model_id]}",
                              RuntimeWarning, stacklevel=2)
                continue
            rows.append(row)
            fold_rows.extend(model_folds)
            self.cv_predictions_[model_id] = cv_pred
            self.params_[model_id] = params
            if full is not None:
                self.models_[model_id] = full
        if bar:
            bar.update(len(rows), "done")
            bar.close()
        if self.stopped_by_ is None and len(rows):
            self.stopped_by_ = "search space exhausted"

        columns = LEADERBOARD_COLUMNS[self.task_] + EXTRA_COLUMNS
        self.leaderboard = sort_leaderboard(pd.DataFrame(rows, columns=columns), self.task_, self.sort_metric)
        self.fold_scores_ = pd.DataFrame(fold_rows, columns=["model_id", "normalization", "fold", sort_col])
        self.runtime_secs_ = _clock() - start
        if not rows:
            self.leader = None
            return self
        leader_id = self.leaderboard["model_id"].iloc[0]
        if leader_id not in self.models_:
            full = self._make(family, classification, self.params_[leader_id], seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                full.fit(X, y)
            self.models_[leader_id] = full
        self.leader = self.models_[leader_id]
        return self

    def _train_one(self, X, y, splits, family, classification, model_id, params, seed, sort_col):
        """Cross-validate one model (and refit it on all rows when refit="all")."""
        est = self._make(family, classification, params, seed)
        n_out = len(self.classes_) if classification else 1
        cv_pred = np.zeros((len(y), n_out)) if classification else np.zeros(len(y))
        fit_s = pred_s = 0.0
        fold_rows = []
        for k, (train, test) in enumerate(splits):
            fold_est = clone(est)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fold_est.fit(X[train], y[train])
            t1 = time.perf_counter()
            if classification:
                proba = fold_est.predict_proba(X[test])
                part = np.zeros((len(test), n_out))
                part[:, np.searchsorted(self.classes_, fold_est.classes_)] = proba
                cv_pred[test] = part
            else:
                cv_pred[test] = np.asarray(fold_est.predict(X[test]), dtype=float).ravel()
            pred_s += time.perf_counter() - t1
            fit_s += t1 - t0
            fold_rows.append({"model_id": model_id, "normalization": params["normalization"] or "none",
                              "fold": k, sort_col: self._fold_metric(y[test], cv_pred[test], sort_col)})
        if not np.all(np.isfinite(cv_pred)):
            raise ValueError("non-finite cross-validated predictions (the training diverged)")
        row = {"model_id": model_id}
        row.update(h2o_metrics(self.task_, y, cv_pred, self.classes_ if classification else None))
        row["normalization"] = params["normalization"] or "none"
        row["training_time_ms"] = 1000.0 * fit_s / len(splits)
        row["predict_time_per_row_ms"] = 1000.0 * pred_s / len(y)
        full = None
        if self.refit == "all":
            full = clone(est)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                full.fit(X, y)
            row["training_time_ms"] = 1000.0 * (time.perf_counter() - t0)
        return row, fold_rows, cv_pred, full

    def _fold_metric(self, y, pred, col):
        if self.task_ == "binary" and len(np.unique(y)) < 2:
            return float("nan")  # auc & co. are undefined on a one-class fold
        classes = self.classes_ if self.task_ != "regression" else None
        return h2o_metrics(self.task_, y, pred, classes)[col]

    def __repr__(self):
        return (f"AutoML(max_models={self.max_models!r}, max_runtime_secs={self.max_runtime_secs!r}, "
                f"nfolds={self.nfolds!r}, seed={self.seed!r}, sort_metric={self.sort_metric!r}, "
                f"normalizations={self.normalizations!r})")
