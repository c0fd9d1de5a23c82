"""README claims that are about moving a model between keras and keras_ln.

Moving a trained `keras.layers.LSTM` into `keras_ln.LayerNormLSTM` (README, "Starting from
a trained keras.layers.LSTM"): the recipe puts the three weights in the right variables,
and the layer then computes Ba et al.'s equations with them in keras' gate order.
"""

import numpy as np
import pytest

import keras
import keras_ln


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _ln(v, epsilon=1e-3):
    """Layer norm over the last axis with gamma = 1, beta = 0 (the norms' initial values)."""
    mean = v.mean(-1, keepdims=True)
    return (v - mean) / np.sqrt(((v - mean) ** 2).mean(-1, keepdims=True) + epsilon)


def lstm_reference(x, kernel, recurrent_kernel, bias, norm):
    """Float64 LSTM in keras' gate order (i, f, c, o), `norm` applied as in Ba et al.

    With `norm` the identity this is `keras.layers.LSTM`; with `_ln` it is
    `LayerNormLSTM` whose norms are at their initial gamma = 1, beta = 0.
    """
    x, kernel, recurrent_kernel, bias = (np.asarray(a, np.float64) for a in (x, kernel, recurrent_kernel, bias))
    units = recurrent_kernel.shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        z = norm(x[:, t] @ kernel) + norm(h @ recurrent_kernel) + bias
        i, f, g, o = (z[:, k * units:(k + 1) * units] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(norm(c))
        outputs.append(h)
    return np.stack(outputs, axis=1)


def _identity(v):
    return v


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("ln_layer", ["fused", "cell"])
def test_trained_lstm_weights_move_into_layer_norm_lstm(ln_layer, use_bias):
    units, n_features = 6, 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 7, n_features)).astype("float32")
    lstm = keras.layers.LSTM(units, return_sequences=True, use_bias=use_bias)
    lstm.build((None, None, n_features))
    # Stand-in for training: weights far from any initializer.
    lstm.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in lstm.weights])
    y_lstm = keras.ops.convert_to_numpy(lstm(x))

    # The README's recipe.
    if ln_layer == "fused":
        ln_lstm = keras_ln.LayerNormLSTM(units, return_sequences=True, use_bias=use_bias)
    else:
        cell = keras_ln.LayerNormLSTMCell(units, use_bias=use_bias)
        ln_lstm = keras.layers.RNN(cell, return_sequences=True)
    ln_lstm.build((None, None, n_features))
    copied = lstm.get_weights()
    ln_lstm.set_weights(copied + ln_lstm.get_weights()[len(copied):])

    # The weights landed in the variables of the same name; the norms kept their initial values.
    names = ["kernel", "recurrent_kernel", "bias"][:len(copied)]
    assert [w.path.split("/")[-1] for w in lstm.weights] == names
    assert [w.path.split("/")[-1] for w in ln_lstm.weights[:len(copied)]] == names
    assert len(ln_lstm.weights) == len(copied) + 6
    for ours, theirs in zip(ln_lstm.weights, lstm.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs))
    for w in ln_lstm.weights[len(copied):]:
        value = keras.ops.convert_to_numpy(w)
        np.testing.assert_array_equal(value, np.ones_like(value) if w.name.endswith("gamma") else 0)

    # The reference reads the weights as keras does: without norms it is keras' LSTM ...
    kernel, recurrent_kernel = copied[:2]
    bias = copied[2] if use_bias else 0.0
    np.testing.assert_allclose(
        lstm_reference(x, kernel, recurrent_kernel, bias, _identity), y_lstm, atol=1e-5, rtol=1e-5
    )
    # ... and with the norms it is the LayerNormLSTM that received the weights (same gate order).
    y_ln = keras.ops.convert_to_numpy(ln_lstm(x))
    np.testing.assert_allclose(
        lstm_reference(x, kernel, recurrent_kernel, bias, _ln), y_ln, atol=1e-5, rtol=1e-5
    )
    # The outputs are not the LSTM's: the norms rescale the pre-activations (hence fine-tuning).
    assert np.abs(y_ln - y_lstm).max() > 0.05


def test_fresh_lstm_and_layer_norm_lstm_lay_out_the_bias_alike():
    """unit_forget_bias puts ones in the same (forget-gate) block of both biases."""
    lstm = keras.layers.LSTM(3)
    lstm.build((None, None, 2))
    ln_lstm = keras_ln.LayerNormLSTM(3)
    ln_lstm.build((None, None, 2))
    bias = keras.ops.convert_to_numpy(lstm.weights[2])
    np.testing.assert_array_equal(bias, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ln_lstm.weights[2]), bias)
