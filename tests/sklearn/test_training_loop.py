"""The estimators' training loop (`keras_ln.sklearn._training`): epochs run as one program.

References: the minibatches against a plain Python cut of the shuffled
rows; the loop's execution modes (eager, graph, XLA) against each other; a
loop run in chunks against one run in a single chunk; the in-graph stopping
rule against sklearn's rule replayed on the loss curve.
"""

import warnings

import numpy as np
import pytest
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning

from keras_ln.sklearn import LSTMClassifier
from keras_ln.sklearn import MLPClassifier
from keras_ln.sklearn import MLPRegressor
from keras_ln.sklearn import _training


def _fit(est, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kwargs)


@pytest.mark.parametrize("pad", [True, False])
def test_epoch_batches_cover_every_row_once_per_epoch(pad):
    """23 rows in batches of 5: four full batches and a last one of 3 rows,
    which padding (zero weights) makes a fifth full batch; without padding
    (batch norm) it stays a separate batch of its own size."""
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.5, 2.0, 23)
    orders = [rng.permutation(23).astype(np.int32) for _ in range(3)]
    b = _training.epoch_batches(orders, 5, None, weights, pad, np.float64, capacity=4)
    if pad:
        assert b["idx"].shape == (4, 5, 5) and b["idx_last"].shape == (4, 0)
    else:
        assert b["idx"].shape == (4, 4, 5) and b["idx_last"].shape == (4, 3)
    assert b["n_epochs"] == 3
    for e, order in enumerate(orders):
        if pad:
            assert list(b["n_valid"][e]) == [5, 5, 5, 5, 3]
            rows = np.concatenate([b["idx"][e, :4].ravel(), b["idx"][e, 4, :3]])
            assert np.all(b["w"][e, 4, 3:] == 0)  # padding weighs nothing
            np.testing.assert_array_equal(b["w"][e, 4, :3], weights[order[20:]])
        else:
            rows = np.concatenate([b["idx"][e].ravel(), b["idx_last"][e, :b["n_last"][e]]])
            np.testing.assert_array_equal(b["w_last"][e], weights[order[20:]])
        np.testing.assert_array_equal(rows, order)  # no merging: the shuffled order itself
        expected = [weights[order[i:i + 5]].sum() for i in range(0, 23, 5)] + [0.0] * pad
        np.testing.assert_allclose(b["batch_weight"][e], expected, rtol=1e-15)
        assert b["epoch_weight"][e] == pytest.approx(weights.sum(), rel=1e-15)


def test_epoch_batches_merge_duplicates_within_a_batch():
    """Groups: a batch's duplicates become one row of their summed weight,
    its rows sorted by group, padded back to the batch size."""
    groups = np.array([0, 1, 0, 2, 3, 3, 4, 5])
    weights = np.arange(1.0, 9.0)
    order = np.arange(8, dtype=np.int32)
    b = _training.epoch_batches([order], 4, groups, weights, True, np.float64)
    # batch 1: rows 0..3, groups 0,1,0,2 -> rows 0 (weight 1+3), 1, 3
    assert b["n_valid"][0, 0] == 3
    np.testing.assert_array_equal(b["idx"][0, 0, :3], [0, 1, 3])
    np.testing.assert_array_equal(b["w"][0, 0], [4.0, 2.0, 4.0, 0.0])
    # batch 2: rows 4..7, groups 3,3,4,5 -> rows 4 (5+6), 6, 7
    np.testing.assert_array_equal(b["idx"][0, 1, :3], [4, 6, 7])
    np.testing.assert_array_equal(b["w"][0, 1], [11.0, 7.0, 8.0, 0.0])
    assert b["idx_last"].shape == (1, 0)  # 8 rows in batches of 4: no last batch
    np.testing.assert_array_equal(b["batch_weight"][0], [10.0, 26.0, 0.0])


def test_one_batch_of_all_rows_is_sized_by_its_distinct_rows():
    """A batch of every row pads to the bucket of its merged size, so a
    fit on repeated rows and one on weights run the same program."""
    groups = np.array([0, 0, 0, 1, 1, 2])
    b = _training.epoch_batches([np.arange(6, dtype=np.int32)], 6, groups, np.ones(6), True,
                                np.float32)
    assert b["idx"].shape[1] == 0 and b["n_last"][0] == 3 and b["idx_last"].shape == (1, 16)
    np.testing.assert_array_equal(b["w_last"][0, :3], [3.0, 2.0, 1.0])


@pytest.fixture
def table():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(230, 6))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    return X, y


