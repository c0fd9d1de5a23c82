"""keras_ln's AutoML against H2O AutoML: same training rows, same folds, same test split.

Usage::

    python -m integrations.h2o_automl --dataset breast_cancer --max-models 6 --max-runtime-secs 60
    python -m integrations.h2o_automl --csv data.csv --target label --h2o-url http://h2o-head:54321
    python -m integrations.h2o_automl --npz seqs.npz --no-h2o

The run holds out a test split (stratified for classification), assigns the
training rows to folds once (``keras_ln.automl.make_folds``), runs H2OAutoML
with that assignment as its ``fold_column`` and keras_ln's `AutoML` with the
same ``folds``, scores every model of both on the test split with the same
metric functions, and writes ``<out>/<dataset>/``: leaderboard.csv, report.md
and PNG plots. Sequences reach H2O flattened (T × F columns).

H2O: a local cluster started from the h2o package's bundled jar (threads and
memory sized for the machine), shut down at the end, also on errors and
Ctrl-C; or ``--h2o-url`` to use an existing cluster, which is never shut down.
Exit status 2 with one message when Java is missing, H2O fails to start, the
URL is unreachable or the input is bad.
"""

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before keras_ln brings in TensorFlow

import h2o  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from h2o.automl import H2OAutoML  # noqa: E402
from h2o.backend import H2OLocalServer  # noqa: E402
from h2o.exceptions import H2OConnectionError, H2OError, H2OJobCancelled, H2OStartupError  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from integrations._report import write_report  # noqa: E402
from keras_ln import datasets  # noqa: E402
from keras_ln.automl import LEADERBOARD_COLUMNS, AutoML, h2o_metrics, make_folds, resolve_sort_metric  # noqa: E402

__all__ = ["H2OSession", "h2o_fold_assignment", "main", "run", "to_h2o_frame"]

EXIT_ENV = 2  # Java missing, H2O failing, unreachable URL, bad input


class CLIError(Exception):
    """An error reported as one message and exit status 2."""


