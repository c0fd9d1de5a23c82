"""LayerNormLSTMCell / LayerNormLSTM against float64 NumPy references of
Ba et al. (2016) and of tensorflow-addons' LayerNormLSTMCell, against each
other (fused layer vs the cell in keras.layers.RNN), and against finite
differences."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln

B, T, F, U = 3, 5, 4, 4
EPS = 1e-3


# ---------------------------------------------------------------- references


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _ln(v, gamma, beta, eps=EPS):
    mean = v.mean(-1, keepdims=True)
    var = ((v - mean) ** 2).mean(-1, keepdims=True)
    return (v - mean) / np.sqrt(var + eps) * gamma + beta


def lstm_reference(x, weights, carry_normalized=False, mask=None,
                   go_backwards=False, initial_state=None):
    """float64 LN-LSTM: Ba et al. (carry_normalized=False) or tfa's cell.

    tfa.rnn.LayerNormLSTMCell.call: z = kernel_norm(x W) +
    recurrent_norm(h U) + b; c = f c + i g; c = state_norm(c);
    h = o tanh(c); states [h, c] (the normalized c is carried).
    Masked steps keep the states and repeat the previous output (zeros
    before the first step), as keras' RNN does.
    """
    kernel, rec, bias, kg, kb, rg, rb, sg, sb = [
        np.asarray(w, np.float64) for w in weights
    ]
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    units = rec.shape[0]
    if initial_state is None:
        h = np.zeros((batch, units))
        c = np.zeros((batch, units))
    else:
        h, c = [np.asarray(s, np.float64) for s in initial_state]
    out = np.zeros((batch, units))
    outs = []
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    for t in order:
        z = _ln(x[:, t] @ kernel, kg, kb) + _ln(h @ rec, rg, rb) + bias
        zi, zf, zg, zo = np.split(z, 4, axis=-1)
        c_new = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zg)
        c_norm = _ln(c_new, sg, sb)
        h_new = _sigmoid(zo) * np.tanh(c_norm)
        if carry_normalized:
            c_new = c_norm
        if mask is None:
            h, c, out = h_new, c_new, h_new
        else:
            m = mask[:, t][:, None]
            h = np.where(m, h_new, h)
            c = np.where(m, c_new, c)
            out = np.where(m, h_new, out)
        outs.append(out)
    return np.stack(outs, axis=1), h, c


def _random_weights(layer, rng, scale=0.5):
    """Non-trivial weights (gammas != 1, betas != 0) for `layer`."""
    weights = []
    for w in layer.get_weights():
        if "gamma" in _names(layer)[len(weights)]:
            weights.append(1.0 + scale * rng.standard_normal(w.shape))
        else:
            weights.append(scale * rng.standard_normal(w.shape))
    layer.set_weights(weights)
    return layer.get_weights()


def _names(layer):
    return [w.path.split("/")[-1] for w in layer.weights]


def _masks():
    right = np.ones((B, T), bool)
    right[0, 3:] = False
    right[1, 1:] = False
    left = np.ones((B, T), bool)
    left[0, :2] = False
    left[2, :4] = False
    return {"none": None, "right": right, "left": left}


def _np(t):
    return keras.ops.convert_to_numpy(t)


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize("carry_normalized", [False, True])
def test_cell_matches_float64_reference(rng, carry_normalized):
    x = rng.standard_normal((B, T, F))
    rnn = keras.layers.RNN(
        keras_ln.LayerNormLSTMCell(
            U, carry_normalized_cell=carry_normalized, dtype="float64"
        ),
        return_sequences=True,
        return_state=True,
        dtype="float64",
    )
    rnn(x)
    weights = _random_weights(rnn, rng)
    seq, h, c = rnn(x)
    ref_seq, ref_h, ref_c = lstm_reference(x, weights, carry_normalized)
    np.testing.assert_allclose(_np(seq), ref_seq, atol=1e-12)
    np.testing.assert_allclose(_np(h), ref_h, atol=1e-12)
    np.testing.assert_allclose(_np(c), ref_c, atol=1e-12)


def test_default_carries_raw_state_and_differs_from_tfa(rng):
    x = rng.standard_normal((B, T, F))
    layer = keras_ln.LayerNormLSTM(U, return_state=True, dtype="float64")
    layer(x)
    weights = _random_weights(layer, rng)
    _, _, c = layer(x)
    ba = lstm_reference(x, weights, carry_normalized=False)
    tfa = lstm_reference(x, weights, carry_normalized=True)
    np.testing.assert_allclose(_np(c), ba[2], atol=1e-12)
    assert np.abs(ba[2] - tfa[2]).max() > 1e-3


@pytest.mark.parametrize("mask_kind", ["none", "right", "left"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_fused_matches_reference_with_masks(rng, mask_kind, go_backwards):
    x = rng.standard_normal((B, T, F))
    mask = _masks()[mask_kind]
    layer = keras_ln.LayerNormLSTM(
        U,
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        carry_normalized_cell=True,
        dtype="float64",
    )
    layer(x)
    weights = _random_weights(layer, rng)
    out = layer(x, mask=mask)
    ref = lstm_reference(x, weights, True, mask, go_backwards)
    for got, want in zip(out, ref):
        np.testing.assert_allclose(_np(got), want, atol=1e-12)


@pytest.mark.parametrize("mask_kind", ["none", "right", "left"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_fused_equals_cell_in_rnn(rng, mask_kind, return_sequences,
                                  go_backwards):
    x = rng.standard_normal((B, T, F)).astype("float32")
    mask = _masks()[mask_kind]
    kwargs = dict(
        return_sequences=return_sequences,
        return_state=True,
        go_backwards=go_backwards,
    )
    fused = keras_ln.LayerNormLSTM(U, **kwargs)
    rnn = keras.layers.RNN(keras_ln.LayerNormLSTMCell(U), **kwargs)
    fused(x)
    rnn(x)
    _random_weights(fused, rng)
    rnn.set_weights(fused.get_weights())
    got = fused(x, mask=mask)
    want = rnn(x, mask=mask)
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_fused_equals_cell_with_initial_state_unroll_and_zero_output(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    h0 = rng.standard_normal((B, U)).astype("float32")
    c0 = rng.standard_normal((B, U)).astype("float32")
    mask = _masks()["right"]
    kwargs = dict(return_sequences=True, unroll=True, zero_output_for_mask=True)
    fused = keras_ln.LayerNormLSTM(U, **kwargs)
    rnn = keras.layers.RNN(keras_ln.LayerNormLSTMCell(U), **kwargs)
    fused(x)
    rnn(x)
    weights = _random_weights(fused, rng)
    rnn.set_weights(weights)
    got = _np(fused(x, initial_state=[h0, c0], mask=mask))
    want = _np(rnn(x, initial_state=[h0, c0], mask=mask))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.all(got[1, 1:] == 0)  # zero_output_for_mask
    ref, _, _ = lstm_reference(x, weights, initial_state=[h0, c0], mask=mask)
    np.testing.assert_allclose(got[mask], ref[mask], atol=1e-5)


def test_stateful_continues_like_one_long_call(rng):
    x = rng.standard_normal((2, 6, F)).astype("float32")
    layer = keras_ln.LayerNormLSTM(U, stateful=True, return_sequences=True)
    full = keras_ln.LayerNormLSTM(U, return_sequences=True)
    layer(x[:, :3])
    full(x)
    layer.reset_state()
    full.set_weights(layer.get_weights())
    first = _np(layer(x[:, :3]))
    second = _np(layer(x[:, 3:]))
    np.testing.assert_allclose(
        np.concatenate([first, second], 1), _np(full(x)), atol=1e-5
    )


def test_dropout_fused_equals_cell_and_is_off_at_inference(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    kwargs = dict(dropout=0.3, recurrent_dropout=0.4, seed=7)
    fused = keras_ln.LayerNormLSTM(U, return_sequences=True, **kwargs)
    rnn = keras.layers.RNN(
        keras_ln.LayerNormLSTMCell(U, **kwargs), return_sequences=True
    )
    plain = keras_ln.LayerNormLSTM(U, return_sequences=True)
    for layer in (fused, rnn, plain):
        layer(x)
    rnn.set_weights(fused.get_weights())
    plain.set_weights(fused.get_weights())
    train_fused = _np(fused(x, training=True))
    train_rnn = _np(rnn(x, training=True))
    np.testing.assert_allclose(train_fused, train_rnn, atol=1e-5)
    assert np.abs(train_fused - _np(plain(x))).max() > 1e-3
    np.testing.assert_allclose(
        _np(fused(x, training=False)), _np(plain(x)), atol=1e-6
    )


def test_stacked_cells_equal_two_fused_layers(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    stacked = keras.layers.RNN(
        keras.layers.StackedRNNCells(
            [keras_ln.LayerNormLSTMCell(U), keras_ln.LayerNormLSTMCell(3)]
        ),
        return_sequences=True,
    )
    first = keras_ln.LayerNormLSTM(U, return_sequences=True)
    second = keras_ln.LayerNormLSTM(3, return_sequences=True)
    stacked(x)
    second(first(x))
    stacked.set_weights(first.get_weights() + second.get_weights())
    np.testing.assert_allclose(
        _np(stacked(x)), _np(second(first(x))), atol=1e-5
    )


# ---------------------------------------------------------------- weights


def test_weights_in_tfa_order():
    layer = keras_ln.LayerNormLSTM(U)
    layer(np.zeros((1, 2, F), "float32"))
    assert _names(layer) == [
        "kernel",
        "recurrent_kernel",
        "bias",
        "kernel_norm_gamma",
        "kernel_norm_beta",
        "recurrent_norm_gamma",
        "recurrent_norm_beta",
        "state_norm_gamma",
        "state_norm_beta",
    ]
    shapes = [w.shape for w in layer.get_weights()]
    assert shapes == [
        (F, 4 * U), (U, 4 * U), (4 * U,),
        (4 * U,), (4 * U,), (4 * U,), (4 * U,), (U,), (U,),
    ]
    bias = layer.get_weights()[2]
    np.testing.assert_array_equal(bias[U:2 * U], 1.0)  # unit_forget_bias
    np.testing.assert_array_equal(np.delete(bias, np.s_[U:2 * U]), 0.0)
    no_bias = keras_ln.LayerNormLSTM(U, use_bias=False)
    no_bias(np.zeros((1, 2, F), "float32"))
    assert len(no_bias.get_weights()) == 8


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("fused", [True, False])
def test_gradients_match_finite_differences(rng, fused):
    x = tf.constant(rng.standard_normal((2, 4, 3)))
    cell_kwargs = dict(carry_normalized_cell=False, dtype="float64")
    if fused:
        layer = keras_ln.LayerNormLSTM(3, return_sequences=True,
                                       **cell_kwargs)
    else:
        layer = keras.layers.RNN(
            keras_ln.LayerNormLSTMCell(3, **cell_kwargs),
            return_sequences=True,
            dtype="float64",
        )
    layer(x)
    _random_weights(layer, rng)
    target = tf.constant(rng.standard_normal((2, 4, 3)))

    def loss():
        return tf.reduce_sum(tf.sin(3.0 * layer(x)) * target)

    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, layer.trainable_variables)
    h = 1e-6
    for var, grad in zip(layer.trainable_variables, grads):
        flat = var.numpy().ravel()
        for k in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            for sign, store in ((1, "plus"), (-1, "minus")):
                bumped = flat.copy()
                bumped[k] += sign * h
                var.assign(bumped.reshape(var.shape))
                if store == "plus":
                    plus = float(loss())
                else:
                    minus = float(loss())
            var.assign(flat.reshape(var.shape))
            numeric = (plus - minus) / (2 * h)
            assert abs(grad.numpy().ravel()[k] - numeric) < 1e-6 * max(
                1.0, abs(numeric)
            ), (var.path, k)


def test_gradients_finite_on_500_steps(rng):
    x = rng.standard_normal((2, 500, 2)).astype("float32")
    model = keras.Sequential(
        [keras.Input((500, 2)), keras_ln.LayerNormLSTM(3),
         keras.layers.Dense(1)]
    )
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(xt, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0


# ---------------------------------------------------------------- keras API


def test_save_load_round_trip(tmp_path, rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    x[0, 3:] = 0.0
    model = keras.Sequential(
        [
            keras.Input((T, F)),
            keras.layers.Masking(),
            keras.layers.Bidirectional(
                keras_ln.LayerNormLSTM(U, return_sequences=True,
                                       carry_normalized_cell=True)
            ),
            keras_ln.LayerNormLSTM(3, norm_epsilon=1e-4),
            keras.layers.Dense(1),
        ]
    )
    rnn = keras.layers.RNN(keras_ln.LayerNormLSTMCell(U))
    cell_model = keras.Sequential([keras.Input((T, F)), rnn])
    for m, name in ((model, "fused.keras"), (cell_model, "cell.keras")):
        before = _np(m(x))
        m.save(tmp_path / name)
        loaded = keras.models.load_model(tmp_path / name)
        np.testing.assert_array_equal(_np(loaded(x)), before)
    loaded = keras.models.load_model(tmp_path / "fused.keras")
    assert loaded.layers[2].carry_normalized_cell is False
    assert loaded.layers[2].norm_epsilon == 1e-4
    assert loaded.layers[1].backward_layer.go_backwards


def test_config_round_trip_keeps_arguments():
    layer = keras_ln.LayerNormLSTM(
        5, dropout=0.2, recurrent_dropout=0.1, go_backwards=True,
        carry_normalized_cell=True, norm_gamma_initializer="zeros",
        return_sequences=True,
    )
    clone = keras_ln.LayerNormLSTM.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.units, clone.dropout, clone.go_backwards) == (5, 0.2, True)
    cell = keras_ln.LayerNormLSTMCell(5, norm_epsilon=1e-5)
    assert keras_ln.LayerNormLSTMCell.from_config(
        cell.get_config()
    ).get_config() == cell.get_config()


def test_mixed_precision(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    ref = keras_ln.LayerNormLSTM(U, return_sequences=True)
    ref(x)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = keras_ln.LayerNormLSTM(U, return_sequences=True,
                                       return_state=True)
        layer(x)
        layer.set_weights(ref.get_weights())
        out, h, c = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert all(
            keras.backend.standardize_dtype(w.dtype) == "float32"
            for w in layer.weights
        )
        np.testing.assert_allclose(_np(out).astype("float32"), _np(ref(x)),
                                   atol=2e-2)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(x)[0], "float32"))
        grads = tape.gradient(loss, layer.trainable_variables)
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_compute_output_shape(return_sequences, return_state):
    layer = keras_ln.LayerNormLSTM(
        U, return_sequences=return_sequences, return_state=return_state
    )
    x = np.zeros((2, T, F), "float32")
    predicted = layer.compute_output_shape((2, T, F))
    out = layer(x)
    if return_state:
        assert [tuple(o.shape) for o in out] == [tuple(p) for p in predicted]
    else:
        assert tuple(out.shape) == tuple(predicted)
    symbolic = layer(keras.Input((None, F)))
    first = symbolic[0] if return_state else symbolic
    assert first.shape[-1] == U


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": 0}, "Expected `units` to be a positive integer. "
                       "Received: units=0"),
        ({"units": -3}, "units=-3"),
        ({"units": 2.5}, "units=2.5"),
        ({"units": 4, "dropout": 1.0}, r"`dropout` .*\[0, 1\).*dropout=1.0"),
        ({"units": 4, "dropout": -0.1}, "dropout=-0.1"),
        ({"units": 4, "recurrent_dropout": 1.5}, "recurrent_dropout=1.5"),
        ({"units": 4, "norm_epsilon": 0}, "norm_epsilon=0"),
    ],
)
@pytest.mark.parametrize(
    "cls", [keras_ln.LayerNormLSTM, keras_ln.LayerNormLSTMCell]
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_input_must_be_3d():
    with pytest.raises(ValueError, match=r"3-D .*inputs.shape=\(2, 4\)"):
        keras_ln.LayerNormLSTM(U)(np.zeros((2, 4), "float32"))
    layer = keras_ln.LayerNormLSTM(U)
    layer(np.zeros((2, 3, 4), "float32"))
    with pytest.raises(ValueError, match=r"3-D .*inputs.shape="):
        layer(np.zeros((2, 3, 4, 1), "float32"))
