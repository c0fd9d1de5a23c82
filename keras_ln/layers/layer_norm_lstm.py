"""`keras_ln.LayerNormLSTMCell` and the fused `keras_ln.LayerNormLSTM`."""

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


@keras.saving.register_keras_serializable(package="keras_ln")
class LayerNormLSTMCell(keras.layers.Layer, DropoutRNNCell):
    """Cell of a layer-normalized LSTM (Ba, Kiros & Hinton, 2016).

    One time step, for `keras.layers.RNN` or `keras.layers.StackedRNNCells`:

    ```python
    z = LN(x @ kernel; kernel_norm) + LN(h_prev @ recurrent_kernel;
        recurrent_norm) + bias                        # 4 * units, [i f g o]
    i, f, o = recurrent_activation(z_i, z_f, z_o)
    g = activation(z_g)
    c = f * c_prev + i * g
    h = o * activation(LN(c; state_norm))
    carried state: [h, c]                  # carry_normalized_cell=False
                   [h, LN(c; state_norm)]  # carry_normalized_cell=True
    ```

    `LN(v; norm) = (v - mean(v)) / sqrt(var(v) + norm_epsilon) * gamma + beta`
    over the whole 4·units (or units) vector of each sample, with float32
    statistics. By default the raw cell state `c` is carried to the next step,
    as in the paper and the authors' code; `carry_normalized_cell=True`
    carries the normalized state instead, which is what
    `tfa.rnn.LayerNormLSTMCell` (tensorflow-addons) does.

    The weights come in tensorflow-addons' order: `kernel`,
    `recurrent_kernel`, `bias`, then gamma and beta of the kernel norm, the
    recurrent norm and the state norm (9 weights; 8 without bias). Weights
    taken from a tfa cell with `get_weights()` load with `set_weights()` and,
    with `carry_normalized_cell=True`, give the same outputs.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation of the candidate and of the output. Default
            `"tanh"`.
        recurrent_activation: Activation of the gates. Default `"sigmoid"`.
        use_bias: Whether to add a bias after the normalizations.
        kernel_initializer: Initializer of the input kernel.
        recurrent_initializer: Initializer of the recurrent kernel.
        bias_initializer: Initializer of the bias.
        unit_forget_bias: If True, the forget-gate bias starts at 1.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Optional regularizers.
        kernel_constraint, recurrent_constraint, bias_constraint: Optional
            constraints.
        dropout: Float in [0, 1), fraction of the inputs dropped (one mask
            per sample, the same at every step).
        recurrent_dropout: Float in [0, 1), fraction of the carried output
            dropped before the recurrent projection.
        seed: Random seed for dropout.
        norm_epsilon: Positive float added to the variances. Default 1e-3.
        norm_gamma_initializer: Initializer of the three norm gammas.
        norm_beta_initializer: Initializer of the three norm betas.
        carry_normalized_cell: If True, carry the normalized cell state (the
            tensorflow-addons behaviour). Default False (Ba et al.).
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: 2-D tensor `(batch, features)`.
        states: List `[h, c]`, each `(batch, units)`.
        training: Whether dropout is active.

    Example:

    >>> import numpy as np, keras, keras_ln
    >>> x = np.random.rand(2, 5, 3).astype("float32")
    >>> rnn = keras.layers.RNN(keras_ln.LayerNormLSTMCell(4))
    >>> tuple(rnn(x).shape)
    (2, 4)

    Reference:

    - [Ba et al., 2016](https://arxiv.org/abs/1607.06450).
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
        unit_forget_bias=True,
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
        carry_normalized_cell=False,
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
        super().__init__(**kwargs)
        self.units = units
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
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
        self.carry_normalized_cell = bool(carry_normalized_cell)
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        _recurrent.check_step_shape(input_shape, type(self).__name__)
        input_dim = input_shape[-1]
        units = self.units
        self.kernel = self.add_weight(
            shape=(input_dim, 4 * units),
            name="kernel",
            initializer=_recurrent.in_float32(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, 4 * units),
            name="recurrent_kernel",
            initializer=_recurrent.in_float32(self.recurrent_initializer),
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(4 * units,),
                name="bias",
                initializer=(
                    _recurrent.unit_forget_bias_initializer(self, 4)
                    if self.unit_forget_bias
                    else self.bias_initializer
                ),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        for norm, size in (
            ("kernel_norm", 4 * units),
            ("recurrent_norm", 4 * units),
            ("state_norm", units),
        ):
            for param, init in (
                ("gamma", self.norm_gamma_initializer),
                ("beta", self.norm_beta_initializer),
            ):
                weight = self.add_weight(
                    shape=(size,),
                    name=f"{norm}_{param}",
                    initializer=init,
                    autocast=False,
                )
                setattr(self, f"{norm}_{param}", weight)
        self.built = True

    def input_projection(self, inputs, sequence=False):
        """LN(inputs @ kernel) + bias, for one step or a whole sequence."""
        norm = _recurrent.ln_sequence if sequence else _recurrent.ln
        z = norm(
            ops.matmul(inputs, self.kernel),
            self.kernel_norm_gamma,
            self.kernel_norm_beta,
            self.norm_epsilon,
        )
        if self.use_bias:
            z = z + ops.cast(self.bias, z.dtype)
        return z

    def recurrent_step(
        self, projected_inputs, states, training=False, centered_kernel=None
    ):
        """One step from the already projected and normalized input (a
        tensor, or the fused layer's tuple of its four gate blocks).

        With `centered_kernel` (the fused layer's fast form), that is
        `center_columns(recurrent_kernel)` and `projected_inputs` already
        holds the recurrent norm's beta.
        """
        h_tm1, c_tm1 = states[0], states[1]
        h_in = _recurrent.dropout_state(self, h_tm1, training)
        if centered_kernel is None:
            r = ln(
                ops.matmul(h_in, self.recurrent_kernel),
                self.recurrent_norm_gamma,
                self.recurrent_norm_beta,
                self.norm_epsilon,
            )
        else:
            r = _recurrent.ln_centered(
                ops.matmul(h_in, centered_kernel),
                self.recurrent_norm_gamma,
                self.norm_epsilon,
            )
        z_i, z_f, z_g, z_o = _recurrent.add_in_blocks(projected_inputs, r, 4)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        o = self.recurrent_activation(z_o)
        c = f * c_tm1 + i * self.activation(z_g)
        c_norm = ln(
            c, self.state_norm_gamma, self.state_norm_beta, self.norm_epsilon
        )
        h = o * self.activation(c_norm)
        return h, [h, c_norm if self.carry_normalized_cell else c]

    def call(self, inputs, states, training=False):
        if training and 0.0 < self.dropout < 1.0:
            inputs = inputs * self.get_dropout_mask(inputs)
        return self.recurrent_step(
            self.input_projection(inputs), states, training=training
        )

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, d), dtype=self.compute_dtype)
            for d in self.state_size
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
            "unit_forget_bias": self.unit_forget_bias,
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
            "carry_normalized_cell": self.carry_normalized_cell,
        }
        return {**super().get_config(), **config}


@_recurrent.expose_cell_arguments
@keras.saving.register_keras_serializable(package="keras_ln")
class LayerNormLSTM(_recurrent.FusedRNN):
    """Layer-normalized LSTM layer (Ba et al., 2016), fused.

    Computes exactly what `keras.layers.RNN(LayerNormLSTMCell(...))` computes
    (see `LayerNormLSTMCell` for the equations and the weights, which are the
    same and in the same order), but the input projection and its
    normalization, `LN(x @ kernel) + bias`, are computed for all time steps
    in one batched operation before the recurrent loop; only
    `LN(h @ recurrent_kernel)`, the gates and the state norm run per step.
    Masks, `go_backwards`, `stateful`, `unroll`, `initial_state` and the
    return modes behave as in `keras.layers.LSTM`.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, unit_forget_bias,
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
        kernel_constraint, recurrent_constraint, bias_constraint, dropout,
        recurrent_dropout, seed, norm_epsilon, norm_gamma_initializer,
        norm_beta_initializer, carry_normalized_cell: As in
            `LayerNormLSTMCell`.
        activity_regularizer: Regularizer applied to the layer's output.
        return_sequences: Return the full output sequence (default: last).
        return_state: Also return the last states `[h, c]`.
        go_backwards: Process the sequence backwards (and return the
            reversed sequence).
        stateful: Carry the last states of a batch into the next batch.
        unroll: Unroll the loop (short sequences only).
        use_kernel: Which implementation runs the recurrence, like keras'
            `use_cudnn`: `"auto"` (default) a fused TensorFlow kernel where
            one applies (the native ops, or inside an XLA-compiled
            function the XLA-compatible kernel), else the generic
            `keras.ops` loop; `True` a fused kernel or an error; `False`
            always the generic loop; `"native"` or `"xla"` that kernel or
            an error. All compute the same numbers, with either
            `carry_normalized_cell`.
        **kwargs: Base layer keyword arguments (e.g. `name`, `dtype`,
            `zero_output_for_mask`).

    Call arguments:
        sequences: 3-D tensor `(batch, timesteps, features)`.
        initial_state: Optional list `[h, c]`.
        mask: Optional boolean `(batch, timesteps)`.
        training: Whether dropout is active.

    Example:

    >>> import numpy as np, keras_ln
    >>> x = np.random.rand(2, 5, 3).astype("float32")
    >>> tuple(keras_ln.LayerNormLSTM(4, return_sequences=True)(x).shape)
    (2, 5, 4)

    Reference:

    - [Ba et al., 2016](https://arxiv.org/abs/1607.06450).
    """

    cell_class = LayerNormLSTMCell
    kernel_kind = "lstm"

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
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
        carry_normalized_cell=False,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_kernel="auto",
        **kwargs,
    ):
        cell = LayerNormLSTMCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
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
            carry_normalized_cell=carry_normalized_cell,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="layer_norm_lstm_cell",
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
        # Loop invariants moved out of the loop: the recurrent norm's beta,
        # and the centering of W_h·h (done on the kernel instead).
        projected = projected + ops.cast(
            cell.recurrent_norm_beta, projected.dtype
        )
        centered = center_columns(cell.recurrent_kernel)

        def step(projected_t, states):
            return cell.recurrent_step(
                projected_t, states, training=training,
                centered_kernel=centered,
            )

        return _recurrent.run_loop(
            self, step, _recurrent.gate_blocks(projected, 4), initial_state,
            mask, time_major=True,
        )
