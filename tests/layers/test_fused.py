"""`keras_ln.FusedLSTM` and `FusedGRU`: keras' LSTM and GRU run by the native kernels.

Reference: `keras.layers.LSTM` / `GRU` themselves, with the same weights (their loop is
differentiated by TensorFlow): outputs, states and the gradients of the
input and of every weight, in float64, with masks, `go_backwards`,
`return_sequences`, `zero_output_for_mask`, without bias, split into shards;
input dropout in training with the same seed. Also: where the kernel does
not run (the fallback and its errors), XLA, dtype policies, saving.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln
from keras_ln.layers import _native
from keras_ln.layers import _tf_backend
from keras_ln.layers import _tf_recurrent_kernels as kernels

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow kernel"
)

B, T, F, U = 7, 9, 5, 6

FAMILIES = {"lstm": (keras.layers.LSTM, keras_ln.FusedLSTM),
            "gru": (keras.layers.GRU, keras_ln.FusedGRU)}


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    """keras' layer and its fused twin."""
    return FAMILIES[request.param]


@pytest.fixture
def native():
    if _native.ops() is None:
        assert not os.environ.get("KERAS_LN_REQUIRE_NATIVE"), _native.load_error()
        pytest.skip(f"native ops not built: {_native.load_error()}")


@pytest.fixture
def calls(monkeypatch):
    """How many times the native kernel ran (`plain_recurrence` traced)."""
    count = {"kernel": 0}
    original = _tf_backend.plain_recurrence

    def counted(*args, **kwargs):
        count["kernel"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(_tf_backend, "plain_recurrence", counted)
    return count


def _pair(family, rng, dtype, **kwargs):
    """keras' layer and its fused twin with the same random weights."""
    keras_class, fused_class = family
    ref = keras_class(U, dtype=dtype, **kwargs)
    fused = fused_class(U, dtype=dtype, use_kernel="native", **kwargs)
    for layer in (ref, fused):
        layer.build((None, T, F))
    weights = [0.5 * rng.normal(size=w.shape).astype(dtype) for w in ref.get_weights()]
    ref.set_weights(weights)
    fused.set_weights(weights)
    return ref, fused


def _outputs_and_gradients(layer, x, mask, training=False):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, mask=mask, training=training)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        # A loss that weighs every output and state differently.
        loss = sum(tf.reduce_sum(o * tf.reshape(
            tf.sin(1.0 + tf.cast(tf.range(tf.size(o)), o.dtype)), tf.shape(o)))
            for o in out)
    grads = tape.gradient(loss, [x] + layer.trainable_variables)
    return [o.numpy() for o in out] + [g.numpy() for g in grads]


def _data(rng, dtype, masked):
    x = rng.normal(size=(B, T, F)).astype(dtype)
    if not masked:
        return x, None
    mask = np.ones((B, T), bool)
    mask[2, 6:] = False  # padding at the end
    mask[4, :3] = False  # and at the start
    mask[5, :] = False   # a sequence with nothing
    if masked == "empty_steps":
        # steps that mask every row, inside and at the end (the kernels
        # skip their arithmetic)
        mask[:, 4] = False
        mask[:, 7:] = False
    return x, tf.constant(mask)


