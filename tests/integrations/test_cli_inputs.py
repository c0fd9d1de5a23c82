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
        (["--dataset", "wine", "--nrepeats", "0"], ["--nrepeats", "'0'"]),
        (["--dataset", "wine", "--dask-scheduler", "tcp://x:8786"], ["--dask-scheduler", "--storage"]),
        (["--dataset", "wine", "--n-jobs", "0"], ["--n-jobs", "'0'"]),
        (["--dataset", "wine", "--claims-secs", "-5"], ["--claims-secs", "'-5'"]),
        (["--dataset", "wine", "--target", "y"], ["--target", "'y'"]),
        (["--csv", "x.csv"], ["--csv", "--target"]),
        (["--dataset", "wine", "--no-h2o", "--h2o-url", "http://x:1"], ["--no-h2o", "--h2o-url"]),
        (["--dataset", "wine", "--test-csv", "t.csv"], ["--test-csv", "only used with --csv"]),
        (["--dataset", "wine", "--test-npz", "t.npz"], ["--test-npz", "only used with --npz"]),
        (["--csv", "x.csv", "--target", "y", "--test-csv", "t.csv", "--test-npz", "t.npz"],
         ["--test-npz", "not allowed with argument --test-csv"]),
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


def test_early_stopping_is_off_by_default_and_the_flag_reaches_the_automl(tmp_path, capsys, no_h2o_side):
    assert cli.parse_args(["--dataset", "wine"]).early_stopping is False
    assert cli.parse_args(["--dataset", "wine", "--early-stopping"]).early_stopping is True
    path = _twelve_classes(tmp_path)
    out = tmp_path / "reports"
    common = ["--csv", str(path), "--target", "label", "--no-h2o", "--nfolds", "2", "--test-size", "0.3",
              "--max-models", "1", "--max-iter", "1", "--out", str(out)]
    code = cli.main(common)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = (out / "twelve" / "report.md").read_text()
    assert ("keras_ln nets: the epochs searched among a quarter, half and all of max_iter=1 (without early "
            "stopping, the same epochs for every normalization; --early-stopping turns it on)") in report
    # the setting reaches keras_ln's AutoML: its study, run without early stopping, does not resume with it
    code = cli.main(common + ["--early-stopping", "--resume"])
    assert code != 0 and "Cannot resume study" in capsys.readouterr().err


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


