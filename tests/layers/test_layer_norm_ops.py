"""LayerNormalization's native ops (layer_norm_ops.cc) on their own: a row's
bits wherever it sits, their formulas bit for bit in NumPy, bad shapes, the
backward into dy's buffer, and shards against float64 NumPy."""

import numpy as np
import pytest
import tensorflow as tf

import keras_ln
from tests.layers.test_layer_normalization import outputs_and_gradients


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("features", [7, 40, 100, 130])
def test_native_layer_norm_rows_do_not_depend_on_their_position(dtype, features):
    """The native layer-norm ops normalize a row, and take its input
    gradient, to the same bits wherever it sits in its batch: alone, or
    shifted by a few rows (a row of 40 float32 values starts at another
    alignment every other row, and the row sums no longer start at the
    first aligned value)."""
    from keras_ln.layers import _native
    from tests.layers.test_tf_recurrent_kernels import _native_or_skip

    _native_or_skip()
    mod = _native.ops()
    rng = np.random.default_rng(features)
    x = (rng.normal(size=(64, features)) * 3 + 1).astype(dtype)
    dy = rng.normal(size=(64, features)).astype(dtype)
    gamma, beta = (rng.normal(size=features).astype(dtype) for _ in range(2))
    eps = tf.constant(1e-3, dtype)

    def forward_backward(rows):
        y, stats = mod.keras_ln_layer_norm_forward(x[rows], gamma, beta, eps)
        dx = mod.keras_ln_layer_norm_backward(dy[rows], x[rows], stats, gamma)[0]
        return y.numpy(), dx.numpy()

    y, dx = forward_backward(slice(None))
    for rows in (slice(7, 8), slice(3, 19), slice(1, 64), slice(63, 64)):
        y_part, dx_part = forward_backward(rows)
        np.testing.assert_array_equal(y_part, y[rows])
        np.testing.assert_array_equal(dx_part, dx[rows])


def test_native_ops_reject_bad_shapes():
    from keras_ln.layers import _native

    mod = _native.ops()
    if mod is None:
        pytest.skip(f"native ops not built: {_native.load_error()}")
    x = tf.zeros([4, 3])
    eps = tf.constant(1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"gamma must be \(3,\) or \(0,\)"):
        mod.keras_ln_layer_norm_forward(x, tf.zeros([2]), tf.zeros([0]), eps)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must be \(rows, features\)"):
        mod.keras_ln_layer_norm_forward(tf.zeros([4]), tf.zeros([0]), tf.zeros([0]), eps)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"stats must be \[3,4\]"):
        mod.keras_ln_layer_norm_backward(x, x, tf.zeros([3, 3]), tf.zeros([0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must be \[4,3\]"):
        mod.keras_ln_layer_norm_backward(x, tf.zeros([4, 2]), tf.zeros([3, 4]), tf.zeros([0]))
    # epsilon is a scalar, as in the recurrent ops (kernels.h, ScalarInput)
    for shape in ([1], [2]):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"epsilon must be a scalar, got \[{shape[0]}\]"):
            mod.keras_ln_layer_norm_forward(x, tf.zeros([0]), tf.zeros([0]),
                                            tf.fill(shape, 1e-3))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(64, 40), (37, 17), (2100, 700)],
                         ids=["one-shard", "odd", "8-shards"])
def test_native_backward_into_dys_buffer_gives_the_same_bits(dtype, shape):
    """In a graph, the backward op writes dx into dy's buffer where nothing
    else holds dy (a gradient flowing back through a network); eagerly, dy
    is held by its Python tensor and dx gets a buffer of its own. Both give
    the same bits, and dy is left alone where it is held."""
    from keras_ln.layers import _native
    from tests.layers.test_tf_recurrent_kernels import _native_or_skip

    _native_or_skip()
    mod = _native.ops()
    rng = np.random.default_rng(5)
    x = tf.constant((rng.normal(size=shape) * 3 + 1).astype(dtype))
    half_dy = tf.constant(rng.normal(size=shape).astype(dtype))
    gamma = tf.constant(rng.normal(size=shape[1]).astype(dtype))
    _, stats = mod.keras_ln_layer_norm_forward(x, gamma, gamma, tf.constant(1e-3, dtype))

    @tf.function
    def temporary_dy():
        return mod.keras_ln_layer_norm_backward(half_dy * 2, x, stats, gamma)

    dy = half_dy * 2
    held = [t.numpy() for t in mod.keras_ln_layer_norm_backward(dy, x, stats, gamma)]
    np.testing.assert_array_equal(dy.numpy(), half_dy.numpy() * 2)  # not overwritten
    for in_place, own in zip(temporary_dy(), held):
        np.testing.assert_array_equal(in_place.numpy(), own)


@pytest.mark.parametrize("shape", [(1024, 64), (2100, 700)], ids=["2-shards", "8-shards"])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_native_ops_in_shards_match_float64_numpy(dtype, rtol, shape):
    """The native path split in two shards, and in eight (the most; an
    input that took the XLA kernels before the native ops took every
    size); outputs and all gradients against float64 NumPy."""
    rng = np.random.default_rng(4)
    x = rng.normal(3.0, 2.0, size=shape)
    dy = rng.normal(size=shape)
    layer = keras_ln.LayerNormalization(dtype=dtype)
    layer.build(x.shape)
    gamma, beta = rng.normal(size=shape[1]), rng.normal(size=shape[1])
    layer.set_weights([gamma.astype(dtype), beta.astype(dtype)])
    y, dx, dgamma, dbeta = outputs_and_gradients(
        layer, tf.constant(x, dtype), tf.constant(dy, dtype), True)
    mean = x.mean(1, keepdims=True)
    xhat = (x - mean) / np.sqrt(x.var(1, keepdims=True) + layer.epsilon)
    g = dy * gamma
    rstd = 1 / np.sqrt(x.var(1, keepdims=True) + layer.epsilon)
    expected_dx = rstd * (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True))
    np.testing.assert_allclose(y, xhat * gamma + beta, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dx, expected_dx, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dgamma, (dy * xhat).sum(0), rtol=rtol, atol=rtol * 100)
    np.testing.assert_allclose(dbeta, dy.sum(0), rtol=rtol, atol=rtol * 100)


