"""examples/long_sequences.py runs end to end on tiny settings and writes its CSV files and plot."""

import csv
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "long_sequences.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("long_sequences_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_csv_and_plot(example, tmp_path, capsys):
    layers = ["LayerNormLSTM", "BatchNormLSTM", "GRU"]
    example.main(["--steps", "10", "12", "--seeds", "1", "--epochs", "1", "--n-train", "64", "--n-test", "32",
                  "--units", "8", "--batch-size", "32", "--layers", *layers, "--out", str(tmp_path)])

    summary = _read(tmp_path / "summary.csv")
    assert list(summary[0]) == example.SUMMARY_FIELDS
    assert [(r["layer"], int(r["steps"])) for r in summary] == [(layer, s) for layer in layers for s in (10, 12)]
    for r in summary:
        assert int(r["runs"]) == 1
        assert 0.0 <= float(r["fraction_solved"]) <= 1.0
        assert float(r["fraction_solved"]) == int(r["solved"]) / int(r["runs"])

    runs = _read(tmp_path / "runs.csv")
    assert list(runs[0]) == example.RUN_FIELDS
    assert len(runs) == len(layers) * 2
    assert {r["layer"] for r in runs} == set(layers)

    png = tmp_path / "long_sequences.png"
    assert png.exists() and png.stat().st_size > 1000
    out = capsys.readouterr().out
    assert "| LayerNormLSTM |" in out and "Total wall time" in out


def test_same_seed_same_test_mse(example, tmp_path):
    """A run is reproducible: the same seed gives the same test MSE."""
    args = example.parse_args(["--steps", "10", "--epochs", "1", "--n-train", "64", "--n-test", "32",
                               "--units", "8", "--out", str(tmp_path)])
    train = example.make_adding_problem(64, 10, random_state=0)[:2]
    test = example.make_adding_problem(32, 10, random_state=example.TEST_RANDOM_STATE)[:2]
    first = example.run("LayerNormGRU", 10, 0, train, test, args)
    second = example.run("LayerNormGRU", 10, 0, train, test, args)
    assert first["test_mse"] == pytest.approx(second["test_mse"], rel=1e-6)


def _fit(example, batch_norm):
    """Two epochs of a tiny BatchNormLSTM, its test MSE measured after each (with or without recomputing
    the moving statistics first)."""
    x, y = example.make_adding_problem(64, 10, random_state=0)[:2]
    test = example.make_adding_problem(32, 10, random_state=example.TEST_RANDOM_STATE)[:2]
    model = example.build("BatchNormLSTM", 10, 8, 0)
    model.compile(example.keras.optimizers.Adam(1e-3, clipnorm=1.0), "mse")
    curve = example.TestCurve(x, test, 32, batch_norm=batch_norm)
    model.fit(x, y, epochs=2, batch_size=32, shuffle=True, verbose=0, callbacks=[curve])
    ops = example.keras.ops
    inference = ops.convert_to_numpy(model(x, training=False))
    training = ops.convert_to_numpy(model(x, training=True))  # batch statistics of the whole training set
    weights = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    return model, curve, test, inference, training, weights


def test_batch_norm_lstm_gets_population_statistics(example):
    """Before each test measurement BatchNormLSTM's moving statistics become those of the training set
    (inference mode then matches training mode on the whole set), and the trained weights do not change."""
    model, curve, test, inference, training, weights = _fit(example, batch_norm=True)
    np.testing.assert_allclose(inference, training, atol=1e-5)
    assert len(curve.mse) == 2
    assert curve.mse[-1] == pytest.approx(model.evaluate(*test, batch_size=32, verbose=0), rel=1e-5)

    # Step 0's input-norm statistics are those of the training sequences' first step.
    x = example.make_adding_problem(64, 10, random_state=0)[0]
    cell = model.layers[0].cell
    ops = example.keras.ops
    projection = x[:, 0] @ ops.convert_to_numpy(cell.kernel)
    np.testing.assert_allclose(ops.convert_to_numpy(cell.kernel_norm_moving_mean)[0], projection.mean(0),
                               atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(cell.kernel_norm_moving_variance)[0], projection.var(0),
                               rtol=1e-3, atol=1e-6)

    # Without the recomputation: the same weights, but moving statistics still far from the population's.
    _, _, _, stale_inference, stale_training, stale_weights = _fit(example, batch_norm=False)
    for w, stale in zip(weights, stale_weights):
        np.testing.assert_array_equal(w, stale)
    np.testing.assert_allclose(stale_training, training, atol=1e-6)
    assert np.max(np.abs(stale_inference - stale_training)) > 1e-2
