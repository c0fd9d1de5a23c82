"""Plumbing shared by the recurrent layers of keras_ln.

Every fused layer (`LayerNormLSTM`, `LayerNormGRU`, `BatchNormLSTM`) is a
`keras.layers.RNN` holding its cell: the cell owns the weights (so
`set_weights` moves them between `RNN(cell)` and the fused layer), keras' RNN
machinery provides masks, `go_backwards`, `stateful`, `unroll`,
`initial_state` and the return modes, and the fused layer only replaces
`inner_loop` so that the input projection (and its normalization) is computed
for all time steps in one batched operation before the recurrent loop.
"""

import functools
import numbers

import keras
from keras import ops
from keras.src import backend as _src_backend

from keras_ln.layers import _fast_paths

# keras' backend-specific time loop (tf.while_loop / lax.scan / python loop).
backend_rnn = _src_backend.rnn

# Config keys every keras Layer writes; the rest of a cell's config holds the
# cell arguments the fused layer repeats in its own config.
_BASE_LAYER_KEYS = ("name", "trainable", "dtype")


def is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_units(units):
    """Raise ValueError unless `units` is a positive integer."""
    if not is_integer(units) or units <= 0:
        raise ValueError(
            "Expected `units` to be a positive integer. "
            f"Received: units={units!r}"
        )
    return int(units)


def check_rate(name, value):
    """Raise ValueError unless the dropout rate `value` lies in [0, 1)."""
    if not is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"Expected `{name}` to be a float in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_positive_float(name, value):
    """Raise ValueError unless `value` is a positive number."""
    if not is_real(value) or not value > 0:
        raise ValueError(
            f"Expected `{name}` to be a positive float. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_sequence_shape(shape, layer_name):
    """Raise ValueError unless `shape` is (batch, timesteps, features)."""
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(
            f"Expected the input of {layer_name} to be a 3-D tensor of shape "
            "(batch, timesteps, features). Received: "
            f"inputs.shape={shape}"
        )
    if shape[-1] is None:
        raise ValueError(
            f"Expected the last (feature) axis of the input of {layer_name} "
            f"to have a known size. Received: inputs.shape={shape}"
        )


def check_step_shape(shape, layer_name):
    """Raise ValueError unless a cell's step input is (batch, features)."""
    shape = tuple(shape)
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"Expected the step input of {layer_name} to be a 2-D tensor of "
            "shape (batch, features) with a known feature size (use the cell "
            "inside `keras.layers.RNN`). Received: "
            f"inputs.shape={shape}"
        )


@functools.lru_cache(maxsize=None)
def _standardizer(epsilon):
    """`x -> (x - mean) / sqrt(var + epsilon)` over the last axis.

    Two-pass statistics, with the closed-form gradient
    `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`: inside a recurrent
    loop this saves the backward pass most of the small ops (and the
    per-step intermediates) that automatic differentiation of the mean and
    variance would create.
    """

    @ops.custom_gradient
    def standardize(x):
        mean = ops.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        rstd = ops.rsqrt(variance + epsilon)
        xhat = centered * rstd

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            proj = ops.mean(upstream * xhat, axis=-1, keepdims=True)
            return rstd * (
                upstream
                - ops.mean(upstream, axis=-1, keepdims=True)
                - xhat * proj
            )

        return xhat, grad

    return standardize


@functools.lru_cache(maxsize=None)
def _scaler(epsilon):
    """`d -> d / sqrt(mean(d**2) + epsilon)` for rows `d` of zero mean."""

    @ops.custom_gradient
    def scale(d):
        rstd = ops.rsqrt(
            ops.mean(ops.square(d), axis=-1, keepdims=True) + epsilon
        )
        xhat = d * rstd

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            proj = ops.mean(upstream * xhat, axis=-1, keepdims=True)
            return rstd * (upstream - xhat * proj)

        return xhat, grad

    return scale


