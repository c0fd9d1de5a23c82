"""Shared fixtures: quiet TensorFlow, fixed seeds for every test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Every test starts from the same seeds and the default dtype policy."""
    keras.utils.set_random_seed(1337)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def breast_cancer_120():
    """120 rows of breast_cancer (seeded): small enough for whole AutoML searches in tests."""
    from keras_ln.datasets import load_breast_cancer

    X, y, _ = load_breast_cancer()
    idx = np.random.default_rng(0).permutation(len(y))[:120]
    return X[idx], y[idx]
