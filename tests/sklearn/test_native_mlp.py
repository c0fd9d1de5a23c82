"""The MLPs' native training loop (`_native/mlp_ops.cc`, `_execution._native_mlp`).

Reference: the traced loop (TensorFlow's gradients of the same step, its
Adam op and stopping rule), on the same fits: the same loss curves, stopping
epochs, weights and predictions, to rounding.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning

from keras_ln.layers import _native
from keras_ln.sklearn import LSTMClassifier
from keras_ln.sklearn import MLPClassifier
from keras_ln.sklearn import MLPRegressor
from keras_ln.sklearn import _execution
from keras_ln._system import available_cores

pytestmark = pytest.mark.skipif(_native.ops() is None, reason="native ops not built")


def _data(task, dtype, n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 7)).astype(dtype)
    signal = X[:, 0] - X[:, 1] * X[:, 2] + 0.5 * X[:, 3]
    if task == "binary":
        return X, (signal > 0).astype(int)
    if task == "3 classes":
        return X, np.digitize(signal, [-0.5, 0.5])
    if task == "multilabel":
        return X, np.stack([signal > 0, X[:, 4] > 0.3, X[:, 5] + X[:, 6] > 0], 1).astype(int)
    return X, np.stack([signal, X[:, 4] * X[:, 5]], 1)  # two regression outputs


def _fit(est, X, y, native, monkeypatch, **kwargs):
    monkeypatch.setattr(_execution, "NATIVE_MLP_LOOP", native)
    calls = []
    run = _execution._Program._native_epochs
    monkeypatch.setattr(_execution._Program, "_native_epochs",
                        lambda self, *a: calls.append(1) or run(self, *a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y, **kwargs)
    assert bool(calls) == native  # the loop asked for ran
    return est


def _outputs(est, X):
    return est.predict(X) if isinstance(est, MLPRegressor) else est.predict_proba(X)


CASES = [  # (normalization, activation, task, hidden layers)
    (None, "relu", "binary", (16,)),
    (None, "relu", "3 classes", (16, 8)),
    (None, "tanh", "multilabel", (12,)),
    (None, "logistic", "regression", (16, 8)),
    (None, "identity", "3 classes", (10,)),
    ("layer", "relu", "binary", (16, 8)),
    ("layer", "relu", "regression", (16,)),
    ("layer", "tanh", "3 classes", (12, 6)),
    ("layer", "logistic", "multilabel", (16,)),
    ("layer", "identity", "regression", (10,)),
    (None, "relu", "regression", ()),  # no hidden layer: a linear model
]


@pytest.mark.parametrize("normalization, activation, task, hidden", CASES)
def test_native_and_traced_loops_agree_in_float64(normalization, activation, task, hidden, monkeypatch):
    """float64, with the L2 penalty, sample weights, duplicated rows (merged
    in batches) and a last batch smaller than the others: the same loss
    curve and stopping epoch, weights and predictions, to rounding."""
    X, y = _data(task, "float64")
    X, y = np.concatenate([X, X[:30]]), np.concatenate([y, y[:30]])  # duplicates
    weights = np.random.default_rng(1).uniform(0.2, 3.0, len(X))
    make = MLPRegressor if task == "regression" else MLPClassifier
    params = dict(hidden_layer_sizes=hidden, activation=activation, normalization=normalization,
                  alpha=1e-3, batch_size=64, max_iter=25, tol=1e-3, n_iter_no_change=3,
                  random_state=0)
    native = _fit(make(**params), X, y, True, monkeypatch, sample_weight=weights)
    traced = _fit(make(**params), X, y, False, monkeypatch, sample_weight=weights)
    assert native.n_iter_ == traced.n_iter_ > 3
    assert native.t_ == traced.t_ and native._adam_state[2] == traced._adam_state[2]
    np.testing.assert_allclose(native.loss_curve_, traced.loss_curve_, rtol=1e-10)
    for a, b in zip(native.model_.get_weights(), traced.model_.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(_outputs(native, X), _outputs(traced, X), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("normalization", [None, "layer"])
@pytest.mark.parametrize("task", ["binary", "3 classes", "regression"])
def test_native_and_traced_loops_agree_in_float32(normalization, task, monkeypatch):
    """float32 (the XLA loop on the traced side): after one epoch (100
    steps), the same loss and predictions to float32 rounding; after 20
    (2,000 steps), the same epochs, losses to 2e-3 and scores to 5e-3.

    Over many float32 steps the two loops' rounding (other summation orders)
    can part their paths: Adam scales a near-zero gradient's update to about
    the learning rate whatever its size, so a rounding that flips its sign
    moves a weight by that much. Measured on a 2-core AMD EPYC (3 classes,
    layer norm): the losses agreed to 3e-8 up to epoch 4, then to 7e-6 ...
    4.3e-4, the weights to 1.6e-2 by epoch 20; the other five cases to 5e-8.
    In float64 (the test above) the loops agree to rounding throughout."""
    X, y = _data(task, "float32", n=4000)
    make = MLPRegressor if task == "regression" else MLPClassifier
    params = dict(hidden_layer_sizes=(32,), normalization=normalization, batch_size=40,
                  max_iter=20, tol=0.0, n_iter_no_change=100, random_state=0)
    for epochs in (1, 20):
        native = _fit(make(**{**params, "max_iter": epochs}), X, y, True, monkeypatch)
        traced = _fit(make(**{**params, "max_iter": epochs}), X, y, False, monkeypatch)
        assert native.n_iter_ == traced.n_iter_ == epochs
        assert _execution._PROGRAMS[traced._program_key].traced  # the traced side did trace
        if epochs == 1:
            np.testing.assert_allclose(native.loss_curve_, traced.loss_curve_, rtol=1e-6)
            np.testing.assert_allclose(_outputs(native, X), _outputs(traced, X), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(native.loss_curve_, traced.loss_curve_, rtol=2e-3)
    assert native.score(X, y) == pytest.approx(traced.score(X, y), abs=5e-3)


def test_native_fits_are_the_same_bits_every_time(monkeypatch):
    X, y = _data("3 classes", "float32", n=3000)
    params = dict(hidden_layer_sizes=(64,), normalization="layer", batch_size=200, max_iter=3,
                  random_state=0)
    a = _fit(MLPClassifier(**params), X, y, True, monkeypatch)
    b = _fit(MLPClassifier(**params), X, y, True, monkeypatch)
    assert a.loss_curve_ == b.loss_curve_
    for u, v in zip(a.model_.get_weights(), b.model_.get_weights()):
        np.testing.assert_array_equal(u, v)


def _helper_runs():
    """The shards the native loop's helper thread has run in this process."""
    import ctypes

    assert _native.ops() is not None  # TensorFlow loads the library first (its ops)
    function = ctypes.CDLL(_native.library_path()).keras_ln_mlp_helper_runs
    function.restype = ctypes.c_uint64
    return function()


