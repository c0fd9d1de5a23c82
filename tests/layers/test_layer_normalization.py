"""keras_ln.LayerNormalization against keras' layer, float64 NumPy and finite differences."""

import contextlib
import logging
import os
import types

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln
from keras_ln.layers import _tf_backend
from keras_ln.layers._layer_norm import layer_norm_reference

# (input shape, axis): 2-D..4-D inputs, single, positive, negative and multiple axes.
CASES = [
    ((6, 16), -1),
    ((6, 16), 1),
    ((4, 5, 8), -1),
    ((4, 5, 8), 1),
    ((4, 5, 8), [1, 2]),
    ((4, 5, 8), [-1, -2]),
    ((3, 4, 5, 6), -1),
    ((3, 4, 5, 6), [1, 2]),
    ((3, 4, 5, 6), [-1, -3]),
    ((3, 4, 5, 6), [1, 2, 3]),
]


@contextlib.contextmanager
def fast_path(enabled):
    """TensorFlow's fused layer norm (True: the native ops float32 and
    float64 inputs take outside XLA; "plain": the TensorFlow ops small
    inputs take without the native library; "xla": the XLA-compiled kernels
    larger inputs take there), or the `keras.ops` reference in its place
    (False)."""
    from keras_ln.layers import _tf_layer_norm

    with pytest.MonkeyPatch.context() as patch:
        if not enabled:
            patch.setattr(_tf_backend, "layer_norm", layer_norm_reference)
        if enabled == "xla":
            patch.setattr(_tf_layer_norm, "PLAIN_MAX_ELEMENTS", -1)
        if enabled in ("plain", "xla"):
            patch.setattr(_tf_layer_norm, "_native", types.SimpleNamespace(ops=lambda: None))
        yield


def numpy_layer_norm(x, gamma, beta, axis, epsilon):
    """Float64 reference; gamma/beta span the sorted normalized axes."""
    x = np.asarray(x, dtype=np.float64)
    axes = sorted(a % x.ndim for a in ([axis] if isinstance(axis, int) else axis))
    bshape = [x.shape[d] if d in axes else 1 for d in range(x.ndim)]
    mean = x.mean(axis=tuple(axes), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=tuple(axes), keepdims=True)
    y = (x - mean) / np.sqrt(var + epsilon)
    return y * np.reshape(gamma, bshape) + np.reshape(beta, bshape)


def random_pair(shape, axis, seed=0, **kwargs):
    """A keras_ln layer and a keras layer with the same random gamma/beta."""
    ours = keras_ln.LayerNormalization(axis=axis, **kwargs)
    theirs = keras.layers.LayerNormalization(axis=axis, **kwargs)
    ours.build(shape)
    theirs.build(shape)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ours.weights]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


def to_np(t):
    return keras.ops.convert_to_numpy(t)


def outputs_and_gradients(layer, x, dy, use_fast_path):
    """[y, dx, dgamma, dbeta] as NumPy arrays, for upstream gradient `dy`."""
    with fast_path(use_fast_path), tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    g = tape.gradient(y, [x, layer.gamma.value, layer.beta.value], output_gradients=dy)
    return [to_np(y)] + [to_np(t) for t in g]


@pytest.mark.parametrize("use_fast_path", [True, "plain", "xla", False], ids=["native", "plain", "xla", "ops"])
@pytest.mark.parametrize("shape,axis", CASES)
def test_forward_matches_keras_and_float64(shape, axis, use_fast_path):
    x = np.random.default_rng(1).normal(size=shape).astype("float32") * 2 + 0.5
    ours, theirs = random_pair(shape, axis)
    with fast_path(use_fast_path):
        y = to_np(ours(x))
    np.testing.assert_allclose(y, to_np(theirs(x)), atol=1e-5, rtol=1e-5)
    ref = numpy_layer_norm(x, to_np(ours.gamma), to_np(ours.beta), axis, 1e-3)
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-5)
    assert y.dtype == np.float32


