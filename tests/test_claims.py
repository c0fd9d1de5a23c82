"""keras_ln.automl._claims: the claims made for layer normalization, measured
on small data (a few epochs): per-example statistics (0 for layer norm and
none, > 0 for batch norm, with dropout configured), the batch-size table,
convergence within the epochs run (and the validation curve where early
stopping records one), the gradient flow against the analytic gradient of
the last step, the figures and claims.csv, and the time budget."""

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from keras_ln.automl import _claims
from keras_ln.automl import _claims_gradients
from keras_ln.automl import h2o_metrics
from keras_ln.automl import make_folds
from keras_ln.datasets import load_breast_cancer
from keras_ln.datasets import load_sequential_digits
from keras_ln.sklearn import LSTMClassifier
from keras_ln.sklearn import MLPClassifier

NORMS = ("layer", "batch", None)


@pytest.fixture(scope="module")
def tabular():
    X, y, task = load_breast_cancer()
    rows = np.r_[np.flatnonzero(y == 0)[:40], np.flatnonzero(y == 1)[:40]]
    return X[rows], y[rows], task


@pytest.fixture(scope="module")
def sequences():
    X, y, task = load_sequential_digits()
    return X[:80], y[:80], task


def _mlp(normalization, dropout=0.0, max_iter=3):
    return make_pipeline(StandardScaler(), MLPClassifier(
        (16,), normalization=normalization, dropout=dropout, max_iter=max_iter, random_state=0))


def _lstm(normalization, max_iter=2):
    return LSTMClassifier(units=(8,), normalization=normalization, dropout=0.25, max_iter=max_iter, random_state=0)


def _fitted(configs, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {n: est.fit(X, y) for n, est in configs.items()}


@pytest.fixture(scope="module")
def fitted_mlps(tabular):
    X, y, _ = tabular
    return _fitted({n: _mlp(n, dropout=0.5) for n in NORMS}, X, y)


@pytest.fixture(scope="module")
def fitted_lstms(sequences):
    X, y, _ = sequences
    return _fitted({n: _lstm(n) for n in NORMS}, X, y)


def _value(df, normalization, quantity):
    rows = df[(df["normalization"] == normalization) & (df["quantity"] == quantity)]
    assert len(rows) == 1, rows
    return float(rows["value"].iloc[0])


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_per_example_change(kind, tabular, sequences, fitted_mlps, fitted_lstms):
    X = tabular[0] if kind == "mlp" else sequences[0]
    fitted = fitted_mlps if kind == "mlp" else fitted_lstms
    models = [_claims._final(est).model_ for est in fitted.values()]
    before = [[v.numpy().copy() for v in m.variables] for m in models]
    df = _claims.per_example_change(fitted, X)
    assert list(df.columns) == _claims.COLUMNS
    assert set(df["claim"]) == {"per_example"}
    # Dropout (0.5 / 0.25 in the configurations) is off: layer norm and no
    # normalization see nothing of the rest of the batch.
    assert _value(df, "layer", "max_abs_change") <= 1e-6
    assert _value(df, "none", "max_abs_change") <= 1e-6
    assert _value(df, "batch", "max_abs_change") > 1e-4
    assert _value(df, "batch", "output_std") > 0
    # Nothing of the networks changed: weights, moving statistics, rates.
    after = [[v.numpy() for v in m.variables] for m in models]
    for b, a in zip(before, after):
        assert all(np.array_equal(x, z) for x, z in zip(b, a))
    if kind == "mlp":
        assert _claims._final(fitted["layer"]).model_.get_layer("dropout_0").rate == 0.5
    # Seeded: the same batches, the same numbers.
    again = _claims.per_example_change(fitted, X)
    pd.testing.assert_frame_equal(df, again)


def test_gradient_flow(sequences, fitted_lstms):
    X, y, _ = sequences
    df = _claims.gradient_flow(fitted_lstms, X, y, n_sequences=32)
    steps = X.shape[1]
    for quantity in ("grad_norm", "hidden_std"):
        part = df[df["quantity"] == quantity]
        for norm in ("layer", "batch", "none"):
            mine = part[part["normalization"] == norm]
            assert sorted(mine["step"]) == list(range(steps))
            assert np.all(np.isfinite(mine["value"])) and np.all(mine["value"] > 0)
    pd.testing.assert_frame_equal(df, _claims.gradient_flow(fitted_lstms, X, y, n_sequences=32))


@pytest.mark.parametrize("norm", NORMS)
def test_unrolled_network_and_last_step_gradient(norm, sequences, fitted_lstms):
    """The unrolled recurrence reproduces the network's training-mode
    logits, and the gradient at the last hidden state is the analytic one,
    (softmax(logits) - onehot(y)) @ W_logits.T."""
    X, y, _ = sequences
    est = fitted_lstms[norm]
    model = est.model_
    x = _claims._network_input(est, X[:16])
    targets, _ = est._encode_targets(y[:16], reset=False)
    view = _claims._training_output(model)
    with _claims._measurement_mode(model):
        hidden, logits, grads = _claims_gradients._unrolled(est, x, targets)
        ref, _ = view.stateless_call([v.value for v in view.trainable_variables],
                                     [v.value for v in view.non_trainable_variables], x, training=True)
    logits = np.asarray(logits, dtype=np.float64)
    np.testing.assert_allclose(logits, np.asarray(ref), atol=1e-5)
    assert len(hidden) == len(grads) == X.shape[1]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(targets)), targets] -= 1.0
    kernel = model.get_layer("logits").kernel.numpy().astype(np.float64)
    np.testing.assert_allclose(np.asarray(grads[-1]), p @ kernel.T, rtol=1e-4, atol=1e-6)
    assert all(np.any(np.asarray(g) != 0) for g in grads)


