"""Preprocessing inside every keras_ln model of the AutoML."""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import StandardScaler


class SequenceScaler(TransformerMixin, BaseEstimator):
    """Standardize every feature of (n, T, F) sequences over samples and steps."""

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float32)
        flat = X.reshape(-1, X.shape[-1])
        self.mean_ = flat.mean(axis=0)
        self.scale_ = flat.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        return ((X - self.mean_) / self.scale_).astype(np.float32)


def make_scaler(family):
    """The scaler in front of a model of `family` ("mlp" or "rnn")."""
    return StandardScaler() if family == "mlp" else SequenceScaler()