@pytest.mark.parametrize("use_fast_path", [True, "plain", "xla", False], ids=["native", "plain", "xla", "ops"])
@pytest.mark.parametrize("shape,axis", [CASES[0], CASES[3], CASES[4], CASES[8]])
def test_gradients_match_keras(shape, axis, use_fast_path):
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    dy = tf.constant(rng.normal(size=shape).astype("float32"))
    ours, theirs = random_pair(shape, axis)

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        g = tape.gradient(y, [x, layer.gamma.value, layer.beta.value], output_gradients=dy)
        return [to_np(t) for t in g]

    with fast_path(use_fast_path):
        ours_grads = grads(ours)
    for got, want, name in zip(ours_grads, grads(theirs), ["x", "gamma", "beta"]):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("use_fast_path", [True, "plain", "xla", False], ids=["native", "plain", "xla", "ops"])
@pytest.mark.parametrize("shape,axis", [((3, 5), -1), ((2, 3, 4), [1, 2]), ((2, 3, 4), 1)])
def test_gradients_match_finite_differences(shape, axis, use_fast_path):
    """Central differences in float64 of a random linear functional of the output."""
    rng = np.random.default_rng(3)
    x0 = rng.normal(size=shape)
    w = rng.normal(size=shape)
    layer = keras_ln.LayerNormalization(axis=axis, epsilon=1e-2, dtype="float64")
    layer.build(shape)
    layer.set_weights([rng.normal(size=v.shape) for v in layer.weights])
    gamma0, beta0 = [to_np(v) for v in layer.weights]

    def loss(x, gamma, beta):
        return float(np.sum(numpy_layer_norm(x, gamma, beta, axis, 1e-2) * w))

    xt = tf.constant(x0)
    with fast_path(use_fast_path):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = tf.reduce_sum(layer(xt) * w)
        got = tape.gradient(out, [xt, layer.gamma.value, layer.beta.value])
        # The layer's float64 forward agrees with the reference to round-off.
        np.testing.assert_allclose(float(out), loss(x0, gamma0, beta0), rtol=1e-12)
    h = 1e-6
    for got_g, base, which in zip(got, [x0, gamma0, beta0], range(3)):
        numeric = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            args_p = [x0.copy(), gamma0.copy(), beta0.copy()]
            args_m = [x0.copy(), gamma0.copy(), beta0.copy()]
            args_p[which][idx] += h
            args_m[which][idx] -= h
            numeric[idx] = (loss(*args_p) - loss(*args_m)) / (2 * h)
        np.testing.assert_allclose(to_np(got_g), numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,axis", CASES)
def test_fast_path_equals_ops_path(shape, axis):
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=shape).astype("float32") * 5 + 3)
    dy = tf.constant(rng.normal(size=shape).astype("float32"))
    layer, _ = random_pair(shape, axis)
    for fast, slow in zip(*(outputs_and_gradients(layer, x, dy, e) for e in (True, False))):
        np.testing.assert_allclose(fast, slow, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("use_fast_path", [True, "plain", "xla", False], ids=["native", "plain", "xla", "ops"])
def test_large_offset_near_constant_and_constant_rows(use_fast_path):
    rng = np.random.default_rng(5)
    offset = (rng.normal(size=(4, 64)) + 1e4).astype("float32")
    near_constant = (3.0 + 1e-6 * rng.normal(size=(4, 64))).astype("float32")
    constant = np.full((4, 64), 7.5, dtype="float32")
    x = np.concatenate([offset, near_constant, constant])
    layer, _ = random_pair(x.shape, -1)
    with fast_path(use_fast_path):
        y = to_np(layer(x))
    assert np.all(np.isfinite(y))
    ref = numpy_layer_norm(x, to_np(layer.gamma), to_np(layer.beta), -1, 1e-3)
    # The float32 statistics are as good as float64 ones on offset inputs.
    np.testing.assert_allclose(y, ref, atol=2e-6, rtol=1e-5)
    # All-equal rows normalize to exactly beta.
    np.testing.assert_array_equal(y[8:], np.broadcast_to(to_np(layer.beta), (4, 64)))


@pytest.mark.parametrize("use_fast_path", [True, "plain", "xla", False], ids=["native", "plain", "xla", "ops"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, use_fast_path):
    keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(6)
    # Values spread over float16's whole range: squares overflow float16.
    x = (rng.uniform(-6e4, 6e4, size=(8, 32))).astype("float32")
    x[0] = 6.5e4
    x[1, ::2], x[1, 1::2] = -6.5e4, 6.5e4
    layer = keras_ln.LayerNormalization()
    inputs = keras.ops.cast(x, layer.compute_dtype)
    with fast_path(use_fast_path), tf.GradientTape() as tape:
        tape.watch(inputs)
        y = layer(inputs)
        loss = keras.ops.sum(keras.ops.cast(y, "float32"))
    grad = tape.gradient(loss, [inputs, layer.gamma.value])
    compute_dtype = policy.split("_")[1]
    assert layer.gamma.dtype == "float32"
    assert keras.backend.standardize_dtype(y.dtype) == compute_dtype
    y32 = to_np(keras.ops.cast(y, "float32"))
    assert np.all(np.isfinite(y32))
    assert all(np.all(np.isfinite(to_np(keras.ops.cast(g, "float32")))) for g in grad)
    ref = numpy_layer_norm(to_np(keras.ops.cast(inputs, "float32")), np.ones(32), np.zeros(32), -1, 1e-3)
    tol = 1e-2 if compute_dtype == "float16" else 5e-2
    np.testing.assert_allclose(y32, ref, atol=tol, rtol=tol)


def test_configs_build_each_other():
    ours = keras_ln.LayerNormalization(
        axis=[1, 2], epsilon=1e-5, center=False,
        gamma_initializer="glorot_uniform", gamma_regularizer="l2",
        beta_constraint="non_neg", name="ln",
    )
    config = ours.get_config()
    theirs = keras.layers.LayerNormalization.from_config(config)
    assert theirs.get_config() == config
    back = keras_ln.LayerNormalization.from_config(keras.layers.LayerNormalization(axis=-1).get_config())
    assert back.axis == -1 and back.epsilon == 1e-3
    assert set(config) >= set(keras.layers.LayerNormalization().get_config())
    assert keras.saving.get_registered_name(keras_ln.LayerNormalization) == "keras_ln>LayerNormalization"


def test_weights_load_from_keras_layer_in_a_model():
    """`set_weights` moves a keras model's weights into the same model with ours."""
    def model(norm):
        return keras.Sequential([
            keras.Input((5, 8)), keras.layers.Dense(8), norm(axis=[1, 2]),
            keras.layers.Flatten(), keras.layers.Dense(1),
        ])

    theirs, ours = model(keras.layers.LayerNormalization), model(keras_ln.LayerNormalization)
    rng = np.random.default_rng(4)
    theirs.set_weights([rng.normal(size=w.shape).astype("float32") for w in theirs.weights])
    ours.set_weights(theirs.get_weights())
    assert [w.path.split("/")[-1] for w in ours.layers[1].weights] == ["gamma", "beta"]
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    x = rng.normal(size=(6, 5, 8)).astype("float32")
    np.testing.assert_allclose(to_np(ours(x)), to_np(theirs(x)), atol=1e-5, rtol=1e-5)


def _models():
    def sequential():
        return keras.Sequential([
            keras.Input((5, 8)), keras.layers.Dense(8), keras_ln.LayerNormalization(axis=[1, 2]),
            keras.layers.Flatten(), keras.layers.Dense(1),
        ])

    def functional():
        inp = keras.Input((5, 8))
        h = keras_ln.LayerNormalization()(keras.layers.Dense(8)(inp))
        return keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(h)))

    class Subclassed(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(8)
            self.norm = keras_ln.LayerNormalization()
            self.flat = keras.layers.Flatten()
            self.out = keras.layers.Dense(1)

        def call(self, x):
            return self.out(self.flat(self.norm(self.dense(x))))

    return {"sequential": sequential, "functional": functional, "subclassed": Subclassed}


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_models_train_and_save(kind, tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 5, 8)).astype("float32")
    y = (x.sum(axis=(1, 2)) > 0).astype("float32")[:, None]
    model = _models()[kind]()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    if kind == "subclassed":
        # A subclassed model round-trips through its weights file.
        path = tmp_path / "model.weights.h5"
        model.save_weights(path)
        fresh = _models()[kind]()
        fresh(x[:1])
        fresh.load_weights(path)
        np.testing.assert_array_equal(to_np(fresh(x)), to_np(model(x)))
        return
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert any(isinstance(layer, keras_ln.LayerNormalization) for layer in loaded.layers)
    np.testing.assert_array_equal(to_np(loaded(x)), to_np(model(x)))


