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


# ---------------------------------------------------------------------------
# the baselines and the ensembles in the report
# ---------------------------------------------------------------------------
def _board_with_references(ln=0.97, bn=0.93, ensemble=0.96, glm=0.95):
    """keras_ln's nets, an ensemble and the two baselines next to an H2O model (whose normalization is n/a too)."""
    return pd.DataFrame({
        "source": ["keras_ln"] * 5 + ["h2o"],
        "model_id": ["MLP_1_LN", "MLP_1_BN", "StackedEnsemble_AllModels", "Baseline_GLM", "Baseline_constant",
                     "GBM_1_AutoML_1"],
        "auc": [ln, bn, ensemble, glm, 0.5, 0.9],
        "normalization": ["layer", "batch", "ensemble", "n/a", "n/a", "n/a"],
        "test_auc": [0.96, 0.92, 0.95, 0.94, 0.5, 0.9],
    }).sort_values("auc", ascending=False, ignore_index=True)


def _ctx():
    return dict(dataset="tiny", task="binary", task_source="inferred from the target", shape=(80, 5),
                sequence=False, n_train=64, n_test=16, test_size=0.2, seed=3, nfolds=2, fold_check="yes",
                max_models=2, max_runtime_secs=60, max_iter=2, keras_secs=12.0, n_keras=3,
                stopped_by="max_models", failed={}, h2o_secs=15.31, n_h2o=1, h2o="3.46, local cluster")


def _warning(text):
    lines = [line for line in text.splitlines() if "Warning" in line]
    assert len(lines) <= 1
    return lines[0] if lines else None


def test_report_warns_in_words_naming_the_nets_worse_than_the_glm_baseline():
    text = _report.markdown(_ctx(), _board_with_references(), None, "auc")
    warning = _warning(text)
    assert warning.startswith("> **Warning: 1 keras_ln net(s) worse than the GLM baseline**")
    assert "`MLP_1_BN` (0.93)" in warning and "cross-validated auc 0.95" in warning
    # the better net, the ensemble, the constant and H2O's model (worse than the GLM) are not named among
    # the nets worse than it (the better net is named after them as a twin: see the next test)
    named = warning.split(". A net that")[0]
    assert not any(name in named for name in ("MLP_1_LN", "StackedEnsemble", "Baseline_constant", "GBM"))
    assert not any(name in warning for name in ("StackedEnsemble", "Baseline_constant", "GBM"))
    text = _report.markdown(_ctx(), _board_with_references(ensemble=0.94), None, "auc")
    assert _warning(text).startswith("> **Warning: 1 keras_ln net(s) and 1 ensemble(s) worse than")


def test_warning_names_the_twins_of_a_configuration_that_beat_the_glm():
    # MLP_1_BN is worse than the GLM, its layer-normalized twin (same configuration) better
    warning = _warning(_report.markdown(_ctx(), _board_with_references(), None, "auc"))
    assert ("`MLP_1_BN`'s configuration beats the GLM under another normalization, `MLP_1_LN` 0.97: with the "
            "same hyperparameters, folds and seed, the shortfall comes with its normalization") in warning
    # and no batch-normalized net beats it: the comparisons with batch rest on nets a linear model beats
    assert "No net with batch normalization beats the GLM (best: `MLP_1_BN`, 0.93)" in warning
    assert "No normalization of" not in warning and "layer normalization," not in warning


def test_warning_tells_a_configuration_that_falls_short_from_a_normalization_that_does():
    board = pd.concat([_board_with_references(ln=0.94, bn=0.93), pd.DataFrame({
        "source": ["keras_ln"], "model_id": ["MLP_2_BN"], "auc": [0.96], "normalization": ["batch"],
        "test_auc": [0.95]})], ignore_index=True).sort_values("auc", ascending=False, ignore_index=True)
    warning = _warning(_report.markdown(_ctx(), board, None, "auc"))
    assert warning.startswith("> **Warning: 2 keras_ln net(s) worse than")
    for net in ("MLP_1_LN", "MLP_1_BN"):  # neither normalization of configuration 1 beats the GLM
        assert f"No normalization of `{net}`'s configuration beats the GLM: the configuration falls short" in warning
    assert "configuration beats the GLM under another normalization" not in warning
    assert ("The best net with batch normalization, `MLP_2_BN` (0.96), beats the GLM: the search found a "
            "configuration that trains well with batch normalization.") in warning
    assert "No net with layer normalization beats the GLM (best: `MLP_1_LN`, 0.94)" in warning


