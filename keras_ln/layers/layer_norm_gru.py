"""`keras_ln.LayerNormGRUCell` and the fused `keras_ln.LayerNormGRU`."""

import keras
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from keras_ln.layers import _recurrent
from keras_ln.layers._layer_norm import center_columns
from keras_ln.layers._recurrent import ln


def _is_nested(states):
    return isinstance(states, (list, tuple))


@keras.saving.register_keras_serializable(package="keras_ln")
class LayerNormGRUCell(keras.layers.Layer, DropoutRNNCell):
    """Cell of a layer-normalized GRU (keras' `reset_after=True` GRU).

    One time step, for `keras.layers.RNN` or `keras.layers.StackedRNNCells`
    (`[z r n]` is the gate order of `keras.layers.GRUCell`):

    ```python
    x_z, x_r, x_n = LN(x @ kernel; kernel_norm) + input_bias
    h_z, h_r, h_n = LN(h_prev @ recurrent_kernel; recurrent_norm)
                    + recurrent_bias
    z = recurrent_activation(x_z + h_z)
    r = recurrent_activation(x_r + h_r)
    n = activation(x_n + r * h_n)
    h = z * h_prev + (1 - z) * n
    ```

    `LN(v; norm) = (v - mean(v)) / sqrt(var(v) + norm_epsilon) * gamma + beta`
    over the whole 3·units vector of each sample, with float32 statistics.
    The bias has keras' `reset_after=True` shape `(2, 3 * units)` (row 0 the
    input bias, row 1 the recurrent bias), so the first three weights have
    the shapes of a `keras.layers.GRUCell`'s. Weights, in order: `kernel`,
    `recurrent_kernel`, `bias`, `kernel_norm_gamma`, `kernel_norm_beta`,
    `recurrent_norm_gamma`, `recurrent_norm_beta`.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation of the candidate. Default `"tanh"`.
        recurrent_activation: Activation of the gates. Default `"sigmoid"`.
        use_bias: Whether to add the biases after the normalizations.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Initializers of the kernels and the bias.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Optional regularizers.
        kernel_constraint, recurrent_constraint, bias_constraint: Optional
            constraints.
        dropout: Float in [0, 1), fraction of the inputs dropped (one mask
            per sample, the same at every step).
        recurrent_dropout: Float in [0, 1), fraction of the previous state
            dropped before the recurrent projection.
        seed: Random seed for dropout.
        norm_epsilon: Positive float added to the variances. Default 1e-3.
        norm_gamma_initializer: Initializer of the two norm gammas.
        norm_beta_initializer: Initializer of the two norm betas.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: 2-D tensor `(batch, features)`.
        states: `h` or `[h]`, `(batch, units)`.
        training: Whether dropout is active.

    Example:

    >>> import numpy as np, keras, keras_ln
    >>> x = np.random.rand(2, 5, 3).astype("float32")
    >>> tuple(keras.layers.RNN(keras_ln.LayerNormGRUCell(4))(x).shape)
    (2, 4)

    Reference:

    - [Ba et al., 2016](https://arxiv.org/abs/1607.06450).
    - [Cho et al., 2014](https://arxiv.org/abs/1406.1078).
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        norm_epsilon=1e-3,
        norm_gamma_initializer="ones",
        norm_beta_initializer="zeros",
        **kwargs,
    ):
        units = _recurrent.check_units(units)
        dropout = _recurrent.check_rate("dropout", dropout)
        recurrent_dropout = _recurrent.check_rate(
            "recurrent_dropout", recurrent_dropout
        )
        norm_epsilon = _recurrent.check_positive_float(
            "norm_epsilon", norm_epsilon
        )
        reset_after = kwargs.pop("reset_after", True)
        if reset_after is not True:
            raise ValueError(
                "Expected `reset_after=True`: LayerNormGRUCell implements "
                "keras' reset_after=True GRU only. "
                f"Received: reset_after={reset_after!r}"
            )
        super().__init__(**kwargs)
        self.units = units
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.norm_epsilon = norm_epsilon
        self.norm_gamma_initializer = initializers.get(norm_gamma_initializer)
        self.norm_beta_initializer = initializers.get(norm_beta_initializer)
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        _recurrent.check_step_shape(input_shape, type(self).__name__)
        input_dim = input_shape[-1]
        units = self.units
        self.kernel = self.add_weight(
            shape=(input_dim, 3 * units),
            name="kernel",
            initializer=_recurrent.in_float32(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, 3 * units),
            name="recurrent_kernel",
            initializer=_recurrent.in_float32(self.recurrent_initializer),
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(2, 3 * units),
                name="bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        for norm in ("kernel_norm", "recurrent_norm"):
            for param, init in (
                ("gamma", self.norm_gamma_initializer),
                ("beta", self.norm_beta_initializer),
            ):
                weight = self.add_weight(
                    shape=(3 * units,),
                    name=f"{norm}_{param}",
                    initializer=init,
                    autocast=False,
                )
                setattr(self, f"{norm}_{param}", weight)
        self.built = True

    def input_projection(self, inputs, sequence=False):
        """LN(inputs @ kernel) + input_bias, for a step or a sequence."""
        norm = _recurrent.ln_sequence if sequence else _recurrent.ln
        x = norm(
            ops.matmul(inputs, self.kernel),
            self.kernel_norm_gamma,
            self.kernel_norm_beta,
            self.norm_epsilon,
        )
        if self.use_bias:
            x = x + ops.cast(self.bias[0], x.dtype)
        return x

    def recurrent_offset(self):
        """The recurrent norm's beta plus the recurrent bias."""
        if self.use_bias:
            return self.recurrent_norm_beta + ops.cast(
                self.bias[1], self.recurrent_norm_beta.dtype
            )
        return self.recurrent_norm_beta

    def recurrent_step(
        self, projected_inputs, states, training=False, centered=None
    ):
        """One step from the already projected and normalized input (a
        tensor, or the fused layer's tuple of its three gate blocks).

        `centered`, the fused layer's fast form, is the pair
        `(center_columns(recurrent_kernel), recurrent_offset())`.
        """
        h_tm1 = states[0] if _is_nested(states) else states
        h_in = _recurrent.dropout_state(self, h_tm1, training)
        if centered is None:
            inner = ln(
                ops.matmul(h_in, self.recurrent_kernel),
                self.recurrent_norm_gamma,
                self.recurrent_norm_beta,
                self.norm_epsilon,
            )
            if self.use_bias:
                inner = inner + ops.cast(self.bias[1], inner.dtype)
        else:
            kernel, offset = centered
            inner = _recurrent.ln_centered(
                ops.matmul(h_in, kernel),
                self.recurrent_norm_gamma,
                self.norm_epsilon,
            )
            inner = inner + offset
        if isinstance(projected_inputs, (list, tuple)):
            x_z, x_r, x_n = projected_inputs  # the fused layer's blocks
        else:
            x_z, x_r, x_n = ops.split(projected_inputs, 3, axis=-1)
        h_z, h_r, h_n = ops.split(inner, 3, axis=-1)
        z = self.recurrent_activation(x_z + h_z)
        r = self.recurrent_activation(x_r + h_r)
        n = self.activation(x_n + r * h_n)
        h = z * h_tm1 + (1.0 - z) * n
        return h, ([h] if _is_nested(states) else h)

    def call(self, inputs, states, training=False):
        if training and 0.0 < self.dropout < 1.0:
            inputs = inputs * self.get_dropout_mask(inputs)
        return self.recurrent_step(
            self.input_projection(inputs), states, training=training
        )

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, self.state_size), dtype=self.compute_dtype)
        ]

    def get_config(self):
        config = {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(
                self.recurrent_activation
            ),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(
                self.kernel_initializer
            ),
            "recurrent_initializer": initializers.serialize(
                self.recurrent_initializer
            ),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(
                self.kernel_regularizer
            ),
            "recurrent_regularizer": regularizers.serialize(
                self.recurrent_regularizer
            ),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(
                self.recurrent_constraint
            ),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "norm_epsilon": self.norm_epsilon,
            "norm_gamma_initializer": initializers.serialize(
                self.norm_gamma_initializer
            ),
            "norm_beta_initializer": initializers.serialize(
                self.norm_beta_initializer
            ),
        }
        return {**super().get_config(), **config}


