"""`BatchNormLSTM`'s kernels on TensorFlow (private): the TensorFlow loops
below, the glue of the native ops (`keras_ln.layers._native`, section
"native ops"), and the layer's calls, which choose between them
(`_tf_backend.kernel_choice`).

In the TensorFlow kernel the whole training recurrence is one
differentiable operation: a forward
`tf.while_loop` that keeps only the states entering each step, and a
hand-written backward-through-time `tf.while_loop` that recomputes each
step's activations from them (both compile under XLA too, see `JIT`) (as the LN-LSTM kernel of
`_tf_recurrent_kernels.py`: automatic differentiation of keras' loop runs
every small op with TensorFlow's per-op overhead and stores every
intermediate).

One step `t`, time-major, `v` (batch, 1) the rows not masked at `t` and
`n = max(sum(v), 1)`; batch statistics over those rows only (two-pass):

    r    = h @ U;        rhat = (r - mean_v(r)) * rsqrt(var_v(r) + eps)
    z    = xn_t + rhat * gamma_r            (xn_t: the normalized input + bias)
    i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g)
    c'   = f * c + i * g;  chat = (c' - mean_v(c')) * rsqrt(var_v(c') + eps)
    h'   = o * tanh(chat * gamma_c + beta_c)

and keras' mask semantics: a masked row keeps its states and outputs its
previous output (zeros before its first step), or zeros with
`zero_output`. The gradient of a batch norm over the rows `v`, for an
upstream `dy` of `yhat`, is

    dx = rstd * (dy - v * sum(dy) / n - v * yhat * sum(dy * yhat) / n)

(`dy` is 0 on masked rows). Besides the outputs and last states, the
forward pass returns every step's batch statistics of `r` and `c'`, from
which the layer moves its moving statistics after the loop.
"""

import functools

import keras
import tensorflow as tf
from keras import activations
from keras import ops

from keras_ln.layers import _fast_paths
from keras_ln.layers import _native
from keras_ln.layers import _recurrent
from keras_ln.layers._tf_recurrent_kernels import _ta


def _moments(x, w):
    """Deviations from the mean and the variance over the rows, weighted by
    the row vector `w` (1, batch): `v / n`. Reductions over the batch are
    products with `w` (XLA on CPU compiles those much better than
    reductions)."""
    mean = tf.matmul(w, x)
    d = x - mean
    return d, tf.matmul(w, d * d), mean


def _step(xn_t, w, h, c, U, gr, gs, bs, eps):
    """One forward step; returns the new h, c', r and what the backward
    step needs. `xn_t` is the step's input, or its four gate blocks
    (`_blocks`)."""
    r = tf.matmul(h, U)
    d, var, mean = _moments(r, w)
    sr = tf.math.rsqrt(var + eps)
    rhat = d * sr
    zi, zf, zg, zo = _recurrent.add_in_blocks(xn_t, rhat * gr, 4)
    i, f, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.sigmoid(zo)
    g = tf.tanh(zg)
    cn = f * c + i * g
    dc, var_c, mean_c = _moments(cn, w)
    sc = tf.math.rsqrt(var_c + eps)
    chat = dc * sc
    th = tf.tanh(chat * gs + bs)
    stats = (mean[0], var[0], mean_c[0], var_c[0])
    return o * th, cn, stats, (rhat, sr, i, f, g, o, chat, sc, th)


def _norm_backward(dy, yhat, rstd, w, v):
    """`dy` is 0 on masked rows; `v` None: no row is masked."""
    mean_dy = tf.matmul(w, dy)
    mean_dyy = tf.matmul(w, dy * yhat)
    if v is None:
        return rstd * (dy - mean_dy - yhat * mean_dyy)
    return rstd * (dy - v * mean_dy - (v * yhat) * mean_dyy)


def _weights(valid):
    """Per step the row vector `v / max(sum(v), 1)`, (T, 1, batch)."""
    rows = tf.transpose(valid, [0, 2, 1])
    return rows / tf.maximum(tf.reduce_sum(rows, axis=2, keepdims=True), 1.0)


def _uniform(h0):
    """The row vector `1 / batch` (1, batch), for unmasked steps."""
    batch = tf.shape(h0)[0]
    return tf.fill([1, batch], 1.0 / tf.cast(batch, h0.dtype))


