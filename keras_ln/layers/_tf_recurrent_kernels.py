"""TensorFlow kernels of the fused LN-LSTM and LN-GRU recurrences (private).

Each recurrence is ONE differentiable operation. With the native library
(`keras_ln.layers._native`, section "native ops" below), one C++ op runs the
whole forward loop, input projection and its normalization (for all steps,
before the loop) included, and another the whole backward loop. Without it
(and inside an XLA-compiled caller), each layer normalizes its
input projection in one batched op and runs its recurrent part as an
XLA-compiled forward `tf.while_loop` that keeps only the carried states of
each step, and an XLA-compiled, hand-written backward-through-time
`tf.while_loop` that recomputes each step's activations from those states.
Automatic differentiation of a while loop instead runs each small op with
TensorFlow's per-op overhead and stores every intermediate in accumulators;
on CPU that, not the arithmetic, dominates. Each step is kept small:

- the recurrent kernel is centered once per call (`h @ U_c` has zero mean,
  so its LN is `r * rsqrt(mean(r**2) + eps) * gamma`);
- the recurrent beta, the bias and the factor below are folded into the
  input norm's gamma and beta by the caller;
- the LSTM: one sigmoid over the four gate blocks, `tanh(x) = 2
  sigmoid(2x) - 1` for the candidate (its columns scaled by 2 upstream);
  the GRU: its input's three blocks apart before the loop, each gate on
  its own (sliced out of one wide input in the step, and with one sigmoid
  over two blocks, XLA's CPU backend ran the step twice as slowly), the
  recurrent bias folded into the recurrent norm's beta (`off`);
- row means as products with a constant vector (XLA compiles those much
  better on CPU than row reductions), batch sums as column reductions;
- per-step saved tensors are few and narrow (writing wide per-step tensors
  costs more than recomputing them); masks use `tf.where`, and a mask-free
  variant has no blend at all;
- the weight gradients are accumulated inside the backward loop.

Semantics follow keras' `backend.rnn`: a masked step carries the states and
outputs the previous output (zeros before the first step), or zeros with
`zero_output_for_mask`.
"""

import functools

import tensorflow as tf

from keras_ln.layers import _native
from keras_ln.layers import _tf_layer_norm


def _ta(dtype, size, shape):
    return tf.TensorArray(dtype, size=size, element_shape=shape)


def _mean(v):
    """Row means as a product with a constant vector (XLA on CPU compiles
    this much better than a row reduction)."""
    n = v.shape[-1]
    return tf.matmul(v, tf.fill([n, 1], tf.constant(1.0 / n, v.dtype)))


def _step(xp_t, h, c, U, gr, gs, bs, eps, carry_normalized):
    """One forward step: the output, the carried cell state (the state
    norm's output with `carry_normalized`, else c), and what the backward
    step needs."""
    one = tf.constant(1.0, xp_t.dtype)
    two = tf.constant(2.0, xp_t.dtype)
    r = tf.matmul(h, U)
    rstd_r = tf.math.rsqrt(_mean(r * r) + eps)
    rhat = r * rstd_r
    a = tf.sigmoid(xp_t + rhat * gr)
    i, f, gg, o = tf.split(a, 4, axis=-1)
    g = two * gg - one
    c_new = f * c + i * g
    d = c_new - _mean(c_new)
    rstd_c = tf.math.rsqrt(_mean(d * d) + eps)
    chat = d * rstd_c
    c_norm = chat * gs + bs
    th = tf.tanh(c_norm)
    carried = c_norm if carry_normalized else c_new
    return o * th, carried, (rstd_r, rhat, a, i, f, g, o, rstd_c, chat, th)


