"""The H2O side of the comparison: the cluster, the frames, H2O AutoML on keras_ln's folds.

A leaf that imports h2o at its top; `integrations.h2o_automl` imports it only
when a run uses H2O, so ``--no-h2o`` works without the h2o extra.

A cluster this module starts (`H2OSession` without ``url``) lives in one
temporary folder ``keras_ln_h2o_*`` (its ``ice_root`` and the JVM's stdout and
stderr files) and is shut down and the folder removed at the end, also on
errors and Ctrl-C. A watchdog process (`integrations._h2o_watchdog`) does the
same within seconds when this process is killed without a chance to clean up
(kill -9, the OOM killer). A cluster reached through ``url`` is never shut down
or watched.
"""

import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings

import h2o
import numpy as np
import pandas as pd
from h2o.automl import H2OAutoML
from h2o.backend import H2OLocalServer
from h2o.exceptions import H2OConnectionError, H2OError, H2OJobCancelled, H2OStartupError

from integrations._errors import CLIError
from integrations._h2o_watchdog import Watchdog, stop_jvms
from keras_ln.automl import LEADERBOARD_COLUMNS, categorical_columns, fold_metric, h2o_metrics, resolve_sort_metric
from keras_ln._system import available_cores

__all__ = ["H2OSession", "h2o_fold_assignment", "h2o_frame_data", "run_h2o", "to_h2o_frame"]


# ---------------------------------------------------------------------------
# The H2O cluster
# ---------------------------------------------------------------------------
def _machine_resources():
    """Threads and heap for a local H2O: the cores this process may run on (its CPU affinity; at most 8), a
    quarter of RAM in [1, 8] GiB."""
    nthreads = max(1, min(available_cores(), 8))
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


@contextlib.contextmanager
def _temporary_files_in(folder):
    """Make ``tempfile`` create its folders in ``folder`` meanwhile (h2o puts the JVM's stdout/stderr there)."""
    previous = tempfile.tempdir
    tempfile.tempdir = folder
    try:
        yield
    finally:
        tempfile.tempdir = previous


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class H2OSession:
    """Context manager: start a local H2O (and shut it down) or connect to ``url`` (left running).

    Attributes
    ----------
    started : bool
        True when this session launched the cluster itself.
    server : H2OLocalServer or None
    url : str
    ice_root : str or None
        The temporary folder of a cluster this session started.
    watchdog : Watchdog or None
        The process that takes a started cluster down should this process be killed.
    """

    def __init__(self, url=None, nthreads=None, max_mem_size=None, verbose=False):
        self.url, self.verbose = url, verbose
        default_threads, default_mem = _machine_resources()
        self.nthreads = nthreads or default_threads
        self.max_mem_size = max_mem_size or default_mem
        self.server, self.started, self.ice_root, self.watchdog = None, False, None, None

    def __enter__(self):
        if self.url:
            try:
                with _quiet(self.verbose):
                    h2o.connect(url=self.url, verbose=False, telemetry=False)
            except (H2OConnectionError, H2OError, OSError, ValueError) as exc:
                raise CLIError(f"argument --h2o-url: cannot reach the H2O cluster at {self.url}: "
                               f"{_first_line(exc)}") from None
            return self
        try:
            self._start()
        except H2OStartupError as exc:
            self._cleanup()
            msg = _first_line(exc)
            if "java" in msg.lower():
                raise CLIError(f"Java is needed to start H2O and was not found ({msg}). Install Java 17, "
                               "pass --h2o-url to use a running cluster, or --no-h2o.") from None
            raise CLIError(f"H2O failed to start: {msg}") from None
        except (H2OError, OSError) as exc:
            self._cleanup()
            raise CLIError(f"H2O failed to start: {_first_line(exc)}") from None
        except BaseException:
            self._cleanup()
            raise
        self.url = f"{self.server.scheme}://{self.server.ip}:{self.server.port}"
        return self

    def _start(self):
        self.ice_root = tempfile.mkdtemp(prefix="keras_ln_h2o_")
        if os.name == "posix":
            self.watchdog = Watchdog(self.ice_root)  # before the JVM exists: it finds the JVM by -ice_root
        with _temporary_files_in(self.ice_root):
            self.server = H2OLocalServer.start(
                nthreads=self.nthreads, max_mem_size=self.max_mem_size, ice_root=self.ice_root,
                name=f"keras_ln_{uuid.uuid4().hex[:8]}", port="54321+", verbose=False, bind_to_localhost=True,
            )
        self.started = True
        if self.watchdog is not None:
            self.watchdog.watch(self.server._process.pid)  # the Popen h2o launched the JVM with
        with _quiet(self.verbose):
            h2o.connect(server=self.server, verbose=False, telemetry=False)

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
        elif self.server is None and self.ice_root:
            with contextlib.suppress(Exception):  # a JVM launched by a start that then failed (timeout, Ctrl-C)
                stop_jvms(self.ice_root)
        if self.ice_root:
            shutil.rmtree(self.ice_root, ignore_errors=True)
            self.ice_root = None
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None

    def __exit__(self, *exc):
        self._cleanup()  # never shuts down a cluster reached through --h2o-url
        return False

    @property
    def is_running(self):
        """Whether the locally started server process still runs."""
        return self.server is not None and self.server.is_running()


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------
def _feature_names(X):
    if np.ndim(X) == 3:
        return [f"t{t}_f{f}" for t in range(X.shape[1]) for f in range(X.shape[2])]
    return [f"x{j}" for j in range(np.shape(X)[1])]


