"""Does early stopping bias keras_ln's AutoML's verdict on normalization?

With ``AutoML(early_stopping=True)`` (the CLI's ``--early-stopping``; off by
default since this script's measurement) every net holds out 10 % of its
training fold and stops when that part's loss stops improving (on folds of 500
rows or more). If stopping early cost the nets of one normalization more than
those of another, the verdict's paired differences would measure the stopping
rule as well as the normalization.

For each data set and seed this script runs `keras_ln.automl.AutoML` twice on
the same 3 folds of the same training split (the CLI's: test_size 0.2, seed 1),
with its family's first portfolio configuration under every normalization
(`max_models=3`): once with early stopping (up to `max_iter` 50 epochs), once
without (all 50 epochs, as the portfolio's configurations train then). From
the two runs' fold scores it prints, paired by seed and fold, 95 % confidence
intervals by the verdict's own corrected resampled t-test
(`keras_ln.automl._verdict.corrected_t_interval`, test/train ratio 1/2: the
folds' training sets overlap, which a plain t interval ignores):

- per normalization, what early stopping changes in the cross-validated score
  (early stopping less 50 epochs: for a loss, positive is worse);
- per pair of normalizations, the verdict's quantity (the first less the
  second) with and without early stopping, and the change early stopping
  makes to it: the bias. An interval that excludes 0 means the stopping rule
  moves the verdict on that set.

Data sets: the bundled ones whose training folds are large enough for early
stopping (digits, sequential_digits, adding_problem) and two that no default
of keras_ln was tuned on, drawn by scikit-learn (`make_classification`, 3,000 x
20, and `make_friedman1`, 2,000 x 10, regression).

    python benchmarks/early_stopping_bias.py [--datasets digits ...] [--seeds 1 2 3]

About 15 minutes on 2 cores with the defaults. Not a `bench_*.py` (`make bench`
does not run it).
"""

import argparse
import itertools
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.datasets import make_friedman1  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_ln import datasets  # noqa: E402
from keras_ln.automl import AutoML  # noqa: E402
from keras_ln.automl._leaderboard import resolve_sort_metric  # noqa: E402
from keras_ln.automl._verdict import corrected_t_interval  # noqa: E402

SPLIT_SEED = 1
NFOLDS = 3
NORMS = ("layer", "batch", "none")


def _classification():
    X, y = make_classification(3000, 20, n_informative=8, n_redundant=4, n_classes=3,
                               n_clusters_per_class=2, flip_y=0.03, random_state=7)
    return X, y, "multiclass"


def _friedman():
    X, y = make_friedman1(2000, 10, noise=1.0, random_state=7)
    return X, y, "regression"


EXTRA = {"make_classification": _classification, "make_friedman1": _friedman}
DEFAULT_DATASETS = ["digits", "sequential_digits", "adding_problem", "make_classification", "make_friedman1"]


def load(name):
    """X, y and the task of a data set, its training split as the CLI's."""
    if name in EXTRA:
        X, y, task = EXTRA[name]()
    else:
        X, y, task = datasets.load(name)
    stratify = y if task != "regression" else None
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=SPLIT_SEED, stratify=stratify)
    return X_train, y_train, task


def fold_scores(X, y, task, seed, early_stopping):
    """The AutoML's fold scores of its first configuration under every normalization, its sort
    metric and whether larger is better."""
    aml = AutoML(max_models=3, nfolds=NFOLDS, seed=seed, early_stopping=early_stopping)
    aml.fit(X, y, task=task)
    metric, descending = resolve_sort_metric(task)
    scores = aml.fold_scores_[aml.fold_scores_["config"].notna()]  # the nets: one configuration
    assert scores["config"].nunique() == 1, scores["config"].unique()
    table = scores.pivot_table(index=["repeat", "fold"], columns="normalization", values=metric, aggfunc="first")
    return table, metric, descending, aml.epochs_searched_


def interval(values):
    """Mean and 95 % confidence interval of paired differences, corrected for the folds' overlap."""
    return corrected_t_interval(values, 1.0 / (NFOLDS - 1))


def fmt(stat):
    mean, low, high = stat
    flag = "  *" if low > 0 or high < 0 else ""
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]{flag}"


def study(name, seeds):
    X, y, task = load(name)
    tables, searched = {True: [], False: []}, {}
    start = time.perf_counter()
    for seed, early in itertools.product(seeds, (True, False)):
        table, metric, descending, searched[early] = fold_scores(X, y, task, seed, early)
        tables[early].append(table.assign(seed=seed).set_index("seed", append=True))
    es, full = (pd.concat(tables[flag]) for flag in (True, False))
    norms = [n for n in NORMS if n in es.columns and n in full.columns]
    print(f"\n{name}: {len(y)} training rows, {task}, {NFOLDS} folds x seeds {list(seeds)}; {metric} "
          f"({'higher' if descending else 'lower'} is better); {time.perf_counter() - start:.0f} s")
    if searched[True]:
        print("  early stopping does not apply here (training folds under 500 rows): both runs train alike")
    print(f"  {'normalization':14s} {'early stopping':>15s} {'50 epochs':>10s}   early stopping less 50 epochs")
    for norm in norms:
        print(f"  {norm:14s} {es[norm].mean():15.4f} {full[norm].mean():10.4f}   {fmt(interval(es[norm] - full[norm]))}")
    print(f"  {'pair':14s} {'with early stopping':>30s} {'50 epochs':>30s} {'bias (the change)':>30s}")
    for first, second in itertools.combinations(norms, 2):
        with_es, without = es[first] - es[second], full[first] - full[second]
        print(f"  {first + '-' + second:14s} {fmt(interval(with_es)):>30s} {fmt(interval(without)):>30s} "
              f"{fmt(interval(with_es - without)):>30s}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS,
                        choices=sorted([*datasets.DATASETS, *EXTRA]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="the AutoML's seeds (its folds, initial weights and batch orders)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print("Paired by seed and fold: mean [95% CI, corrected resampled t]; * where the interval excludes 0")
    for name in args.datasets:
        study(name, args.seeds)


if __name__ == "__main__":
    main()
