"""keras_ln's AutoML against H2O AutoML: same training rows, same folds, same test split.

Usage::

    python -m integrations.h2o_automl --dataset breast_cancer --max-models 6 --max-runtime-secs 60
    python -m integrations.h2o_automl --csv data.csv --target label --h2o-url http://h2o-head:54321
    python -m integrations.h2o_automl --npz seqs.npz --no-h2o
    python -m integrations.h2o_automl --csv train.csv --test-csv test.csv --target label

The run holds out a test split (stratified for classification; or takes the
user's own with ``--test-csv``/``--test-npz``, the main file then being all
training rows), assigns the training rows to folds once
(``keras_ln.automl.make_folds``), runs H2OAutoML with that assignment as its
``fold_column`` and keras_ln's `AutoML` with the same ``folds``, scores every
model of both on the test rows with the same metric functions, and writes
``<out>/<dataset>/``: leaderboard.csv, report.md and PNG plots. Sequences
reach H2O flattened (T × F columns; the NaN padding of shorter sequences as
missing values); a CSV's columns reach H2O as they are (categories as enums,
missing values as NA) and keras_ln's AutoML imputes and encodes them inside
every model.

Bad input is one line on stderr naming the argument and what was received,
exit status 2, before H2O is started or anything is written
(`integrations._inputs`); so are a missing Java, H2O failing to start and an
unreachable ``--h2o-url``. ``--help`` and argument errors import nothing heavy;
TensorFlow comes with the data, h2o only when H2O runs (`integrations._imports`).

H2O: a local cluster started from the h2o package's bundled jar, shut down at
the end, also on errors, Ctrl-C and SIGTERM, and by a watchdog process when
this one is killed outright (`integrations._h2o`); or ``--h2o-url`` to use an
existing cluster, which is never shut down.
"""

import argparse
import os
import signal
import sys
import threading
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything brings in TensorFlow

from integrations import _imports, _inputs  # noqa: E402
from integrations._errors import EXIT_USAGE, CLIError  # noqa: E402

__all__ = ["H2OSession", "h2o_fold_assignment", "main", "parse_args", "run", "to_h2o_frame"]

EXIT_ENV = EXIT_USAGE  # kept for callers of the earlier name
DEFAULT_TEST_SIZE = 0.2
_H2O_NAMES = ("H2OSession", "h2o_fold_assignment", "to_h2o_frame")