@pytest.mark.parametrize("normalization, task", [
    (None, "binary"), ("layer", "binary"), ("batch", "binary"),
    # outputs of 3 units and of 1 (`_StepOutputDense`'s XLA paths), 5 (keras' Dense)
    (None, "3 classes"), ("layer", "regression"), (None, "5 classes"),
])
def test_graph_and_xla_loops_agree(table, normalization, task, monkeypatch, traced_loop):
    """The same fit (float64, with the L2 penalty) as a TensorFlow graph and
    XLA-compiled: the same loss curve to rounding, the same stopping epoch."""
    X, y = table
    if task.endswith("classes"):
        y = np.digitize(X[:, 0] + X[:, 1] * X[:, 2], [-1.0, -0.3, 0.3, 1.0][:int(task[0]) - 1])
    elif task == "regression":
        y = X[:, 0] + X[:, 1] * X[:, 2]
    make = MLPRegressor if task == "regression" else MLPClassifier
    params = dict(hidden_layer_sizes=(16,), max_iter=30, batch_size=50, normalization=normalization,
                  random_state=0, tol=1e-3, n_iter_no_change=3, alpha=1e-2)
    monkeypatch.setattr(_training, "XLA_MIN_STEPS", 10**9)
    graph = _fit(make(**params), X, y)
    monkeypatch.setattr(_training, "XLA_MIN_STEPS", 1)
    xla = _fit(make(**params), X, y)
    assert graph.n_iter_ == xla.n_iter_ > 3
    np.testing.assert_allclose(xla.loss_curve_, graph.loss_curve_, rtol=1e-9)
    outputs = "predict" if task == "regression" else "predict_proba"
    np.testing.assert_allclose(getattr(xla, outputs)(X), getattr(graph, outputs)(X), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("units", [1, 2, 3])
def test_step_output_layer_under_xla_has_dense_gradients(units):
    """`_StepOutputDense` compiled by XLA (no padding; the input's gradient
    summed over the units for 2 or 3) and `_sum_of_squares` under XLA: the
    values and gradients of keras' `Dense` and of a plain reduction, in
    float64, to rounding."""
    import keras
    import tensorflow as tf

    from keras_ln.sklearn import _execution

    rng = np.random.default_rng(units)
    x = tf.constant(rng.normal(size=(37, 11)))
    dense = keras.layers.Dense(units, dtype="float64")
    dense.build((None, 11))
    step = _execution._StepOutputDense.from_config(dense.get_config())
    step.build((None, 11))
    step.set_weights(dense.get_weights())
    weight = tf.constant(rng.normal(size=(37, units)))

    def run(layer, squares):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(out * weight) + squares(layer.kernel)
        return [out, *tape.gradient(loss, [x, layer.kernel, layer.bias])]

    plain = tf.function(lambda: run(dense, lambda a: tf.reduce_sum(tf.square(a))))()
    xla = tf.function(lambda: run(step, lambda a: _execution._sum_of_squares(tf, a)), jit_compile=True)()
    for ours, reference in zip(xla, plain):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-12, atol=1e-13)