def _blocks(xn, apart):
    """`t -> ` step t's input: its four gate blocks, sliced apart before
    the loop, with `apart` (`_fast_paths.gate_blocks_apart()`: inside an
    XLA-compiled function), else the whole row."""
    if not apart:
        return lambda t: xn[t]
    parts = tf.split(xn, 4, axis=-1)
    return lambda t: tuple(x[t] for x in parts)


def _forward(xn, valid, h0, c0, U, gr, gs, bs, eps, masked, zero_output, units,
             apart):
    T = tf.shape(xn)[0]
    xn_at = _blocks(xn, apart)
    dtype = xn.dtype
    eps = tf.constant(eps, dtype)
    weights = _weights(valid) if masked else None
    uniform = _uniform(h0)
    narrow = tf.TensorShape([None, units])
    stat_shapes = [tf.TensorShape([4 * units])] * 2 + [tf.TensorShape([units])] * 2

    def body(t, h, c, out, outs, stats, hs, cprev):
        v = valid[t] if masked else None
        w = weights[t] if masked else uniform
        hn, cn, step_stats, _ = _step(xn_at(t), w, h, c, U, gr, gs, bs, eps)
        stats = [a.write(t, value) for a, value in zip(stats, step_stats)]
        hs, cprev = hs.write(t, h), cprev.write(t, c)
        if masked:
            keep = v > 0
            out = tf.where(keep, hn, tf.zeros_like(hn) if zero_output else out)
            h, c = tf.where(keep, hn, h), tf.where(keep, cn, c)
        else:
            out, h, c = hn, hn, cn
        return t + 1, h, c, out, outs.write(t, out), stats, hs, cprev

    _, h, c, _, outs, stats, hs, cprev = tf.while_loop(
        lambda t, *_: t < T, body,
        [tf.constant(0), h0, c0, tf.zeros_like(h0), _ta(dtype, T, narrow),
         [_ta(dtype, T, shape) for shape in stat_shapes],
         _ta(dtype, T, narrow), _ta(dtype, T, narrow)],
        maximum_iterations=T,
    )
    return (outs.stack(), h, c, tuple(a.stack() for a in stats), hs.stack(),
            cprev.stack())


def _backward(douts, dhT, dcT, xn, valid, hs, cprev, U, gr, gs, bs, eps,
              masked, zero_output, units, apart):
    T = tf.shape(xn)[0]
    dtype = xn.dtype
    eps = tf.constant(eps, dtype)
    weights = _weights(valid) if masked else None
    uniform = _uniform(dhT)
    ones = tf.ones_like(uniform)
    one = tf.constant(1.0, dtype)
    UT = tf.transpose(U)
    xn_at = _blocks(xn, apart)

    def colsum(x):
        return tf.matmul(ones, x)[0]

    def body(k, gh, gc, gout, dxn, dU, dgr, dgs, dbs):
        t = T - 1 - k
        v = valid[t] if masked else None
        w = weights[t] if masked else uniform
        h, c = hs[t], cprev[t]
        _, _, _, (rhat, sr, i, f, g, o, chat, sc, th) = _step(
            xn_at(t), w, h, c, U, gr, gs, bs, eps)
        g_out = douts[t] + gout
        if masked:
            dhn = v * (g_out + gh)
            pass_h, pass_c = (one - v) * gh, (one - v) * gc
            gout = tf.zeros_like(gout) if zero_output else (one - v) * g_out
            dcn = v * gc
        else:
            dhn, dcn = g_out + gh, gc
        do = dhn * th
        da = dhn * o * (one - th * th)
        dgs += colsum(da * chat)
        dbs += colsum(da)
        dcn += _norm_backward(da * gs, chat, sc, w, v)
        di, df, dg = dcn * g, dcn * c, dcn * i
        dz = tf.concat([di * i * (one - i), df * f * (one - f),
                        dg * (one - g * g), do * o * (one - o)], axis=-1)
        dgr += colsum(dz * rhat)
        dr = _norm_backward(dz * gr, rhat, sr, w, v)
        dU += tf.matmul(h, dr, transpose_a=True)
        gh_prev = tf.matmul(dr, UT)
        gc_prev = dcn * f
        if masked:
            gh_prev, gc_prev = gh_prev + pass_h, gc_prev + pass_c
        return (k + 1, gh_prev, gc_prev, gout, dxn.write(t, dz), dU, dgr,
                dgs, dbs)

    wide = tf.TensorShape([None, 4 * units])
    _, dh0, dc0, _, dxn, dU, dgr, dgs, dbs = tf.while_loop(
        lambda k, *_: k < T, body,
        [tf.constant(0), dhT, dcT, tf.zeros_like(dhT), _ta(dtype, T, wide),
         tf.zeros_like(U), tf.zeros_like(gr), tf.zeros_like(gs),
         tf.zeros_like(bs)],
        maximum_iterations=T,
    )
    return dxn.stack(), dh0, dc0, dU, dgr, dgs, dbs