def test_trains_inside_an_xla_compiled_step():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = x @ rng.normal(size=(12, 1)).astype("float32")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16), keras_ln.LayerNormalization(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=True)
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_time_distributed_and_mask_passthrough():
    tokens = np.array([[3, 4, 0, 0], [5, 0, 0, 0]])
    inp = keras.Input((4,), dtype="int32")
    emb = keras.layers.Embedding(10, 6, mask_zero=True)(inp)
    normed = keras_ln.LayerNormalization()(emb)
    distributed = keras.layers.TimeDistributed(keras_ln.LayerNormalization())(normed)
    pooled = keras.layers.GlobalAveragePooling1D()(distributed)  # uses the mask
    model = keras.Model(inp, [distributed, pooled])
    seq, mean = [to_np(t) for t in model(tokens)]
    # The mask reached the pooling: padded steps are left out of the average.
    np.testing.assert_allclose(mean[0], seq[0, :2].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(mean[1], seq[1, 0], atol=1e-6)
    layer = keras_ln.LayerNormalization()
    mask = keras.ops.convert_to_tensor([[True, False]])
    assert layer.compute_mask(np.zeros((1, 2, 3)), mask) is mask
    np.testing.assert_allclose(seq.mean(-1), 0, atol=1e-5)


@pytest.mark.parametrize("shape,axis", CASES[:6])
def test_compute_output_shape(shape, axis):
    layer = keras_ln.LayerNormalization(axis=axis)
    assert layer.compute_output_shape((None,) + shape[1:]) == (None,) + shape[1:]
    out = layer(keras.Input(shape[1:]))
    assert tuple(out.shape) == (None,) + shape[1:]


@pytest.mark.parametrize(
    "kwargs,shape,error,match",
    [
        ({"axis": 3}, (2, 3, 4), ValueError, r"axis.*Received: axis=3"),
        ({"axis": [-4]}, (2, 3, 4), ValueError, r"axis.*Received: axis=\[-4\]"),
        ({"axis": [1, -2]}, (2, 3, 4), ValueError, r"distinct.*Received: axis=\[1, -2\]"),
    ],
)
def test_bad_axis(kwargs, shape, error, match):
    layer = keras_ln.LayerNormalization(**kwargs)
    with pytest.raises(error, match=match):
        layer(np.zeros(shape, "float32"))
    with pytest.raises(error, match=match):
        keras_ln.LayerNormalization(**kwargs).compute_output_shape(shape)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"epsilon": 0.0}, ValueError, r"`epsilon` to be > 0. Received: epsilon=0.0"),
        ({"epsilon": -1e-3}, ValueError, r"epsilon=-0.001"),
        ({"epsilon": "small"}, TypeError, r"epsilon='small'"),
        ({"axis": 1.5}, TypeError, r"`axis`.*Received: axis=1.5"),
        ({"axis": [1, "2"]}, TypeError, r"axis=\[1, '2'\]"),
        ({"rms_scaling": True}, ValueError, r"rms_scaling"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_ln.LayerNormalization(**kwargs)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match=r"floating-point.*Received: inputs.dtype=int32"):
        keras_ln.LayerNormalization()(np.arange(12, dtype="int32").reshape(3, 4))


