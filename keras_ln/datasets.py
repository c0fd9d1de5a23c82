"""Bundled and synthetic data sets; nothing is downloaded.

Every loader returns ``(X, y, task)`` where ``task`` is one of ``"binary"``,
``"multiclass"`` or ``"regression"``. Tabular loaders return ``X`` of shape
``(n_samples, n_features)`` (`load_csv`: a pandas DataFrame, categories and
missing values as they are), sequence loaders ``(n_samples, n_timesteps,
n_features)``. Sequences of different lengths are padded at the end with
all-NaN time steps (`make_ragged_sequences`, `load_npz`), which
`keras_ln.automl.AutoML` and the LSTM estimators (given a list) mask.

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
    "make_ragged_sequences",
    "load_csv",
    "load_npz",
    "check_sequences",
    "pad_sequences",
    "sequence_lengths",
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


def make_ragged_sequences(n_samples=300, min_timesteps=8, max_timesteps=24, *, n_classes=3, noise=0.3,
                          random_state=0):
    """Sequences of different lengths, NaN-padded at the end: which frequency is it? (multiclass).

    Sequence ``i`` has ``T_i`` steps (uniform in [min_timesteps,
    max_timesteps]) of two features, ``sin`` and ``cos`` of a phase that
    turns ``c + 1`` times over the sequence (``c`` its class), from a random
    start, plus Gaussian noise. The class is a property of the whole
    sequence relative to its own length, so the padding must be ignored, not
    read as data. Steps past ``T_i`` are all NaN.

    Parameters
    ----------
    n_samples : int, default=300
    min_timesteps, max_timesteps : int, default=8, 24
        Range of the lengths; ``2 <= min_timesteps <= max_timesteps``. Below
        ``2 * n_classes + 1`` steps the fastest phase is undersampled.
    n_classes : int, default=3
        At least 2.
    noise : float, default=0.3
        Standard deviation of the noise added to both features.
    random_state : int, default=0

    Returns
    -------
    X : ndarray of shape (n_samples, max_timesteps, 2), float32, NaN-padded
    y : ndarray of shape (n_samples,), int64 in [0, n_classes)
    task : "binary" (n_classes=2) or "multiclass"

    Examples
    --------
    >>> X, y, task = make_ragged_sequences(n_samples=4, min_timesteps=3, max_timesteps=5, random_state=1)
    >>> X.shape, task
    ((4, 5, 2), 'multiclass')
    >>> lengths = (~np.isnan(X[:, :, 0])).sum(axis=1)   # the real steps of each sequence
    """
    for name, value, low in (("n_samples", n_samples, 1), ("min_timesteps", min_timesteps, 2),
                             ("max_timesteps", max_timesteps, 2), ("n_classes", n_classes, 2)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"Expected `{name}` to be an int >= {low}. Received: {name}={value!r}")
    if max_timesteps < min_timesteps:
        raise ValueError(f"Expected `max_timesteps` >= `min_timesteps` ({min_timesteps}). "
                         f"Received: max_timesteps={max_timesteps!r}")
    rng = np.random.default_rng(random_state)
    y = rng.integers(0, n_classes, size=n_samples)
    lengths = rng.integers(min_timesteps, max_timesteps + 1, size=n_samples)
    start = rng.uniform(0, 2 * np.pi, size=n_samples)
    X = np.full((n_samples, max_timesteps, 2), np.nan)
    for i in range(n_samples):
        phase = start[i] + 2 * np.pi * (y[i] + 1) * np.arange(lengths[i]) / lengths[i]
        X[i, : lengths[i]] = np.column_stack([np.sin(phase), np.cos(phase)])
        X[i, : lengths[i]] += rng.normal(scale=noise, size=(lengths[i], 2))
    return X.astype(np.float32), y.astype(np.int64), "binary" if n_classes == 2 else "multiclass"


# ---------------------------------------------------------------------------
# Sequences of different lengths: NaN padding at the end
# ---------------------------------------------------------------------------
def pad_sequences(sequences, name="X"):
    """A list of (T_i, F) arrays as one float array (n, max T_i, F), NaN-padded at the end."""
    arrays = []
    for i, seq in enumerate(sequences):
        a = np.asarray(seq)
        if a.ndim != 2:
            raise ValueError(f"Expected `{name}` as a list of 2-D arrays (n_timesteps_i, n_features). "
                             f"Received: {name}[{i}] with shape {a.shape}")
        if not np.issubdtype(a.dtype, np.number) or a.dtype.kind == "c":
            raise ValueError(f"Expected `{name}` to hold real numbers. Received: {name}[{i}] of dtype {a.dtype}")
        arrays.append(a)
    if not arrays:
        raise ValueError(f"Expected `{name}` to hold at least one sequence. Received: an empty list")
    widths = sorted({a.shape[1] for a in arrays})
    if len(widths) > 1:
        raise ValueError(f"Expected every sequence of `{name}` to have the same number of features per time "
                         f"step. Received: {widths}")
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    out = np.full((len(arrays), max(a.shape[0] for a in arrays), widths[0]), np.nan, dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


def sequence_lengths(X):
    """Real time steps of each sequence of a NaN-padded (n, T, F) array."""
    real = ~np.all(np.isnan(X), axis=2)
    return np.where(real.any(axis=1), X.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)


def check_sequences(X, name="X"):
    """Raise ValueError unless every NaN of the (n, T, F) array ``X`` belongs to whole time steps at the end.

    Returns the length (real time steps) of every sequence.
    """
    X = np.asarray(X)
    if np.isinf(X).any():
        i, t, f = np.argwhere(np.isinf(X))[0]
        raise ValueError(f"Expected `{name}` without infinite values. Received: {X[i, t, f]} in sequence {i}, "
                         f"time step {t}, feature {f}")
    nan = np.isnan(X)
    partial = nan.any(axis=2) & ~nan.all(axis=2)
    if partial.any():
        i, t = np.argwhere(partial)[0]
        raise ValueError(f"Expected `{name}` sequences whose NaN fill whole time steps at the end (padding). "
                         f"Received: {int(partial.sum())} time step(s) with NaN in only some features, the first "
                         f"in sequence {i}, time step {t}")
    lengths = sequence_lengths(X)
    inside = nan.all(axis=2) & (np.arange(X.shape[1]) < lengths[:, None])
    if inside.any():
        i, t = np.argwhere(inside)[0]
        raise ValueError(f"Expected `{name}` sequences whose NaN fill whole time steps at the end (padding). "
                         f"Received: an all-NaN time step inside sequence {i} (step {t} of {lengths[i]})")
    if (lengths == 0).any():
        empty = np.flatnonzero(lengths == 0)
        raise ValueError(f"Expected every sequence of `{name}` to have at least one time step that is not NaN. "
                         f"Received: {len(empty)} all-NaN sequence(s), the first at index {empty[0]}")
    return lengths


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
    """Load a user's CSV file: the feature columns as a DataFrame, parsed, not encoded.

    Numeric columns become float64 (booleans 0/1), the other columns stay
    categories (text); missing cells stay missing (NaN). Encoding and
    imputation belong to the model, fitted on its training rows only:
    `keras_ln.automl.AutoML` does both (`keras_ln.automl.make_preprocessor`:
    median plus a missing indicator, one-hot with a "missing" category).
    Rows whose target is missing are an error, as are a numeric column
    holding a few unparseable cells and a column without any value.

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
    X : pandas.DataFrame of shape (n_samples, n_features)
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

    columns = {}
    for name in df.columns:
        col = df[name]
        if col.isna().all():
            raise ValueError(f"{path!r}: column {name!r} has no values at all.")
        if _is_text(col):
            parsed = _numeric_or_raise(col, name, path)
            if parsed is not None:
                col = parsed
        if pd.api.types.is_numeric_dtype(col):  # booleans included
            columns[name] = col.astype(np.float64)
        else:
            n_cat = col.nunique(dropna=True)
            if n_cat > max_categories:
                raise ValueError(
                    f"{path!r}: categorical column {name!r} has {n_cat} distinct values "
                    f"(more than max_categories={max_categories}); drop it or encode it yourself."
                )
            columns[name] = col.astype(object)
    X = pd.DataFrame(columns, index=pd.RangeIndex(len(df)))
    y = y.to_numpy()
    task = _check_task(task, y)
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise ValueError(f"{path!r}: `task='regression'` needs a numeric target column {target!r}.")
        y = y.astype(np.float64)
    return X, y, task