def test_warning_reads_a_loss_the_right_way_round():
    # regression, sorted by deviance (lower is better): LSTM_3_none worse than the GLM, LSTM_3_LN better
    board = pd.DataFrame({
        "source": ["keras_ln"] * 4,
        "model_id": ["LSTM_3_LN", "Baseline_GLM", "LSTM_3_none", "LSTM_4_none"],
        "mean_residual_deviance": [0.4, 0.5, 0.7, 0.6],
        "normalization": ["layer", "n/a", "none", "none"],
    })
    causes = _report.glm_shortfall_causes(board, "regression", "mean_residual_deviance")
    assert causes == [
        "`LSTM_3_none`'s configuration beats the GLM under another normalization, `LSTM_3_LN` 0.4: with the same "
        "hyperparameters, folds and seed, the shortfall comes with its normalization, and the verdict's paired "
        "scores count it as normalization's effect.",
        "No normalization of `LSTM_4_none`'s configuration beats the GLM: the configuration falls short, and its "
        "pairs do not measure normalization on a net that learned this data.",
        "No net without normalization beats the GLM (best: `LSTM_4_none`, 0.6): comparisons with none rest on "
        "nets a linear model beats; a larger budget (--max-runtime-secs, --max-iter) may find better ones.",
    ]
    board.loc[board["model_id"] == "LSTM_4_none", "mean_residual_deviance"] = 0.45
    assert _report.glm_shortfall_causes(board, "regression", "mean_residual_deviance")[1] == (
        "The best net without normalization, `LSTM_4_none` (0.45), beats the GLM: the search found a "
        "configuration that trains well without normalization.")


def test_report_says_how_the_epochs_were_set():
    def epochs(**ctx):
        return re.search(r"keras_ln nets: (.*)\.$", _report.markdown({**_ctx(), **ctx}, _board_with_references(),
                                                                    None, "auc"), re.M).group(1)
    assert epochs(epochs_searched=False, early_stopping=True) == (
        "at most max_iter=2 epochs, stopped early on the loss of 10% of each training fold")
    assert epochs(epochs_searched=True, early_stopping=True).endswith(
        "(the training folds are too small for early stopping's 50 validation rows)")
    assert epochs(epochs_searched=True, early_stopping=False) == (
        "the epochs searched among a quarter, half and all of max_iter=2 (without early stopping, the same epochs "
        "for every normalization; --early-stopping turns it on)")


def test_report_does_not_warn_when_every_net_is_as_good_as_the_glm():
    text = _report.markdown(_ctx(), _board_with_references(bn=0.95), None, "auc")  # a tie is not worse
    assert _warning(text) is None
    assert "Every keras_ln net and ensemble is at least as good as the GLM baseline" in text


def test_worse_follows_the_direction_of_the_sort_metric():
    board = pd.DataFrame({"source": ["keras_ln"] * 3, "model_id": ["MLP_1_LN", "MLP_1_none", "Baseline_GLM"],
                          "normalization": ["layer", "none", "n/a"], "mean_residual_deviance": [3.0, 1.0, 2.0]})
    glm, worse = _report.nets_worse_than_glm(board, "regression", "mean_residual_deviance")
    assert glm == 2.0 and list(worse["model_id"]) == ["MLP_1_LN"]  # lower is better
    glm, worse = _report.nets_worse_than_glm(board.iloc[:2], "regression", "mean_residual_deviance")
    assert glm is None and worse.empty