def test_unknown_normalized_dimension_is_rejected():
    with pytest.raises(ValueError, match="known size"):
        keras_ln.LayerNormalization(axis=1)(keras.Input((None, 4)))


def test_row_buckets_bound_padding_and_recompilation():
    from keras_ln.layers._tf_layer_norm import bucket_size

    rows = np.arange(0, 5000)
    buckets = to_np(bucket_size(tf.constant(rows)))
    assert np.all(buckets >= rows)
    assert np.all(np.diff(buckets) >= 0)
    big = rows > 64
    assert np.all(buckets[big] <= 1.25 * rows[big])  # at most a quarter padding
    assert np.all(buckets[rows <= 64] == 64)
    for p in (64, 128, 1024, 4096):
        assert int(bucket_size(tf.constant(p))) == p  # no padding at powers of two
    # 5000 row counts share a few dozen compiled shapes.
    assert len(set(buckets)) < 40
    # a row count known when tracing gets the same bucket, computed in Python
    from keras_ln.layers._tf_layer_norm import static_bucket_size

    assert [static_bucket_size(r) for r in rows] == buckets.tolist()


@pytest.mark.parametrize("shape", [(256, 64), (100, 64), (4, 5, 64), (2, 64, 3)])
def test_static_and_dynamic_shapes_give_the_same_numbers(shape):
    """Inside a tf.function the rows may be known when tracing (no padding
    ops where the count is a bucket size) or not: outputs and gradients agree."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    dy = tf.constant(rng.normal(size=shape).astype("float32"))
    axis = -1 if shape[-1] == 64 else 1
    layer = keras_ln.LayerNormalization(axis=axis)
    layer.build(shape)

    def run(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = layer(t)
        return [y] + tape.gradient(y, [t, layer.gamma, layer.beta], output_gradients=dy)

    static = tf.function(run, autograph=False)(x)
    spec = tf.TensorSpec([None] + list(shape[1:]), tf.float32)
    dynamic = tf.function(run, input_signature=[spec], autograph=False)(x)
    # static shapes this small take the plain ops, free ones the XLA kernels: rounding apart
    for a, b in zip(static, dynamic):
        np.testing.assert_allclose(to_np(a), to_np(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 65, 70, 129])
def test_padded_rows_do_not_leak_into_outputs_or_gradients(batch):
    rng = np.random.default_rng(9)
    shape = (batch, 3, 8)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    dy = tf.constant(rng.normal(size=shape).astype("float32"))
    layer, _ = random_pair(shape, -1)
    for fast, slow in zip(*(outputs_and_gradients(layer, x, dy, e) for e in (True, False))):
        assert fast.shape == slow.shape
        np.testing.assert_allclose(fast, slow, atol=5e-6, rtol=1e-5)


@contextlib.contextmanager
def tensorflow_warnings():
    """The messages TensorFlow logs at WARNING or above while the block runs."""
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = tf.get_logger()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def test_differently_shaped_layers_log_no_retracing_warning():
    """Eight new configurations, called eagerly forward and backward: no TF warning.

    The controls show that the handler sees TensorFlow's warning when the same
    code is retraced five times, so the assertion can fail, and that the fix
    silences only the false alarm.
    """
    from keras_ln.layers import _tf_layer_norm

    def retraced_in_a_loop():
        return tf.function(lambda t: t + 1)

    with tensorflow_warnings() as control:
        for n in range(5):
            retraced_in_a_loop()(tf.zeros([n]))
    assert any("triggered tf.function retracing" in m for m in control)
    # A compiled kernel that really retraces on every call is still reported.
    add = _tf_layer_norm._compiled(lambda t, k: t + k)
    with tensorflow_warnings() as control:
        for k in range(5):
            add(tf.zeros([2]), k)
    assert any("triggered tf.function retracing" in m for m in control)

    misses = _tf_layer_norm._kernels.cache_info().misses
    rng = np.random.default_rng(11)
    # The XLA kernels: without the native ops (which float32 takes where
    # they are built), on inputs above PLAIN_MAX_ELEMENTS.
    with tensorflow_warnings() as messages, fast_path("xla"):
        for features in range(41, 49):  # sizes no other test uses: new kernels
            x = tf.constant(rng.normal(size=(1700, features)).astype("float32"))
            layer = keras_ln.LayerNormalization()
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            tape.gradient(y, [x] + layer.trainable_weights)
    assert _tf_layer_norm._kernels.cache_info().misses == misses + 8
    assert not [m for m in messages if "retracing" in m]


# Saved models. keras rebuilds the class a `.keras` file records: its own layer by
# module (`keras.layers`), keras_ln's by registered name ("keras_ln>LayerNormalization").
# These tests check what the README says about switching between the two.

def _saved_model(norm, path, seed=5):
    """A functional model with `norm` at the top and inside a nested Sequential."""
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), norm()], name="inner")
    inp = keras.Input((5, 8))
    h = norm(axis=[1, 2])(keras.layers.Dense(8)(inp))
    h = inner(keras.layers.Dense(8)(keras.layers.Flatten()(h)))
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.weights])
    model.save(path)
    return model, rng.normal(size=(6, 5, 8)).astype("float32")


def _norm_classes(model):
    return [type(layer) for layer in model._flatten_layers() if "LayerNormalization" in type(layer).__name__]


def _swapped(model, swap):
    """The README's recipe: clone with the other class, then copy the weights."""
    def clone(layer):
        return swap.get(type(layer), type(layer)).from_config(layer.get_config())

    converted = keras.models.clone_model(model, clone_function=clone, recursive=True)
    converted.set_weights(model.get_weights())
    return converted