def test_eager_and_graph_loops_agree(table, monkeypatch, traced_loop):
    """A short fit runs eagerly (no trace); forced into a graph it gives
    the same numbers."""
    X, y = table
    params = dict(hidden_layer_sizes=(8,), max_iter=2, batch_size=100, random_state=0)
    assert _training._execution_mode(X, 2, 3) == "eager"
    eager = _fit(MLPRegressor(**params), X, X[:, 0])
    monkeypatch.setattr(_training, "EAGER_MAX_STEPS", 0)
    graph = _fit(MLPRegressor(**params), X, X[:, 0])
    np.testing.assert_allclose(graph.loss_curve_, eager.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(graph.predict(X), eager.predict(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_chunks_of_epochs_change_nothing(table, early_stopping, monkeypatch, mlp_loop):
    """Epochs in chunks of 3 (the loop's rule carried across calls) give
    bitwise the fit of one chunk, the epoch where it stops included."""
    X, y = np.tile(table[0], (2, 1)), np.tile(table[1], 2)
    params = dict(hidden_layer_sizes=(8,), max_iter=60, batch_size=64, random_state=0,
                  tol=1e-2, n_iter_no_change=2, early_stopping=early_stopping,
                  validation_fraction=0.2)
    one = _fit(MLPClassifier(**params), X, y)
    monkeypatch.setattr(_training, "CHUNK_INDICES", 3 * len(X))
    chunked = _fit(MLPClassifier(**params), X, y)
    assert one.n_iter_ == chunked.n_iter_ < 60
    assert one.early_stopping_used_ == early_stopping
    assert one.loss_curve_ == chunked.loss_curve_
    np.testing.assert_array_equal(one.predict_proba(X), chunked.predict_proba(X))


def test_the_loop_stops_where_sklearns_rule_says(table, mlp_loop):
    """n_iter_ is the first epoch at which sklearn's rule, replayed on the
    loss curve, counts more than n_iter_no_change epochs without an
    improvement by tol."""
    X, y = table
    stopped = 0
    for tol, patience in [(1e-2, 2), (1e-3, 5), (1e-4, 3)]:
        clf = _fit(MLPClassifier((8,), max_iter=300, batch_size=40, tol=tol, n_iter_no_change=patience,
                                 random_state=0), X, y)
        count, best, stop = 0, np.inf, 300
        for epoch, loss in enumerate(clf.loss_curve_, 1):
            count, best = _training.update_no_improvement_count(count, loss, best, tol)
            if count > patience:
                stop = epoch
                break
        assert stop == clf.n_iter_ == len(clf.loss_curve_)
        stopped += stop < 300
    assert stopped >= 2


def test_divergence_is_reported_at_its_epoch(table, mlp_loop):
    X, y = table
    with pytest.raises(ValueError, match="The training loss became (nan|inf) at iteration"):
        MLPRegressor((8,), max_iter=50, random_state=0, standardize_target=False).fit(
            X.astype(np.float32), (y * 1e30).astype(np.float32))  # squares overflow float32


def test_sequence_loop_runs_as_one_graph():
    """Sequences (ragged, NaN-padded) train through the same loop, as a
    graph: one trace serves fits of other row counts."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5, 2))
    y = (X[:, 0, 0] > 0).astype(int)
    clf = _fit(LSTMClassifier(units=(4,), max_iter=5, batch_size=32, random_state=0), X, y)
    assert _training._execution_mode(X, 5, 4) == "graph"
    from keras_ln.sklearn import _execution

    program = next(p for key, p in _execution._PROGRAMS.items() if key[0] == "LSTMClassifier")
    traces = program.loops[False].experimental_get_tracing_count()
    _fit(LSTMClassifier(units=(4,), max_iter=5, batch_size=32, random_state=1), X[:90], y[:90])
    assert program.loops[False].experimental_get_tracing_count() == traces
    assert len(clf.loss_curve_) == 5 and clf.loss_curve_[-1] < clf.loss_curve_[0]


@pytest.mark.parametrize("n_rows, steps_per_epoch", [(40, 10), (42, 11), (4, 1)])
@pytest.mark.parametrize("normalization", [None, "batch"])
def test_one_adam_step_per_batch(n_rows, steps_per_epoch, normalization, monkeypatch, mlp_loop):
    """Adam's step count is epochs x batches: no step on an absent last
    batch (a step on no rows gave NaN batch statistics), whatever the mode."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_rows, 5))
    y = np.arange(n_rows) % 2
    for eager_max in (10**6, 0):  # eager, then a graph
        monkeypatch.setattr(_training, "EAGER_MAX_STEPS", eager_max)
        clf = _fit(MLPClassifier((8,), normalization=normalization, batch_size=4, max_iter=3,
                                 random_state=0), X, y)
        assert clf._adam_state[2] == 3 * steps_per_epoch
        assert np.all(np.isfinite(clf.loss_curve_)) and len(clf.loss_curve_) == 3


def test_predict_is_the_keras_models_call_and_traced_once_per_structure(table):
    """predict runs the model through its structure's traced inference:
    the numbers of keras' own call, one trace for every fit (and unpickled
    copy) of that structure."""
    import pickle

    from keras_ln.sklearn import _execution

    X, y = table
    params = dict(hidden_layer_sizes=(5, 3), normalization="layer", max_iter=3)
    clf = _fit(MLPClassifier(**params, random_state=0), X, y)
    # two classes: the network's one output is P(classes_[1])
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1:], np.asarray(clf.model_(X, training=False)),
                               rtol=1e-12, atol=1e-15)
    program = _execution._PROGRAMS[clf._program_key]
    traces = program.inference[False].experimental_get_tracing_count()
    other = _fit(MLPClassifier(**params, random_state=1), X, y)
    copy = pickle.loads(pickle.dumps(other))
    for est in (other, copy):
        np.testing.assert_allclose(est.predict_proba(X[:1])[:, 1:], np.asarray(other.model_(X[:1], training=False)),
                                   rtol=1e-12, atol=1e-15)
    assert program.inference[False].experimental_get_tracing_count() == traces
    _execution._PROGRAMS.clear()  # a copy whose structure is no longer cached becomes the template
    np.testing.assert_allclose(copy.predict_proba(X), other.predict_proba(X), rtol=0, atol=0)


def _partition(ids):
    """The groups of row positions that `ids` puts together."""
    groups = {}
    for i, g in enumerate(ids):
        groups.setdefault(g, []).append(i)
    return sorted(groups.values())


@pytest.mark.parametrize("collide", [False, True])
def test_row_groups_group_equal_bytes_whatever_the_row_order(monkeypatch, collide):
    """Rows group by their bytes: duplicates (NaN padding included) share
    an id, 0.0 and -0.0 do not, nor equal rows with other targets. The
    ids follow the contents, not the positions. Where every hash collides
    the byte-order fallback gives the same groups."""
    if collide:
        monkeypatch.setattr(_training, "_hash_words",
                            lambda words: np.zeros(len(words), np.uint64))
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    X[5], y[5] = X[1], y[1]            # a duplicate pair
    X[7], y[7] = X[1], (y[1] + 1) % 3  # the same row, another target
    X[[9, 12], :] = np.nan             # padding rows, equal bytes
    y[[9, 12]] = 0
    X[20], X[21], y[20], y[21] = 0.0, -0.0, 1, 1  # equal as floats, not as bytes
    ids = _training.row_groups(X, y)
    expected = _partition(_training._byte_order_ids(X, y))
    assert _partition(ids) == expected
    assert [1, 5] in expected and [9, 12] in expected and len(expected) == 38
    order = rng.permutation(40)
    np.testing.assert_array_equal(_training.row_groups(X[order], y[order]), ids[order])


@pytest.mark.parametrize("n, distinct", [(1, 1), (2, 1), (50, 50), (1000, 37), (20_000, 4_000)])
def test_ranks_are_np_unique_inverse(n, distinct):
    """`_ranks` gives np.unique's inverse (ranks of the distinct keys) and
    one position of each distinct key, with many duplicates, none, and
    keys at both ends of the uint64 range."""
    rng = np.random.default_rng(n)
    pool = rng.integers(0, np.iinfo(np.uint64).max, size=distinct, dtype=np.uint64, endpoint=True)
    pool[:2] = [0, np.iinfo(np.uint64).max][:distinct]
    keys = pool[rng.integers(0, distinct, n)]
    first, ids = _training._ranks(keys)
    values, expected_ids = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(ids, expected_ids.ravel())
    assert len(first) == len(values)
    np.testing.assert_array_equal(keys[first], values)


def test_row_hash_is_the_multilinear_hash_in_exact_integer_arithmetic(monkeypatch):
    """`_hash_words` is sum_j w_j K_j mod 2^64 with odd keys, computed exactly
    (Python integers as the reference), across the chunks of its product,
    for rows whose bytes are not a multiple of 4; the ids it leads to do not
    depend on the chunk size (nor, being integer arithmetic, on the CPU)."""
    monkeypatch.setattr(_training, "_HASH_CHUNK", 7)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 3)).astype(np.float16)  # 6 bytes a row: padded to 2 words
    words = _training._words(X)
    assert words.dtype == np.uint32 and words.shape == (30, 2)
    keys = np.random.default_rng(_training._KEY_SEED).integers(
        0, np.iinfo(np.uint64).max, size=2, dtype=np.uint64, endpoint=True) | np.uint64(1)
    assert all(int(k) % 2 == 1 for k in keys)
    expected = [sum(int(w) * int(k) for w, k in zip(row, keys)) % 2**64 for row in words]
    assert [int(h) for h in _training._hash_words(words)] == expected
    y = rng.integers(0, 2, 30)
    ids = _training.row_groups(X, y)
    monkeypatch.setattr(_training, "_HASH_CHUNK", 2048)
    np.testing.assert_array_equal(_training.row_groups(X, y), ids)