def ln_centered(d, gamma, epsilon):
    """`ln(d, gamma, None, epsilon)` for `d` whose rows have zero mean."""
    dtype = keras.backend.standardize_dtype(d.dtype)
    sdtype = "float64" if dtype == "float64" else "float32"
    ds = ops.cast(d, sdtype) if dtype != sdtype else d
    y = _scaler(float(epsilon))(ds) * ops.cast(gamma, sdtype)
    return ops.cast(y, dtype) if dtype != sdtype else y


def ln(x, gamma, beta, epsilon):
    """Layer normalization over the last axis, for use inside the loop.

    Statistics in float32 (float64 for float64 inputs); output in x's dtype.
    """
    dtype = keras.backend.standardize_dtype(x.dtype)
    sdtype = "float64" if dtype == "float64" else "float32"
    xs = ops.cast(x, sdtype) if dtype != sdtype else x
    y = _standardizer(float(epsilon))(xs)
    if gamma is not None:
        y = y * ops.cast(gamma, sdtype)
    if beta is not None:
        y = y + ops.cast(beta, sdtype)
    return ops.cast(y, dtype) if dtype != sdtype else y


def ln_sequence(x, gamma, beta, epsilon):
    """Layer normalization of a whole projected sequence (last axis).

    Goes through `_fast_paths.layer_norm`, i.e. the backend's fused layer
    norm where there is one.
    """
    return _fast_paths.layer_norm(x, gamma, beta, -1, epsilon)


def in_float32(initializer):
    """`initializer` computed in float32 for 16-bit variables, then cast.

    keras' orthogonal initializer (the default recurrent one) runs a QR
    decomposition, which TensorFlow has no bfloat16 kernel for; the values
    are the same up to the variable's precision. The serialized initializer
    is still the cell's own.
    """

    def initialize(shape, dtype=None, **kwargs):
        if dtype is not None and keras.backend.standardize_dtype(dtype) in (
            "float16", "bfloat16"
        ):
            return ops.cast(initializer(shape, dtype="float32", **kwargs),
                            dtype)
        return initializer(shape, dtype=dtype, **kwargs)

    return initialize


def unit_forget_bias_initializer(cell, n_blocks):
    """Bias initializer setting the forget-gate block (block 1) to ones."""

    def bias_initializer(_, *args, **kwargs):
        units = cell.units
        return ops.concatenate(
            [
                cell.bias_initializer((units,), *args, **kwargs),
                keras.initializers.get("ones")((units,), *args, **kwargs),
                cell.bias_initializer(
                    ((n_blocks - 2) * units,), *args, **kwargs
                ),
            ]
        )

    return bias_initializer


def dropout_inputs(cell, sequences, training):
    """Apply the cell's (per-sample, time-constant) input dropout mask."""
    if training and 0.0 < cell.dropout < 1.0:
        mask = cell.get_dropout_mask(sequences[:, 0, :])
        return sequences * ops.expand_dims(mask, 1)
    return sequences


def dropout_state(cell, h, training):
    """Apply the cell's recurrent dropout mask to the carried output."""
    if training and 0.0 < cell.recurrent_dropout < 1.0:
        return h * cell.get_recurrent_dropout_mask(h)
    return h


def to_time_major(sequences):
    """(batch, time, ...) -> (time, batch, ...)."""
    return ops.swapaxes(sequences, 0, 1)


def gate_blocks(projected, blocks):
    """The time-major projected sequence for a fused layer's generic loop:
    its `blocks` gate blocks as a tuple of sequences where
    `_fast_paths.gate_blocks_apart()` and the number of steps is known
    when tracing (keras' TensorFlow loop reads an unknown one from
    `inputs.shape`, which a tuple does not have), else as it is."""
    if projected.shape[0] is not None and _fast_paths.gate_blocks_apart():
        return tuple(ops.split(projected, blocks, axis=-1))
    return projected


def add_in_blocks(inputs, r, blocks):
    """`inputs + r` as its `blocks` gate blocks. `inputs` is a step's
    input, or already its blocks (`gate_blocks`): then each block gets its
    part of `r` (the same additions, without slicing the input)."""
    if isinstance(inputs, (list, tuple)):
        return [p + q for p, q in zip(inputs, ops.split(r, blocks, axis=-1))]
    return ops.split(inputs + r, blocks, axis=-1)