def test_keras_file_loads_as_keras_layer_and_clone_model_swaps_it(tmp_path):
    model, x = _saved_model(keras.layers.LayerNormalization, tmp_path / "keras.keras")
    # custom_objects does not reach keras' built-in layers, under either name.
    for name in ("LayerNormalization", "keras.layers.LayerNormalization"):
        loaded = keras.saving.load_model(
            tmp_path / "keras.keras", custom_objects={name: keras_ln.LayerNormalization}
        )
        assert _norm_classes(loaded) == [keras.layers.LayerNormalization] * 2
    with keras.saving.custom_object_scope({"LayerNormalization": keras_ln.LayerNormalization}):
        loaded = keras.saving.load_model(tmp_path / "keras.keras")
    assert _norm_classes(loaded) == [keras.layers.LayerNormalization] * 2
    converted = _swapped(loaded, {keras.layers.LayerNormalization: keras_ln.LayerNormalization})
    assert _norm_classes(converted) == [keras_ln.LayerNormalization] * 2
    for a, b in zip(converted.weights, model.weights):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    np.testing.assert_allclose(to_np(converted(x)), to_np(model(x)), atol=1e-5, rtol=1e-5)
    converted.save(tmp_path / "ours.keras")
    again = keras.saving.load_model(tmp_path / "ours.keras")
    assert _norm_classes(again) == [keras_ln.LayerNormalization] * 2
    np.testing.assert_array_equal(to_np(again(x)), to_np(converted(x)))