def _rows_cases():
    rng = np.random.default_rng(8)
    big = rng.normal(size=(30_000, 50)).astype(np.float32)  # 6 MB: the library's threads
    big[::7] = big[3]  # duplicates across the threads' blocks
    special = np.array([[np.nan, -0.0, 0.0], [0.0, 0.0, 0.0], [np.nan, -0.0, 0.0]] * 4)
    return {
        "float32, threaded": big,
        "float64": rng.normal(size=(500, 7)),
        "float32 sequences": rng.normal(size=(40, 5, 3)).astype(np.float32),
        "NaN and signed zeros": special,
        "Fortran order": np.asfortranarray(rng.normal(size=(60, 4))),
        "a column slice": rng.normal(size=(80, 6)).astype(np.float32)[:, 1:4],
        "one row": rng.normal(size=(1, 3)),
    }


@pytest.mark.parametrize("case", list(_rows_cases()))
@pytest.mark.parametrize("native", [True, False])
def test_training_rows_are_the_rows_and_their_groups(case, native, monkeypatch):
    """`training_rows`: a tensor with the bytes of the rows (not sharing
    their memory), and the ids of `row_groups`, whether the native library
    copies and hashes the rows (in threads for a large X) or TensorFlow and
    NumPy do; ids only where asked for."""
    import tensorflow as tf

    from keras_ln.layers import _native

    if native:
        _native_ops()
        assert _native.copy_rows() is not None
    else:
        monkeypatch.setattr(_native, "copy_rows", lambda: None)
    X = _rows_cases()[case]
    y = np.arange(len(X)) % 3 == 0
    tensor, ids = _training.training_rows(X, y, True, tf)
    assert tensor.dtype == X.dtype and tuple(tensor.shape) == X.shape
    np.testing.assert_array_equal(tensor.numpy().view(np.uint8),
                                  np.ascontiguousarray(X).view(np.uint8))
    np.testing.assert_array_equal(ids, _training.row_groups(X, y))
    # The tensor runs in TensorFlow's kernels (aligned) and in XLA.
    rows = tf.constant([len(X) - 1, 0])
    np.testing.assert_array_equal(tf.gather(tensor, rows).numpy(), X[[-1, 0]])
    gather = tf.function(lambda t, i: tf.gather(t, i) * 1, jit_compile=True)
    np.testing.assert_array_equal(gather(tensor, rows).numpy(), X[[-1, 0]])
    X_before = X.copy()
    X[...] = 7  # the caller's array, not the tensor's buffer
    np.testing.assert_array_equal(tensor.numpy().view(np.uint8),
                                  np.ascontiguousarray(X_before).view(np.uint8))
    tensor, ids = _training.training_rows(X_before, y, False, tf)
    assert ids is None