def _forward(xp, h0, c0, U, gr, gs, bs, mask, eps, zero_output,
             carry_normalized):
    """Forward loop: outputs, last states, and the carried state sequences
    (all the backward loop needs; it recomputes the rest)."""
    T = tf.shape(xp)[0]
    dtype = xp.dtype
    batch = tf.shape(h0)[0]
    units = h0.shape[-1]
    eps = tf.constant(eps, dtype)
    masked = mask is not None
    narrow = tf.TensorShape([None, units])

    def body(t, h, c, y, t_h, t_c, t_y):
        h_new, c_new, _ = _step(tf.gather(xp, t), h, c, U, gr, gs, bs, eps,
                                carry_normalized)
        if masked:
            m = tf.gather(mask, t)
            h_new_out = tf.where(m, h_new, h)
            c = tf.where(m, c_new, c)
            y = tf.where(m, h_new, tf.zeros_like(h_new) if zero_output
                         else y)
            t_y = t_y.write(t, y)
            h = h_new_out
        else:
            h, c, y = h_new, c_new, h_new
        return t + 1, h, c, y, t_h.write(t, h), t_c.write(t, c), t_y

    init = (
        tf.constant(0), h0, c0, tf.zeros([batch, units], dtype),
        _ta(dtype, T, narrow), _ta(dtype, T, narrow),
        _ta(dtype, T if masked else 0, narrow),
    )
    out = tf.while_loop(
        lambda t, *_: t < T, body, init, maximum_iterations=T,
        swap_memory=False,
    )
    _, hT, cT, _, t_h, t_c, t_y = out
    hs = t_h.stack()
    cs = t_c.stack()
    ys = t_y.stack() if masked else hs
    return ys, hT, cT, (hs, cs)


def _upstream(dys, t, dh, dy, mask, zero_output):
    """The gradient reaching step t's new output under keras' masking (the
    backward loops'): `(dhn, m, dy_tot)`, dhn zero on the rows the step
    masks, m the step's mask and dy_tot the gradient of its output so far
    (both None without a mask)."""
    dyt = tf.gather(dys, t)
    if mask is None:
        return dh + dyt, None, None
    m = tf.gather(mask, t)
    dy_tot = dyt if zero_output else dy + dyt
    return tf.where(m, dh + dy_tot, tf.zeros_like(dh)), m, dy_tot


def _output_gradient_before(m, dy, dy_tot, zero_output):
    """The gradient of the output step t - 1 passes on (a masked step
    outputs the previous output, or zeros with `zero_output`)."""
    if m is None:
        return dy
    zero = tf.zeros_like(dy)
    return zero if zero_output else tf.where(m, zero, dy_tot)