def run_loop(layer, step, inputs, initial_state, mask, time_major=False):
    """keras' backend time loop with the layer's RNN settings.

    With `time_major=True`, `inputs` (a tensor or a tuple of tensors) are
    `(time, batch, ...)`: the wide projected sequence then needs no
    transposition; the outputs are returned batch-major as keras' `RNN`
    expects.
    """
    if not isinstance(initial_state, (list, tuple)):
        initial_state = [initial_state]
    first = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    if mask is not None and time_major:
        mask = to_time_major(mask)
    last_output, outputs, states = backend_rnn(
        step,
        inputs,
        list(initial_state),
        go_backwards=layer.go_backwards,
        mask=mask,
        unroll=layer.unroll,
        input_length=first.shape[0 if time_major else 1],
        time_major=time_major,
        zero_output_for_mask=layer.zero_output_for_mask,
        return_all_outputs=layer.return_sequences,
    )
    if time_major:
        outputs = to_time_major(outputs)
    return last_output, outputs, states


class FusedRNN(keras.layers.RNN):
    """Base of the fused layers: a keras RNN whose config is its cell's.

    Subclasses set `cell_class` and override `inner_loop`. Constructor
    arguments of the cell are read back as attributes (`layer.units`, ...).
    Layers with a backend kernel (`kernel_kind`, e.g. "lstm") take
    `use_kernel` (see `_fast_paths`) and call `kernel_inner_loop` first.
    """

    cell_class = None
    kernel_kind = None

    def __init__(self, cell, use_kernel=None, **kwargs):
        super().__init__(cell, **kwargs)
        if self.kernel_kind is not None:
            self.use_kernel = _fast_paths.check_use_kernel(use_kernel)
            # Only an explicit choice of the native ops rules out XLA:
            # "auto" takes the XLA-compatible path inside XLA.
            if use_kernel == "native":
                self.supports_jit = False

    def kernel_inner_loop(self, sequences, initial_state, mask, training):
        """The recurrence by the backend's kernel, as `use_kernel` asks, or
        None where the generic loop runs (`sequences` had input dropout).
        """
        if self.use_kernel is False:
            return None
        try:
            return _fast_paths.recurrence(
                self, sequences, initial_state, mask, training
            )
        except NotImplementedError as error:
            return self.no_kernel(str(error))

    def no_kernel(self, reason):
        """None (the generic loop runs) where `use_kernel` is "auto"; else
        a ValueError saying why no kernel runs this call."""
        if isinstance(self.use_kernel, str) and self.use_kernel == "auto":
            return None
        raise ValueError(
            f"use_kernel={self.use_kernel!r} was specified, but {reason}. "
            "Pass use_kernel='auto' to fall back to the generic loop "
            "where no kernel applies."
        ) from None

    def _check_input_shape(self, shape):
        check_sequence_shape(shape, type(self).__name__)

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_input_shape(sequences_shape)
        super().build(sequences_shape, initial_state_shape)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        self._check_input_shape(sequences_shape)
        return super().compute_output_shape(
            sequences_shape, initial_state_shape
        )

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self._check_input_shape(sequences.shape)
        return super().call(
            sequences,
            mask=mask,
            training=training,
            initial_state=initial_state,
        )

    def get_config(self):
        base_config = super().get_config()
        del base_config["cell"]
        cell_config = self.cell.get_config()
        for key in _BASE_LAYER_KEYS:
            cell_config.pop(key, None)
        config = {
            **base_config,
            **cell_config,
            "activity_regularizer": keras.regularizers.serialize(
                self.activity_regularizer
            ),
        }
        if self.kernel_kind is not None:
            config["use_kernel"] = self.use_kernel
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def expose_cell_arguments(cls):
    """Class decorator: read-only properties forwarding cell arguments."""
    import inspect

    params = inspect.signature(cls.cell_class.__init__).parameters
    for name in params:
        if name in ("self", "kwargs") or hasattr(cls, name):
            continue
        setattr(
            cls,
            name,
            property(lambda self, _n=name: getattr(self.cell, _n)),
        )
    return cls
