"""The CLI's bad input: one line on stderr naming the argument, exit status 2, nothing started or written.

None of these needs the h2o package: every bad input must be rejected before
the H2O side is imported, which `_no_h2o_side` asserts in-process and the
subprocess tests assert by making ``import h2o`` fail.
"""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from integrations import _imports, _inputs
from integrations import h2o_automl as cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs the CLI with `import h2o` failing, as if the h2o extra were not installed.
_WITHOUT_H2O = (
    "import sys; sys.modules['h2o'] = None\n"
    "from integrations.h2o_automl import main\n"
    "code = main(sys.argv[1:])\n"
    "assert sys.modules['h2o'] is None and not [m for m in sys.modules if m.startswith('h2o.')], 'h2o imported'\n"
    "sys.exit(code)\n"
)


def _run_without_h2o(args, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", _WITHOUT_H2O, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def no_h2o_side(monkeypatch):
    """Fail the test if the run reaches the H2O side (which would start a cluster)."""
    def refuse():
        raise AssertionError("the H2O side was reached")

    monkeypatch.setattr(_imports, "h2o_side", refuse)


def _csv(tmp_path, df, name="data.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _one_error_line(err, *names):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: argument "), err
    for name in names:
        assert name in lines[0], (name, err)
    assert "Traceback" not in err
    return lines[0]


def _tabular(n=60, classes=("a", "b"), seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 3)), columns=["f0", "f1", "f2"])
    df["y"] = [classes[i % len(classes)] for i in range(n)]
    return df


