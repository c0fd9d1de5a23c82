"""keras_ln.automl's baselines and stacked ensembles: the baselines cross-validated
on the search's folds as scikit-learn does, the metalearner's weights, the
ensembles' CV predictions, and their place in the leaderboard and the refit."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import PredefinedSplit
from sklearn.model_selection import cross_val_predict

from keras_ln import automl
from keras_ln.automl import _baselines
from keras_ln.automl import _ensembles
from keras_ln.automl import LEADERBOARD_COLUMNS, AutoML, h2o_metrics
from keras_ln.datasets import load_breast_cancer
from tests.test_automl import _leader_id, _nets, _subset

@pytest.fixture(scope="module")
def binary_run():
    """Two nets of two normalizations (LN, none) on 120 rows, every model refit."""
    X, y, _ = load_breast_cancer()
    X, y = _subset(X, y, 120)
    aml = AutoML(max_models=2, nfolds=3, seed=0, max_iter=2, refit="all", normalizations=("layer", None)).fit(X, y)
    return X, y, aml


def test_baselines_are_cross_validated_on_the_same_folds_as_sklearn_does(binary_run):
    X, y, aml = binary_run
    lb = aml.leaderboard_.set_index("model_id")
    cv = PredefinedSplit(aml.folds_)
    for model_id, est in _baselines.make_baselines("binary", automl.make_preprocessor(X)).items():
        expected = cross_val_predict(est, X, y, cv=cv, method="predict_proba")
        np.testing.assert_array_equal(aml.cv_predictions_[model_id], expected)
        assert lb.loc[model_id, "normalization"] == "n/a"
        assert lb.loc[model_id, LEADERBOARD_COLUMNS["binary"][1:]].to_dict() == h2o_metrics("binary", y, expected)
        scores = aml.fold_scores_[aml.fold_scores_["model_id"] == model_id]
        assert scores["auc"].tolist() == [automl.fold_metric("binary", y[aml.folds_ == k], expected[aml.folds_ == k],
                                                             aml.classes_, "auc") for k in range(3)]
        # refit on all training rows, like the nets
        np.testing.assert_array_equal(aml.models_[model_id].predict_proba(X[:9]),
                                      est.fit(X, y).predict_proba(X[:9]))


def test_baselines_do_not_count_against_max_models_and_never_lead(binary_run):
    X, y, aml = binary_run
    lb = aml.leaderboard_
    assert len(_nets(lb)) == 2 and aml.stopped_by_ == "max_models"
    assert lb["model_id"].iloc[0] == "Baseline_GLM"  # 2-epoch nets lose to the GLM on breast_cancer...
    assert aml.leader_ is aml.models_[_leader_id(lb)] and _leader_id(lb) != "Baseline_GLM"  # ...which never leads


def test_flattened_sequences_for_the_glm_from_padded_arrays_or_lists(rng):
    X = rng.normal(size=(4, 5, 2))
    X[1, 3:] = np.nan  # a ragged sequence, NaN-padded
    flat = _baselines.FlattenSequences().fit(X)
    expected = np.nan_to_num(X.reshape(4, 10), nan=0.0)
    np.testing.assert_array_equal(flat.transform(X), expected)
    np.testing.assert_array_equal(flat.transform([x[: 3 if i == 1 else 5] for i, x in enumerate(X)]), expected)
    np.testing.assert_array_equal(flat.transform([X[1, :3]]), expected[1:2])  # shorter rows padded to 5 steps


def _noisy_binary(rng, n=150, noise=(2.0, 2.0, 3.0)):
    """Binary targets and class probabilities of models of growing, independent noise."""
    y = rng.integers(0, 2, size=n)
    preds = []
    for scale in noise:
        p1 = 1.0 / (1.0 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(scale=scale, size=n))))
        preds.append(np.column_stack([1 - p1, p1]))
    return y, preds


def test_metalearner_weights_are_non_negative_and_optimal(rng):
    grid = [np.array([a, b, 1 - a - b]) for a in np.linspace(0, 1, 101) for b in np.linspace(0, 1 - a, 101)]
    y, preds = _noisy_binary(rng)
    Z = np.column_stack([p[np.arange(len(y)), y] for p in preds])  # probability of the true class
    w = _ensembles.fit_weights("binary", Z)
    assert (w >= 0).all() and w.sum() == pytest.approx(1, abs=1e-12)
    logloss = lambda v: -np.mean(np.log(Z @ v))  # noqa: E731
    assert logloss(w) <= min(logloss(g) for g in grid) + 1e-9
    t = rng.normal(size=200)
    Z = np.column_stack([t + rng.normal(scale=0.5, size=200), t + 1.0, -t])
    w = _ensembles.fit_weights("regression", Z, t)
    assert (w >= 0).all() and w.sum() == pytest.approx(1, abs=1e-12)
    mse = lambda v: np.mean((Z @ v - t) ** 2)  # noqa: E731
    assert mse(w) <= min(mse(g) for g in grid) + 1e-9


def test_ensemble_cv_predictions_come_from_weights_fitted_without_the_fold(rng):
    y, preds = _noisy_binary(rng)
    folds = np.arange(len(y)) % 3
    splits = list(PredefinedSplit(folds).split())
    classes = np.array([0, 1])
    cv_pred, fold_weights = _ensembles.cross_validate_weights("binary", y, preds, splits, classes)
    for (train, test), w in zip(splits, fold_weights):  # a manual implementation
        Z = np.column_stack([p[train, y[train]] for p in preds])
        np.testing.assert_array_equal(w, _ensembles.fit_weights("binary", Z))
        np.testing.assert_allclose(cv_pred[test], sum(wm * p[test] for wm, p in zip(w, preds)), rtol=1e-12)
    # fold 0's own rows (targets and level-one predictions) change: its weights do not, its
    # predictions change only through the base predictions
    test0 = splits[0][1]
    y2, preds2 = y.copy(), [p.copy() for p in preds]
    y2[test0] = 1 - y2[test0]
    for p in preds2:
        p[test0] = rng.dirichlet([1.0, 1.0], size=len(test0))
    cv2, fold_weights2 = _ensembles.cross_validate_weights("binary", y2, preds2, splits, classes)
    np.testing.assert_array_equal(fold_weights2[0], fold_weights[0])
    np.testing.assert_allclose(cv2[test0], sum(wm * p[test0] for wm, p in zip(fold_weights[0], preds2)), rtol=1e-12)
    assert not np.array_equal(fold_weights2[1], fold_weights[1])  # fold 0's rows train the other folds' weights


def test_an_ensemble_of_identical_models_is_that_model(rng):
    from sklearn.linear_model import LogisticRegression, Ridge

    X = rng.normal(size=(90, 3))
    y = (X[:, 0] + rng.normal(size=90) > 0).astype(int)
    splits = list(PredefinedSplit(np.arange(90) % 3).split())
    clf = LogisticRegression().fit(X, y)
    cv = cross_val_predict(LogisticRegression(), X, y, cv=splits, method="predict_proba")
    cv_pred, _ = _ensembles.cross_validate_weights("binary", y, [cv] * 3, splits, np.array([0, 1]))
    np.testing.assert_allclose(cv_pred, cv, rtol=1e-12)
    w = _ensembles.fit_weights("binary", np.column_stack([cv[np.arange(90), y]] * 3))
    ens = _ensembles.StackedEnsemble(dict(zip("abc", [clf] * 3)), dict(zip("abc", w)), np.array([0, 1]))
    np.testing.assert_allclose(ens.predict_proba(X), clf.predict_proba(X), rtol=1e-12)
    np.testing.assert_array_equal(ens.predict(X), clf.predict(X))
    t = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=90)
    reg = Ridge().fit(X, t)
    w = _ensembles.fit_weights("regression", np.column_stack([reg.predict(X)] * 2), t)
    ens = _ensembles.StackedEnsemble({"a": reg, "b": reg}, dict(zip("ab", w)))
    np.testing.assert_allclose(ens.predict(X), reg.predict(X), rtol=1e-12)


def test_best_of_family_stacks_the_best_net_of_each_normalization(rng):
    board = pd.DataFrame({"model_id": ["B2", "L1", "B1", "N1", "L2"],  # sorted, best first
                          "normalization": ["batch", "layer", "batch", "none", "layer"],
                          "predict_time_per_row_ms": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert _ensembles.best_of_family(board) == ["L1", "B2", "N1"]
    y, preds = _noisy_binary(rng, noise=(1.0, 2.0, 3.0, 1.5, 2.5))
    cv = dict(zip(board["model_id"], preds))
    splits = list(PredefinedSplit(np.arange(len(y)) % 2).split())
    out = _ensembles.stacked_ensembles("binary", y, splits, board, cv, "auc", np.array([0, 1]))
    assert list(out[_ensembles.BEST_OF_FAMILY][3]) == ["L1", "B2", "N1"]
    assert list(out[_ensembles.ALL_MODELS][3]) == ["B2", "L1", "B1", "N1", "L2"]
    for row, fold_rows, cv_pred, weights in out.values():
        assert row["normalization"] == "ensemble" and len(fold_rows) == 2
        assert min(weights.values()) >= 0 and sum(weights.values()) == pytest.approx(1)
    # BestOfFamily needs two normalizations, AllModels two nets
    layer_only = board[board["normalization"] == "layer"].reset_index(drop=True)
    assert list(_ensembles.stacked_ensembles("binary", y, splits, layer_only, cv, "auc", np.array([0, 1]))) == [
        _ensembles.ALL_MODELS]
    assert _ensembles.stacked_ensembles("binary", y, splits, layer_only[:1], cv, "auc", np.array([0, 1])) == {}


def test_ensembles_in_the_leaderboard_and_refit(binary_run):
    X, y, aml = binary_run
    lb = aml.leaderboard_.set_index("model_id")
    nets = _nets(aml.leaderboard_)
    splits = list(PredefinedSplit(aml.folds_).split())
    assert set(aml.ensemble_weights_) == set(_ensembles.ENSEMBLE_IDS)
    assert list(aml.ensemble_weights_[_ensembles.ALL_MODELS]) == list(nets["model_id"])
    assert list(aml.ensemble_weights_[_ensembles.BEST_OF_FAMILY]) == [
        nets.loc[nets["normalization"] == n, "model_id"].iloc[0] for n in ("layer", "none")]
    for model_id, weights in aml.ensemble_weights_.items():
        assert lb.loc[model_id, "normalization"] == "ensemble"
        assert min(weights.values()) >= 0 and sum(weights.values()) == pytest.approx(1)
        base = [aml.cv_predictions_[m] for m in weights]
        expected, _ = _ensembles.cross_validate_weights("binary", y, base, splits, aml.classes_)
        np.testing.assert_array_equal(aml.cv_predictions_[model_id], expected)
        assert lb.loc[model_id, LEADERBOARD_COLUMNS["binary"][1:]].to_dict() == h2o_metrics("binary", y, expected)
        assert len(aml.fold_scores_[aml.fold_scores_["model_id"] == model_id]) == 3
        # refit: the base nets refit on all rows, combined with the weights fitted on all level-one rows
        combined = sum(w * aml.models_[m].predict_proba(X[:9]) for m, w in weights.items())
        np.testing.assert_allclose(aml.models_[model_id].predict_proba(X[:9]), combined, rtol=1e-6)


def test_an_ensemble_can_lead_and_is_refit_from_its_base_nets(monkeypatch):
    """Stand-in nets whose CV predictions carry independent noise: averaging them wins."""
    import zlib

    X, y, _ = load_breast_cancer()
    X, y = _subset(X, y, 80)

    def noisy(self, X, y, repeats, family, classification, model_id, params, seed, sort_col, *args, **kwargs):
        splits = repeats[0]
        noise = np.random.default_rng(zlib.crc32(model_id.encode())).normal(scale=2.0, size=len(y))
        p1 = 1.0 / (1.0 + np.exp(-(1.0 * (2 * y - 1) + noise)))
        cv_pred = np.column_stack([1 - p1, p1])
        norm = params["normalization"] or "none"
        row = {"model_id": model_id, **h2o_metrics("binary", y, cv_pred, self.classes_), "normalization": norm,
               "training_time_ms": 1.0, "predict_time_per_row_ms": 0.01}
        folds = [{"model_id": model_id, "config": model_id.rsplit("_", 1)[0], "normalization": norm,
                  "repeat": 0, "fold": k,
                  sort_col: self._fold_metric(y[test], cv_pred[test], sort_col)} for k, (_, test) in enumerate(splits)]
        return row, folds, cv_pred, None

    monkeypatch.setattr(AutoML, "_train_one", noisy)
    aml = AutoML(max_models=3, nfolds=2, seed=0, max_iter=1).fit(X, y)
    leader_id = _leader_id(aml.leaderboard_)
    assert leader_id in _ensembles.ENSEMBLE_IDS
    assert isinstance(aml.leader_, _ensembles.StackedEnsemble) and aml.models_[leader_id] is aml.leader_
    used = {m for m, w in aml.ensemble_weights_[leader_id].items() if w > 0}
    assert len(used) >= 2 and set(aml.leader_.estimators) == used and set(aml.models_) == used | {leader_id}
    proba = aml.leader_.predict_proba(X[:5])
    np.testing.assert_allclose(proba, sum(w * aml.models_[m].predict_proba(X[:5])
                                          for m, w in aml.ensemble_weights_[leader_id].items() if w > 0))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(aml.leader_.predict(X[:5]), aml.classes_[proba.argmax(axis=1)])


