"""The TensorFlow kernels of LayerNormLSTM and LayerNormGRU
(`_tf_recurrent_kernels`: the native ops of `keras_ln.layers._native`, and
the XLA kernels) against the generic loop they replace (forward
and gradients, masks, go_backwards, return modes, initial states), against
finite differences in float64, the conditions under which the layers take
them, and the native library's loading and errors."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln
from keras_ln.layers import _native
from keras_ln.layers import _tf_backend
from keras_ln.layers import _tf_recurrent_kernels as kernels

B, T, F, U = 3, 6, 4, 5

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow kernel"
)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _native_or_skip():
    if _native.ops() is None:
        # `make test` builds the library and sets KERAS_LN_REQUIRE_NATIVE:
        # there a missing library is a failure, not a skip.
        assert not os.environ.get("KERAS_LN_REQUIRE_NATIVE"), (
            _native.load_error()
        )
        pytest.skip(f"native ops not built: {_native.load_error()}")


@pytest.fixture(params=["native", "xla"])
def kernel_impl(request):
    """A layer's kernel: the native ops, or the XLA loops."""
    if request.param == "native":
        _native_or_skip()
    return request.param


@pytest.fixture
def no_library(monkeypatch):
    """The native library missing, as when it was not built."""
    monkeypatch.setattr(_native, "_loaded",
                        {"module": None, "error": "not built (test)"})


@pytest.fixture
def native():
    _native_or_skip()


# The kernels: each layer has the native ops and the XLA loops.
KERNELS = [("lstm", "native"), ("lstm", "xla"), ("gru", "native"),
           ("gru", "xla")]
LAYERS = {"lstm": keras_ln.LayerNormLSTM, "gru": keras_ln.LayerNormGRU}


def _use(impl):
    if impl == "native":
        _native_or_skip()


def _mask(kind, batch=B):
    if kind is None:
        return None
    mask = np.ones((batch, T), bool)
    if kind == "right":
        mask[0, 4:] = False
        mask[1, 2:] = False
    elif kind == "empty":
        # steps that mask every row, inside and at the end (the native
        # kernels skip their arithmetic), and a ragged row
        mask[:, 2] = False
        mask[:, 4:] = False
        mask[1, 0] = False
    else:
        mask[0, :3] = False
        mask[2, :1] = False
    return tf.constant(mask)


def _run(rng, runs, mask_kind, training=False, layer_class=None,
         batch=B, units=U, **layer_kwargs):
    """Outputs and gradients of one layer (the same weights, inputs and
    states, drawn in float64) for each `(dtype, use_kernel[, native
    shards])` of `runs`.
    """
    layer_class = layer_class or keras_ln.LayerNormLSTM
    probe = layer_class(units, dtype="float64")
    probe.build((None, T, F))
    weights = [w + 0.3 * rng.standard_normal(w.shape)
               for w in probe.get_weights()]
    x64 = rng.standard_normal((batch, T, F))
    n_states = 2 if layer_class is keras_ln.LayerNormLSTM else 1
    states64 = [rng.standard_normal((batch, units)) for _ in range(n_states)]
    mask = _mask(mask_kind, batch)
    results = []
    for dtype, use_kernel, *shards in runs:
        layer = layer_class(units, return_state=True, dtype=dtype,
                            use_kernel=use_kernel, **layer_kwargs)
        layer.build((None, T, F))
        layer.set_weights([w.astype(dtype) for w in weights])
        x = tf.constant(x64.astype(dtype))
        states = [tf.constant(s.astype(dtype)) for s in states64]
        previous = kernels.NATIVE_SHARDS
        kernels.NATIVE_SHARDS = shards[0] if shards else 0
        try:
            with tf.GradientTape() as tape:
                tape.watch([x, *states])
                outs = layer(x, initial_state=states, mask=mask,
                             training=training)
                loss = sum(
                    tf.reduce_sum(o * np.cos(np.arange(o.shape.num_elements())
                                             ).reshape(o.shape).astype(dtype))
                    for o in outs
                )
            grads = tape.gradient(
                loss, [x, *states] + layer.trainable_weights
            )
        finally:
            kernels.NATIVE_SHARDS = previous
        results.append(([o.numpy() for o in outs],
                        [g.numpy() for g in grads]))
    return results


