"""The CLI's input, checked whole before H2O is started or anything is written.

Three steps, each raising `CLIError` with one message that names the argument
and what was received:

1. `check_path` (from argument parsing, standard library only, instant): the
   file exists, is a regular file, can be read and is not empty.
2. `load`: the data through `keras_ln.datasets`, the task (``--task`` or
   inferred), the target (no NaN, at least two classes or distinct values,
   each class named by ``--task`` present), ``--sort-metric`` for the task.
3. `split`: the held-out test split and the fold assignment, with every class
   represented on both sides and in every fold.
"""

import dataclasses
import math
import os
import sys

from integrations import _imports
from integrations._errors import CLIError

# keras_ln.datasets.DATASETS, spelled out so that --help imports nothing heavy
# (tests/integrations/test_cli_inputs.py keeps the two equal).
DATASET_NAMES = ("adding_problem", "breast_cancer", "diabetes", "digits", "ragged_sequences", "sequential_digits",
                 "wine")
TASKS = ("binary", "multiclass", "regression")


@dataclasses.dataclass
class Inputs:
    """What both sides run on: the data, its task, the split and the folds."""

    name: str
    X: object
    y: object
    task: str
    classes: object = None  # sorted class labels; None for regression
    X_train: object = None
    X_test: object = None
    y_train: object = None
    y_test: object = None
    folds: object = None