# ---------------------------------------------------------------------------
# The H2O cluster
# ---------------------------------------------------------------------------
def _machine_resources():
    """Threads and heap for a local H2O: all cores (at most 8), a quarter of RAM in [1, 8] GiB."""
    nthreads = max(1, min(os.cpu_count() or 1, 8))
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 4 << 30
    mem = int(min(8 << 30, max(1 << 30, ram // 4)))
    return nthreads, mem


@contextlib.contextmanager
def _quiet(verbose):
    """Keep h2o's connection chatter (version-age notices) off stdout."""
    if verbose:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


class H2OSession:
    """Context manager: start a local H2O (and shut it down) or connect to ``url`` (left running).

    Attributes
    ----------
    started : bool
        True when this session launched the cluster itself.
    server : H2OLocalServer or None
    url : str
    """

    def __init__(self, url=None, nthreads=None, max_mem_size=None, verbose=False):
        self.url, self.verbose = url, verbose
        default_threads, default_mem = _machine_resources()
        self.nthreads = nthreads or default_threads
        self.max_mem_size = max_mem_size or default_mem
        self.server, self.started, self._ice = None, False, None

    def __enter__(self):
        if self.url:
            try:
                with _quiet(self.verbose):
                    h2o.connect(url=self.url, verbose=False, telemetry=False)
            except (H2OConnectionError, H2OError, OSError, ValueError) as exc:
                raise CLIError(f"Cannot reach the H2O cluster at --h2o-url {self.url}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            return self
        self._ice = tempfile.mkdtemp(prefix="keras_ln_h2o_")
        try:
            self.server = H2OLocalServer.start(
                nthreads=self.nthreads, max_mem_size=self.max_mem_size, ice_root=self._ice,
                name=f"keras_ln_{uuid.uuid4().hex[:8]}", port="54321+", verbose=False, bind_to_localhost=True,
            )
            self.started = True
            with _quiet(self.verbose):
                h2o.connect(server=self.server, verbose=False, telemetry=False)
        except H2OStartupError as exc:
            self._cleanup()
            msg = str(exc).splitlines()[0] if str(exc) else "unknown reason"
            if "java" in msg.lower():
                raise CLIError(f"Java is needed to start H2O and was not found ({msg}). Install Java 17, "
                               "pass --h2o-url to use a running cluster, or --no-h2o.") from None
            raise CLIError(f"H2O failed to start: {msg}") from None
        except (H2OError, OSError) as exc:
            self._cleanup()
            raise CLIError(f"H2O failed to start: {exc}") from None
        except BaseException:
            self._cleanup()
            raise
        self.url = f"{self.server.scheme}://{self.server.ip}:{self.server.port}"
        return self

    def _cleanup(self):
        if self.started:
            with contextlib.suppress(Exception):
                h2o.cluster().shutdown()
            if self.server is not None:
                for _ in range(50):  # give the JVM 10 s to exit after the REST shutdown
                    if not self.server.is_running():
                        break
                    time.sleep(0.2)
                with contextlib.suppress(Exception):
                    self.server.shutdown()
            self.started = False
        if self._ice:
            shutil.rmtree(self._ice, ignore_errors=True)
            self._ice = None

    def __exit__(self, *exc):
        self._cleanup()  # never shuts down a cluster reached through --h2o-url
        return False

    @property
    def is_running(self):
        """Whether the locally started server process still runs."""
        return self.server is not None and self.server.is_running()


def _feature_names(X):
    if X.ndim == 3:
        return [f"t{t}_f{f}" for t in range(X.shape[1]) for f in range(X.shape[2])]
    return [f"x{j}" for j in range(X.shape[1])]


def _class_labels(n_classes):
    width = len(str(n_classes - 1))
    return [f"class_{k:0{width}d}" for k in range(n_classes)]


def to_h2o_frame(X, y=None, *, task, classes=None, folds=None):
    """An H2OFrame of X (sequences flattened to T × F columns), y as "y" and folds as "fold".

    Classification labels are sent as ``class_<index into classes>`` so that
    H2O's (sorted) domain has the order of ``classes``.
    """
    X = np.asarray(X)
    df = pd.DataFrame(X.reshape(len(X), -1).astype(np.float64), columns=_feature_names(X))
    types = {}
    if y is not None:
        if task == "regression":
            df["y"] = np.asarray(y, dtype=np.float64)
        else:
            index = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
            labels = _class_labels(len(classes))
            df["y"] = [labels[index[v]] for v in np.asarray(y).tolist()]
            types["y"] = "enum"
    if folds is not None:
        df["fold"] = np.asarray(folds, dtype=np.int64)
        types["fold"] = "int"
    return h2o.H2OFrame(df, column_types=types or None)


# ---------------------------------------------------------------------------
# The two searches
# ---------------------------------------------------------------------------
def _metric_cols(task):
    return LEADERBOARD_COLUMNS[task][1:]


def run_h2o(X_train, y_train, X_test, y_test, folds, *, task, classes, args):
    """H2OAutoML on the training rows with ``folds`` as fold column; every model scored on the test split."""
    train = to_h2o_frame(X_train, y_train, task=task, classes=classes, folds=folds)
    test = to_h2o_frame(X_test, task=task)
    features = _feature_names(np.asarray(X_train))
    aml = H2OAutoML(
        max_models=args.max_models, max_runtime_secs=int(np.ceil(args.max_runtime_secs)), seed=args.seed,
        sort_metric=args.sort_metric, keep_cross_validation_predictions=True,
        project_name=f"keras_ln_{uuid.uuid4().hex[:8]}",
        verbosity=None,
    )
    try:
        return _train_and_score(aml, train, test, features, y_train, y_test, folds, task, classes, args)
    finally:
        if args.h2o_url:  # leave a shared cluster as we found it: drop our frames, models and AutoML run
            with contextlib.suppress(Exception):
                h2o.remove(aml, cascade=True)
            with contextlib.suppress(Exception):
                h2o.remove([train, test])


def _train_and_score(aml, train, test, features, y_train, y_test, folds, task, classes, args):
    t0 = time.monotonic()
    aml.train(x=features, y="y", training_frame=train, fold_column="fold")
    runtime = time.monotonic() - t0
    lb = _as_df(h2o.automl.get_leaderboard(aml, extra_columns="ALL"))
    metric_cols = _metric_cols(task)
    if len(lb) == 0:
        print(f"H2O AutoML finished no model within max_runtime_secs={args.max_runtime_secs:g}",
              file=sys.stderr)
        return pd.DataFrame(), None, None, runtime, aml
    missing = [c for c in LEADERBOARD_COLUMNS[task] if c not in lb.columns]
    if missing:
        raise CLIError(f"H2O's leaderboard lacks the expected columns {missing}; got {list(lb.columns)}")
    domain = train["y"].levels()[0] if task != "regression" else None
    labels = _class_labels(len(classes)) if task != "regression" else None

    rows, fold_scores, fold_check = [], None, None
    sort_col, _ = resolve_sort_metric(task, args.sort_metric)
    for _, r in lb.iterrows():
        model = h2o.get_model(r["model_id"])
        row = {"source": "h2o", "model_id": r["model_id"], **{c: r[c] for c in metric_cols},
               "normalization": "n/a", "algo": r.get("algo", ""),
               "training_time_ms": r.get("training_time_ms", np.nan),
               "predict_time_per_row_ms": r.get("predict_time_per_row_ms", np.nan)}
        frame = model.predict(test)
        pred = _as_df(frame)
        h2o.remove(frame)
        test_pred = _h2o_pred_to_array(pred, task, domain, labels)
        row.update({f"test_{k}": v for k, v in h2o_metrics(task, y_test, test_pred, classes).items()})
        rows.append(row)
        if fold_check is None and r.get("algo") != "StackedEnsemble":
            with contextlib.suppress(Exception):
                fold_check = bool(np.array_equal(h2o_fold_assignment(model, len(folds)), folds))
        if fold_scores is None:
            with contextlib.suppress(Exception):
                holdout = _as_df(model.cross_validation_holdout_predictions())
                cv_pred = _h2o_pred_to_array(holdout, task, domain, labels)
                fold_scores = _fold_scores(r["model_id"], "h2o", y_train, cv_pred, folds, task, classes, sort_col)
    return pd.DataFrame(rows), fold_scores, fold_check, runtime, aml


def h2o_fold_assignment(model, n_rows):
    """The fold H2O held each training row out in, read from the model's per-fold CV predictions.

    Each of ``model.cross_validation_predictions()`` (one frame per fold, needs
    ``keep_cross_validation_predictions=True``) is non-zero only on the rows
    that fold held out; rows no fold held out get -1.
    """
    assigned = np.full(n_rows, -1)
    for k, frame in enumerate(model.cross_validation_predictions()):
        values = _as_df(frame)
        values = values.iloc[:, 1:] if values.shape[1] > 1 else values
        held_out = np.abs(values.to_numpy(dtype=float)).sum(axis=1) > 0
        assigned[held_out] = k
    return assigned


def _as_df(frame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # H2ODependencyWarning about single-threaded conversion
        return frame.as_data_frame(use_multi_thread=False)


def _h2o_pred_to_array(pred, task, domain, labels):
    if task == "regression":
        return pred["predict"].to_numpy(dtype=float)
    cols = list(pred.columns[1:])
    order = [labels.index(d) for d in domain]  # domain label -> class index
    out = np.zeros((len(pred), len(labels)))
    out[:, order] = pred[cols].to_numpy(dtype=float)
    return out


def _fold_scores(model_id, group, y, cv_pred, folds, task, classes, col):
    rows = []
    for k in np.unique(folds):
        mask = folds == k
        if task == "binary" and len(np.unique(y[mask])) < 2:
            value = np.nan
        else:
            value = h2o_metrics(task, y[mask], cv_pred[mask], classes)[col]
        rows.append({"model_id": model_id, "group": group, "fold": int(k), col: value})
    return pd.DataFrame(rows)


def run_keras(X_train, y_train, X_test, y_test, folds, *, task, classes, args):
    """keras_ln's AutoML on the same rows and folds; every model refit and scored on the test split."""
    aml = AutoML(max_models=args.max_models, max_runtime_secs=args.max_runtime_secs, nfolds=args.nfolds,
                 seed=args.seed, sort_metric=args.sort_metric, max_iter=args.max_iter, refit="all",
                 verbose=1)
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # failures are printed once below
        aml.fit(X_train, y_train, folds=folds, task=task)
    runtime = time.monotonic() - t0
    for model_id, error in aml.failed_.items():
        print(f"keras_ln AutoML: {model_id} failed and was skipped: {error}", file=sys.stderr)
    if aml.leader is None:
        raise CLIError(f"keras_ln AutoML finished no model within --max-runtime-secs {args.max_runtime_secs:g}"
                       + (f"; failures: {aml.failed_}" if aml.failed_ else ""))
    rows = []
    for _, r in aml.leaderboard.iterrows():
        est = aml.models_[r["model_id"]]
        pred = est.predict_proba(X_test) if task != "regression" else est.predict(X_test)
        row = {"source": "keras_ln", **r.to_dict(), "algo": r["model_id"].split("_")[0]}
        row.update({f"test_{k}": v for k, v in h2o_metrics(task, y_test, pred, classes).items()})
        rows.append(row)
    fold_scores = aml.fold_scores_.rename(columns={"normalization": "group"})
    return pd.DataFrame(rows), fold_scores, runtime, aml


def _learning_curves(aml):
    curves = {}
    for norm in ("layer", "batch"):
        cand = aml.leaderboard[aml.leaderboard["normalization"] == norm]
        if len(cand):
            model_id = cand["model_id"].iloc[0]
            est = aml.models_[model_id]
            est = est[-1] if hasattr(est, "steps") else est
            curve = getattr(est, "loss_curve_", None)
            if curve is not None and len(curve):
                curves[norm] = (model_id, list(curve))
    return curves


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
def _fmt(df):
    return df.to_markdown(index=False, floatfmt=".4g")


def _markdown(ctx, board, fold_scores, sort_col):
    cv_cols = _metric_cols(ctx["task"])
    shown = ["source", "model_id", *cv_cols, f"test_{sort_col}", "normalization", "training_time_ms"]
    lines = [
        f"# keras_ln AutoML vs H2O AutoML: {ctx['dataset']}",
        "",
        f"- Task: **{ctx['task']}**; X of shape {ctx['shape']} "
        f"({'sequences, sent to H2O flattened to T × F columns' if ctx['sequence'] else 'tabular'}).",
        f"- Rows: {ctx['n_train']} for training and cross-validation, {ctx['n_test']} held out for the test "
        f"split (test_size={ctx['test_size']}, seed={ctx['seed']}).",
        f"- Folds: {ctx['nfolds']} ({'StratifiedKFold' if ctx['task'] != 'regression' else 'KFold'}, shuffled, "
        f"seed={ctx['seed']}), the same assignment for both sources (H2O's `fold_column`). "
        f"H2O's own fold assignment identical to keras_ln's: **{ctx['fold_check']}**.",
        f"- Budget per source: max_models={ctx['max_models']}, max_runtime_secs={ctx['max_runtime_secs']}; "
        f"keras_ln nets: max_iter={ctx['max_iter']} epochs with early stopping.",
        f"- Wall time: keras_ln {ctx['keras_secs']:.0f} s ({ctx['n_keras']} model(s), stopped by "
        f"{ctx['stopped_by']}); H2O {ctx['h2o_secs']}.",
        f"- H2O: {ctx['h2o']}.",
        *([f"- keras_ln models that failed and were skipped: "
           + "; ".join(f"`{k}` ({v[:200]})" for k, v in ctx["failed"].items())] if ctx["failed"] else []),
        "",
        f"## Leaderboard (sorted by cross-validated `{sort_col}`, like H2O's)",
        "",
        "CV columns are computed from cross-validated predictions (H2O's numbers for H2O's models, the same "
        "definitions for keras_ln's); `test_*` columns score every model, refit on all training rows, on the "
        "held-out split with one set of metric functions. All columns are in leaderboard.csv.",
        "",
        _fmt(board[[c for c in shown if c in board.columns]]),
        "",
        "## Layer vs batch normalization across folds",
        "",
    ]
    if fold_scores is not None and len(fold_scores):
        summary = (fold_scores.groupby("group")[sort_col].agg(["mean", "std", "min", "max", "count"])
                   .rename(columns={"count": "(model, fold) pairs"}).reset_index())
        lines += [f"`{sort_col}` per (model, fold) of each group (h2o: H2O's best model with holdout "
                  "predictions):", "", _fmt(summary), ""]
    best = []
    for norm in ("layer", "batch", "none"):
        cand = board[(board["source"] == "keras_ln") & (board["normalization"] == norm)]
        if len(cand):
            best.append(cand.iloc[0])
    h2o_rows = board[board["source"] == "h2o"]
    if len(h2o_rows):
        best.append(h2o_rows.iloc[0])
    if best:
        lines += ["Best model of each kind:", "",
                  _fmt(pd.DataFrame(best)[["source", "model_id", "normalization", sort_col, f"test_{sort_col}"]]), ""]
    lines += [
        "## Plots",
        "",
        "![metric of every model](metric_by_model.png)",
        "",
        "![normalization across folds](normalization_folds.png)",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Definitions",
        "",
        "Metrics as H2O defines them (`keras_ln.automl.h2o_metrics`): logloss with probabilities clipped at "
        "1e-15; classification mse = mean (1 − p(true class))²; binary mean_per_class_error at the threshold "
        "maximizing F1; aucpr by interpolating the PR curve between thresholds; regression "
        "mean_residual_deviance = mse (gaussian). training_time_ms: the refit on all training rows "
        "(keras_ln) / H2O's reported time; predict_time_per_row_ms from the CV predictions (keras_ln) / H2O.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m integrations.h2o_automl",
        description="keras_ln AutoML vs H2O AutoML on the same folds and test split; writes a report.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=sorted(datasets.DATASETS), help="a bundled/synthetic data set")
    src.add_argument("--csv", metavar="PATH", help="a CSV file (needs --target)")
    src.add_argument("--npz", metavar="PATH", help="an .npz holding X (n × T × F or n × F) and y")
    p.add_argument("--target", metavar="COL", help="target column of --csv")
    p.add_argument("--max-models", metavar="N", type=_positive_int, default=None, help="models per source (default: no cap)")
    p.add_argument("--max-runtime-secs", metavar="S", type=_positive_float, default=300.0,
                   help="per source; no new model starts after it (default: 300)")
    p.add_argument("--nfolds", metavar="K", type=_positive_int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--seed", metavar="S", type=int, default=1, help="seed for the split, the folds and the search (default: 1)")
    p.add_argument("--sort-metric", metavar="M", default="AUTO", help="as H2O's sort_metric (default: AUTO)")
    p.add_argument("--max-iter", metavar="EPOCHS", type=_positive_int, default=50, help="epochs per keras_ln fit (default: 50)")
    p.add_argument("--test-size", metavar="F", type=float, default=0.2, help="held-out share of the rows (default: 0.2)")
    p.add_argument("--h2o-url", metavar="URL", help="connect to this running H2O cluster instead of starting one")
    p.add_argument("--no-h2o", action="store_true", help="run the keras_ln side alone")
    p.add_argument("--out", metavar="DIR", default="reports", help="report folder (default: reports)")
    args = p.parse_args(argv)
    if args.csv and not args.target:
        p.error("--csv needs --target COL")
    if args.target and not args.csv:
        p.error("--target is only used with --csv")
    if args.nfolds < 2:
        p.error(f"--nfolds must be at least 2, got {args.nfolds}")
    if not 0 < args.test_size < 1:
        p.error(f"--test-size must be in (0, 1), got {args.test_size}")
    if args.no_h2o and args.h2o_url:
        p.error("--no-h2o and --h2o-url exclude each other")
    return args


def load_data(args):
    """(name, X, y, task) from --dataset, --csv or --npz; bad input raises CLIError."""
    try:
        if args.dataset:
            X, y, task = datasets.load(args.dataset)
            return args.dataset, X, y, task
        if args.csv:
            X, y, task = datasets.load_csv(args.csv, args.target)
            return os.path.splitext(os.path.basename(args.csv))[0], X, y, task
        X, y, task = datasets.load_npz(args.npz)
        return os.path.splitext(os.path.basename(args.npz))[0], X, y, task
    except (ValueError, FileNotFoundError) as exc:
        flag = "--csv" if args.csv else "--npz" if args.npz else "--dataset"
        raise CLIError(f"{flag}: {exc}") from None


def run(args, out=None):
    """The whole comparison; returns the report folder."""
    out = out or sys.stdout
    name, X, y, task = load_data(args)
    try:
        resolve_sort_metric(task, args.sort_metric)
    except ValueError as exc:
        raise CLIError(f"--sort-metric: {exc}") from None
    classes = np.unique(y) if task != "regression" else None
    if classes is not None:
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() < args.nfolds + 1:
            raise CLIError(f"the smallest class has {counts.min()} rows; --nfolds {args.nfolds} needs at "
                           f"least {args.nfolds + 1} per class (one for the test split).")
    elif len(y) < 2 * args.nfolds:
        raise CLIError(f"{len(y)} rows are too few for --nfolds {args.nfolds}")
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=args.test_size, random_state=args.seed, stratify=y if classes is not None else None)
    folds = make_folds(y_train, task, args.nfolds, args.seed)

    h2o_board, h2o_folds, fold_check, h2o_secs, h2o_desc = None, None, "not checked (--no-h2o)", None, "not run"
    if not args.no_h2o:
        with H2OSession(url=args.h2o_url) as session:
            h2o.no_progress() if not out.isatty() else h2o.show_progress()
            print(f"H2O AutoML on {len(y_train)} rows ({'connected to' if args.h2o_url else 'local cluster'} "
                  f"{session.url})", file=out, flush=True)
            h2o_board, h2o_folds, check, h2o_secs, _ = run_h2o(
                X_train, y_train, X_test, y_test, folds, task=task, classes=classes, args=args)
            fold_check = {True: "yes", False: "NO", None: "could not be read"}[check]
            h2o_desc = (f"{h2o.__version__}, {'existing cluster at ' + args.h2o_url if args.h2o_url else 'local cluster started for this run, nthreads=%d' % session.nthreads}")
    print(f"keras_ln AutoML on {len(y_train)} rows", file=out, flush=True)
    keras_board, keras_folds, keras_secs, aml = run_keras(
        X_train, y_train, X_test, y_test, folds, task=task, classes=classes, args=args)

    sort_col, descending = resolve_sort_metric(task, args.sort_metric)
    cv_cols = _metric_cols(task)
    columns = ["source", "model_id", *cv_cols, "normalization", "algo", "training_time_ms",
               "predict_time_per_row_ms", *[f"test_{c}" for c in cv_cols]]
    board = pd.concat([b for b in (keras_board, h2o_board) if b is not None and len(b)], ignore_index=True)
    board = board.reindex(columns=columns)
    board = board.sort_values(sort_col, ascending=not descending, kind="mergesort",
                              na_position="last").reset_index(drop=True)
    fold_scores = pd.concat([f for f in (keras_folds, h2o_folds) if f is not None], ignore_index=True)

    ctx = dict(dataset=name, task=task, shape=tuple(X.shape), sequence=X.ndim == 3, n_train=len(y_train),
               n_test=len(y_test), test_size=args.test_size, seed=args.seed, nfolds=args.nfolds,
               fold_check=fold_check, max_models=args.max_models, max_runtime_secs=args.max_runtime_secs,
               max_iter=args.max_iter, keras_secs=keras_secs, n_keras=len(keras_board),
               stopped_by=aml.stopped_by_, failed=aml.failed_, h2o_secs=f"{h2o_secs:.0f} s ({len(h2o_board)} model(s))"
               if h2o_secs is not None else "not run (--no-h2o)", h2o=h2o_desc)
    folder = write_report(args.out, name, board, fold_scores, _learning_curves(aml), task=task,
                          sort_metric=args.sort_metric, markdown=_markdown(ctx, board, fold_scores, sort_col))
    shown = ["source", "model_id", sort_col, *[c for c in cv_cols if c != sort_col][:2], f"test_{sort_col}",
             "normalization"]
    print(f"\nLeaderboard for {name} ({task}), sorted by CV {sort_col}:", file=out)
    print(board[[c for c in dict.fromkeys(shown)]].to_markdown(index=False, floatfmt=".4f"), file=out)
    print(f"\nReport: {os.path.join(folder, 'report.md')}", file=out, flush=True)
    return folder


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a killed job) cleans up like Ctrl-C


def main(argv=None):
    args = parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        run(args)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ENV
    except (KeyboardInterrupt, H2OJobCancelled):  # Ctrl-C during an H2O job cancels it, then lands here
        print("\ninterrupted; the H2O cluster started by this run (if any) was shut down, no report written",
              file=sys.stderr)
        return 130
    except H2OError as exc:
        print(f"error: H2O failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return EXIT_ENV
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