def _row_sum_in_native_order(v):
    """A row's sum in the native ops' order (kernels.h, RowSum): lane l of
    32 adds v[l], v[l + 32], ... over whole blocks of 32, a remaining 16 go
    to the first 16 lanes, the lanes fold in halves (32 -> 16 -> 8 -> 4,
    then (l0 + l2) + (l1 + l3)), and the last elements are added one by
    one; every addition in the row's dtype."""
    dtype = v.dtype.type
    lanes = np.zeros(32, v.dtype)
    j = 0
    while j + 32 <= len(v):
        lanes = lanes + v[j:j + 32]
        j += 32
    if j + 16 <= len(v):
        lanes[:16] = lanes[:16] + v[j:j + 16]
        j += 16
    l16 = lanes[:16] + lanes[16:]
    l8 = l16[:8] + l16[8:]
    l4 = l8[:4] + l8[4:]
    total = (l4[0] + l4[2]) + (l4[1] + l4[3])
    for k in range(j, len(v)):
        total = dtype(total + v[k])
    return dtype(total)


def _native_formulas(x, dy, gamma, beta, eps):
    """The native ops' forward (y; each row's m1, dm and rstd) and backward
    (dx, dgamma, dbeta) in NumPy, operation by operation in their dtype
    and order (layer_norm_ops.cc; one shard: the column sums add up the
    rows in order)."""
    T = x.dtype.type
    n, F = x.shape
    y, dx = np.empty_like(x), np.empty_like(x)
    stats = np.empty((3, n), x.dtype)
    dgamma, dbeta = np.zeros(F, x.dtype), np.zeros(F, x.dtype)
    for i in range(n):
        m1 = T(_row_sum_in_native_order(x[i]) / T(F))
        d = x[i] - m1
        dm = T(_row_sum_in_native_order(d) / T(F))
        d2 = T(_row_sum_in_native_order(d * d) / T(F))
        v = T(d2 - T(dm * dm))
        r = T(T(1) / np.sqrt(T(max(v, T(0)) + eps)))
        stats[:, i] = m1, dm, r
        xh = (d - dm) * r
        y[i] = xh * gamma + beta
        g = dy[i] * gamma
        dgamma = dgamma + dy[i] * xh
        dbeta = dbeta + dy[i]
        mg = T(_row_sum_in_native_order(g) / T(F))
        mgx = T(_row_sum_in_native_order(g * xh) / T(F))
        dx[i] = r * ((g - mg) - xh * mgx)
    return y, stats, dx, dgamma, dbeta


def _assert_same_bits(actual, expected):
    """Equal bit for bit (signed zeros too); NaN where NaN, whatever its
    payload."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    kind = {4: np.uint32, 8: np.uint64}[expected.dtype.itemsize]
    np.testing.assert_array_equal(actual[~nan].view(kind), expected[~nan].view(kind))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("features", [5, 16, 40, 64, 100, 129])
@pytest.mark.parametrize("eps", [1e-3, 1e-12, 0.0])
def test_native_ops_are_their_formulas_bit_for_bit(dtype, features, eps):
    """The native forward and backward give the bits of their formulas
    evaluated in NumPy in the same order (sums, divisions, square root,
    element by element), on ordinary rows and on edge rows: zeros, -0.0,
    constant rows (a zero variance: rstd is 1 / sqrt(eps), inf at eps 0),
    huge and tiny values, NaN and infinities. The ops compute a block of
    rows' divisions and square roots as vector instructions, and these must
    round as the scalar ones. (No value or result is a denormal: TensorFlow
    runs its ops with denormals flushed to zero, NumPy does not.)"""
    from keras_ln.layers import _native
    from tests.layers.test_tf_recurrent_kernels import _native_or_skip

    _native_or_skip()
    mod = _native.ops()
    rng = np.random.default_rng(features)
    F = features
    edge = [np.zeros(F), -np.zeros(F), np.full(F, 3.0), np.full(F, 1e30),
            rng.normal(size=F) * 1e30, rng.normal(size=F) * 1e-10, rng.normal(size=F) + 1e6,
            np.r_[np.nan, rng.normal(size=F - 1)], np.r_[np.inf, rng.normal(size=F - 1)],
            np.r_[-np.inf, np.inf, np.zeros(F - 2)]]
    x = np.concatenate([np.array(edge), rng.normal(size=(10, F)) * 2 + 1]).astype(dtype)
    x = x[rng.permutation(len(x))]
    dy = rng.normal(size=x.shape).astype(dtype)
    gamma, beta = (rng.normal(size=F).astype(dtype) for _ in range(2))
    y, stats = mod.keras_ln_layer_norm_forward(x, gamma, beta, tf.constant(eps, dtype))
    dx, dgamma, dbeta = mod.keras_ln_layer_norm_backward(dy, x, stats, gamma)
    with np.errstate(all="ignore"):
        expected = _native_formulas(x, dy, gamma, beta, x.dtype.type(eps))
    for actual, want in zip((y, stats, dx, dgamma, dbeta), expected):
        _assert_same_bits(actual.numpy(), want)
