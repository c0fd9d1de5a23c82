"""Same seed, same bytes: in fresh processes, side by side, on a loaded CPU.

The native recurrent ops once gave results that depended on where malloc
placed their scratch buffers (Eigen starts a vectorized pass over an
unaligned buffer with scalar steps that round differently) and on the
machine's thread count (the number of shards). Within one process the runs
usually agreed; across processes, and with the two directions of a
`Bidirectional` layer running at once, they did not. These tests compare the
bytes of several fresh processes run at the same time as a CPU burner.
"""

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import numpy as np
    import tensorflow as tf
    import keras_ln
    from keras_ln.layers import _tf_recurrent_kernels as kernels
    from keras_ln.sklearn import LSTMClassifier

    def digest(arrays):
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    import keras
    keras.utils.set_random_seed(0)
    out = {}
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 5, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    for cell in ("lstm", "gru"):
        clf = LSTMClassifier(units=(6,), cell=cell, normalization="layer",
                             bidirectional=True, dropout=0.1, max_iter=3,
                             learning_rate_init=0.02, random_state=0)
        clf.fit(X, y)
        out[f"fit-{cell}"] = digest(
            [clf.predict_proba(X)] + clf.model_.get_weights())
    # A layer's outputs and gradients, default and forced shards.
    x = tf.constant(rng.normal(size=(70, 7, 5)).astype("float32"))
    for cls in (keras_ln.LayerNormLSTM, keras_ln.LayerNormGRU):
        layer = cls(13, return_sequences=True)
        layer.build(x.shape)
        for shards in (0, 3):
            kernels.NATIVE_SHARDS = shards
            with tf.GradientTape() as tape:
                tape.watch(x)
                ys = layer(x)
                loss = tf.reduce_sum(ys * tf.sin(ys))
            grads = tape.gradient(loss, [x] + layer.trainable_weights)
            out[f"{cls.__name__}-{shards}"] = digest(
                [ys.numpy()] + [g.numpy() for g in grads])
    print(json.dumps(out))
    """
)


def _burn(seconds):
    import time

    end = time.time() + seconds
    while time.time() < end:
        sum(i * i for i in range(10000))


def _native_script(tmp_path, name, text):
    """`text` written to `tmp_path / name`, and the environment to run it
    in; skips (or fails, where the native ops are required) without the
    native ops."""
    from keras_ln.layers import _native

    if _native.ops() is None:
        assert not os.environ.get("KERAS_LN_REQUIRE_NATIVE"), (
            _native.load_error())
        pytest.skip("native ops not built")
    script = tmp_path / name
    script.write_text(text)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONWARNINGS": "ignore"}
    return script, env


@pytest.mark.slow
def test_fresh_processes_under_load_give_identical_bytes(tmp_path):
    script, env = _native_script(tmp_path, "fit.py", SCRIPT)
    burner = multiprocessing.get_context("spawn").Process(
        target=_burn, args=(240,), daemon=True)
    burner.start()
    try:
        procs = [
            subprocess.Popen([sys.executable, str(script)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for _ in range(3)
        ]
        results = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=600)
            assert proc.returncode == 0, stderr[-3000:]
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        burner.terminate()
        burner.join()
    assert len(results[0]) == 6
    for other in results[1:]:
        assert other == results[0]
    # The shard count changes sums over rows only in their last bits: the
    # digests differ, which shows the comparison sees such bits at all.
    assert results[0]["LayerNormLSTM-0"] != results[0]["LayerNormLSTM-3"]


THREADS_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys, warnings
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
    tf.config.threading.set_inter_op_parallelism_threads(int(sys.argv[1]))
    from keras_ln.sklearn import LSTMClassifier

    warnings.simplefilter("ignore")

    def digest(est, outputs):
        h = hashlib.sha256()
        for a in [outputs] + est.model_.get_weights():
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    rng = np.random.default_rng(0)
    out = {}
    # the native recurrent kernels: 3 steps a fit run eagerly, 15 in the
    # graph loop
    S = rng.normal(size=(300, 30, 4)).astype("float32")
    ys = (S[:, :10, 0].sum(axis=1) > 0).astype(int)
    for norm in (None, "layer", "batch"):
        for epochs in (1, 5):
            est = LSTMClassifier(units=(80,), normalization=norm, max_iter=epochs,
                                 batch_size=100, random_state=0).fit(S, ys)
            out[f"lstm-{norm}-{epochs}"] = digest(est, est.predict_proba(S))
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_recurrent_fits_do_not_depend_on_the_thread_count(tmp_path):
    """LSTMClassifier fits (the native LSTM, LN-LSTM and BN-LSTM kernels,
    eager and in the graph loop) in fresh processes with one TensorFlow
    intra-op thread and with four: the same predictions and weights, bit
    for bit. (TensorFlow's own products are not covered: an MLP's can
    differ with 4 threads or more; see the README.)"""
    script, env = _native_script(tmp_path, "threads.py", THREADS_SCRIPT)
    results = []
    for threads in (1, 4):
        proc = subprocess.run([sys.executable, str(script), str(threads)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert len(results[0]) == 6
    assert results[0] == results[1], [k for k in results[0] if results[0][k] != results[1][k]]