def test_capped_batch_sizes():
    assert _claims.capped_batch_sizes(40) == [4, 16, 40]
    assert _claims.capped_batch_sizes(1000) == [4, 16, 64, 256]
    assert _claims.capped_batch_sizes(64) == [4, 16, 64]


def test_batch_size_table(tabular):
    X, y, task = tabular
    folds = make_folds(y, task, nfolds=2, seed=0)  # 40 training rows per fold
    configs = {n: _mlp(n) for n in ("layer", "batch")}
    df = _claims.batch_size_effect(configs, X, y, folds, task, seed=0)
    metric = df[df["quantity"] == "auc"]  # H2O's sort metric of a binary task
    assert set(df["claim"]) == {"batch_size"}
    for norm in ("layer", "batch"):
        mine = metric[metric["normalization"] == norm]
        cv = mine[mine["fold"].isna()]
        assert sorted(cv["batch_size"]) == [4, 16, 40]
        assert sorted(mine.loc[mine["fold"].notna(), "fold"]) == [0, 0, 0, 1, 1, 1]
        assert np.all((mine["value"] >= 0) & (mine["value"] <= 1))
        epochs = df[(df["normalization"] == norm) & (df["quantity"] == "epochs")]
        assert len(epochs) == 6 and np.all(epochs["value"] <= 3)
    assert set(metric["detail"]) == {"higher is better"}
    assert "skipped" not in set(df["quantity"])


@pytest.fixture(scope="module")
def mlp_fits(tabular):
    X, y, task = tabular
    folds = make_folds(y, task, nfolds=2, seed=0)
    configs = {n: _mlp(n, max_iter=5) for n in NORMS}
    fits, skipped = _claims.fit_folds(configs, X, y, folds, task, seed=0)
    assert len(skipped) == 0
    return fits


def test_epochs_within_by_hand():
    # best 0.49, within 1%: <= 0.4949, first reached at epoch 2.
    assert _claims._epochs_within([1.0, 0.4949, 0.6, 0.49]) == 2
    assert _claims._epochs_within([1.0, 0.495, 0.6, 0.49]) == 4
    assert _claims._epochs_within([0.3]) == 1