def test_clone_model_recipe_leaves_a_wrapped_layer_alone():
    wrapped = keras.Sequential([
        keras.Input((5, 8)), keras.layers.TimeDistributed(keras.layers.LayerNormalization()),
    ])
    converted = _swapped(wrapped, {keras.layers.LayerNormalization: keras_ln.LayerNormalization})
    assert _norm_classes(converted) == [keras.layers.LayerNormalization]


def test_keras_ln_file_loads_as_keras_ln_layer_where_keras_ln_is_imported(tmp_path):
    model, x = _saved_model(keras_ln.LayerNormalization, tmp_path / "ours.keras")
    # Once keras_ln is imported, its registered class wins over custom_objects.
    loaded = keras.saving.load_model(
        tmp_path / "ours.keras",
        custom_objects={"keras_ln>LayerNormalization": keras.layers.LayerNormalization},
    )
    assert _norm_classes(loaded) == [keras_ln.LayerNormalization] * 2
    np.testing.assert_array_equal(to_np(loaded(x)), to_np(model(x)))
    converted = _swapped(loaded, {keras_ln.LayerNormalization: keras.layers.LayerNormalization})
    assert _norm_classes(converted) == [keras.layers.LayerNormalization] * 2
    np.testing.assert_allclose(to_np(converted(x)), to_np(model(x)), atol=1e-5, rtol=1e-5)


_LOAD_WITHOUT_KERAS_LN = """
import json, sys
import numpy as np, keras

path, out = sys.argv[1], sys.argv[2]
x = np.load(out + "/x.npy")
assert "keras_ln" not in sys.modules
result = {}
try:
    keras.saving.load_model(path)
except Exception as e:
    result["error"] = [type(e).__name__, str(e)]
model = keras.saving.load_model(
    path, custom_objects={"keras_ln>LayerNormalization": keras.layers.LayerNormalization})
assert "keras_ln" not in sys.modules
result["custom_objects"] = [
    f"{type(l).__module__}.{type(l).__name__}" for l in model._flatten_layers()
    if "LayerNormalization" in type(l).__name__]
np.save(out + "/y_custom_objects.npy", keras.ops.convert_to_numpy(model(x)))
import keras_ln
model = keras.saving.load_model(path)
result["imported"] = [
    f"{type(l).__module__}.{type(l).__name__}" for l in model._flatten_layers()
    if "LayerNormalization" in type(l).__name__]
np.save(out + "/y_imported.npy", keras.ops.convert_to_numpy(model(x)))
print(json.dumps(result))
"""