def load_npz(path, *, task=None):
    """Load a user's ``.npz`` holding ``X`` (n × T × F, or n × F) and ``y`` (n,).

    Sequences of different lengths are padded at the end with all-NaN time
    steps; any other NaN in sequences is an error. In a table (n × F), NaN
    are missing values (`keras_ln.automl.AutoML` imputes them).

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
    if not np.issubdtype(X.dtype, np.number) or X.dtype.kind == "c":
        raise ValueError(f"X in {path!r} must hold real numbers. Received dtype {X.dtype}")
    if X.ndim == 3:
        try:
            check_sequences(X, "X")
        except ValueError as exc:
            raise ValueError(f"X in {path!r}: {exc}") from None
    elif np.isinf(X).any():
        raise ValueError(f"X in {path!r} holds {int(np.isinf(X).sum())} infinite value(s); NaN (missing) are "
                         "imputed, infinite values are not.")
    task = _check_task(task, y)
    return X.astype(np.float32), y, task


DATASETS = {
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "digits": load_digits,
    "diabetes": load_diabetes,
    "sequential_digits": load_sequential_digits,
    "adding_problem": make_adding_problem,
    "ragged_sequences": make_ragged_sequences,
}


def load(name, **kwargs):
    """Load a bundled/synthetic data set by name (see ``DATASETS``)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Expected one of {sorted(DATASETS)}.")
    return DATASETS[name](**kwargs)
