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


def _set_native_mlp_loop(monkeypatch, native):
    from keras_ln.layers import _native
    from keras_ln.sklearn import _execution

    if native and _native.ops() is None:
        pytest.skip(f"native ops not built: {_native.load_error()}")
    monkeypatch.setattr(_execution, "NATIVE_MLP_LOOP", native)


@pytest.fixture
def traced_loop(monkeypatch):
    """Every network trains with the traced loop (graph, XLA or eager), the
    MLPs that the native loop covers too: for the tests of the traced loop."""
    _set_native_mlp_loop(monkeypatch, False)


@pytest.fixture(params=["native", "traced"])
def mlp_loop(request, monkeypatch):
    """The test runs once with each loop of the MLPs it fits: the native
    one (`_native/mlp_ops.cc`, the default where it covers the network) and
    the traced one."""
    _set_native_mlp_loop(monkeypatch, request.param == "native")
    return request.param