# A missing category as uploaded to H2O, read back as NA: h2o writes a pandas frame to a CSV in which NaN in a
# text column is the word "nan" and None a quoted empty string, both read as levels.
MISSING_CATEGORY = "__keras_ln_missing__"


def _class_labels(n_classes):
    width = len(str(n_classes - 1))
    return [f"class_{k:0{width}d}" for k in range(n_classes)]


def h2o_frame_data(X, y=None, *, task, classes=None, folds=None):
    """The pandas DataFrame and column types that `to_h2o_frame` sends to H2O (no cluster needed).

    X's columns are named by position (``x<j>``; ``t<t>_f<f>`` for sequences,
    flattened to T × F columns). NaN (the padding of shorter sequences, a
    table's missing values) stay NaN, which H2O reads as missing. A
    DataFrame's categorical columns (`keras_ln.automl.categorical_columns`)
    are sent as text, typed "enum", with missing values as `MISSING_CATEGORY`
    (which `to_h2o_frame` names as H2O's ``na_strings``); every other
    column is typed "real" (so that a column all missing in the test rows,
    such as the last steps of short sequences, is still a number).
    """
    types = {}
    if isinstance(X, pd.DataFrame):
        categorical = set(categorical_columns(X))
        df = pd.DataFrame(index=pd.RangeIndex(len(X)))
        for name, col in zip(_feature_names(X), X.columns):
            values = X[col]
            if col in categorical:
                text = values.astype(object).to_numpy()
                missing = pd.isna(text)
                text = text.astype(str).astype(object)
                text[missing] = MISSING_CATEGORY  # NA in H2O (na_strings); NaN or None would become a level
                df[name] = text
                types[name] = "enum"
            else:
                df[name] = values.to_numpy(dtype=np.float64)
                types[name] = "real"
    else:
        X = np.asarray(X)
        df = pd.DataFrame(X.reshape(len(X), -1).astype(np.float64), columns=_feature_names(X))
        types.update(dict.fromkeys(df.columns, "real"))
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
    return df, types


def to_h2o_frame(X, y=None, *, task, classes=None, folds=None):
    """An H2OFrame of X (sequences flattened to T × F columns), y as "y" and folds as "fold".

    Classification labels are sent as ``class_<index into classes>`` so that
    H2O's (sorted) domain has the order of ``classes``; ``task`` decides
    whether "y" is an enum (classification) or a number (regression). The
    frame's data and types are `h2o_frame_data`'s.
    """
    df, types = h2o_frame_data(X, y, task=task, classes=classes, folds=folds)
    return h2o.H2OFrame(df, column_types=types or None, na_strings=[MISSING_CATEGORY])


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


def _fold_scores(model_id, group, y, cv_pred, folds, task, classes, col):
    rows = []
    for k in np.unique(folds):
        mask = folds == k
        value = fold_metric(task, y[mask], cv_pred[mask], classes, col)
        rows.append({"model_id": model_id, "group": group, "fold": int(k), col: value})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# H2O AutoML
