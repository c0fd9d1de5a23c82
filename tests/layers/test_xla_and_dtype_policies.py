"""Every recurrent layer under XLA (`jit_compile=True`) with the numbers it
gives without XLA, and under every 16-bit dtype policy keras has."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's XLA"
)

T, F, U = 5, 3, 4


def _fused(cls):
    return lambda **kw: cls(U, return_sequences=True, **kw)


def _wrapped(cell_cls):
    return lambda **kw: keras.layers.RNN(cell_cls(U, **kw),
                                         return_sequences=True)


LAYERS = {
    "LayerNormLSTM": _fused(keras_ln.LayerNormLSTM),
    "LayerNormGRU": _fused(keras_ln.LayerNormGRU),
    "BatchNormLSTM": _fused(keras_ln.BatchNormLSTM),
    "RNN(LayerNormLSTMCell)": _wrapped(keras_ln.LayerNormLSTMCell),
    "RNN(LayerNormGRUCell)": _wrapped(keras_ln.LayerNormGRUCell),
    "RNN(BatchNormLSTMCell)": lambda **kw: keras.layers.RNN(
        keras_ln.BatchNormLSTMCell(U, max_steps=T, **kw),
        return_sequences=True),
}


def _model(make, seed=0, **kw):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((T, F))
    h = make(**kw)(inputs)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(h))


def _data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, T, F)).astype("float32")
    return x, x[:, :, 0].mean(axis=1, keepdims=True)


def _trained(make, jit_compile):
    """Predictions and weights after three SGD epochs, batch 8."""
    x, y = _data()
    model = _model(make)
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return model.predict(x, verbose=0), model.get_weights()


@pytest.mark.parametrize("name", list(LAYERS))
def test_jit_compile_fit_and_predict_match_without_xla(name):
    make = LAYERS[name]
    pred_jit, weights_jit = _trained(make, True)
    pred, weights = _trained(make, False)
    np.testing.assert_allclose(pred_jit, pred, atol=1e-5)
    for a, b in zip(weights_jit, weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", ["LayerNormLSTM", "LayerNormGRU"])
def test_default_model_resolves_jit_auto_to_xla_and_runs(name):
    # keras' jit_compile="auto" asks every layer's `supports_jit`; a layer
    # that says True must then run under XLA.
    model = _model(LAYERS[name])
    model.compile("adam", "mse", jit_compile="auto")
    assert all(layer.supports_jit for layer in model._flatten_layers())
    x, y = _data()
    model.compile("adam", "mse", jit_compile=True)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.jit_compile is True


@pytest.mark.parametrize("name, inside, outside", [
    ("LayerNormLSTM", "xla", "native"),
    ("LayerNormGRU", "xla", "native"),
])
def test_inside_any_jit_compiled_tf_function(name, inside, outside,
                                             monkeypatch):
    from keras_ln.layers import _native
    from keras_ln.layers import _tf_backend

    if _native.ops() is None:
        pytest.skip("native ops not built")
    chosen = []
    original = _tf_backend.implementation

    def spy(*args):
        chosen.append(None)
        chosen[-1] = original(*args)
        return chosen[-1]

    monkeypatch.setattr(_tf_backend, "implementation", spy)
    layer = LAYERS[name]()
    x, _ = _data()
    x = tf.constant(x)
    layer(x)

    def outputs_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, [x] + layer.trainable_weights)

    y_jit, g_jit = tf.function(outputs_and_gradient, jit_compile=True)(x)
    assert chosen[-1] == inside
    y, g = outputs_and_gradient(x)
    assert chosen[-1] == outside
    np.testing.assert_allclose(y_jit.numpy(), y.numpy(), atol=1e-5)
    for a, b in zip(g_jit, g):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


@pytest.mark.parametrize("name, kwargs", [
    ("LayerNormLSTM", {"use_kernel": False}),
    ("LayerNormGRU", {"use_kernel": False}),
    ("BatchNormLSTM", {"use_kernel": "xla"}),  # its TensorFlow kernel
])
def test_gate_blocks_apart_inside_xla_give_the_same_numbers(name, kwargs,
                                                            monkeypatch):
    """Inside an XLA-compiled function the fused layers' generic loops (and
    BatchNormLSTM's XLA kernel) take the input projection's gate blocks
    apart before the loop; outside it, one wide sequence. The same
    arithmetic: outputs and gradients in float64 equal those of the wide
    layout forced inside XLA, and those outside XLA, to rounding."""
    from keras_ln.layers import _fast_paths

    original = _fast_paths.gate_blocks_apart
    asked, force_wide = [], []

    def spy():
        asked.append(original())
        return asked[-1] and not force_wide

    monkeypatch.setattr(_fast_paths, "gate_blocks_apart", spy)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(6, T, F)))
    mask = tf.constant(np.arange(T)[None, :] < rng.integers(1, T + 1, (6, 1)))
    layer = LAYERS[name](dtype="float64", **kwargs)
    layer.build((None, T, F))

    def run(x, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, mask=mask, training=training)
            loss = tf.reduce_sum(y * tf.cos(y))
        return [y] + tape.gradient(loss, [x] + layer.trainable_weights)

    for training in (True, False):
        outside = run(x, training)
        assert asked and not any(asked)
        asked.clear()
        apart = tf.function(run, jit_compile=True)(x, training)
        assert asked and all(asked)
        force_wide.append(True)
        wide = tf.function(run, jit_compile=True)(x, training)
        force_wide.clear()
        for a, b, c in zip(apart, wide, outside):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-9, atol=1e-10)
        asked.clear()


@pytest.mark.parametrize("name, kwargs", [
    ("LayerNormLSTM", {"use_kernel": False}),
    ("LayerNormGRU", {"use_kernel": False}),
    ("BatchNormLSTM", {"use_kernel": "xla", "max_steps": T}),
])
def test_steps_unknown_when_tracing_under_xla(name, kwargs):
    """An XLA-compiled function traced for any number of steps (as keras'
    `fit` retraces with relaxed shapes): the loops keep one wide input
    sequence there (keras' loop cannot read an unknown length from a tuple
    of sequences) and give the numbers they give outside XLA."""
    layer = LAYERS[name](**kwargs)
    layer.build((None, None, F))
    spec = tf.TensorSpec([None, None, F], tf.float32)
    inside = tf.function(lambda x: layer(x), jit_compile=True,
                         input_signature=[spec])
    for steps in (T, T - 2):
        x = tf.constant(np.random.default_rng(steps).normal(
            size=(3, steps, F)).astype("float32"))
        np.testing.assert_allclose(inside(x).numpy(), layer(x).numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["LayerNormLSTM", "LayerNormGRU", "BatchNormLSTM"])
def test_keras_auto_jit_on_a_machine_without_gpu_runs_the_native_ops(name):
    """README: on a machine without a GPU keras' default
    `jit_compile="auto"` does not compile with XLA, so `fit` and `predict`
    run the native ops."""
    from keras_ln.layers import _native
    from keras_ln.layers import _tf_backend

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("keras' 'auto' compiles with XLA where there is a GPU")
    if _native.ops() is None:
        pytest.skip("native ops not built")
    chosen = []
    original = _tf_backend.kernel_choice

    def spy(layer):
        chosen.append(original(layer))
        return chosen[-1]

    model = _model(LAYERS[name])
    model.compile("adam", "mse")
    x, y = _data()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_tf_backend, "kernel_choice", spy)
        model.fit(x, y, epochs=1, verbose=0)
        model.predict(x, verbose=0)
    assert model.jit_compile is False
    assert chosen and set(chosen) == {"native"}


def test_native_kernel_cannot_run_under_xla():
    layer = keras_ln.LayerNormLSTM(U, use_kernel="native")
    assert not layer.supports_jit
    x, _ = _data()

    @tf.function(jit_compile=True)
    def run(x):
        return layer(x)

    with pytest.raises(ValueError, match="cannot run inside an XLA"):
        run(tf.constant(x))


@pytest.fixture
def policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize(
    "policy", ["float16", "mixed_float16", "bfloat16", "mixed_bfloat16"],
    indirect=True,
)
@pytest.mark.parametrize("name", list(LAYERS))
def test_every_dtype_policy_trains_and_predicts(policy, name):
    x, y = _data()
    model = _model(LAYERS[name])
    layer = model.layers[1]
    compute = policy.replace("mixed_", "")
    assert layer.compute_dtype == compute
    model.compile(keras.optimizers.SGD(0.05), "mse")
    before = model.predict(x, verbose=0)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    after = model.predict(x, verbose=0)
    assert np.isfinite(after).all()
    assert not np.array_equal(before, after)
    outputs = layer(tf.constant(x))
    assert keras.backend.standardize_dtype(outputs.dtype) == compute
    # The same net in float32 (weights cast): 16-bit rounding only.
    keras.config.set_dtype_policy("float32")
    reference = _model(LAYERS[name])
    reference.set_weights([w.astype("float32") for w in model.get_weights()])
    tolerance = 0.1 if "bfloat16" in policy else 0.02
    np.testing.assert_allclose(after, reference.predict(x, verbose=0),
                               atol=tolerance)