def test_convergence_within_the_epochs_run(mlp_fits):
    df = _claims.convergence(mlp_fits)
    assert len(mlp_fits) == 6
    for fit in mlp_fits:
        mine = df[(df["normalization"] == fit.normalization) & (df["fold"] == fit.fold)]
        curve = mine[mine["quantity"] == "training_loss"]  # no early stopping: the training loss
        assert list(curve["epoch"]) == list(range(1, fit.n_iter + 1))
        np.testing.assert_array_equal(curve["value"], fit.loss_curve)
        epochs = float(mine.loc[mine["quantity"] == "epochs_to_best", "value"].iloc[0])
        assert 1 <= epochs <= fit.n_iter <= 5
        seconds = float(mine.loc[mine["quantity"] == "seconds_to_best", "value"].iloc[0])
        assert 0 < seconds <= fit.fit_seconds + 1e-9
    medians = df[df["fold"].isna() & (df["quantity"] == "epochs_to_best")]
    assert sorted(medians["normalization"]) == ["batch", "layer", "none"]
    assert set(medians["detail"]) == {"training_loss"}


def test_convergence_reads_the_validation_curve():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1200, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    folds = make_folds(y, "binary", nfolds=2, seed=0)  # 600 training rows: 60 validation rows
    est = MLPClassifier((8,), normalization="layer", max_iter=4, early_stopping=True, random_state=0)
    fits, _ = _claims.fit_folds({"layer": est}, X, y, folds, "binary")
    df = _claims.convergence(fits)
    for fit in fits:
        assert fit.validation_loss_curve is not None
        curve = df[(df["fold"] == fit.fold) & (df["quantity"] == "validation_loss")]
        np.testing.assert_array_equal(curve["value"], fit.validation_loss_curve)
    assert set(df.loc[df["quantity"] == "epochs_to_best", "detail"]) == {"validation_loss"}


def test_overhead(mlp_fits):
    df = _claims.overhead(mlp_fits)
    per_epoch = df[(df["quantity"] == "seconds_per_epoch") & df["fold"].isna()]
    assert sorted(per_epoch["normalization"]) == ["batch", "layer", "none"]
    assert np.all(per_epoch["value"] > 0)
    assert _value(df, "none", "relative_to_none") == 1.0
    expected = _value(per_epoch, "layer", "seconds_per_epoch") / _value(per_epoch, "none", "seconds_per_epoch")
    assert _value(df, "layer", "relative_to_none") == pytest.approx(expected)


def test_measure_claims_writes_every_figure_and_the_csv(sequences, tmp_path):
    X, y, task = sequences
    X, y = X[:60], y[:60]
    folds = make_folds(y, task, nfolds=2, seed=0)
    configs = {n: LSTMClassifier(units=(4,), normalization=n, max_iter=2, random_state=0) for n in NORMS}
    df = _claims.measure_claims(configs, X, y, folds, task, out_dir=tmp_path, seed=0, batch_sizes=(64,))
    for name in list(_claims.FIGURES.values()) + ["claims.csv"]:
        assert os.path.getsize(tmp_path / name) > 0, name
    assert set(df["claim"]) == {"per_example", "gradient_flow", "convergence", "overhead", "batch_size", "cost"}
    assert df.attrs["skipped"] == []
    # The batch-size claim's CV metric is H2O's on the pooled fold predictions:
    # mean_per_class_error for multiclass; sizes capped at 30 training rows.
    cv = df[(df["claim"] == "batch_size") & (df["quantity"] == "mean_per_class_error") & df["fold"].isna()]
    assert sorted(cv["batch_size"]) == [30, 30, 30]
    back = pd.read_csv(tmp_path / "claims.csv")
    assert list(back.columns) == _claims.COLUMNS and len(back) == len(df)
    # The figures can be redrawn from the CSV alone.
    os.makedirs(tmp_path / "again")
    redrawn = _claims.write_figures(back, tmp_path / "again")
    assert sorted(os.path.basename(p) for p in redrawn) == sorted(_claims.FIGURES.values())


