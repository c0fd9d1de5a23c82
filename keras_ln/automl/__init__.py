"""H2O-style AutoML over keras_ln's estimators, one concept per module.

- `_metrics`: H2O's leaderboard metrics (`h2o_metrics`, `fold_metric`);
- `_leaderboard`: H2O's sort metrics and sorting (`sort_leaderboard`);
- `_folds`: the fold assignment (`make_folds`);
- `_preprocessing`: what every model puts in front of its net (`make_preprocessor`:
  imputation and one-hot encoding of tables, scaling and unpadding of sequences);
- `_search`: the search (Optuna): the space of each family, its portfolio, pruning;
- `_ensembles`: H2O's stacked ensembles of the nets (`StackedEnsemble`);
- `_baselines`: the reference rows, a GLM and a constant;
- `_store`: the persistent study (Optuna's RDB storage): every finished model committed, resume;
- `_automl`: `AutoML` itself.

Example
-------
>>> from keras_ln.automl import AutoML
>>> from keras_ln.datasets import load_breast_cancer
>>> X, y, _ = load_breast_cancer()
>>> aml = AutoML(max_models=6, max_runtime_secs=120, nfolds=3, seed=1).fit(X, y)
>>> aml.leaderboard_.head()         # doctest: +SKIP
>>> aml.predict(X[:5])              # doctest: +SKIP
"""

from keras_ln.automl._automl import AutoML
from keras_ln.automl._ensembles import StackedEnsemble
from keras_ln.automl._folds import make_folds
from keras_ln.automl._leaderboard import EXTRA_COLUMNS
from keras_ln.automl._leaderboard import SORT_METRICS
from keras_ln.automl._leaderboard import resolve_sort_metric
from keras_ln.automl._leaderboard import sort_leaderboard
from keras_ln.automl._metrics import LEADERBOARD_COLUMNS
from keras_ln.automl._metrics import fold_metric
from keras_ln.automl._metrics import h2o_metrics
from keras_ln.automl._preprocessing import categorical_columns
from keras_ln.automl._preprocessing import make_preprocessor
from keras_ln.automl._search import MLP_SPACE
from keras_ln.automl._search import RNN_SPACE
from keras_ln.automl._store import load_leaderboard

__all__ = [
    "AutoML",
    "EXTRA_COLUMNS",
    "LEADERBOARD_COLUMNS",
    "MLP_SPACE",
    "RNN_SPACE",
    "SORT_METRICS",
    "StackedEnsemble",
    "categorical_columns",
    "fold_metric",
    "h2o_metrics",
    "load_leaderboard",
    "make_folds",
    "make_preprocessor",
    "resolve_sort_metric",
    "sort_leaderboard",
]