def test_rows_buffer_returns_for_the_next_fit_only_when_released():
    """A large rows buffer (`_ReleasedBuffers`) goes back to the pool when
    its tensor is gone, not before: a second tensor made while the first
    lives gets other memory and leaves the first's rows intact; after the
    tensor is deleted the next one of the same size (or up to half of it)
    reuses the map, one more than twice smaller does not, and a fit of the
    same rows gives the same network either way."""
    import gc

    import tensorflow as tf

    from keras_ln.layers import _native

    _native_ops()
    assert _native.copy_rows() is not None
    pool = _training._ROWS_BUFFERS
    pool.clear()
    rng = np.random.default_rng(4)
    X1, X2 = (rng.normal(size=(3_000, 20)).astype(np.float32) for _ in range(2))

    first, _ = _training.training_rows(X1, None, False, tf)
    second, _ = _training.training_rows(X2, None, False, tf)  # first still alive
    np.testing.assert_array_equal(first.numpy(), X1)
    np.testing.assert_array_equal(second.numpy(), X2)
    assert pool._kept is None
    del first
    gc.collect()
    kept = pool._kept
    assert kept is not None and len(kept) == X1.nbytes
    third, _ = _training.training_rows(X2, None, False, tf)
    assert pool._kept is None  # taken
    np.testing.assert_array_equal(third.numpy(), X2)
    view = np.frombuffer(kept, np.float32, X2.size)
    np.testing.assert_array_equal(view.reshape(X2.shape), X2)  # the kept map holds third's rows
    del view, third, second
    gc.collect()
    assert pool._kept is not None
    small = rng.normal(size=(600, 20)).astype(np.float32)  # less than half: a map of its own
    kept = pool._kept
    fourth, _ = _training.training_rows(small, None, False, tf)
    assert kept.closed and pool._kept is None
    np.testing.assert_array_equal(fourth.numpy(), small)
    del fourth
    gc.collect()
    pool.clear()
    assert pool._kept is None

    y = (X1[:, 0] > 0).astype(int)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0, tol=0.0, n_iter_no_change=9)
    fresh = _fit(MLPClassifier(**params), X1, y)
    gc.collect()
    assert pool._kept is not None
    reused = _fit(MLPClassifier(**params), X1, y)
    for a, b in zip(fresh.model_.get_weights(), reused.model_.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_kept_rows_map_is_lazily_freed_and_one_at_most():
    """A released map is marked MADV_FREE (the kernel may reclaim it under
    pressure) and replaces, closing it, the map kept before; a kernel that
    refuses the advice only loses the hint; a map over the size limit is
    closed, not kept."""
    import mmap

    class Map:
        def __init__(self, error=None):
            self.advice, self.closed, self.error = [], False, error

        def __len__(self):
            return 4096

        def madvise(self, advice):
            self.advice.append(advice)
            if self.error:
                raise self.error

        def close(self):
            self.closed = True

    pool = _training._ReleasedBuffers()
    first, second = Map(), Map(OSError(22, "Invalid argument"))
    pool._release(first)
    assert pool._kept is first and not first.closed
    pool._release(second)
    assert pool._kept is second and first.closed and not second.closed
    if hasattr(mmap, "MADV_FREE"):
        assert first.advice == [mmap.MADV_FREE] and second.advice == [mmap.MADV_FREE]
    pool.clear()
    assert second.closed and pool._kept is None
    pool.KEEP_MAX_BYTES = 4095  # larger than kept: closed at once
    large = Map()
    pool._release(large)
    assert large.closed and pool._kept is None and large.advice == []


def test_released_maps_are_unmapped_without_an_ignored_exception(monkeypatch):
    """Real maps: an array over the size limit, and maps released by arrays
    that die one after another, are unmapped when their arrays go, and no
    finalizer prints an ignored exception (the array still exports its map
    while its finalizer runs: `mmap.close` raised BufferError there, which
    Python reported as "Exception ignored" on every fit over the limit and
    in concurrent fits)."""
    import gc
    import sys
    import weakref

    raised = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    maps = []
    private_map = _training._private_map

    def recorded(size):
        buffer = private_map(size)
        maps.append(weakref.ref(buffer))
        return buffer

    monkeypatch.setattr(_training, "_private_map", recorded)
    pool = _training._ReleasedBuffers()
    pool.KEEP_MAX_BYTES = 1 << 16
    large = pool.array(1 << 17, np.float32, 1 << 15)
    large[:] = 1.0
    del large
    gc.collect()
    assert maps[0]() is None and pool._kept is None  # unmapped, not kept
    arrays = [pool.array(4096, np.float64, 512) for _ in range(3)]
    del arrays  # three releases in a row: the last is kept, the others unmapped
    gc.collect()
    assert [m() is None for m in maps[1:]].count(False) == 1
    assert pool._kept is not None and not pool._kept.closed
    pool.clear()
    gc.collect()
    assert all(m() is None for m in maps)
    assert raised == []


def test_native_row_hash_is_numpys_in_any_number_of_threads():
    """The library's hash of each row (`row_copy.cc`) is `_hash_words`' to
    the bit, in one thread and in several (blocks of rows), for float32 and
    float64 rows, and the copy is the rows' bytes."""
    from keras_ln.layers import _native

    _native_ops()
    copy = _native.copy_rows()
    rng = np.random.default_rng(9)
    for X in (rng.normal(size=(40_000, 33)).astype(np.float32), rng.normal(size=(9_000, 61))):
        words = _training._words(X)
        keys = _training._hash_keys(words.shape[1])
        expected = _training._hash_words(words)
        for threads in (1, 2, 3):
            out = np.zeros_like(X)
            hashes = np.zeros(len(X), np.uint64)
            copy(X.ctypes.data, out.ctypes.data, len(X), X.nbytes // len(X), keys.ctypes.data,
                 hashes.ctypes.data, threads)
            np.testing.assert_array_equal(hashes, expected)
            np.testing.assert_array_equal(out.view(np.uint8), X.view(np.uint8))


def test_batches_in_group_order_as_a_stable_sort():
    """`epoch_batches` orders each full batch by (group, position in the
    batch), as a stable argsort of the groups would, duplicates merged."""
    rng = np.random.default_rng(2)
    checked = {True: 0, False: 0}
    for groups in (rng.permutation(64), rng.integers(0, 40, 64)):  # distinct rows; many duplicates
        _check_batches(groups, rng, checked)
    assert checked[True] >= 12 and checked[False] > 0  # both kinds of batch seen


def _check_batches(groups, rng, checked):
    weights = np.ones(64)
    orders = [rng.permutation(64).astype(np.int32) for _ in range(3)]
    arrays = _training.epoch_batches(orders, 16, groups, weights, pad=True, dtype=np.float32)
    for e, order in enumerate(orders):
        for b, batch in enumerate(order.reshape(4, 16)):
            stable = batch[np.argsort(groups[batch], kind="stable")]
            n = arrays["n_valid"][e, b]
            kept, summed = _training.merge_duplicates(stable, groups, weights)
            checked[bool(n == 16)] += 1
            if n == 16:  # no duplicates: the stable order itself
                np.testing.assert_array_equal(arrays["idx"][e, b], stable)
            else:
                np.testing.assert_array_equal(np.sort(groups[arrays["idx"][e, b, :n]]), groups[kept])
                np.testing.assert_array_equal(arrays["w"][e, b, :n], summed)
            assert np.all(np.diff(groups[arrays["idx"][e, b, :n]]) >= 0)


def _native_ops():
    from keras_ln.layers import _native

    ops = _native.ops()
    if ops is None:
        pytest.skip(f"no native library: {_native.load_error()}")
    return ops


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_native_adam_is_resource_apply_adam_to_the_bit(dtype):
    """keras_ln's one-op Adam update of several variables against TensorFlow's
    `ResourceApplyAdam` of each: bitwise equal over steps of gradients of
    very different scales, for a scalar, vectors, matrices and a variable
    large enough to be split into shards; a value read before the update
    keeps its old contents (the variable is copied, not written under it)."""
    import tensorflow as tf

    ops = _native_ops()
    rng = np.random.default_rng(0)
    shapes = [(), (7,), (30, 100), (300, 513)]
    start = [rng.normal(size=s).astype(dtype) for s in shapes]

    def slots():
        return [[tf.Variable(w), tf.Variable(np.zeros_like(w)), tf.Variable(np.zeros_like(w))] for w in start]

    ours, theirs = slots(), slots()
    for t in range(1, 6):
        grads = [tf.constant((rng.normal(size=s) * 10.0 ** rng.integers(-6, 3)).astype(dtype)) for s in shapes]
        scalars = {k: tf.constant(v, dtype) for k, v in dict(
            beta1_power=0.9 ** t, beta2_power=0.999 ** t, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8).items()}
        for (var, m, v), g in zip(theirs, grads):
            tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, grad=g, **scalars)
        before = ours[2][0].read_value()
        kept = before.numpy().copy()
        ops.keras_ln_apply_adam(var=[s[0].handle for s in ours], m=[s[1].handle for s in ours],
                                v=[s[2].handle for s in ours], grad=grads, **scalars)
        np.testing.assert_array_equal(before.numpy(), kept)
        assert not np.array_equal(ours[2][0].numpy(), kept)
        for a, b in zip(ours, theirs):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_native_adam_rejects_a_gradient_of_another_shape():
    import tensorflow as tf

    ops = _native_ops()
    var, m, v = (tf.Variable(np.zeros((3, 4), "float32")) for _ in range(3))
    one = tf.constant(1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"var\[0\] has shape \[3,4\], its gradient \[4,3\]"):
        ops.keras_ln_apply_adam(var=[var.handle], m=[m.handle], v=[v.handle], grad=[tf.ones((4, 3))],
                                beta1_power=one, beta2_power=one, lr=one, beta1=one, beta2=one, epsilon=one)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Adam's scalars must be \[\], got \[2\]"):
        ops.keras_ln_apply_adam(var=[var.handle], m=[m.handle], v=[v.handle], grad=[tf.ones((3, 4))],
                                beta1_power=one, beta2_power=one, lr=tf.ones([2]), beta1=one, beta2=one,
                                epsilon=one)
    np.testing.assert_array_equal(var.numpy(), 0.0)  # a refused update changes nothing