def __getattr__(name):
    """The H2O side's public names, imported (with h2o) on first use."""
    if name in _H2O_NAMES:
        return getattr(_imports.h2o_side(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------
# keras_ln's side
# ---------------------------------------------------------------------------
def run_keras(data, args):
    """keras_ln's AutoML on ``data``'s training rows and folds; every model refit and scored on the test split."""
    import pandas as pd

    automl = _imports.keras_ln("keras_ln.automl")
    task, X_test = data.task, data.X_test
    aml = automl.AutoML(max_models=args.max_models, max_runtime_secs=args.max_runtime_secs, nfolds=args.nfolds,
                        seed=args.seed, sort_metric=args.sort_metric, n_repeats=args.nrepeats,
                        max_iter=args.max_iter, early_stopping=args.early_stopping, refit="all",
                        storage=data.storage, study_name=data.study_name,
                        resume=bool(args.resume), dask_scheduler=args.dask_scheduler,
                        n_jobs=args.n_jobs or (None if args.dask_scheduler else 1),
                        verbose=1)
    if not args.storage:
        os.makedirs(args.out, exist_ok=True)  # for the default SQLite study
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # failures are printed once below
        try:
            aml.fit(data.X_train, data.y_train, folds=data.folds, task=task)
        except ValueError as exc:
            if str(exc).startswith("Cannot resume"):
                raise CLIError(f"argument --resume: {' '.join(str(exc).split())}") from None
            raise
    runtime = time.monotonic() - t0
    for model_id, error in aml.failed_.items():
        print(f"keras_ln AutoML: {model_id} failed and was skipped: {error}", file=sys.stderr)
    if aml.leader_ is None:
        raise CLIError(f"keras_ln AutoML finished no model within --max-runtime-secs {args.max_runtime_secs:g}"
                       + (f"; failures: {aml.failed_}" if aml.failed_ else ""))
    rows = []
    for _, r in aml.leaderboard_.iterrows():
        est = aml.models_[r["model_id"]]
        pred = est.predict_proba(X_test) if task != "regression" else est.predict(X_test)
        row = {"source": "keras_ln", **r.to_dict(), "algo": r["model_id"].split("_")[0]}
        row.update({f"test_{k}": v for k, v in automl.h2o_metrics(task, data.y_test, pred, data.classes).items()})
        rows.append(row)
    fold_scores = aml.fold_scores_.rename(columns={"normalization": "group"})
    return pd.DataFrame(rows), fold_scores, runtime, aml


def _learning_curves(aml):
    curves = {}
    for norm in ("layer", "batch"):
        cand = aml.leaderboard_[aml.leaderboard_["normalization"] == norm]
        if len(cand):
            model_id = cand["model_id"].iloc[0]
            est = aml.models_[model_id]
            est = est[-1] if hasattr(est, "steps") else est
            curve = getattr(est, "loss_curve_", None)
            if curve is not None and len(curve):
                curves[norm] = (model_id, list(curve))
    return curves


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is in --help)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {' '.join(message.split())} (see --help)\n")


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


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def parse_args(argv=None):
    """The command line, checked as far as it can be without reading the data (standard library only)."""
    p = _Parser(
        prog="python -m integrations.h2o_automl",
        description="keras_ln AutoML vs H2O AutoML on the same folds and test split; writes a report.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=_inputs.DATASET_NAMES, help="a bundled/synthetic data set")
    src.add_argument("--csv", metavar="PATH", help="a CSV file (needs --target)")
    src.add_argument("--npz", metavar="PATH", help="an .npz holding X (n × T × F or n × F) and y")
    p.add_argument("--target", metavar="COL", help="target column of --csv (and --test-csv)")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--test-csv", metavar="PATH",
                      help="the test rows, with --csv: same columns; --csv is then all training rows (no --test-size)")
    test.add_argument("--test-npz", metavar="PATH",
                      help="the test rows, with --npz: same features (per time step); --npz is then all training "
                           "rows (no --test-size)")
    p.add_argument("--task", choices=_inputs.TASKS,
                   help="read the target this way instead of inferring it (text or at most 10 integer "
                        "values: classes; other numbers: regression)")
    p.add_argument("--max-models", metavar="N", type=_positive_int, default=None,
                   help="models per source (default: no cap)")
    p.add_argument("--max-runtime-secs", metavar="S", type=_positive_float, default=300.0,
                   help="per source; no new model starts after it (default: 300)")
    p.add_argument("--nfolds", metavar="K", type=_positive_int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--nrepeats", metavar="R", type=_positive_int, default=1,
                   help="keras_ln: draw the folds R times and train every model on each repeat's folds, for the "
                        "normalization verdict (the first repeat is H2O's folds and fills the leaderboard; "
                        "R times the training; default: 1)")
    p.add_argument("--claims", action=argparse.BooleanOptionalAction, default=False,
                   help="measure the claims made for layer normalization (per-example statistics, batch size, "
                        "convergence, gradient flow of sequences, overhead) on the best net of each "
                        "normalization, after the search (default: --no-claims)")
    p.add_argument("--claims-secs", metavar="S", type=_positive_float, default=120.0,
                   help="time budget of --claims; no new fit starts after it (default: 120)")
    p.add_argument("--seed", metavar="S", type=int, default=1,
                   help="seed for the split, the folds and the search (default: 1)")
    p.add_argument("--sort-metric", metavar="M", default="AUTO", help="as H2O's sort_metric (default: AUTO)")
    p.add_argument("--max-iter", metavar="EPOCHS", type=_positive_int, default=50,
                   help="epochs per keras_ln fit (default: 50)")
    p.add_argument("--early-stopping", action=argparse.BooleanOptionalAction, default=False,
                   help="keras_ln: stop each fit on the loss of 10%% of its training fold (folds of 500 rows or "
                        "more); by default every row trains and the epochs (a quarter, half or all of --max-iter) "
                        "are searched, the same for every normalization (default: --no-early-stopping)")
    p.add_argument("--test-size", metavar="F", type=_fraction, default=None,
                   help="held-out share of the rows, in (0, 1), drawn with --seed (default: 0.2; not with "
                        "--test-csv/--test-npz)")
    p.add_argument("--storage", metavar="URL",
                   help="keras_ln's study (Optuna storage, a SQLAlchemy URL such as postgresql://... for a shared "
                        "database); every finished model is committed to it (default: sqlite:///OUT/NAME.study.db)")
    p.add_argument("--study-name", metavar="NAME", help="the study's name in --storage (default: keras_ln_NAME)")
    p.add_argument("--resume", action="store_true",
                   help="continue the keras_ln study of an interrupted run (Ctrl-C, kill, power loss): finished "
                        "models are not trained again and the time budget counts what was spent; the data and "
                        "settings must be the same")
    p.add_argument("--n-jobs", metavar="N", type=_positive_int, default=None,
                   help="keras_ln models trained at once, by N Dask worker processes on this machine sharing the "
                        "study (default: 1, in this process)")
    p.add_argument("--dask-scheduler", metavar="ADDRESS",
                   help="run keras_ln's workers on this Dask cluster (tcp://host:8786), --n-jobs of them (default: "
                        "one per worker thread); needs a --storage every worker reaches (PostgreSQL, MySQL)")
    p.add_argument("--h2o-url", metavar="URL", help="connect to this running H2O cluster instead of starting one")
    p.add_argument("--h2o-project", metavar="NAME",
                   help="H2O AutoML's project_name: a run with the same name on the same cluster (--h2o-url) "
                        "continues that project; its frames and models are then left on the cluster")
    p.add_argument("--no-h2o", action="store_true", help="run the keras_ln side alone (needs no h2o, no Java)")
    p.add_argument("--out", metavar="DIR", default="reports", help="report folder (default: reports)")
    args = p.parse_args(argv)
    if args.csv and not args.target:
        p.error("argument --csv: needs --target COL")
    if args.target and not args.csv:
        p.error(f"argument --target: only used with --csv, got --target {args.target!r} without it")
    if args.nfolds < 2:
        p.error(f"argument --nfolds: must be at least 2, got {args.nfolds}")
    if args.dask_scheduler and not args.storage:
        p.error("argument --dask-scheduler: needs --storage URL, a database the Dask workers reach (the default "
                "SQLite file is on this machine only)")
    if args.no_h2o and args.h2o_url:
        p.error("argument --no-h2o: not allowed with argument --h2o-url")
    if args.test_csv and not args.csv:
        p.error(f"argument --test-csv: only used with --csv, got --test-csv {args.test_csv!r} without it")
    if args.test_npz and not args.npz:
        p.error(f"argument --test-npz: only used with --npz, got --test-npz {args.test_npz!r} without it")
    given = "--test-csv" if args.test_csv else "--test-npz" if args.test_npz else None
    if given and args.test_size is not None:
        p.error(f"argument --test-size: not allowed with argument {given} (the test rows are given), got "
                f"--test-size {args.test_size:g}")
    if not given and args.test_size is None:
        args.test_size = DEFAULT_TEST_SIZE
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"argument --out: {args.out!r} exists and is not a directory")
    for flag, path in (("--csv", args.csv), ("--npz", args.npz), ("--test-csv", args.test_csv),
                       ("--test-npz", args.test_npz)):
        if path is not None:
            try:
                _inputs.check_path(flag, path)
            except CLIError as exc:
                p.error(str(exc))
    return args


