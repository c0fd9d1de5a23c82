"""Model factories: the only place keras_ln networks are assembled.

`build_mlp(...)` returns a multilayer perceptron whose hidden blocks are
`Dense -> normalization -> activation -> Dropout`; `build_recurrent(...)`
returns a stack of (optionally bidirectional) recurrent layers followed by a
`Dense` head. In both, `normalization` selects the variant being compared:

- `"layer"`: `keras_ln.LayerNormalization` after each hidden `Dense`, or the
  layer-normalized recurrent layers `keras_ln.LayerNormLSTM` /
  `keras_ln.LayerNormGRU`;
- `"batch"`: `keras.layers.BatchNormalization`, or `keras_ln.BatchNormLSTM`;
- `None`: neither (`keras_ln.FusedLSTM` / `keras_ln.FusedGRU`, i.e. keras'
  LSTM / GRU run by the native kernels, for sequences).

Every layer gets an explicit, stable name (`dense_0`, `norm_0`, `rnn_0`,
`logits`, `output`, ...), so models built in one process never depend on
Keras' global name counters, and `keras.backend.clear_session()` cannot
change them. With `seed` set, two calls build identical weights and dropout
streams, drawn from a generator of the model's own (never from Python's
global `random`, which other threads share).

Sequence models take float input of shape `(batch, steps, features)`; time
steps whose features are all NaN are padding: `NaNPaddingMask` replaces them
by zeros and masks them, so genuine zeros in the data are never mistaken for
padding.
"""

import random

import keras
from keras import ops

NORMALIZATIONS = ("layer", "batch", None)
CELLS = ("lstm", "gru")
# The name of the head's pre-activation `Dense` (where an `Activation` named
# "output" follows it): the outputs a loss on logits differentiates.
LOGITS_LAYER = "logits"

_RECURRENT_LAYERS = {
    ("lstm", "layer"): "LayerNormLSTM",
    ("gru", "layer"): "LayerNormGRU",
    ("lstm", "batch"): "BatchNormLSTM",
}