@pytest.mark.parametrize("normalization", [None, "layer", "batch"])
def test_graph_fits_with_native_and_tensorflow_adam_are_bitwise_equal(table, normalization, monkeypatch,
                                                                     traced_loop):
    """A graph fit whose steps update with the native op and one with
    `ResourceApplyAdam` (XLA's, and the fallback without the library):
    the same loss curve and predictions, to the bit."""
    from keras_ln.sklearn import _execution

    _native_ops()
    X, y = table
    params = dict(hidden_layer_sizes=(16, 8), max_iter=20, batch_size=50, normalization=normalization,
                  random_state=0, tol=1e-3, n_iter_no_change=3)
    assert _training._execution_mode(X, 20, 5) == "graph"
    native = _execution._native_adam
    fits = {}
    for name, choice in (("native", native), ("tensorflow", lambda tf: None)):
        calls = []
        monkeypatch.setattr(_execution, "_PROGRAMS", type(_execution._PROGRAMS)())  # traced anew
        monkeypatch.setattr(_execution, "_native_adam", lambda tf: calls.append(choice(tf)) or calls[-1])
        fits[name] = _fit(MLPClassifier(**params), X, y)
        assert calls and all((c is not None) == (name == "native") for c in calls)
    with_native, without = fits["native"], fits["tensorflow"]
    assert with_native.loss_curve_ == without.loss_curve_
    np.testing.assert_array_equal(with_native.predict_proba(X), without.predict_proba(X))


