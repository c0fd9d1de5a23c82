"""The README's examples run and show what they say they show (examples/;
long_sequences.py has its own test file)."""

import importlib.util
import pathlib
import re

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1))


def test_layer_norm_in_a_model(capsys):
    """Both layers train the same network alike, compute the same function
    with the same weights, keras_ln's model survives a .keras round trip,
    and the epoch-time ratio is printed (its value is not asserted: speed is
    measured in benchmarks/)."""
    _load("layer_norm_in_a_model").main(["--epochs", "2", "--rounds", "2"])
    out = capsys.readouterr().out
    keras_acc = _number(r"keras: 2 epochs, test accuracy ([\d.]+)", out)
    ours_acc = _number(r"keras_ln: 2 epochs, test accuracy ([\d.]+)", out)
    assert keras_acc > 0.8
    assert abs(keras_acc - ours_acc) <= 2 / 450 + 1e-9  # two of the 450 test digits
    assert _number(r"max \|difference\| of outputs = ([\d.e+-]+)", out) < 1e-5
    assert ".keras round trip gives identical outputs: True" in out
    ratio = _number(r"training epoch time, keras / keras_ln: ([\d.]+)x \(median of 2 rounds", out)
    assert ratio > 0


def test_evidence_batch_independence(capsys):
    """An example's layer-normalized output is the same in any batch and in
    inference, exactly; batch norm's is not; the accuracy table has every
    normalization and batch size."""
    _load("evidence_batch_independence").main(["--epochs", "1"])
    out = capsys.readouterr().out
    assert _number(r"layer norm: max change of its output across 5 batches = ([\d.e+-]+)", out) == 0
    assert _number(r"layer norm: .*training vs inference output differ by ([\d.e+-]+)", out) == 0
    assert _number(r"batch norm: max change of its output across 5 batches = ([\d.e+-]+)", out) > 1e-3
    assert _number(r"batch norm: .*training vs inference output differ by ([\d.e+-]+)", out) > 1e-3
    assert "batch=2" in out and "batch=8" in out and "batch=128" in out
    for norm in ("layer", "batch", "none"):
        row = re.search(rf"^\s+{norm}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", out, re.MULTILINE)
        assert row, f"no accuracy row for {norm}:\n{out}"
        assert all(0 <= float(a) <= 1 for a in row.groups())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_pipeline(capsys):
    """Both grid searches run over every normalization and print their
    cross-validation tables and held-out accuracies."""
    _load("sklearn_pipeline").main()
    out = capsys.readouterr().out
    tables = out.split("\n== ")[1:]
    assert [t.split(" ==")[0].split(" (")[0] for t in tables] == ["wine", "sequential digits"]
    for table in tables:
        for norm in ("layer", "batch", "None"):
            assert re.search(rf"\b{norm}\b", table), f"{norm} missing:\n{table}"
        assert _number(r"held-out accuracy ([\d.]+)", table) > 0.8
