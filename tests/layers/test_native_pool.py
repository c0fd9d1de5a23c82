"""The block pool of the native recurrent ops (kernels.h's BlockPool).

Their large tensors (each step's saved gates and states, the backward's
products) come from a pool that keeps freed blocks for the next call of the
same size. A reused block holds the last call's numbers, so every element
an op hands on must be one it wrote: checked with every tensor taken from
the pool and every block handed out full of NaNs, against the same ops with
the pool off, bit for bit.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_ln
from keras_ln.layers import _native
from tests.layers.test_tf_recurrent_kernels import _native_or_skip

LAYERS = {  # class, units, the native ops asked for
    "LayerNormLSTM": (keras_ln.LayerNormLSTM, 12, {"use_kernel": "native"}),
    "LayerNormGRU": (keras_ln.LayerNormGRU, 10, {"use_kernel": "native"}),
    "BatchNormLSTM": (keras_ln.BatchNormLSTM, 9, {"use_kernel": "native"}),
    "FusedLSTM": (keras_ln.FusedLSTM, 11, {}),
    "FusedGRU": (keras_ln.FusedGRU, 8, {}),
}


@pytest.fixture
def pool():
    _native_or_skip()
    _native._configure_pool()
    yield
    _native._configure_pool()  # the defaults, and nothing cached


def _outputs_and_gradients(name, dtype, masked, batch=37, steps=7, units=None):
    keras.utils.set_random_seed(0)
    cls, default_units, kwargs = LAYERS[name]
    layer = cls(units or default_units, return_sequences=True, dtype=dtype, **kwargs)
    rng = np.random.default_rng(batch)
    x = tf.constant(rng.normal(size=(batch, steps, 5)).astype(dtype))
    mask = None
    if masked:  # right padding, with an empty row and a full one
        lengths = rng.integers(0, steps + 1, size=batch)
        lengths[0], lengths[1] = 0, steps
        mask = tf.constant(np.arange(steps)[None, :] < lengths[:, None])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, mask=mask, training=True)
        loss = tf.reduce_sum(y * y) + 0.3 * tf.reduce_sum(y)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return [y.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_blocks_full_of_nans_change_no_bit(pool, name, dtype, masked):
    _native._configure_pool(min_bytes=2 ** 62)  # nothing from the pool
    expected = _outputs_and_gradients(name, dtype, masked)
    # Every tensor of the ops from the pool, each block handed out full of
    # NaNs; twice, the second call on the first one's blocks.
    _native._configure_pool(min_bytes=0, poison=True)
    for _ in range(2):
        got = _outputs_and_gradients(name, dtype, masked)
        assert _native.pool_cached_bytes() > 0
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert np.isfinite(g).all()
            np.testing.assert_array_equal(g, e)


def test_blocks_come_back_for_the_next_call_and_are_released(pool):
    assert _native.pool_cached_bytes() == 0
    # (200, 30) sequences into 64 units: the gates of all steps, 200 x 30 x
    # 256 floats (6 MB), and the other saved tensors are over the pool's
    # smallest size.
    _outputs_and_gradients("LayerNormLSTM", "float32", False, batch=200, steps=30, units=64)
    cached = _native.pool_cached_bytes()
    assert cached >= 200 * 30 * 256 * 4
    # The same shapes again: the same blocks, nothing new kept.
    _outputs_and_gradients("LayerNormLSTM", "float32", False, batch=200, steps=30, units=64)
    assert _native.pool_cached_bytes() == cached
    assert _native.release_pool() == cached
    assert _native.pool_cached_bytes() == 0
    assert _native.release_pool() == 0


def test_at_most_the_cap_stays_cached(pool):
    cap = 8 << 20
    _native._configure_pool(max_cached_bytes=cap)
    for batch in (200, 199, 198):  # other sizes each time: the oldest go
        _outputs_and_gradients("LayerNormLSTM", "float32", False, batch=batch, steps=30, units=64)
        assert 0 < _native.pool_cached_bytes() <= cap
    _native._configure_pool(max_cached_bytes=0)  # nothing kept at all
    _outputs_and_gradients("FusedLSTM", "float32", False, batch=200, steps=30, units=64)
    assert _native.pool_cached_bytes() == 0


@pytest.mark.parametrize("argument, value", [("min_bytes", -1), ("max_cached_bytes", 1.5)])
def test_configure_pool_is_validated(pool, argument, value):
    with pytest.raises(ValueError, match=f"{argument} must be an int >= 0, got {value!r}"):
        _native._configure_pool(**{argument: value})


def test_without_the_library_nothing_is_pooled(monkeypatch):
    monkeypatch.setattr(_native, "_loaded", {"module": None, "error": "not built (test)"})
    assert _native.pool_cached_bytes() == 0
    assert _native.release_pool() == 0
    with pytest.raises(RuntimeError, match="the native ops are not available: not built \\(test\\)"):
        _native._configure_pool()


def test_tensors_under_128_kib_come_from_tensorflow(pool):
    # README: the pool takes the ops' tensors from 128 KiB up. Here the
    # largest, the gates of all steps, is 7 x 37 x 48 floats (50 KB).
    _outputs_and_gradients("LayerNormLSTM", "float32", True)
    assert _native.pool_cached_bytes() == 0
    assert _native.POOL_MIN_BYTES == 128 << 10
    _native._configure_pool(min_bytes=7 * 37 * 48 * 4)  # the gates just reach it
    _outputs_and_gradients("LayerNormLSTM", "float32", True)
    assert _native.pool_cached_bytes() >= 7 * 37 * 48 * 4
