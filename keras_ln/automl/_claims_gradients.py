"""Claim 4 of `_claims`, recurrent stability: the gradient of the loss
with respect to the hidden state at every time step (`gradient_flow`), by
unrolling a fitted network's last recurrent layer step by step
(`_unrolled`)."""

import numpy as np

from keras_ln.automl._claims_common import _final
from keras_ln.automl._claims_common import _is_sequence_model
from keras_ln.automl._claims_common import _labelled
from keras_ln.automl._claims_common import _measurement_mode
from keras_ln.automl._claims_common import _network_input
from keras_ln.automl._claims_common import _row
from keras_ln.automl._claims_common import _single
from keras_ln.automl._claims_common import _table


def _recurrent_parts(model):
    """The last recurrent layer of a keras_ln sequence network and the
    layers after it up to the loss's output (`logits` or `output`)."""
    import keras

    layers = model.layers
    recurrent = [i for i, layer in enumerate(layers)
                 if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]
    if not recurrent:
        raise ValueError(f"Expected a recurrent network. Received: a model with layers {[l.name for l in layers]}")
    i = recurrent[-1]
    head = []
    for layer in layers[i + 1:]:
        head.append(layer)
        if layer.name in ("logits", "output"):
            break
    return layers[i], head


def _initial_states(cell, batch, dtype):
    from keras_ln.layers.batch_norm_lstm import BatchNormLSTMCell

    if isinstance(cell, BatchNormLSTMCell):  # [h, c, step]; BatchNormLSTM hides the step
        sizes = [cell.units, cell.units, 1]
    else:
        sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
    return [np.zeros((batch, int(s)), dtype=dtype) for s in sizes]


def _unrolled(fitted, x, targets=None):
    """Training-mode pass of the sequences `x` (batch, steps, features)
    whose last recurrent layer is unrolled step by step under a
    `tf.GradientTape`.

    Returns `(hidden, outputs, grads)`: the hidden state after every step
    (each one carried into the next step and, at the last, into the head),
    the loss's input (logits or prediction) and, with `targets`, the
    gradients of the summed data loss with respect to every hidden state
    (else None). Use inside `_measurement_mode`. Of a bidirectional layer
    the forward direction is unrolled; the backward one's output enters the
    head as a constant.
    """
    import keras
    import tensorflow as tf

    est = _final(fitted)
    model = est.model_
    layer, head = _recurrent_parts(model)
    inputs = layer.input  # [sequences, mask] where a mask is passed along
    below = keras.Model(_single(model.inputs), inputs[0] if isinstance(inputs, (list, tuple)) else inputs)
    seq = below(keras.ops.convert_to_tensor(x), training=True)
    backward = None
    if isinstance(layer, keras.layers.Bidirectional):
        backward = tf.stop_gradient(layer.backward_layer(seq, training=True))
        layer = layer.forward_layer
    cell = layer.cell
    states = [tf.constant(s) for s in _initial_states(cell, x.shape[0], keras.backend.standardize_dtype(seq.dtype))]
    hidden = []
    with tf.GradientTape() as tape:
        for t in range(x.shape[1]):
            _, new = cell(seq[:, t], states, training=True)
            states = list(new) if isinstance(new, (list, tuple)) else [new]
            tape.watch(states[0])
            hidden.append(states[0])
        out = hidden[-1]
        if backward is not None:
            out = tf.concat([out, tf.cast(backward, out.dtype)], axis=-1)
        for head_layer in head:
            out = head_layer(out, training=True)
        if targets is not None:
            loss = tf.reduce_sum(est._loss_fn(tf)(tf.constant(targets), out))
    grads = None if targets is None else tape.gradient(loss, hidden)
    return hidden, out, grads


def gradient_flow(fitted, X, y, *, n_sequences=64, seed=0):
    """Gradient of the loss with respect to the hidden state at every time
    step, and the spread of the hidden states over time.

    On a batch of up to `n_sequences` sequences of `X` (drawn with `seed`,
    the same for every normalization; of ragged sequences, those at least as
    long as the most common length, cut to it), in training mode with
    dropout off, the last recurrent layer of each network is unrolled step
    by step; `grad_norm` at step t is the mean over the sequences of the
    Euclidean norm of d(sum of the sequences' losses)/d h_t, the total
    derivative through all later steps (for layer norm and none, each
    sequence's own loss gradient; batch norm couples them). The loss is the
    estimator's data loss (log-loss on the logits, or half the squared error
    on the standardized target), without the L2 penalty. `hidden_std` at
    step t is the standard deviation of h_t over units and sequences.

    Parameters
    ----------
    fitted : dict
        Normalization -> fitted LSTMClassifier/LSTMRegressor (or Pipeline).
    X : sequences, as the estimators take them
    y : array-like of shape (n_samples,)
    n_sequences : int, default=64
    seed : int, default=0

    Returns
    -------
    DataFrame
        Claim "gradient_flow"; quantities `grad_norm` and `hidden_std`, one
        row per time `step` (0 = first) and normalization; `detail` gives
        the number of sequences.
    """
    y = np.asarray(y)
    rows = []
    for label, est in _labelled(fitted).items():
        if not _is_sequence_model(est):
            raise ValueError(f"gradient_flow needs sequence estimators (LSTMClassifier, LSTMRegressor). Received: "
                             f"{type(_final(est)).__name__} for normalization {label!r}")
        x = _network_input(est, X)
        lengths = np.sum(~np.all(np.isnan(x), axis=2), axis=1)
        counts = np.bincount(lengths)
        length = int(len(counts) - 1 - np.argmax(counts[::-1]))  # most common; the longest of ties
        candidates = np.flatnonzero(lengths >= length)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(candidates, min(int(n_sequences), len(candidates)), replace=False))
        xb = np.ascontiguousarray(x[pick, :length])
        final = _final(est)
        targets, _ = final._encode_targets(y[pick], reset=False)
        targets = final._scale_targets(targets)
        with _measurement_mode(final.model_):
            hidden, _, grads = _unrolled(est, xb, targets)
        for t, (h, g) in enumerate(zip(hidden, grads)):
            g = np.zeros(h.shape) if g is None else np.asarray(g, dtype=np.float64)
            rows.append(_row("gradient_flow", label, "grad_norm", float(np.mean(np.linalg.norm(g, axis=1))),
                             step=t, detail=f"{len(pick)} sequences"))
            rows.append(_row("gradient_flow", label, "hidden_std", float(np.std(np.asarray(h, dtype=np.float64))),
                             step=t, detail=f"{len(pick)} sequences"))
    return _table(rows)