def _weights_and_curve(est):
    return [w.copy() for w in est.model_.get_weights()], list(est.loss_curve_)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("normalization, hidden, batch_size, n", [
    ("layer", (40, 24), 200, 1000),  # two shards of 100 rows
    (None, (33,), 37, 400),  # shards of 18 and 19 rows (the last batch padded to 37)
    ("layer", (16,), 31, 300),  # one shard: below the split
])
def test_the_helper_thread_changes_no_bit(dtype, normalization, hidden, batch_size, n, monkeypatch):
    """A batch of 32 rows or more runs in two shards, the second on a
    helper thread where the op may use two; the split depends on the batch
    alone, so one thread gives the same bits as two."""
    X, y = _data("3 classes", dtype, n=n)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, n)
    params = dict(hidden_layer_sizes=hidden, normalization=normalization, alpha=1e-3,
                  batch_size=batch_size, max_iter=4, random_state=0)
    fits = {}
    for threads in (1, 0):
        monkeypatch.setattr(_execution, "NATIVE_MLP_THREADS", threads)
        before = _helper_runs()
        est = _fit(MLPClassifier(**params), X, y, True, monkeypatch, sample_weight=weights)
        ran = _helper_runs() - before
        fits[threads] = _weights_and_curve(est)
        # At most every batch's second shard (the others, where the helper
        # had not taken them in time, ran in the calling thread).
        assert ran <= (0 if threads == 1 or batch_size < 32 else 4 * -(-n // batch_size))
    (w1, curve1), (w0, curve0) = fits[1], fits[0]
    assert curve1 == curve0
    for a, b in zip(w1, w0):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(available_cores() < 2, reason="one core: the op runs in one thread")
def test_the_helper_thread_runs_shards(monkeypatch):
    """Where TensorFlow's intra-op pool has two threads or more, the helper
    runs second shards (those it takes before the caller finishes its own:
    hundreds of steps here, so some, unless the machine is overloaded)."""
    if tf.config.threading.get_intra_op_parallelism_threads() == 1:
        pytest.skip("TensorFlow's intra-op pool has one thread")
    X, y = _data("binary", "float32", n=6000)
    X = np.tile(X, 6)  # shards of some work (the helper wakes in the first steps)
    monkeypatch.setattr(_execution, "NATIVE_MLP_THREADS", 0)
    before = _helper_runs()
    _fit(MLPClassifier((256,), batch_size=64, max_iter=4, random_state=0), X, y, True, monkeypatch)
    assert 0 < _helper_runs() - before <= 4 * -(-6000 // 64)


def test_concurrent_fits_share_the_helper_and_change_no_bit(monkeypatch):
    """Fits in several threads at once: one op holds the helper, the others
    run both shards themselves; every fit gives the bits of a fit alone."""
    from concurrent.futures import ThreadPoolExecutor

    X, y = _data("binary", "float32", n=2000)
    params = [dict(hidden_layer_sizes=(48,), normalization=norm, batch_size=100, max_iter=3,
                   random_state=seed) for norm in (None, "layer") for seed in (0, 1)]

    def fit(p):
        return _weights_and_curve(MLPClassifier(**p).fit(X, y))

    with warnings.catch_warnings():  # (process-wide: not in the threads)
        warnings.simplefilter("ignore", ConvergenceWarning)
        alone = [fit(p) for p in params]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(fit, params * 2))
    for (w, curve), (w_ref, curve_ref) in zip(together, alone * 2):
        assert curve == curve_ref
        for a, b in zip(w, w_ref):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_partial_fit_warm_start_and_early_stopping_continue_as_the_traced_loop(early_stopping, monkeypatch):
    """Adam's state and the curves carry across calls (warm_start,
    partial_fit), and early stopping validates between native epochs."""
    X, y = _data("binary", "float64")
    params = dict(hidden_layer_sizes=(8,), normalization="layer", batch_size=50, max_iter=6,
                  random_state=0, early_stopping=early_stopping, warm_start=True,
                  validation_fraction=0.2, tol=0.0, n_iter_no_change=100)
    fits = {}
    for native in (True, False):
        est = _fit(MLPClassifier(**params), X, y, native, monkeypatch)
        _fit(est, X, y, native, monkeypatch)  # warm start: 6 more epochs
        if not early_stopping:
            monkeypatch.setattr(_execution, "NATIVE_MLP_LOOP", native)
            est.partial_fit(X, y)
        fits[native] = est
    native, traced = fits[True], fits[False]
    assert len(native.loss_curve_) == len(traced.loss_curve_) == 12 + (not early_stopping)
    np.testing.assert_allclose(native.loss_curve_, traced.loss_curve_, rtol=1e-10)
    if early_stopping:
        np.testing.assert_allclose(native.validation_scores_, traced.validation_scores_, rtol=1e-10)
    np.testing.assert_allclose(native.predict_proba(X), traced.predict_proba(X), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("make, covered", [
    (lambda: MLPClassifier((8, 4), normalization=None), True),
    (lambda: MLPClassifier((8,), normalization="layer", activation="tanh"), True),
    (lambda: MLPRegressor((), normalization=None), True),
    (lambda: MLPClassifier((8,), normalization="batch"), False),
    (lambda: MLPClassifier((8,), normalization="layer", dropout=0.2), False),
    (lambda: LSTMClassifier(units=(4,), normalization="layer"), False),
])
def test_the_native_loop_runs_the_networks_it_covers(make, covered):
    est = make().set_params(max_iter=2, random_state=0)
    X = np.random.default_rng(0).normal(size=(40, 5, 3) if isinstance(est, LSTMClassifier) else (40, 5))
    y = np.arange(40) % 3 if not isinstance(est, MLPRegressor) else X[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    program = _execution._PROGRAMS[est._program_key]
    assert (program.native is not None) == covered
    if covered:
        output, hidden, layer_norm, activation, _ = program.native
        assert hidden == len(est.hidden_layer_sizes) and layer_norm == (est.normalization == "layer")
        if hidden:  # (no hidden layer: no activation)
            assert activation == {"identity": "linear", "logistic": "sigmoid"}.get(est.activation, est.activation)
        assert output == ("identity" if isinstance(est, MLPRegressor) else "softmax")


def _op_args(**changes):
    """Arguments of a valid call of the op: one hidden layer of 3 units."""
    f64 = tf.float64
    args = dict(
        x=tf.zeros([10, 2], f64), y=tf.zeros([10, 1], f64),
        idx=tf.zeros([1, 2, 4], tf.int32), w=tf.ones([1, 2, 4], f64),
        idx_last=tf.zeros([1, 0], tf.int32), w_last=tf.zeros([1, 0], f64),
        batch_weight=tf.ones([1, 3], f64), epoch_weight=tf.ones([1], f64),
        n_epochs=tf.constant(1), active=tf.constant(True), tol=tf.constant(1e-4, f64),
        patience=tf.constant(10), best=tf.constant(np.inf, f64), count=tf.constant(0),
        t=tf.constant(0, tf.int64), lr=tf.constant(1e-3, f64), half_alpha=tf.constant(0.0, f64),
        beta_1=tf.constant(0.9, f64), beta_2=tf.constant(0.999, f64),
        epsilon=tf.constant(1e-8, f64), ln_epsilon=tf.constant(1e-3, f64),
        hidden=1, layer_norm=False, activation="relu", output="identity",
    )
    shapes = [[2, 3], [3], [3, 1], [1]]
    for name in ("params", "m", "v"):
        args[name] = [tf.fill(s, tf.constant(0.1, f64)) for s in shapes]
    args.update(changes)
    return args


def test_the_op_trains_a_linear_step_as_numpy():
    """One step of a network of one hidden linear layer on one batch,
    against the same step in float64 NumPy."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 2)), rng.normal(size=(10, 1))
    idx = np.array([[[3, 1, 4, 1]]], np.int32)
    w = np.array([[[1.0, 2.0, 0.5, 0.0]]])
    params = [rng.normal(size=s) for s in ([2, 3], [3], [3, 1], [1])]
    args = _op_args(x=tf.constant(x), y=tf.constant(y), idx=tf.constant(idx), w=tf.constant(w),
                    batch_weight=tf.constant([[3.5, 0.0]], tf.float64), activation="linear",
                    half_alpha=tf.constant(0.05, tf.float64),
                    params=[tf.constant(p) for p in params],
                    m=[tf.zeros_like(tf.constant(p)) for p in params],
                    v=[tf.zeros_like(tf.constant(p)) for p in params])
    losses, ran, new, m, v, t = _native.ops().keras_ln_mlp_epochs(**args)
    # NumPy: forward, half squared error, penalty, gradients, Adam's first step.
    W1, b1, W2, b2 = params
    xb, yb, wb = x[idx[0, 0]], y[idx[0, 0]], w[0, 0]
    h = xb @ W1 + b1
    out = h @ W2 + b2
    scale = 1 / wb.sum()
    loss = (np.sum(0.5 * ((out - yb) ** 2).mean(1) * wb) + 0.05 * ((W1 ** 2).sum() + (W2 ** 2).sum())) * scale
    dout = (out - yb) * (wb * scale)[:, None]
    grads = [xb.T @ (dout @ W2.T) + 0.1 * scale * W1, (dout @ W2.T).sum(0),
             h.T @ dout + 0.1 * scale * W2, dout.sum(0)]
    assert int(ran) == 1 and int(t) == 1
    np.testing.assert_allclose(losses.numpy(), [loss * 3.5], rtol=1e-12)
    for p, g, got_m, got_v, got in zip(params, grads, m, v, new):
        np.testing.assert_allclose(got_m.numpy(), 0.1 * g, rtol=1e-12)
        np.testing.assert_allclose(got_v.numpy(), 0.001 * g * g, rtol=1e-12)
        alpha = 1e-3 * np.sqrt(1 - 0.999) / (1 - 0.9)
        np.testing.assert_allclose(got.numpy(), p - alpha * (0.1 * g) / (np.sqrt(0.001 * g * g) + 1e-8),
                                   rtol=1e-10)


@pytest.mark.parametrize("changes, message", [
    (dict(idx=tf.fill([1, 2, 4], 10)), r"row index 10 out of \[0, 10\)"),
    (dict(w=tf.ones([1, 2, 3], tf.float64)), "w must be"),
    (dict(batch_weight=tf.ones([1, 2], tf.float64)), "batch_weight must be"),
    (dict(y=tf.zeros([9, 1], tf.float64)), "x and y must be"),
    (dict(hidden=2), "P must be 6 for 2 hidden layers, got 4"),
    (dict(lr=tf.constant([1e-3], tf.float64)), "Adam's scalars must be"),
])
def test_the_op_refuses_inconsistent_inputs(changes, message):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        _native.ops().keras_ln_mlp_epochs(**_op_args(**changes))


def test_a_valid_call_of_the_op_runs():
    losses, ran, *_ = _native.ops().keras_ln_mlp_epochs(**_op_args())
    assert int(ran) == 1 and np.isfinite(losses.numpy()).all()