def test_one_unit_outputs_train_padded_to_two_columns_to_rounding(table, monkeypatch, traced_loop):
    """The step of a one-output network (in a graph) multiplies by its
    one-unit kernel padded with a column of zeros (`_StepOutputDense`, in
    the program's training view only): the same fit as keras' `Dense`, to
    rounding (float64), the same stopping epoch; the fitted model a user
    sees keeps keras' `Dense`."""
    import keras

    from keras_ln.sklearn import _execution

    X, _ = table
    y = X[:, 0] - 2 * X[:, 1] * X[:, 2]
    params = dict(hidden_layer_sizes=(16,), max_iter=40, batch_size=50, random_state=0, tol=1e-4,
                  n_iter_no_change=3)
    fits = {}
    for name, choice in (("padded", _execution._step_output_view), ("keras", lambda view: view)):
        monkeypatch.setattr(_execution, "_PROGRAMS", type(_execution._PROGRAMS)())  # traced anew
        monkeypatch.setattr(_execution, "_step_output_view", choice)
        fits[name] = _fit(MLPRegressor(**params), X, y)
        program = next(iter(_execution._PROGRAMS.values()))
        kinds = {type(layer).__name__ for layer in program.step_view.layers}
        assert ("_StepOutputDense" in kinds) == (name == "padded")
        # the same variables in the same order: the hidden layers' are the view's own
        assert [v.shape for v in program.step_view.trainable_variables] == [
            v.shape for v in program.view.trainable_variables]
        assert all(a is b for a, b in zip(program.step_view.trainable_variables[:-2],
                                          program.view.trainable_variables[:-2]))
    padded, plain = fits["padded"], fits["keras"]
    assert padded.n_iter_ == plain.n_iter_ > 3
    np.testing.assert_allclose(padded.loss_curve_, plain.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(padded.predict(X), plain.predict(X), rtol=1e-10, atol=1e-12)
    assert all(type(layer) is not _execution._StepOutputDense for layer in padded.model_.layers)
    assert type(padded.model_.get_layer("output")) is keras.layers.Dense


@pytest.mark.parametrize("cell, bidirectional, normalization", [("lstm", True, "layer"), ("lstm", False, "batch"),
                                                                ("gru", True, None)])
def test_sequence_regressors_train_through_the_padded_output(cell, bidirectional, normalization):
    """The recurrent layers stay the view's own (shared, not cloned): their
    variables are the very objects the fit updates; only the one-unit head
    is padded."""
    from keras_ln.sklearn import LSTMRegressor
    from keras_ln.sklearn import _execution

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6, 3))
    est = _fit(LSTMRegressor(units=(4, 4), cell=cell, bidirectional=bidirectional, normalization=normalization,
                             dropout=0.1, max_iter=3, batch_size=16, random_state=0), X, X[:, :, 0].sum(1))
    program = _execution._PROGRAMS[est._program_key]
    assert type(program.step_view.layers[-1]) is _execution._StepOutputDense
    assert program.step_view.layers[:-1] == program.view.layers[:-1]
    assert np.all(np.isfinite(est.loss_curve_)) and est.predict(X).shape == (40,)


