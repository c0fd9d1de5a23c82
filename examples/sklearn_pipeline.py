"""Layer norm vs batch norm vs none, as an ordinary hyperparameter of GridSearchCV.

1. Tabular: scikit-learn's bundled wine data, `StandardScaler` +
   `keras_ln.sklearn.MLPClassifier` in a pipeline, grid over
   `normalization` and the learning rate.
2. Sequences: scikit-learn's 8x8 digits read row by row (8 steps x 8
   features), `keras_ln.sklearn.LSTMClassifier`, grid over `normalization`
   ("layer": LN-LSTM, "batch": BN-LSTM, None: Keras' LSTM).

Prints the cross-validation table of each search and the held-out accuracy
of the best model. Runs in about ten seconds on 2 CPU cores:

    python examples/sklearn_pipeline.py
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from keras_ln import datasets  # noqa: E402
from keras_ln.sklearn import LSTMClassifier  # noqa: E402
from keras_ln.sklearn import MLPClassifier  # noqa: E402

COLUMNS = ["mean_test_score", "std_test_score", "mean_fit_time", "rank_test_score"]


def show(title, search, X_test, y_test):
    # The parameters from `params`, as searched: pandas reads the None of
    # the `param_*` columns (masked arrays of objects) as NaN.
    params = pd.DataFrame([{name.split("__")[-1]: str(value) for name, value in p.items()}
                           for p in search.cv_results_["params"]])
    scores = pd.DataFrame({column: search.cv_results_[column] for column in COLUMNS})
    table = pd.concat([params, scores], axis=1).sort_values("rank_test_score")
    print(f"\n== {title} ==")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"best: {search.best_params_}, held-out accuracy "
          f"{search.score(X_test, y_test):.3f}")


def main():
    warnings.simplefilter("ignore", ConvergenceWarning)

    X, y, _ = datasets.load_wine()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    pipe = make_pipeline(
        StandardScaler(),
        MLPClassifier((32,), max_iter=100, batch_size=32, random_state=0),
    )
    search = GridSearchCV(
        pipe,
        {
            "mlpclassifier__normalization": ["layer", "batch", None],
            "mlpclassifier__learning_rate_init": [1e-3, 1e-2],
        },
        cv=3,
    ).fit(X_train, y_train)
    show("wine (178 x 13): StandardScaler + MLPClassifier", search, X_test, y_test)

    X, y, _ = datasets.load_sequential_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    search = GridSearchCV(
        LSTMClassifier((32,), max_iter=15, batch_size=64,
                       learning_rate_init=1e-2, random_state=0),
        {"normalization": ["layer", "batch", None]},
        cv=3,
    ).fit(X_train, y_train)
    show("sequential digits (1797 x 8 steps x 8 features): LSTMClassifier",
         search, X_test, y_test)


if __name__ == "__main__":
    main()
