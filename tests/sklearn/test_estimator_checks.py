"""scikit-learn's own estimator checks, over all four estimators."""

import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from keras_ln.sklearn import MLPClassifier
from keras_ln.sklearn import MLPRegressor

# Small networks and few epochs keep the ~50 checks per estimator fast; the
# learning rate is raised so that the accuracy/R^2 thresholds of
# check_classifiers_train / check_regressors_train are met without the
# `poor_score` tag.
ESTIMATORS = [
    MLPClassifier((8,), max_iter=30, learning_rate_init=0.05, random_state=0),
    MLPRegressor((8,), max_iter=30, learning_rate_init=0.05, random_state=0),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
