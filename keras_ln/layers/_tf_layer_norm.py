"""TensorFlow fast path for layer normalization.

The input is viewed as a matrix of shape (rows, features), the normalized
axes moved last. Outside XLA, float32 and float64 inputs of any size run two
native ops (`_native_kernels`, `_native/layer_norm_ops.cc`: one sweep over
the rows each, forward and backward, in shards of rows fixed by the size).
Inside an XLA-compiled caller, and without the native library or for other
dtypes, the forward pass is one XLA-compiled function that returns the
output and the per-row statistics, and the backward pass a second
XLA-compiled function with the closed-form gradient

    xhat   = (x - mean) * rstd
    g      = dy * gamma
    dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))
    dgamma = sum_rows(dy * xhat),   dbeta = sum_rows(dy)

Every reduction is written as a product with a constant vector, which XLA
lowers to the CPU's multi-threaded matrix kernels: on CPU these are several
times faster than XLA's own reductions, and more accurate. The statistics use
the corrected two-pass algorithm of the pure `keras.ops` path (`_layer_norm.py`):
a first mean `m1`, refined by the mean `dm` of the deviations, the two kept
apart so that inputs with a large offset keep their precision.

XLA compiles one program per input shape (about half a second each on CPU).
So that a new batch size or sequence length does not cost a compilation
every time, the row count is rounded up to a bucket (four per octave above
64 rows: at most 25% padding) and the rows in between are zero padding,
sliced off again. Padded rows contribute nothing to the gradients of gamma
and beta. Row counts that are already a bucket size pay no padding copy.
"""

import functools

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from keras_ln.layers import _native
from keras_ln.layers._layer_norm import layer_norm_reference
from keras_ln.layers._layer_norm import normalize_axes
from keras_ln.layers._layer_norm import stats_dtype

_MIN_BUCKET = 64
_STEPS_PER_OCTAVE = 4