# ---------------------------------------------------------------------------
def run_h2o(data, args, out):
    """H2OAutoML on ``data``'s training rows with its folds, in a local or connected cluster.

    Returns ``(board, fold_scores, fold_check, seconds, description)``; H2O's
    failures become CLIError, a cancelled job KeyboardInterrupt.
    """
    try:
        with H2OSession(url=args.h2o_url) as session:
            h2o.no_progress() if not out.isatty() else h2o.show_progress()
            where = f"connected to {session.url}" if args.h2o_url else f"local cluster {session.url}"
            print(f"H2O AutoML on {len(data.y_train)} rows ({where})", file=out, flush=True)
            board, fold_scores, check, seconds = _automl(data, args)
            desc = (f"{h2o.__version__}, " + (f"existing cluster at {args.h2o_url}" if args.h2o_url else
                                             f"local cluster started for this run, nthreads={session.nthreads}"))
    except H2OJobCancelled:  # Ctrl-C during an H2O job cancels it, then lands here
        raise KeyboardInterrupt from None
    except H2OError as exc:
        raise CLIError(f"H2O failed: {_first_line(exc)}") from None
    return board, fold_scores, {True: "yes", False: "NO", None: "could not be read"}[check], seconds, desc


def _automl(data, args):
    task, classes, folds = data.task, data.classes, data.folds
    train = to_h2o_frame(data.X_train, data.y_train, task=task, classes=classes, folds=folds)
    test = to_h2o_frame(data.X_test, task=task)
    aml = H2OAutoML(
        max_models=args.max_models, max_runtime_secs=int(np.ceil(args.max_runtime_secs)), seed=args.seed,
        sort_metric=args.sort_metric, keep_cross_validation_predictions=True,
        project_name=args.h2o_project or f"keras_ln_{uuid.uuid4().hex[:8]}", verbosity=None,
    )
    try:
        t0 = time.monotonic()
        aml.train(x=_feature_names(data.X_train), y="y", training_frame=train, fold_column="fold")
        seconds = time.monotonic() - t0
        board, fold_scores, check = _score(aml, train, test, data, args)
        return board, fold_scores, check, seconds
    finally:
        if args.h2o_url and not args.h2o_project:  # leave a shared cluster as we found it: drop our frames,
            # models and AutoML run (a named project stays, to be continued)
            with contextlib.suppress(Exception):
                h2o.remove(aml, cascade=True)
            with contextlib.suppress(Exception):
                h2o.remove([train, test])


def _score(aml, train, test, data, args):
    """Every model of H2O's leaderboard scored on the test split; one model's fold scores; the fold check."""
    task, classes, folds = data.task, data.classes, data.folds
    lb = _as_df(h2o.automl.get_leaderboard(aml, extra_columns="ALL"))
    if len(lb) == 0:
        print(f"H2O AutoML finished no model within max_runtime_secs={args.max_runtime_secs:g}", file=sys.stderr)
        return pd.DataFrame(), None, None
    missing = [c for c in LEADERBOARD_COLUMNS[task] if c not in lb.columns]
    if missing:
        raise CLIError(f"H2O's leaderboard lacks the expected columns {missing}; got {list(lb.columns)}")
    domain = train["y"].levels()[0] if task != "regression" else None
    labels = _class_labels(len(classes)) if task != "regression" else None

    rows, fold_scores, fold_check = [], None, None
    sort_col, _ = resolve_sort_metric(task, args.sort_metric)
    for _, r in lb.iterrows():
        model = h2o.get_model(r["model_id"])
        row = {"source": "h2o", "model_id": r["model_id"], **{c: r[c] for c in LEADERBOARD_COLUMNS[task][1:]},
               "normalization": "n/a", "algo": r.get("algo", ""),
               "training_time_ms": r.get("training_time_ms", np.nan),
               "predict_time_per_row_ms": r.get("predict_time_per_row_ms", np.nan)}
        frame = model.predict(test)
        pred = _as_df(frame)
        h2o.remove(frame)
        test_pred = _h2o_pred_to_array(pred, task, domain, labels)
        row.update({f"test_{k}": v for k, v in h2o_metrics(task, data.y_test, test_pred, classes).items()})
        rows.append(row)
        if fold_check is None and r.get("algo") != "StackedEnsemble":
            with contextlib.suppress(Exception):
                fold_check = bool(np.array_equal(h2o_fold_assignment(model, len(folds)), folds))
        if fold_scores is None:
            with contextlib.suppress(Exception):
                holdout = _as_df(model.cross_validation_holdout_predictions())
                cv_pred = _h2o_pred_to_array(holdout, task, domain, labels)
                fold_scores = _fold_scores(r["model_id"], "h2o", data.y_train, cv_pred, folds, task, classes,
                                           sort_col)
    return pd.DataFrame(rows), fold_scores, fold_check
