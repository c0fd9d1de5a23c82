"""The CLI's input, checked whole before H2O is started or anything is written.

Three steps, each raising `CLIError` with one message that names the argument
and what was received:

1. `check_path` (from argument parsing, standard library only, instant): the
   file exists, is a regular file, can be read and is not empty.
2. `load`: the data through `keras_ln.datasets`, the task (``--task`` or
   inferred), the target (no NaN, at least two classes or distinct values,
   each class named by ``--task`` present), ``--sort-metric`` for the task.
3. `split`: the held-out test split and the fold assignment, with every class
   represented on both sides and in every fold. With ``--test-csv`` or
   ``--test-npz`` the test rows are the user's (`load_test`: the same columns
   or features, the same kind of target, no class that training lacks) and
   the main file is all training rows.
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
    test_from: str = None  # the flag and path of the user's test rows; None: drawn with --test-size and --seed


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


def _test_flag(args):
    return "--test-csv" if getattr(args, "test_csv", None) else "--test-npz" if getattr(args, "test_npz", None) else None


def split(args, data):
    """``data`` with the test split (stratified for classification; or the user's) and the training rows' folds."""
    from sklearn import model_selection

    if _test_flag(args):
        return _given_split(args, data)
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


# ---------------------------------------------------------------------------
# The user's own test rows: --test-csv / --test-npz
# ---------------------------------------------------------------------------
def load_test(args, data):
    """The test rows of ``--test-csv``/``--test-npz``, checked against the training data ``data``.

    Returns ``(X_train, X_test, y_test)``: the training X unchanged, or
    NaN-padded to the test sequences' length when those are longer (and the
    test sequences to the training length when shorter), the test X with the
    training columns in their order, and the test target read like the
    training target. Bad test rows raise CLIError naming the flag.
    """
    datasets = _imports.keras_ln("keras_ln.datasets")
    import numpy as np

    flag = _test_flag(args)
    path = args.test_csv or args.test_npz
    try:
        if args.test_csv:
            X, y, _ = datasets.load_csv(path, args.target)
        else:
            X, y, _ = datasets.load_npz(path)
    except (ValueError, OSError) as exc:
        raise CLIError(f"argument {flag}: {exc}") from None
    X_train = data.X
    if args.test_csv:
        X = _same_columns(flag, path, X_train, X)
        target = f"target column {args.target!r} of {path!r}"
    else:
        X, X_train = _same_features(flag, path, X_train, X)
        target = f"y in {path!r}"
    return X_train, X, _same_target(flag, target, data, np.asarray(y))


def _same_columns(flag, path, train, test):
    """The test DataFrame with the training columns, in their order, each of the same kind."""
    import numpy as np
    import pandas as pd

    missing = [c for c in train.columns if c not in test.columns]
    if missing:
        raise CLIError(f"argument {flag}: {path!r} lacks the column(s) {missing[:5]} of --csv; expected the same "
                       f"feature columns {list(train.columns)[:10]}")
    extra = [c for c in test.columns if c not in train.columns]
    if extra:
        raise CLIError(f"argument {flag}: {path!r} has column(s) {extra[:5]} that --csv has not; expected the same "
                       f"feature columns {list(train.columns)[:10]}")
    test = test[list(train.columns)].copy()
    for c in train.columns:
        numeric_train = pd.api.types.is_numeric_dtype(train[c])
        numeric_test = pd.api.types.is_numeric_dtype(test[c])
        if numeric_train and not numeric_test:
            text = test[c].dropna()
            raise CLIError(f"argument {flag}: column {c!r} is numeric in --csv but holds text in {path!r} "
                           f"({_examples(text.unique())}); expected numbers")
        if numeric_test and not numeric_train:  # categories that happen to look like numbers in the test rows
            values = test[c].to_numpy(dtype=float)
            test[c] = pd.Series([np.nan if np.isnan(v) else str(int(v)) if v == int(v) else str(v) for v in values],
                                index=test.index, dtype=object)
    return test


def _same_features(flag, path, train, test):
    """The test and training arrays with the same layout; sequences padded to the longer of the two."""
    import numpy as np

    if test.ndim != train.ndim:
        kind = {2: "a table (n × F)", 3: "sequences (n × T × F)"}
        raise CLIError(f"argument {flag}: X in {path!r} is {kind[test.ndim]} of shape {test.shape}; --npz holds "
                       f"{kind[train.ndim]} of shape {train.shape}")
    if test.shape[-1] != train.shape[-1]:
        what = "features per time step" if train.ndim == 3 else "features"
        raise CLIError(f"argument {flag}: X in {path!r} has {test.shape[-1]} {what}; --npz has {train.shape[-1]}")
    if train.ndim == 3 and test.shape[1] != train.shape[1]:
        steps = max(test.shape[1], train.shape[1])

        def pad(X):
            out = np.full((len(X), steps, X.shape[2]), np.nan, dtype=X.dtype)
            out[:, : X.shape[1]] = X
            return out

        test, train = pad(test), pad(train)
    return test, train


def _same_target(flag, target, data, y):
    """The test target read like the training target; CLIError for values training has not seen."""
    import numpy as np

    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise CLIError(f"argument {flag}: {target} holds {int(bad.sum())} NaN or infinite value(s) "
                           f"(rows {np.flatnonzero(bad)[:5].tolist()}); drop or fill them")
    if data.task == "regression":
        if y.dtype.kind not in "iufb":
            raise CLIError(f"argument {flag}: {target} holds values such as {_examples(np.unique(y))}; the "
                           "regression needs numbers")
        return y.astype(np.float64)
    classes = np.asarray(data.classes)
    if classes.dtype.kind in "iu" and y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
        y = y.astype(classes.dtype)
    unseen = [v for v in np.unique(y).tolist() if v not in set(classes.tolist())]
    if unseen:
        raise CLIError(f"argument {flag}: {target} holds {len(unseen)} class(es) that the training rows have not "
                       f"({_examples(unseen)}); the training classes are {_examples(classes, 10)}")
    return y


def _given_split(args, data):
    """``data`` with the user's test rows and the folds of all the main file's rows."""
    automl = _imports.keras_ln("keras_ln.automl")
    flag = _test_flag(args)
    X_train, X_test, y_test = load_test(args, data)
    y = data.y
    if data.task == "regression":
        if len(y) < 2 * args.nfolds:
            raise CLIError(f"argument --nfolds: {args.nfolds} folds need at least {2 * args.nfolds} training rows; "
                           f"the main file holds {len(y)}")
    else:
        counts = _class_counts(data.classes, y)
        rare = min(counts, key=counts.get)
        if counts[rare] < args.nfolds:
            raise CLIError(f"argument --nfolds: {args.nfolds} folds need at least {args.nfolds} training rows of "
                           f"every class; class {rare!r} has {counts[rare]}")
    try:
        folds = automl.make_folds(y, data.task, args.nfolds, args.seed)
    except ValueError as exc:
        raise CLIError(f"argument --nfolds: {args.nfolds}: {exc}") from None
    return dataclasses.replace(data, X=X_train, X_train=X_train, X_test=X_test, y_train=y, y_test=y_test,
                               folds=folds, test_from=f"{flag} {getattr(args, flag[2:].replace('-', '_'))!r}")

