"""keras_ln's AutoML against H2O AutoML on the six bundled data sets, under the same budget.

Each data set goes through the comparison itself (`integrations.h2o_automl`:
one test split and one fold assignment, both drawn with ``--seed``, that both
sides use; a local H2O cluster started and shut down per data set), which
writes ``<out>/<dataset>/leaderboard.csv``. This script reads those
leaderboards back and prints one table: per data set, the cross-validated
sort metric (H2O's ``sort_metric="AUTO"``: auc, mean_per_class_error or
mean_residual_deviance) and the same metric on the test split for
keras_ln's leader (its best net or stacked ensemble), for ``Baseline_GLM``
(keras_ln's linear reference, same preprocessing and folds) and for H2O's
leader. Then three targets, each PASS or FAIL with its margin (positive:
room to spare; negative: by how much it is missed):

1. keras_ln's leader is at least as good as ``Baseline_GLM`` on every data
   set (CV sort metric, same folds);
2. breast_cancer: keras_ln's leader within 0.005 CV AUC of H2O's leader;
3. sequential_digits: keras_ln's leader's test mean_per_class_error (the
   integration's test metric for multiclass sets) at or below H2O's leader's.

The table also goes to ``<out>/bench_automl.csv`` (exact values) and the
targets to ``<out>/bench_automl_targets.csv``. A failed target is a
measurement, not an error: the exit status is 0. It is 1 only when a data
set's comparison could not run (e.g. no Java), after the others have run.

Defaults: 120 s per side on every data set (no model count, no epoch cap
beyond the CLI's), 5 folds for the tables and 3 for the sequence sets (as in
``make demo``); about half an hour on 2 CPU cores, H2O startup included.

    python benchmarks/bench_automl.py [--datasets breast_cancer wine ...] [--max-runtime-secs 120]
        [--nfolds K] [--seed 1] [--out reports/bench_automl]
"""

import argparse
import math
import os
import signal
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd  # noqa: E402

from integrations import h2o_automl  # noqa: E402
from integrations._errors import CLIError  # noqa: E402
from keras_ln.automl import resolve_sort_metric  # noqa: E402
from keras_ln.automl import sort_leaderboard  # noqa: E402
from keras_ln.automl._baselines import BASELINE_GLM  # noqa: E402
from keras_ln.automl._baselines import BASELINE_IDS  # noqa: E402
from keras_ln.datasets import DATASETS as LOADERS  # noqa: E402

DATASETS = ("breast_cancer", "wine", "digits", "diabetes", "sequential_digits", "adding_problem")
SEQUENCES = ("sequential_digits", "adding_problem")
MAX_RUNTIME_SECS = 120.0
AUC_TOLERANCE = 0.005  # target 2


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 2, got {text!r}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), metavar="NAME",
                   help=f"data sets to run (default: all six: {', '.join(DATASETS)})")
    p.add_argument("--max-runtime-secs", type=_positive_float, default=MAX_RUNTIME_SECS, metavar="S",
                   help=f"time budget per side and data set (default: {MAX_RUNTIME_SECS:g})")
    p.add_argument("--nfolds", type=_positive_int, default=None, metavar="K",
                   help="cross-validation folds (default: 5 for tables, 3 for sequences)")
    p.add_argument("--seed", type=int, default=1, help="seed of the split, the folds and both searches (default: 1)")
    p.add_argument("--out", default=os.path.join("reports", "bench_automl"), metavar="DIR",
                   help="where the reports and the CSVs go (default: reports/bench_automl)")
    return p.parse_args(argv)


def better_by(a, b, higher_is_better):
    """How much ``a`` is better than ``b`` (negative: worse); NaN when either is missing."""
    return (a - b) if higher_is_better else (b - a)