def test_keras_ln_file_in_a_process_without_keras_ln(tmp_path):
    """Without `import keras_ln`: keras' TypeError; custom_objects by registered name works."""
    import json
    import os
    import subprocess
    import sys

    model, x = _saved_model(keras_ln.LayerNormalization, tmp_path / "ours.keras")
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_KERAS_LN, str(tmp_path / "ours.keras"), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    kind, message = result["error"]
    assert kind == "TypeError"
    assert "Could not locate class 'LayerNormalization'" in message
    assert "<class 'keras.src.models.functional.Functional'> could not be deserialized properly" in message
    assert "'registered_name': 'keras_ln>LayerNormalization'" in message
    keras_class = "keras.src.layers.normalization.layer_normalization.LayerNormalization"
    assert result["custom_objects"] == [keras_class] * 2
    np.testing.assert_allclose(
        np.load(tmp_path / "y_custom_objects.npy"), to_np(model(x)), atol=1e-5, rtol=1e-5
    )
    assert result["imported"] == ["keras_ln.layers.layer_normalization.LayerNormalization"] * 2
    np.testing.assert_allclose(np.load(tmp_path / "y_imported.npy"), to_np(model(x)), atol=1e-6, rtol=1e-6)


def test_float_inputs_take_the_native_ops_outside_xla(monkeypatch):
    """Which pass an input runs: the native ops in eager and graph mode,
    small or large, with its rows known when tracing or not; inside XLA
    (where no custom op runs) `_kernels`' formulas, unpadded; a float16
    input (mixed precision) the plain ops when small, the XLA kernels when
    large or of unknown rows."""
    from keras_ln.layers import _native
    from keras_ln.layers import _tf_layer_norm

    if _native.ops() is None:
        assert not os.environ.get("KERAS_LN_REQUIRE_NATIVE"), _native.load_error()
        pytest.skip(f"native ops not built: {_native.load_error()}")
    chosen = []
    original = _tf_layer_norm._op

    def spy(*args):
        plain, native, xla = args[-3:]
        chosen.append("native" if native else "plain" if plain else "xla" if xla else "compiled")
        return original(*args)

    monkeypatch.setattr(_tf_layer_norm, "_op", spy)
    # An epsilon of its own: this configuration is first made in a graph,
    # then used in another graph and eagerly.
    layer = keras_ln.LayerNormalization(epsilon=0.00123)
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 16)), tf.float32)
    graph = tf.function(layer)(x)
    graph_again = tf.function(lambda t: layer(t))(x)
    eager = layer(x)
    assert chosen and set(chosen) == {"native"}
    chosen.clear()
    xla = tf.function(layer, jit_compile=True)(x)
    assert chosen and set(chosen) == {"xla"}
    np.testing.assert_allclose(graph, eager, rtol=0, atol=0)
    np.testing.assert_allclose(graph_again, eager, rtol=0, atol=0)
    np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-6)
    chosen.clear()
    large = tf.constant(np.random.default_rng(1).normal(size=(5000, 16)), tf.float32)
    free_rows = tf.function(layer, input_signature=[tf.TensorSpec([None, 16], tf.float32)])
    np.testing.assert_allclose(free_rows(x), eager, rtol=0, atol=0)
    np.testing.assert_allclose(free_rows(large)[:8], layer(large[:8]), rtol=0, atol=0)
    assert large.shape.num_elements() > _tf_layer_norm.PLAIN_MAX_ELEMENTS
    layer(large)
    assert chosen and set(chosen) == {"native"}
    chosen.clear()
    half = keras_ln.LayerNormalization(dtype="mixed_float16", epsilon=0.00123)
    half(tf.cast(x, tf.float16))
    half(tf.cast(large, tf.float16))
    tf.function(half, input_signature=[tf.TensorSpec([None, 16], tf.float16)])(tf.cast(x, tf.float16))
    assert chosen == ["plain", "compiled", "compiled"]