@keras.saving.register_keras_serializable(package="keras_ln")
class NaNPaddingMask(keras.layers.Layer):
    """Masks the time steps whose features are all NaN and zeroes them.

    Ragged sequences are padded with NaN (a value that never occurs in
    validated data), so a genuine all-zero time step is kept, unlike
    `keras.layers.Masking(mask_value=0.0)`.

    Call arguments:
        inputs: Float tensor of shape `(batch, steps, features)`.

    Example:

    >>> import numpy as np
    >>> x = np.array([[[1.0], [0.0], [np.nan]]], dtype="float32")
    >>> layer = NaNPaddingMask()
    >>> keras.ops.convert_to_numpy(layer.compute_mask(x)).tolist()
    [[True, True, False]]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return ops.where(ops.isnan(inputs), ops.zeros_like(inputs), inputs)

    def compute_mask(self, inputs, mask=None):
        padded = ops.all(ops.isnan(inputs), axis=-1)
        keep = ops.logical_not(padded)
        if mask is not None:
            keep = ops.logical_and(keep, mask)
        return keep

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


def _seeds(seed):
    """The seeds of a model's random parts (initializers, dropout), drawn from a generator of its own.

    Python's global `random`, where Keras draws the seeds left unset, is
    shared by every thread of the process (a Dask worker's, a web server's),
    and another thread drawing from it between two of ours changed the
    weights; so every random part gets an explicit seed from this generator.
    """
    rng = random.Random(None if seed is None else int(seed))
    return lambda: rng.randint(1, 10**9)


def _dropout(h, rate, draw, dtype, i):
    return keras.layers.Dropout(rate, seed=draw(), dtype=dtype, name=f"dropout_{i}")(h)


def _kernel_init(draw):
    return keras.initializers.GlorotUniform(seed=draw())


def _recurrent_inits(draw):
    return dict(kernel_initializer=keras.initializers.GlorotUniform(seed=draw()),
                recurrent_initializer=keras.initializers.Orthogonal(seed=draw()))


def _check_sizes(sizes, name):
    if isinstance(sizes, (int,)) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise TypeError(
            f"Expected `{name}` to be an int or a sequence of ints. "
            f"Received: {name}={sizes!r}"
        ) from None
    for s in sizes:
        if isinstance(s, bool) or not float(s).is_integer() or s <= 0:
            raise ValueError(
                f"Expected `{name}` to hold positive integers. "
                f"Received: {name}={sizes!r}"
            )
    return tuple(int(s) for s in sizes)


def _check_normalization(normalization):
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            "Expected `normalization` to be one of 'layer', 'batch' or None. "
            f"Received: normalization={normalization!r}"
        )


def _activation(name):
    """sklearn's activation names map to Keras' ones."""
    return {"identity": "linear", "logistic": "sigmoid"}.get(name, name)


def _head(h, n_outputs, output_activation, dtype, draw):
    """Dense head: `output` (linear) or `logits` followed by `output`."""
    if output_activation in (None, "linear", "identity"):
        return keras.layers.Dense(n_outputs, kernel_initializer=_kernel_init(draw), dtype=dtype,
                                  name="output")(h)
    logits = keras.layers.Dense(n_outputs, kernel_initializer=_kernel_init(draw), dtype=dtype,
                                name=LOGITS_LAYER)(h)
    return keras.layers.Activation(
        _activation(output_activation), dtype=dtype, name="output"
    )(logits)


def build_mlp(
    n_features,
    n_outputs,
    hidden_layer_sizes=(100,),
    activation="relu",
    normalization="layer",
    dropout=0.0,
    output_activation=None,
    dtype="float32",
    seed=None,
    name="mlp",
):
    """Build a multilayer perceptron with a chosen normalization.

    Each hidden block is `Dense(units)`, the normalization layer, the
    activation and, when `dropout > 0`, `Dropout(dropout)`. The `Dense` has
    no bias only before batch normalization, which subtracts each unit's
    batch mean and so removes any bias (its `beta` plays that role). Layer
    normalization keeps the bias: it subtracts the mean over the units of one
    example, which a per-unit bias does not cancel, and without it the block
    could not tell an example from the same example scaled by a positive
    factor.

    Args:
        n_features: Number of input features.
        n_outputs: Number of output units.
        hidden_layer_sizes: Sequence of hidden layer widths (may be empty).
        activation: Hidden activation, a Keras name or one of sklearn's
            (`"identity"`, `"logistic"`, `"tanh"`, `"relu"`).
        normalization: `"layer"`, `"batch"` or `None`.
        dropout: Dropout rate after each hidden activation, in `[0, 1)`.
        output_activation: `None` (linear output layer named `output`) or an
            activation name: then the last `Dense` is named `logits` and an
            `Activation` layer named `output` follows it.
        dtype: Dtype of every layer (`"float32"` or `"float64"`).
        seed: Optional int; the same seed gives the same initial weights.
        name: Name of the model.

    Returns:
        An uncompiled `keras.Model`.

    Example:

    >>> model = build_mlp(4, 3, hidden_layer_sizes=(8,),
    ...                   output_activation="softmax", seed=0)
    >>> [layer.name for layer in model.layers][1:]
    ['dense_0', 'norm_0', 'act_0', 'logits', 'output']
    """
    sizes = _check_sizes(hidden_layer_sizes, "hidden_layer_sizes")
    _check_normalization(normalization)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"Expected `dropout` to be in [0, 1). Received: dropout={dropout}"
        )
    draw = _seeds(seed)
    inputs = keras.Input((int(n_features),), dtype=dtype, name="features")
    h = inputs
    for i, units in enumerate(sizes):
        h = keras.layers.Dense(
            units,
            use_bias=normalization != "batch",
            kernel_initializer=_kernel_init(draw),
            dtype=dtype,
            name=f"dense_{i}",
        )(h)
        if normalization == "layer":
            from keras_ln.layers import LayerNormalization

            h = LayerNormalization(dtype=dtype, name=f"norm_{i}")(h)
        elif normalization == "batch":
            h = keras.layers.BatchNormalization(
                dtype=dtype, name=f"norm_{i}"
            )(h)
        h = keras.layers.Activation(
            _activation(activation), dtype=dtype, name=f"act_{i}"
        )(h)
        if dropout:
            h = _dropout(h, dropout, draw, dtype, i)
    outputs = _head(h, int(n_outputs), output_activation, dtype, draw)
    return keras.Model(inputs, outputs, name=name)


def recurrent_layer_class(cell="lstm", normalization="layer"):
    """The recurrent layer class for a cell family and a normalization.

    Args:
        cell: `"lstm"` or `"gru"`.
        normalization: `"layer"`, `"batch"` or `None`.

    Returns:
        `keras_ln.LayerNormLSTM`, `keras_ln.LayerNormGRU`,
        `keras_ln.BatchNormLSTM`, `keras_ln.FusedLSTM` or
        `keras_ln.FusedGRU` (keras' LSTM and GRU run by the native kernels
        of the normalized layers, so that the normalizations compare at the
        same implementation speed).

    Raises:
        ValueError: for an unknown value, or for `normalization="batch"` with
            `cell="gru"` (keras_ln has no batch-normalized GRU).
    """
    if cell not in CELLS:
        raise ValueError(
            f"Expected `cell` to be 'lstm' or 'gru'. Received: cell={cell!r}"
        )
    _check_normalization(normalization)
    if normalization is None:
        from keras_ln.layers.fused import FusedGRU
        from keras_ln.layers.fused import FusedLSTM

        # keras' LSTM / GRU, run by the native kernels.
        return FusedLSTM if cell == "lstm" else FusedGRU
    if (cell, normalization) not in _RECURRENT_LAYERS:
        raise ValueError(
            "`normalization='batch'` is only available with `cell='lstm'` "
            "(keras_ln has a batch-normalized LSTM but no batch-normalized "
            "GRU). Use cell='lstm', or normalization='layer' or None. "
            f"Received: cell={cell!r}, normalization={normalization!r}"
        )
    import keras_ln

    class_name = _RECURRENT_LAYERS[(cell, normalization)]
    layer_class = getattr(keras_ln, class_name, None)
    if layer_class is None:
        raise ImportError(
            f"`cell={cell!r}, normalization={normalization!r}` needs "
            f"`keras_ln.{class_name}`, which this installation of keras_ln "
            "does not provide."
        )
    return layer_class


def build_recurrent(
    n_features,
    n_outputs,
    units=(64,),
    cell="lstm",
    normalization="layer",
    bidirectional=False,
    activation="tanh",
    dropout=0.0,
    output_activation=None,
    dtype="float32",
    seed=None,
    max_steps=None,
    name="recurrent",
):
    """Build a recurrent network with a chosen cell and normalization.

    The input, of shape `(batch, steps, n_features)`, goes through
    `NaNPaddingMask` (NaN time steps are padding and masked), then one
    recurrent layer per entry of `units` (all but the last return
    sequences), each wrapped in `keras.layers.Bidirectional` when
    `bidirectional` and followed, when `dropout > 0`, by `Dropout(dropout)`,
    then a `Dense` head on the last state.

    Dropout is on the non-recurrent connections between layers and before
    the head (Zaremba et al., 2014), as `build_mlp` puts it after each
    hidden block, not on the input features: a recurrent layer's `dropout`
    draws one mask per sequence, which with few features zeroes every
    feature of some sequences (a tenth of them with one feature at rate
    0.1). A layer-normalized cell started from zero states on all-zero
    inputs keeps its states exactly zero, where layer normalization's slope
    is `gamma / sqrt(epsilon)` (about 32): the gradient then grows about a
    hundredfold per step back in time and overflows float32 within some
    twenty steps.

    Args:
        n_features: Number of features per time step.
        n_outputs: Number of output units.
        units: Sequence of recurrent layer widths (at least one).
        cell: `"lstm"` or `"gru"`.
        normalization: `"layer"` (LN-LSTM / LN-GRU), `"batch"` (BN-LSTM;
            not available with `cell="gru"`) or `None` (Keras' LSTM / GRU).
        bidirectional: Wrap each recurrent layer in `Bidirectional`.
        activation: Activation of the recurrent layers (Keras or sklearn
            name).
        dropout: Dropout rate after each recurrent layer, in `[0, 1)`.
        output_activation: As in `build_mlp`.
        dtype: Dtype of every layer.
        seed: Optional int; the same seed gives the same initial weights and
            dropout masks.
        max_steps: With `normalization="batch"`: the number of time steps
            with their own population statistics (BN-LSTM; later steps reuse
            the last one's), usually the training sequence length. Ignored
            otherwise.
        name: Name of the model.

    Returns:
        An uncompiled `keras.Model`.

    Example:

    >>> model = build_recurrent(3, 1, units=(4,), normalization=None, seed=0)
    >>> [layer.name for layer in model.layers][1:]
    ['padding_mask', 'rnn_0', 'output']
    """
    sizes = _check_sizes(units, "units")
    if not sizes:
        raise ValueError(
            "Expected `units` to hold at least one layer width. "
            f"Received: units={units!r}"
        )
    layer_class = recurrent_layer_class(cell, normalization)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"Expected `dropout` to be in [0, 1). Received: dropout={dropout}"
        )
    draw = _seeds(seed)
    inputs = keras.Input((None, int(n_features)), dtype=dtype, name="sequences")
    h = NaNPaddingMask(dtype=dtype, name="padding_mask")(inputs)
    for i, width in enumerate(sizes):
        kwargs = dict(
            activation=_activation(activation),
            return_sequences=i < len(sizes) - 1,
            dtype=dtype,
        )
        if normalization == "batch" and max_steps is not None:
            kwargs.update(max_steps=int(max_steps))
        if bidirectional:  # each direction its own initial weights
            layer = keras.layers.Bidirectional(
                layer_class(width, name=f"rnn_{i}_cell", **kwargs, **_recurrent_inits(draw)),
                backward_layer=layer_class(width, name=f"backward_rnn_{i}_cell", go_backwards=True,
                                           **kwargs, **_recurrent_inits(draw)),
                dtype=dtype,
                name=f"rnn_{i}",
            )
        else:
            layer = layer_class(width, name=f"rnn_{i}", **kwargs, **_recurrent_inits(draw))
        h = layer(h)
        if dropout:
            h = _dropout(h, dropout, draw, dtype, i)
    outputs = _head(h, int(n_outputs), output_activation, dtype, draw)
    return keras.Model(inputs, outputs, name=name)
