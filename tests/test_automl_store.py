"""AutoML's persistent study: every finished model in Optuna's storage, resume after kill -9, refusal of other data.

The kill is real: a child process runs the search on a SQLite study and is
killed with SIGKILL by itself in the middle of its fourth model, after three have
finished (`kill_after_models` in conftest.py); the search is then
resumed here, and its final leaderboard compared with an uninterrupted run's.
"""

import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from keras_ln.automl import AutoML, load_leaderboard

SETTINGS = dict(max_models=7, nfolds=3, seed=0, max_iter=3)


@pytest.fixture(scope="module")
def uninterrupted(breast_cancer_120):
    return AutoML(**SETTINGS).fit(*breast_cancer_120)


def _board(aml):
    lb = aml.leaderboard_
    return lb[[c for c in lb.columns if "time" not in c]].reset_index(drop=True)


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from keras_ln.automl import AutoML
    from keras_ln.datasets import load_breast_cancer
    X, y, _ = load_breast_cancer()
    idx = np.random.default_rng(0).permutation(len(y))[:120]
    AutoML(**{settings!r}, storage=sys.argv[1], resume=False).fit(X[idx], y[idx])
""")


def test_kill_9_then_resume_trains_no_finished_model_again(breast_cancer_120, uninterrupted, tmp_path,
                                                           kill_after_models, trained_models):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(settings=SETTINGS))
    killed_after, done_before = kill_after_models([sys.executable, str(script), url], tmp_path / "study.db", 3)
    assert 3 <= len(done_before) < SETTINGS["max_models"], (killed_after, done_before)
    # the partial leaderboard is readable after the kill, sorted like H2O's
    partial = load_leaderboard(url)
    assert set(partial["model_id"]) >= done_before and partial["auc"].is_monotonic_decreasing
    assert partial.attrs["task"] == "binary" and partial.attrs["stopped_by"] is None

    trained = trained_models
    trained.clear()  # the models trained from here on
    t1 = time.monotonic()
    resumed = AutoML(**SETTINGS, storage=url, resume=True).fit(*breast_cancer_120)
    resume_secs = time.monotonic() - t1
    assert not set(trained) & set(partial["model_id"]), trained  # no finished model trained again
    assert set(trained) | set(partial["model_id"]) == set(resumed.params_)
    pd.testing.assert_frame_equal(_board(resumed), _board(uninterrupted))
    assert resumed.stopped_by_ == "max_models"
    for model_id, pred in uninterrupted.cv_predictions_.items():
        np.testing.assert_array_equal(resumed.cv_predictions_[model_id], pred)
    abandoned = [t for t in resumed.study_.trials if t.user_attrs.get("abandoned")]
    assert len(abandoned) <= 1  # the configuration the child was training, asked again under its number
    print(f"killed after {killed_after:.1f} s with {len(done_before)} models; resume took {resume_secs:.1f} s "
          f"and trained {len(trained)}")


def test_stored_models_reload_and_budget_counts_spent_time(breast_cancer_120, uninterrupted, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = AutoML(**SETTINGS, storage=url, refit="all").fit(*breast_cancer_120)
    pd.testing.assert_frame_equal(_board(first), _board(uninterrupted))
    spent = first.study_.user_attrs["spent_secs"]
    assert spent > 0 and first.study_.user_attrs["stopped_by"] == "max_models"
    again = AutoML(**SETTINGS, storage=url, refit="all").fit(*breast_cancer_120)  # resume="auto": nothing left to train
    pd.testing.assert_frame_equal(_board(again), _board(first))
    X, y = breast_cancer_120
    for model_id, model in first.models_.items():
        if model_id in first.params_:  # the refits come back from the storage, pickled
            np.testing.assert_array_equal(again.models_[model_id].predict_proba(X), model.predict_proba(X))
    # a time budget already spent: no new model, the stored ones are the result
    budget = AutoML(**{**SETTINGS, "max_models": None}, max_runtime_secs=spent / 2, storage=url,
                    refit="all").fit(*breast_cancer_120)
    assert budget.stopped_by_ == "max_models"  # the stored search had ended; it is not extended
    assert set(budget.params_) == set(first.params_)


def test_resume_refuses_other_data_or_settings(breast_cancer_120, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    X, y = breast_cancer_120
    AutoML(max_models=1, nfolds=3, seed=0, max_iter=2, storage=url).fit(X, y)
    with pytest.raises(ValueError, match="run on other data or settings"):
        AutoML(max_models=1, nfolds=3, seed=0, max_iter=2, storage=url, resume=True).fit(X[:-1], y[:-1])
    with pytest.raises(ValueError, match="run on other data or settings"):
        AutoML(max_models=1, nfolds=3, seed=1, max_iter=2, storage=url, resume=True).fit(X, y)
    with pytest.raises(ValueError, match="holds no study of that name"):
        AutoML(max_models=1, nfolds=3, seed=0, max_iter=2, storage=url, study_name="other", resume=True).fit(X, y)
    # resume=False starts anew, deleting the old study
    fresh = AutoML(max_models=2, nfolds=3, seed=1, max_iter=2, storage=url, resume=False).fit(X, y)
    assert len(load_leaderboard(url)) == len(fresh.params_) == 2


def test_load_leaderboard_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ValueError, match="`study_name` for a storage holding 0 studies"):
        load_leaderboard(url)