@_recurrent.expose_cell_arguments
@keras.saving.register_keras_serializable(package="keras_ln")
class LayerNormGRU(_recurrent.FusedRNN):
    """Layer-normalized GRU layer (keras' `reset_after=True` GRU), fused.

    Computes what `keras.layers.RNN(LayerNormGRUCell(...))` computes (same
    weights, same order; equations in `LayerNormGRUCell`):

    ```python
    x_z, x_r, x_n = LN(x @ kernel; kernel_norm) + input_bias
    h_z, h_r, h_n = LN(h_prev @ recurrent_kernel; recurrent_norm)
                    + recurrent_bias
    z = sigmoid(x_z + h_z); r = sigmoid(x_r + h_r)
    n = tanh(x_n + r * h_n); h = z * h_prev + (1 - z) * n
    ```

    but `LN(x @ kernel) + input_bias` is computed for all time steps in one
    batched operation before the recurrent loop. Masks, `go_backwards`,
    `stateful`, `unroll`, `initial_state` and the return modes behave as in
    `keras.layers.GRU`.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, kernel_regularizer,
        recurrent_regularizer, bias_regularizer, kernel_constraint,
        recurrent_constraint, bias_constraint, dropout, recurrent_dropout,
        seed, norm_epsilon, norm_gamma_initializer, norm_beta_initializer:
            As in `LayerNormGRUCell`.
        activity_regularizer: Regularizer applied to the layer's output.
        return_sequences, return_state, go_backwards, stateful, unroll: As
            in `keras.layers.GRU`.
        use_kernel: Which implementation runs the recurrence, like keras'
            `use_cudnn`: `"auto"` (default) a fused TensorFlow kernel where
            one applies (the native ops, or inside an XLA-compiled
            function the XLA-compatible kernel), else the generic
            `keras.ops` loop; `True` a fused kernel or an error; `False`
            always the generic loop; `"native"` or `"xla"` that kernel or
            an error. All compute the same numbers.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        sequences: 3-D tensor `(batch, timesteps, features)`.
        initial_state: Optional `[h]`.
        mask: Optional boolean `(batch, timesteps)`.
        training: Whether dropout is active.

    Example:

    >>> import numpy as np, keras_ln
    >>> x = np.random.rand(2, 5, 3).astype("float32")
    >>> tuple(keras_ln.LayerNormGRU(4)(x).shape)
    (2, 4)

    Reference:

    - [Ba et al., 2016](https://arxiv.org/abs/1607.06450).
    """

    cell_class = LayerNormGRUCell
    kernel_kind = "gru"

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        norm_epsilon=1e-3,
        norm_gamma_initializer="ones",
        norm_beta_initializer="zeros",
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_kernel="auto",
        **kwargs,
    ):
        cell = LayerNormGRUCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            norm_epsilon=norm_epsilon,
            norm_gamma_initializer=norm_gamma_initializer,
            norm_beta_initializer=norm_beta_initializer,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="layer_norm_gru_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            use_kernel=use_kernel,
            **kwargs,
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell
        sequences = _recurrent.dropout_inputs(cell, sequences, training)
        fused = self.kernel_inner_loop(
            sequences, initial_state, mask, training
        )
        if fused is not None:
            return fused
        # Time-major: only the narrow input is transposed, not the projection.
        projected = cell.input_projection(
            _recurrent.to_time_major(sequences), sequence=True
        )

        # Loop invariants computed once: the centering of W_h·h (done on the
        # kernel) and the recurrent norm's beta plus the recurrent bias.
        centered = (
            center_columns(cell.recurrent_kernel),
            ops.cast(cell.recurrent_offset(), projected.dtype),
        )

        def step(projected_t, states):
            return cell.recurrent_step(
                projected_t, states, training=training, centered=centered
            )

        return _recurrent.run_loop(
            self, step, _recurrent.gate_blocks(projected, 3), initial_state,
            mask, time_major=True,
        )
