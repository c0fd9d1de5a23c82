"""Fixtures of the estimator tests."""

import numpy as np
import pytest


@pytest.fixture
def blobs():
    """Three well-separated classes in 3 features, 90 rows."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0], [0.0, 3.0, 3.0]])
    y = rng.integers(0, 3, 90)
    X = centers[y] + rng.normal(scale=0.7, size=(90, 3))
    return X, y
