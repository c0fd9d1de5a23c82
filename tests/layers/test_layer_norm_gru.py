"""LayerNormGRUCell / LayerNormGRU against a float64 NumPy reference, the
fused layer against the cell in keras.layers.RNN, and finite differences."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln

B, T, F, U = 3, 5, 4, 4
EPS = 1e-3


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _ln(v, gamma, beta, eps=EPS):
    mean = v.mean(-1, keepdims=True)
    var = ((v - mean) ** 2).mean(-1, keepdims=True)
    return (v - mean) / np.sqrt(var + eps) * gamma + beta


def gru_reference(x, weights, mask=None, go_backwards=False,
                  initial_state=None):
    """float64 LN-GRU with keras' reset_after=True gate equations."""
    kernel, rec, bias, kg, kb, rg, rb = [
        np.asarray(w, np.float64) for w in weights
    ]
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    units = rec.shape[0]
    h = (
        np.zeros((batch, units))
        if initial_state is None
        else np.asarray(initial_state, np.float64)
    )
    out = np.zeros((batch, units))
    outs = []
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    for t in order:
        xz, xr, xn = np.split(_ln(x[:, t] @ kernel, kg, kb) + bias[0], 3, -1)
        hz, hr, hn = np.split(_ln(h @ rec, rg, rb) + bias[1], 3, -1)
        z = _sigmoid(xz + hz)
        r = _sigmoid(xr + hr)
        n = np.tanh(xn + r * hn)
        h_new = z * h + (1.0 - z) * n
        if mask is None:
            h, out = h_new, h_new
        else:
            m = mask[:, t][:, None]
            h = np.where(m, h_new, h)
            out = np.where(m, h_new, out)
        outs.append(out)
    return np.stack(outs, axis=1), h


def _names(layer):
    return [w.path.split("/")[-1] for w in layer.weights]


def _random_weights(layer, rng, scale=0.5):
    weights = []
    for name, w in zip(_names(layer), layer.get_weights()):
        base = 1.0 if "gamma" in name else 0.0
        weights.append(base + scale * rng.standard_normal(w.shape))
    layer.set_weights(weights)
    return layer.get_weights()


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


