"""The TensorFlow kernel of LayerNormLSTM (`_tf_recurrent_kernels`) against
the generic loop it replaces (forward and gradients, masks, go_backwards,
return modes, initial states), against finite differences in float64, and
the conditions under which the layer takes it."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln
from keras_ln.layers import _tf_recurrent_kernels as kernels
from keras_ln.layers import layer_norm_lstm

B, T, F, U = 3, 6, 4, 5

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow kernel"
)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _mask(kind):
    if kind is None:
        return None
    mask = np.ones((B, T), bool)
    if kind == "right":
        mask[0, 4:] = False
        mask[1, 2:] = False
    else:
        mask[0, :3] = False
        mask[2, :1] = False
    return tf.constant(mask)


def _run_both(rng, dtype, mask_kind, training=False, **layer_kwargs):
    """Outputs and gradients of one layer with the kernel on, then off."""
    layer = keras_ln.LayerNormLSTM(U, return_state=True, dtype=dtype,
                                   **layer_kwargs)
    layer.build((None, T, F))
    layer.set_weights([
        w + 0.3 * rng.standard_normal(w.shape).astype(dtype)
        for w in layer.get_weights()
    ])
    x = tf.constant(rng.standard_normal((B, T, F)).astype(dtype))
    h0 = tf.constant(rng.standard_normal((B, U)).astype(dtype))
    c0 = tf.constant(rng.standard_normal((B, U)).astype(dtype))
    mask = _mask(mask_kind)
    results = []
    for enabled in (True, False):
        previous, kernels.ENABLED = kernels.ENABLED, enabled
        try:
            with tf.GradientTape() as tape:
                tape.watch([x, h0, c0])
                outs = layer(x, initial_state=[h0, c0], mask=mask,
                             training=training)
                loss = sum(
                    tf.reduce_sum(o * np.cos(np.arange(o.shape.num_elements())
                                             ).reshape(o.shape).astype(dtype))
                    for o in outs
                )
            grads = tape.gradient(loss, [x, h0, c0] + layer.trainable_weights)
        finally:
            kernels.ENABLED = previous
        results.append(([o.numpy() for o in outs],
                        [g.numpy() for g in grads]))
    return results


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
    ],
)
def test_kernel_equals_generic_loop(rng, mask_kind, go_backwards,
                                    return_sequences, zero_output):
    (outs_k, grads_k), (outs_g, grads_g) = _run_both(
        rng, "float64", mask_kind, go_backwards=go_backwards,
        return_sequences=return_sequences, zero_output_for_mask=zero_output,
    )
    for a, b in zip(outs_k, outs_g):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(grads_k, grads_g):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("mask_kind", [None, "left"])
def test_kernel_equals_generic_loop_float32(rng, mask_kind):
    (outs_k, grads_k), (outs_g, grads_g) = _run_both(
        rng, "float32", mask_kind, return_sequences=True
    )
    for a, b in zip(outs_k, outs_g):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(grads_k, grads_g):
        # float32 rounding in different orders: relative to the largest.
        np.testing.assert_allclose(a, b, atol=1e-5 * max(1, abs(b).max()))


@pytest.mark.parametrize("masked", [False, True])
def test_kernel_gradient_float64_finite_differences(rng, masked):
    t, b, u = 4, 2, 3

    def arr(*shape, scale=0.5, offset=0.0):
        return tf.constant(offset + scale * rng.standard_normal(shape))

    xp, h0, c0 = arr(t, b, 4 * u), arr(b, u), arr(b, u)
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
        outs = kernels.ln_lstm_recurrence(*args, mask=mask)
        return sum(tf.reduce_sum(o * wi) for o, wi in zip(outs, w))

    theoretical, numerical = tf.test.compute_gradient(
        loss, [xp, h0, c0, U, gr, gs, bs], delta=1e-6
    )
    for a, n in zip(theoretical, numerical):
        np.testing.assert_allclose(a, n, atol=1e-6)


def test_fast_path_taken_only_where_supported(monkeypatch):
    calls = []
    original = layer_norm_lstm.LayerNormLSTM._fast_loop

    def spy(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(layer_norm_lstm.LayerNormLSTM, "_fast_loop", spy)
    x = np.random.default_rng(0).random((2, 3, 4)).astype("float32")
    cases = {
        "default": ({}, True),
        "rdrop_infer": ({"recurrent_dropout": 0.5}, True),
        "rdrop_train": ({"recurrent_dropout": 0.5}, False),
        "carry_norm": ({"carry_normalized_cell": True}, False),
        "unroll": ({"unroll": True}, False),
        "relu": ({"activation": "relu"}, False),
    }
    for name, (kwargs, expected) in cases.items():
        calls.clear()
        layer = keras_ln.LayerNormLSTM(3, name=name, **kwargs)
        layer(x, training=name.endswith("train"))
        assert bool(calls) == expected, name
    calls.clear()
    layer = keras_ln.LayerNormLSTM(3, dtype="mixed_float16")
    layer(x)
    assert not calls
