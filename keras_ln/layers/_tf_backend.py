"""Every fast-path decision of keras_ln on the TensorFlow backend.

The layers reach this module through `_fast_paths` only. It decides, per
call, which implementation runs:

- layer normalization: the fused, XLA-compiled op of `_tf_layer_norm`
  (exact, XLA-compatible, any dtype);
- the LN-LSTM and LN-GRU recurrences: the native C++ ops (`_native`,
  `_tf_recurrent_kernels`) outside XLA, their XLA loops inside an
  XLA-compiled function (`jit_compile=True`) or when the library is
  missing, as the layer's `use_kernel` argument allows; `NotImplementedError`
  (with the reason) where no kernel implements the call, and the layer then
  runs its generic `keras.ops` loop.
"""

import tensorflow as tf
from keras import activations
from keras import backend

from keras_ln.layers import _native
from keras_ln.layers import _tf_layer_norm
from keras_ln.layers import _tf_recurrent_kernels as kernels
from keras_ln.layers._layer_norm import center_columns
from keras_ln.layers._tf_layer_norm import in_xla


def layer_norm(x, gamma, beta, axis, epsilon):
    return _tf_layer_norm.layer_norm(x, gamma, beta, axis, epsilon)


def unsupported_call(layer, training, dtype, weight):
    """Why no kernel implements this call of a recurrent layer (a string),
    or None. Like keras' choice of cuDNN: the default activations, no
    unrolling, no recurrent dropout in training, float32/float64 with
    weights (`weight`, one of them) of the same dtype."""
    cell = layer.cell
    dtype = backend.standardize_dtype(dtype)
    if layer.unroll:
        return "the kernels do not unroll (unroll=True)"
    if (cell.activation is not activations.tanh
            or cell.recurrent_activation is not activations.sigmoid):
        return ("the kernels implement activation='tanh' and "
                "recurrent_activation='sigmoid' only")
    if cell.recurrent_dropout and training:
        return "the kernels do not apply recurrent_dropout in training"
    if dtype not in ("float32", "float64"):
        return (f"the kernels compute in float32 or float64, not {dtype} "
                "(the layer's dtype policy)")
    if backend.standardize_dtype(weight.dtype) != dtype:
        return "the kernels need weights of the compute dtype"
    return None


def implementation(layer, training, dtype):
    """`"native"` or `"xla"`: the kernel that runs this call of `layer`
    (a LayerNormLSTM or LayerNormGRU) as its `use_kernel` asks; raises
    NotImplementedError with the reason where none does."""
    cell = layer.cell
    reason = unsupported_call(layer, training, dtype, cell.recurrent_norm_gamma)
    if reason:
        raise NotImplementedError(reason)
    return kernel_choice(layer)


def kernel_choice(layer):
    """`"native"` or `"xla"`: the kernel `layer.use_kernel` asks for, for a
    call the kernels support (LayerNormLSTM, LayerNormGRU, BatchNormLSTM):
    the XLA-compatible one inside XLA or where asked, else the native ops,
    else the XLA-compatible one where "native" was not asked. Raises
    NotImplementedError with the reason where none does."""
    want = layer.use_kernel
    has_xla = layer.kernel_kind in ("lstm", "gru", "bn_lstm")
    if want == "xla" or (want in ("auto", True) and in_xla()):
        if not has_xla:
            raise NotImplementedError(
                f"{type(layer).__name__} has no XLA-compatible kernel"
            )
        return "xla"
    if in_xla():
        raise NotImplementedError(
            "the native ops cannot run inside an XLA-compiled function"
        )
    if _native.ops() is not None:
        return "native"
    if want != "native" and has_xla:
        return "xla"
    raise NotImplementedError(
        f"the native ops are not available ({_native.load_error()})"
    )


def recurrence(layer, sequences, initial_state, mask, training):
    """`layer`'s recurrence as one op with a hand-written gradient;
    `sequences` already had input dropout. Returns what
    `keras.layers.RNN.inner_loop` returns."""
    impl = implementation(layer, training, sequences.dtype)
    x, mask = _time_major_input(layer, sequences, mask)
    if not isinstance(initial_state, (list, tuple)):
        initial_state = [initial_state]
    if layer.kernel_kind == "lstm":
        ys, *states = _lstm(layer.cell, x, initial_state, mask, impl,
                            bool(layer.zero_output_for_mask))
    else:
        ys, *states = _gru(layer.cell, x, initial_state, mask, impl,
                           bool(layer.zero_output_for_mask))
    return _rnn_outputs(layer, ys, states)


def _rnn_outputs(layer, ys, states):
    """What `keras.layers.RNN.inner_loop` returns, from the time-major
    outputs `ys` and the last states."""
    last_output = ys[-1]
    if layer.return_sequences:
        return last_output, tf.transpose(ys, [1, 0, 2]), states
    return last_output, last_output[:, None], states


