"""Bundled and synthetic data sets; nothing is downloaded.

Every loader returns ``(X, y, task)`` where ``task`` is one of ``"binary"``,
``"multiclass"`` or ``"regression"``. Tabular loaders return ``X`` of shape
``(n_samples, n_features)``, sequence loaders ``(n_samples, n_timesteps,
n_features)``.

Examples
--------
>>> from keras_ln import datasets
>>> X, y, task = datasets.load_sequential_digits()
>>> X.shape, task
((1797, 8, 8), 'multiclass')
>>> X, y, task = datasets.load("breast_cancer")
"""

import os

import numpy as np
import pandas as pd
import sklearn.datasets

__all__ = [
    "TASKS",
    "DATASETS",
    "infer_task",
    "load",
    "load_breast_cancer",
    "load_wine",
    "load_digits",
    "load_diabetes",
    "load_sequential_digits",
    "make_adding_problem",
    "load_csv",
    "load_npz",
]

TASKS = ("binary", "multiclass", "regression")


def infer_task(y):
    """Guess the task from the target values.

    Non-numeric (strings, booleans, categories) targets are classification;
    numeric targets holding at most 10 distinct integer values are
    classification as well; anything else is regression.

    Parameters
    ----------
    y : array-like of shape (n_samples,)

    Returns
    -------
    task : {"binary", "multiclass", "regression"}
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"Expected a 1-D target `y`. Received: y with shape {y.shape}")
    n_classes = len(pd.unique(y))
    if y.dtype.kind in "OUSb" or isinstance(y.dtype, pd.CategoricalDtype):
        return "binary" if n_classes <= 2 else "multiclass"
    finite = y[np.isfinite(y.astype(float))]
    if n_classes <= 10 and np.all(np.mod(finite, 1) == 0):
        return "binary" if n_classes <= 2 else "multiclass"
    return "regression"


def _check_task(task, y):
    if task is None:
        return infer_task(y)
    if task not in TASKS:
        raise ValueError(f"Expected `task` to be one of {TASKS} or None. Received: task={task!r}")
    if task == "binary" and len(pd.unique(np.asarray(y))) > 2:
        raise ValueError(
            f"`task='binary'` needs a target with at most 2 classes; "
            f"the target has {len(pd.unique(np.asarray(y)))}."
        )
    return task


# ---------------------------------------------------------------------------
# scikit-learn's bundled sets
# ---------------------------------------------------------------------------
def load_breast_cancer():
    """Wisconsin breast cancer (569 × 30), binary."""
    X, y = sklearn.datasets.load_breast_cancer(return_X_y=True)
    return X.astype(np.float32), y, "binary"


def load_wine():
    """Wine (178 × 13), 3 classes."""
    X, y = sklearn.datasets.load_wine(return_X_y=True)
    return X.astype(np.float32), y, "multiclass"


def load_digits():
    """8×8 handwritten digits flattened (1797 × 64), 10 classes."""
    X, y = sklearn.datasets.load_digits(return_X_y=True)
    return X.astype(np.float32), y, "multiclass"


def load_diabetes():
    """Diabetes progression (442 × 10), regression."""
    X, y = sklearn.datasets.load_diabetes(return_X_y=True)
    return X.astype(np.float32), y.astype(np.float64), "regression"


def load_sequential_digits():
    """scikit-learn's 8×8 digits read row by row: 8 steps × 8 features, 10 classes.

    Pixel values are scaled to [0, 1].
    """
    X, y = sklearn.datasets.load_digits(return_X_y=True)
    return (X.reshape(-1, 8, 8) / 16.0).astype(np.float32), y, "multiclass"


def make_adding_problem(n_samples=1000, n_timesteps=50, *, random_state=0):
    """The adding problem (Hochreiter & Schmidhuber, 1997), regression.

    Each sequence has two features per step: a value drawn uniformly from
    [0, 1] and a marker that is 1 at exactly two steps (one in each half of
    the sequence) and 0 elsewhere. The target is the sum of the two marked
    values.

    Parameters
    ----------
    n_samples : int, default=1000
    n_timesteps : int, default=50
        Sequence length, at least 2.
    random_state : int, default=0

    Returns
    -------
    X : ndarray of shape (n_samples, n_timesteps, 2), float32
    y : ndarray of shape (n_samples,), float64
    task : "regression"
    """
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"Expected `n_samples` to be a positive int. Received: n_samples={n_samples!r}")
    if not isinstance(n_timesteps, (int, np.integer)) or n_timesteps < 2:
        raise ValueError(
            f"Expected `n_timesteps` to be an int >= 2. Received: n_timesteps={n_timesteps!r}"
        )
    rng = np.random.default_rng(random_state)
    values = rng.uniform(0.0, 1.0, size=(n_samples, n_timesteps))
    half = n_timesteps // 2
    first = rng.integers(0, half, size=n_samples)
    second = rng.integers(half, n_timesteps, size=n_samples)
    markers = np.zeros_like(values)
    rows = np.arange(n_samples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    X = np.stack([values, markers], axis=-1).astype(np.float32)
    return X, y.astype(np.float64), "regression"


# ---------------------------------------------------------------------------
# A user's files
# ---------------------------------------------------------------------------
def _is_text(series):
    return series.dtype == object or pd.api.types.is_string_dtype(series.dtype)


def _numeric_or_raise(series, name, path):
    """Parse an object column that is mostly numbers; raise naming the bad cells."""
    values = series.dropna()
    parsed = pd.to_numeric(values, errors="coerce")
    bad = values[parsed.isna()]
    if len(bad) and len(bad) < len(values) / 2:
        examples = ", ".join(f"row {i + 2}: {v!r}" for i, v in list(bad.items())[:3])
        raise ValueError(
            f"{path}: column {name!r} is numeric but holds {len(bad)} unparseable "
            f"value(s) ({examples}). Fix or blank those cells."
        )
    return None if len(bad) else pd.to_numeric(series, errors="coerce")


def load_csv(path, target, *, task=None, max_categories=50):
    """Load a user's CSV file.

    Categorical (non-numeric) feature columns are one-hot encoded, with a
    separate indicator for missing values; missing numeric values are replaced
    by the column median (plus an ``<col>_missing`` indicator column). Rows
    whose target is missing are an error, as is a numeric column holding a few
    unparseable cells.

    Parameters
    ----------
    path : str or path-like
    target : str
        Name of the target column.
    task : {"binary", "multiclass", "regression"} or None, default=None
        None infers it with :func:`infer_task`.
    max_categories : int, default=50
        A categorical column with more distinct values is rejected (it is most
        likely an identifier or free text).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float32
    y : ndarray of shape (n_samples,)
    task : str
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CSV file not found: {path!r}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"Cannot parse {path!r} as CSV: {exc}") from None
    if target not in df.columns:
        raise ValueError(
            f"Target column `target={target!r}` not found in {path!r}. "
            f"Columns: {list(df.columns)}"
        )
    if len(df) < 2:
        raise ValueError(f"{path!r} holds {len(df)} data row(s); at least 2 are needed.")
    y = df.pop(target)
    if y.isna().any():
        rows = [int(i) + 2 for i in np.flatnonzero(y.isna().to_numpy())[:5]]
        raise ValueError(
            f"{path!r}: target column {target!r} has {int(y.isna().sum())} missing "
            f"value(s) (CSV lines {rows}...). Drop or fill those rows."
        )
    if _is_text(y):
        parsed = _numeric_or_raise(y, target, path)
        if parsed is not None:
            y = parsed
    if df.shape[1] == 0:
        raise ValueError(f"{path!r} has no feature columns besides the target {target!r}.")

    parts = []
    for name in df.columns:
        col = df[name]
        if _is_text(col):
            parsed = _numeric_or_raise(col, name, path)
            if parsed is not None:
                col = parsed
        if col.dtype == bool:
            col = col.astype(float)
        if pd.api.types.is_numeric_dtype(col):
            col = col.astype(float)
            missing = col.isna()
            if missing.all():
                raise ValueError(f"{path!r}: column {name!r} has no values at all.")
            if missing.any():
                parts.append(col.fillna(col.median()).rename(name).to_frame())
                parts.append(missing.astype(float).rename(f"{name}_missing").to_frame())
            else:
                parts.append(col.rename(name).to_frame())
        else:
            n_cat = col.nunique(dropna=True)
            if n_cat > max_categories:
                raise ValueError(
                    f"{path!r}: categorical column {name!r} has {n_cat} distinct values "
                    f"(more than max_categories={max_categories}); drop it or encode it yourself."
                )
            parts.append(
                pd.get_dummies(col.astype("string"), prefix=name, dummy_na=bool(col.isna().any()),
                               dtype=float)
            )
    X = pd.concat(parts, axis=1).to_numpy(dtype=np.float32)
    y = y.to_numpy()
    task = _check_task(task, y)
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise ValueError(f"{path!r}: `task='regression'` needs a numeric target column {target!r}.")
        y = y.astype(np.float64)
    return X, y, task


