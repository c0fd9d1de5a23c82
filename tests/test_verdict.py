"""keras_ln.automl._verdict: the corrected resampled t interval and the
Wilcoxon p-value against hand-computed values, and the verdict on synthetic
paired scores with a known effect and with none."""

import re

import numpy as np
import pandas as pd
import pytest

from keras_ln.automl._verdict import VERDICT_COLUMNS
from keras_ln.automl._verdict import corrected_t_interval
from keras_ln.automl._verdict import verdict
from keras_ln.automl._verdict import wilcoxon_p


def test_corrected_interval_by_hand():
    # d = [.01, .02, .03, 0, .04], k = 5 folds: n_test/n_train = 1/4.
    # mean .02; s^2 = .001 / 4 = .00025; corrected variance
    # (1/5 + 1/4) * .00025 = .0001125; t(.975, 4) = 2.7764451; half-width
    # 2.7764451 * sqrt(.0001125) = .0294486.
    mean, low, high = corrected_t_interval([0.01, 0.02, 0.03, 0.0, 0.04], 0.25)
    assert mean == pytest.approx(0.02)
    assert low == pytest.approx(0.02 - 0.0294486, abs=1e-7)
    assert high == pytest.approx(0.02 + 0.0294486, abs=1e-7)
    # Without the correction term the interval would be narrower: the
    # correction widens it by sqrt((1/5 + 1/4) / (1/5)) = 1.5.
    _, low0, high0 = corrected_t_interval([0.01, 0.02, 0.03, 0.0, 0.04], 0.0)
    assert (high - low) / (high0 - low0) == pytest.approx(1.5)


def test_wilcoxon_by_hand():
    # The zero is dropped; four positive differences: exact two-sided
    # p = 2 * (1 / 2**4) = 0.125.
    assert wilcoxon_p([0.01, 0.02, 0.03, 0.0, 0.04]) == pytest.approx(0.125)
    assert wilcoxon_p([0.0, 0.0]) == 1.0


def _scores(effect, seed, configs=4, repeats=3, nfolds=5, noise=0.01):
    """AUC-like fold scores: per (config, repeat, fold) a shared base, layer
    norm `effect` above none, batch norm in between."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(configs):
        for r in range(repeats):
            for k in range(nfolds):
                base = 0.9 + 0.02 * rng.standard_normal()
                for norm, shift in (("layer", effect), ("batch", effect / 2), ("none", 0.0)):
                    rows.append({"config": c, "normalization": norm, "repeat": r, "fold": k,
                                 "auc": base + shift + noise * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_strong_effect_is_detected():
    table = verdict(_scores(0.05, seed=0), "auc", True, nfolds=5)
    assert list(table.columns) == VERDICT_COLUMNS
    row = table[(table["pair"] == "layer-none") & (table["scope"] == "all configurations")].iloc[0]
    assert row["n_pairs"] == 4 * 3 * 5
    assert row["mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert 0 < row["ci_low"] < row["mean_diff"] < row["ci_high"]
    assert row["p_value"] < 1e-6
    assert re.fullmatch(r"layer norm better than no normalization by 0\.0\d+ auc, "
                        r"95% CI \[0\.0\d+, 0\.0\d+\]", row["verdict"])
    best = table[(table["pair"] == "layer-none") & (table["scope"] == "best configuration")].iloc[0]
    assert best["n_pairs"] == 3 * 5 and best["ci_low"] > 0


def test_lower_is_better_metrics_are_signed_so_positive_means_first_is_better():
    scores = _scores(0.05, seed=1).rename(columns={"auc": "logloss"})
    # layer now has the larger (worse) loss
    row = verdict(scores, "logloss", False, nfolds=5).iloc[0]
    assert row["pair"] == "layer-batch" and row["mean_diff"] < 0 and row["ci_high"] < 0
    assert row["verdict"].startswith("batch norm better than layer norm")


def test_null_effect_is_not_detected():
    table = verdict(_scores(0.0, seed=2), "auc", True, nfolds=5)
    assert (table["ci_low"] < 0).all() and (table["ci_high"] > 0).all()
    assert table["verdict"].str.startswith("no detectable difference").all()
