"""Population statistics of batch normalization after training (model surgery).

`recompute_batch_statistics` sets the moving statistics of every batch norm
of a trained network (keras' `BatchNormalization`, keras_ln's
`BatchNormLSTMCell`) to the statistics of the training rows, by
training-mode passes with the layers' momentum and dropout set for the
pass (`statistics_mode`) and restored afterwards.
"""

import contextlib

import keras
import numpy as np


# Rows (times time steps, for sequences) per training-mode pass when the
# population statistics of batch normalization are recomputed.
_STATS_CHUNK_VALUES = 1 << 16


def _norm_layers(model):
    """The batch norms of `model` with the name of their momentum
    attribute, and its dropout layers (cells) with their rate attributes."""
    from keras_ln.layers.batch_norm_lstm import BatchNormLSTMCell

    layers = list(model._flatten_layers(include_self=False, recursive=True))
    norms = []  # (layer, momentum attribute)
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            norms.append((layer, "momentum"))
        elif isinstance(layer, BatchNormLSTMCell):
            norms.append((layer, "norm_momentum"))
    rates = []  # (layer, attribute)
    for layer in layers:
        if isinstance(layer, keras.layers.Dropout):
            rates.append((layer, "rate"))
        elif isinstance(layer, BatchNormLSTMCell):
            rates.extend((layer, name) for name in ("dropout", "recurrent_dropout"))
    return norms, rates


@contextlib.contextmanager
def statistics_mode(model, momentum):
    """Every batch norm of `model` with momentum `momentum(layer)`, and
    dropout off (rates 0); the attributes restored afterwards. The
    `BatchNormLSTMCell`s are marked `_statistics_only` too: a pass needs no
    gradient, so their native forward op keeps none of the activations the
    backward reads (`bn_lstm_recurrence_native`'s `save`)."""
    from keras_ln.layers.batch_norm_lstm import BatchNormLSTMCell

    norms, rates = _norm_layers(model)
    cells = [(layer, "_statistics_only") for layer, _ in norms
             if isinstance(layer, BatchNormLSTMCell)]
    saved = [(layer, attr, getattr(layer, attr, False))
             for layer, attr in norms + rates + cells]
    try:
        for layer, attr in rates:
            setattr(layer, attr, 0.0)
        for layer, attr in norms:
            setattr(layer, attr, momentum(layer))
        for layer, attr in cells:
            setattr(layer, attr, True)
        yield
    finally:
        for layer, attr, value in saved:
            setattr(layer, attr, value)


def recompute_batch_statistics(model, X, program=None):
    """Set the moving statistics of every batch norm to population values.

    The exponential moving averages that batch normalization keeps in
    training (momentum 0.99) reach the statistics of the trained network
    only after a few hundred updates, and their initial values (mean 0,
    variance 1) weigh `momentum**n_updates`: with sklearn-sized data (a few
    updates per epoch) and small activations (BN-LSTM's recurrent norm has
    variances ~1e-3), inference then normalizes with statistics far from
    the ones the network was trained with. So after training, like
    `torch.optim.swa_utils.update_bn` and the population statistics of
    Cooijmans et al. (2016), the rows of `X` are passed through `model` in
    training mode, in chunks, and every `keras.layers.BatchNormalization`
    and `keras_ln.BatchNormLSTMCell` (also inside `BatchNormLSTM` and
    `Bidirectional`) gets the row-weighted average of the chunk statistics:
    chunk `k` of `n_k` rows after `N` rows is applied with momentum
    `N / (N + n_k)`, the first one with momentum 0 (which replaces the old
    values, so no reset is needed); the layers' momentum is restored
    afterwards. With one chunk (up to 65536 values per feature) the
    statistics are exactly those of `X`. A BN-LSTM step that has no data in
    a chunk (ragged sequences) keeps its previous value through that chunk.

    Dropout is switched off during the pass (its rate set to 0, restored
    afterwards), so the statistics are those of the inputs each norm sees
    at inference; the pass goes through `stateless_call`, and only the
    moving statistics (and BN-LSTM's `moving_steps`) are written back:
    weights and random-generator states are untouched, so fits stay
    reproducible.

    Args:
        model: A built `keras.Model`.
        X: Training inputs, an array in the model's dtype.
        program: Optional `_Program` of `model`'s structure: the passes then
            run as its traced function (`_Program.statistics_pass`, traced
            once per structure and sample shape) instead of eagerly, with
            the same numbers.

    Returns:
        The number of batch-normalization layers (cells) updated.
    """
    norms, _ = _norm_layers(model)
    if not norms or len(X) == 0:
        return 0
    stats = set()
    for layer, _ in norms:
        for var in layer.non_trainable_variables:
            name = var.path.split("/")[-1]
            if "moving_" in name:
                stats.add(id(var))
    n = len(X)
    steps = int(np.prod(X.shape[1:-1])) if X.ndim > 2 else 1
    chunk = max(1, _STATS_CHUNK_VALUES // max(steps, 1))
    trainable = [v.value for v in model.trainable_variables]
    variables = model.non_trainable_variables
    values = [v.value for v in variables]
    seen = 0
    for start in range(0, n, chunk):
        rows = X[start:start + chunk]
        momentum = seen / (seen + len(rows))
        if program is not None:
            new = program.statistics_pass(
                model, values, keras.ops.convert_to_tensor(rows), momentum)
        else:
            with statistics_mode(model, lambda layer: momentum):
                _, new = model.stateless_call(
                    trainable, values, keras.ops.convert_to_tensor(rows),
                    training=True,
                )
        values = [
            value if id(var) in stats else old
            for var, old, value in zip(variables, values, new)
        ]
        seen += len(rows)
    for var, value in zip(variables, values):
        if id(var) in stats:
            var.assign(value)
    return len(norms)