def _backward(dys, dhT, dcT, xp, h0, c0, U, gr, gs, bs, mask, eps,
              zero_output, carry_normalized, saved):
    hs, cs = saved
    T = tf.shape(dys)[0]
    dtype = dys.dtype
    units = h0.shape[-1]
    eps = tf.constant(eps, dtype)
    one = tf.constant(1.0, dtype)
    two = tf.constant(2.0, dtype)
    masked = mask is not None
    h_prev_all = tf.concat([h0[None], hs[:-1]], 0)
    c_prev_all = tf.concat([c0[None], cs[:-1]], 0)
    wide = tf.TensorShape([None, 4 * units])
    Ut = tf.transpose(U)

    def colsum(v):
        # Sum over the batch (a column reduction: fast under XLA).
        return tf.reduce_sum(v, 0, keepdims=True)

    def body(k, dh, dc, dy, t_dz, dU, dgr, dgs, dbs):
        t = T - 1 - k
        dhn, m, dy_tot = _upstream(dys, t, dh, dy, mask, zero_output)
        dcn_in = tf.where(m, dc, tf.zeros_like(dc)) if masked else dc
        c_prev = tf.gather(c_prev_all, t)
        h_prev = tf.gather(h_prev_all, t)
        _, _, (rstd_r, rhat, a, i, f, g, o, rstd_c, chat, th) = _step(
            tf.gather(xp, t), h_prev, c_prev, U, gr, gs, bs, eps,
            carry_normalized
        )
        # dcn: the gradient of the state norm's output, through the output
        # and, where it is what is carried, through the next step.
        dcn = dhn * o * (one - th * th)
        if carry_normalized:
            dcn = dcn + dcn_in
        gch = dcn * gs
        dc_new = rstd_c * (gch - _mean(gch) - chat * _mean(gch * chat))
        if not carry_normalized:
            dc_new = dc_new + dcn_in
        # d/dz of the sigmoids; the candidate's sigmoid is of 2 z_g.
        da = tf.concat(
            [dc_new * g, dc_new * c_prev, two * dc_new * i, dhn * th], -1
        )
        dz = da * a * (one - a)
        grh = dz * gr
        dr = rstd_r * (grh - rhat * _mean(grh * rhat))
        dh_prev = tf.matmul(dr, Ut)
        dc_prev = dc_new * f
        if masked:  # a masked row carries its states through the step
            dh_prev = dh_prev + tf.where(m, tf.zeros_like(dh), dh)
            dc_prev = dc_prev + tf.where(m, tf.zeros_like(dc), dc)
        dy_prev = _output_gradient_before(m, dy, dy_tot, zero_output)
        return (
            k + 1, dh_prev, dc_prev, dy_prev, t_dz.write(t, dz),
            dU + tf.matmul(h_prev, dr, transpose_a=True),
            dgr + colsum(dz * rhat),
            dgs + colsum(dcn * chat),
            dbs + colsum(dcn),
        )

    init = (
        tf.constant(0), dhT, dcT, tf.zeros_like(dhT), _ta(dtype, T, wide),
        tf.zeros_like(U), tf.zeros([1, 4 * units], dtype),
        tf.zeros([1, units], dtype), tf.zeros([1, units], dtype),
    )
    out = tf.while_loop(
        lambda k, *_: k < T, body, init, maximum_iterations=T,
        swap_memory=False,
    )
    _, dh0, dc0, _, t_dz, dU, dgr, dgs, dbs = out
    return t_dz.stack(), dh0, dc0, dU, dgr[0], dgs[0], dbs[0]


# XLA for each loop (both measured faster on CPU than plain graph mode).
JIT_FORWARD = True
JIT_BACKWARD = True


@functools.lru_cache(maxsize=None)
def _compiled(masked, zero_output, epsilon, units, carry_normalized):
    """Forward and backward loops as (XLA-)compiled TensorFlow functions,
    one pair per configuration and width (`units`)."""

    def fwd(xp, h0, c0, U, gr, gs, bs, mask):
        return _forward(xp, h0, c0, U, gr, gs, bs,
                        mask if masked else None, epsilon, zero_output,
                        carry_normalized)

    def bwd(dys, dhT, dcT, xp, h0, c0, U, gr, gs, bs, mask, saved):
        return _backward(dys, dhT, dcT, xp, h0, c0, U, gr, gs, bs,
                         mask if masked else None, epsilon, zero_output,
                         carry_normalized, saved)

    # reduce_retracing: a new sequence length or batch size retraces once
    # with those dimensions relaxed, not once per shape; XLA still compiles
    # each concrete shape. The functools.partial gives each pair its own
    # count in TensorFlow's retracing detector, which otherwise adds up the
    # traces of every function built from the same code (and warns once
    # five differently-configured layers have run).
    return (
        tf.function(functools.partial(fwd), jit_compile=JIT_FORWARD,
                    autograph=False, reduce_retracing=True),
        tf.function(functools.partial(bwd), jit_compile=JIT_BACKWARD,
                    autograph=False, reduce_retracing=True),
    )


def _gru_step(x3_t, h, U, gr, off, eps):
    """One LN-GRU forward step (keras' `reset_after=True` GRU, the
    recurrent norm on the centered kernel's output) from the step's three
    input blocks: the new state and what the backward step needs."""
    r = tf.matmul(h, U)
    rstd_r = tf.math.rsqrt(_mean(r * r) + eps)
    rhat = r * rstd_r
    h_z, h_r, h_n = tf.split(rhat * gr + off, 3, axis=-1)
    x_z, x_r, x_n = x3_t
    z = tf.sigmoid(x_z + h_z)
    rg = tf.sigmoid(x_r + h_r)
    n = tf.tanh(x_n + rg * h_n)
    return z * h + (1.0 - z) * n, (rstd_r, rhat, z, rg, h_n, n)


