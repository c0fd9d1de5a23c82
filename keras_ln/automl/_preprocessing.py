"""Preprocessing in front of every keras_ln model of the AutoML, and the checks of its input.

`make_preprocessor` builds, for the X that `AutoML.fit` receives, the
(unfitted) transformer each model puts in front of its net, so that it is
fitted on each fold's training rows only:

- tables (a pandas DataFrame, or a numeric array of shape (n, F)): scikit-learn's
  `ColumnTransformer`; numeric columns through `SimpleImputer(strategy="median",
  add_indicator=True)` (a missing value becomes the median plus a
  ``missingindicator_<col>`` column) and `StandardScaler`; categorical columns
  (strings, objects, pandas categories) as text through `SimpleImputer` (a
  missing value becomes its own category, ``"missing"``) and
  `OneHotEncoder(handle_unknown="ignore")` (a category never seen in training
  encodes as all zeros);
- sequences of shape (n, T, F), whose all-NaN time steps at the end are
  padding: `SequenceScaler` (statistics over the real steps only, the padding
  kept as NaN), then `RaggedSequences`, which hands the estimators a list of
  unpadded sequences (keras_ln.sklearn's LSTM estimators pad a list with NaN
  and mask the padding inside the net).

The checks and the padding of sequence input (`check_sequences`,
`pad_sequences`) live in `keras_ln.datasets`, shared with its loaders.
"""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from keras_ln.datasets import sequence_lengths

__all__ = ["RaggedSequences", "SequenceScaler", "categorical_columns", "make_preprocessor", "make_scaler"]


# ---------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------
class SequenceScaler(TransformerMixin, BaseEstimator):
    """Standardize every feature of (n, T, F) sequences over samples and steps.

    All-NaN time steps (padding) are left out of the statistics and stay NaN.
    """

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float32)
        flat = X.reshape(-1, X.shape[-1])
        flat = flat[~np.all(np.isnan(flat), axis=1)]
        self.mean_ = flat.mean(axis=0)
        self.scale_ = flat.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        self.n_features_in_ = X.shape[-1]
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float32)
        return ((X - self.mean_) / self.scale_).astype(np.float32)


class RaggedSequences(TransformerMixin, BaseEstimator):
    """NaN-padded (n, T, F) sequences as a list of their real time steps, (T_i, F) each.

    keras_ln.sklearn's sequence estimators take such a list and pad and mask
    it themselves; X without padding passes unchanged.
    """

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[-1]
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = np.asarray(X)
        lengths = sequence_lengths(X)
        if np.all(lengths == X.shape[1]):
            return X
        return [x[:t] for x, t in zip(X, lengths)]


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def categorical_columns(X):
    """The columns of DataFrame ``X`` that hold categories, not numbers: strings, objects, pandas categories.

    Booleans count as numbers (0/1).
    """
    if not isinstance(X, pd.DataFrame):
        return []
    return [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c].dtype)]


def _as_text(X):
    """Category values as text, missing values as NaN (so that mixed types such as 1 and "a" encode)."""
    X = np.asarray(X, dtype=object)
    missing = pd.isna(X)
    out = X.astype(str).astype(object)
    out[missing] = np.nan
    return out


def _table_preprocessor(X):
    if isinstance(X, pd.DataFrame):
        categorical = categorical_columns(X)
        numeric = [c for c in X.columns if c not in categorical]
    else:
        categorical, numeric = [], list(range(np.shape(X)[1]))
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline([
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
        ]), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("text", FunctionTransformer(_as_text, feature_names_out="one-to-one")),
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]), categorical))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def make_preprocessor(X):
    """The unfitted preprocessing in front of every keras_ln net for data like ``X`` (see the module's doc).

    Parameters
    ----------
    X : pandas.DataFrame, array of shape (n, F), or array of shape (n, T, F)

    Returns
    -------
    transformer : sklearn.compose.ColumnTransformer (tables) or sklearn.pipeline.Pipeline (sequences)
    """
    if not isinstance(X, pd.DataFrame) and np.ndim(X) == 3:
        return Pipeline([("scale", SequenceScaler()), ("unpad", RaggedSequences())])
    return _table_preprocessor(X)


def make_scaler(family):
    """The scaler of a numeric X of `family` ("mlp" or "rnn"); `make_preprocessor` is what `AutoML` uses."""
    return StandardScaler() if family == "mlp" else SequenceScaler()
