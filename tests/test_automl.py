"""keras_ln.automl: H2O's metric definitions, H2O's sorting, folds, and the search itself.

The metric functions are checked here against independent computations
(scikit-learn, brute force); tests/integrations/test_h2o_automl.py checks them
against H2O's own numbers.
"""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.model_selection import PredefinedSplit
from sklearn.model_selection import cross_val_predict

from keras_ln import automl
from keras_ln.automl import _baselines
from keras_ln.automl import _ensembles
from keras_ln.automl import LEADERBOARD_COLUMNS, AutoML, h2o_metrics, make_folds, sort_leaderboard
from keras_ln.datasets import load_breast_cancer, load_diabetes, load_sequential_digits


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------
@pytest.fixture
def binary_preds(rng):
    y = rng.integers(0, 2, size=300)
    p1 = np.clip(0.35 * y + rng.uniform(0, 0.65, size=300), 0, 1).round(3)  # with ties
    return y, np.column_stack([1 - p1, p1])


def _brute_force_binary_mpce(y, p1):
    """Mean per-class error at the threshold maximizing F1, trying every threshold from high to low."""
    best_f1, best = -1.0, None
    for t in np.sort(np.unique(p1))[::-1]:
        pred = p1 >= t
        tp = np.sum(pred & (y == 1))
        fp = np.sum(pred & (y == 0))
        f1 = 2 * tp / (2 * tp + fp + np.sum(~pred & (y == 1)))
        if f1 > best_f1:
            best_f1 = f1
            best = 0.5 * (fp / np.sum(y == 0) + np.sum(~pred & (y == 1)) / np.sum(y == 1))
    return best


def _interpolated_pr_area(y, p1, steps=20000):
    """Numerical area under the PR curve with H2O's/XGBoost's interpolation between thresholds.

    Between consecutive thresholds TP and FP grow linearly together; precision
    is evaluated along that line and integrated over recall with many small steps.
    """
    order = np.argsort(-p1, kind="mergesort")
    ps, ys = p1[order], y[order]
    cut = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]
    tps = np.r_[0.0, np.cumsum(ys)[cut]]
    fps = np.r_[0.0, np.cumsum(1 - ys)[cut]]
    P = tps[-1]
    area = 0.0
    for i in range(1, len(tps)):
        if tps[i] == tps[i - 1]:
            continue
        s = np.linspace(0, 1, steps + 1)[1:] - 0.5 / steps  # midpoints
        tp = tps[i - 1] + s * (tps[i] - tps[i - 1])
        fp = fps[i - 1] + s * (fps[i] - fps[i - 1])
        area += np.mean(tp / (tp + fp)) * (tps[i] - tps[i - 1]) / P
    return area


def test_binary_metrics_match_independent_computations(binary_preds):
    y, proba = binary_preds
    m = h2o_metrics("binary", y, proba)
    assert list(m) == LEADERBOARD_COLUMNS["binary"][1:]
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), abs=1e-12)
    assert m["logloss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-9)
    assert m["mse"] == pytest.approx(skm.brier_score_loss(y, proba[:, 1]), rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]))
    assert m["mean_per_class_error"] == pytest.approx(_brute_force_binary_mpce(y, proba[:, 1]))
    assert m["aucpr"] == pytest.approx(_interpolated_pr_area(y, proba[:, 1]), abs=1e-6)
    # H2O's interpolated AUC-PR is not scikit-learn's step-wise average precision
    assert m["aucpr"] != pytest.approx(skm.average_precision_score(y, proba[:, 1]), abs=1e-6)