@pytest.mark.parametrize("masked", [False, True, "empty_steps"])
@pytest.mark.parametrize("kwargs", [
    {},
    {"return_sequences": True, "return_state": True},
    {"go_backwards": True, "return_sequences": True},
    {"zero_output_for_mask": True, "return_sequences": True},
    {"use_bias": False},
], ids=["last", "sequences+state", "backwards", "zero_output", "no_bias"])
@pytest.mark.parametrize("shards", [0, 3])
def test_equals_keras_layer_float64(native, calls, monkeypatch, family, masked, kwargs, shards):
    monkeypatch.setattr(kernels, "NATIVE_SHARDS", shards)
    rng = np.random.default_rng(0)
    ref, fused = _pair(family, rng, "float64", **kwargs)
    x, mask = _data(rng, "float64", masked)
    expected = _outputs_and_gradients(ref, x, mask)
    got = _outputs_and_gradients(fused, x, mask)
    assert calls["kernel"] == 1
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_lstm_without_forget_bias_init_equals_keras(native, calls):
    rng = np.random.default_rng(8)
    ref, fused = _pair(FAMILIES["lstm"], rng, "float64", unit_forget_bias=False)
    x, mask = _data(rng, "float64", True)
    for g, e in zip(_outputs_and_gradients(fused, x, mask), _outputs_and_gradients(ref, x, mask)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    assert calls["kernel"] == 1


def test_float32_as_keras_layer(native, calls, family):
    rng = np.random.default_rng(1)
    ref, fused = _pair(family, rng, "float32", return_sequences=True)
    x, mask = _data(rng, "float32", True)
    for g, e in zip(_outputs_and_gradients(fused, x, mask), _outputs_and_gradients(ref, x, mask)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    assert calls["kernel"] == 1


def test_input_dropout_in_training_as_keras(native, calls, family):
    """One input mask per sequence, the draws of keras' layer with the
    same seed."""
    rng = np.random.default_rng(2)
    ref, fused = _pair(family, rng, "float64", dropout=0.4, seed=11, return_sequences=True)
    x, _ = _data(rng, "float64", False)
    expected = _outputs_and_gradients(ref, x, None, training=True)
    got = _outputs_and_gradients(fused, x, None, training=True)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    assert calls["kernel"] == 1
    # Dropout changed something: the inference outputs differ.
    assert not np.allclose(got[0], fused(x, training=False).numpy())


@pytest.mark.parametrize("kwargs, reason", [
    ({"unroll": True}, "do not unroll"),
    ({"activation": "relu"}, "activation='tanh'"),
    ({"recurrent_dropout": 0.3}, "do not apply recurrent_dropout in training"),
    ({"reset_after": False}, "reset_after=True only"),
])
def test_falls_back_to_keras_loop_where_the_kernel_cannot_run(native, calls, family, kwargs,
                                                              reason):
    if "reset_after" in kwargs:  # a GRU argument
        family = FAMILIES["gru"]
    rng = np.random.default_rng(3)
    ref, fused = _pair(family, rng, "float64", seed=5, **kwargs)
    fused_auto = type(fused).from_config({**fused.get_config(), "use_kernel": "auto"})
    fused_auto.build((None, T, F))
    fused_auto.set_weights(ref.get_weights())
    x, _ = _data(rng, "float64", False)
    training = "recurrent_dropout" in kwargs
    np.testing.assert_allclose(fused_auto(x, training=training).numpy(),
                               ref(x, training=training).numpy(), rtol=1e-12)
    assert calls["kernel"] == 0
    with pytest.raises(ValueError, match=rf"use_kernel='native' was specified, but .*{reason}"
                       r".*use_kernel='auto'"):
        fused(x, training=training)


def test_use_kernel_false_and_missing_library_run_keras_loop(native, calls, monkeypatch, family):
    fused_class = family[1]
    x = np.random.default_rng(4).normal(size=(B, T, F)).astype("float32")
    fast = fused_class(U)
    out = fast(x).numpy()
    assert calls["kernel"] == 1
    slow = fused_class(U, use_kernel=False)
    slow.build((None, T, F))
    slow.set_weights(fast.get_weights())
    np.testing.assert_allclose(slow(x).numpy(), out, rtol=1e-5, atol=1e-6)
    assert calls["kernel"] == 1
    monkeypatch.setattr(_native, "_loaded", {"module": None, "error": "not built (test)"})
    np.testing.assert_allclose(fast(x).numpy(), out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"native ops are not available \(not built \(test\)\)"):
        fused_class(U, use_kernel=True)(x)


def test_xla_fit_runs_keras_loop_and_matches(native, calls, family):
    """Inside jit_compile=True the kernel does not run; keras' loop does,
    with the same training result as the kernel outside XLA."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, T, F)).astype("float64")
    y = rng.normal(size=(32, 1)).astype("float64")
    results = []
    for jit in (False, True):
        model = keras.Sequential([keras.Input((T, F), dtype="float64"),
                                  family[1](U, dtype="float64", seed=0),
                                  keras.layers.Dense(1, dtype="float64")])
        model.set_weights([np.full(w.shape, 0.1) * np.cos(np.arange(w.size)).reshape(w.shape)
                           for w in model.get_weights()])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=jit)
        before = calls["kernel"]
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results.append((calls["kernel"] > before, model.get_weights()))
    assert results[0][0] and not results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_mixed_precision_policy_runs_keras_loop(native, calls, family):
    layer = family[1](U, dtype="mixed_float16")
    out = layer(np.ones((2, T, F), "float32"))
    assert out.dtype == "float16" and calls["kernel"] == 0


@pytest.mark.parametrize("bad", ["xla", "cudnn", 1, None])
def test_use_kernel_is_validated(bad, family):
    with pytest.raises(ValueError, match=r"Expected `use_kernel` to be one of 'auto', True, "
                       rf"False or 'native'\. Received: use_kernel={bad!r}"):
        family[1](3, use_kernel=bad)


def test_is_keras_layer_and_saves(tmp_path, family):
    keras_class, fused_class = family
    layer = fused_class(U, use_kernel=False, return_sequences=True)
    assert isinstance(layer, keras_class)
    model = keras.Sequential([keras.Input((T, F)), layer])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is fused_class
    assert loaded.layers[0].use_kernel is False and loaded.layers[0].supports_jit
    x = np.random.default_rng(6).normal(size=(2, T, F)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert not fused_class(U, use_kernel="native").supports_jit
