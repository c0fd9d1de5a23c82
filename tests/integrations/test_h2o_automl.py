"""integrations.h2o_automl against a real local H2O cluster (small budgets).

One cluster is started for the module and shut down at its end (the teardown
asserts it is gone). H2O's own leaderboards are the reference for the
leaderboard columns and for the metric definitions.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

h2o = pytest.importorskip("h2o")  # the h2o extra; the test extra installs it in `make test`

from h2o.automl import H2OAutoML  # noqa: E402

from integrations import _h2o  # noqa: E402
from integrations._report import format_duration_ms  # noqa: E402
from integrations.h2o_automl import H2OSession, h2o_fold_assignment, main, to_h2o_frame  # noqa: E402
from keras_ln.automl import LEADERBOARD_COLUMNS, AutoML, h2o_metrics, make_folds  # noqa: E402
from keras_ln.datasets import load_breast_cancer, load_diabetes, load_wine, make_ragged_sequences  # noqa: E402

pytestmark = pytest.mark.h2o


def _answers(url):
    try:
        urllib.request.urlopen(url + "/3/Cloud", timeout=3).read()
        return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def cluster():
    session = H2OSession(nthreads=2, max_mem_size=1 << 30)
    with session:
        h2o.no_progress()
        assert session.started and session.is_running and _answers(session.url)
        ice_root, watchdog = session.ice_root, session.watchdog
        assert os.path.basename(ice_root).startswith("keras_ln_h2o_")
        # everything the JVM writes, its stdout/stderr files included, lives in that one folder
        assert os.path.dirname(session.server._stdout).startswith(ice_root + os.sep)
        assert watchdog is not None and watchdog._proc.poll() is None
        yield session
    assert not session.started
    assert not session.is_running, "the H2O cluster started by the tests is still running"
    assert not _answers(session.url)
    assert not os.path.exists(ice_root)
    assert watchdog._proc.returncode == 0  # told "done" after the clean shutdown; it did not act


def _tiny(task):
    rng = np.random.default_rng(0)
    if task == "binary":
        X, y, _ = load_breast_cancer()
        X, y = X[:, :6], y
    elif task == "multiclass":
        X, y, _ = load_wine()
        X = X[:, :3] + rng.normal(scale=X[:, :3].std(0), size=(len(X), 3))  # noisy: errors are not 0
    else:
        X, y, _ = load_diabetes()
    idx = rng.permutation(len(y))[:150]
    return X[idx], y[idx]


@pytest.fixture(scope="module", params=["binary", "multiclass", "regression"])
def h2o_run(request, cluster):
    """A GLM-only H2OAutoML with keras_ln's fold assignment as fold column."""
    task = request.param
    X, y = _tiny(task)
    classes = np.unique(y) if task != "regression" else None
    folds = make_folds(y, task, nfolds=3, seed=7)
    frame = to_h2o_frame(X, y, task=task, classes=classes, folds=folds)
    aml = H2OAutoML(max_models=1, include_algos=["GLM"], seed=1, keep_cross_validation_predictions=True,
                    verbosity=None)
    aml.train(x=[c for c in frame.columns if c not in ("y", "fold")], y="y", training_frame=frame,
              fold_column="fold")
    return task, X, y, classes, folds, frame, aml