def test_binary_metrics_on_a_perfect_ranking():
    y = np.array([0, 0, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    m = h2o_metrics("binary", y, np.column_stack([1 - p1, p1]))
    assert m["auc"] == 1.0 and m["aucpr"] == pytest.approx(1.0) and m["mean_per_class_error"] == 0.0


def test_logloss_clips_like_h2o():
    y = np.array([0, 1])
    proba = np.array([[1.0, 0.0], [1.0, 0.0]])  # the second row gives its true class p = 0
    m = h2o_metrics("binary", y, proba)
    assert m["logloss"] == pytest.approx(-math.log(1e-15) / 2)
    assert m["mse"] == pytest.approx(0.5)


def test_multiclass_metrics(rng):
    y = rng.integers(0, 4, size=200)
    proba = rng.dirichlet(np.ones(4), size=200)
    proba[np.arange(200), y] += 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    m = h2o_metrics("multiclass", y, proba)
    assert list(m) == LEADERBOARD_COLUMNS["multiclass"][1:]
    p_true = proba[np.arange(200), y]
    assert m["mse"] == pytest.approx(np.mean((1 - p_true) ** 2))
    assert m["logloss"] == pytest.approx(skm.log_loss(y, proba))
    recall = skm.recall_score(y, proba.argmax(axis=1), average=None)
    assert m["mean_per_class_error"] == pytest.approx(1 - recall.mean())
    assert m["mean_per_class_error"] == pytest.approx(1 - skm.balanced_accuracy_score(y, proba.argmax(1)))


def test_string_labels_follow_the_classes_order():
    y = np.array(["b", "a", "c", "b"])
    proba = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]])
    m = h2o_metrics("multiclass", y, proba, classes=np.array(["a", "b", "c"]))
    assert m["mean_per_class_error"] == 0.0
    with pytest.raises(ValueError, match="not in `classes`"):
        h2o_metrics("multiclass", np.array(["z", "a", "b", "c"]), proba, classes=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="shape"):
        h2o_metrics("multiclass", y, proba[:, :2])


def test_regression_metrics(rng):
    y = rng.uniform(0, 10, size=100)
    pred = y + rng.normal(size=100)
    m = h2o_metrics("regression", y, pred)
    assert list(m) == LEADERBOARD_COLUMNS["regression"][1:]
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]))
    assert m["mean_residual_deviance"] == m["mse"]
    pos = np.clip(pred, 0, None)
    assert h2o_metrics("regression", y, pos)["rmsle"] == pytest.approx(
        skm.root_mean_squared_log_error(y, pos))
    assert math.isnan(h2o_metrics("regression", y, pred - 20)["rmsle"])  # log1p undefined below -1


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="task"):
        h2o_metrics("ranking", [1], [1])


# ---------------------------------------------------------------------------
# sorting and folds
# ---------------------------------------------------------------------------
def test_sorting_like_h2o():
    df = pd.DataFrame({"model_id": list("abc"), "auc": [0.7, 0.9, np.nan], "logloss": [0.3, 0.5, 0.1]})
    assert list(sort_leaderboard(df, "binary")["model_id"]) == ["b", "a", "c"]  # AUTO: auc, desc, NaN last
    assert list(sort_leaderboard(df, "binary", "logloss")["model_id"]) == ["c", "a", "b"]
    reg = pd.DataFrame({"model_id": list("ab"), "mean_residual_deviance": [2.0, 1.0], "mae": [0.1, 0.9]})
    assert list(sort_leaderboard(reg, "regression")["model_id"]) == ["b", "a"]
    assert list(sort_leaderboard(reg, "regression", "MAE")["model_id"]) == ["a", "b"]
    with pytest.raises(ValueError, match="sort_metric"):
        sort_leaderboard(reg, "regression", "auc")


def test_folds_are_stratified_and_reproducible():
    y = np.array([0] * 40 + [1] * 20)
    folds = make_folds(y, "binary", nfolds=5, seed=3)
    assert folds.shape == (60,) and set(folds) == set(range(5))
    for k in range(5):
        assert np.sum(y[folds == k] == 1) == 4
    np.testing.assert_array_equal(folds, make_folds(y, "binary", nfolds=5, seed=3))
    assert not np.array_equal(folds, make_folds(y, "binary", nfolds=5, seed=4))
    with pytest.raises(ValueError, match="nfolds"):
        make_folds(y, "binary", nfolds=1)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"max_models": 0}, "max_models"),
        ({"max_runtime_secs": -1}, "max_runtime_secs"),
        ({"nfolds": 1}, "nfolds"),
        ({"normalizations": ("layer", "group")}, "normalizations"),
        ({"normalizations": ()}, "normalizations"),
        ({"refit": "some"}, "refit"),
        ({"sort_metric": "auc"}, "sort_metric"),  # not a regression metric
    ],
)
def test_bad_parameters_are_named(kwargs, word):
    X, y, _ = load_diabetes()
    with pytest.raises(ValueError, match=word):
        AutoML(**kwargs).fit(X[:20], y[:20])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="shape"):
        AutoML(max_models=1).fit(np.zeros((10, 2, 2, 2)), np.arange(10))
    with pytest.raises(ValueError, match=r"`y` with one value per row of `X` \(10\)"):
        AutoML(max_models=1).fit(np.zeros((10, 2)), np.arange(9))
    with pytest.raises(ValueError, match=r"every column of `X`.*2 column\(s\) of only NaN"):
        AutoML(max_models=1).fit(np.full((10, 2), np.nan), np.arange(10))
    with pytest.raises(ValueError, match="`X` without infinite values"):
        AutoML(max_models=1).fit(np.full((10, 2), np.inf), np.arange(10))
    with pytest.raises(ValueError, match="`X` to hold real numbers.*DataFrame"):
        AutoML(max_models=1).fit(np.array([["a", "b"]] * 10), np.arange(10))
    with pytest.raises(ValueError, match="`y` without missing values"):
        AutoML(max_models=1).fit(np.zeros((10, 2)), np.r_[np.arange(9.0), np.nan])
    with pytest.raises(ValueError, match="single class"):
        AutoML(max_models=1).fit(np.zeros((10, 2)), np.zeros(10, dtype=int), task="binary")


