"""Pipelines, searches, cloning, pickling, memory."""

import copy
import gc
import io
import pickle

import joblib
import keras
import numpy as np
import pandas as pd
import psutil
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV
from sklearn.model_selection import RandomizedSearchCV
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.preprocessing import StandardScaler

from keras_ln.sklearn import LSTMClassifier
from keras_ln.sklearn import LSTMRegressor
from keras_ln.sklearn import MLPClassifier
from keras_ln.sklearn import MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)) * [1.0, 10.0, 100.0, 0.1]
    y = (X[:, 0] + X[:, 1] / 10 > 0).astype(int)
    return X, y


def test_pipeline_with_column_transformer_and_cross_val_score():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "num": rng.normal(size=60),
        "big": rng.normal(size=60) * 1000,
        "cat": rng.choice(["a", "b", "c"], size=60),
    })
    y = ((df["num"] > 0) ^ (df["cat"] == "a")).to_numpy()
    pre = ColumnTransformer([
        ("scale", StandardScaler(), ["num", "big"]),
        ("onehot", OneHotEncoder(), ["cat"]),
    ])
    pipe = make_pipeline(pre, MLPClassifier((16,), max_iter=60,
                                            learning_rate_init=0.02, random_state=0))
    scores = cross_val_score(pipe, df, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6
    pipe.fit(df, y)
    assert pipe.predict(df.head()).shape == (5,)


def test_grid_search_over_normalization(table):
    """n_jobs=1 and n_jobs=2 (loky processes) give the same, reproducible results."""
    X, y = table
    results = []
    for n_jobs in (1, 2):
        search = GridSearchCV(
            make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=10, random_state=0)),
            {"mlpclassifier__normalization": ["layer", "batch", None]},
            cv=2, n_jobs=n_jobs,
        ).fit(X, y)
        assert len(search.cv_results_["params"]) == 3
        assert search.best_params_["mlpclassifier__normalization"] in ("layer", "batch", None)
        results.append(search.cv_results_["split0_test_score"])
    np.testing.assert_array_equal(results[0], results[1])


def test_randomized_search_two_processes(table):
    """n_jobs=2 (joblib's loky processes): estimators pickle both ways."""
    X, y = table
    search = RandomizedSearchCV(
        MLPRegressor((4,), max_iter=5, random_state=0),
        {"normalization": ["layer", None], "learning_rate_init": [0.001, 0.01]},
        n_iter=2, cv=2, n_jobs=2, random_state=0,
    ).fit(X, y.astype(float))
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.predict(X).shape == (60,)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLPClassifier((5,), max_iter=3, random_state=0),
        lambda: LSTMClassifier((3,), cell="gru", bidirectional=True, max_iter=2,
                               random_state=0),
        lambda: LSTMRegressor((3,), normalization="batch", max_iter=2, random_state=0),
    ],
)
def test_pickle_joblib_deepcopy_round_trips(table, make):
    X, y = table
    est = make()
    if isinstance(est, LSTMRegressor):
        y = y.astype(float)
    unfitted = pickle.loads(pickle.dumps(est))
    assert unfitted.get_params() == est.get_params()
    est.fit(X, y)
    out = est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    for copy_ in (pickle.loads(pickle.dumps(est)), joblib.load(buffer), copy.deepcopy(est)):
        again = copy_.predict_proba(X) if hasattr(copy_, "predict_proba") else copy_.predict(X)
        np.testing.assert_array_equal(out, again)
        assert copy_.model_ is not est.model_
        assert copy_.n_iter_ == est.n_iter_


def test_clone_and_set_params(table):
    X, y = table
    est = MLPClassifier((5,), normalization=None, max_iter=2, random_state=0).fit(X, y)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "model_")
    est.set_params(normalization="batch", hidden_layer_sizes=(3, 3)).fit(X, y)
    assert est.model_.get_layer("dense_1").units == 3


def test_clear_session_does_not_break_fitted_estimators(table):
    X, y = table
    est = MLPClassifier((5,), max_iter=2, random_state=0).fit(X, y)
    before = est.predict_proba(X)
    keras.backend.clear_session()
    other = MLPClassifier((5,), max_iter=2, random_state=1).fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), before)
    assert other.predict_proba(X).shape == before.shape


def test_repeated_fits_do_not_leak(table):
    """50 consecutive fits grow the process RSS by at most 100 MB."""
    X, y = table
    for seed in range(5):  # warm-up: one-off kernels, caches
        MLPClassifier((16,), max_iter=5, random_state=seed).fit(X, y).predict(X)
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    for seed in range(50):
        MLPClassifier((16,), max_iter=5, random_state=seed).fit(X, y).predict(X)
    gc.collect()
    growth = process.memory_info().rss - before
    assert growth <= 100 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB"