def load_npz(path, *, task=None):
    """Load a user's ``.npz`` holding ``X`` (n × T × F, or n × F) and ``y`` (n,).

    Returns
    -------
    X : ndarray, float32
    y : ndarray of shape (n_samples,)
    task : str
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz file not found: {path!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile.BadZipFile, OSError, pickled content
        raise ValueError(f"Cannot read {path!r} as .npz: {exc}") from None
    if not hasattr(data, "files"):
        raise ValueError(f"{path!r} holds a single array, not an .npz archive with 'X' and 'y'.")
    with data:
        missing = [k for k in ("X", "y") if k not in data.files]
        if missing:
            raise ValueError(
                f"{path!r} must hold arrays named 'X' and 'y'; missing {missing}. "
                f"Found: {data.files}"
            )
        try:
            X, y = data["X"], data["y"]
        except ValueError as exc:  # object arrays need pickle
            raise ValueError(f"Cannot read {path!r}: {exc}") from None
    if X.ndim not in (2, 3):
        raise ValueError(
            f"Expected X in {path!r} of shape (n_samples, n_timesteps, n_features) or "
            f"(n_samples, n_features). Received: X with shape {X.shape}"
        )
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"Expected y in {path!r} of shape ({len(X)},). Received: y with shape {y.shape}"
        )
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X in {path!r} must be numeric. Received dtype {X.dtype}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"X in {path!r} holds NaN or infinite values.")
    task = _check_task(task, y)
    return X.astype(np.float32), y, task


DATASETS = {
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "digits": load_digits,
    "diabetes": load_diabetes,
    "sequential_digits": load_sequential_digits,
    "adding_problem": make_adding_problem,
}


def load(name, **kwargs):
    """Load a bundled/synthetic data set by name (see ``DATASETS``)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Expected one of {sorted(DATASETS)}.")
    return DATASETS[name](**kwargs)