def _gru_forward(xp, h0, U, gr, off, mask, eps, zero_output):
    """The LN-GRU's forward loop: outputs, the last state, and the state
    sequence (all the backward loop needs; it recomputes the rest)."""
    T = tf.shape(xp)[0]
    dtype = xp.dtype
    units = h0.shape[-1]
    eps = tf.constant(eps, dtype)
    masked = mask is not None
    narrow = tf.TensorShape([None, units])
    x3 = tf.split(xp, 3, axis=-1)

    def body(t, h, y, t_h, t_y):
        h_new, _ = _gru_step([tf.gather(v, t) for v in x3], h, U, gr, off, eps)
        if masked:
            m = tf.gather(mask, t)
            y = tf.where(m, h_new, tf.zeros_like(h_new) if zero_output
                         else y)
            t_y = t_y.write(t, y)
            h = tf.where(m, h_new, h)
        else:
            h = y = h_new
        return t + 1, h, y, t_h.write(t, h), t_y

    init = (
        tf.constant(0), h0, tf.zeros_like(h0), _ta(dtype, T, narrow),
        _ta(dtype, T if masked else 0, narrow),
    )
    _, hT, _, t_h, t_y = tf.while_loop(
        lambda t, *_: t < T, body, init, maximum_iterations=T,
        swap_memory=False,
    )
    hs = t_h.stack()
    return (t_y.stack() if masked else hs), hT, (hs,)


def _gru_backward(dys, dhT, xp, h0, U, gr, off, mask, eps, zero_output,
                  saved):
    """The LN-GRU's backward-through-time loop: the gradients of xp, h0, U,
    gr and off, each step's activations recomputed from its state."""
    (hs,) = saved
    T = tf.shape(dys)[0]
    dtype = dys.dtype
    units = h0.shape[-1]
    eps = tf.constant(eps, dtype)
    one = tf.constant(1.0, dtype)
    masked = mask is not None
    h_prev_all = tf.concat([h0[None], hs[:-1]], 0)
    Ut = tf.transpose(U)
    x3 = tf.split(xp, 3, axis=-1)

    def colsum(v):
        return tf.reduce_sum(v, 0, keepdims=True)

    def body(k, dh, dy, t_dz, t_dr, t_dn, dU, dgr, doff):
        t = T - 1 - k
        dhn, m, dy_tot = _upstream(dys, t, dh, dy, mask, zero_output)
        h_prev = tf.gather(h_prev_all, t)
        _, (rstd_r, rhat, z, rg, h_n, n) = _gru_step(
            [tf.gather(v, t) for v in x3], h_prev, U, gr, off, eps)
        # h = z h_prev + (1 - z) n, n = tanh(x_n + r h_n).
        dn = dhn * (one - z) * (one - n * n)
        dz = dhn * (h_prev - n) * z * (one - z)
        dr = dn * h_n * rg * (one - rg)
        d_inner = tf.concat([dz, dr, dn * rg], -1)
        grh = d_inner * gr
        dq = rstd_r * (grh - rhat * _mean(grh * rhat))
        dh_prev = dhn * z + tf.matmul(dq, Ut)
        if masked:  # a masked row carries its state through the step
            dh_prev = dh_prev + tf.where(m, tf.zeros_like(dh), dh)
        dy_prev = _output_gradient_before(m, dy, dy_tot, zero_output)
        return (
            k + 1, dh_prev, dy_prev, t_dz.write(t, dz), t_dr.write(t, dr),
            t_dn.write(t, dn),
            dU + tf.matmul(h_prev, dq, transpose_a=True),
            dgr + colsum(d_inner * rhat),
            doff + colsum(d_inner),
        )

    narrow = tf.TensorShape([None, units])
    init = (
        tf.constant(0), dhT, tf.zeros_like(dhT),
        _ta(dtype, T, narrow), _ta(dtype, T, narrow), _ta(dtype, T, narrow),
        tf.zeros_like(U),
        tf.zeros([1, 3 * units], dtype), tf.zeros([1, 3 * units], dtype),
    )
    _, dh0, _, t_dz, t_dr, t_dn, dU, dgr, doff = tf.while_loop(
        lambda k, *_: k < T, body, init, maximum_iterations=T,
        swap_memory=False,
    )
    dxp = tf.concat([t_dz.stack(), t_dr.stack(), t_dn.stack()], -1)
    return dxp, dh0, dU, dgr[0], doff[0]