# ---------------------------------------------------------------------------
# Argument errors: argparse level, standard library only
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, names",
    [
        (["--dataset", "wine", "--test-size", "0.99x"], ["--test-size", "0.99x"]),
        (["--dataset", "wine", "--test-size", "1.5"], ["--test-size", "1.5"]),
        (["--dataset", "wine", "--test-size", "0"], ["--test-size", "'0'"]),
        (["--dataset", "nope"], ["--dataset", "nope"]),
        (["--dataset", "wine", "--task", "ordinal"], ["--task", "ordinal"]),
        (["--dataset", "wine", "--nfolds", "1"], ["--nfolds", "1"]),
        (["--dataset", "wine", "--target", "y"], ["--target", "'y'"]),
        (["--csv", "x.csv"], ["--csv", "--target"]),
        (["--dataset", "wine", "--no-h2o", "--h2o-url", "http://x:1"], ["--no-h2o", "--h2o-url"]),
    ],
)
def test_argument_errors_are_one_line_and_status_2(argv, names, tmp_path, capsys, no_h2o_side):
    out = tmp_path / "reports"
    assert cli.main([*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, *names)
    assert captured.out == ""
    assert not out.exists()


def test_out_that_is_a_file_is_an_argument_error(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    assert cli.main(["--dataset", "wine", "--out", str(target)]) == 2
    _one_error_line(capsys.readouterr().err, "--out", str(target))


@pytest.mark.parametrize("kind", ["directory", "missing", "empty", "fifo"])
def test_unusable_paths_are_argument_errors(kind, tmp_path, capsys, no_h2o_side):
    path = tmp_path / "data.csv"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_text("")
    elif kind == "fifo":
        os.mkfifo(path)
    out = tmp_path / "reports"
    assert cli.main(["--csv", str(path), "--target", "y", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "--csv", str(path))
    assert {"directory": "is a directory", "missing": "no such file", "empty": "is empty",
            "fifo": "not a regular file"}[kind] in line
    assert not out.exists()


def test_unreadable_file_is_an_argument_error(tmp_path, capsys, monkeypatch):
    path = _csv(tmp_path, _tabular())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_inputs, "open", denied, raising=False)  # chmod 000 does not stop root
    assert cli.main(["--csv", str(path), "--target", "y", "--out", str(tmp_path / "r")]) == 2
    line = _one_error_line(capsys.readouterr().err, "--csv", str(path))
    assert "cannot read" in line and "Permission denied" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads chmod-000 files")
def test_file_without_read_permission_is_an_argument_error(tmp_path, capsys):
    path = _csv(tmp_path, _tabular())
    path.chmod(0)
    assert cli.main(["--npz", str(path), "--out", str(tmp_path / "r")]) == 2
    _one_error_line(capsys.readouterr().err, "--npz", "cannot read")


def test_help_and_argument_errors_import_nothing_heavy():
    code = (
        "import sys\n"
        "from integrations.h2o_automl import main\n"
        "codes = [main(['--dataset', 'wine', '--test-size', '2']), main(['--csv', '/nonexistent', '--target', 'y']),\n"
        "         main(['--help'])]\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'keras_ln', 'h2o', 'pandas', 'sklearn', 'numpy',\n"
        "                           'matplotlib') if m in sys.modules)\n"
        "print(codes, heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "[2, 2, 0] []", done.stderr


def test_dataset_names_match_keras_ln():
    from keras_ln import datasets

    assert _inputs.DATASET_NAMES == tuple(sorted(datasets.DATASETS))
    assert _inputs.TASKS == datasets.TASKS


# ---------------------------------------------------------------------------
# Data errors: found after reading the data, before H2O starts
# ---------------------------------------------------------------------------
def _data_error(tmp_path, capsys, argv, *names):
    out = tmp_path / "reports"
    assert cli.main([*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert not out.exists()
    assert "H2O AutoML on" not in captured.out and "keras_ln AutoML on" not in captured.out
    return _one_error_line(captured.err, *names)


def test_single_class_target(tmp_path, capsys, no_h2o_side):
    path = _csv(tmp_path, _tabular(classes=("only",)))
    line = _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y"], "--target", "'y'", "'only'")
    assert "single class" in line


def test_constant_regression_target(tmp_path, capsys, no_h2o_side):
    df = _tabular()
    df["y"] = 3.5
    path = _csv(tmp_path, df)
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y"], "--target", "single value", "3.5")


def test_target_with_nan(tmp_path, capsys, no_h2o_side):
    df = _tabular()
    df.loc[[3, 7], "y"] = np.nan
    path = _csv(tmp_path, df)
    line = _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y"], "--csv", str(path), "'y'")
    assert "2 missing" in line


def test_npz_target_with_nan(tmp_path, capsys, no_h2o_side):
    y = np.arange(40, dtype=float)
    y[5] = np.nan
    path = tmp_path / "seqs.npz"
    np.savez(path, X=np.zeros((40, 4, 2)), y=y)
    line = _data_error(tmp_path, capsys, ["--npz", str(path)], "--npz", str(path))
    assert "1 NaN" in line and "[5]" in line


def test_csv_with_only_a_header(tmp_path, capsys, no_h2o_side):
    path = tmp_path / "data.csv"
    path.write_text("f0,y\n")
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y"], "--csv", "0 data row")


@pytest.mark.parametrize(
    "content, target, message",
    [
        ("a,b\n1,2\n3,4\n", "label", "`target='label'` not found"),
        ("a,y\n1,0\n2,1\nx?,0\n4,1\n5,0\n", "y", "unparseable"),
    ],
)
def test_bad_csv_content(tmp_path, capsys, no_h2o_side, content, target, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", target], "--csv", message)


def test_binary_garbage_as_csv(tmp_path, capsys, no_h2o_side):
    path = tmp_path / "data.csv"
    path.write_bytes(bytes(range(128, 256)) * 4)
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y"], "--csv", "Cannot parse")


def test_multiline_parser_errors_become_one_line(tmp_path, capsys, no_h2o_side):
    path = tmp_path / "data.csv"
    path.write_text("f0,y\n1,a\n2,b,c,d\n3,a\n")
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y"], "--csv")


@pytest.mark.parametrize(
    "test_size, names",
    [
        ("0.99", ["--test-size", "0.99", "for training"]),  # the example
        ("0.01", ["--test-size", "0.01", "test split"]),
        ("0.9", ["--test-size", "0.9", "for training"]),
    ],
)
def test_test_split_too_large_or_small_for_the_classes(tmp_path, capsys, no_h2o_side, test_size, names):
    path = _csv(tmp_path, _tabular(n=120, classes=("a", "b", "c")))
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y", "--test-size", test_size], *names)


def test_test_split_too_small_for_a_regression(tmp_path, capsys, no_h2o_side):
    df = _tabular(n=50)
    df["y"] = np.linspace(0, 1, 50)
    path = _csv(tmp_path, df)
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y", "--test-size", "0.01"],
                "--test-size", "0.01", "1 row(s) in the test split")


def test_too_few_rows_of_a_class_for_the_folds(tmp_path, capsys, no_h2o_side):
    df = _tabular(n=60)
    df.loc[:3, "y"] = "rare"  # 4 rows: 5 folds and a test row need 6
    path = _csv(tmp_path, df)
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y"], "--nfolds", "'rare'", "has 4")


def test_sort_metric_that_does_not_fit_the_task(tmp_path, capsys, no_h2o_side):
    _data_error(tmp_path, capsys, ["--dataset", "wine", "--sort-metric", "auc"], "--sort-metric", "'auc'")


@pytest.mark.parametrize(
    "task, classes, names",
    [
        ("binary", ("a", "b", "c"), ["--task", "binary", "3"]),
        ("multiclass", ("a", "b"), ["--task", "multiclass", "--task binary"]),
        ("regression", ("a", "b"), ["--task", "regression", "'a'"]),
    ],
)
def test_task_that_does_not_fit_the_target(tmp_path, capsys, no_h2o_side, task, classes, names):
    path = _csv(tmp_path, _tabular(classes=classes))
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y", "--task", task], *names)


def test_classes_of_a_real_valued_target(tmp_path, capsys, no_h2o_side):
    df = _tabular()
    df["y"] = np.linspace(0, 1, len(df))
    path = _csv(tmp_path, df)
    _data_error(tmp_path, capsys, ["--csv", str(path), "--target", "y", "--task", "multiclass"],
                "--task", "non-integer")


def test_bad_data_is_one_line_in_a_real_process_without_h2o(tmp_path):
    """The whole CLI in a fresh process (TensorFlow's start-up notices included) with h2o not importable."""
    path = _csv(tmp_path, _tabular(classes=("only",)))
    out = tmp_path / "reports"
    done = _run_without_h2o(["--csv", str(path), "--target", "y", "--out", str(out)])
    assert done.returncode == 2, done.stderr
    _one_error_line(done.stderr, "--target", "single class")
    assert done.stdout == "" and not out.exists()


# ---------------------------------------------------------------------------
# The task: inferred with a warning, or given with --task, and honoured by keras_ln's side
# ---------------------------------------------------------------------------
def _twelve_classes(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12), 30)
    df = pd.DataFrame({"f0": y + rng.normal(scale=0.3, size=len(y)), "f1": rng.normal(size=len(y)), "label": y})
    return _csv(tmp_path, df, "twelve.csv")


def test_many_integer_classes_read_as_regression_warn(tmp_path, capsys, monkeypatch):
    path = _twelve_classes(tmp_path)
    args = cli.parse_args(["--csv", str(path), "--target", "label", "--no-h2o"])
    data = _inputs.load(args)
    err = capsys.readouterr().err
    assert data.task == "regression"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: argument --target:")
    assert "12 distinct integer values" in lines[0] and "--task multiclass" in lines[0]

    args = cli.parse_args(["--csv", str(path), "--target", "label", "--no-h2o", "--task", "regression"])
    assert _inputs.load(args).task == "regression" and capsys.readouterr().err == ""


def test_task_given_is_honoured_by_the_keras_ln_side(tmp_path, capsys, no_h2o_side):
    path = _twelve_classes(tmp_path)
    out = tmp_path / "reports"
    code = cli.main(["--csv", str(path), "--target", "label", "--task", "multiclass", "--no-h2o", "--nfolds", "2",
                     "--test-size", "0.3", "--max-models", "1", "--max-iter", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning" not in captured.err
    board = pd.read_csv(out / "twelve" / "leaderboard.csv")
    assert "mean_per_class_error" in board.columns and "rmse" in board.columns and "mae" not in board.columns
    report = (out / "twelve" / "report.md").read_text()
    assert "Task: **multiclass** (--task)" in report


def test_split_is_stratified_and_folds_cover_every_class():
    args = cli.parse_args(["--dataset", "wine", "--nfolds", "3", "--test-size", "0.25"])
    data = _inputs.split(args, _inputs.load(args))
    assert set(np.unique(data.y_test)) == set(data.classes.tolist())
    for k in range(3):
        assert set(np.unique(data.y_train[data.folds == k])) == set(data.classes.tolist())


# ---------------------------------------------------------------------------
# --no-h2o without the h2o extra
# ---------------------------------------------------------------------------
def test_no_h2o_runs_without_the_h2o_package(tmp_path):
    path = _csv(tmp_path, _tabular(n=40))
    out = tmp_path / "reports"
    done = _run_without_h2o(["--csv", str(path), "--target", "y", "--no-h2o", "--max-models", "1",
                             "--max-iter", "1", "--nfolds", "2", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert (out / "data" / "report.md").exists()
    assert "Traceback" not in done.stderr


def test_h2o_side_without_the_h2o_package_is_one_message(tmp_path):
    out = tmp_path / "reports"
    done = _run_without_h2o(["--dataset", "wine", "--out", str(out)])
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("error: ") and "--no-h2o" in line and "keras_ln[h2o]" in line
    assert not out.exists()


# ---------------------------------------------------------------------------
# TensorFlow's start-up notices
# ---------------------------------------------------------------------------
def test_absl_notices_below_the_log_level_are_dropped():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796094618.710480    3607 port.cc:153] oneDNN custom operations are on.\n"
            "W0000 00:00:1796094618.710480    3607 gpu.cc:12] a warning\n"
            "a line of our own\n")
    assert _imports.drop_absl_notices(text, 3) == "a line of our own\n"
    assert _imports.drop_absl_notices(text, 1) == ("W0000 00:00:1796094618.710480    3607 gpu.cc:12] a warning\n"
                                                   "a line of our own\n")
    assert _imports.drop_absl_notices(text, 0) == text
