"""`keras_ln.BatchNormLSTMCell` and the fused `keras_ln.BatchNormLSTM`.

The batch-normalized LSTM of Cooijmans et al. (2016), kept as the baseline the
layer-normalized LSTM is compared against.
"""

import keras
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from keras_ln.layers import _recurrent

_NORMS = ("kernel_norm", "recurrent_norm", "state_norm")


@keras.saving.register_keras_serializable(package="keras_ln")
class BatchNormLSTMCell(keras.layers.Layer, DropoutRNNCell):
    """Cell of a batch-normalized LSTM (Cooijmans et al., 2016).

    One time step `t`, for `keras.layers.RNN`:

    ```python
    z = BN_t(x @ kernel; gamma_x) + BN_t(h_prev @ recurrent_kernel; gamma_h)
        + bias                                        # 4 * units, [i f g o]
    i, f, o = recurrent_activation(z_i, z_f, z_o); g = activation(z_g)
    c = f * c_prev + i * g                            # raw state carried
    h = o * activation(BN_t(c; gamma_c, beta_c))
    BN_t(v; gamma, beta) = (v - mean_t) / sqrt(var_t + norm_epsilon) * gamma
                           + beta
    ```

    The input and recurrent norms have no beta (the bias plays its part, as
    in the paper); all gammas start at 0.1. In training `mean_t`, `var_t`
    are the statistics of the batch at step `t` (float32, two-pass), and the
    per-time-step moving statistics (shape `(max_steps, ...)`) are updated
    with `norm_momentum`. At inference the moving statistics of step `t` are
    used; steps beyond the longest training sequence (and beyond
    `max_steps`) reuse the last trained step's. So at inference the output
    for a sample does not depend on what else is in the batch. The moving
    statistics start at mean 0, variance 1 and keep `norm_momentum**n`
    of that after `n` updates, which matters because the recurrent norm's
    variances are small (~1e-3): after short training, set them to
    population statistics (e.g. one training-mode pass over the training
    data with `norm_momentum=0`; the keras_ln estimators do this).

    Used inside `keras.layers.RNN`, the cell counts its steps in a third
    state `[h, c, step]` (`step` is `(batch, 1)`), and, because keras' RNN
    does not hand the mask to a cell, masked steps do enter the batch
    statistics there. Use the fused `BatchNormLSTM` with masked data: it
    keeps masked steps out of the statistics and exposes only `[h, c]`.
    Also, unless `unroll=True`, keras' RNN calls the cell once more on step
    0 to learn the output's shape (TensorFlow backend); in training that
    moves step 0's moving statistics twice per batch (at momentum**2).
    `BatchNormLSTM` updates every step's statistics once, after the loop.

    Args:
        units: Positive integer, dimensionality of the output space.
        max_steps: Number of time steps with their own moving statistics.
            Required for the cell; `BatchNormLSTM` defaults it to the
            input's number of time steps.
        activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, unit_forget_bias,
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
        kernel_constraint, recurrent_constraint, bias_constraint, dropout,
        recurrent_dropout, seed: As in `keras.layers.LSTMCell` (dropout
        rates must lie in [0, 1)).
        norm_momentum: Momentum of the moving statistics. Default 0.99.
        norm_epsilon: Positive float added to the variances. Default 1e-3.
        norm_gamma_initializer: Initializer of the three gammas. Default
            `Constant(0.1)`.
        norm_beta_initializer: Initializer of the state norm's beta.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: 2-D tensor `(batch, features)`.
        states: `[h, c, step]`.
        training: Batch statistics (True) or moving statistics (False).

    Example:

    >>> import numpy as np, keras, keras_ln
    >>> x = np.random.rand(2, 5, 3).astype("float32")
    >>> cell = keras_ln.BatchNormLSTMCell(4, max_steps=5)
    >>> tuple(keras.layers.RNN(cell)(x).shape)
    (2, 4)

    Reference:

    - [Cooijmans et al., 2016](https://arxiv.org/abs/1603.09025).
    """

    def __init__(
        self,
        units,
        max_steps=None,
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
        norm_momentum=0.99,
        norm_epsilon=1e-3,
        norm_gamma_initializer=None,
        norm_beta_initializer="zeros",
        **kwargs,
    ):
        units = _recurrent.check_units(units)
        if max_steps is not None:
            if not _recurrent.is_integer(max_steps) or max_steps <= 0:
                raise ValueError(
                    "Expected `max_steps` to be a positive integer or None. "
                    f"Received: max_steps={max_steps!r}"
                )
        dropout = _recurrent.check_rate("dropout", dropout)
        recurrent_dropout = _recurrent.check_rate(
            "recurrent_dropout", recurrent_dropout
        )
        norm_epsilon = _recurrent.check_positive_float(
            "norm_epsilon", norm_epsilon
        )
        if (
            not _recurrent.is_real(norm_momentum)
            or not 0.0 <= norm_momentum < 1.0
        ):
            raise ValueError(
                "Expected `norm_momentum` to be a float in [0, 1). "
                f"Received: norm_momentum={norm_momentum!r}"
            )
        super().__init__(**kwargs)
        self.units = units
        self.max_steps = None if max_steps is None else int(max_steps)
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
        self.norm_momentum = float(norm_momentum)
        self.norm_epsilon = norm_epsilon
        self.norm_gamma_initializer = initializers.get(
            norm_gamma_initializer
            if norm_gamma_initializer is not None
            else initializers.Constant(0.1)
        )
        self.norm_beta_initializer = initializers.get(norm_beta_initializer)
        # [h, c, step]; BatchNormLSTM drops the step counter (it feeds the
        # loop position itself).
        self.state_size = [self.units, self.units, 1]
        self.output_size = self.units
        self._steps = self.max_steps

    def build(self, input_shape):
        _recurrent.check_step_shape(input_shape, type(self).__name__)
        if self._steps is None:
            raise ValueError(
                "Expected `max_steps` to be a positive integer: "
                "BatchNormLSTMCell keeps moving statistics per time step and "
                "needs their number (BatchNormLSTM takes it from the input's "
                "time axis). Received: max_steps=None"
            )
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
        sizes = {
            "kernel_norm": 4 * units,
            "recurrent_norm": 4 * units,
            "state_norm": units,
        }
        for norm in _NORMS:
            setattr(
                self,
                f"{norm}_gamma",
                self.add_weight(
                    shape=(sizes[norm],),
                    name=f"{norm}_gamma",
                    initializer=self.norm_gamma_initializer,
                    autocast=False,
                ),
            )
        self.state_norm_beta = self.add_weight(
            shape=(units,),
            name="state_norm_beta",
            initializer=self.norm_beta_initializer,
            autocast=False,
        )
        for norm in _NORMS:
            for stat, init in (("mean", "zeros"), ("variance", "ones")):
                setattr(
                    self,
                    f"{norm}_moving_{stat}",
                    self.add_weight(
                        shape=(self._steps, sizes[norm]),
                        name=f"{norm}_moving_{stat}",
                        initializer=init,
                        dtype=self.stats_dtype,
                        trainable=False,
                        autocast=False,
                    ),
                )
        # Length of the longest training sequence seen so far (capped at
        # max_steps): inference at later steps reuses the last one's stats.
        self.moving_steps = self.add_weight(
            shape=(),
            name="moving_steps",
            initializer="zeros",
            dtype=self.stats_dtype,
            trainable=False,
            autocast=False,
        )
        self.built = True

    # -- normalization ------------------------------------------------------

    @property
    def stats_dtype(self):
        """float32 statistics, float64 for a float64 layer."""
        dtype = keras.backend.standardize_dtype(self.compute_dtype)
        return "float64" if dtype == "float64" else "float32"

    def _scale(self, y, norm, dtype):
        y = y * ops.cast(getattr(self, f"{norm}_gamma"), y.dtype)
        if norm == "state_norm":
            y = y + ops.cast(self.state_norm_beta, y.dtype)
        return ops.cast(y, dtype)

    def _update(self, norm, rows, mean, variance):
        """Move the moving statistics towards (mean, variance) on `rows`.

        `rows` is `(max_steps, n)` with one-hot columns (a zero column for
        steps that carry no data or lie beyond max_steps); `mean` and
        `variance` are `(n, features)`.
        """
        rate = 1.0 - self.norm_momentum
        for stat, value in (("mean", mean), ("variance", variance)):
            var = getattr(self, f"{norm}_moving_{stat}")
            old = ops.convert_to_tensor(var)
            hit = ops.sum(rows, axis=1, keepdims=True)
            target = ops.matmul(rows, value)
            # momentum * old + rate * target on the hit rows, written so
            # that momentum 0 gives exactly `target` (and other rows `old`).
            var.assign(old * (1.0 - rate * hit) + rate * target)

    def _batch_moments(self, zf, valid, axis=0):
        """Mean and (two-pass) variance over the valid samples of `axis`."""
        if valid is None:
            mean = ops.mean(zf, axis=axis)
            variance = ops.mean(
                ops.square(zf - ops.expand_dims(mean, axis)), axis=axis
            )
            return mean, variance
        count = ops.sum(valid, axis=axis, keepdims=True)
        w = valid / ops.maximum(count, 1.0)
        mean = ops.sum(w * zf, axis=axis)
        variance = ops.sum(
            w * ops.square(zf - ops.expand_dims(mean, axis)), axis=axis
        )
        return mean, variance

    def _normalize_batch(self, z, norm, t, valid=None, update=True):
        """Training-mode BN of a step `(batch, n)`; updates step `t`."""
        zf = ops.cast(z, self.stats_dtype)
        mean, variance = self._batch_moments(zf, valid)
        if update:
            has_data = (
                ops.ones((), self.stats_dtype)
                if valid is None
                else ops.cast(ops.sum(valid) > 0, self.stats_dtype)
            )
            rows = ops.one_hot(t, self._steps, dtype=self.stats_dtype)
            rows = ops.expand_dims(rows, 1) * has_data
            self._update(norm, rows, mean[None], variance[None])
        y = (zf - mean) * ops.rsqrt(variance + self.norm_epsilon)
        return self._scale(y, norm, z.dtype)

    def _update_from_sequence(self, norm, z, valid):
        """Update the moving statistics from a whole processed sequence.

        `z` is `(batch, timesteps, n)` in processing order, `valid`
        `(batch, timesteps)` floats.
        """
        zf = ops.cast(ops.stop_gradient(z), self.stats_dtype)
        mean, variance = self._batch_moments(zf, valid[:, :, None])
        has_data = ops.cast(ops.sum(valid, axis=0) > 0, self.stats_dtype)
        steps = ops.shape(z)[1]
        rows = ops.transpose(
            ops.one_hot(ops.arange(steps), self._steps, dtype=self.stats_dtype)
            * has_data[:, None]
        )
        self._update(norm, rows, mean, variance)
        return has_data

    def _stat_index(self, index):
        """Row of the moving statistics used at (integer) step `index`."""
        last = ops.maximum(ops.cast(self.moving_steps, "int32"), 1) - 1
        return ops.minimum(ops.cast(index, "int32"), last)

    def _normalize_moving(self, z, norm, index):
        """Inference-mode BN; `index` is `(batch,)` for a step `(batch, n)`
        or `(timesteps,)` for a sequence `(batch, timesteps, n)`."""
        rows = self._stat_index(index)
        mean = ops.take(getattr(self, f"{norm}_moving_mean"), rows, axis=0)
        variance = ops.take(
            getattr(self, f"{norm}_moving_variance"), rows, axis=0
        )
        y = (ops.cast(z, self.stats_dtype) - mean) * ops.rsqrt(
            variance + self.norm_epsilon
        )
        return self._scale(y, norm, z.dtype)

    def _normalize(self, z, norm, t, index, valid, training, update):
        if training:
            return self._normalize_batch(z, norm, t, valid, update)
        return self._normalize_moving(z, norm, index)

    def _count_steps(self, seen):
        seen = ops.minimum(ops.cast(seen, self.stats_dtype), float(self._steps))
        self.moving_steps.assign(ops.maximum(self.moving_steps, seen))

    # -- the step -----------------------------------------------------------

    def add_bias(self, z):
        if self.use_bias:
            z = z + ops.cast(self.bias, z.dtype)
        return z

    def recurrent_step(
        self, xn, h_tm1, c_tm1, t, index, valid, training, update=True
    ):
        """Everything after the input normalization, for one step.

        `xn` is `BN(x @ kernel) + bias`; `t` the scalar step whose training
        statistics are updated (when `update`); `index` `(batch,)` the step
        of each sample for inference; `valid` `(batch, 1)` floats or None.
        Returns `h`, the carried `c` and the recurrent projection.
        """
        h_in = _recurrent.dropout_state(self, h_tm1, training)
        hz = ops.matmul(h_in, self.recurrent_kernel)
        z = xn + self._normalize(
            hz, "recurrent_norm", t, index, valid, training, update
        )
        z_i, z_f, z_g, z_o = ops.split(z, 4, axis=-1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        o = self.recurrent_activation(z_o)
        c = f * c_tm1 + i * self.activation(z_g)
        c_norm = self._normalize(
            c, "state_norm", t, index, valid, training, update
        )
        if training and update:
            self._count_steps(t + 1)
        h = o * self.activation(c_norm)
        return h, c, hz

    def call(self, inputs, states, training=False):
        h_tm1, c_tm1, step = states[0], states[1], states[2]
        if training and 0.0 < self.dropout < 1.0:
            inputs = inputs * self.get_dropout_mask(inputs)
        index = ops.cast(step[:, 0], "int32")
        t = ops.max(index)
        xn = self.add_bias(
            self._normalize(
                ops.matmul(inputs, self.kernel),
                "kernel_norm",
                t,
                index,
                None,
                training,
                True,
            )
        )
        h, c, _ = self.recurrent_step(
            xn, h_tm1, c_tm1, t, index, None, training
        )
        return h, [h, c, step + ops.cast(1, step.dtype)]

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, d), dtype=self.compute_dtype)
            for d in self.state_size
        ]

    def get_config(self):
        config = {
            "units": self.units,
            "max_steps": self.max_steps,
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
            "norm_momentum": self.norm_momentum,
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
class BatchNormLSTM(_recurrent.FusedRNN):
    """Batch-normalized LSTM layer (Cooijmans et al., 2016), fused.

    The equations and weights of `BatchNormLSTMCell`, with the input
    projection and its batch normalization computed for all time steps in
    one batched operation before the loop. Masked steps are kept out of the
    batch statistics (each step's statistics are taken over the samples not
    masked at that step, and steps without any such sample leave the moving
    statistics alone). The time index of a step is its position in
    processing order (the first processed step is 0, also with
    `go_backwards=True`); with right-padded or unmasked data this is each
    sample's own step. The states are `[h, c]` as in `keras.layers.LSTM`;
    with `stateful=True` the states carry over but the time index restarts
    at 0 with every batch.

    Args:
        units: Positive integer, dimensionality of the output space.
        max_steps: Number of time steps with their own moving statistics;
            defaults to the input's number of time steps (which must then be
            known when the layer is built).
        activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, unit_forget_bias,
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
        kernel_constraint, recurrent_constraint, bias_constraint, dropout,
        recurrent_dropout, seed, norm_momentum, norm_epsilon,
        norm_gamma_initializer, norm_beta_initializer: As in
            `BatchNormLSTMCell`.
        activity_regularizer: Regularizer applied to the layer's output.
        return_sequences, return_state, go_backwards, stateful, unroll: As
            in `keras.layers.LSTM`.
        use_kernel: The recurrence's implementation, like keras'
            `use_cudnn` (see `LayerNormLSTM`): `"auto"` (default) a fused
            kernel where one applies (TensorFlow, tanh/sigmoid, no
            recurrent dropout, float32/float64, no unrolling): the native
            ops (`keras_ln.layers._native`: C++ forward and
            backward-through-time ops, the units split into shards that run
            each step concurrently), or inside an XLA-compiled function,
            or where the native library is not built, the TensorFlow kernel
            (`_tf_bn_lstm_kernel`: a forward loop and a hand-written
            backward-through-time loop, which compile under XLA); else
            keras' loop over the cell's step. `True` a kernel as with
            "auto", and an error where none applies; `"native"` or `"xla"`
            that kernel, and an error where it cannot run; `False` keras'
            loop. At inference the kernels run a forward loop with each
            step's moving statistics folded into a scale and a shift.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        sequences: 3-D tensor `(batch, timesteps, features)`.
        initial_state: Optional list `[h, c]`.
        mask: Optional boolean `(batch, timesteps)`.
        training: Batch statistics (True) or moving statistics (False).

    Example:

    >>> import numpy as np, keras_ln
    >>> x = np.random.rand(2, 5, 3).astype("float32")
    >>> tuple(keras_ln.BatchNormLSTM(4)(x).shape)
    (2, 4)

    Reference:

    - [Cooijmans et al., 2016](https://arxiv.org/abs/1603.09025).
    """

    cell_class = BatchNormLSTMCell
    kernel_kind = "bn_lstm"

    def __init__(
        self,
        units,
        max_steps=None,
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
        norm_momentum=0.99,
        norm_epsilon=1e-3,
        norm_gamma_initializer=None,
        norm_beta_initializer="zeros",
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_kernel="auto",
        **kwargs,
    ):
        cell = BatchNormLSTMCell(
            units,
            max_steps=max_steps,
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
            norm_momentum=norm_momentum,
            norm_epsilon=norm_epsilon,
            norm_gamma_initializer=norm_gamma_initializer,
            norm_beta_initializer=norm_beta_initializer,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="batch_norm_lstm_cell",
        )
        cell.state_size = [cell.units, cell.units]
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

    def _kernel_loop(self, sequences, valid, initial_state, mask, training):
        """The recurrence by the TensorFlow kernel (`_tf_bn_lstm_kernel.call`),
        or None where the generic loop runs (see `use_kernel`)."""
        if self.use_kernel is False:
            return None
        if keras.backend.backend() != "tensorflow":
            return self.no_kernel(f"the {keras.backend.backend()} backend has no BatchNormLSTM kernel")
        from keras_ln.layers import _tf_bn_lstm_kernel

        reason = _tf_bn_lstm_kernel.unsupported(self)
        if reason is not None:
            return self.no_kernel(reason)
        try:
            return _tf_bn_lstm_kernel.call(self, sequences, valid, initial_state, mask, training)
        except NotImplementedError as error:  # "native" where it cannot run
            return self.no_kernel(str(error))

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_input_shape(sequences_shape)
        if self.cell._steps is None:
            if sequences_shape[1] is None:
                raise ValueError(
                    "Expected `max_steps` to be a positive integer when the "
                    "number of time steps is not known at build time. "
                    f"Received: max_steps=None, inputs.shape="
                    f"{tuple(sequences_shape)}"
                )
            self.cell._steps = int(sequences_shape[1])
        super().build(sequences_shape, initial_state_shape)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell
        sequences = _recurrent.dropout_inputs(cell, sequences, training)
        shape = ops.shape(sequences)
        batch, steps = shape[0], shape[1]
        # Processing-order step of each array position.
        pos = ops.arange(steps, dtype="int32")
        if self.go_backwards:
            pos = steps - 1 - pos
        if mask is None:
            valid = ops.ones((batch, steps), cell.stats_dtype)
        else:
            valid = ops.cast(mask, cell.stats_dtype)
        fused = self._kernel_loop(sequences, valid, initial_state, mask, training)
        if fused is not None:
            return fused
        z = ops.matmul(sequences, cell.kernel)
        if training:
            zf = ops.cast(z, cell.stats_dtype)
            mean, variance = cell._batch_moments(zf, valid[:, :, None])
            y = (zf - mean) * ops.rsqrt(variance + cell.norm_epsilon)
            xn = cell._scale(y, "kernel_norm", z.dtype)
        else:
            xn = cell._normalize_moving(z, "kernel_norm", pos)
        xn = cell.add_bias(xn)
        pos_in = ops.broadcast_to(
            ops.cast(pos, cell.stats_dtype)[None, :, None], (batch, steps, 1)
        )
        # One input tensor, not a tuple: keras' TensorFlow loop reads the
        # number of steps from `inputs.shape[1]` when it is not known
        # statically, which fails for nested inputs (`keras.Input((None,
        # F))` in a traced function). The round trip of `xn` through the
        # statistics dtype (float32 or float64) is exact.
        width = 4 * cell.units
        inputs = ops.concatenate(
            [ops.cast(xn, cell.stats_dtype), valid[:, :, None], pos_in],
            axis=-1,
        )
        step_valid = mask is not None

        def step(inputs_t, states):
            xn_t = ops.cast(inputs_t[:, :width], xn.dtype)
            valid_t = inputs_t[:, width : width + 1]
            index = ops.cast(inputs_t[:, width + 1], "int32")
            h, c, hz = cell.recurrent_step(
                xn_t,
                states[0],
                states[1],
                index[0],
                index,
                valid_t if step_valid else None,
                training,
                update=False,
            )
            # In training the loop also returns what the statistics of the
            # recurrent and state norms are taken from, so that the moving
            # statistics are updated once, after the loop.
            if training:
                # One tensor: keras' unrolled loop cannot stack nested outputs.
                return ops.concatenate([h, hz, c], axis=-1), [h, c]
            return h, [h, c]

        last_output, outputs, states = _recurrent.backend_rnn(
            step,
            inputs,
            list(initial_state),
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences or training,
        )
        if training:
            # Statistics updates, all in processing order.
            proc_valid = ops.flip(valid, axis=1) if self.go_backwards else valid
            proc_z = ops.flip(z, axis=1) if self.go_backwards else z
            cell._update_from_sequence("kernel_norm", proc_z, proc_valid)
            units = cell.units
            cell._update_from_sequence(
                "recurrent_norm",
                outputs[:, :, units : 5 * units],
                proc_valid,
            )
            has_data = cell._update_from_sequence(
                "state_norm", outputs[:, :, 5 * units :], proc_valid
            )
            cell._count_steps(
                ops.max(
                    has_data
                    * ops.arange(1, steps + 1, dtype=cell.stats_dtype)
                )
            )
            last_output = last_output[:, :units]
            outputs = outputs[:, :, :units]
        return last_output, outputs, states