def _run_both(rng, impl, dtype, mask_kind, **kwargs):
    """`_run` with the kernel `impl`, then the generic loop."""
    return _run(rng, [(dtype, impl), (dtype, False)], mask_kind, **kwargs)


@pytest.mark.parametrize(
    "mask_kind, go_backwards, return_sequences, zero_output",
    [
        (None, False, False, False),
        (None, True, True, False),
        ("right", False, True, False),
        ("right", True, False, True),
        ("left", False, True, True),
        ("left", True, True, False),
        ("left", False, False, False),
        ("right", True, True, True),
        ("empty", False, True, False),
        ("empty", True, True, True),
        ("empty", False, False, True),
    ],
)
@pytest.mark.parametrize("cell, impl", KERNELS)
def test_kernel_equals_generic_loop(rng, cell, impl, mask_kind,
                                    go_backwards, return_sequences,
                                    zero_output):
    _use(impl)
    layer_class = LAYERS[cell]
    (outs_k, grads_k), (outs_g, grads_g) = _run_both(
        rng, impl, "float64", mask_kind, layer_class=layer_class,
        go_backwards=go_backwards,
        return_sequences=return_sequences, zero_output_for_mask=zero_output,
    )
    # The native ops take the norms' epsilon in float64 (an attribute, as
    # they had, rounded it to float32 and moved results by up to ~1e-8).
    # The GRU's XLA kernel computes the generic loop's formulas (7e-15
    # measured); the LSTM's takes its row means as products.
    atol = 1e-5 if (cell, impl) == ("lstm", "xla") else 1e-10
    for a, b in zip(outs_k, outs_g):
        np.testing.assert_allclose(a, b, atol=atol)
    for a, b in zip(grads_k, grads_g):
        np.testing.assert_allclose(a, b, atol=atol)


CARRY_CASES = [(None, False, False, 0), ("right", True, True, 2), ("left", False, False, 2),
               ("empty", True, False, 0), ("empty", False, True, 2)]


@pytest.mark.parametrize("impl", ["native", "xla"])
@pytest.mark.parametrize("mask_kind, go_backwards, zero_output, shards", CARRY_CASES)
def test_kernel_carrying_the_normalized_state_equals_generic_loop(
        impl, mask_kind, go_backwards, zero_output, shards):
    """carry_normalized_cell=True (tensorflow-addons' cell) on either
    kernel: outputs, last states and the gradients of the input, the
    initial states and every weight equal the generic loop's in float64,
    with masks, go_backwards, zero_output_for_mask and (native) the batch
    in shards."""
    _use(impl)
    kwargs = dict(layer_class=keras_ln.LayerNormLSTM, go_backwards=go_backwards,
                  return_sequences=True, zero_output_for_mask=zero_output)
    (outs_k, grads_k), (outs_g, grads_g) = _run(
        np.random.default_rng(5), [("float64", impl, shards), ("float64", False)],
        mask_kind, carry_normalized_cell=True, **kwargs)
    # As test_kernel_equals_generic_loop: the XLA loops compute in another
    # order (row means as products), the native ops as the generic loop.
    tolerance = (dict(rtol=1e-10, atol=1e-12) if impl == "native"
                 else dict(rtol=1e-7, atol=1e-9))
    for a, b in zip(outs_k + grads_k, outs_g + grads_g):
        np.testing.assert_allclose(a, b, **tolerance)
    # The same data without the flag: the same kernel carries c, and the
    # last cell state differs (the normalized state against the raw one).
    (outs_raw, _), = _run(np.random.default_rng(5), [("float64", impl, shards)],
                          mask_kind, **kwargs)
    assert not np.allclose(outs_raw[-1], outs_k[-1], atol=1e-3)


def test_carrying_the_normalized_state_inside_xla(native, chosen):
    """Inside an XLA-compiled function carry_normalized_cell=True runs the
    XLA kernel, with the native ops' outputs outside it."""
    x = np.random.default_rng(0).random((2, 3, 4)).astype("float32")
    layer = keras_ln.LayerNormLSTM(3, carry_normalized_cell=True, return_state=True,
                                   name="in_xla")
    layer.build((None, 3, 4))
    expected = [t.numpy() for t in layer(x)]
    assert chosen["in_xla"] == "native"
    got = tf.function(lambda t: layer(t), jit_compile=True)(tf.constant(x))
    assert chosen["in_xla"] == "xla"
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-5)