@pytest.mark.parametrize("make", [
    lambda: MLPClassifier((8, 4), normalization="batch", dropout=0.1),
    lambda: MLPClassifier((8,), normalization="layer"),
    lambda: MLPRegressor((8,), normalization=None),
    lambda: LSTMClassifier(units=(4,), normalization="batch", bidirectional=True),
])
def test_a_fit_reads_the_training_views_variables_from_the_model(make):
    """`training_variables(model)` (what a fit trains, without building the
    training view) are the variables of `_training_view(model)`, in its
    order: the view leaves out only the weightless output activation."""
    from keras_ln.sklearn import _execution

    est = make()
    X = np.random.default_rng(0).normal(size=(30, 5, 3) if isinstance(est, LSTMClassifier) else (30, 5))
    y = np.arange(30) % 3 if is_classifier(est) else X.reshape(30, -1)[:, 0]
    _fit(est.set_params(max_iter=2, random_state=0), X, y)
    view = _execution._training_view(est.model_)
    ours = _execution.training_variables(est.model_)
    theirs = (_execution._tf_variables(view.trainable_variables), _execution._tf_variables(view.non_trainable_variables))
    assert [[v.name for v in part] for part in ours] == [[v.name for v in part] for part in theirs]
    assert all(a is b for part, other in zip(ours, theirs) for a, b in zip(part, other))
    assert len(ours[0]) > 0 and (est.normalization != "batch" or len(ours[1]) > 0)