@functools.lru_cache(maxsize=None)
def _gru_compiled(masked, zero_output, epsilon, units):
    """The LN-GRU's loops as XLA-compiled functions, one pair per
    configuration and width (as `_compiled`)."""

    def fwd(xp, h0, U, gr, off, mask):
        return _gru_forward(xp, h0, U, gr, off, mask if masked else None,
                            epsilon, zero_output)

    def bwd(dys, dhT, xp, h0, U, gr, off, mask, saved):
        return _gru_backward(dys, dhT, xp, h0, U, gr, off,
                             mask if masked else None, epsilon, zero_output,
                             saved)

    return (
        tf.function(functools.partial(fwd), jit_compile=JIT_FORWARD,
                    autograph=False, reduce_retracing=True),
        tf.function(functools.partial(bwd), jit_compile=JIT_BACKWARD,
                    autograph=False, reduce_retracing=True),
    )


# ------------------------------------------------------------ native ops
#
# With the library of `keras_ln.layers._native`, the forward loop is one op
# and the backward loop another (C++: vectorized products and fused passes
# over the batch rows, the batch split into shards that run the loop
# concurrently). They take the raw time-major input and the input kernel:
# the input projection of all steps is one product and one normalization
# pass inside the forward op, before its loop, so TensorFlow never handles
# the wide (time, batch, gates) projection. The forward op returns what the
# backward op needs.

# How many shards the native ops split the batch into; 0: by the number of
# rows only (one per 16 rows, at most 8; see NumShards in kernels.h).
# Tests set it to split small batches (read when a layer's call is traced).
NATIVE_SHARDS = 0


def _flat_mask(mask):
    return tf.zeros([0], tf.bool) if mask is None else mask


@functools.lru_cache(maxsize=None)
def _native_compiled(cell, masked, zero_output, epsilon, shards,
                     carry_normalized=False):
    """Forward and backward functions over the native sequence ops
    (`cell`: "lstm" or "gru", or "plain_lstm" / "plain_gru": their ops
    without norms; `carry_normalized`: the LSTM ops carry the state norm's
    output, not the cell state)."""
    mod = _native.ops()
    attrs = dict(masked=masked, zero_output=zero_output, shards=shards,
                 normalize=not cell.startswith("plain_"))
    if carry_normalized:
        attrs["carry_normalized"] = True

    if cell in ("lstm", "plain_lstm"):
        def fwd(x, w, gx, bx, h0, c0, U, gr, gs, bs, mask):
            ys, hT, cT, *saved = mod.keras_ln_lstm_forward(
                x, w, h0, c0, U, _flat_mask(mask), gx, bx, gr, gs, bs,
                tf.constant(epsilon, x.dtype), **attrs,
            )
            return ys, hT, cT, tuple(saved)

        def bwd(dys, dhT, dcT, x, w, gx, bx, h0, c0, U, gr, gs, bs, mask,
                saved):
            rs, gates, states, xrstd, hs, cs, xhat = saved
            return mod.keras_ln_lstm_backward(
                gates, states, rs, xrstd, hs, cs, x, w, h0, c0, U, dys,
                dhT, dcT, _flat_mask(mask), gx, gr, gs, xhat, **attrs,
            )
    else:
        def fwd(x, w, gx, bx, h0, U, gr, off, mask):
            ys, hT, *saved = mod.keras_ln_gru_forward(
                x, w, h0, U, _flat_mask(mask), gx, bx, gr, off,
                tf.constant(epsilon, x.dtype), **attrs,
            )
            return ys, hT, tuple(saved)

        def bwd(dys, dhT, x, w, gx, bx, h0, U, gr, off, mask, saved):
            rs, states, xrstd, hs, xhat = saved
            return mod.keras_ln_gru_backward(
                states, rs, xrstd, hs, x, w, h0, U, dys, dhT,
                _flat_mask(mask), gx, gr, off, xhat, **attrs,
            )

    # Plain functions: each is one op, which needs no tf.function of its
    # own (one per configuration would be retraced for every new shape).
    return fwd, bwd