@pytest.mark.parametrize("mask_kind, batch, units",
                         [(None, B, U), ("left", B, U), ("right", 37, 40)])
@pytest.mark.parametrize("cell, impl", KERNELS)
def test_kernel_float32_as_accurate_as_generic_loop(rng, cell, impl,
                                                    mask_kind, batch, units):
    # float32 kernel and generic loop, against the float64 generic loop;
    # (37, 40): full and partial column panels of the native products, and
    # the batch in shards.
    _use(impl)
    (outs_k, grads_k), (outs_g, grads_g), (outs_r, grads_r) = _run(
        rng, [("float32", impl, 2), ("float32", False), ("float64", False)],
        mask_kind, layer_class=LAYERS[cell], return_sequences=True,
        batch=batch, units=units,
    )
    for a, g, r in zip(outs_k + grads_k, outs_g + grads_g, outs_r + grads_r):
        scale = max(1.0, abs(r).max())
        generic_error = abs(g - r).max() / scale
        kernel_error = abs(a - r).max() / scale
        # Rounding in a different order: the kernel's error is of the size
        # of the generic loop's, and both are float32 rounding.
        assert generic_error < 2e-5
        assert kernel_error < max(2e-5, 3 * generic_error)


@pytest.mark.parametrize("mask_kind", [None, "right", "left", "empty"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_native_shards_compute_the_same(rng, native, cell, mask_kind):
    # The native ops split the batch into shards that run the loop
    # concurrently. Uneven shards (37 rows in 1, 2, 3 or 6 shards of whole
    # register tiles, some rows in partial tiles) give the outputs of one
    # shard exactly (a row's arithmetic does not depend on its shard), the
    # gradients up to the order of the sums over rows, and both those of
    # the generic loop.
    shard_counts = [1, 2, 3, 6]
    results = _run(
        rng, [("float64", "native", n) for n in shard_counts] + [
            ("float64", False)],
        mask_kind, layer_class=LAYERS[cell], return_sequences=True,
        batch=37, units=20,
    )
    (outs_1, grads_1), generic = results[0], results[-1]
    for outs, grads in results[1:-1]:
        for a, b in zip(outs, outs_1):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(grads, grads_1):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(outs_1 + grads_1, generic[0] + generic[1]):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_kernel_gradient_float64_finite_differences(rng, kernel_impl, masked):
    t, b, u = 4, 2, 3

    def arr(*shape, scale=0.5, offset=0.0):
        return tf.constant(offset + scale * rng.standard_normal(shape))

    x, w_in = arr(t, b, 2, scale=1.0), arr(2, 4 * u)
    gx, bx = arr(4 * u, offset=1.0), arr(4 * u)
    h0, c0 = arr(b, u), arr(b, u)
    U = arr(u, 4 * u)
    U = U - tf.reduce_mean(U, -1, keepdims=True)
    gr, gs, bs = arr(4 * u, offset=1.0), arr(u, offset=1.0), arr(u)
    mask = None
    if masked:
        m = np.ones((t, b, 1), bool)
        m[0, 0] = m[3, 1] = False
        mask = tf.constant(m)
    w = [arr(t, b, u, scale=1.0), arr(b, u, scale=1.0), arr(b, u, scale=1.0)]

    def loss(*args):
        outs = kernels.ln_lstm_recurrence(*args, mask=mask,
                                          implementation=kernel_impl)
        return sum(tf.reduce_sum(o * wi) for o, wi in zip(outs, w))

    theoretical, numerical = tf.test.compute_gradient(
        loss, [x, w_in, gx, bx, h0, c0, U, gr, gs, bs], delta=1e-6
    )
    for a, n in zip(theoretical, numerical):
        np.testing.assert_allclose(a, n, atol=1e-6)


@pytest.fixture
def chosen(monkeypatch):
    """The kernel each layer's call ran, by layer name: "native", "xla", or
    None (the generic loop)."""
    calls = {}
    original = _tf_backend.implementation

    def spy(layer, training, dtype):
        calls[layer.name] = None
        calls[layer.name] = original(layer, training, dtype)
        return calls[layer.name]

    monkeypatch.setattr(_tf_backend, "implementation", spy)
    return calls


def test_fast_path_taken_only_where_supported(native, chosen):
    x = np.random.default_rng(0).random((2, 3, 4)).astype("float32")
    cases = {
        "default": ({}, "native"),
        "rdrop_infer": ({"recurrent_dropout": 0.5}, "native"),
        "rdrop_train": ({"recurrent_dropout": 0.5}, None),
        "carry_norm": ({"carry_normalized_cell": True}, "native"),
        "carry_norm_generic": ({"carry_normalized_cell": True, "use_kernel": False}, None),
        "unroll": ({"unroll": True}, None),
        "relu": ({"activation": "relu"}, None),
        "f16": ({"dtype": "mixed_float16"}, None),
        "generic": ({"use_kernel": False}, None),
        "xla": ({"use_kernel": "xla"}, "xla"),
    }
    for name, (kwargs, expected) in cases.items():
        layer = keras_ln.LayerNormLSTM(3, name=name, **kwargs)
        layer(x, training=name.endswith("train"))
        assert chosen.get(name) == expected, name

@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
def test_gru_kernel_gradient_float64_finite_differences(rng, kernel_impl,
                                                        masked, zero_output):
    t, b, u = 4, 2, 3

    def arr(*shape, scale=0.5, offset=0.0):
        return tf.constant(offset + scale * rng.standard_normal(shape))

    x, w_in = arr(t, b, 2, scale=1.0), arr(2, 3 * u)
    gx, bx = arr(3 * u, offset=1.0), arr(3 * u)
    h0 = arr(b, u)
    U = arr(u, 3 * u)
    U = U - tf.reduce_mean(U, -1, keepdims=True)
    gr, off = arr(3 * u, offset=1.0), arr(3 * u)
    mask = None
    if masked:
        m = np.ones((t, b, 1), bool)
        m[0, 0] = m[2, 1] = m[3, 1] = False
        mask = tf.constant(m)
    w = [arr(t, b, u, scale=1.0), arr(b, u, scale=1.0)]

    def loss(*args):
        outs = kernels.ln_gru_recurrence(*args, mask=mask,
                                         zero_output=zero_output,
                                         implementation=kernel_impl)
        return sum(tf.reduce_sum(o * wi) for o, wi in zip(outs, w))

    theoretical, numerical = tf.test.compute_gradient(
        loss, [x, w_in, gx, bx, h0, U, gr, off], delta=1e-6
    )
    for a, n in zip(theoretical, numerical):
        np.testing.assert_allclose(a, n, atol=1e-6)


def test_gru_fast_path_taken_only_where_supported(native, chosen,
                                                  monkeypatch):
    x = np.random.default_rng(0).random((2, 3, 4)).astype("float32")
    cases = {
        "default": ({}, "native"),
        "no_bias": ({"use_bias": False}, "native"),
        "rdrop_infer": ({"recurrent_dropout": 0.5}, "native"),
        "rdrop_train": ({"recurrent_dropout": 0.5}, None),
        "unroll": ({"unroll": True}, None),
        "relu": ({"activation": "relu"}, None),
        "f16": ({"dtype": "mixed_float16"}, None),
        "generic": ({"use_kernel": False}, None),
        "xla": ({"use_kernel": "xla"}, "xla"),
    }
    for name, (kwargs, expected) in cases.items():
        layer = keras_ln.LayerNormGRU(3, name=name, **kwargs)
        layer(x, training=name.endswith("train"))
        assert chosen.get(name) == expected, name
    # Without the native library: the XLA kernel, same outputs.
    layer = keras_ln.LayerNormGRU(3, return_sequences=True, name="later")
    fast = layer(x).numpy()
    assert chosen["later"] == "native"
    monkeypatch.setattr(_native, "_loaded",
                        {"module": None, "error": "not built (test)"})
    np.testing.assert_allclose(layer(x).numpy(), fast, atol=1e-6)
    assert chosen["later"] == "xla"


def test_lstm_without_native_library_uses_xla_kernel(native, chosen,
                                                     monkeypatch):
    x = np.random.default_rng(1).random((2, 5, 4)).astype("float32")
    layer = keras_ln.LayerNormLSTM(3, return_sequences=True, name="lstm")
    fast = layer(x).numpy()
    assert chosen["lstm"] == "native"
    monkeypatch.setattr(_native, "_loaded",
                        {"module": None, "error": "not built (test)"})
    np.testing.assert_allclose(layer(x).numpy(), fast, atol=1e-6)
    assert chosen["lstm"] == "xla"


@pytest.mark.parametrize("layer_class", [keras_ln.LayerNormLSTM,
                                         keras_ln.LayerNormGRU])
def test_use_kernel_that_cannot_run_is_an_error(no_library, layer_class):
    x = np.zeros((2, 3, 4), "float32")
    with pytest.raises(ValueError, match=r"use_kernel='native' was specified"
                       r", but the native ops are not available \(not "
                       r"built \(test\)\).*use_kernel='auto'"):
        layer_class(3, use_kernel="native")(x)
    with pytest.raises(ValueError, match=r"use_kernel=True was specified, "
                       "but the kernels do not unroll"):
        layer_class(3, use_kernel=True, unroll=True)(x)
    # "auto" falls back to the generic loop.
    layer_class(3, unroll=True)(x)


@pytest.mark.parametrize("bad", ["cudnn", 1, None, "True"])
def test_use_kernel_is_validated(bad):
    with pytest.raises(ValueError, match=r"Expected `use_kernel` to be one "
                       rf"of 'auto', True, False, 'native' or 'xla'\. "
                       rf"Received: use_kernel={bad!r}"):
        keras_ln.LayerNormLSTM(3, use_kernel=bad)


@pytest.mark.parametrize("layer_class", [keras_ln.LayerNormLSTM,
                                         keras_ln.LayerNormGRU])
@pytest.mark.parametrize("use_kernel", ["auto", True, False, "native",
                                        "xla"])
def test_use_kernel_round_trips_through_config(layer_class, use_kernel):
    layer = layer_class(3, use_kernel=use_kernel)
    config = layer.get_config()
    assert config["use_kernel"] is use_kernel or config["use_kernel"] == (
        use_kernel)
    assert layer_class.from_config(config).use_kernel == use_kernel
    # keras' `jit_compile="auto"` asks every layer: only an explicit
    # choice of the native ops rules XLA out.
    assert layer.supports_jit == (use_kernel != "native")


def test_missing_library_reports_why(monkeypatch, tmp_path):
    monkeypatch.setattr(_native, "library_path",
                        lambda: str(tmp_path / "missing.so"))
    monkeypatch.setattr(_native, "_loaded", {})
    assert _native.ops() is None
    assert "missing.so not found" in _native.load_error()
    assert "python -m keras_ln.layers._native" in _native.load_error()


def test_library_name_tracks_tensorflow_and_source():
    path = os.path.basename(_native.library_path())
    assert path.startswith(f"_ln_rnn_ops-tf{tf.__version__}-")
    assert path.endswith(".so")


def test_native_ops_reject_bad_shapes(native):
    mod = _native.ops()
    x = tf.zeros((3, 2, 4))
    w = tf.zeros((4, 8))
    h0 = tf.zeros((2, 2))
    U = tf.zeros((2, 8))
    g8, g2 = tf.ones(8), tf.ones(2)
    none = tf.zeros([0], tf.bool)
    eps = tf.constant(1e-3)
    attrs = dict(masked=False, zero_output=False)

    def lstm(x=x, w=w, U=U, mask=none, gr=g8, masked=False, epsilon=eps):
        mod.keras_ln_lstm_forward(x, w, h0, h0, U, mask, g8, g8, gr, g2, g2,
                                  epsilon, **{**attrs, "masked": masked})

    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"kernel must be \(2, 8\), got \[3,8\]"):
        lstm(U=tf.zeros((3, 8)))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input kernel must be \(4, 8\), got \[4,6\]"):
        lstm(w=tf.zeros((4, 6)))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"sequence must be \(time, 2, features\)"):
        lstm(x=tf.zeros((3, 5, 4)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask must"):
        lstm(mask=tf.ones([5], tf.bool), masked=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="gr must be"):
        lstm(gr=tf.ones(5))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"epsilon must be a scalar, got \[2\]"):
        lstm(epsilon=tf.constant([1e-3, 1e-3]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"epsilon must be a scalar, got \[1\]"):
        lstm(epsilon=tf.constant([1e-3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="gr must be"):
        mod.keras_ln_gru_forward(x, tf.zeros((4, 6)), h0, tf.zeros((2, 6)),
                                 none, tf.ones(6), tf.ones(6), tf.ones(5),
                                 tf.ones(6), eps, **attrs)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"epsilon must be a scalar, got \[0\]"):
        mod.keras_ln_gru_forward(x, tf.zeros((4, 6)), h0, tf.zeros((2, 6)),
                                 none, tf.ones(6), tf.ones(6), tf.ones(6),
                                 tf.ones(6), tf.zeros([0]), **attrs)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="shards must be >= 0, got -1"):
        mod.keras_ln_lstm_forward(x, w, h0, h0, U, none, g8, g8, g8, g2, g2,
                                  eps, shards=-1, **attrs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_native_ops_skip_steps_that_mask_every_row(native, cell):
    """A time step that masks every row costs the native ops no recurrent
    product: the product they save for the backward (`rs`) is zeros there,
    and h_{t-1} @ U at the other steps (also on a row masked at a step with
    data); the states pass through the empty steps."""
    mod = _native.ops()
    rng = np.random.default_rng(5)
    steps, batch, features, u = 6, 3, 4, 2
    gates = 4 if cell == "lstm" else 3

    def c(*shape):
        return tf.constant(rng.standard_normal(shape))

    x, w, h0, c0, U = (c(steps, batch, features), c(features, gates * u),
                       c(batch, u), c(batch, u), c(u, gates * u))
    mask = np.ones((steps, batch), bool)
    mask[1] = False   # a step without data inside the sequences
    mask[4:] = False  # and after them
    mask[2, 0] = False
    ones = tf.ones(gates * u, tf.float64)
    attrs = dict(masked=True, zero_output=False)
    eps = tf.constant(1e-3, tf.float64)
    if cell == "lstm":
        out = mod.keras_ln_lstm_forward(x, w, h0, c0, U, tf.constant(mask), ones,
                                        ones, ones, ones[:u], ones[:u], eps, **attrs)
        rs, hs = out[3].numpy(), out[7].numpy()
    else:
        out = mod.keras_ln_gru_forward(x, w, h0, U, tf.constant(mask), ones,
                                       ones, ones, ones, eps, **attrs)
        rs, hs = out[2].numpy(), out[5].numpy()
    previous = np.concatenate([h0.numpy()[None], hs[:-1]])
    for t in range(steps):
        if mask[t].any():
            np.testing.assert_allclose(rs[t], previous[t] @ U.numpy(), rtol=1e-12)
            assert np.all(rs[t] != 0)
        else:
            assert np.all(rs[t] == 0)
            np.testing.assert_array_equal(hs[t], previous[t])


def test_native_build_cli_check():
    from keras_ln.layers._native.__main__ import main

    expected = 0 if _native.ops() is not None else 1
    assert main(["--check"]) == expected


def test_many_layer_shapes_log_no_retracing_warning():
    """Fused layers of seven widths, each at two sequence lengths and batch
    sizes, eagerly forward and backward: TensorFlow logs no "triggered
    tf.function retracing" (the control shows the handler sees it)."""
    import logging

    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    tf.get_logger().addHandler(handler)
    try:
        control = tf.function(lambda t: t + 1)
        for n in range(6):
            control(tf.zeros([n]))
        assert any("retracing" in m for m in messages)
        messages.clear()
        rng = np.random.default_rng(0)
        for i in range(7):
            for j in range(2):
                x = tf.constant(rng.random((2 + i + j, 3 + i + j, 4 + i)),
                                "float32")
                for layer in (keras_ln.LayerNormLSTM(3 + i),
                              keras_ln.LayerNormLSTM(3 + i, use_kernel="xla"),
                              keras_ln.LayerNormGRU(3 + i)):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        y = layer(x)
                    tape.gradient(y, x)
    finally:
        tf.get_logger().removeHandler(handler)
    assert not [m for m in messages if "retracing" in m]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_native_recurrent_examples_do_not_depend_on_their_batch(native, cell):
    """A layer-normalized LSTM's or GRU's output sequence for an example,
    and the input gradient of that example, are the same bits alone and in
    any batch (10 units: rows of 40 and 30 float32 values, at alternating
    alignments)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(13, 6, 3)).astype("float32")
    layer = LAYERS[cell](10, return_sequences=True)
    layer.build(x.shape)

    def run(rows):
        xs = tf.constant(x[rows])
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = layer(xs)
            loss = tf.reduce_sum(y * y)
        return y.numpy(), tape.gradient(loss, xs).numpy()

    y, dx = run(slice(None))
    for rows in (slice(5, 6), slice(3, 10), slice(1, 13)):
        y_part, dx_part = run(rows)
        np.testing.assert_array_equal(y_part, y[rows])
        np.testing.assert_array_equal(dx_part, dx[rows])