def summarize(name, task, folder, nfolds, wall_s):
    """One table row from ``folder/leaderboard.csv``: the two leaders and Baseline_GLM, CV and test."""
    sort_col, higher = resolve_sort_metric(task, "AUTO")
    board = sort_leaderboard(pd.read_csv(os.path.join(folder, "leaderboard.csv")), task, "AUTO")
    keras = board[board["source"] == "keras_ln"]
    contenders = keras[~keras["model_id"].isin(BASELINE_IDS)]  # AutoML's leader: the best net or ensemble
    glm = keras[keras["model_id"] == BASELINE_GLM]
    h2o = board[board["source"] == "h2o"]
    row = {"dataset": name, "task": task, "nfolds": nfolds, "metric": sort_col}
    for label, part in (("keras_ln", contenders), ("glm", glm), ("h2o", h2o)):
        top = part.iloc[0] if len(part) else None
        if label != "glm":
            row[f"{label}_leader"] = top["model_id"] if top is not None else "(none)"
        row[f"{label}_cv"] = float(top[sort_col]) if top is not None else math.nan
        row[f"{label}_test"] = float(top[f"test_{sort_col}"]) if top is not None else math.nan
    row["keras_ln_models"] = len(contenders)
    row["h2o_models"] = len(h2o)
    row["keras_ln_vs_glm_cv"] = better_by(row["keras_ln_cv"], row["glm_cv"], higher)
    row["keras_ln_vs_h2o_cv"] = better_by(row["keras_ln_cv"], row["h2o_cv"], higher)
    row["keras_ln_vs_h2o_test"] = better_by(row["keras_ln_test"], row["h2o_test"], higher)
    row["wall_s"] = wall_s
    row["error"] = ""
    return row


def targets(rows, names):
    """The three targets: (number, name, PASS/FAIL/NOT RUN, margin text, margin value)."""
    done = {r["dataset"]: r for r in rows}
    out = []

    # 1. keras_ln's leader never worse than Baseline_GLM (CV sort metric), on every bundled set.
    margins = {n: done[n]["keras_ln_vs_glm_cv"] if n in done else math.nan for n in names}
    missing = [n for n, m in margins.items() if math.isnan(m)]
    worse = [n for n, m in margins.items() if m < 0]
    status = "FAIL" if worse or missing else "PASS"
    text = ", ".join(f"{n} {m:+.4g} {done[n]['metric']}" if not math.isnan(m) else f"{n} n/a"
                     for n, m in margins.items())
    if len(names) < len(DATASETS):
        text += f" (only {len(names)} of the {len(DATASETS)} sets run)"
    # the margins are in each set's own metric: the detail lists them, the margin column stays empty
    out.append((1, "keras_ln leader >= Baseline_GLM on every set (CV sort metric, same folds)", status, text,
                math.nan))

    # 2. breast_cancer: within AUC_TOLERANCE CV AUC of H2O's leader.
    if "breast_cancer" in done:
        r = done["breast_cancer"]
        gap = r["h2o_cv"] - r["keras_ln_cv"]
        margin = AUC_TOLERANCE - gap
        status = "PASS" if margin >= 0 else "FAIL"
        text = (f"CV auc keras_ln {r['keras_ln_cv']:.4f} vs H2O {r['h2o_cv']:.4f}: H2O ahead by {gap:+.4f}, "
                f"allowed {AUC_TOLERANCE}; margin {margin:+.4f}")
        if math.isnan(margin):
            status = "FAIL"
    else:
        status, text, margin = "NOT RUN", "breast_cancer not in --datasets", math.nan
    out.append((2, f"breast_cancer: keras_ln within {AUC_TOLERANCE} CV AUC of H2O's leader", status, text, margin))

    # 3. sequential_digits: test mean_per_class_error at or below H2O's leader's.
    if "sequential_digits" in done:
        r = done["sequential_digits"]
        margin = r["h2o_test"] - r["keras_ln_test"]
        status = "PASS" if margin >= 0 else "FAIL"
        text = (f"test {r['metric']} keras_ln {r['keras_ln_test']:.4f} vs H2O {r['h2o_test']:.4f}; "
                f"margin {margin:+.4f}")
        if math.isnan(margin):
            status = "FAIL"
    else:
        status, text, margin = "NOT RUN", "sequential_digits not in --datasets", math.nan
    out.append((3, "sequential_digits: keras_ln test mean_per_class_error <= H2O's leader's", status, text, margin))
    return out


