"""scikit-learn's own estimator checks, over all four estimators, no expected failures.

Twice: small networks with settings that keep the checks quick, and default
instances, as a user's first `check_estimator(Est())` makes them.
"""

import warnings

import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from keras_ln.sklearn import LSTMClassifier
from keras_ln.sklearn import LSTMRegressor
from keras_ln.sklearn import MLPClassifier
from keras_ln.sklearn import MLPRegressor

# The default normalization ("layer") with small networks. The sequence
# estimators get sklearn's 2-D X, read as (n_samples, n_timesteps).
#
# Settings that learn sklearn's toy problems well enough for the accuracy /
# R^2 thresholds of the checks below (no `poor_score` tag): ...
ESTIMATORS = [
    MLPClassifier((8,), max_iter=30, learning_rate_init=0.05, random_state=0),
    MLPRegressor((8,), max_iter=30, learning_rate_init=0.05, random_state=0),
    LSTMClassifier((8,), max_iter=30, learning_rate_init=0.05, random_state=0),
    LSTMRegressor((16,), max_iter=100, learning_rate_init=0.02,
                  n_iter_no_change=30, random_state=0),
]
TRAINING_CHECKS = {
    "check_classifiers_train",
    "check_classifiers_classes",
    "check_regressors_train",
}
# ... while every other check, about API behaviour, runs with 3 epochs (a
# handful of steps, run eagerly: no graph to trace), as sklearn's own test
# suite lowers max_iter for its estimators.
QUICK = {"max_iter": 3}


def _name(check):
    return getattr(getattr(check, "func", check), "__name__", str(check))


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    if _name(check) not in TRAINING_CHECKS:
        estimator = clone(estimator).set_params(**QUICK)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# Default instances: every check with default parameters (max_iter=200, 100
# or 64 units), no expected failure. Measured on 2 shared cores: 38 s for
# MLPClassifier, 24 s for MLPRegressor, 48 s for LSTMClassifier and 73 s for
# LSTMRegressor, mostly the checks that train on sklearn's 200-300 rows.
DEFAULTS = [MLPClassifier(), MLPRegressor(), LSTMClassifier(), LSTMRegressor()]


@pytest.mark.slow
@parametrize_with_checks(DEFAULTS)
def test_default_instance_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
