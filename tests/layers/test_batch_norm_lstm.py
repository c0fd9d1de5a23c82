"""BatchNormLSTMCell / BatchNormLSTM (Cooijmans et al., 2016) against a
float64 NumPy reference in training mode (per-step batch statistics over the
unmasked samples, moving statistics updated per step) and inference mode
(per-step moving statistics, later steps reusing the last trained one)."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln

B, T, F, U = 4, 5, 3, 4
EPS = 1e-3
MOMENTUM = 0.9
NORMS = ("kernel_norm", "recurrent_norm", "state_norm")


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _named(layer):
    return {
        w.path.split("/")[-1]: np.asarray(w.numpy(), np.float64)
        for w in layer.weights
    }


def bn_lstm_reference(x, p, training, mask=None, go_backwards=False,
                      momentum=MOMENTUM, eps=EPS):
    """float64 BN-LSTM. `p` maps weight names to arrays (moving statistics
    included); in training mode returns the updated moving statistics too.
    The time index of a step is its position in processing order."""
    p = {k: v.copy() for k, v in p.items()}
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    max_steps = p["kernel_norm_moving_mean"].shape[0]
    units = p["recurrent_kernel"].shape[0]
    valid = np.ones((batch, steps)) if mask is None else mask.astype(float)
    order = list(range(steps - 1, -1, -1)) if go_backwards else list(
        range(steps)
    )
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    out = np.zeros((batch, units))
    outs = []
    seen = p["moving_steps"]

    def bn(z, norm, k, w):
        if training:
            mean = (w[:, None] * z).sum(0) / max(w.sum(), 1.0)
            var = (w[:, None] * (z - mean) ** 2).sum(0) / max(w.sum(), 1.0)
            if w.sum() > 0 and k < max_steps:
                for stat, value in (("mean", mean), ("variance", var)):
                    key = f"{norm}_moving_{stat}"
                    p[key][k] = momentum * p[key][k] + (1 - momentum) * value
        else:
            row = min(k, max(int(p["moving_steps"]), 1) - 1)
            mean = p[f"{norm}_moving_mean"][row]
            var = p[f"{norm}_moving_variance"][row]
        y = (z - mean) / np.sqrt(var + eps) * p[f"{norm}_gamma"]
        if norm == "state_norm":
            y = y + p["state_norm_beta"]
        return y

    for k, t in enumerate(order):
        w = valid[:, t]
        z = (
            bn(x[:, t] @ p["kernel"], "kernel_norm", k, w)
            + bn(h @ p["recurrent_kernel"], "recurrent_norm", k, w)
            + p["bias"]
        )
        zi, zf, zg, zo = np.split(z, 4, axis=-1)
        c_new = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zg)
        h_new = _sigmoid(zo) * np.tanh(bn(c_new, "state_norm", k, w))
        if training and w.sum() > 0:
            seen = max(seen, min(k + 1, max_steps))
        m = w[:, None] > 0
        h = np.where(m, h_new, h)
        c = np.where(m, c_new, c)
        out = np.where(m, h_new, out)
        outs.append(out)
    p["moving_steps"] = np.float64(seen)
    return np.stack(outs, 1), h, c, p


def _randomize(layer, rng, moving=False, moving_steps=None):
    """Random trainable weights (and, optionally, moving statistics)."""
    names = [w.path.split("/")[-1] for w in layer.weights]
    for name, var in zip(names, layer.weights):
        shape = tuple(var.shape)
        if "moving_variance" in name:
            if moving:
                var.assign(rng.uniform(0.5, 2.0, shape))
        elif "moving_mean" in name:
            if moving:
                var.assign(0.5 * rng.standard_normal(shape))
        elif name == "moving_steps":
            if moving_steps is not None:
                var.assign(float(moving_steps))
        elif "gamma" in name:
            var.assign(rng.uniform(0.5, 1.5, shape))
        else:
            var.assign(0.5 * rng.standard_normal(shape))


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


def _layer(**kwargs):
    kwargs.setdefault("norm_momentum", MOMENTUM)
    kwargs.setdefault("return_sequences", True)
    kwargs.setdefault("return_state", True)
    return keras_ln.BatchNormLSTM(U, dtype="float64", **kwargs)


@pytest.mark.parametrize("mask_kind", ["none", "right", "left"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_training_matches_reference(rng, mask_kind, go_backwards):
    x = rng.standard_normal((B, T, F))
    mask = _masks()[mask_kind]
    layer = _layer(go_backwards=go_backwards, max_steps=T + 2)
    layer(x)
    _randomize(layer, rng, moving=True)
    before = _named(layer)
    seq, h, c = layer(x, mask=mask, training=True)
    ref_seq, ref_h, ref_c, ref_p = bn_lstm_reference(
        x, before, True, mask, go_backwards
    )
    np.testing.assert_allclose(_np(seq), ref_seq, atol=1e-10)
    np.testing.assert_allclose(_np(h), ref_h, atol=1e-10)
    np.testing.assert_allclose(_np(c), ref_c, atol=1e-10)
    after = _named(layer)
    for name, value in ref_p.items():
        np.testing.assert_allclose(after[name], value, atol=1e-10,
                                   err_msg=name)
    # rows T, T+1 never saw data; the longest sequence sets moving_steps
    for norm in NORMS:
        np.testing.assert_array_equal(
            after[f"{norm}_moving_mean"][T:], before[f"{norm}_moving_mean"][T:]
        )
    longest = T if mask is None else int(
        max(np.nonzero(mask[:, ::-1] if go_backwards else mask)[1]) + 1
    )
    assert after["moving_steps"] == longest


@pytest.mark.parametrize("mask_kind", ["none", "right", "left"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_inference_matches_reference(rng, mask_kind, go_backwards):
    x = rng.standard_normal((B, T, F))
    mask = _masks()[mask_kind]
    layer = _layer(go_backwards=go_backwards)
    layer(x)
    # trained on sequences of 3 steps: steps 3 and 4 reuse step 2's stats
    _randomize(layer, rng, moving=True, moving_steps=3)
    ref = bn_lstm_reference(x, _named(layer), False, mask, go_backwards)
    for got, want in zip(layer(x, mask=mask), ref[:3]):
        np.testing.assert_allclose(_np(got), want, atol=1e-10)
    # and the reuse matters: with all 5 steps trained the output differs
    _randomize(layer, rng, moving=False, moving_steps=T)
    assert np.abs(_np(layer(x, mask=mask)[0]) - ref[0]).max() > 1e-3


def test_inference_output_independent_of_batch(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    layer = keras_ln.BatchNormLSTM(U, return_sequences=True)
    layer(x, training=True)  # some non-trivial moving statistics
    _randomize(layer, rng, moving=True, moving_steps=T)
    full = _np(layer(x))
    for i in range(B):
        np.testing.assert_allclose(_np(layer(x[i:i + 1]))[0], full[i],
                                   atol=1e-6)
    other = x.copy()
    other[1:] = 100.0 * rng.standard_normal(other[1:].shape)
    np.testing.assert_allclose(_np(layer(other))[0], full[0], atol=1e-6)
    # in training the batch statistics do couple the samples
    assert np.abs(
        _np(layer(other, training=True))[0] - _np(layer(x, training=True))[0]
    ).max() > 1e-3


def test_masked_steps_do_not_enter_statistics(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    mask = _masks()["right"]
    noisy = x.copy()
    noisy[~mask] = 1e3 * rng.standard_normal(noisy[~mask].shape)
    results = []
    first = keras_ln.BatchNormLSTM(U, return_sequences=True)
    first(x)
    _randomize(first, rng)
    for data in (x, noisy):
        layer = keras_ln.BatchNormLSTM(U, return_sequences=True)
        layer(data)
        layer.set_weights(first.get_weights())
        out = _np(layer(data, mask=mask, training=True))
        results.append((out, [w.numpy() for w in layer.non_trainable_weights]))
    np.testing.assert_allclose(results[0][0][mask], results[1][0][mask],
                               atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_gamma_starts_at_one_tenth_and_weights():
    layer = keras_ln.BatchNormLSTM(U)
    layer(np.zeros((2, T, F), "float32"))
    named = _named(layer)
    for norm in NORMS:
        np.testing.assert_allclose(named[f"{norm}_gamma"], 0.1, rtol=1e-7)
        assert named[f"{norm}_moving_mean"].shape[0] == T
    assert [w.path.split("/")[-1] for w in layer.trainable_weights] == [
        "kernel", "recurrent_kernel", "bias", "kernel_norm_gamma",
        "recurrent_norm_gamma", "state_norm_gamma", "state_norm_beta",
    ]
    assert named["moving_steps"] == 0


# (the cell in keras.layers.RNN cannot see a mask, so it can only match
# the fused layer's training-mode statistics on unmasked data)
@pytest.mark.parametrize(
    "training, mask_kind", [(False, "none"), (False, "right"), (True, "none")]
)
def test_fused_equals_cell_in_rnn(rng, training, mask_kind):
    x = rng.standard_normal((B, T, F)).astype("float32")
    mask = _masks()[mask_kind]
    # unroll: no extra shape-probing call of the cell (see the docstring)
    fused = keras_ln.BatchNormLSTM(U, return_sequences=True, unroll=True)
    rnn = keras.layers.RNN(
        keras_ln.BatchNormLSTMCell(U, max_steps=T),
        return_sequences=True,
        return_state=True,
        unroll=True,
    )
    fused(x)
    rnn(x)
    _randomize(fused, rng, moving=True, moving_steps=T - 1)
    rnn.set_weights(fused.get_weights())
    got = _np(fused(x, mask=mask, training=training))
    want, h, c, step = rnn(x, mask=mask, training=training)
    np.testing.assert_allclose(got, _np(want), atol=1e-5)
    for a, b in zip(fused.get_weights(), rnn.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(_np(step)[:, 0], T if mask is None
                                  else mask.sum(1))


def test_cell_requires_max_steps_and_layer_unknown_length():
    with pytest.raises(ValueError, match="max_steps=None"):
        keras.layers.RNN(keras_ln.BatchNormLSTMCell(U))(
            np.zeros((2, 3, F), "float32")
        )
    with pytest.raises(ValueError, match="max_steps=None"):
        keras_ln.BatchNormLSTM(U)(keras.Input((None, F)))
    layer = keras_ln.BatchNormLSTM(U, max_steps=4)
    out = layer(keras.Input((None, F)))
    assert tuple(out.shape) == (None, U)
    assert np.all(np.isfinite(_np(layer(np.ones((2, 9, F), "float32")))))


def test_gradients_match_finite_differences(rng):
    x = tf.constant(rng.standard_normal((3, 4, 2)))
    mask = tf.constant(np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]],
                                bool))
    layer = keras_ln.BatchNormLSTM(3, return_sequences=True, dtype="float64")
    layer(x)
    _randomize(layer, rng)
    target = tf.constant(rng.standard_normal((3, 4, 3)))

    def loss():
        out = layer(x, mask=mask, training=True)
        return tf.reduce_sum(tf.sin(3.0 * out) * target)

    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, layer.trainable_variables)
    h = 1e-6
    for var, grad in zip(layer.trainable_variables, grads):
        flat = var.numpy().ravel()
        for k in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            values = []
            for sign in (1, -1):
                bumped = flat.copy()
                bumped[k] += sign * h
                var.assign(bumped.reshape(var.shape))
                values.append(float(loss()))
            var.assign(flat.reshape(var.shape))
            numeric = (values[0] - values[1]) / (2 * h)
            assert abs(grad.numpy().ravel()[k] - numeric) < 1e-5 * max(
                1.0, abs(numeric)
            ), (var.path, k)


def test_gradients_finite_on_500_steps(rng):
    x = tf.constant(rng.standard_normal((4, 500, 2)).astype("float32"))
    model = keras.Sequential(
        [keras.Input((500, 2)), keras_ln.BatchNormLSTM(3),
         keras.layers.Dense(1)]
    )
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0


def test_fit_save_load_round_trip(tmp_path, rng):
    x = rng.standard_normal((8, T, F)).astype("float32")
    x[0, 3:] = 0.0
    y = rng.standard_normal((8, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((T, F)),
            keras.layers.Masking(),
            keras.layers.Bidirectional(
                keras_ln.BatchNormLSTM(U, return_sequences=True, dropout=0.1,
                                       recurrent_dropout=0.1)
            ),
            keras_ln.BatchNormLSTM(3),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    steps = model.layers[-2].cell.moving_steps.numpy()
    assert steps == T
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "bn.keras")
    loaded = keras.models.load_model(tmp_path / "bn.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    cell_model = keras.Sequential(
        [keras.Input((T, F)),
         keras.layers.RNN(keras_ln.BatchNormLSTMCell(U, max_steps=T))]
    )
    cell_model.save(tmp_path / "cell.keras")
    np.testing.assert_array_equal(
        _np(keras.models.load_model(tmp_path / "cell.keras")(x)),
        _np(cell_model(x)),
    )
    layer = keras_ln.BatchNormLSTM(5, max_steps=7, norm_momentum=0.5)
    clone = keras_ln.BatchNormLSTM.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_mixed_precision(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    ref = keras_ln.BatchNormLSTM(U, return_sequences=True)
    ref(x, training=True)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = keras_ln.BatchNormLSTM(U, return_sequences=True)
        layer(x)
        layer.set_weights(ref.get_weights())
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        np.testing.assert_allclose(_np(out).astype("float32"), _np(ref(x)),
                                   atol=2e-2)
        train = layer(x, training=True)
        assert np.all(np.isfinite(_np(train)))
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_compute_output_shape(return_sequences, return_state):
    layer = keras_ln.BatchNormLSTM(
        U, return_sequences=return_sequences, return_state=return_state
    )
    predicted = layer.compute_output_shape((2, T, F))
    out = layer(np.zeros((2, T, F), "float32"))
    if return_state:
        assert len(out) == 3
        assert [tuple(o.shape) for o in out] == [tuple(p) for p in predicted]
    else:
        assert tuple(out.shape) == tuple(predicted)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": 0}, "Expected `units` to be a positive integer. "
                       "Received: units=0"),
        ({"units": 4, "dropout": 1.0}, "dropout=1.0"),
        ({"units": 4, "recurrent_dropout": 2}, "recurrent_dropout=2"),
        ({"units": 4, "max_steps": 0}, "max_steps=0"),
        ({"units": 4, "norm_momentum": 1.0}, "norm_momentum=1.0"),
    ],
)
@pytest.mark.parametrize(
    "cls", [keras_ln.BatchNormLSTM, keras_ln.BatchNormLSTMCell]
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_input_must_be_3d():
    with pytest.raises(ValueError, match=r"3-D .*inputs.shape=\(2, 4\)"):
        keras_ln.BatchNormLSTM(U)(np.zeros((2, 4), "float32"))


@pytest.mark.parametrize("go_backwards", [False, True])
def test_unknown_length_in_traced_function(rng, go_backwards):
    # keras.Input((None, F)) with max_steps: the fused loop must also run
    # when the number of steps is unknown while tracing (it used to fail in
    # keras' TensorFlow loop, which read the length of the tuple of inputs).
    layer = _layer(max_steps=T, go_backwards=go_backwards)
    layer.build((None, None, F))
    _randomize(layer, rng)
    p = _named(layer)
    x = rng.standard_normal((B, T, F))
    mask = _masks()["right"]
    spec = [
        tf.TensorSpec([None, None, F], tf.float64),
        tf.TensorSpec([None, None], tf.bool),
    ]
    train = tf.function(
        lambda a, m: layer(a, mask=m, training=True)[0], input_signature=spec
    )
    infer = tf.function(
        lambda a, m: layer(a, mask=m, training=False)[0], input_signature=spec
    )
    want, _, _, p_new = bn_lstm_reference(
        x, p, True, mask=mask, go_backwards=go_backwards
    )
    np.testing.assert_allclose(_np(train(x, mask)), want, atol=1e-6)
    for norm in NORMS:
        for stat in ("mean", "variance"):
            key = f"{norm}_moving_{stat}"
            np.testing.assert_allclose(
                _named(layer)[key], p_new[key], atol=1e-6
            )
    want, _, _, _ = bn_lstm_reference(
        x, p_new, False, mask=mask, go_backwards=go_backwards
    )
    np.testing.assert_allclose(_np(infer(x, mask)), want, atol=1e-6)


def test_momentum_zero_replaces_moving_statistics_exactly(rng):
    # With norm_momentum=0 a training call sets the moving statistics to
    # the batch's, bit for bit whatever they held before (population
    # statistics are computed this way; `old + (target - old)` was not).
    x = rng.standard_normal((B, T, F)).astype("float32")
    results = []
    for start in (0.0, 0.37):
        layer = keras_ln.BatchNormLSTM(U, norm_momentum=0.0, seed=1)
        layer.build(x.shape)
        _randomize(layer, np.random.default_rng(3))
        for var in layer.non_trainable_variables:
            if "moving_" in var.path and "steps" not in var.path:
                var.assign(np.full(var.shape, start) + 1.3)
        layer(x, training=True)
        results.append(
            [var.numpy() for var in layer.non_trainable_variables
             if "moving_" in var.path]
        )
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
