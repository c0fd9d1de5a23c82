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
(`_leaderboard`). After the search come H2O's two stacked ensembles of the
nets (`_ensembles`) and two reference rows, a GLM and a constant
(`_baselines`).
"""

import math
import os
import shutil
import tempfile
import time
from numbers import Integral
from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.base import _fit_context
from sklearn.base import clone
from sklearn.model_selection import PredefinedSplit
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_feature_names
from sklearn.utils.validation import check_is_fitted

from keras_ln.automl import _baselines
from keras_ln.automl import _ensembles
from keras_ln.automl._folds import make_folds
from keras_ln.automl._leaderboard import EXTRA_COLUMNS
from keras_ln.automl._leaderboard import resolve_sort_metric
from keras_ln.automl._leaderboard import sort_leaderboard
from keras_ln.automl._metrics import LEADERBOARD_COLUMNS
from keras_ln.automl._preprocessing import make_preprocessor
from keras_ln.automl import _search
from keras_ln.automl import _search_loop
from keras_ln.automl import _store
from keras_ln.automl import _verdict
from keras_ln.automl import _workers
from keras_ln.automl._search import _NORM_TAG
from keras_ln.datasets import check_sequences
from keras_ln.datasets import pad_sequences



def _early_stopping_applies(n_train):
    """Whether the estimators' early stopping can run on ``n_train`` training rows: its validation part
    (``validation_fraction`` 0.1) holds at least ``MIN_VALIDATION_ROWS`` (a rare class may still make an
    estimator train without it; see ``early_stopping_used_``)."""
    from keras_ln.sklearn._base import MIN_VALIDATION_ROWS

    return math.ceil(0.1 * n_train) >= MIN_VALIDATION_ROWS


def _estimator_classes():
    from keras_ln import sklearn as kls  # deferred: pulls in the keras estimators

    return {
        ("mlp", True): kls.MLPClassifier,
        ("mlp", False): kls.MLPRegressor,
        ("rnn", True): kls.LSTMClassifier,
        ("rnn", False): kls.LSTMRegressor,
    }


class AutoML(_search_loop.SearchLoop, BaseEstimator):
    """H2O-style AutoML over keras_ln's MLP and LSTM/GRU estimators.

    Parameters
    ----------
    max_models : int or None, default=None
        Most models to train (one model = one configuration with one
        normalization, cross-validated). None: only ``max_runtime_secs`` limits.
        The stacked ensembles and the baselines, built after the search, do
        not count.
    max_runtime_secs : float or None, default=None
        No new model starts after this many seconds; the models that finished
        are reported. If both are None, ``max_runtime_secs=3600`` like H2O.
    nfolds : int, default=5
        Folds of the cross-validation that fills the leaderboard.
    n_repeats : int, default=1
        Repeated cross-validation for the normalization verdict: the fold
        assignment is drawn ``n_repeats`` times (the first is ``folds`` or
        ``make_folds(y, task, nfolds, seed)``, the one H2O shares; repeat
        ``r`` is ``make_folds(y, task, nfolds, seed + r)``, seed None
        counting as 0), and every model is trained on every fold of every
        repeat. The leaderboard, the pruner, the ensembles and the baselines
        use the first repeat only (so that they stay comparable with H2O's,
        on the same folds); the other repeats add rows to ``fold_scores_``,
        which `verdict` pairs up. Costs ``n_repeats`` times the training.
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
        Epochs per fit: the most (the portfolio's configurations train all
        of them, the search picks among a quarter, half and all of them),
        or the most before early stopping.
    early_stopping : bool, default=False
        Passed to the estimators: with True they hold out 10% of each
        training fold and stop when its loss stops improving, where that
        part has at least 50 rows (training folds of 500 rows or more);
        otherwise the search picks the epochs (``epochs_searched_``). Off by
        default, so that the nets of one configuration differ in their
        normalization alone: stopped early, each normalization trains on
        90% of the rows for as many epochs as a noisy held-out loss lets
        it. `benchmarks/early_stopping_bias.py` found that this made
        the nets' cross-validated scores worse in 11 of 15 (set,
        normalization) cases and better in 2 (none significantly), and that on a set
        no default was tuned on it turned "layer (and batch) normalization
        beat none" into "no detectable difference".
    batch_size : int or "auto", default="auto"
        "auto": searched (the family's ``batch_size`` in `_search`); an int
        fixes it for every model.
    refit : {"leader", "all"}, default="leader"
        Refit the leader only, or every model, on all training rows (the
        refitted models are in ``models_``; an ensemble's refit is its base
        nets' refits with its weights).
    storage : str or None, default=None
        Where the search is kept: None in memory; an Optuna storage URL
        (SQLAlchemy: ``"sqlite:///automl.db"``, PostgreSQL, MySQL) commits
        every finished model (its row, fold scores, cross-validated
        predictions and, with ``refit="all"``, its refit) the moment it
        finishes (`_store`), so that a killed run loses nothing and
        `keras_ln.automl.load_leaderboard` reads the partial leaderboard at
        any time.
    study_name : str or None, default=None
        The study's name in ``storage`` (None: ``keras_ln_automl_mlp`` or
        ``keras_ln_automl_rnn``).
    resume : bool or "auto", default="auto"
        With ``storage``: continue the study of that name if it exists
        ("auto") or always (True: an error if there is none; False: an
        existing one is deleted and the search starts anew). Finished models
        are not trained again, a model an interrupted process was training
        is trained again, and ``max_runtime_secs`` counts the seconds
        already spent. The data, folds and settings must be the same (a
        fingerprint is checked; ValueError otherwise). With a fixed seed
        the final leaderboard equals an uninterrupted run's (but for the
        timing columns).
    n_jobs : int or None, default=1
        Models trained at once: ``n_jobs`` worker processes on this machine
        (a `dask.distributed.LocalCluster`; the ``dask`` extra; None: one per
        core this process may run on, its CPU affinity), or, with
        ``dask_scheduler``, that many tasks on an existing Dask cluster (None:
        one per worker thread of the cluster). The workers share the study
        (``storage``, or a temporary SQLite file of this fit), each asking
        configurations and committing its models; the data is sent to each
        worker once. Each worker's TensorFlow runs with this process's
        intra-op thread count (its products' last bits depend on it).
        A model's result depends only on its configuration, folds and seed;
        which configurations are asked depends on the order in which the
        workers finish (the budget checks also, so ``max_models`` may be
        exceeded by up to ``n_jobs - 1``).
    dask_scheduler : str or None, default=None
        The address of a Dask scheduler (``"tcp://head:8786"``) to run the
        workers on instead of this machine; ``storage`` must then be a
        database the workers reach (PostgreSQL, MySQL).
    verbose : int, default=0
        >0 shows a progress bar over the models on stderr.

    Attributes
    ----------
    leaderboard_ : pandas.DataFrame
        H2O's columns for the task, then normalization ("layer", "batch",
        "none"; "ensemble" and "n/a" below), training_time_ms (the fit on all
        training rows with ``refit="all"``, else the mean fit time per fold;
        an ensemble's: its metalearner's fits) and predict_time_per_row_ms
        (from the cross-validated predictions; an ensemble's: the sum over its
        base nets); sorted like H2O's. Besides the nets it holds H2O's
        ``StackedEnsemble_AllModels`` and ``StackedEnsemble_BestOfFamily``
        (`_ensembles`; normalization "ensemble") and the references
        ``Baseline_GLM`` and ``Baseline_constant`` (`_baselines`;
        normalization "n/a"), cross-validated on the same folds.
    leader_ : estimator or None
        The best net or ensemble, refit on all training rows (a Pipeline of
        `make_preprocessor`'s transformer and the net: it takes X as `fit`
        does); None when no model finished. Like H2O's
        leader it may be a stacked ensemble (a `_ensembles.StackedEnsemble`);
        it is never a baseline, which are references, not candidates.
    leaderboard, leader
        H2O's names for ``leaderboard_`` and ``leader_`` (read-only).
    n_features_in_ : int
        Columns of a table; features per time step of sequences.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names of a DataFrame X whose column names are all strings.
    task_ : str
    folds_ : ndarray of shape (n_samples,)
        Fold index of every training row (the first repeat's).
    repeat_folds_ : ndarray of shape (n_repeats, n_samples)
        The fold assignment of every repeat (``repeat_folds_[0]`` is
        ``folds_``).
    cv_predictions_ : dict
        model_id -> cross-validated predictions (probabilities per class for
        classification, in the order of ``classes_``).
    fold_scores_ : pandas.DataFrame
        model_id, config (the configuration a net was trained from, e.g.
        ``MLP_3``, shared by its normalizations; empty for the ensembles and
        baselines), normalization, repeat, fold and the sort metric on that
        fold's rows. The ensembles and baselines have the first repeat only.
    models_ : dict
        model_id -> estimator refit on all training rows (see ``refit``).
    params_ : dict
        model_id -> the estimator's parameters (the nets).
    ensemble_weights_ : dict
        ensemble model_id -> {base model_id: weight}, the metalearner fitted
        on all level-one rows (non-negative, summing to one).
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
    epochs_searched_ : bool
        Whether the epoch count (``max_iter``) was a searched parameter
        (early stopping off or impossible on folds this small).
    stopped_by_ : str
        "max_models", "max_runtime_secs", or "10 configurations failed in a
        row".
    runtime_secs_ : float
        Wall time of the search, the ensembles and the baselines (without
        the leader's refit).
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
        n_repeats=1,
        max_iter=50,
        early_stopping=False,
        batch_size="auto",
        refit="leader",
        storage=None,
        study_name=None,
        resume="auto",
        n_jobs=1,
        dask_scheduler=None,
        verbose=0,
    ):
        self.max_models = max_models
        self.max_runtime_secs = max_runtime_secs
        self.nfolds = nfolds
        self.n_repeats = n_repeats
        self.seed = seed
        self.sort_metric = sort_metric
        self.normalizations = normalizations
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.batch_size = batch_size
        self.refit = refit
        self.storage = storage
        self.study_name = study_name
        self.resume = resume
        self.n_jobs = n_jobs
        self.dask_scheduler = dask_scheduler
        self.verbose = verbose

    _parameter_constraints: dict = {
        "max_models": [Interval(Integral, 1, None, closed="left"), None],
        "max_runtime_secs": [Interval(Real, 0, None, closed="neither"), None],
        "nfolds": [Interval(Integral, 2, None, closed="left")],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "seed": [Interval(Integral, 0, None, closed="left"), None],
        "sort_metric": [str],
        "normalizations": ["array-like"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "refit": [StrOptions({"leader", "all"})],
        "storage": [str, None],
        "study_name": [str, None],
        "resume": ["boolean", StrOptions({"auto"})],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
        "dask_scheduler": [str, None],
        "verbose": ["verbose"],
    }

    # -- input checks ---------------------------------------------------------
    def _check_normalizations(self):
        norms = tuple(self.normalizations)
        if not norms or any(n not in _NORM_TAG for n in norms) or len(set(norms)) != len(norms):
            raise ValueError(
                "Expected `normalizations` to be a non-empty tuple of distinct values from "
                f"('layer', 'batch', None). Received: normalizations={self.normalizations!r}"
            )
        return norms

    def _check_X(self, X, reset):
        """``X`` as a DataFrame, a 2-D numeric array or a NaN-padded 3-D float array; sets or checks its width.

        A list of (T_i, F) arrays is padded with NaN at the end. NaN in tables
        is left to the preprocessing (imputed); NaN in sequences must fill
        whole time steps at the end (padding).
        """
        if isinstance(X, (list, tuple)) and len(X) and all(np.ndim(x) == 2 for x in X):
            X = pad_sequences(X, "X")
        if isinstance(X, pd.DataFrame):
            if X.shape[1] == 0:
                raise ValueError(f"Expected `X` with at least one column. Received: a DataFrame of shape {X.shape}")
            numeric = X.select_dtypes("number")
            if numeric.shape[1] and np.isinf(numeric.to_numpy(dtype=float)).any():
                cols = [c for c in numeric.columns if np.isinf(numeric[c].to_numpy(dtype=float)).any()]
                raise ValueError(f"Expected `X` without infinite values (NaN are imputed). Received: infinite "
                                 f"values in column(s) {cols[:5]}")
        else:
            try:
                X = np.asarray(X)
            except ValueError as exc:
                raise ValueError(f"Expected `X` as a DataFrame, an array of shape (n_samples, n_features) or "
                                 f"(n_samples, n_timesteps, n_features), or a list of (n_timesteps_i, n_features) "
                                 f"arrays. Received: {type(X).__name__} ({exc})") from None
            if X.ndim not in (2, 3):
                raise ValueError(
                    f"Expected `X` of shape (n_samples, n_features) or (n_samples, n_timesteps, "
                    f"n_features). Received: X with shape {X.shape}"
                )
            if X.dtype.kind not in "biuf":
                raise ValueError(f"Expected `X` to hold real numbers (a DataFrame for categorical columns). "
                                 f"Received: X of dtype {X.dtype}")
            if X.ndim == 3:
                X = X.astype(np.float64) if X.dtype.kind != "f" else X
                check_sequences(X, "X")
            elif X.dtype.kind == "f" and np.isinf(X).any():
                raise ValueError(f"Expected `X` without infinite values (NaN are imputed). Received: "
                                 f"{int(np.isinf(X).sum())} infinite value(s), the first in column "
                                 f"{int(np.argwhere(np.isinf(X))[0][1])}")
        layout = "sequences" if np.ndim(X) == 3 else "table"
        if reset and layout == "table":
            empty = np.flatnonzero(np.asarray(pd.isna(X)).all(axis=0))
            if len(empty):
                names = list(X.columns[empty]) if isinstance(X, pd.DataFrame) else empty.tolist()
                raise ValueError(f"Expected every column of `X` to hold at least one value. Received: "
                                 f"{len(empty)} column(s) of only NaN/None: {names[:5]}")
        width = X.shape[-1]
        if not reset and layout != self._layout:
            raise ValueError(f"Expected `X` as {self._layout} like the X given to fit. Received: X with shape "
                             f"{np.shape(X)}")
        _check_feature_names(self, X, reset=reset)
        if reset:
            self._layout, self.n_features_in_ = layout, width
        elif width != self.n_features_in_:
            what = "features per time step" if layout == "sequences" else "features"
            raise ValueError(f"Expected `X` with {self.n_features_in_} {what}, like the X given to fit. "
                             f"Received: {width}")
        return X

    def _make(self, family, classification, params, seed):
        est_cls = _estimator_classes()[(family, classification)]
        kwargs = dict(max_iter=self.max_iter, early_stopping=self.early_stopping, batch_size=self.batch_size,
                      random_state=seed, verbose=0)
        est = est_cls(**{**kwargs, **params})  # a searched batch_size replaces "auto"
        return Pipeline([("preprocess", clone(self._preprocessor)), ("model", est)])

    # -- fit ----------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, folds=None, task=None):
        """Search, cross-validate, rank, and refit the leader.

        Parameters
        ----------
        X : pandas.DataFrame, array of shape (n, F), array of shape (n, T, F) or list of (T_i, F) arrays
            A table (numeric and categorical columns, missing values allowed:
            `make_preprocessor` imputes and encodes them inside every model)
            or sequences. Sequences of different lengths: a list of (T_i, F)
            arrays, or an array padded at the end with all-NaN time steps.
        y : array-like of shape (n,)
        folds : array-like of shape (n,) of int, default=None
            A fold index per row (0..nfolds-1). None: `make_folds` with
            ``nfolds`` and ``seed``.
        task : {"binary", "multiclass", "regression"} or None
            None infers it (`keras_ln.datasets.infer_task`).
        """
        from keras_ln.datasets import infer_task

        norms = self._check_normalizations()
        X = self._check_X(X, reset=True)
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"Expected `y` of shape (n_samples,). Received: y with shape {y.shape}")
        if len(X) != len(y):
            raise ValueError(f"Expected `y` with one value per row of `X` ({len(X)}). Received: y of length "
                             f"{len(y)}")
        if len(pd.isna(y).nonzero()[0]):
            missing = np.flatnonzero(pd.isna(y))
            raise ValueError(f"Expected `y` without missing values. Received: {len(missing)} NaN/None, at rows "
                             f"{missing[:5].tolist()}")
        self._preprocessor = make_preprocessor(X)
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
        nfolds = len(splits)
        self.repeat_folds_ = np.stack([folds] + [
            make_folds(y, self.task_, nfolds, (self.seed or 0) + r) for r in range(1, self.n_repeats)])
        repeats = [splits] + [list(PredefinedSplit(f).split()) for f in self.repeat_folds_[1:]]

        family = "mlp" if X.ndim == 2 else "rnn"
        budget = self.max_runtime_secs
        if budget is None and self.max_models is None:
            budget = 3600
        start = _search_loop._clock()
        self._rows, self._fold_rows = [], []
        rows, fold_rows = self._rows, self._fold_rows
        self.cv_predictions_, self.params_, self.models_, self.stopped_by_ = {}, {}, {}, None
        self.failed_, self.pruned_ = {}, {}
        seed = self.seed if self.seed is not None else 0

        # Optuna proposes configurations (its portfolio first); each is trained
        # once per normalization, paired, and its mean sort metric is told back.
        fixed = {} if isinstance(self.batch_size, str) else {"batch_size": self.batch_size}
        space = _search.search_space(family, fixed)
        # Where early stopping cannot run on the training folds (too few validation rows), the search picks the
        # epoch count; the portfolio's configurations train max_iter epochs.
        smallest = min(len(train) for reps in repeats for train, _ in reps)
        self.epochs_searched_ = not (self.early_stopping and _early_stopping_applies(smallest))
        if self.epochs_searched_:
            space["max_iter"] = _search.epochs_distribution(self.max_iter)
        workers = self._n_workers()
        parallel = workers > 1 or self.dask_scheduler is not None
        storage, scratch = self.storage, None
        if parallel and storage is None:  # the workers share a study: a SQLite file of this fit's own
            scratch = tempfile.mkdtemp(prefix="keras_ln_automl_")
            storage = f"sqlite:///{os.path.join(scratch, 'study.db')}"
        persistent = storage is not None
        settings = dict(task=self.task_, family=family, seed=self.seed, n_repeats=self.n_repeats,
                        normalizations=list(norms), max_iter=self.max_iter, early_stopping=self.early_stopping,
                        batch_size=self.batch_size, sort_metric=self.sort_metric, refit=self.refit)
        search = _workers.Search(family=family, classification=classification, norms=norms, space=space,
                                 fixed=fixed, sort_col=sort_col, seed=seed, repeats=repeats, budget=budget,
                                 max_models=self.max_models, persistent=persistent)
        self.study_ = None
        try:
            with _search.quiet_optuna():
                self.study_, abandoned = _search.make_study(
                    family, higher_is_better, self.seed, storage=storage, study_name=self.study_name,
                    fingerprint=_store.fingerprint(X, y, self.repeat_folds_, settings) if persistent else None,
                    resume=self.resume if scratch is None else False, defaults={"max_iter": self.max_iter})
                if persistent:
                    self.study_.set_user_attr("task", self.task_)
                    start -= self.study_.user_attrs.get("spent_secs", 0.0)
                if parallel:
                    _search.enqueue_pending(self.study_, abandoned)
                    if self.study_.user_attrs.get("stopped_by") is None:
                        self._run_workers(workers, storage, X, y, search, time.time() + (
                            budget - (_search_loop._clock() - start) if budget is not None else 1e12))
                failed_in_a_row, stored = self._restore(search) if persistent else (0, {})
                if not parallel:
                    self._search_loop(X, y, search, abandoned, failed_in_a_row,
                                      lambda: budget is not None and _search_loop._clock() - start >= budget, start, stored)
                else:
                    self.stopped_by_ = self.stopped_by_ or self._stopped_by(
                        len(rows), budget is not None and _search_loop._clock() - start >= budget) or (
                        f"{_search_loop.MAX_FAILED_IN_A_ROW} configurations failed in a row")
                    self.study_.set_user_attr("spent_secs", _search_loop._clock() - start)
                    self.study_.set_user_attr("stopped_by", self.stopped_by_)
        finally:
            if scratch is not None:
                if self.study_ is not None:
                    self.study_ = _search.in_memory_copy(self.study_)
                shutil.rmtree(scratch, ignore_errors=True)

        columns = LEADERBOARD_COLUMNS[self.task_] + EXTRA_COLUMNS
        # After the search, outside max_models and max_runtime_secs: H2O's two
        # stacked ensembles of the nets, and the two baselines as references.
        classes = self.classes_ if classification else None
        nets = sort_leaderboard(pd.DataFrame(rows, columns=columns), self.task_, self.sort_metric)
        ensembles = _ensembles.stacked_ensembles(self.task_, y, splits, nets, self.cv_predictions_, sort_col, classes)
        baselines = _baselines.cross_validate_baselines(
            self.task_, X, y, splits, self._preprocessor, sort_col, classes=classes, sequences=family == "rnn",
            refit=self.refit == "all")
        for model_id, (row, model_folds, cv_pred, _) in {**ensembles, **baselines}.items():
            rows.append(row)
            fold_rows.extend({**r, "config": None, "repeat": 0} for r in model_folds)
            self.cv_predictions_[model_id] = cv_pred
        self.ensemble_weights_ = {model_id: spec[3] for model_id, spec in ensembles.items()}
        self.models_.update({model_id: spec[3] for model_id, spec in baselines.items() if spec[3] is not None})
        self.leaderboard_ = sort_leaderboard(pd.DataFrame(rows, columns=columns), self.task_, self.sort_metric)
        self.fold_scores_ = pd.DataFrame(
            fold_rows, columns=["model_id", "config", "normalization", "repeat", "fold", sort_col])
        self.runtime_secs_ = _search_loop._clock() - start
        if self.refit == "all":
            for model_id in self.ensemble_weights_:
                self._refit_model(model_id, X, y, family, classification, seed)
        # the baselines are references: the leader is the best net or ensemble
        contenders = self.leaderboard_.loc[~self.leaderboard_["model_id"].isin(_baselines.BASELINE_IDS), "model_id"]
        if not len(contenders):
            self.leader_ = None
            return self
        self.leader_ = self._refit_model(contenders.iloc[0], X, y, family, classification, seed)
        return self

    # -- the fitted AutoML ---------------------------------------------------
    @property
    def leaderboard(self):
        """H2O's name for ``leaderboard_``."""
        check_is_fitted(self, "leaderboard_")
        return self.leaderboard_

    @property
    def leader(self):
        """H2O's name for ``leader_``."""
        check_is_fitted(self, "leaderboard_")
        return self.leader_

    def verdict(self):
        """The normalization verdict: every pair of the normalizations trained, over the paired fold scores.

        Pairs the nets' ``fold_scores_`` by (configuration, repeat, fold) and
        reports per pair ("layer-batch", "layer-none", "batch-none") the mean
        difference of the sort metric (positive when the first is better), a
        95% confidence interval by the corrected resampled t-test (Nadeau &
        Bengio, 2003), a Wilcoxon signed-rank p-value and a one-line verdict;
        once over all configurations trained under both, once over each
        normalization's best configuration alone (`_verdict.verdict`).

        Returns
        -------
        pandas.DataFrame
            Columns pair, metric, scope, mean_diff, ci_low, ci_high, p_value,
            n_pairs, verdict; no rows when fewer than two normalizations
            have finished models.
        """
        check_is_fitted(self, "leaderboard_")
        metric = self.fold_scores_.columns[-1]
        _, higher_is_better = resolve_sort_metric(self.task_, self.sort_metric)
        nets = self.fold_scores_[self.fold_scores_["config"].notna()]
        return _verdict.verdict(nets, metric, higher_is_better, int(self.folds_.max()) + 1)

    def best_configurations(self):
        """normalization (None for "none") -> the unfitted model (a Pipeline of the preprocessing and the
        estimator) of that normalization's best net on the leaderboard, in the order of ``normalizations``."""
        check_is_fitted(self, "leaderboard_")
        best = {}
        for model_id, norm in zip(self.leaderboard_["model_id"], self.leaderboard_["normalization"]):
            if model_id in self.params_:
                best.setdefault(None if norm == "none" else norm, model_id)
        family = "mlp" if self._layout == "table" else "rnn"
        classification = self.task_ != "regression"
        seed = self.seed if self.seed is not None else 0
        return {norm: self._make(family, classification, self.params_[best[norm]], seed)
                for norm in self._check_normalizations() if norm in best}

    def measure_claims(self, X, y, out_dir=None, budget_secs=None):
        """Measure the claims made for layer normalization on ``X, y`` (the data given to `fit`), for the best
        configuration of each normalization (`best_configurations`), on ``folds_``.

        See `keras_ln.automl._claims.measure_claims` for the claims, the
        budget and the files written to ``out_dir`` (claims.csv and a figure
        per claim).

        Returns
        -------
        pandas.DataFrame
            The claims' rows (`_claims.COLUMNS`).
        """
        from keras_ln.automl import _claims

        configs = self.best_configurations()
        if not configs:
            raise ValueError("This AutoML has no finished net to measure the claims on (see failed_ and pruned_).")
        X = self._check_X(X, reset=False)
        y = np.asarray(y)
        if len(y) != len(self.folds_):
            raise ValueError(f"Expected `X` and `y` to be the training rows given to fit ({len(self.folds_)} rows). "
                             f"Received: y of length {len(y)}")
        seed = self.seed if self.seed is not None else 0
        return _claims.measure_claims(configs, X, y, self.folds_, self.task_, out_dir=out_dir,
                                      budget_secs=budget_secs, seed=seed, sort_metric=self.sort_metric)

    def _fitted_leader(self):
        check_is_fitted(self, "leaderboard_")
        if self.leader_ is None:
            raise ValueError("This AutoML has no leader to predict with: no model finished within its budget "
                             f"({len(self.failed_)} failed, see failed_).")
        return self.leader_

    def predict(self, X):
        """The leader's predictions: class labels (classification) or values (regression).

        Parameters
        ----------
        X : like the X given to `fit` (same columns, or the same features per time step)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        leader = self._fitted_leader()
        return leader.predict(self._check_X(X, reset=False))

    def predict_proba(self, X):
        """The leader's class probabilities, columns in the order of ``classes_`` (classification only).

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        leader = self._fitted_leader()
        if self.task_ == "regression":
            raise AttributeError("predict_proba is only available for classification; this AutoML was fitted "
                                 "on a regression task")
        proba = np.asarray(leader.predict_proba(self._check_X(X, reset=False)))
        classes = getattr(leader, "classes_", self.classes_)
        if len(classes) == len(self.classes_) and np.array_equal(classes, self.classes_):
            return proba
        out = np.zeros((len(proba), len(self.classes_)))
        out[:, np.searchsorted(self.classes_, classes)] = proba
        return out