def _terminated(signum, frame):
    raise KeyboardInterrupt  # like the CLI: SIGTERM shuts the H2O cluster down as Ctrl-C does


def main(argv=None):
    args = parse_args(argv)
    names = [n for n in DATASETS if n in args.datasets]  # the bundled order, each once
    signal.signal(signal.SIGTERM, _terminated)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    print(f"bench_automl: {', '.join(names)}; {args.max_runtime_secs:g} s per side and data set, seed {args.seed}; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start", flush=True)

    rows, failed = [], []
    t_all = time.monotonic()
    for i, name in enumerate(names, 1):
        task = LOADERS[name]()[2]
        nfolds = args.nfolds or (3 if name in SEQUENCES else 5)
        argv_one = ["--dataset", name, "--max-runtime-secs", f"{args.max_runtime_secs:g}", "--nfolds", str(nfolds),
                    "--seed", str(args.seed), "--out", args.out]
        print(f"\n== [{i}/{len(names)}] {name} ({task}): python -m integrations.h2o_automl {' '.join(argv_one)}",
              flush=True)
        t0 = time.monotonic()
        try:
            folder = h2o_automl.run(h2o_automl.parse_args(argv_one))
            rows.append(summarize(name, task, folder, nfolds, time.monotonic() - t0))
        except (CLIError, Exception) as exc:  # noqa: BLE001 - one set failing does not stop the others
            wall = time.monotonic() - t0
            if not isinstance(exc, CLIError):
                traceback.print_exc()
            message = exc.one_line() if isinstance(exc, CLIError) else f"{type(exc).__name__}: {exc}"
            print(f"ERROR: {name} did not run: {message}", flush=True)
            failed.append(name)
            rows.append({"dataset": name, "task": task, "nfolds": nfolds, "wall_s": wall, "error": message})
        print(f"== {name}: {time.monotonic() - t0:.0f} s", flush=True)
    total = time.monotonic() - t_all

    table = pd.DataFrame(rows)
    os.makedirs(args.out, exist_ok=True)
    table.to_csv(os.path.join(args.out, "bench_automl.csv"), index=False)
    results = targets([r for r in rows if not r.get("error")], names)
    pd.DataFrame(results, columns=["target", "description", "status", "detail", "margin"]).to_csv(
        os.path.join(args.out, "bench_automl_targets.csv"), index=False)

    shown = table.reindex(columns=["dataset", "metric", "keras_ln_leader", "keras_ln_cv", "keras_ln_test", "glm_cv",
                                   "glm_test", "h2o_leader", "h2o_cv", "h2o_test", "keras_ln_models", "h2o_models",
                                   "wall_s"])
    shown = shown.rename(columns={"keras_ln_leader": "keras_ln leader", "keras_ln_cv": "CV", "keras_ln_test": "test",
                                  "glm_cv": "GLM CV", "glm_test": "GLM test", "h2o_leader": "H2O leader",
                                  "h2o_cv": "H2O CV", "h2o_test": "H2O test", "keras_ln_models": "models",
                                  "h2o_models": "H2O models", "wall_s": "wall s"})
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    print(f"\nkeras_ln AutoML vs H2O AutoML, {args.max_runtime_secs:g} s per side, seed {args.seed} "
          f"(CV: the sort metric on the shared folds; test: the same metric on the shared test split; "
          f"auc: higher is better, the others lower; models: nets and ensembles, without the baselines)")
    print(shown.to_markdown(index=False, floatfmt=[".4f"] * (len(shown.columns) - 1) + [".0f"]))
    for name in failed:
        print(f"ERROR: {name}: {table.loc[table['dataset'] == name, 'error'].iloc[0]}")
    print(f"\nTotal wall time: {total:.0f} s ({total / 60:.1f} min); load average {load[0]:.2f} at the end")
    print("\nTargets:")
    for number, description, status, text, _ in results:
        print(f"  {number}. [{status}] {description}: {text}")
    print(f"\nTable: {os.path.join(args.out, 'bench_automl.csv')}; reports: {os.path.join(args.out, '<dataset>')}"
          "/report.md", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; the H2O cluster of the running comparison (if any) was shut down", file=sys.stderr)
        sys.exit(130)