def _inference(xn, valid, h0, c0, U, ar, br, ac, bc, masked, zero_output, units,
               apart):
    """Inference: each step's norms with the moving statistics, folded into
    a scale and a shift per step (`ar`, `br` (T, 4 * units) of the
    recurrent norm, `ac`, `bc` (T, units) of the state norm, gammas and
    beta included). Plain TensorFlow ops: differentiable by autodiff."""
    T = tf.shape(xn)[0]
    narrow = tf.TensorShape([None, units])
    # With `apart` the gate blocks of the per-step inputs are taken apart
    # before the loop (`_blocks`): the same additions and products.
    if apart:
        xn4, ar4, br4 = (tf.split(v, 4, axis=-1) for v in (xn, ar, br))

    def body(t, h, c, out, outs):
        r = tf.matmul(h, U)
        if apart:
            zi, zf, zg, zo = (
                x[t] + rk * a[t] + b[t]
                for x, rk, a, b in zip(xn4, tf.split(r, 4, axis=-1), ar4, br4)
            )
        else:
            zi, zf, zg, zo = tf.split(xn[t] + r * ar[t] + br[t], 4, axis=-1)
        cn = tf.sigmoid(zf) * c + tf.sigmoid(zi) * tf.tanh(zg)
        hn = tf.sigmoid(zo) * tf.tanh(cn * ac[t] + bc[t])
        if masked:
            keep = valid[t] > 0
            out = tf.where(keep, hn, tf.zeros_like(hn) if zero_output else out)
            h, c = tf.where(keep, hn, h), tf.where(keep, cn, c)
        else:
            out, h, c = hn, hn, cn
        return t + 1, h, c, out, outs.write(t, out)

    # maximum_iterations: a gradient of this loop (inference differentiated
    # by autodiff, e.g. with respect to the input) accumulates each step's
    # values in lists, which an XLA-compiled caller needs bounded.
    _, h, c, _, outs = tf.while_loop(
        lambda t, *_: t < T, body,
        [tf.constant(0), h0, c0, tf.zeros_like(h0), _ta(xn.dtype, T, narrow)],
        maximum_iterations=T,
    )
    return outs.stack(), h, c


@functools.lru_cache(maxsize=None)
def _inference_compiled(masked, zero_output, units, apart):
    # `apart` is decided by the caller, outside this function: a trace made
    # outside XLA would otherwise serve inside it too, and the other way.
    return tf.function(
        functools.partial(_inference, masked=masked, zero_output=zero_output,
                          units=units, apart=apart),
        autograph=False, reduce_retracing=True)


def bn_lstm_inference(xn, valid, h0, c0, U, ar, br, ac, bc, masked, zero_output):
    """The inference recurrence (see `_inference`); `xn`, `valid` as in
    `bn_lstm_recurrence`. Returns `(outputs, h, c)`."""
    fn = _inference_compiled(bool(masked), bool(zero_output), int(U.shape[0]),
                             _fast_paths.gate_blocks_apart())
    return fn(*[tf.convert_to_tensor(v) for v in (xn, valid, h0, c0, U, ar, br, ac, bc)])


# Whether the loops are XLA-compiled on their own. Off: measured on CPU (batch
# 64, 100 steps, 128 units), the loops as TensorFlow graphs take 28 ms
# forward and backward, XLA-compiled 49 ms (its products are slower than
# TensorFlow's kernels at these sizes). Inside an XLA-compiled caller
# (`jit_compile=True`) they are compiled with it either way.
JIT = False


@functools.lru_cache(maxsize=None)
def _compiled(eps, masked, zero_output, units, jit, apart):
    """The loops of one configuration and width; `reduce_retracing` relaxes
    the batch and time dimensions after a second shape (the width is fixed
    by the key). `apart`: `_blocks`, decided by the caller (as for
    `_inference_compiled`)."""
    config = dict(eps=eps, masked=masked, zero_output=zero_output, units=units,
                  apart=apart)
    fwd = functools.partial(_forward, **config)
    bwd = functools.partial(_backward, **config)
    return (tf.function(fwd, jit_compile=jit, autograph=False, reduce_retracing=True),
            tf.function(bwd, jit_compile=jit, autograph=False, reduce_retracing=True))