def check_path(flag, path):
    """Raise CLIError unless ``path`` is a readable, non-empty regular file."""
    if not os.path.exists(path):
        raise CLIError(f"argument {flag}: no such file: {path!r}")
    if os.path.isdir(path):
        raise CLIError(f"argument {flag}: {path!r} is a directory; expected a file")
    if not os.path.isfile(path):
        raise CLIError(f"argument {flag}: {path!r} is not a regular file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
    except OSError as exc:
        raise CLIError(f"argument {flag}: cannot read {path!r}: {exc.strerror or exc}") from None
    if not head:
        raise CLIError(f"argument {flag}: {path!r} is empty (0 bytes)")


def _source(args):
    """The flag naming the data, and what the target is called in messages."""
    if args.csv:
        return "--csv", f"target column {args.target!r}", "--target"
    if args.npz:
        return "--npz", f"y in {args.npz!r}", "--npz"
    return "--dataset", f"the target of {args.dataset!r}", "--dataset"


def _examples(values, k=3):
    values = list(values.tolist() if hasattr(values, "tolist") else values)
    return ", ".join(repr(v) for v in values[:k]) + (", ..." if len(values) > k else "")


def load(args, err=None):
    """`Inputs` (name, X, y, task, classes) from --dataset, --csv or --npz, checked; bad input raises CLIError."""
    datasets = _imports.keras_ln("keras_ln.datasets")
    import numpy as np

    flag, target, target_flag = _source(args)
    try:
        if args.dataset:
            X, y, task = datasets.load(args.dataset)
            name, inferred = args.dataset, False
        elif args.csv:
            X, y, task = datasets.load_csv(args.csv, args.target)
            name, inferred = os.path.splitext(os.path.basename(args.csv))[0], True
        else:
            X, y, task = datasets.load_npz(args.npz)
            name, inferred = os.path.splitext(os.path.basename(args.npz))[0], True
    except (ValueError, OSError) as exc:
        raise CLIError(f"argument {flag}: {exc}") from None
    y = np.asarray(y)
    numeric = y.dtype.kind in "iufb"
    if numeric and y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise CLIError(f"argument {target_flag}: {target} holds {int(bad.sum())} NaN or infinite value(s) "
                           f"(rows {np.flatnonzero(bad)[:5].tolist()}); drop or fill them")
    values = np.unique(y)
    integral = numeric and bool(np.all(np.mod(values, 1) == 0))
    if args.task:
        task = _override_task(args.task, values, numeric, integral, target)
        y = y.astype(np.int64) if task != "regression" and integral and y.dtype.kind == "f" else y
        values = np.unique(y)
    elif inferred and task == "regression" and integral:
        print(f"warning: argument {target_flag}: {target} holds {len(values)} distinct integer values and is read "
              "as regression; pass --task multiclass to treat them as classes (--task regression to silence this)",
              file=err or sys.stderr, flush=True)
    if len(values) < 2:
        what = "a single class" if task != "regression" else "a single value"
        raise CLIError(f"argument {target_flag}: {target} holds {what} ({_examples(values)}); "
                       "at least 2 are needed to learn anything")
    automl = _imports.keras_ln("keras_ln.automl")
    try:
        automl.resolve_sort_metric(task, args.sort_metric)
    except ValueError as exc:
        raise CLIError(f"argument --sort-metric: {exc}") from None
    classes = values if task != "regression" else None
    return Inputs(name=name, X=X, y=y.astype(np.float64) if task == "regression" else y, task=task, classes=classes)


def _override_task(task, values, numeric, integral, target):
    """``--task`` applied to the target; CLIError when the target cannot be read that way."""
    if task == "regression" and not numeric:
        raise CLIError(f"argument --task: regression needs a numeric target; {target} holds values such as "
                       f"{_examples(values)}")
    if task == "binary" and len(values) > 2:
        raise CLIError(f"argument --task: binary needs 2 classes; {target} holds {len(values)} "
                       f"({_examples(values)}); use --task multiclass or --task regression")
    if task == "multiclass" and len(values) == 2:
        raise CLIError(f"argument --task: multiclass needs at least 3 classes; {target} holds 2 "
                       f"({_examples(values)}); use --task binary")
    if task != "regression" and numeric and not integral:
        raise CLIError(f"argument --task: {task} needs class labels; {target} holds non-integer numbers such as "
                       f"{_examples(values[values % 1 != 0])}; use --task regression")
    return task


def split(args, data):
    """``data`` with the test split (stratified for classification) and the training rows' folds."""
    from sklearn import model_selection

    automl = _imports.keras_ln("keras_ln.automl")
    y, n = data.y, len(data.y)
    n_test = math.ceil(args.test_size * n)
    n_train = n - n_test
    where = f"{args.test_size:g} of {n} rows"
    if data.task == "regression":
        if n_test < 2:
            raise CLIError(f"argument --test-size: {where} puts {n_test} row(s) in the test split; at least 2 are "
                           "needed")
        if n_train < 2 * args.nfolds:
            raise CLIError(f"argument --test-size: {where} leaves {n_train} row(s) for training; --nfolds "
                           f"{args.nfolds} needs at least {2 * args.nfolds}")
    else:
        counts = _class_counts(data.classes, y)
        rare, k = min(counts, key=counts.get), len(counts)
        if counts[rare] <= args.nfolds:
            raise CLIError(f"argument --nfolds: {args.nfolds} folds and a test split need at least {args.nfolds + 1} "
                           f"rows of every class; class {rare!r} has {counts[rare]}"
                           + (f" (one of {k} classes with --task {args.task})" if args.task else ""))
        if n_test < k:
            raise CLIError(f"argument --test-size: {where} puts {n_test} row(s) in the test split, fewer than the "
                           f"{k} classes; at least one per class is needed")
        if n_train < k * args.nfolds:
            raise CLIError(f"argument --test-size: {where} leaves {n_train} row(s) for training; --nfolds "
                           f"{args.nfolds} needs at least {args.nfolds} per class, {k * args.nfolds} in all")
    try:
        X_train, X_test, y_train, y_test = model_selection.train_test_split(
            data.X, y, test_size=args.test_size, random_state=args.seed,
            stratify=y if data.task != "regression" else None)
    except ValueError as exc:
        raise CLIError(f"argument --test-size: {where}: {exc}") from None
    if data.task != "regression":
        train, test = _class_counts(data.classes, y_train), _class_counts(data.classes, y_test)
        short = [c for c in train if train[c] < args.nfolds]
        if short:
            raise CLIError(f"argument --test-size: {args.test_size:g} leaves {train[short[0]]} of the "
                           f"{counts[short[0]]} rows of class {short[0]!r} for training; --nfolds {args.nfolds} needs "
                           f"at least {args.nfolds}")
        empty = [c for c in test if test[c] == 0]
        if empty:
            raise CLIError(f"argument --test-size: {args.test_size:g} puts no row of class {empty[0]!r} in the test "
                           "split; raise it")
    try:
        folds = automl.make_folds(y_train, data.task, args.nfolds, args.seed)
    except ValueError as exc:
        raise CLIError(f"argument --nfolds: {args.nfolds}: {exc}") from None
    return dataclasses.replace(data, X_train=X_train, X_test=X_test, y_train=y_train, y_test=y_test, folds=folds)


def _class_counts(classes, y):
    import numpy as np

    return {c: int(np.sum(y == c)) for c in np.asarray(classes).tolist()}
