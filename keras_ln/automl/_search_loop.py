"""The search loop of `AutoML` (a mixin of it): configurations asked from the study, each trained under every
normalization and cross-validated, finished models committed to a persistent study, parallel workers run.

`AutoML.fit` prepares the data, folds and study and then calls `SearchLoop._search_loop` (or
`_run_workers`, whose workers call it in their processes); `_restore` reads back what a study holds. A model
is cross-validated on every repeat's folds (`_train_one`), its first repeat's folds reported to Optuna's
pruner; a failing model is skipped, as H2O AutoML does.
"""

import time
import warnings

import numpy as np
import optuna
from sklearn.base import clone
from sklearn.utils import _safe_indexing
from tqdm import tqdm

from keras_ln.automl import _ensembles
from keras_ln.automl import _search
from keras_ln.automl import _store
from keras_ln.automl import _workers
from keras_ln.automl._metrics import fold_metric
from keras_ln.automl._metrics import h2o_metrics
from keras_ln._system import available_cores

_clock = time.monotonic  # the budget's clock (a module attribute so that tests can drive it)
MAX_FAILED_IN_A_ROW = 10  # the search gives up after this many configurations without a model


class SearchLoop:
    """`AutoML`'s search: the methods that train configurations and read them back from the study."""

    def _n_workers(self):
        if self.dask_scheduler is not None and self.storage is None:
            raise ValueError("Expected `storage` (a database URL the Dask workers reach) with `dask_scheduler`. "
                             "Received: storage=None")
        if self.dask_scheduler is not None and self.n_jobs is None:
            from dask.distributed import Client

            with Client(self.dask_scheduler, timeout=30) as client:
                return max(1, sum(client.nthreads().values()))
        return int(self.n_jobs or available_cores())

    def _stopped_by(self, n_models, out_of_time):
        if self.max_models is not None and n_models >= self.max_models:
            return "max_models"
        return "max_runtime_secs" if out_of_time else None

    def _add(self, model_id, row, model_folds, cv_pred, params, full):
        self._rows.append(row)
        self._fold_rows.extend(model_folds)
        self.cv_predictions_[model_id] = cv_pred
        self.params_[model_id] = params
        if full is not None:
            self.models_[model_id] = full

    def _restore(self, search):
        """What the study holds (an interrupted run, or the parallel workers): its models, failures and pruned
        configurations, in configuration order. Returns the configurations without a model in a row, and the
        stored models (`_store.finished_models`)."""
        stored = _store.finished_models(self.study_)
        self.stopped_by_ = self.study_.user_attrs.get("stopped_by")
        failed_in_a_row = 0
        for t in _store.done_trials(self.study_):
            config = _search.to_params(search.family, t.params)
            ids = [_search.model_id(search.family, t.user_attrs["configuration"], config, n)
                   for n in _search.normalizations_for(config, search.norms)]
            for model_id in ids:
                if model_id in stored and model_id not in self.params_:
                    self._add(model_id, *_store.load_model(stored[model_id]))
                elif _store.FAILED + model_id in t.user_attrs:
                    self.failed_[model_id] = t.user_attrs[_store.FAILED + model_id]
            self.pruned_.update(t.user_attrs.get("pruned", {}))
            trained = any(model_id in stored for model_id in ids)
            failed_in_a_row = failed_in_a_row + 1 if not trained and not t.user_attrs.get("pruned") else 0
        return failed_in_a_row, stored

    def _run_workers(self, workers, storage, X, y, search, deadline):
        """The search on ``workers`` Dask workers sharing the study (`_workers.run`)."""
        params = {**self.get_params(), "n_jobs": 1, "dask_scheduler": None, "storage": storage,
                  "study_name": self.study_.study_name, "verbose": 0}
        state = {name: getattr(self, name) for name in ("task_", "classes_", "_preprocessor", "_layout",
                                                        "n_features_in_", "folds_", "repeat_folds_",
                                                        "epochs_searched_") if hasattr(self, name)}
        _workers.run(workers, self.dask_scheduler, params, state, search, X, y, deadline)

    def _search_loop(self, X, y, search, abandoned, failed_in_a_row, out_of_time, start, stored=None):
        """Ask configurations and train each under every normalization until the budget is spent; with a
        persistent study every finished model is committed to it the moment it finishes. ``stored``: the
        study's models already read (None: read them here), reused where a retried configuration had some."""
        study = self.study_
        if stored is None:
            stored = _store.finished_models(study) if search.persistent else {}
        bar = tqdm(total=self.max_models, initial=len(self._rows), desc="keras_ln AutoML", unit="model",
                   disable=not self.verbose or search.shared, leave=True)

        def out_of_budget():  # checked before every model, as H2O does
            n = _store.count_models(study) if search.shared else len(self._rows)
            self.stopped_by_ = self._stopped_by(n, out_of_time())
            return self.stopped_by_ is not None

        heartbeat = optuna.storages._heartbeat.get_heartbeat_thread
        while self.stopped_by_ is None and not out_of_budget():
            trial = _search.ask(study, search.family, search.space, retry=abandoned.pop(0) if abandoned else None)
            with heartbeat(trial._trial_id, study._storage):
                values, pruned = self._configuration(X, y, search, trial, stored, out_of_budget, bar)
                failed_in_a_row = failed_in_a_row + 1 if not values and pruned is None else 0
                if pruned is not None:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                elif self.stopped_by_ is not None:  # cut short by the budget: not every normalization ran
                    trial.set_user_attr("stopped_by", self.stopped_by_)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                elif np.any(np.isfinite(values)):
                    study.tell(trial, float(np.nanmean(values)))
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            if search.persistent and start is not None:
                study.set_user_attr("spent_secs", _clock() - start)
            if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                self.stopped_by_ = f"{MAX_FAILED_IN_A_ROW} configurations failed in a row"
                break
        if search.persistent and not search.shared:
            study.set_user_attr("stopped_by", self.stopped_by_)
        bar.set_postfix_str("done")
        bar.close()

    def _configuration(self, X, y, search, trial, stored, out_of_budget, bar):
        """Train one configuration under each normalization; returns its sort metrics and why it was pruned."""
        config = _search.to_params(search.family, trial.params)
        values, pruned = [], None
        for i, norm in enumerate(_search.normalizations_for(config, search.norms)):
            if i and out_of_budget():
                break
            model_id = _search.model_id(search.family, trial.user_attrs["configuration"], config, norm)
            params = {**config, "normalization": norm}
            # the configuration's first model reports its folds to the pruner
            report = _search.fold_reporter(trial, len(search.repeats[0]), search.sort_col) if i == 0 else None
            if model_id in stored:  # finished by an interrupted run: not trained again
                row, model_folds, cv_pred, _, full = _store.load_model(stored[model_id])
                if i == 0:
                    for r in model_folds:
                        if r["repeat"] == 0:
                            trial.report(float(r[search.sort_col]), r["fold"])
                self._add(model_id, row, model_folds, cv_pred, params, full)
                bar.update(1)
                values.append(row[search.sort_col])
                continue
            bar.set_postfix_str(f"training {model_id}"
                                + (f" ({len(self.pruned_)} pruned)" if self.pruned_ else ""), refresh=True)
            try:
                row, model_folds, cv_pred, full = self._train_one(
                    X, y, search.repeats, search.family, search.classification, model_id, params, search.seed,
                    search.sort_col, report)
            except optuna.TrialPruned as exc:
                pruned = self.pruned_[model_id] = str(exc)
                trial.set_user_attr("pruned", {model_id: pruned})
                break
            except Exception as exc:  # noqa: BLE001 - like H2O AutoML: a failing model is skipped
                self.failed_[model_id] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"AutoML: {model_id} failed and is skipped: {self.failed_[model_id]}",
                              RuntimeWarning, stacklevel=3)
                if search.persistent:
                    _store.save_failure(trial, model_id, self.failed_[model_id])
                continue
            if search.persistent:  # committed the moment it finishes
                _store.save_model(trial, model_id, row, model_folds, cv_pred, params, full)
            self._add(model_id, row, model_folds, cv_pred, params, full)
            bar.update(1)
            values.append(row[search.sort_col])
        return values, pruned

    def _refit_model(self, model_id, X, y, family, classification, seed):
        """``models_[model_id]``, refit on all training rows first if it is not there yet.

        An ensemble is its base nets of positive weight (refit likewise)
        combined with the weights fitted on all level-one rows.
        """
        if model_id not in self.models_:
            if model_id in self.ensemble_weights_:
                weights = self.ensemble_weights_[model_id]
                base = {m: self._refit_model(m, X, y, family, classification, seed) for m, w in weights.items()
                        if w > 0}
                full = _ensembles.StackedEnsemble(base, weights, self.classes_ if classification else None)
            else:
                full = self._make(family, classification, self.params_[model_id], seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    full.fit(X, y)
            self.models_[model_id] = full
        return self.models_[model_id]

    def _train_one(self, X, y, repeats, family, classification, model_id, params, seed, sort_col, report=None):
        """Cross-validate one model on every repeat's folds (and refit it on all rows when refit="all").

        The leaderboard row and the cross-validated predictions are the first
        repeat's. ``report(fold, metric)``, if given, is called after every
        fold of the first repeat and may raise ``optuna.TrialPruned`` to stop
        the model early.
        """
        est = self._make(family, classification, params, seed)
        n_out = len(self.classes_) if classification else 1
        config = model_id.rsplit("_", 1)[0]
        fold_rows = []
        for r, splits in enumerate(repeats):
            cv_pred, fit_s, pred_s = self._cross_validate(
                est, X, y, splits, classification, n_out, sort_col, fold_rows,
                {"model_id": model_id, "config": config, "normalization": params["normalization"] or "none",
                 "repeat": r}, report if r == 0 else None)
            if r == 0:
                first = cv_pred, fit_s, pred_s
        cv_pred, fit_s, pred_s = first
        splits = repeats[0]
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

    def _cross_validate(self, est, X, y, splits, classification, n_out, sort_col, fold_rows, keys, report):
        """One repeat's cross-validation of ``est``: its predictions and seconds fitting and predicting; appends
        a row per fold (``keys`` and the fold's metric) to ``fold_rows``."""
        cv_pred = np.zeros((len(y), n_out)) if classification else np.zeros(len(y))
        fit_s = pred_s = 0.0
        for k, (train, test) in enumerate(splits):
            fold_est = clone(est)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fold_est.fit(_safe_indexing(X, train), y[train])
            t1 = time.perf_counter()
            if classification:
                proba = fold_est.predict_proba(_safe_indexing(X, test))
                part = np.zeros((len(test), n_out))
                part[:, np.searchsorted(self.classes_, fold_est.classes_)] = proba
                cv_pred[test] = part
            else:
                cv_pred[test] = np.asarray(fold_est.predict(_safe_indexing(X, test)), dtype=float).ravel()
            pred_s += time.perf_counter() - t1
            fit_s += t1 - t0
            fold_rows.append({**keys, "fold": k, sort_col: self._fold_metric(y[test], cv_pred[test], sort_col)})
            if report is not None:
                report(k, fold_rows[-1][sort_col])
        if not np.all(np.isfinite(cv_pred)):
            raise ValueError("non-finite cross-validated predictions (the training diverged)")
        return cv_pred, fit_s, pred_s

    def _fold_metric(self, y, pred, col):
        return fold_metric(self.task_, y, pred, getattr(self, "classes_", None), col)