def bn_lstm_recurrence(xn, valid, h0, c0, U, gr, gs, bs, eps, masked,
                       zero_output):
    """The training-mode recurrence, differentiable in `xn, h0, c0, U, gr,
    gs, bs`.

    Args:
        xn: (T, batch, 4 * units) normalized input projection plus bias,
            time-major, in processing order.
        valid: (T, batch, 1) 1.0 where a row is not masked (ignored unless
            `masked`), in the dtype of `xn`.
        h0, c0: (batch, units) initial states.
        U: (units, 4 * units) recurrent kernel.
        gr: (4 * units,) recurrent norm's gamma; gs, bs: (units,) the state
            norm's gamma and beta.
        eps: the norms' epsilon (a float).

    Returns:
        `(outputs, h, c, mean_r, var_r, mean_c, var_c)`: outputs (T, batch,
        units), last states, and every step's batch statistics of the
        recurrent projection (T, 4 * units) and of the new cell state (T,
        units), for the moving statistics (no gradient flows through those).
    """
    fwd, bwd = _compiled(float(eps), bool(masked), bool(zero_output), int(U.shape[0]), JIT,
                         _fast_paths.gate_blocks_apart())

    valid = tf.stop_gradient(valid)

    @tf.custom_gradient
    def recurrence(*inputs):
        # No tape inside: the compiled loops are differentiated by hand.
        inputs = [tf.stop_gradient(v) for v in inputs]
        xn, h0, c0, U, gr, gs, bs = inputs
        outs, h, c, stats, hs, cprev = fwd(xn, valid, h0, c0, U, gr, gs, bs)

        def grad(douts, dh, dc, *_stats):
            upstream = [tf.zeros_like(r) if d is None else tf.stop_gradient(d)
                        for d, r in ((douts, outs), (dh, h), (dc, c))]
            return bwd(*upstream, xn, valid, hs, cprev, U, gr, gs, bs)

        return (outs, h, c) + stats, grad

    # Variables are read here, outside the custom gradient (which then sees
    # tensors only; their reads carry the gradients to the variables).
    return recurrence(*[tf.convert_to_tensor(v) for v in (xn, h0, c0, U, gr, gs, bs)])


# ------------------------------------------------------------ native ops
#
# With the library of `keras_ln.layers._native`, the training recurrence is
# one op forward and one backward (C++: the units split into shards that run
# each step concurrently, see bn_lstm_ops.cc), and the
# inference recurrence one op (the batch split into shards). Same inputs
# and results as the loops above.


def _valid_or_empty(valid, masked, dtype):
    return valid if masked else tf.zeros([0], dtype)


def bn_lstm_recurrence_native(x, w, gx, bias, valid, h0, c0, U, gr, gs, bs,
                              eps, masked, zero_output, save=True):
    """The training-mode recurrence by the native ops (check
    `_native.ops() is not None` first), input side included: the input
    projection `x @ w`, batch-normalized per step over the valid rows,
    scaled by `gx` plus `bias`, is computed inside the forward op (and its
    gradients inside the backward op), so TensorFlow never handles the wide
    (time, batch, 4 * units) projection. Differentiable in `x, w, gx, bias,
    h0, c0, U, gr, gs, bs`.

    Args:
        x: (T, batch, features), time-major, in processing order.
        w: (features, 4 * units) input kernel; gx, bias: (4 * units,).
        save: False for a pass that only needs the outputs and statistics
            (`_batch_statistics.statistics_mode`): the forward op then keeps
            none of the activations that the backward op reads (for 2,000
            sequences of 50 steps and 64 units, 307 MB), and the results
            have no gradient (taking one raises TensorFlow's LookupError).
        Others as in `bn_lstm_recurrence`.

    Returns:
        `bn_lstm_recurrence`'s results, then every step's batch statistics
        of the input projection `mean_x, var_x` (T, 4 * units).
    """
    mod = _native.ops()
    attrs = dict(masked=bool(masked), zero_output=bool(zero_output))
    valid = tf.stop_gradient(_valid_or_empty(valid, masked, x.dtype))
    eps = tf.constant(eps, x.dtype)
    if not save:
        outs = mod.keras_ln_bn_lstm_forward(x, w, gx, bias, valid, h0, c0, U,
                                            gr, gs, bs, eps, save=False, **attrs)
        return tuple(outs[:7]) + tuple(outs[13:15])

    @tf.custom_gradient
    def recurrence(x, w, gx, bias, h0, c0, U, gr, gs, bs):
        outs = mod.keras_ln_bn_lstm_forward(x, w, gx, bias, valid, h0, c0, U,
                                            gr, gs, bs, eps, **attrs)
        ys, h, c, mean_r, var_r, mean_c, var_c = outs[:7]
        gates, rhat, chat, th, hs, cs, mean_x, var_x = outs[7:]

        def grad(dys, dh, dc, *_stats):
            upstream = [tf.zeros_like(r) if d is None else d
                        for d, r in ((dys, ys), (dh, h), (dc, c))]
            return mod.keras_ln_bn_lstm_backward(
                gates, rhat, chat, th, var_r, var_c, hs, cs, h0, c0, U,
                valid, gr, gs, *upstream, x, w, gx, mean_x, var_x, eps, **attrs)

        return (ys, h, c, mean_r, var_r, mean_c, var_c, mean_x, var_x), grad

    return recurrence(*[tf.convert_to_tensor(v)
                        for v in (x, w, gx, bias, h0, c0, U, gr, gs, bs)])


