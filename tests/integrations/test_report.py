"""report.md reads like a report: times in s or ms, no number with an exponent."""

import re

import numpy as np
import pandas as pd
import pytest

from integrations import _report

_EXPONENT = re.compile(r"\d[eE][+-]?\d")


@pytest.mark.parametrize(
    "ms, text",
    [
        (15310.0, "15.3 s"),  # H2O's training_time_ms, printed as 1.531e+04 before
        (1531.0, "1.53 s"),
        (999.7, "1 s"),
        (850.0, "850 ms"),
        (12.0, "12 ms"),
        (0.0123, "0.0123 ms"),
        (0.0, "0 ms"),
        (3_600_000.0, "3600 s"),
        (123_456_789.0, "123457 s"),
        (np.nan, "n/a"),
        (None, "n/a"),
    ],
)
def test_format_duration_ms(ms, text):
    assert _report.format_duration_ms(ms) == text


@pytest.mark.parametrize(
    "value, text",
    [
        (0.987654, "0.9877"),
        (0.5, "0.5"),
        (1.0, "1"),
        (123.456, "123.5"),
        (15310.7, "15311"),
        (1.234e-5, "0.00001234"),
        (3e-9, "< 0.000001"),
        (0.0, "0"),
        (7, "7"),
        (np.int64(42), "42"),
        (np.nan, "n/a"),
    ],
)
def test_format_number(value, text):
    assert _report.format_number(value) == text


def _board():
    return pd.DataFrame({
        "source": ["h2o", "keras_ln", "keras_ln"],
        "model_id": ["GBM_1_AutoML_1", "MLP_1_LN", "MLP_1_BN"],
        "auc": [0.99123456, 0.98, 0.97],
        "logloss": [1.2e-5, 0.0651, 3e-9],
        "aucpr": [0.99, 0.98, 0.97],
        "mean_per_class_error": [0.01, 0.02, 0.03],
        "rmse": [0.1, 0.2, 0.3],
        "mse": [0.01, 0.04, 0.09],
        "normalization": ["n/a", "layer", "batch"],
        "algo": ["GBM", "MLP", "MLP"],
        "training_time_ms": [15310.0, 2345.678, 812.3],
        "predict_time_per_row_ms": [0.0123, 0.5, 1.5e-5],
        "test_auc": [0.985, 0.975, 0.5],
    })


def test_report_markdown_has_readable_numbers():
    board = _board()
    folds = pd.DataFrame({"model_id": ["MLP_1_LN"] * 2 + ["MLP_1_BN"] * 2, "group": ["layer"] * 2 + ["batch"] * 2,
                          "fold": [0, 1, 0, 1], "auc": [0.98, 1.1e-7, 0.97, 0.96]})
    ctx = dict(dataset="tiny", task="binary", task_source="inferred from the target", shape=(80, 5),
               sequence=False, n_train=64, n_test=16, test_size=0.2, seed=3, nfolds=2, fold_check="yes",
               max_models=2, max_runtime_secs=1e6, max_iter=2, keras_secs=123.456, n_keras=2,
               stopped_by="max_models", failed={}, h2o_secs=15.31, n_h2o=1, h2o="3.46, local cluster")
    text = _report.markdown(ctx, board, folds, "auc")
    assert not _EXPONENT.search(text), _EXPONENT.search(text)
    cells = {c.strip() for line in text.splitlines() if line.startswith("|") for c in line.split("|")}
    assert {"15.3 s", "2.35 s", "812 ms"} <= cells
    assert "training time" in text and "training_time_ms |" not in text
    assert "keras_ln 123 s (2 model(s)" in text and "H2O 15.3 s (1 model(s))" in text
    assert "max_runtime_secs=1000000" in text
    assert {"0.9912", "0.000012", "< 0.000001"} <= cells


def test_written_report_keeps_exact_values_in_the_csv(tmp_path):
    board = _board()
    folds = pd.DataFrame({"model_id": ["MLP_1_LN"], "group": ["layer"], "fold": [0], "auc": [0.98]})
    folder = _report.write_report(str(tmp_path), "tiny", board, folds, {}, task="binary", sort_metric="AUTO",
                                  markdown="# tiny\n")
    again = pd.read_csv(f"{folder}/leaderboard.csv")
    assert again["training_time_ms"].tolist() == board["training_time_ms"].tolist()