@pytest.mark.parametrize("mask_kind", ["none", "right", "left"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_fused_and_cell_match_float64_reference(rng, mask_kind, go_backwards):
    x = rng.standard_normal((B, T, F))
    mask = _masks()[mask_kind]
    kwargs = dict(
        return_sequences=True, return_state=True, go_backwards=go_backwards,
        dtype="float64",
    )
    fused = keras_ln.LayerNormGRU(U, **kwargs)
    rnn = keras.layers.RNN(
        keras_ln.LayerNormGRUCell(U, dtype="float64"), **kwargs
    )
    fused(x)
    rnn(x)
    weights = _random_weights(fused, rng)
    rnn.set_weights(weights)
    ref_seq, ref_h = gru_reference(x, weights, mask, go_backwards)
    for layer in (fused, rnn):
        seq, h = layer(x, mask=mask)
        np.testing.assert_allclose(_np(seq), ref_seq, atol=1e-12)
        np.testing.assert_allclose(_np(h), ref_h, atol=1e-12)


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
    fused = keras_ln.LayerNormGRU(U, **kwargs)
    rnn = keras.layers.RNN(keras_ln.LayerNormGRUCell(U), **kwargs)
    fused(x)
    rnn(x)
    _random_weights(fused, rng)
    rnn.set_weights(fused.get_weights())
    got = fused(x, mask=mask)
    want = rnn(x, mask=mask)
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_initial_state_unroll_stateful(rng):
    x = rng.standard_normal((2, 6, F)).astype("float32")
    h0 = rng.standard_normal((2, U)).astype("float32")
    unrolled = keras_ln.LayerNormGRU(U, return_sequences=True, unroll=True)
    unrolled(x)
    weights = _random_weights(unrolled, rng)
    ref, _ = gru_reference(x, weights, initial_state=h0)
    np.testing.assert_allclose(
        _np(unrolled(x, initial_state=[h0])), ref, atol=1e-5
    )
    stateful = keras_ln.LayerNormGRU(U, return_sequences=True, stateful=True)
    stateful(x[:, :3])
    stateful.set_weights(weights)
    stateful.reset_state()
    parts = [_np(stateful(x[:, :3])), _np(stateful(x[:, 3:]))]
    ref0, _ = gru_reference(x, weights)
    np.testing.assert_allclose(np.concatenate(parts, 1), ref0, atol=1e-5)


def test_dropout_fused_equals_cell(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    kwargs = dict(dropout=0.3, recurrent_dropout=0.4, seed=3)
    fused = keras_ln.LayerNormGRU(U, return_sequences=True, **kwargs)
    rnn = keras.layers.RNN(
        keras_ln.LayerNormGRUCell(U, **kwargs), return_sequences=True
    )
    fused(x)
    rnn(x)
    rnn.set_weights(fused.get_weights())
    train = _np(fused(x, training=True))
    np.testing.assert_allclose(train, _np(rnn(x, training=True)), atol=1e-5)
    ref, _ = gru_reference(x, fused.get_weights())
    assert np.abs(train - ref).max() > 1e-3
    np.testing.assert_allclose(_np(fused(x)), ref, atol=1e-5)


def test_weights_and_shapes():
    layer = keras_ln.LayerNormGRU(U)
    layer(np.zeros((1, 2, F), "float32"))
    assert _names(layer) == [
        "kernel", "recurrent_kernel", "bias", "kernel_norm_gamma",
        "kernel_norm_beta", "recurrent_norm_gamma", "recurrent_norm_beta",
    ]
    gru = keras.layers.GRU(U)
    gru(np.zeros((1, 2, F), "float32"))
    assert [w.shape for w in layer.get_weights()[:3]] == [
        w.shape for w in gru.get_weights()
    ]


@pytest.mark.parametrize("fused", [True, False])
def test_gradients_match_finite_differences(rng, fused):
    x = tf.constant(rng.standard_normal((2, 4, 3)))
    if fused:
        layer = keras_ln.LayerNormGRU(3, return_sequences=True,
                                      dtype="float64")
    else:
        layer = keras.layers.RNN(
            keras_ln.LayerNormGRUCell(3, dtype="float64"),
            return_sequences=True, dtype="float64",
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
            values = []
            for sign in (1, -1):
                bumped = flat.copy()
                bumped[k] += sign * h
                var.assign(bumped.reshape(var.shape))
                values.append(float(loss()))
            var.assign(flat.reshape(var.shape))
            numeric = (values[0] - values[1]) / (2 * h)
            assert abs(grad.numpy().ravel()[k] - numeric) < 1e-6 * max(
                1.0, abs(numeric)
            ), (var.path, k)


def test_gradients_finite_on_500_steps(rng):
    x = tf.constant(rng.standard_normal((2, 500, 2)).astype("float32"))
    model = keras.Sequential(
        [keras.Input((500, 2)), keras_ln.LayerNormGRU(3), keras.layers.Dense(1)]
    )
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0


def test_save_load_round_trip(tmp_path, rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    x[1, 2:] = 0.0
    model = keras.Sequential(
        [
            keras.Input((T, F)),
            keras.layers.Masking(),
            keras.layers.Bidirectional(
                keras_ln.LayerNormGRU(U, return_sequences=True, dropout=0.1)
            ),
            keras_ln.LayerNormGRU(3),
            keras.layers.Dense(1),
        ]
    )
    cell_model = keras.Sequential(
        [keras.Input((T, F)), keras.layers.RNN(keras_ln.LayerNormGRUCell(U))]
    )
    for m, name in ((model, "gru.keras"), (cell_model, "cell.keras")):
        before = _np(m(x))
        m.save(tmp_path / name)
        np.testing.assert_array_equal(
            _np(keras.models.load_model(tmp_path / name)(x)), before
        )
    layer = keras_ln.LayerNormGRU(5, go_backwards=True, norm_epsilon=1e-4)
    clone = keras_ln.LayerNormGRU.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_mixed_precision(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    ref = keras_ln.LayerNormGRU(U, return_sequences=True)
    ref(x)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = keras_ln.LayerNormGRU(U, return_sequences=True)
        layer(x)
        layer.set_weights(ref.get_weights())
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        np.testing.assert_allclose(_np(out).astype("float32"), _np(ref(x)),
                                   atol=2e-2)
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_compute_output_shape(return_sequences, return_state):
    layer = keras_ln.LayerNormGRU(
        U, return_sequences=return_sequences, return_state=return_state
    )
    predicted = layer.compute_output_shape((2, T, F))
    out = layer(np.zeros((2, T, F), "float32"))
    if return_state:
        assert [tuple(o.shape) for o in out] == [tuple(p) for p in predicted]
    else:
        assert tuple(out.shape) == tuple(predicted)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": 0}, "Expected `units` to be a positive integer. "
                       "Received: units=0"),
        ({"units": 4, "dropout": 1.0}, "dropout=1.0"),
        ({"units": 4, "recurrent_dropout": -0.5}, "recurrent_dropout=-0.5"),
    ],
)
@pytest.mark.parametrize(
    "cls", [keras_ln.LayerNormGRU, keras_ln.LayerNormGRUCell]
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_reset_after_false_is_refused_and_numpy_arguments_accepted():
    with pytest.raises(ValueError, match="reset_after=False"):
        keras_ln.LayerNormGRUCell(U, reset_after=False)
    layer = keras_ln.LayerNormGRU(np.int64(3), dropout=np.float32(0.25))
    assert (layer.units, layer.dropout) == (3, 0.25)
    with pytest.raises(ValueError, match=r"units=(np\.int64\()?0"):
        keras_ln.LayerNormGRU(np.int64(0))


def test_input_must_be_3d():
    with pytest.raises(ValueError, match=r"3-D .*inputs.shape=\(2, 4\)"):
        keras_ln.LayerNormGRU(U)(np.zeros((2, 4), "float32"))