def bn_lstm_inference_native(xn, valid, h0, c0, U, ar, br, ac, bc, masked,
                             zero_output):
    """`bn_lstm_inference` by the native op. Differentiable (a frozen
    layer, or gradients of a prediction): its gradient differentiates
    `bn_lstm_inference`, which computes the same, only when asked for."""
    op = _native.ops().keras_ln_bn_lstm_inference
    flat_valid = _valid_or_empty(valid, masked, xn.dtype)

    @tf.custom_gradient
    def inference(*inputs):
        inputs = [tf.stop_gradient(v) for v in inputs]
        xn, h0, c0, U, ar, br, ac, bc = inputs
        outs = op(xn, flat_valid, h0, c0, U, ar, br, ac, bc,
                  masked=bool(masked), zero_output=bool(zero_output))

        def grad(*upstream):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                again = bn_lstm_inference(xn, valid, h0, c0, U, ar, br, ac, bc,
                                          masked, zero_output)
            return tape.gradient(again, inputs, output_gradients=[
                tf.zeros_like(r) if d is None else d for d, r in zip(upstream, outs)])

        return tuple(outs), grad

    return inference(*[tf.convert_to_tensor(v) for v in (xn, h0, c0, U, ar, br, ac, bc)])


# ------------------------------------------------------ the layer's calls


def unsupported(layer):
    """Why the kernel cannot run `layer`'s calls (a string), or None. Like
    keras' choice of cuDNN: the default activations, no unrolling, no
    recurrent dropout, float32/float64 with weights of that dtype."""
    cell = layer.cell
    if layer.unroll:
        return "the kernel does not unroll (unroll=True)"
    if (cell.activation is not activations.tanh
            or cell.recurrent_activation is not activations.sigmoid):
        return "the kernel implements activation='tanh' and recurrent_activation='sigmoid' only"
    if cell.recurrent_dropout:
        return "the kernel does not apply recurrent_dropout in training"
    dtype = keras.backend.standardize_dtype(cell.compute_dtype)
    if dtype not in ("float32", "float64") or keras.backend.standardize_dtype(
            cell.recurrent_kernel.dtype) != dtype:
        return f"the kernel computes in float32 or float64 with weights of that dtype, not {dtype}"
    return None


def call(layer, sequences, valid, initial_state, mask, training):
    """`BatchNormLSTM.inner_loop` by the kernel: `(last_output, outputs,
    [h, c])`, outputs batch-major in processing order.

    Time-major and in processing order throughout (only the narrow input
    and output are transposed or flipped). In training the input norm's
    statistics and the recurrence's per-step statistics of the recurrent
    and state norms move the moving statistics directly.
    """
    cell = layer.cell
    xt = _recurrent.to_time_major(sequences)
    vt = _recurrent.to_time_major(valid)[:, :, None]  # (T, batch, 1)
    if layer.go_backwards:
        xt, vt = ops.flip(xt, axis=0), ops.flip(vt, axis=0)
    from keras_ln.layers import _tf_backend

    # the native ops, or the TensorFlow loops (the XLA-compatible kernel)
    native = _tf_backend.kernel_choice(layer) == "native"
    if training and native:
        outs, h, c = _native_training_call(layer, xt, vt, initial_state, mask)
    elif training:
        outs, h, c = _training_call(layer, ops.matmul(xt, cell.kernel), vt,
                                    initial_state, mask)
    else:
        outs, h, c = _inference_call(layer, ops.matmul(xt, cell.kernel), vt,
                                     initial_state, mask, native)
    last = outs[-1]
    if not layer.return_sequences:  # no transpose of the whole sequence
        return last, last[:, None], [h, c]
    return last, _recurrent.to_time_major(outs), [h, c]