def test_local_h2o_takes_the_cores_this_process_may_run_on(monkeypatch):
    """A local H2O's nthreads: the cores of this process's CPU affinity (as the keras_ln side's workers), at
    most 8; not the machine's count."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert _h2o._machine_resources()[0] == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    assert _h2o._machine_resources()[0] == 8


def test_leaderboard_columns_equal_h2os(h2o_run):
    task, X, y, classes, folds, _, aml = h2o_run
    h2o_columns = list(aml.leaderboard.columns)
    assert h2o_columns == LEADERBOARD_COLUMNS[task]
    ours = AutoML(max_models=1, seed=0, max_iter=2, normalizations=("layer",)).fit(X, y, folds=folds, task=task)
    assert list(ours.leaderboard_.columns)[: len(h2o_columns)] == h2o_columns


def test_metric_functions_reproduce_h2os_cv_metrics(h2o_run):
    task, X, y, classes, folds, frame, aml = h2o_run
    model = aml.leader
    holdout = _h2o._as_df(model.cross_validation_holdout_predictions())
    if task == "regression":
        pred = holdout["predict"].to_numpy()
    else:
        domain = frame["y"].levels()[0]
        pred = _h2o._h2o_pred_to_array(holdout, task, domain, _h2o._class_labels(len(classes)))
    ours = h2o_metrics(task, y, pred, classes)
    theirs = _h2o._as_df(aml.leaderboard).iloc[0]
    if task == "multiclass":
        assert theirs["mean_per_class_error"] > 0  # a case where the definition matters
    for name, value in ours.items():
        assert value == pytest.approx(theirs[name], rel=1e-6, abs=1e-9), name


def test_h2o_uses_the_same_fold_assignment(h2o_run):
    task, X, y, classes, folds, frame, aml = h2o_run
    assigned = h2o_fold_assignment(aml.leader, len(y))
    np.testing.assert_array_equal(assigned, folds)
    ours = AutoML(nfolds=3, seed=7)
    np.testing.assert_array_equal(make_folds(y, task, ours.nfolds, ours.seed), assigned)


def test_frames_follow_the_task(cluster):
    """--task decides how H2O reads an integer target: 12 classes (enum) or a number."""
    y = np.repeat(np.arange(12), 3)
    X = np.arange(len(y), dtype=float)[:, None]
    as_classes = to_h2o_frame(X, y, task="multiclass", classes=np.unique(y))
    as_numbers = to_h2o_frame(X, y, task="regression")
    assert as_classes["y"].isfactor()[0] and len(as_classes["y"].levels()[0]) == 12
    assert not as_numbers["y"].isfactor()[0] and as_numbers.type("y") in ("int", "real")
    h2o.remove([as_classes, as_numbers])


def test_padding_and_missing_values_reach_h2o_as_missing(cluster):
    """Shorter sequences' NaN padding and a table's gaps are NA in H2O; categories are enums."""
    X, y, _ = make_ragged_sequences(n_samples=12, min_timesteps=3, max_timesteps=6, random_state=0)
    frame = to_h2o_frame(X, y, task="multiclass", classes=np.unique(y))
    assert frame.nacnt()[:12] == np.isnan(X.reshape(12, -1)).sum(axis=0).tolist()
    assert sum(frame.nacnt()[:12]) > 0 and all(frame.types[f"t{t}_f{f}"] == "real" for t in range(6) for f in range(2))
    table = pd.DataFrame({"num": [1.0, np.nan, 3.0], "cat": ["a", None, "b"]})
    frame2 = to_h2o_frame(table, task="binary")
    assert frame2.nacnt() == [1, 1] and frame2.types["x0"] in ("int", "real") and frame2.types["x1"] == "enum"
    assert sorted(frame2["x1"].levels()[0]) == ["a", "b"]
    h2o.remove([frame, frame2])


def _tiny_csv(tmp_path):
    X, y, _ = load_breast_cancer()
    idx = np.random.default_rng(1).permutation(len(y))[:80]
    df = pd.DataFrame(X[idx][:, :5], columns=[f"f{i}" for i in range(5)])
    df["kind"] = np.where(X[idx][:, 5] > np.median(X[:, 5]), "wide", "narrow")
    df["diagnosis"] = np.where(y[idx] == 1, "benign", "malignant")
    path = tmp_path / "tiny.csv"
    df.to_csv(path, index=False)
    return path


def test_cli_against_a_connected_cluster_leaves_it_running(cluster, tmp_path, capsys):
    path = _tiny_csv(tmp_path)
    out = tmp_path / "reports"
    code = main(["--csv", str(path), "--target", "diagnosis", "--h2o-url", cluster.url, "--max-models", "2",
                 "--max-runtime-secs", "120", "--nfolds", "2", "--max-iter", "2", "--seed", "3",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert cluster.is_running and _answers(cluster.url)  # connected, so never shut down
    board = pd.read_csv(out / "tiny" / "leaderboard.csv")
    assert set(board["source"]) == {"keras_ln", "h2o"}
    assert list(board.columns[2:8]) == LEADERBOARD_COLUMNS["binary"][1:]
    assert {"normalization", "test_auc", "test_logloss"} <= set(board.columns)
    assert board["auc"].is_monotonic_decreasing and board["test_auc"].between(0, 1).all()
    report = (out / "tiny" / "report.md").read_text()
    assert "identical to keras_ln's: **yes**" in report
    assert not re.search(r"\d[eE][+-]?\d", report)  # H2O's training_time_ms once read 1.531e+04
    h2o_ms = board.loc[board["source"] == "h2o", "training_time_ms"].iloc[0]
    cells = {c.strip() for line in report.splitlines() if line.startswith("|") for c in line.split("|")}
    assert format_duration_ms(h2o_ms) in cells and re.fullmatch(r"[\d.]+ m?s", format_duration_ms(h2o_ms))
    for png in ("metric_by_model.png", "normalization_folds.png", "learning_curves.png"):
        assert (out / "tiny" / png).stat().st_size > 5000
    assert "Leaderboard for tiny" in printed and "h2o" in printed


def test_h2o_project_is_continued_by_a_second_run(cluster, tmp_path, capsys):
    """--h2o-project on a connected cluster: the project stays after the run, and a second run with the same
    name adds its models to that H2O AutoML project's leaderboard."""
    path = _tiny_csv(tmp_path)
    project = "keras_ln_test_continued"
    argv = ["--csv", str(path), "--target", "diagnosis", "--h2o-url", cluster.url, "--h2o-project", project,
            "--max-models", "2", "--max-runtime-secs", "60", "--nfolds", "2", "--max-iter", "2", "--seed", "3"]
    try:
        assert main(argv + ["--out", str(tmp_path / "first")]) == 0, capsys.readouterr().err
        first = pd.read_csv(tmp_path / "first" / "tiny" / "leaderboard.csv")
        kept = h2o.automl.get_automl(project)
        n_first = len(_h2o._as_df(kept.leaderboard))
        assert n_first == int((first["source"] == "h2o").sum()) >= 1
        assert main(argv + ["--out", str(tmp_path / "second")]) == 0, capsys.readouterr().err
        second = pd.read_csv(tmp_path / "second" / "tiny" / "leaderboard.csv")
        ids = set(second.loc[second["source"] == "h2o", "model_id"])
        assert ids > set(first.loc[first["source"] == "h2o", "model_id"])  # the first run's models, and more
    finally:
        with contextlib.suppress(Exception):
            h2o.remove(h2o.automl.get_automl(project), cascade=True)