def native_available():
    """Whether the native step ops are built and loaded."""
    return _native.ops() is not None


def _native_pair(cell, mask, zero_output, epsilon=0.0, carry_normalized=False):
    """`_native_compiled`'s pair for this call; RuntimeError (with the
    reason) without the native library."""
    if not native_available():
        raise RuntimeError(
            f"the {cell} recurrence needs the native ops: {_native.load_error()}")
    return _native_compiled(cell, mask is not None, bool(zero_output),
                            float(epsilon), NATIVE_SHARDS, bool(carry_normalized))


def _recurrence_op(fwd, bwd, n_states, mask):
    """`(inputs...) -> (ys, *last states)` with the hand-written gradient:
    the forward returns `(ys, *states, saved)`; the backward gets
    `(dys, *dstates, *inputs, mask, saved)`."""

    @tf.custom_gradient
    def op(*inputs):
        out = fwd(*[tf.stop_gradient(v) for v in inputs], mask)
        results, saved = out[:-1], out[-1]

        def grad(*upstream):
            upstream = [
                tf.zeros_like(r) if d is None else d
                for d, r in zip(upstream, results)
            ]
            return bwd(
                *[tf.stop_gradient(v) for v in (*upstream, *inputs)],
                mask, saved,
            )

        return tuple(results), grad

    return op


def ln_lstm_recurrence(x, w, gx, bx, h0, c0, U, gr, gs, bs, mask=None,
                       epsilon=1e-3, zero_output=False,
                       implementation="native", carry_normalized=False):
    """The LN-LSTM recurrence, input projection included, as one op with a
    hand-written gradient.

    `implementation="native"` runs the native ops (`keras_ln.layers._native`,
    which must be built); `"xla"` normalizes the projected sequence with the
    fused layer norm and runs the XLA-compiled loops (which also compile
    inside an XLA-compiled caller).

    Args:
        x: `(T, B, F)` time-major input, in the order the layer reads it.
        w: `(F, 4u)` input kernel.
        gx, bx: `(4u,)` gamma and beta of the input projection's norm, the
            bias and the recurrent norm's beta folded into `bx`; both with
            the candidate block scaled by 2.
        h0, c0: `(B, u)` initial states.
        U: `(u, 4u)` recurrent kernel, centered over its output axis.
        gr: `(4u,)` recurrent norm gamma (candidate block scaled by 2).
        gs, bs: `(u,)` state norm gamma and beta.
        mask: optional boolean `(T, B, 1)`.
        epsilon: the norms' epsilon.
        zero_output: keras' `zero_output_for_mask`.
        implementation: `"native"` or `"xla"`.
        carry_normalized: carry the state norm's output `LN(c) * gs + bs`
            instead of `c` (the cell's `carry_normalized_cell`).

    Returns:
        `(ys, hT, cT)`: outputs `(T, B, u)` and the last states.
    """
    if implementation == "native":
        fwd, bwd = _native_pair("lstm", mask, zero_output, epsilon, carry_normalized)
        return _recurrence_op(fwd, bwd, 2, mask)(
            x, w, gx, bx, h0, c0, U, gr, gs, bs
        )
    xp = _tf_layer_norm.layer_norm(tf.matmul(x, w), gx, bx, -1, epsilon)
    fwd, bwd = _compiled(mask is not None, bool(zero_output), float(epsilon),
                         int(U.shape[0]), bool(carry_normalized))
    return _recurrence_op(fwd, bwd, 2, mask)(xp, h0, c0, U, gr, gs, bs)