# ---------------------------------------------------------------------------
# the search (Optuna), with fast stand-in models where only the search is tested
# ---------------------------------------------------------------------------
def _stand_in_make(self, family, classification, params, seed):
    """A fast stand-in for the nets: linear discriminant analysis whose shrinkage follows the
    learning rate; a learning rate below 1.5e-4 gives a constant predictor instead, a
    configuration made to be bad (AUC 0.5 on every fold)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    lr = params["learning_rate_init"]
    model = DummyClassifier() if lr < 1.5e-4 else LinearDiscriminantAnalysis(solver="lsqr", shrinkage=min(1, 30 * lr))
    return make_pipeline(FunctionTransformer(lambda X: X.reshape(len(X), -1)), model)


@pytest.fixture
def stand_in_models(monkeypatch):
    monkeypatch.setattr(AutoML, "_make", _stand_in_make)


def _nets(lb):
    """The leaderboard's nets."""
    return lb[lb["normalization"].isin(["layer", "batch", "none"])]


def test_epochs_are_searched_unless_early_stopping_is_on_and_can_run(stand_in_models):
    """Without early stopping (the default) the epochs are a searched parameter. With it, training folds
    of 500 rows give early stopping its 50 validation rows, and the epochs are then not searched."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 4))
    y = (X[:, 0] > 0).astype(int)
    assert AutoML().early_stopping is False
    on = AutoML(max_models=3, nfolds=2, seed=0, early_stopping=True).fit(X, y)
    assert not on.epochs_searched_
    assert all("max_iter" not in t.params for t in on.study_.trials)
    off = AutoML(max_models=3, nfolds=2, seed=0).fit(X, y)
    assert off.epochs_searched_ and all("max_iter" in t.params for t in off.study_.trials)
    # training folds of 400 rows
    small = AutoML(max_models=3, nfolds=3, seed=0, early_stopping=True).fit(X[:600], y[:600])
    assert small.epochs_searched_


def _config(params):
    return {k: v for k, v in params.items() if k != "normalization"}


@pytest.mark.parametrize("family", ["mlp", "rnn"])
def test_every_portfolio_entry_sets_exactly_its_familys_space(family):
    # a parameter of the space that an entry leaves out would be sampled for it at random (the sampler
    # completes an entry from TPE), so the "strong default" would not be one
    from keras_ln.automl import _search

    space = _search.search_space(family)
    assert _search.PORTFOLIO[family]
    for entry in _search.PORTFOLIO[family]:
        assert set(entry) == set(space), (family, entry)
        for name, value in entry.items():
            assert space[name]._contains(space[name].to_internal_repr(value)), (family, name, value)


def test_the_portfolio_comes_first_then_optuna_samples_the_declared_space(stand_in_models):
    from keras_ln.automl import _search

    X, y, _ = load_breast_cancer()
    aml = AutoML(max_models=30, nfolds=2, seed=0, max_iter=40).fit(*_subset(X, y, 100))
    portfolio = _search.PORTFOLIO["mlp"]
    trials = aml.study_.trials
    assert len(trials) >= 10 and aml.stopped_by_ == "max_models"  # 10, and those pruned
    # training folds of 50 rows leave 5 validation rows: no early stopping, the search picks the epochs,
    # and the portfolio trains max_iter
    assert aml.epochs_searched_
    space = {**automl.MLP_SPACE, "max_iter": _search.epochs_distribution(40)}
    assert space["max_iter"].choices == (10, 20, 40)
    assert [t.params for t in trials[: len(portfolio)]] == [{**p, "max_iter": 40} for p in portfolio]
    assert all(t.user_attrs.get("portfolio") for t in trials[: len(portfolio)])
    assert not any(t.user_attrs.get("portfolio") for t in trials[len(portfolio):])
    for t in trials:  # every sampled value lies in the declared space
        assert set(t.params) == set(space)
        assert all(space[k]._contains(space[k].to_internal_repr(v)) for k, v in t.params.items())
    assert len({t.params["max_iter"] for t in trials}) > 1
    # the estimator parameters of configuration 1: depth x width becomes hidden_layer_sizes
    first = portfolio[0]
    assert aml.params_["MLP_1_LN"] == {
        "hidden_layer_sizes": (first["width"],) * first["depth"], "normalization": "layer", "max_iter": 40,
        **{k: v for k, v in first.items() if k not in ("depth", "width")}}
    # the value Optuna was told is the mean over the configuration's normalizations
    lb = aml.leaderboard.set_index("model_id")
    assert trials[0].value == pytest.approx(lb.loc[["MLP_1_LN", "MLP_1_BN", "MLP_1_none"], "auc"].mean())
    assert aml.study_.direction.name == "MAXIMIZE"


def test_same_seed_same_configurations_and_leaderboard(stand_in_models):
    X, y, _ = load_breast_cancer()
    X, y = _subset(X, y, 100)
    runs = [AutoML(max_models=36, nfolds=2, seed=s, normalizations=("layer", None)).fit(X, y) for s in (5, 5, 6)]
    same, again, other = ([t.params for t in aml.study_.trials] for aml in runs)
    assert len(same) >= 18 and same == again  # 18 configurations trained, and those pruned
    assert other != same  # after the portfolio, the seed decides
    volatile = ["training_time_ms", "predict_time_per_row_ms"]
    pd.testing.assert_frame_equal(runs[0].leaderboard.drop(columns=volatile),
                                  runs[1].leaderboard.drop(columns=volatile))


def test_every_configuration_is_trained_with_every_normalization_on_the_same_folds(stand_in_models):
    X, y, _ = load_sequential_digits()
    keep = y < 2
    X, y = _subset(X[keep], y[keep], 60)
    aml = AutoML(max_models=40, nfolds=3, seed=2).fit(X, y)
    by_config = {}
    for model_id, params in aml.params_.items():
        family, number, _ = model_id.split("_")
        by_config.setdefault(int(number), []).append((model_id, params))
    cells = set()
    for number, models in by_config.items():
        trial = aml.study_.trials[number - 1]
        cells.add(trial.params["cell"])
        expected = ["layer", None] if trial.params["cell"] == "gru" else ["layer", "batch", None]
        if trial.state.name != "COMPLETE":  # cut short by max_models
            assert number == max(by_config) and aml.stopped_by_ == "max_models"
            continue
        assert [p["normalization"] for _, p in models] == expected  # no batch-normalized GRU
        assert all(_config(p) == _config(models[0][1]) for _, p in models)
        assert all(m.startswith(trial.params["cell"].upper()) for m, _ in models)
        folds = aml.fold_scores_[aml.fold_scores_["model_id"].isin([m for m, _ in models])]
        assert len(folds) == 3 * len(models) and set(folds["fold"]) == {0, 1, 2}
    assert cells == {"lstm", "gru"} and len(_nets(aml.leaderboard)) == 40


def test_a_configuration_made_bad_is_pruned_with_its_normalizations(stand_in_models, monkeypatch):
    from keras_ln.automl import _search

    portfolio = _search.PORTFOLIO["mlp"]
    good = [{**portfolio[0], "learning_rate_init": lr} for lr in (1e-3, 3e-3, 1e-2)]
    bad = {**portfolio[0], "learning_rate_init": 1e-4}  # the stand-in cannot learn with it
    monkeypatch.setitem(_search.PORTFOLIO, "mlp", good + [bad])
    X, y, _ = load_breast_cancer()
    aml = AutoML(max_models=12, nfolds=4, seed=0, normalizations=("layer", "batch", None)).fit(*_subset(X, y, 120))
    trials = aml.study_.trials
    states = [t.state.name for t in trials]
    assert states[:4] == ["COMPLETE"] * 3 + ["PRUNED"] and states[-1] == "COMPLETE"
    # (the sampled configurations after it are pruned when worse than the median: the stand-in's
    # shrinkage grows with the learning rate)
    # pruned at the first fold it could be (the second), with its first model; its other
    # normalizations were never trained, and nothing of it is in the leaderboard
    pruned = [f"MLP_{t.number + 1}_LN" for t in trials if t.state.name == "PRUNED"]
    assert list(aml.pruned_) == pruned and aml.pruned_["MLP_4_LN"].startswith("pruned after fold 2 of 4")
    assert trials[3].intermediate_values == {0: 0.5, 1: 0.5}
    for model_id in pruned:
        config = model_id[:-3]
        assert not any(m.startswith(config + "_") for m in aml.leaderboard["model_id"])
        assert not any(m.startswith(config + "_") for m in aml.fold_scores_["model_id"])
    complete = {f"MLP_{t.number + 1}" for t in trials if t.state.name == "COMPLETE"}
    assert set(_nets(aml.leaderboard)["model_id"].str.rsplit("_", n=1).str[0]) == complete


def test_optuna_is_quiet_during_the_search_and_restored_after(stand_in_models, capfd):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        X, y, _ = load_breast_cancer()
        aml = AutoML(max_models=6, nfolds=2, seed=0).fit(*_subset(X, y, 60))
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert len(aml.study_.trials) == 2 and "Trial" not in capfd.readouterr().err


def test_a_fixed_batch_size_is_not_searched(monkeypatch):
    real_make = AutoML._make
    monkeypatch.setattr(AutoML, "_make", _stand_in_make)
    X, y, _ = load_breast_cancer()
    aml = AutoML(max_models=15, nfolds=2, seed=0, batch_size=16).fit(*_subset(X, y, 60))
    assert all("batch_size" not in t.params for t in aml.study_.trials)
    assert all("batch_size" not in p for p in aml.params_.values())
    assert real_make(aml, "mlp", True, aml.params_["MLP_1_LN"], 0)[-1].batch_size == 16
    # searched, it replaces batch_size="auto"
    searched = AutoML(max_models=3, nfolds=2, seed=0).fit(*_subset(X, y, 60))
    assert real_make(searched, "mlp", True, searched.params_["MLP_1_LN"], 0)[-1].batch_size == (
        searched.study_.trials[0].params["batch_size"])


# ---------------------------------------------------------------------------
# the search, end to end, on tiny data
# ---------------------------------------------------------------------------
def _leader_id(lb):
    """The first model of a leaderboard that is not a baseline (the baselines are references)."""
    return lb.loc[~lb["model_id"].isin(_baselines.BASELINE_IDS), "model_id"].iloc[0]


def _subset(X, y, n, seed=0):
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    return X[idx], y[idx]


def test_binary_search_end_to_end():
    X, y, _ = load_breast_cancer()
    X, y = _subset(X, y, 120)
    aml = AutoML(max_models=3, nfolds=3, seed=0, max_iter=3, refit="all").fit(X, y)
    lb = aml.leaderboard
    assert list(lb.columns) == LEADERBOARD_COLUMNS["binary"] + automl.EXTRA_COLUMNS
    assert len(_nets(lb)) == 3 and aml.stopped_by_ == "max_models"
    assert set(_nets(lb)["normalization"]) == {"layer", "batch", "none"}
    assert set(lb["normalization"]) == {"layer", "batch", "none", "ensemble", "n/a"}
    assert lb["auc"].is_monotonic_decreasing
    assert (lb["training_time_ms"] > 0).all() and (lb["predict_time_per_row_ms"] > 0).all()
    # the leaderboard is computed from the stored cross-validated predictions
    for _, row in lb.iterrows():
        m = h2o_metrics("binary", y, aml.cv_predictions_[row["model_id"]], aml.classes_)
        assert m["auc"] == pytest.approx(row["auc"]) and m["logloss"] == pytest.approx(row["logloss"])
    np.testing.assert_array_equal(aml.folds_, make_folds(y, "binary", 3, 0))
    assert sorted(aml.fold_scores_["fold"].unique()) == [0, 1, 2] and len(aml.fold_scores_) == 3 * len(lb)
    assert aml.leader is aml.models_[_leader_id(lb)]
    assert set(aml.models_) == set(lb["model_id"])
    # the three nets are one configuration under each normalization, with the same seed
    nets = [aml.models_[m][-1].get_params() for m in sorted(_nets(lb)["model_id"])]
    assert [p.pop("normalization") for p in nets] == ["batch", "layer", None] and nets[0] == nets[1] == nets[2]
    proba = aml.leader.predict_proba(X[:7])
    assert proba.shape == (7, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)


def test_regression_with_given_folds_and_runtime_budget(monkeypatch):
    X, y, _ = load_diabetes()
    X, y = _subset(X, y, 90)
    folds = np.arange(90) % 2
    clock = iter(np.arange(0, 1000, 1.0))  # every call of the clock advances 1 s
    monkeypatch.setattr(automl._search_loop, "_clock", lambda: next(clock))
    aml = AutoML(max_runtime_secs=2.5, seed=1, max_iter=2, normalizations=("layer", None)).fit(X, y, folds=folds)
    # checks at t=1 and t=2 start a model; the check at t=3 is past the budget
    assert len(_nets(aml.leaderboard)) == 2 and aml.stopped_by_ == "max_runtime_secs"
    assert list(aml.leaderboard.columns) == LEADERBOARD_COLUMNS["regression"] + automl.EXTRA_COLUMNS
    assert aml.leaderboard["mean_residual_deviance"].is_monotonic_increasing
    np.testing.assert_array_equal(aml.folds_, folds)
    assert aml.leader.predict(X[:3]).shape == (3,)
    leader_id = _leader_id(aml.leaderboard)  # refit="leader": the leader (and an ensemble's base nets) only
    assert set(aml.models_) == {leader_id, *[m for m, w in aml.ensemble_weights_.get(leader_id, {}).items() if w]}
    # the baselines, cross-validated exactly as scikit-learn does on the same folds
    for model_id, est in _baselines.make_baselines("regression", automl.make_preprocessor(X)).items():
        np.testing.assert_array_equal(aml.cv_predictions_[model_id],
                                      cross_val_predict(est, X, y, cv=PredefinedSplit(folds)))


def test_sequence_search_uses_recurrent_nets():
    X, y, _ = load_sequential_digits()
    keep = y < 3
    X, y = _subset(X[keep], y[keep], 90)
    aml = AutoML(max_models=2, nfolds=2, seed=0, max_iter=2, normalizations=("layer", "batch")).fit(X, y)
    lb = aml.leaderboard
    assert list(lb.columns) == LEADERBOARD_COLUMNS["multiclass"] + automl.EXTRA_COLUMNS
    assert set(_nets(lb)["model_id"]) == {"LSTM_1_LN", "LSTM_1_BN"}
    assert lb["mean_per_class_error"].is_monotonic_increasing
    leader = aml.leader
    nets = leader.estimators.values() if isinstance(leader, _ensembles.StackedEnsemble) else [leader]
    assert {net[-1].__class__.__name__ for net in nets} == {"LSTMClassifier"}
    assert aml.leader.predict(X[:4]).shape == (4,)
    # the GLM baseline sees the scaled sequences flattened
    glm = _baselines.make_baselines("multiclass", automl.make_preprocessor(X), sequences=True)["Baseline_GLM"]
    np.testing.assert_array_equal(aml.cv_predictions_["Baseline_GLM"],
                                  cross_val_predict(glm, X, y, cv=PredefinedSplit(aml.folds_), method="predict_proba"))


def test_same_seed_same_leaderboard_with_real_nets():
    X, y, _ = load_breast_cancer()
    X, y = _subset(X, y, 60)
    runs = [AutoML(max_models=2, nfolds=2, seed=3, max_iter=2, normalizations=("layer", "batch")).fit(X, y)
            for _ in range(2)]
    volatile = ["training_time_ms", "predict_time_per_row_ms"]
    first, second = (_nets(aml.leaderboard).drop(columns=volatile) for aml in runs)
    assert len(first) == 2
    pd.testing.assert_frame_equal(first, second)
    assert [t.params for t in runs[0].study_.trials] == [t.params for t in runs[1].study_.trials]


def test_a_failing_model_is_skipped_like_h2o(monkeypatch):
    X, y, _ = load_breast_cancer()
    X, y = _subset(X, y, 60)
    original = AutoML._train_one

    def flaky(self, X, y, splits, family, classification, model_id, *args):
        if model_id.endswith("_BN"):
            raise FloatingPointError("diverged")
        return original(self, X, y, splits, family, classification, model_id, *args)

    monkeypatch.setattr(AutoML, "_train_one", flaky)
    with pytest.warns(RuntimeWarning, match="MLP_1_BN failed"):
        aml = AutoML(max_models=2, nfolds=2, seed=0, max_iter=1, normalizations=("layer", "batch", None)).fit(X, y)
    assert set(_nets(aml.leaderboard)["model_id"]) == {"MLP_1_LN", "MLP_1_none"}
    assert aml.failed_ == {"MLP_1_BN": "FloatingPointError: diverged"}


# ---------------------------------------------------------------------------
# AutoML as a scikit-learn estimator: parameters, DataFrames, predict
# ---------------------------------------------------------------------------
def test_parameters_like_an_sklearn_estimator():
    from sklearn.base import clone
    from sklearn.utils._param_validation import InvalidParameterError

    aml = AutoML(max_models=4, nfolds=3, seed=7, normalizations=("layer", None), max_iter=5)
    params = aml.get_params()
    assert params["max_models"] == 4 and params["normalizations"] == ("layer", None) and params["max_iter"] == 5
    twin = clone(aml)
    assert twin is not aml and twin.get_params() == params
    assert aml.set_params(nfolds=4) is aml and aml.nfolds == 4
    assert repr(AutoML(max_models=4, seed=7)) == "AutoML(max_models=4, seed=7)"  # BaseEstimator's repr
    with pytest.raises(InvalidParameterError, match=r"'max_runtime_secs' parameter of AutoML .* Got 0 instead"):
        AutoML(max_runtime_secs=0).fit(np.zeros((10, 2)), np.arange(10) % 2)
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter of AutoML"):
        AutoML(batch_size="big").fit(np.zeros((10, 2)), np.arange(10) % 2)


def test_predict_and_the_fitted_attributes_before_fit_raise_not_fitted():
    from sklearn.exceptions import NotFittedError

    aml = AutoML()
    for call in (lambda: aml.predict(np.zeros((2, 2))), lambda: aml.predict_proba(np.zeros((2, 2))),
                 lambda: aml.leaderboard, lambda: aml.leader):
        with pytest.raises(NotFittedError, match="AutoML"):
            call()


def test_the_table_preprocessing_imputes_and_one_hot_encodes():
    from sklearn.compose import ColumnTransformer

    from keras_ln.automl import make_preprocessor

    df = pd.DataFrame({"age": [30.0, np.nan, 50.0, 40.0], "color": ["red", "blue", None, "red"],
                       "size": pd.Categorical(["S", "M", "S", "L"])})
    pre = make_preprocessor(df)
    assert isinstance(pre, ColumnTransformer)
    Xt = pre.fit_transform(df)
    names = list(pre.get_feature_names_out())
    assert names == ["numeric__age", "numeric__missingindicator_age", "categorical__color_blue",
                     "categorical__color_missing", "categorical__color_red", "categorical__size_L",
                     "categorical__size_M", "categorical__size_S"]
    age = np.array([30.0, 40.0, 50.0, 40.0])  # the median, 40, fills the gap
    np.testing.assert_allclose(Xt[:, 0], (age - age.mean()) / age.std())
    np.testing.assert_array_equal(Xt[:, 1] > 0, [False, True, False, False])  # the indicator, standardized too
    np.testing.assert_array_equal(Xt[:, 2:5], [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # a category never seen in training encodes as zeros; a missing one as "missing"
    new = pre.transform(pd.DataFrame({"age": [np.nan], "color": ["green"], "size": pd.Categorical(["XL"])}))
    assert new[0, 1] > 0
    np.testing.assert_array_equal(new[0, 2:], [0, 0, 0, 0, 0, 0])
    # a numeric array: every column numeric
    arr = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 6.0]])
    assert make_preprocessor(arr).fit_transform(arr).shape == (3, 3)


def _table_with_categories_and_gaps(n=60, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"num": rng.normal(size=n), "cat": rng.choice(["a", "b", "c"], size=n),
                       "other": rng.normal(size=n)})
    y = np.where((df["num"] > 0) | (df["cat"] == "a"), "yes", "no")
    df.loc[::6, "num"] = np.nan
    df.loc[1::5, "cat"] = None
    return df, y


def test_dataframe_with_categories_and_missing_values():
    from sklearn.compose import ColumnTransformer

    df, y = _table_with_categories_and_gaps()
    aml = AutoML(max_models=1, nfolds=2, seed=0, max_iter=3, normalizations=("layer",)).fit(df, y)
    assert aml.leaderboard is aml.leaderboard_ and aml.leader is aml.leader_
    assert "MLP_1_LN" in set(aml.leaderboard_["model_id"])
    assert list(aml.feature_names_in_) == ["num", "cat", "other"] and aml.n_features_in_ == 3
    np.testing.assert_array_equal(aml.classes_, ["no", "yes"])
    pre = aml.models_["MLP_1_LN"][0] if "MLP_1_LN" in aml.models_ else aml._make(
        "mlp", True, aml.params_["MLP_1_LN"], 0)[0]
    assert isinstance(pre, ColumnTransformer)
    # new rows: an unseen category and missing values in both kinds of column
    new = pd.DataFrame({"num": [np.nan, 1.0], "cat": ["zzz", None], "other": [0.0, 0.5]})
    assert set(aml.predict(new)) <= {"no", "yes"}
    proba = aml.predict_proba(new)
    assert proba.shape == (2, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(aml.predict(new), aml.leader_.predict(new))
    with pytest.raises(ValueError, match="feature names"):
        aml.predict(new[["num", "other"]])
    with pytest.raises(ValueError, match="`X` as table"):
        aml.predict(np.zeros((2, 4, 3)))


def test_a_regression_has_no_predict_proba():
    X, y, _ = load_diabetes()
    aml = AutoML(max_models=1, nfolds=2, seed=0, max_iter=1, normalizations=(None,)).fit(*_subset(X, y, 40))
    assert aml.predict(X[:3]).shape == (3,)
    with pytest.raises(AttributeError, match="classification"):
        aml.predict_proba(X[:3])
    with pytest.raises(ValueError, match="10 features"):
        aml.predict(X[:3, :4])


# ---------------------------------------------------------------------------
# Sequences of different lengths
# ---------------------------------------------------------------------------
def test_sequence_scaler_ignores_the_padding_and_keeps_it():
    from keras_ln.datasets import make_ragged_sequences, sequence_lengths

    from keras_ln.automl._preprocessing import SequenceScaler

    X, _, _ = make_ragged_sequences(n_samples=30, min_timesteps=3, max_timesteps=9, random_state=2)
    lengths = sequence_lengths(X)
    assert lengths.min() < 9  # there is padding
    real = np.concatenate([x[:t] for x, t in zip(X, lengths)])
    scaler = SequenceScaler().fit(X)
    np.testing.assert_allclose(scaler.mean_, real.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scaler.scale_, real.std(axis=0), rtol=1e-5)
    Xt = scaler.transform(X)
    np.testing.assert_array_equal(np.isnan(Xt), np.isnan(X))
    np.testing.assert_allclose(Xt[0, : lengths[0]], (X[0, : lengths[0]] - real.mean(0)) / real.std(0), rtol=1e-4)


def test_ragged_sequences_end_to_end():
    from keras_ln.automl._preprocessing import RaggedSequences
    from keras_ln.datasets import make_ragged_sequences, sequence_lengths

    X, y, task = make_ragged_sequences(n_samples=48, min_timesteps=3, max_timesteps=8, random_state=1)
    aml = AutoML(max_models=1, nfolds=2, seed=0, max_iter=2, normalizations=("layer",)).fit(X, y)
    assert aml.task_ == task == "multiclass" and aml.n_features_in_ == 2
    assert "LSTM_1_LN" in set(aml.leaderboard_["model_id"])
    assert np.all(np.isfinite(aml.cv_predictions_["LSTM_1_LN"]))
    # the net gets the sequences unpadded, as a list (keras_ln.sklearn pads and masks it)
    pre = aml.leader_[0] if hasattr(aml.leader_, "steps") else aml._make("rnn", True, aml.params_["LSTM_1_LN"], 0)[0]
    assert isinstance(pre.steps[-1][1], RaggedSequences)
    unpadded = RaggedSequences().fit(X).transform(X)
    assert [len(s) for s in unpadded] == sequence_lengths(X).tolist()
    # a list of (T_i, F) arrays is the same input as the NaN-padded array
    as_list = [x[:t] for x, t in zip(X, sequence_lengths(X))]
    np.testing.assert_array_equal(aml._check_X(as_list, reset=False), X)
    np.testing.assert_array_equal(aml.predict(as_list[:6]), aml.predict(X[:6]))
    assert aml.predict_proba(X[:6]).shape == (6, 3)


@pytest.mark.parametrize(
    "hole, message",
    [
        ((0, 1, slice(None)), r"all-NaN time step inside sequence 0 \(step 1 of"),
        ((2, 0, 0), r"NaN in only some features, the first in sequence 2, time step 0"),
        ((1, slice(None), slice(None)), r"1 all-NaN sequence\(s\), the first at index 1"),
    ],
)
def test_nan_that_is_not_padding_is_refused(hole, message):
    X = np.ones((6, 4, 2))
    X[:, 3] = np.nan  # padding: fine
    X[hole] = np.nan
    with pytest.raises(ValueError, match="`X`.*" + message):
        AutoML(max_models=1).fit(X, np.arange(6) % 2)
    with pytest.raises(ValueError, match="same number of features per time step"):
        AutoML(max_models=1).fit([np.ones((3, 2)), np.ones((2, 3))], [0, 1])