def test_budget_stops_new_work(tabular, tmp_path, monkeypatch):
    X, y, task = tabular
    folds = make_folds(y, task, nfolds=2, seed=0)
    configs = {n: _mlp(n) for n in NORMS}
    df = _claims.measure_claims(configs, X, y, folds, task, out_dir=tmp_path, budget_secs=0)
    assert (tmp_path / "claims.csv").exists()
    assert set(df.loc[df["claim"] != "cost", "quantity"]) == {"skipped"}
    assert len(df.attrs["skipped"]) == len(df[df["quantity"] == "skipped"]) > 0
    # A budget that lasts for 4 units of work: the 3 fits of the first fold
    # and the per-example measurement of the first normalization.
    checks = iter([False] * 4)
    monkeypatch.setattr(_claims._Budget, "spent", lambda self: next(checks, True))
    df = _claims.measure_claims(configs, X, y, folds, task, seed=0)
    done = df[df["quantity"] != "skipped"]
    skipped = df[df["quantity"] == "skipped"]
    assert set(done.loc[done["claim"] == "per_example", "normalization"]) == {"layer"}
    assert set(skipped.loc[skipped["claim"] == "per_example", "normalization"]) == {"batch", "none"}
    assert sorted(skipped.loc[skipped["claim"] == "fits", "fold"]) == [1, 1, 1]
    assert set(done.loc[done["claim"] == "convergence", "fold"].dropna()) == {0}
    assert len(done[done["claim"] == "batch_size"]) == 0
    assert len(skipped[skipped["claim"] == "batch_size"]) == 3 * 3 * 2  # norms x sizes x folds
    assert "fits batch fold=1" in df.attrs["skipped"]


def test_pooled_metric_is_h2o_metric(tabular):
    """The batch-size CV metric equals h2o_metrics on the pooled fold
    predictions of the same fits."""
    X, y, task = tabular
    folds = make_folds(y, task, nfolds=2, seed=0)
    config = _mlp("layer")
    df = _claims.batch_size_effect({"layer": config}, X, y, folds, task, batch_sizes=(16,))
    fits, _ = _claims.fit_folds({"layer": clone(config).set_params(mlpclassifier__batch_size=16)},
                                X, y, folds, task)
    pooled = np.zeros((len(y), 2))
    for fit in fits:
        pooled[fit.test_rows] = fit.prediction
    cv = df[(df["quantity"] == "auc") & df["fold"].isna()]
    assert float(cv["value"].iloc[0]) == pytest.approx(h2o_metrics(task, y, pooled)["auc"])


def test_a_failing_fit_is_reported_and_the_rest_goes_on(tabular, monkeypatch):
    X, y, task = tabular
    folds = make_folds(y, task, nfolds=2, seed=0)
    fit_fold = _claims._fit_fold

    def diverging_at_4(*args, **params):
        if params.get("batch_size") == 4:
            raise ValueError("The training loss became nan at iteration 2")
        return fit_fold(*args, **params)

    monkeypatch.setattr(_claims, "_fit_fold", diverging_at_4)
    df = _claims.measure_claims({"layer": _mlp("layer")}, X, y, folds, task, batch_sizes=(4, 64))
    failed = df[df["quantity"] == "failed"]
    assert sorted(failed["fold"]) == [0, 1] and set(failed["batch_size"]) == {4}
    assert set(failed["detail"]) == {"ValueError: The training loss became nan at iteration 2"}
    cv = df[(df["quantity"] == "auc") & df["fold"].isna()]
    assert list(cv["batch_size"]) == [40]  # no CV metric from one fold of two
    assert df.attrs["failed"] == [
        f"batch_size layer fold={k} batch_size=4 (ValueError: The training loss became nan at iteration 2)"
        for k in (0, 1)
    ]
    assert _value(df, "layer", "max_abs_change") <= 1e-6