def plain_lstm_recurrence(x, w, gx, bx, h0, c0, U, mask=None,
                          zero_output=False):
    """keras' LSTM recurrence (no normalization), input projection
    included, as one op with a hand-written gradient: the native LN-LSTM
    ops with every norm the identity (native ops only: check
    `native_available()` first).

    Args:
        x: `(T, B, F)` time-major input, in the order the layer reads it.
        w: `(F, 4u)` input kernel.
        gx: `(4u,)` scale of the gates' pre-activations: 1, and 2 for the
            candidate block (tanh(z) = 2 sigmoid(2z) - 1); it multiplies
            both the input and the recurrent projection.
        bx: `(4u,)` the bias, times `gx`.
        h0, c0: `(B, u)` initial states.
        U: `(u, 4u)` recurrent kernel.
        mask: optional boolean `(T, B, 1)`.
        zero_output: keras' `zero_output_for_mask`.

    Returns:
        `(ys, hT, cT)`: outputs `(T, B, u)` and the last states.
    """
    units = h0.shape[-1]
    fwd, bwd = _native_pair("plain_lstm", mask, zero_output)
    # The state "norm" is the identity: gamma 1, beta 0.
    ones = tf.ones([units], x.dtype)
    zeros = tf.zeros([units], x.dtype)
    return _recurrence_op(fwd, bwd, 2, mask)(
        x, w, gx, bx, h0, c0, U, gx, ones, zeros
    )


def plain_gru_recurrence(x, w, bx, h0, U, off, mask=None,
                         zero_output=False):
    """keras' GRU recurrence (`reset_after=True`, no normalization), input
    projection included, as one op with a hand-written gradient: the native
    LN-GRU ops with the norm the identity (native ops only).

    Args:
        x: `(T, B, F)` time-major input, in the order the layer reads it.
        w: `(F, 3u)` input kernel.
        bx: `(3u,)` the input bias.
        h0: `(B, u)` initial state.
        U: `(u, 3u)` recurrent kernel.
        off: `(3u,)` the recurrent bias.
        mask: optional boolean `(T, B, 1)`.
        zero_output: keras' `zero_output_for_mask`.

    Returns:
        `(ys, hT)`: outputs `(T, B, u)` and the last state.
    """
    fwd, bwd = _native_pair("plain_gru", mask, zero_output)
    ones = tf.ones([w.shape[-1]], x.dtype)
    return _recurrence_op(fwd, bwd, 1, mask)(x, w, ones, bx, h0, U, ones, off)


def ln_gru_recurrence(x, w, gx, bx, h0, U, gr, off, mask=None,
                      epsilon=1e-3, zero_output=False,
                      implementation="native"):
    """The LN-GRU recurrence, input projection included, as one op with a
    hand-written gradient (native ops only: check `native_available()`
    first).

    Args:
        x: `(T, B, F)` time-major input, in the order the layer reads it.
        w: `(F, 3u)` input kernel.
        gx, bx: `(3u,)` gamma and beta of the input projection's norm, the
            input bias folded into `bx`.
        h0: `(B, u)` initial state.
        U: `(u, 3u)` recurrent kernel, centered over its output axis.
        gr: `(3u,)` recurrent norm gamma.
        off: `(3u,)` recurrent norm beta plus the recurrent bias.
        mask: optional boolean `(T, B, 1)`.
        epsilon: the norms' epsilon.
        zero_output: keras' `zero_output_for_mask`.

    Returns:
        `(ys, hT)`: outputs `(T, B, u)` and the last state.
    """
    if implementation == "native":
        fwd, bwd = _native_pair("gru", mask, zero_output, epsilon)
        return _recurrence_op(fwd, bwd, 1, mask)(x, w, gx, bx, h0, U, gr, off)
    xp = _tf_layer_norm.layer_norm(tf.matmul(x, w), gx, bx, -1, epsilon)
    fwd, bwd = _gru_compiled(mask is not None, bool(zero_output),
                             float(epsilon), int(U.shape[0]))
    return _recurrence_op(fwd, bwd, 1, mask)(xp, h0, U, gr, off)
