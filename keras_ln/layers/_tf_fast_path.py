"""TensorFlow fast path for layer normalization.

The input is viewed as a matrix of shape (rows, features), the normalized
axes moved last. The forward pass is one XLA-compiled function that returns
the output and the per-row statistics; the backward pass is a second
XLA-compiled function with the closed-form gradient

    xhat   = (x - mean) * rstd
    g      = dy * gamma
    dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))
    dgamma = sum_rows(dy * xhat),   dbeta = sum_rows(dy)

Every reduction is written as a product with a constant vector, which XLA
lowers to the CPU's multi-threaded matrix kernels: on CPU these are several
times faster than XLA's own reductions, and more accurate. The statistics use
the corrected two-pass algorithm of the pure `keras.ops` path (`_ops.py`):
a first mean `m1`, refined by the mean `dm` of the deviations, the two kept
apart so that inputs with a large offset keep their precision.
"""

import functools

import numpy as np
import tensorflow as tf

from keras_ln.layers._ops import layer_norm_reference
from keras_ln.layers._ops import normalize_axes
from keras_ln.layers._ops import stats_dtype


@functools.lru_cache(maxsize=None)
def _kernels(axes, ndim, features, epsilon, has_gamma, has_beta, in_dtype):
    """Build (and cache) the compiled forward/backward pair for one config.

    `features` (the product of the normalized dimensions) is part of the key:
    the compiled functions relax the batch dimensions only.
    """
    batch_axes = [a for a in range(ndim) if a not in axes]
    perm = batch_axes + list(axes)
    transpose = perm != list(range(ndim))
    inverse = list(np.argsort(perm))
    sdtype = tf.as_dtype(stats_dtype(in_dtype))
    in_dtype = tf.as_dtype(in_dtype)

    def to_rows(t):
        """(rows, features) view of `t`, the normalized axes last."""
        if transpose:
            t = tf.transpose(t, perm)
        return tf.reshape(tf.cast(t, sdtype), [-1, features])

    def from_rows(t2, like):
        """Inverse of `to_rows` for a tensor shaped like `like`."""
        shape = tf.shape(like)
        t = tf.reshape(t2, tf.gather(shape, perm) if transpose else shape)
        if transpose:
            t = tf.transpose(t, inverse)
        return tf.cast(t, in_dtype)

    def row_mean(t2):
        return tf.matmul(t2, tf.fill([features, 1], tf.constant(1 / features, sdtype)))

    def col_sum(t2):
        rows = tf.shape(t2)[0]
        return tf.matmul(tf.ones([1, rows], sdtype), t2)[0]

    def flat(p):
        return tf.reshape(tf.cast(p, sdtype), [-1])

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def forward(x, *params):
        x2 = to_rows(x)
        m1 = row_mean(x2)
        d = x2 - m1
        dm = row_mean(d)
        var = tf.maximum(row_mean(tf.square(d)) - tf.square(dm), 0.0)
        rstd = tf.math.rsqrt(var + epsilon)
        y = (d - dm) * rstd
        if has_gamma:
            y = y * flat(params[0])
        if has_beta:
            y = y + flat(params[-1])
        return from_rows(y, x), m1, dm, rstd

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def backward(dy, x, m1, dm, rstd, *params):
        x2 = to_rows(x)
        dy2 = to_rows(dy)
        xhat = ((x2 - m1) - dm) * rstd
        grads = []
        g = dy2
        if has_gamma:
            gamma = params[0]
            g = dy2 * flat(gamma)
            dgamma = col_sum(dy2 * xhat)
            grads.append(tf.cast(tf.reshape(dgamma, tf.shape(gamma)), gamma.dtype))
        if has_beta:
            beta = params[-1]
            dbeta = col_sum(dy2)
            grads.append(tf.cast(tf.reshape(dbeta, tf.shape(beta)), beta.dtype))
        dx = rstd * (g - row_mean(g) - xhat * row_mean(g * xhat))
        return [from_rows(dx, x)] + grads

    @tf.custom_gradient
    def layer_norm(x, *params):
        y, m1, dm, rstd = forward(x, *params)

        def grad(dy):
            return backward(dy, x, m1, dm, rstd, *params)

        return y, grad

    return layer_norm


def layer_norm(x, gamma, beta, axis, epsilon):
    """Fused layer normalization on TensorFlow; see `_ops.layer_norm`."""
    x = tf.convert_to_tensor(x)
    ndim = x.shape.rank
    axes = tuple(normalize_axes(axis, ndim))
    params = [tf.convert_to_tensor(p) for p in (gamma, beta) if p is not None]
    dims = [x.shape[a] for a in axes]
    if any(d is None for d in dims):
        # Unknown normalized dimensions: no compiled kernel to key on.
        return layer_norm_reference(x, gamma, beta, axes, epsilon)
    fn = _kernels(
        axes, ndim, int(np.prod(dims)), float(epsilon), gamma is not None,
        beta is not None, x.dtype.name,
    )
    return fn(x, *params)