def test_no_h2o_end_to_end(tmp_path, capsys):
    path = _tiny_csv(tmp_path)
    out = tmp_path / "reports"
    code = main(["--csv", str(path), "--target", "diagnosis", "--no-h2o", "--max-models", "2", "--nfolds", "2",
                 "--max-iter", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    board = pd.read_csv(out / "tiny" / "leaderboard.csv")
    assert set(board["source"]) == {"keras_ln"} and len(board) == 6
    # pandas reads "n/a" (the baselines' normalization) as NaN
    assert sorted(board["normalization"].fillna("n/a")) == ["batch", "ensemble", "ensemble", "layer", "n/a", "n/a"]
    assert {"Baseline_GLM", "Baseline_constant", "StackedEnsemble_AllModels",
            "StackedEnsemble_BestOfFamily"} <= set(board["model_id"])
    assert board["test_auc"].notna().all()  # every row, baselines and ensembles too, scored on the test split
    assert sorted(os.listdir(out)) == ["tiny", "tiny.study.db"]  # no partial folders left behind; the study
    assert sorted(os.listdir(out / "tiny")) == ["leaderboard.csv", "learning_curves.png", "metric_by_model.png",
                                                "normalization_folds.png", "report.md", "verdict.csv",
                                                "verdict.png"]
    text = (out / "tiny" / "report.md").read_text()
    assert "keras_ln nets: the epochs searched among a quarter, half and all of max_iter=2" in text
    verdict = pd.read_csv(out / "tiny" / "verdict.csv")
    assert sorted(verdict["pair"]) == ["layer-batch", "layer-batch"]  # two nets: one configuration, two norms
    assert sorted(verdict["scope"]) == ["all configurations", "best configuration"]
    assert (verdict["n_pairs"] == 2).all()  # 2 folds, 1 repeat


def test_status_and_resume(tmp_path, capsys, trained_models):
    """The study of a run (default: OUT/NAME.study.db): `status` prints its leaderboard; --resume trains no
    finished model again and writes the same leaderboard; --resume without a study is one error line."""
    from integrations.h2o_automl import status

    path = _tiny_csv(tmp_path)
    out = tmp_path / "reports"
    argv = ["--csv", str(path), "--target", "diagnosis", "--no-h2o", "--max-models", "3", "--nfolds", "2",
            "--max-iter", "2", "--out", str(out)]
    code = main(argv + ["--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: argument --resume: no study to resume") and err.count("\n") == 1
    assert not out.exists()
    assert main(argv) == 0
    first = pd.read_csv(out / "tiny" / "leaderboard.csv")
    capsys.readouterr()
    url = f"sqlite:///{out / 'tiny.study.db'}"
    assert status(["--storage", url]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("3 keras_ln model(s) finished") and "search ended (max_models)" in printed
    for model_id in first.loc[first["normalization"].isin(["layer", "batch", "none"]), "model_id"]:
        assert model_id in printed
    trained = trained_models
    trained.clear()  # the models trained from here on
    assert main(argv + ["--resume"]) == 0
    assert trained == []
    again = pd.read_csv(out / "tiny" / "leaderboard.csv")
    cols = [c for c in first.columns if "time" not in c]
    pd.testing.assert_frame_equal(again[cols], first[cols])
    assert status(["--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no such SQLite file" in capsys.readouterr().err


def test_cli_killed_with_sigkill_then_resumed(tmp_path, capsys, kill_after_models, trained_models):
    """The command killed with SIGKILL in the middle of keras_ln's search, then run again with --resume: no
    model that had finished is trained again, and the leaderboard equals an uninterrupted run's."""
    from keras_ln.automl import load_leaderboard

    path = _tiny_csv(tmp_path)
    argv = ["--csv", str(path), "--target", "diagnosis", "--no-h2o", "--max-models", "6", "--nfolds", "2",
            "--max-iter", "2"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0
    whole = pd.read_csv(tmp_path / "whole" / "tiny" / "leaderboard.csv")
    out = tmp_path / "reports"
    db = out / "tiny.study.db"
    _, seen = kill_after_models([sys.executable, "-m", "integrations.h2o_automl", *argv, "--out", str(out)], db, 2)
    done = set(load_leaderboard(f"sqlite:///{db}")["model_id"])
    assert done >= seen and 2 <= len(done) < 6 and not (out / "tiny").exists()  # no report from the killed run
    trained = trained_models
    trained.clear()  # the models trained from here on
    capsys.readouterr()
    assert main(argv + ["--out", str(out), "--resume"]) == 0
    assert trained and not set(trained) & done
    resumed = pd.read_csv(out / "tiny" / "leaderboard.csv")
    cols = [c for c in whole.columns if "time" not in c]
    pd.testing.assert_frame_equal(resumed[cols], whole[cols])


def test_no_h2o_sequences_with_repeats_verdict_and_claims(tmp_path, capsys):
    """--nrepeats and --claims: verdict.csv/png at the top of report.md, the claims section with a figure per
    claim (gradient flow: sequences), claims.csv; the console prints the verdict."""
    X, y = make_ragged_sequences(90, 4, 8, n_classes=2, random_state=0)[:2]
    np.savez(tmp_path / "seq.npz", X=X, y=y)
    out = tmp_path / "reports"
    code = main(["--npz", str(tmp_path / "seq.npz"), "--no-h2o", "--max-models", "3", "--nfolds", "2",
                 "--nrepeats", "2", "--max-iter", "2", "--claims", "--claims-secs", "60", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 0, err
    folder = out / "seq"
    files = set(os.listdir(folder))
    assert {"verdict.csv", "verdict.png", "claims.csv", "per_example.png", "gradient_flow.png", "convergence.png",
            "overhead.png", "batch_size.png"} <= files
    verdict = pd.read_csv(folder / "verdict.csv")
    assert list(verdict.columns) == ["pair", "metric", "scope", "mean_diff", "ci_low", "ci_high", "p_value",
                                     "n_pairs", "verdict"]
    assert set(verdict["pair"]) == {"layer-batch", "layer-none", "batch-none"}
    everything = verdict[verdict["scope"] == "all configurations"]
    assert (everything["n_pairs"] == 2 * 2).all()  # one configuration x 2 repeats x 2 folds
    text = (folder / "report.md").read_text()
    assert text.index("## Verdict on normalization") < text.index("## Run") < text.index("## Leaderboard")
    assert "## Claims made for layer normalization" in text and "### Recurrent stability" in text
    assert "2 repeat(s) of the folds" in text
    claims = pd.read_csv(folder / "claims.csv")
    assert {"per_example", "gradient_flow", "convergence", "overhead", "batch_size", "cost"} <= set(claims["claim"])
    for line in verdict["verdict"]:
        assert line in printed


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_exits_2_with_one_message(tmp_path, capsys):
    port = _closed_port()
    code = main(["--dataset", "wine", "--h2o-url", f"http://127.0.0.1:{port}", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: argument --h2o-url: cannot reach the H2O cluster at") and err.count("\n") == 1
    assert not os.listdir(tmp_path)


def test_missing_java_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    for var in ("JAVA_HOME", "H2O_JAVA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    code = main(["--dataset", "wine", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Java" in err and "--no-h2o" in err


def test_started_cluster_is_shut_down_on_ctrl_c(cluster):
    session = H2OSession(nthreads=1, max_mem_size=1 << 30)
    try:
        with pytest.raises(KeyboardInterrupt):
            with session:
                url, ice_root = session.url, session.ice_root
                assert session.is_running and url != cluster.url
                raise KeyboardInterrupt
        assert not session.is_running and not _answers(url)
        assert not os.path.exists(ice_root) and session.watchdog is None
        assert cluster.is_running  # only the cluster this session started went down
    finally:
        h2o.connect(url=cluster.url, verbose=False)  # the module's tests go on with theirs


@pytest.mark.timeout(240)
def test_sigterm_shuts_down_the_cluster_the_run_started(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "integrations.h2o_automl", "--dataset", "digits", "--max-runtime-secs", "120",
         "--out", str(tmp_path / "r")],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        line = proc.stdout.readline()  # "H2O AutoML on ... rows (local cluster http://...)" once H2O is up
        url = re.search(r"local cluster (http://[^)\s]+)", line).group(1)
        assert _answers(url)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert code == 130, err
    assert "interrupted" in err
    assert not _answers(url)
    assert not (tmp_path / "r").exists() or not os.listdir(tmp_path / "r")
