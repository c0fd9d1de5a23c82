"""BatchNormLSTM's kernels against the generic loop, finite differences and XLA.

Two kernels: the native ops (`keras_ln.layers._native`, C++) and the
TensorFlow loops of `_tf_bn_lstm_kernel` (`use_kernel="xla"`, which compile
under XLA). The generic loop (`use_kernel=False`, keras' loop over the
cell's step) is the reference: each kernel's outputs, last states,
gradients (inputs, initial states, every weight) and moving statistics
equal it to rounding in float64, with and without masks, in both
directions, in training and at inference.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_ln
from keras_ln.layers import _native
from keras_ln.layers import _tf_bn_lstm_kernel
from tests.layers.test_tf_recurrent_kernels import _native_or_skip

B, T, F, U = 6, 5, 3, 4
LENGTHS = [5, 3, 1, 4, 5, 2]


@pytest.fixture(params=["native", "xla"])
def kernel(request):
    """`use_kernel` of one of the two kernels."""
    if request.param == "native":
        _native_or_skip()
    return request.param


def _layer(use_kernel, dtype="float64", **kwargs):
    layer = keras_ln.BatchNormLSTM(U, use_kernel=use_kernel, dtype=dtype, seed=1, **kwargs)
    layer.build((B, T, F))
    rng = np.random.default_rng(0)
    for v in layer.trainable_weights:
        v.assign(rng.normal(size=v.shape).astype(dtype) * 0.5)
    return layer


def _inputs(masked, dtype="float64"):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, F)).astype(dtype)
    mask = None
    if masked:
        mask = np.arange(T)[None] < np.array(LENGTHS)[:, None]
        x[~mask] = 0.0
        mask = tf.constant(mask)
    h0 = rng.normal(size=(B, U)).astype(dtype)
    c0 = rng.normal(size=(B, U)).astype(dtype)
    return tf.constant(x), mask, tf.constant(h0), tf.constant(c0)


def _run(layer, x, mask, h0, c0, training=True, fn=None):
    """Outputs, last states, gradients of a random projection of all of
    them, and the moving statistics after the call."""
    def call(x, h0, c0):
        with tf.GradientTape() as tape:
            tape.watch([x, h0, c0])
            out, h, c = layer(x, mask=mask, initial_state=[h0, c0], training=training)
            up = [tf.cast(tf.sin(tf.range(tf.size(t), dtype=tf.float64) + k), t.dtype) for k, t in
                  enumerate((out, h, c))]
            loss = sum(tf.reduce_sum(tf.reshape(t, [-1]) * u) for t, u in zip((out, h, c), up))
        grads = tape.gradient(loss, [x, h0, c0] + layer.trainable_weights)
        return [out, h, c] + grads

    results = (fn(call) if fn else call)(x, h0, c0)
    return [np.asarray(r) for r in results] + [v.numpy() for v in layer.non_trainable_weights]


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_kernel_equals_the_generic_loop(kernel, masked, go_backwards, return_sequences):
    kwargs = dict(go_backwards=go_backwards, return_sequences=return_sequences, return_state=True)
    for zero_output in ([False, True] if masked and return_sequences else [False]):
        got, want = [], []
        for use_kernel, out in ((kernel, got), (False, want)):
            layer = _layer(use_kernel, **kwargs)
            layer.zero_output_for_mask = zero_output
            out.extend(_run(layer, *_inputs(masked)))
        assert len(got) == len(want) == 3 + 3 + 7 + 7  # outputs, input grads, weight grads, statistics
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
def test_steps_that_mask_every_row_equal_the_generic_loop(kernel, go_backwards, zero_output):
    """Steps where every row is masked, inside a sequence and after the
    longest one (the native kernels skip their arithmetic: the states and
    gradients pass through, the step's statistics are those of no row):
    outputs, gradients and moving statistics of the generic loop."""
    x, _, h0, c0 = _inputs(False)
    mask = np.arange(T)[None] < np.array([3, 2, 1, 3, 3, 2])[:, None]
    mask[:, 1] = False
    mask[0, 0] = False
    mask = tf.constant(mask)
    kwargs = dict(go_backwards=go_backwards, return_sequences=True, return_state=True)
    got, want = [], []
    for use_kernel, out in ((kernel, got), (False, want)):
        layer = _layer(use_kernel, **kwargs)
        layer.zero_output_for_mask = zero_output
        out.extend(_run(layer, x, mask, h0, c0))
    assert len(got) == len(want) == 3 + 3 + 7 + 7
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_kernel_gradient_matches_finite_differences(kernel):
    """Central differences of a scalar of the kernel's outputs, in float64,
    along random directions of the input and of every weight (masked
    sequences)."""
    layer = _layer(kernel, return_sequences=True, return_state=True)
    x, mask, h0, c0 = _inputs(True)
    cell = layer.cell
    weights = [cell.kernel, cell.bias, cell.kernel_norm_gamma, cell.recurrent_kernel,
               cell.recurrent_norm_gamma, cell.state_norm_gamma, cell.state_norm_beta]

    def scalar(x):
        out, h, c = layer(x, mask=mask, initial_state=[h0, c0], training=True)
        return tf.reduce_sum(tf.sin(out)) + tf.reduce_sum(h * c)

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = scalar(x)
    grads = tape.gradient(value, [x] + weights)
    del value
    rng = np.random.default_rng(5)
    eps = 1e-6
    direction = rng.normal(size=x.shape)
    fd = (float(scalar(x + eps * direction)) - float(scalar(x - eps * direction))) / (2 * eps)
    np.testing.assert_allclose(np.sum(grads[0].numpy() * direction), fd, rtol=1e-6)
    for var, grad in zip(weights, grads[1:]):
        direction = rng.normal(size=var.shape)
        original = var.numpy()
        values = []
        for sign in (1, -1):
            var.assign(original + sign * eps * direction)
            values.append(float(scalar(x)))
        var.assign(original)
        np.testing.assert_allclose(np.sum(grad.numpy() * direction), (values[0] - values[1]) / (2 * eps),
                                   rtol=1e-6, err_msg=var.path)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_kernel_in_compiled_functions(jit, monkeypatch):
    """Inside tf.function, XLA-compiled (jit_compile=True: the TensorFlow
    kernel, "auto" never runs the native ops there) or not, and with the
    kernel's own loops XLA-compiled: the numbers of the eager call."""
    eager = _run(_layer(True, return_sequences=True, return_state=True), *_inputs(True))
    compiled = _run(_layer(True, return_sequences=True, return_state=True), *_inputs(True),
                    fn=lambda f: tf.function(f, jit_compile=jit))
    monkeypatch.setattr(_tf_bn_lstm_kernel, "JIT", True)
    own_xla = _run(_layer(True, return_sequences=True, return_state=True), *_inputs(True))
    for a, b, c in zip(eager, compiled, own_xla):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(c, a, rtol=1e-10, atol=1e-12)


def test_float32_kernel_matches_float64(kernel):
    got = _run(_layer(kernel, "float32", return_state=True), *_inputs(False, "float32"))
    want = _run(_layer(kernel, "float64", return_state=True), *_inputs(False, "float64"))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_use_kernel_choices(monkeypatch):
    """"auto" falls back to the generic loop where no kernel applies
    (recurrent dropout); True, "native" or "xla" there is an error naming
    the reason; "native" without the library, or inside XLA, likewise,
    where "auto" takes the TensorFlow kernel; the choice is in the
    config."""
    x, mask, h0, c0 = _inputs(False)
    auto = _layer("auto", recurrent_dropout=0.2)
    auto(x, training=True)  # generic loop, no error
    for choice in (True, "native", "xla"):
        with pytest.raises(ValueError, match=f"use_kernel={choice!r}.*recurrent_dropout"):
            _layer(choice, recurrent_dropout=0.2)(x, training=True)
    with pytest.raises(ValueError, match="use_kernel='native'.*cannot run inside an XLA"):
        tf.function(lambda x: _layer("native")(x, training=True), jit_compile=True)(x)
    calls = []
    for name in ("bn_lstm_recurrence", "bn_lstm_recurrence_native"):
        original = getattr(_tf_bn_lstm_kernel, name)
        monkeypatch.setattr(_tf_bn_lstm_kernel, name,
                            lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    monkeypatch.setattr(_native, "_loaded", {"module": None, "error": "not built (test)"})
    with pytest.raises(ValueError, match="use_kernel='native'.*not built"):
        _layer("native")(x, training=True)
    want = _run(_layer(False, return_state=True), x, None, h0, c0)
    for a, b in zip(_run(_layer("auto", return_state=True), x, None, h0, c0), want):  # the TF kernel
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert calls == ["bn_lstm_recurrence"]
    with pytest.raises(ValueError, match="use_kernel"):
        keras_ln.BatchNormLSTM(U, use_kernel="fast")
    layer = _layer(False)
    assert layer.get_config()["use_kernel"] is False
    assert keras_ln.BatchNormLSTM.from_config(layer.get_config()).use_kernel is False


def test_kernel_across_batch_sizes_and_lengths():
    """The loops are traced per configuration and width, with batch and time
    relaxed once several shapes have run (a third shape used to fail on an
    unknown width)."""
    layer = keras_ln.BatchNormLSTM(U, max_steps=8, dtype="float64")
    reference = keras_ln.BatchNormLSTM(U, max_steps=8, dtype="float64", use_kernel=False)
    for net in (layer, reference):
        net.build((None, None, F))
    reference.set_weights(layer.get_weights())
    rng = np.random.default_rng(2)
    for batch, steps in [(3, 4), (5, 6), (7, 3), (2, 8)]:
        x = rng.normal(size=(batch, steps, F))
        np.testing.assert_allclose(layer(x, training=True), reference(x, training=True), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_inference_kernel_equals_the_generic_loop(kernel, masked, go_backwards):
    """Inference with moving statistics (random, and only 2 trained steps of
    `max_steps=3`, so later steps reuse the second's): outputs, states and
    input gradients of the generic loop."""
    got = []
    for use_kernel in (kernel, False):
        layer = keras_ln.BatchNormLSTM(U, max_steps=3, use_kernel=use_kernel, dtype="float64",
                                       go_backwards=go_backwards, return_sequences=True, return_state=True)
        layer.build((B, T, F))
        values = np.random.default_rng(4)
        for v in layer.weights:
            if "variance" in v.path:
                v.assign(values.uniform(0.5, 1.5, size=v.shape))
            elif "moving_steps" in v.path:
                v.assign(2.0)
            else:
                v.assign(values.normal(size=v.shape))
        got.append(_run(layer, *_inputs(masked), training=False))
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


_NATIVE_RUN = """
import sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
from keras_ln.layers import _tf_bn_lstm_kernel as K
rng = np.random.default_rng(3)
T, B, F, u = 7, 64, 5, 144
c = lambda *s: tf.constant(rng.normal(size=s), "float32")
x, w, gx, bias, h0, c0 = c(T, B, F), c(F, 4 * u), c(4 * u), c(4 * u), c(B, u), c(B, u)
U, gr, gs, bs = c(u, 4 * u) * 0.2, c(4 * u), c(u), c(u)
valid = tf.constant((rng.random((T, B, 1)) > 0.2).astype("float32"))
args = [x, w, gx, bias, h0, c0, U, gr, gs, bs]
with tf.GradientTape() as tape:
    tape.watch(args)
    out = K.bn_lstm_recurrence_native(x, w, gx, bias, valid, h0, c0, U, gr, gs, bs, 1e-3, True, False)
    loss = tf.reduce_sum(tf.sin(out[0])) + tf.reduce_sum(out[1] * out[2])
grads = tape.gradient(loss, args)
np.savez(sys.argv[2], *[t.numpy() for t in list(out) + grads])
"""


def test_native_results_do_not_depend_on_the_threads(tmp_path):
    """The native ops split the units into shards by the unit count only
    (144 units of 64 rows: shards of 80 and 64), and every sum runs in a fixed order:
    one intra-op thread and two give the same bits, forward and backward
    (masked)."""
    _native_or_skip()
    import subprocess
    import sys

    results = []
    for threads in (1, 2):
        path = tmp_path / f"run{threads}.npz"
        subprocess.run([sys.executable, "-c", _NATIVE_RUN, str(threads), str(path)], check=True)
        with np.load(path) as data:
            results.append([data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))])
    assert len(results[0]) == 9 + 10
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("units, batch", [(4, 6), (144, 64)], ids=["1 shard", "2 shards"])
@pytest.mark.parametrize("masked, zero_output", [(False, False), (True, False), (True, True)],
                         ids=["dense", "masked", "masked, zero output"])
def test_native_forward_without_saving_gives_the_same_bits(dtype, units, batch, masked, zero_output):
    """`save=False` (a pass for the statistics only) keeps none of the
    activations the backward reads (its scratch blocks reused step by step,
    the states alternating between two) and gives the same outputs, states
    and statistics to the bit as `save=True`: masked rows, a step that masks
    every row, trailing steps without data, one shard of units and two."""
    _native_or_skip()
    rng = np.random.default_rng(5)
    T, F, u = 7, 3, units

    def c(*shape, scale=1.0):
        return tf.constant(rng.normal(size=shape) * scale, dtype)

    x, w, gx, bias = c(T, batch, F), c(F, 4 * u), c(4 * u), c(4 * u)
    h0, c0, U = c(batch, u), c(batch, u), c(u, 4 * u, scale=0.2)
    gr, gs, bs = c(4 * u), c(u), c(u)
    valid = (rng.random((T, batch, 1)) > 0.3).astype(dtype)
    valid[2] = 0.0  # every row masked
    valid[-2:] = 0.0  # no data after the longest sequence
    valid = tf.constant(valid)
    args = (x, w, gx, bias, valid, h0, c0, U, gr, gs, bs, 1e-3, masked, zero_output)
    kept = _tf_bn_lstm_kernel.bn_lstm_recurrence_native(*args)
    lean = _tf_bn_lstm_kernel.bn_lstm_recurrence_native(*args, save=False)
    assert len(kept) == len(lean) == 9
    for a, b in zip(kept, lean):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    outs = _native.ops().keras_ln_bn_lstm_forward(
        x, w, gx, bias, valid if masked else tf.zeros([0], dtype), h0, c0, U, gr, gs, bs,
        tf.constant(1e-3, dtype), masked=masked, zero_output=zero_output, save=False)
    assert len(outs) == 15
    assert [outs[i].shape for i in range(7, 13)] == [(0,)] * 6
    # no gradient: an error, not zeros
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _tf_bn_lstm_kernel.bn_lstm_recurrence_native(*args, save=False)[0]
    with pytest.raises(LookupError):
        tape.gradient(y, x)


def test_native_ops_reject_bad_shapes():
    _native_or_skip()
    mod = _native.ops()
    T, B, F, u = 3, 2, 4, 2
    x, w = tf.zeros((T, B, F)), tf.zeros((F, 4 * u))
    h0, U = tf.zeros((B, u)), tf.zeros((u, 4 * u))
    g8, g2, none, eps = tf.ones(4 * u), tf.ones(u), tf.zeros([0]), tf.constant(1e-3)

    def forward(x=x, w=w, U=U, gr=g8, valid=none, masked=False, eps=eps):
        mod.keras_ln_bn_lstm_forward(x, w, g8, g8, valid, h0, h0, U, gr, g2, g2, eps,
                                     masked=masked, zero_output=False)

    forward()  # the shapes above are right
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"kernel must be \(2, 8\), got \[3,8\]"):
        forward(U=tf.zeros((3, 8)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input kernel must be \(4, 8\), got \[4,6\]"):
        forward(w=tf.zeros((4, 6)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sequence must be \(time, 2, features\)"):
        forward(x=tf.zeros((3, 5, 4)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask must have time\\*batch elements"):
        forward(valid=tf.ones([5]), masked=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="gr must be"):
        forward(gr=tf.ones(5))
    with pytest.raises(tf.errors.InvalidArgumentError, match="epsilon must be a scalar"):
        forward(eps=tf.ones(2))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"projected sequence must be \(time, 2, 8\)"):
        mod.keras_ln_bn_lstm_inference(tf.zeros((T, B, 6)), none, h0, h0, U, tf.ones((T, 8)),
                                       tf.ones((T, 8)), tf.ones((T, 2)), tf.ones((T, 2)),
                                       masked=False, zero_output=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"ar must be \[3,8\]"):
        mod.keras_ln_bn_lstm_inference(tf.zeros((T, B, 4 * u)), none, h0, h0, U, tf.ones((2, 8)),
                                       tf.ones((T, 8)), tf.ones((T, 2)), tf.ones((T, 2)),
                                       masked=False, zero_output=False)
