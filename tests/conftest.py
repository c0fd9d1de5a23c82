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


@pytest.fixture
def trained_models(monkeypatch):
    """The model ids AutoML trains from now on (its `_train_one` spied on), in order."""
    from keras_ln.automl import AutoML

    trained = []
    original = AutoML._train_one

    def spy(self, X, y, repeats, family, classification, model_id, *args, **kwargs):
        trained.append(model_id)
        return original(self, X, y, repeats, family, classification, model_id, *args, **kwargs)

    monkeypatch.setattr(AutoML, "_train_one", spy)
    return trained


@pytest.fixture
def kill_after_models():
    """``kill(command, db_path, n)``: run ``command`` (a child process), SIGKILL it as soon as the AutoML
    study in the SQLite file ``db_path`` holds ``n`` finished models; returns the seconds it ran and the
    model ids seen finished at the kill."""
    import os
    import signal
    import subprocess
    import time

    from keras_ln.automl import load_leaderboard

    def kill(command, db_path, n, timeout=300):
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        t0, seen = time.monotonic(), set()
        try:
            while time.monotonic() - t0 < timeout:
                assert child.poll() is None, child.stderr.read().decode()[-2000:]
                if os.path.exists(db_path):
                    try:
                        seen = set(load_leaderboard(f"sqlite:///{db_path}")["model_id"])
                    except Exception:  # noqa: BLE001 - the child may be creating the tables
                        pass
                    if len(seen) >= n:
                        break
                time.sleep(0.1)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        return time.monotonic() - t0, seen

    return kill