def run(args, out=None):
    """The whole comparison; returns the report folder. Bad input raises CLIError before H2O starts."""
    out = out or sys.stdout
    data = _inputs.split(args, _inputs.load(args))  # all checks on the data, before anything starts
    data.storage = args.storage or f"sqlite:///{os.path.abspath(os.path.join(args.out, data.name))}.study.db"
    data.study_name = args.study_name or f"keras_ln_{data.name}"
    if args.resume:
        _check_resumable(data.storage, data.study_name)
    h2o_side = None if args.no_h2o else _imports.h2o_side()
    import pandas as pd

    automl = _imports.keras_ln("keras_ln.automl")
    from integrations import _report

    h2o_board, h2o_folds, fold_check, h2o_secs, h2o_desc = None, None, "not checked (--no-h2o)", None, "not run"
    if h2o_side is not None:
        h2o_board, h2o_folds, fold_check, h2o_secs, h2o_desc = h2o_side.run_h2o(data, args, out)
    print(f"keras_ln AutoML on {len(data.y_train)} rows; every finished model is committed to {data.storage} "
          f"(study {data.study_name}{', resumed' if args.resume else ''})", file=out, flush=True)
    keras_board, keras_folds, keras_secs, aml = run_keras(data, args)
    verdict = aml.verdict()
    claims, claims_secs = None, None
    if args.claims:
        print(f"Claims of layer normalization on the best net of each normalization (budget "
              f"{args.claims_secs:g} s)", file=out, flush=True)
        t0 = time.monotonic()
        claims = aml.measure_claims(data.X_train, data.y_train, budget_secs=args.claims_secs)
        claims_secs = time.monotonic() - t0

    task = data.task
    sort_col, _ = automl.resolve_sort_metric(task, args.sort_metric)
    cv_cols = automl.LEADERBOARD_COLUMNS[task][1:]
    columns = ["source", "model_id", *cv_cols, "normalization", "algo", "training_time_ms",
               "predict_time_per_row_ms", *[f"test_{c}" for c in cv_cols]]
    board = pd.concat([b for b in (keras_board, h2o_board) if b is not None and len(b)], ignore_index=True)
    board = automl.sort_leaderboard(board.reindex(columns=columns), task, args.sort_metric)
    fold_scores = pd.concat([f for f in (keras_folds, h2o_folds) if f is not None], ignore_index=True)

    n_keras = int((keras_board["normalization"] != "n/a").sum())  # nets and ensembles, not the baselines
    ctx = dict(dataset=data.name, task=task, task_source=_task_source(args), shape=tuple(data.X.shape),
               sequence=data.X.ndim == 3, n_train=len(data.y_train), n_test=len(data.y_test),
               test_size=args.test_size, test_from=data.test_from, seed=args.seed, nfolds=args.nfolds, fold_check=fold_check,
               max_models=args.max_models, max_runtime_secs=args.max_runtime_secs, max_iter=args.max_iter,
               keras_secs=keras_secs, n_keras=n_keras, stopped_by=aml.stopped_by_, failed=aml.failed_,
               h2o_secs=h2o_secs, n_h2o=0 if h2o_board is None else len(h2o_board), h2o=h2o_desc,
               nrepeats=args.nrepeats, search=_search_summary(aml), claims_secs=claims_secs,
               epochs_searched=aml.epochs_searched_, early_stopping=args.early_stopping,
               claims_budget=args.claims_secs if args.claims else None)
    folder = _report.write_report(args.out, data.name, board, fold_scores, _learning_curves(aml), task=task,
                                  sort_metric=args.sort_metric, verdict=verdict, claims=claims,
                                  markdown=_report.markdown(ctx, board, fold_scores, sort_col, verdict=verdict,
                                                            claims=claims))
    shown = ["source", "model_id", sort_col, *[c for c in cv_cols if c != sort_col][:2], f"test_{sort_col}",
             "normalization"]
    print(f"\nLeaderboard for {data.name} ({task}), sorted by CV {sort_col}:", file=out)
    print(board[list(dict.fromkeys(shown))].to_markdown(index=False, floatfmt=".4f"), file=out)
    sentence = _report.baseline_sentence(board, task, sort_col)
    print("\n" + sentence.lstrip("-> ").replace("**", "").replace("`", ""), file=out)
    for line in _report.verdict_lines(verdict):
        print(line.replace("**", "").replace("`", ""), file=out)
    print(f"\nReport: {os.path.join(folder, 'report.md')}", file=out, flush=True)
    return folder