def _training_call(layer, z, vt, initial_state, mask):
    cell = layer.cell
    # (T, 4 * units) statistics; without a mask, plain means (fewer passes)
    mean_x, var_x = cell._batch_moments(z, vt if mask is not None else None, axis=1)
    scale = ops.rsqrt(var_x + cell.norm_epsilon) * cell.kernel_norm_gamma
    xn = cell.add_bias((z - mean_x[:, None]) * scale[:, None])
    outs, h, c, *stats = bn_lstm_recurrence(
        xn, vt, initial_state[0], initial_state[1], cell.recurrent_kernel,
        cell.recurrent_norm_gamma, cell.state_norm_gamma, cell.state_norm_beta,
        cell.norm_epsilon, mask is not None, layer.zero_output_for_mask,
    )
    _move_statistics(cell, vt, mean_x, var_x, *stats)
    return outs, h, c


def _native_training_call(layer, xt, vt, initial_state, mask):
    cell = layer.cell
    bias = cell.bias if cell.use_bias else ops.zeros((4 * cell.units,), xt.dtype)
    outs, h, c, *stats = bn_lstm_recurrence_native(
        xt, cell.kernel, cell.kernel_norm_gamma, bias, vt,
        initial_state[0], initial_state[1], cell.recurrent_kernel,
        cell.recurrent_norm_gamma, cell.state_norm_gamma, cell.state_norm_beta,
        cell.norm_epsilon, mask is not None, layer.zero_output_for_mask,
        # a pass of `_batch_statistics.statistics_mode`: no gradient
        save=not getattr(cell, "_statistics_only", False),
    )
    mean_r, var_r, mean_c, var_c, mean_x, var_x = stats
    _move_statistics(cell, vt, mean_x, var_x, mean_r, var_r, mean_c, var_c)
    return outs, h, c


def _move_statistics(cell, vt, mean_x, var_x, mean_r, var_r, mean_c, var_c):
    """Moving statistics of the steps that had data, in processing order."""
    steps = ops.shape(vt)[0]
    has_data = ops.cast(ops.sum(vt[:, :, 0], axis=1) > 0, cell.stats_dtype)
    rows = ops.transpose(
        ops.one_hot(ops.arange(steps), cell._steps, dtype=cell.stats_dtype)
        * has_data[:, None]
    )
    for norm, mean, variance in (("kernel_norm", mean_x, var_x),
                                 ("recurrent_norm", mean_r, var_r),
                                 ("state_norm", mean_c, var_c)):
        cell._update(norm, rows, ops.stop_gradient(mean), ops.stop_gradient(variance))
    cell._count_steps(ops.max(has_data * ops.arange(1, steps + 1, dtype=cell.stats_dtype)))


def _inference_call(layer, z, vt, initial_state, mask, native):
    """The moving statistics of each processing step (the last trained
    step's beyond it) folded into a scale and shift per step."""
    cell = layer.cell
    pos = ops.arange(ops.shape(z)[0], dtype="int32")

    def folded(norm, beta=None):
        rows = cell._stat_index(pos)
        mean = ops.take(getattr(cell, f"{norm}_moving_mean"), rows, axis=0)
        variance = ops.take(getattr(cell, f"{norm}_moving_variance"), rows, axis=0)
        scale = ops.rsqrt(variance + cell.norm_epsilon) * getattr(cell, f"{norm}_gamma")
        return scale, (-mean * scale if beta is None else beta - mean * scale)

    ax, bx = folded("kernel_norm")
    xn = cell.add_bias(z * ax[:, None] + bx[:, None])
    ar, br = folded("recurrent_norm")
    ac, bc = folded("state_norm", cell.state_norm_beta)
    inference = bn_lstm_inference_native if native else bn_lstm_inference
    return inference(
        xn, vt, initial_state[0], initial_state[1], cell.recurrent_kernel,
        ar, br, ac, bc, mask is not None, layer.zero_output_for_mask,
    )
