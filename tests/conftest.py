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


# Run in the child of `kill_after_models` (python -c): AutoML patched to SIGKILL its own process in the
# middle of model n + 1, after that model's first fold; then the command's script or module.
_KILL_CHILD = """
import os, runpy, signal, sys
from keras_ln.automl import AutoML
n, args = int(sys.argv[1]), sys.argv[2:]
started = [0]
train_one, fold_metric = AutoML._train_one, AutoML._fold_metric
def counted(self, *a, **k):
    started[0] += 1
    return train_one(self, *a, **k)
def metric(self, *a, **k):
    value = fold_metric(self, *a, **k)
    if started[0] > n:
        os.kill(os.getpid(), signal.SIGKILL)
    return value
AutoML._train_one, AutoML._fold_metric = counted, metric
if args[0] == "-m":
    sys.argv = args[1:]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")
"""


@pytest.fixture
def kill_after_models():
    """``kill(command, db_path, n)``: run ``command`` (``[python, script, args...]`` or ``[python, "-m",
    module, args...]``) as a child process that kills itself with SIGKILL in the middle of the AutoML's
    model n + 1 (after its first fold, ``_KILL_CHILD``: a fixed point of the search, so that the test does
    not race the child's training); returns the seconds it ran and the model ids finished in the study in
    the SQLite file ``db_path`` at its death. Fails if the child ends any other way."""
    import os
    import signal
    import subprocess
    import time

    from keras_ln.automl import load_leaderboard

    def kill(command, db_path, n, timeout=300):
        t0 = time.monotonic()
        child = subprocess.Popen([command[0], "-c", _KILL_CHILD, str(n), *command[1:]],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        try:
            _, err = child.communicate(timeout=timeout)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL, (child.returncode, err.decode()[-2000:])
        return time.monotonic() - t0, set(load_leaderboard(f"sqlite:///{db_path}")["model_id"])

    return kill
