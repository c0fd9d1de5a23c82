"""`AutoML`: H2O-style AutoML over keras_ln's estimators.

`AutoML` searches the estimator families that fit the data (MLP for tabular
X of shape (n, F), LSTM/GRU for sequences of shape (n, T, F)) over the
normalizations ("layer", "batch", None) and a declared space of depths,
widths, learning rates, dropout, batch sizes and weight decay (plus cell and
direction for recurrent nets) with Optuna (`_search`): a portfolio of strong
default configurations first, then a seeded TPE sampler, poor configurations
pruned on their first folds. Every configuration is trained once with each
normalization, on the same folds (`_folds`) with the same seed; the leaderboard holds H2O AutoML's own columns
for the task, computed from the cross-validated predictions with the
definitions H2O uses (`_metrics`), and is sorted like H2O's
(`_leaderboard`).
"""

import time
import warnings

import numpy as np
import optuna
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import PredefinedSplit
from sklearn.pipeline import Pipeline
from tqdm import tqdm

from keras_ln.automl._folds import make_folds
from keras_ln.automl._leaderboard import EXTRA_COLUMNS
from keras_ln.automl._leaderboard import resolve_sort_metric
from keras_ln.automl._leaderboard import sort_leaderboard
from keras_ln.automl._metrics import LEADERBOARD_COLUMNS
from keras_ln.automl._metrics import fold_metric
from keras_ln.automl._metrics import h2o_metrics
from keras_ln.automl._preprocessing import make_scaler
from keras_ln.automl import _search
from keras_ln.automl._search import _NORM_TAG

_clock = time.monotonic  # the budget's clock (a module attribute so that tests can drive it)
_MAX_FAILED_IN_A_ROW = 10  # the search gives up after this many configurations without a model