def bucket_size(rows):
    """The padded row count for `rows` (int tensor): the smallest bucket >= rows.

    Buckets are 64 and then, within each octave [2^k, 2^(k+1)), the
    multiples of 2^k / 4, so at most a quarter of the rows are padding.
    """
    rows = tf.cast(rows, tf.int64)
    octave = tf.bitwise.left_shift(
        tf.constant(1, tf.int64),
        tf.cast(tf.math.floor(tf.math.log(tf.cast(tf.maximum(rows, 1), tf.float64)) / np.log(2.0)), tf.int64),
    )
    # Guard the float log against rounding at exact powers of two.
    octave = tf.where(octave > rows, octave // 2, octave)
    octave = tf.where(2 * octave <= rows, octave * 2, octave)
    step = tf.maximum(octave // _STEPS_PER_OCTAVE, 1)
    bucket = (rows + step - 1) // step * step
    return tf.cast(tf.maximum(bucket, _MIN_BUCKET), tf.int32)


def static_bucket_size(rows):
    """`bucket_size` of a row count known when tracing (a Python int)."""
    rows = max(int(rows), 1)
    octave = 1 << (rows.bit_length() - 1)
    step = max(octave // _STEPS_PER_OCTAVE, 1)
    return max(-(-rows // step) * step, _MIN_BUCKET)


def _pad_rows(t, rows, bucket):
    """Zero-pad the rows of a matrix `t` up to `bucket`.

    Unconditional, so that it also compiles inside an XLA-compiled caller;
    TensorFlow forwards the input unchanged when there is nothing to pad.
    """
    return tf.pad(t, [[0, bucket - rows], [0, 0]])


def _unpad_rows(t, rows):
    """The first `rows` rows (a view, not a copy, on TensorFlow's CPU kernels)."""
    return t[:rows]


@functools.lru_cache(maxsize=None)
def _kernels(features, epsilon, has_gamma, has_beta, in_dtype):
    """Build (and cache) the compiled forward/backward pair on (rows, features)."""
    sdtype = tf.as_dtype(stats_dtype(in_dtype))
    in_dtype = tf.as_dtype(in_dtype)

    def row_mean(t2):
        return tf.matmul(t2, tf.fill([features, 1], tf.constant(1 / features, sdtype)))

    def col_sum(t2):
        rows = tf.shape(t2)[0]
        return tf.matmul(tf.ones([1, rows], sdtype), t2)[0]

    def flat(p):
        return tf.reshape(tf.cast(p, sdtype), [-1])

    def forward(x2, *params):
        x2 = tf.cast(x2, sdtype)
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
        return tf.cast(y, in_dtype), m1, dm, rstd

    def backward(dy2, x2, m1, dm, rstd, *params):
        x2 = tf.cast(x2, sdtype)
        dy2 = tf.cast(dy2, sdtype)
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
        return [tf.cast(dx, in_dtype)] + grads

    return _compiled(forward), _compiled(backward)


def _compiled(fn):
    """`fn` as an XLA-compiled `tf.function` with retracing counted on its own.

    TensorFlow's frequent-retracing detector counts the traces of every
    `tf.function` built from the same Python code object together, so the
    per-configuration closures of `_kernels`, each traced once or twice,
    would add up and warn once five layers of different shapes have run.
    A `functools.partial` has no code object, so the detector keys on the
    object itself: each configuration is counted separately, and one that
    really retraces on every call is still reported.
    """
    return tf.function(
        functools.partial(fn), jit_compile=True, reduce_retracing=True,
        autograph=False,
    )


def _plain_kernels(features, epsilon, has_gamma, has_beta, in_dtype):
    """The forward/backward pair of `_kernels` in plain TensorFlow ops, for
    small inputs: there an XLA program's launch costs more than the
    arithmetic, and the op count is what counts. The same formulas with
    fewer ops: the normalized input kept from the forward pass instead of
    recomputed, row reductions instead of products, no reshape or cast
    that is a no-op.

    The backward takes `xhat` where `_kernels`' takes `m1`, `dm`, `rstd`:
    the forward returns `(y, xhat, rstd, None)`.
    """
    sdtype = tf.as_dtype(stats_dtype(in_dtype))
    in_dtype = tf.as_dtype(in_dtype)
    cast = in_dtype != sdtype

    def row_mean(t2):
        return tf.reduce_mean(t2, axis=1, keepdims=True)

    def flat(p):
        if p.shape.rank != 1:
            p = tf.reshape(p, [-1])
        return tf.cast(p, sdtype) if p.dtype != sdtype else p

    def like(grad, p):
        grad = tf.reshape(grad, tf.shape(p)) if p.shape.rank != 1 else grad
        return tf.cast(grad, p.dtype) if grad.dtype != p.dtype else grad

    def forward(x2, *params):
        x2 = tf.cast(x2, sdtype) if cast else x2
        d = x2 - row_mean(x2)
        dm = row_mean(d)  # the corrected two-pass algorithm, as `_kernels`
        rstd = tf.math.rsqrt(
            tf.maximum(row_mean(tf.square(d)) - tf.square(dm), 0.0) + epsilon)
        xhat = (d - dm) * rstd
        y = xhat
        if has_gamma:
            y = y * flat(params[0])
        if has_beta:
            y = y + flat(params[-1])
        return tf.cast(y, in_dtype) if cast else y, xhat, rstd, None

    def backward(dy2, x2, xhat, rstd, _, *params):
        dy2 = tf.cast(dy2, sdtype) if cast else dy2
        grads = []
        g = dy2
        if has_gamma:
            g = dy2 * flat(params[0])
            grads.append(like(tf.reduce_sum(dy2 * xhat, axis=0), params[0]))
        if has_beta:
            grads.append(like(tf.reduce_sum(dy2, axis=0), params[-1]))
        dx = rstd * (g - row_mean(g) - xhat * row_mean(g * xhat))
        return [tf.cast(dx, in_dtype) if cast else dx] + grads

    return forward, backward


def _native_kernels(features, epsilon, has_gamma, has_beta, in_dtype):
    """The forward/backward pair of `_plain_kernels` as the native ops
    (`_native`, layer_norm_ops.cc): one op per pass, the same formulas.
    For float32 and float64 inputs with parameters of the same dtype,
    outside XLA; the forward returns `(y, stats, None, None)`, the rows'
    m1, dm and rstd in one (3, rows) tensor, from which and `x2` the
    backward recomputes the normalized input."""
    mod = _native.ops()
    dtype = tf.as_dtype(in_dtype)

    # Tensors are made in the graph of each call (this pair is cached
    # across graphs).
    def none():
        return tf.zeros([0], dtype)

    def flat(p):
        return tf.reshape(p, [-1]) if p.shape.rank != 1 else p

    def forward(x2, *params):
        gamma = flat(params[0]) if has_gamma else none()
        beta = flat(params[-1]) if has_beta else none()
        y, stats = mod.keras_ln_layer_norm_forward(
            x2, gamma, beta, tf.constant(epsilon, dtype))
        return y, stats, None, None

    def backward(dy2, x2, stats, _, __, *params):
        gamma = flat(params[0]) if has_gamma else none()
        dx, dgamma, dbeta = mod.keras_ln_layer_norm_backward(dy2, x2, stats, gamma)
        grads = []
        if has_gamma:
            grads.append(tf.reshape(dgamma, tf.shape(params[0])))
        if has_beta:
            grads.append(tf.reshape(dbeta, tf.shape(params[-1])))
        return [dx] + grads

    return forward, backward


# Outside XLA, float32 and float64 inputs take the native ops of
# `_native_kernels`, whatever their size and whether their rows are known
# when tracing (measured on 2 cores, bench_layer_norm.py's forward and
# backward of (4096, 1024): 3.9-4.8x keras' speed, against 2.1x with the
# XLA kernels). Where those cannot run (no native
# library, other dtypes), inputs of at most this many elements (known when
# tracing) take the plain ops of `_plain_kernels`, larger ones the
# XLA-compiled `_kernels`. Inside an XLA-compiled caller every input takes
# `_kernels`' formulas, inlined there and unpadded (`_op`'s `xla`).
PLAIN_MAX_ELEMENTS = 1 << 16


@functools.lru_cache(maxsize=None)
def _op(axes, ndim, features, epsilon, has_gamma, has_beta, in_dtype, plain=False,
        native=False, xla=False):
    """The differentiable layer-norm op for one configuration. With `xla`
    (traced inside an XLA-compiled caller), `_kernels` without padding: the
    caller's program is compiled for its own shapes, and XLA's CPU backend
    compiles `_kernels`' reductions as products much better than the plain
    ops' row reductions (a (200, 100) row mean: 0.1 us against 4.4 us per
    call, five of them per layer and step of a small MLP)."""
    kernels = _native_kernels if native else _plain_kernels if plain else _kernels
    forward, backward = kernels(features, epsilon, has_gamma, has_beta, in_dtype)
    batch_axes = [a for a in range(ndim) if a not in axes]
    perm = batch_axes + list(axes)
    transpose = perm != list(range(ndim))
    inverse = [int(i) for i in np.argsort(perm)]

    def to_rows(t):
        """(rows, features) view of `t`, the normalized axes last."""
        if transpose:
            t = tf.transpose(t, perm)
        if t.shape.rank == 2 and t.shape[1] == features:
            return t
        return tf.reshape(t, [-1, features])

    def from_rows(t2, like):
        """Inverse of `to_rows` for a tensor shaped like `like`."""
        if like.shape.is_fully_defined():  # no shape ops where the shape is known
            shape = like.shape.as_list()
            if len(shape) == 2 and not transpose:
                return t2
            t = tf.reshape(t2, [shape[i] for i in perm] if transpose else shape)
        else:
            shape = tf.shape(like)
            t = tf.reshape(t2, tf.gather(shape, perm) if transpose else shape)
        return tf.transpose(t, inverse) if transpose else t

    def padding(x2):
        """The row count and its bucket; Python ints where the rows are
        known when tracing (a bucket-sized input then pays no op at all).
        The plain ops compile nothing, and inside an XLA-compiled caller
        the kernels are compiled with it: no padding."""
        if plain or xla:
            return 0, 0
        if x2.shape[0] is not None:
            return x2.shape[0], static_bucket_size(x2.shape[0])
        rows = tf.shape(x2)[0]
        return rows, bucket_size(rows)

    def pad(t2, rows, bucket):
        if plain or xla or isinstance(bucket, int) and bucket == rows:
            return t2
        return _pad_rows(t2, rows, bucket)

    def unpad(t2, rows, bucket):
        if plain or xla or isinstance(bucket, int) and bucket == rows:
            return t2
        return _unpad_rows(t2, rows)

    @tf.custom_gradient
    def layer_norm(x, *params):
        x2 = to_rows(x)
        rows, bucket = padding(x2)
        x2 = pad(x2, rows, bucket)
        y2, m1, dm, rstd = forward(x2, *params)
        y = from_rows(unpad(y2, rows, bucket), x)

        def grad(dy):
            dy2 = pad(to_rows(dy), rows, bucket)
            dx2, *param_grads = backward(dy2, x2, m1, dm, rstd, *params)
            return [from_rows(unpad(dx2, rows, bucket), x)] + param_grads

        return y, grad

    return layer_norm


def layer_norm(x, gamma, beta, axis, epsilon):
    """Fused layer normalization on TensorFlow; see `_fast_paths.layer_norm`."""
    x = tf.convert_to_tensor(x)
    ndim = x.shape.rank
    axes = tuple(normalize_axes(axis, ndim))
    dims = [x.shape[a] for a in axes]
    if any(d is None for d in dims):
        # Unknown normalized dimensions: no compiled kernel to key on.
        return layer_norm_reference(x, gamma, beta, axes, epsilon)
    params = [tf.convert_to_tensor(p) for p in (gamma, beta) if p is not None]
    xla = in_xla()
    native = (
        not xla and x.dtype in (tf.float32, tf.float64)
        and all(p.dtype == x.dtype for p in params)
        and _native.ops() is not None
    )
    plain = native or (not xla and x.shape.is_fully_defined()
                       and x.shape.num_elements() <= PLAIN_MAX_ELEMENTS)
    fn = _op(
        axes, ndim, int(np.prod(dims)), float(epsilon), gamma is not None,
        beta is not None, x.dtype.name, plain, native, xla,
    )
    return fn(x, *params)


def in_xla():
    """Whether the code being traced will be compiled by XLA (inside a
    `tf.function(jit_compile=True)`, e.g. keras' `jit_compile=True`)."""
    return control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph())
