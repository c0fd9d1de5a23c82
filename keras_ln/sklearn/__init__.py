"""scikit-learn estimators built on keras_ln networks.

`normalization="layer" | "batch" | None` is an ordinary hyperparameter of
every estimator, so `GridSearchCV` can compare layer normalization with its
batch-norm baseline on the user's own data.

- `MLPClassifier`, `MLPRegressor`: tabular data (`keras_ln.models.build_mlp`).
- `LSTMClassifier`, `LSTMRegressor`: sequences, as a 3-D array, a 2-D array
  (one feature per step) or a list of 2-D arrays of different lengths
  (`keras_ln.models.build_recurrent`).
"""

from keras_ln.sklearn.sequence import LSTMClassifier
from keras_ln.sklearn.sequence import LSTMRegressor
from keras_ln.sklearn.tabular import MLPClassifier
from keras_ln.sklearn.tabular import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor", "LSTMClassifier", "LSTMRegressor"]