def test_best_of_each_kind_and_plots_with_baseline_and_ensemble_rows(tmp_path):
    board = _board_with_references()
    folds = pd.DataFrame({"model_id": np.repeat(board["model_id"].to_numpy(), 2), "fold": [0, 1] * len(board),
                          "group": np.repeat(board["normalization"].where(board["source"] == "keras_ln", "h2o"), 2),
                          "auc": np.repeat(board["auc"].to_numpy(), 2)})
    text = _report.markdown(_ctx(), board, folds, "auc")
    best = text[text.index("Best model of each kind"):text.index("## Plots")]
    assert all(m in best for m in ("MLP_1_LN", "MLP_1_BN", "StackedEnsemble_AllModels", "Baseline_GLM",
                                   "GBM_1_AutoML_1")) and "Baseline_constant" not in best
    groups = text[text.index("across folds"):text.index("Best model of each kind")]
    assert "| ensemble" in groups and "n/a" not in groups  # the baselines are two unlike models
    folder = _report.write_report(str(tmp_path), "tiny", board, folds, {}, task="binary", sort_metric="AUTO",
                                  markdown=text)
    for png in ("metric_by_model.png", "normalization_folds.png", "learning_curves.png"):
        assert (tmp_path / "tiny" / png).stat().st_size > 5000
    assert folder.endswith("tiny")


def test_an_off_scale_constant_baseline_leaves_the_dot_plot():
    board = _board_with_references()  # the constant's auc 0.5 is far below the others' 0.9-0.97
    shown, off_scale = _report._without_an_off_scale_constant(board, "auc", "test_auc")
    assert off_scale == 0.5 and "Baseline_constant" not in set(shown["model_id"]) and len(shown) == len(board) - 1
    near = board.assign(auc=board["auc"].where(board["model_id"] != "Baseline_constant", 0.88),
                        test_auc=board["test_auc"].where(board["model_id"] != "Baseline_constant", 0.88))
    shown, off_scale = _report._without_an_off_scale_constant(near, "auc", "test_auc")
    assert off_scale is None and len(shown) == len(board)


# ---------------------------------------------------------------------------
# the verdict at the top of the report
# ---------------------------------------------------------------------------
def _verdict_table(effect):
    from keras_ln.automl import _verdict

    rng = np.random.default_rng(0)
    rows = []
    for config in ("MLP_1", "MLP_2", "MLP_3"):
        for repeat in (0, 1):
            for fold in range(3):
                base = 0.9 + 0.02 * rng.standard_normal()
                for norm, shift in (("layer", effect), ("batch", 0.0), ("none", 0.0)):
                    rows.append({"config": config, "normalization": norm, "repeat": repeat, "fold": fold,
                                 "auc": base + shift + 0.001 * rng.standard_normal()})
    return _verdict.verdict(pd.DataFrame(rows), "auc", True, 3)


def test_verdict_heads_the_report_and_is_written(tmp_path):
    verdict = _verdict_table(0.05)
    ctx = {**_ctx(), "nrepeats": 2}
    text = _report.markdown(ctx, _board_with_references(), None, "auc", verdict=verdict)
    assert text.index("## Verdict on normalization (`auc`)") < text.index("## Run") < text.index("## Leaderboard")
    lines = _report.verdict_lines(verdict)
    assert len(lines) == 6 and all(line in text for line in lines)
    first = lines[0]
    assert re.fullmatch(r"- \*\*layer-batch\*\* \(all configurations, 18 paired fold scores\): layer norm better "
                        r"than batch norm by 0\.0\d+ auc, 95% CI \[0\.04\d+, 0\.05\d+\]; Wilcoxon p = 0\.0\d+\.", first), first
    assert "(2 folds × 2 repeat(s))" in text
    assert not _EXPONENT.search(text)
    folds = pd.DataFrame({"model_id": ["MLP_1_LN"], "group": ["layer"], "repeat": [0], "fold": [0], "auc": [0.98]})
    folder = _report.write_report(str(tmp_path), "tiny", _board_with_references(), folds, {}, task="binary",
                                  sort_metric="AUTO", markdown=text, verdict=verdict)
    again = pd.read_csv(f"{folder}/verdict.csv")
    pd.testing.assert_frame_equal(again, verdict, check_dtype=False)
    assert (tmp_path / "tiny" / "verdict.png").stat().st_size > 5000


def test_no_verdict_with_one_normalization(tmp_path):
    from keras_ln.automl._verdict import VERDICT_COLUMNS

    empty = pd.DataFrame(columns=VERDICT_COLUMNS)
    assert _report.verdict_lines(empty) == [
        "- No verdict on normalization: fewer than two normalizations have finished models."]
    _report.plot_verdict(empty, str(tmp_path / "v.png"))
    assert (tmp_path / "v.png").stat().st_size > 1000