def _check_resumable(storage, study_name):
    """--resume needs the study: one clear error before anything starts otherwise."""
    path = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else None
    if path is not None and not os.path.isfile(path):
        raise CLIError(f"argument --resume: no study to resume: {path!r} does not exist (run without --resume "
                       "first, with the same --out, or give the run's --storage)")
    import optuna

    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as exc:  # noqa: BLE001 - any storage error is the user's URL
        raise CLIError(f"argument --storage: cannot read {storage!r}: {' '.join(str(exc).split())[:200]}") from None
    if study_name not in names:
        raise CLIError(f"argument --resume: {storage!r} holds no study {study_name!r} (it holds {names})")


def _search_summary(aml):
    """What keras_ln's search did: configurations asked, models trained, pruned and failed."""
    import optuna

    states = [t.state for t in aml.study_.trials]
    return dict(configurations=len(states), complete=states.count(optuna.trial.TrialState.COMPLETE),
                pruned=len(aml.pruned_), failed=len(aml.failed_),
                portfolio=sum(1 for t in aml.study_.trials if "portfolio" in t.user_attrs))


def _task_source(args):
    if args.task:
        return "--task"
    return "the data set's" if args.dataset else "inferred from the target"


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a killed job) cleans up like Ctrl-C


def status(argv=None, out=None):
    """``status``: print the leaderboard of the models a keras_ln study has finished so far."""
    out = out or sys.stdout
    p = _Parser(prog="python -m integrations.h2o_automl status",
                description="The keras_ln models a run (running, interrupted or finished) has committed so far.")
    p.add_argument("--storage", metavar="URL", required=True,
                   help="the run's --storage (by default sqlite:///OUT/NAME.study.db)")
    p.add_argument("--study-name", metavar="NAME", help="the study (default: the storage's only one)")
    p.add_argument("--sort-metric", metavar="M", default="AUTO", help="as H2O's sort_metric (default: AUTO)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    path = args.storage[len("sqlite:///"):] if args.storage.startswith("sqlite:///") else None
    if path is not None and not os.path.isfile(path):
        print(f"error: argument --storage: no such SQLite file {path!r}", file=sys.stderr)
        return EXIT_USAGE
    automl = _imports.keras_ln("keras_ln.automl")
    try:
        board = automl.load_leaderboard(args.storage, args.study_name, args.sort_metric)
    except (ValueError, KeyError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    state = (f"search ended ({board.attrs['stopped_by']})" if board.attrs["stopped_by"]
             else f"search not finished ({board.attrs['running']} configuration(s) running or interrupted)")
    print(f"{len(board)} keras_ln model(s) finished, {board.attrs['spent_secs']:.1f} s spent; {state}", file=out)
    if len(board):
        print(board.drop(columns=["training_time_ms", "predict_time_per_row_ms"], errors="ignore")
              .to_markdown(index=False, floatfmt=".4f"), file=out)
    return 0


def main(argv=None):
    """Run the CLI; returns the exit status (0, 2 for bad input or environment, 130 when interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]:
        return status(argv[1:])
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2), already printed
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        run(args)
    except CLIError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted; the H2O cluster started by this run (if any) was shut down, no report written; "
              "the keras_ln models finished so far are kept: rerun with --resume to continue", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
