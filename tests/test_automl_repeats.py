"""AutoML's repeated cross-validation, its normalization verdict and its claims.

The verdict's statistics are checked by hand in tests/test_verdict.py; here
the AutoML side: the repeats' folds, every model trained on every fold of
every repeat, the first repeat alone in the leaderboard, and `verdict()` equal
to the statistics recomputed from `fold_scores_`.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import clone

from keras_ln.automl import AutoML, h2o_metrics, make_folds
from keras_ln.automl import _verdict


@pytest.fixture(scope="module")
def repeated(breast_cancer_120):
    X, y = breast_cancer_120
    return AutoML(max_models=6, nfolds=3, n_repeats=2, seed=3, max_iter=3).fit(X, y)


def test_repeats_redraw_the_folds_and_train_every_model_on_each(breast_cancer_120, repeated):
    X, y = breast_cancer_120
    aml = repeated
    assert aml.repeat_folds_.shape == (2, len(y))
    np.testing.assert_array_equal(aml.repeat_folds_[0], aml.folds_)
    np.testing.assert_array_equal(aml.folds_, make_folds(y, "binary", 3, 3))
    np.testing.assert_array_equal(aml.repeat_folds_[1], make_folds(y, "binary", 3, 4))
    assert not np.array_equal(aml.repeat_folds_[0], aml.repeat_folds_[1])
    nets = aml.fold_scores_[aml.fold_scores_["config"].notna()]
    assert set(nets["model_id"]) == set(aml.params_)
    counts = nets.groupby("model_id").size()
    assert (counts == 2 * 3).all()
    assert set(zip(nets["repeat"], nets["fold"])) == {(r, k) for r in (0, 1) for k in (0, 1, 2)}
    # the config column pairs a configuration's normalizations
    for config, group in nets.groupby("config"):
        assert group["model_id"].str.rsplit("_", n=1).str[0].eq(config).all()
    # ensembles and baselines: the first repeat only
    others = aml.fold_scores_[aml.fold_scores_["config"].isna()]
    assert len(others) and (others["repeat"] == 0).all()


def test_leaderboard_is_the_first_repeat(breast_cancer_120, repeated):
    """The leaderboard (shared with H2O's folds) is unchanged by the repeats; a second repeat's fold score is a
    real refit on the redrawn folds."""
    X, y = breast_cancer_120
    aml = repeated
    single = AutoML(max_models=6, nfolds=3, seed=3, max_iter=3).fit(X, y)
    pd.testing.assert_frame_equal(
        aml.leaderboard_.drop(columns=["training_time_ms", "predict_time_per_row_ms"]),
        single.leaderboard_.drop(columns=["training_time_ms", "predict_time_per_row_ms"]))
    model_id = next(iter(aml.params_))
    pipe = aml._make("mlp", True, aml.params_[model_id], 3)
    folds = aml.repeat_folds_[1]
    train, test = folds != 0, folds == 0
    with warnings.catch_warnings():  # as AutoML fits its models: small folds, few epochs
        warnings.simplefilter("ignore")
        proba = clone(pipe).fit(X[train], y[train]).predict_proba(X[test])
    row = aml.fold_scores_.query("model_id == @model_id and repeat == 1 and fold == 0")
    assert row["auc"].item() == pytest.approx(h2o_metrics("binary", y[test], proba, aml.classes_)["auc"])


def test_verdict_pairs_by_configuration_repeat_and_fold(repeated):
    aml = repeated
    table = aml.verdict()
    assert list(table.columns) == _verdict.VERDICT_COLUMNS
    assert set(table["pair"]) == {"layer-batch", "layer-none", "batch-none"}
    assert set(table["scope"]) == {"all configurations", "best configuration"}
    scores = aml.fold_scores_[aml.fold_scores_["config"].notna()]
    wide = scores.pivot_table(index=["config", "repeat", "fold"], columns="normalization", values="auc")
    for first, second in (("layer", "none"), ("batch", "none")):
        both = wide[[first, second]].dropna()
        d = (both[first] - both[second]).to_numpy()  # auc: larger is better
        row = table[(table["pair"] == f"{first}-{second}") & (table["scope"] == "all configurations")].iloc[0]
        assert row["n_pairs"] == len(d) == 2 * 3 * both.index.get_level_values("config").nunique()
        assert row["mean_diff"] == pytest.approx(d.mean())
        half = stats.t.ppf(0.975, len(d) - 1) * np.sqrt((1 / len(d) + 1 / 2) * d.var(ddof=1))
        assert row["ci_low"] == pytest.approx(d.mean() - half) and row["ci_high"] == pytest.approx(d.mean() + half)


def test_verdict_with_one_normalization_is_empty(breast_cancer_120):
    X, y = breast_cancer_120
    aml = AutoML(max_models=1, nfolds=3, seed=0, max_iter=2, normalizations=("layer",)).fit(X, y)
    assert aml.verdict().empty


def test_best_configurations_and_claims(breast_cancer_120, repeated, tmp_path):
    X, y = breast_cancer_120
    aml = repeated
    configs = aml.best_configurations()
    assert list(configs) == ["layer", "batch", None]
    lb = aml.leaderboard_
    for norm, pipe in configs.items():
        tag = norm or "none"
        best = lb[lb["normalization"] == tag]["model_id"].iloc[0]
        assert pipe.get_params()["model__normalization"] == norm
        assert {k: pipe.get_params()[f"model__{k}"] for k in aml.params_[best]} == aml.params_[best]
    claims = aml.measure_claims(X, y, out_dir=tmp_path, budget_secs=60)
    assert (tmp_path / "claims.csv").exists()
    change = claims[(claims["claim"] == "per_example") & (claims["quantity"] == "max_abs_change")]
    change = change.groupby("normalization")["value"].max()
    assert set(change.index) == {"layer", "batch", "none"}
    assert change["layer"] < 1e-5 and change["none"] < 1e-5 and change["batch"] > 1e-3
    assert {"convergence", "overhead", "batch_size"} <= set(claims["claim"])
    with pytest.raises(ValueError, match="training rows given to fit"):
        aml.measure_claims(X[:50], y[:50])


def test_bad_n_repeats(breast_cancer_120):
    X, y = breast_cancer_120
    with pytest.raises(ValueError, match="n_repeats"):
        AutoML(n_repeats=0).fit(X, y)