def _estimator_classes():
    from keras_ln import sklearn as kls  # deferred: pulls in the keras estimators

    return {
        ("mlp", True): kls.MLPClassifier,
        ("mlp", False): kls.MLPRegressor,
        ("rnn", True): kls.LSTMClassifier,
        ("rnn", False): kls.LSTMRegressor,
    }


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
        Seeds the fold assignment, the sampling of the search space (Optuna's
        ``TPESampler``; None: unseeded) and every estimator's ``random_state``
        (None: 0).
    sort_metric : str, default="AUTO"
        As H2O's: "AUTO" sorts by auc (binary), mean_per_class_error
        (multiclass), mean_residual_deviance (regression).
    normalizations : tuple, default=("layer", "batch", None)
        Every sampled configuration is trained once with each of these, on the
        same folds with the same seed, so that its models differ only in their
        normalization ("batch" is left out for GRU configurations: keras_ln
        has no batch-normalized GRU). When a budget ends the search in the
        middle of a configuration, that last one lacks some of them.
    max_iter : int, default=50
        Epochs per fit.
    early_stopping : bool, default=True
        Passed to the estimators (holds out 10% of each training fold).
    batch_size : int or "auto", default="auto"
        "auto": searched (the family's ``batch_size`` in `_search`); an int
        fixes it for every model.
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
    study_ : optuna.study.Study
        The search: one trial per configuration, numbered like the model ids
        (trial ``k - 1`` is configuration ``k``: ``MLP_k_LN``, ...); its
        value is the mean of the configuration's models' sort metric.
        Trials are COMPLETE, PRUNED, or FAIL (no model finished, or the
        budget stopped the search within the configuration: user attribute
        ``stopped_by``). The portfolio's trials have the user attribute
        ``portfolio``.
    pruned_ : dict
        model_id -> why Optuna's pruner stopped it: a configuration whose first
        model's folds are worse than the median of the finished
        configurations; its other normalizations are not trained, and none
        of it is in the leaderboard.
    stopped_by_ : str
        "max_models", "max_runtime_secs", or "10 configurations failed in a
        row".
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

    def _make(self, family, classification, params, seed):
        est_cls = _estimator_classes()[(family, classification)]
        kwargs = dict(max_iter=self.max_iter, early_stopping=self.early_stopping, batch_size=self.batch_size,
                      random_state=seed, verbose=0)
        est = est_cls(**{**kwargs, **params})  # a searched batch_size replaces "auto"
        return Pipeline([("scale", make_scaler(family)), ("model", est)])

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
        sort_col, higher_is_better = resolve_sort_metric(self.task_, self.sort_metric)

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
        self.failed_, self.pruned_ = {}, {}
        bar = tqdm(total=self.max_models, desc="keras_ln AutoML", unit="model",
                   disable=not self.verbose, leave=True)
        seed = self.seed if self.seed is not None else 0

        def out_of_budget():  # checked before every model, as H2O does
            if self.max_models is not None and len(rows) >= self.max_models:
                self.stopped_by_ = "max_models"
            elif budget is not None and _clock() - start >= budget:
                self.stopped_by_ = "max_runtime_secs"
            return self.stopped_by_ is not None

        # Optuna proposes configurations (its portfolio first); each is trained
        # once per normalization, paired, and its mean sort metric is told back.
        fixed = {} if isinstance(self.batch_size, str) else {"batch_size": self.batch_size}
        space = _search.search_space(family, fixed)
        failed_in_a_row = 0
        with _search.quiet_optuna():
            self.study_ = _search.make_study(family, higher_is_better, self.seed, fixed)
            while not out_of_budget():
                trial = self.study_.ask(space)
                config = _search.to_params(family, trial.params)
                values, pruned = [], None
                for i, norm in enumerate(_search.normalizations_for(config, norms)):
                    if i and out_of_budget():
                        break
                    model_id = _search.model_id(family, trial.number + 1, config, norm)
                    params = {**config, "normalization": norm}
                    # the configuration's first model reports its folds to the pruner
                    report = _search.fold_reporter(trial, len(splits), sort_col) if i == 0 else None
                    bar.set_postfix_str(f"training {model_id}"
                                        + (f" ({len(self.pruned_)} pruned)" if self.pruned_ else ""), refresh=True)
                    try:
                        row, model_folds, cv_pred, full = self._train_one(
                            X, y, splits, family, classification, model_id, params, seed, sort_col, report)
                    except optuna.TrialPruned as exc:
                        pruned = self.pruned_[model_id] = str(exc)
                        break
                    except Exception as exc:  # noqa: BLE001 - like H2O AutoML: a failing model is skipped
                        self.failed_[model_id] = f"{type(exc).__name__}: {exc}"
                        warnings.warn(f"AutoML: {model_id} failed and is skipped: {self.failed_[model_id]}",
                                      RuntimeWarning, stacklevel=2)
                        continue
                    rows.append(row)
                    bar.update(1)
                    fold_rows.extend(model_folds)
                    self.cv_predictions_[model_id] = cv_pred
                    self.params_[model_id] = params
                    if full is not None:
                        self.models_[model_id] = full
                    values.append(row[sort_col])
                failed_in_a_row = failed_in_a_row + 1 if not values and pruned is None else 0
                if pruned is not None:
                    self.study_.tell(trial, state=optuna.trial.TrialState.PRUNED)
                elif self.stopped_by_ is not None:  # cut short by the budget: not every normalization ran
                    trial.set_user_attr("stopped_by", self.stopped_by_)
                    self.study_.tell(trial, state=optuna.trial.TrialState.FAIL)
                elif np.any(np.isfinite(values)):
                    self.study_.tell(trial, float(np.nanmean(values)))
                else:
                    self.study_.tell(trial, state=optuna.trial.TrialState.FAIL)
                if failed_in_a_row >= _MAX_FAILED_IN_A_ROW:
                    self.stopped_by_ = f"{_MAX_FAILED_IN_A_ROW} configurations failed in a row"
                    break
        bar.set_postfix_str("done")
        bar.close()

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

    def _train_one(self, X, y, splits, family, classification, model_id, params, seed, sort_col, report=None):
        """Cross-validate one model (and refit it on all rows when refit="all").

        ``report(fold, metric)``, if given, is called after every fold and may
        raise ``optuna.TrialPruned`` to stop the model early.
        """
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
            if report is not None:
                report(k, fold_rows[-1][sort_col])
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
        return fold_metric(self.task_, y, pred, getattr(self, "classes_", None), col)

    def __repr__(self):
        return (f"AutoML(max_models={self.max_models!r}, max_runtime_secs={self.max_runtime_secs!r}, "
                f"nfolds={self.nfolds!r}, seed={self.seed!r}, sort_metric={self.sort_metric!r}, "
                f"normalizations={self.normalizations!r})")
