"""examples/long_sequences.py runs end to end on tiny settings and writes its CSV files and plot."""

import csv
import importlib.util
import pathlib

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
    layers = ["LayerNormLSTM", "GRU"]
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