def plain_recurrence(layer, sequences, initial_state, mask):
    """The recurrence of `layer`, a `FusedLSTM` or `FusedGRU` (keras' LSTM
    or GRU cell), by the native ops without normalization; `sequences` had
    input dropout. Returns what `keras.layers.RNN.inner_loop` returns."""
    cell = layer.cell
    x, mask = _time_major_input(layer, sequences, mask)
    dtype = x.dtype
    units = cell.units
    zero_output = bool(layer.zero_output_for_mask)
    if layer.kernel_kind == "plain_gru":
        if cell.use_bias:  # (2, 3u): the input and the recurrent bias
            bx, off = tf.cast(cell.bias[0], dtype), tf.cast(cell.bias[1], dtype)
        else:
            bx = off = tf.zeros([3 * units], dtype)
        ys, *states = kernels.plain_gru_recurrence(
            x, tf.cast(cell.kernel, dtype), bx,
            tf.cast(initial_state[0], dtype),
            tf.cast(cell.recurrent_kernel, dtype), off, mask=mask,
            zero_output=zero_output,
        )
        return _rnn_outputs(layer, ys, states)
    # tanh(x) = 2 sigmoid(2x) - 1, as for the LN-LSTM: the candidate block
    # scaled by 2, here in the (small) input gamma, bias and recurrent gamma.
    scale = tf.constant([1.0] * (2 * units) + [2.0] * units + [1.0] * units,
                        dtype)
    bias = (tf.cast(cell.bias, dtype) * scale if cell.use_bias
            else tf.zeros([4 * units], dtype))
    ys, *states = kernels.plain_lstm_recurrence(
        x, tf.cast(cell.kernel, dtype), scale, bias,
        tf.cast(initial_state[0], dtype), tf.cast(initial_state[1], dtype),
        tf.cast(cell.recurrent_kernel, dtype), mask=mask,
        zero_output=zero_output,
    )
    return _rnn_outputs(layer, ys, states)


def _time_major_input(layer, sequences, mask):
    """The kernels' time-major input and mask `(T, B, 1)`, in the order the
    layer reads them (`go_backwards`)."""
    x = tf.transpose(sequences, [1, 0, 2])
    if mask is not None:
        mask = tf.transpose(tf.cast(mask, "bool"))[..., None]
    if layer.go_backwards:
        x = tf.reverse(x, [0])
        if mask is not None:
            mask = tf.reverse(mask, [0])
    return x, mask


def _lstm(cell, x, states, mask, impl, zero_output):
    units = cell.units
    dtype = x.dtype
    # tanh(x) = 2 sigmoid(2x) - 1: scale the candidate block by 2. The
    # scale, the bias and the recurrent norm's beta are folded into the
    # (small) gamma and beta of the input norm, which the kernel applies to
    # the input projection.
    sdtype = "float64" if dtype == tf.float64 else "float32"
    scale = tf.constant(
        [1.0] * (2 * units) + [2.0] * units + [1.0] * units, sdtype
    )
    beta = tf.cast(cell.kernel_norm_beta, sdtype) + tf.cast(
        cell.recurrent_norm_beta, sdtype
    )
    if cell.use_bias:
        beta = beta + tf.cast(cell.bias, sdtype)
    return kernels.ln_lstm_recurrence(
        x,
        tf.cast(cell.kernel, dtype),
        tf.cast(tf.cast(cell.kernel_norm_gamma, sdtype) * scale, dtype),
        tf.cast(beta * scale, dtype),
        tf.cast(states[0], dtype),
        tf.cast(states[1], dtype),
        tf.cast(center_columns(cell.recurrent_kernel), dtype),
        tf.cast(cell.recurrent_norm_gamma, dtype) * tf.cast(scale, dtype),
        tf.cast(cell.state_norm_gamma, dtype),
        tf.cast(cell.state_norm_beta, dtype),
        mask=mask,
        epsilon=cell.norm_epsilon,
        zero_output=zero_output,
        implementation=impl,
        carry_normalized=bool(cell.carry_normalized_cell),
    )


def _gru(cell, x, states, mask, impl, zero_output):
    dtype = x.dtype
    # The input bias folded into the input norm's beta.
    beta = cell.kernel_norm_beta
    if cell.use_bias:
        beta = beta + tf.cast(cell.bias[0], beta.dtype)
    return kernels.ln_gru_recurrence(
        x,
        tf.cast(cell.kernel, dtype),
        tf.cast(cell.kernel_norm_gamma, dtype),
        tf.cast(beta, dtype),
        tf.cast(states[0], dtype),
        tf.cast(center_columns(cell.recurrent_kernel), dtype),
        tf.cast(cell.recurrent_norm_gamma, dtype),
        tf.cast(cell.recurrent_offset(), dtype),
        mask=mask,
        epsilon=cell.norm_epsilon,
        zero_output=zero_output,
        implementation=impl,
    )