# ---------------------------------------------------------------------------
# The user's own test rows: --test-csv / --test-npz
# ---------------------------------------------------------------------------
def _table_with_gaps(n=80, seed=0):
    """Numbers, a category and missing values in both."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"num": rng.normal(size=n), "cat": rng.choice(["a", "b", "c"], size=n),
                       "other": rng.normal(size=n)})
    df["y"] = np.where((df["num"] > 0) | (df["cat"] == "a"), "yes", "no")
    df.loc[::6, "num"] = np.nan
    df.loc[1::5, "cat"] = None
    return df


def _train_test_csv(tmp_path, test=None):
    df = _table_with_gaps()
    train = _csv(tmp_path, df[:60], "train.csv")
    return train, _csv(tmp_path, df[60:] if test is None else test, "test.csv")


def test_test_size_with_a_test_file_is_an_argument_error(tmp_path, capsys, no_h2o_side):
    train, test = _train_test_csv(tmp_path)
    out = tmp_path / "reports"
    assert cli.main(["--csv", str(train), "--test-csv", str(test), "--target", "y", "--test-size", "0.3",
                     "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "--test-size", "--test-csv")
    assert "not allowed" in line and not out.exists()
    assert cli.parse_args(["--dataset", "wine"]).test_size == 0.2  # the default when no test file is given
    assert cli.parse_args(["--csv", str(train), "--test-csv", str(test), "--target", "y"]).test_size is None


def test_a_missing_test_file_is_an_argument_error(tmp_path, capsys, no_h2o_side):
    train, _ = _train_test_csv(tmp_path)
    assert cli.main(["--csv", str(train), "--test-csv", str(tmp_path / "nope.csv"), "--target", "y",
                     "--out", str(tmp_path / "r")]) == 2
    _one_error_line(capsys.readouterr().err, "--test-csv", "no such file")


@pytest.mark.parametrize(
    "change, names",
    [
        (lambda df: df.drop(columns=["other"]), ["--test-csv", "lacks the column(s) ['other']"]),
        (lambda df: df.assign(extra=1.0), ["--test-csv", "['extra']", "that --csv has not"]),
        (lambda df: df.assign(num=["n/a", "x"] * 10), ["--test-csv", "column 'num' is numeric in --csv"]),
        (lambda df: df.assign(y=["yes", "maybe"] * 10), ["--test-csv", "1 class(es)", "'maybe'", "'no', 'yes'"]),
        (lambda df: df.drop(columns=["y"]), ["--test-csv", "target='y'"]),
    ],
)
def test_bad_test_csv_is_one_line_before_anything_starts(tmp_path, capsys, no_h2o_side, change, names):
    train, test = _train_test_csv(tmp_path, change(_table_with_gaps()[60:].reset_index(drop=True)))
    _data_error(tmp_path, capsys, ["--csv", str(train), "--test-csv", str(test), "--target", "y"], *names)


def _npz(tmp_path, name, X, y):
    path = tmp_path / name
    np.savez(path, X=X, y=y)
    return path


@pytest.mark.parametrize(
    "X_test, y_test, names",
    [
        (np.zeros((10, 4, 3)), np.arange(10) % 3, ["--test-npz", "3 features per time step; --npz has 2"]),
        (np.zeros((10, 8)), np.arange(10) % 3, ["--test-npz", "is a table", "--npz holds sequences"]),
        (np.zeros((10, 4, 2)), np.arange(10) % 4, ["--test-npz", "class(es) that the training rows have not", "3"]),
        (np.zeros((10, 4, 2)), np.r_[np.nan, np.arange(9.0) % 3], ["--test-npz", "1 NaN", "[0]"]),
        (np.r_[np.full((1, 4, 2), np.nan), np.zeros((9, 4, 2))], np.arange(10) % 3,
         ["--test-npz", "all-NaN sequence(s)"]),
    ],
)
def test_bad_test_npz_is_one_line_before_anything_starts(tmp_path, capsys, no_h2o_side, X_test, y_test, names):
    from keras_ln.datasets import make_ragged_sequences

    X, y, _ = make_ragged_sequences(n_samples=30, min_timesteps=3, max_timesteps=6)
    train = _npz(tmp_path, "train.npz", X, y)
    test = _npz(tmp_path, "test.npz", X_test, y_test)
    _data_error(tmp_path, capsys, ["--npz", str(train), "--test-npz", str(test)], *names)


def test_a_class_too_rare_for_the_folds_of_the_training_file(tmp_path, capsys, no_h2o_side):
    df = _table_with_gaps()
    df.loc[:1, "y"] = "rare"  # 2 training rows; 5 folds need 5
    train, test = _train_test_csv(tmp_path)
    df[:60].to_csv(train, index=False)
    _data_error(tmp_path, capsys, ["--csv", str(train), "--test-csv", str(test), "--target", "y"],
                "--nfolds", "'rare'", "has 2")


def test_test_rows_of_a_csv_are_read_like_the_training_rows(tmp_path):
    df = _table_with_gaps()
    test = df[60:].reset_index(drop=True)[["y", "other", "cat", "num"]]  # another column order
    test["cat"] = [1, 2] * 10  # categories that look like numbers in the test rows
    train, test_path = _train_test_csv(tmp_path, test)
    args = cli.parse_args(["--csv", str(train), "--test-csv", str(test_path), "--target", "y", "--nfolds", "3"])
    data = _inputs.split(args, _inputs.load(args))
    assert list(data.X_test.columns) == ["num", "cat", "other"]
    assert data.X_test["cat"].tolist()[:2] == ["1", "2"]  # text, like the training column
    assert len(data.X_train) == len(data.y_train) == len(data.folds) == 60 and len(data.y_test) == 20
    assert set(data.folds) == {0, 1, 2}
    assert data.test_from == f"--test-csv {str(test_path)!r}"


def test_test_csv_end_to_end_without_h2o(tmp_path, capsys, no_h2o_side):
    """A CSV with a category and missing values, and the user's own test rows."""
    train, test = _train_test_csv(tmp_path)
    out = tmp_path / "reports"
    code = cli.main(["--csv", str(train), "--test-csv", str(test), "--target", "y", "--no-h2o", "--nfolds", "2",
                     "--max-models", "1", "--max-iter", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    board = pd.read_csv(out / "train" / "leaderboard.csv")
    net = board[board["model_id"] == "MLP_1_LN"]
    assert len(net) == 1 and net["test_auc"].between(0, 1).all()
    report = (out / "train" / "report.md").read_text()
    assert (f"60 for training and cross-validation (all rows of the main file), 20 for the test split, given by "
            f"the user (--test-csv {str(test)!r})") in report


def test_ragged_npz_with_its_test_npz_end_to_end_without_h2o(tmp_path, capsys, no_h2o_side):
    """Sequences of different lengths, NaN-padded; the test sequences padded to fewer steps than training's."""
    from keras_ln.datasets import make_ragged_sequences

    X, y, _ = make_ragged_sequences(n_samples=48, min_timesteps=3, max_timesteps=8, n_classes=2, random_state=0)
    train = _npz(tmp_path, "seqs.npz", X[:36], y[:36])
    test = _npz(tmp_path, "seqs_test.npz", X[36:, :6][np.isnan(X[36:, 6:, 0]).all(axis=1)], y[36:][
        np.isnan(X[36:, 6:, 0]).all(axis=1)])
    out = tmp_path / "reports"
    code = cli.main(["--npz", str(train), "--test-npz", str(test), "--no-h2o", "--nfolds", "2", "--max-models", "1",
                     "--max-iter", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    board = pd.read_csv(out / "seqs" / "leaderboard.csv")
    assert {"LSTM_1_LN", "LSTM_1_BN"} & set(board["model_id"])
    assert board["test_auc"].notna().all()
    report = (out / "seqs" / "report.md").read_text()
    assert "(36, 8, 2)" in report and "given by the user (--test-npz" in report


def test_a_drawn_split_is_described_with_its_size_and_seed(tmp_path):
    from integrations import _report

    ctx = dict(n_train=64, n_test=16, test_size=0.2, seed=3, task="binary", test_from=None)
    assert _report._rows_line(ctx) == ("- Rows: 64 for training and cross-validation, 16 held out for the test "
                                       "split, drawn at random (test_size=0.2, seed=3, stratified by class).")


def test_ragged_npz_split_keeps_the_padding(tmp_path):
    from keras_ln.datasets import make_ragged_sequences, sequence_lengths

    X, y, _ = make_ragged_sequences(n_samples=40, min_timesteps=3, max_timesteps=8, random_state=0)
    path = _npz(tmp_path, "seqs.npz", X, y)
    args = cli.parse_args(["--npz", str(path), "--nfolds", "2"])
    data = _inputs.split(args, _inputs.load(args))
    assert data.X_train.shape[1:] == (8, 2) and data.test_from is None
    lengths = sequence_lengths(data.X_train)
    assert lengths.min() < 8 and np.isnan(data.X_train[lengths < 8, -1]).all()


# ---------------------------------------------------------------------------
# What H2O receives (no cluster: the frame's data before it is uploaded)
# ---------------------------------------------------------------------------
def test_h2o_gets_the_padding_as_missing_values_and_categories_as_enums():
    pytest.importorskip("h2o")
    from integrations import _h2o
    from integrations._h2o import h2o_frame_data
    from keras_ln.datasets import make_ragged_sequences, sequence_lengths

    X, y, _ = make_ragged_sequences(n_samples=12, min_timesteps=3, max_timesteps=6, random_state=0)
    df, types = h2o_frame_data(X, y, task="multiclass", classes=np.unique(y), folds=np.arange(12) % 2)
    assert list(df.columns[:4]) == ["t0_f0", "t0_f1", "t1_f0", "t1_f1"] and df.shape == (12, 6 * 2 + 2)
    lengths = sequence_lengths(X)
    for i, t in enumerate(lengths):
        row = df.iloc[i, :12].to_numpy(dtype=float)
        assert not np.isnan(row[: 2 * t]).any() and np.isnan(row[2 * t:]).all()  # the padding: missing values
        np.testing.assert_array_equal(row[: 2 * t], X[i, :t].reshape(-1).astype(np.float64))
    assert all(types[c] == "real" for c in df.columns[:12]) and types["y"] == "enum" and types["fold"] == "int"

    table = _table_with_gaps(n=12).drop(columns=["y"])
    df, types = h2o_frame_data(table, task="binary")
    assert types == {"x0": "real", "x1": "enum", "x2": "real"}
    assert df["x0"].isna().sum() == table["num"].isna().sum() == 2
    missing = df["x1"] == _h2o.MISSING_CATEGORY  # what to_h2o_frame tells H2O to read as NA
    np.testing.assert_array_equal(missing, table["cat"].isna())
    assert missing.any() and set(df["x1"][~missing]) <= {"a", "b", "c"}

