"""The estimators' minibatch Adam loop, along the seams of sklearn's MLP.

`Stochastic` is `sklearn.neural_network.BaseMultilayerPerceptron.
_fit_stochastic`: it trains a built network on the training rows, epoch by
epoch, with sklearn's stopping rule (`update_no_improvement_count`) on the
training loss, or with early stopping on the validation loss
(`Stochastic._validation_epoch`). The epochs run in chunks as one program
each (`_execution._Program.epochs`; for the MLPs it covers, one native op:
`_execution._native_mlp`): the rows are tensors resident for the
whole fit, and a chunk's minibatches are index arrays (`epoch_batches`), so
the Python loop runs once per chunk, not once per step. A chunk is one
epoch with early stopping or `verbose` (the validation pass and the
messages come between epochs), else as many epochs as `CHUNK_INDICES`
indices hold; the rule inside the program stops where the Python loop
would have.

Minibatches follow the module doc of `_base.py`: shuffled rows (NumPy's
generator, one permutation per epoch), each batch's duplicate rows merged
and its rows in an order fixed by their contents (`row_groups`), merged
batches padded back to `batch_size` and the last, smaller batch of an epoch
padded to a full one (or, when it is the epoch's only batch, to a `bucket`
of its size), all with zero weights; without padding under batch
normalization (padding rows would enter the batch statistics).
"""

import dataclasses
import functools
import mmap
import os
import threading
import weakref

import numpy as np

from keras_ln._system import available_cores
from keras_ln.sklearn._batch_statistics import recompute_batch_statistics

# A fit with at most this many minibatch steps in all runs its loop eagerly,
# which avoids the fixed cost of tracing it (measured: an eager step of a
# small MLP costs ~10-30 ms, a trace of the loop ~0.5-1 s).
EAGER_MAX_STEPS = 12

# Indices (epochs x training rows) per chunk of epochs run as one program.
CHUNK_INDICES = 1 << 21

# A table network's loop is XLA-compiled (`_Program.epochs`, mode "xla")
# when the fit may take at least this many steps: measured on 2 cores, XLA
# halves the time of a step of a small MLP (0.14 against 0.28 ms) but its
# compilation costs ~0.5 s more than tracing a graph, which such a fit earns
# back (folds and repeated fits of the same shapes reuse the compilation).
XLA_MIN_STEPS = 1000


def bucket(n):
    """Padded row count: the next power of two, at least 16."""
    return max(16, 1 << (int(n) - 1).bit_length())


def row_groups(X, targets, x_hashes=None):
    """Ids of the distinct `(X row, target)` pairs, numbered by content.

    Rows are compared by their bytes (so NaN padding compares equal). The
    ids are the ranks of a 64-bit hash of each pair's bytes, so they depend
    on the rows' contents only, not on their positions: they put any batch
    in the same order whatever the order of the data. Pairs that share a
    hash are checked byte for byte; should two different pairs ever share
    one, the ids fall back to the byte order of the pairs (exact, and about
    ten times slower: a sort of the rows' bytes). `x_hashes`: the rows'
    `_hash_words`, where they are computed already (`training_rows`).
    """
    x_words, t_words = _words(X), _words(targets)
    if x_hashes is None:
        x_hashes = _hash_words(x_words)
    hashes = _mix(x_hashes ^ (_hash_words(t_words) * _MULTIPLIER))
    first, ids = _ranks(hashes)
    shared = np.flatnonzero(np.bincount(ids)[ids] > 1)  # rows in groups of 2+
    firsts = first[ids[shared]]
    if all(np.array_equal(w[shared], w[firsts]) for w in (x_words, t_words)):
        return ids
    return _byte_order_ids(X, targets)


def training_rows(X, targets, groups, tf):
    """The training rows `X` as a tensor, and `row_groups(X, targets)`
    where `groups` (else None).

    With the native library (`_native.copy_rows`), the rows are copied by
    the library's threads into an aligned buffer (`_aligned_empty`) that
    becomes the tensor through DLPack without another copy, each row hashed
    in the same pass; else `tf.constant` copies them and NumPy hashes them. The
    tensor and the ids are the same either way.
    """
    from keras_ln.layers import _native

    rows = np.ascontiguousarray(X)
    row_bytes = rows.nbytes // max(len(rows), 1)
    copy = _native.copy_rows() if rows.size and row_bytes % 4 == 0 else None
    if copy is None:
        return tf.constant(rows), (row_groups(rows, targets) if groups else None)
    buffer = _aligned_empty(rows.shape, rows.dtype)
    hashes = np.empty(len(rows), np.uint64) if groups else None
    keys = _hash_keys(row_bytes // 4)
    copy(rows.ctypes.data, buffer.ctypes.data, len(rows), row_bytes, keys.ctypes.data,
         None if hashes is None else hashes.ctypes.data, available_cores())
    tensor = tf.experimental.dlpack.from_dlpack(buffer.__dlpack__())
    return tensor, (row_groups(rows, targets, hashes) if groups else None)


# TensorFlow's kernels require buffers aligned for its widest vectors.
_ALIGNMENT = 64


def _aligned_empty(shape, dtype):
    """A C-ordered array whose data is `_ALIGNMENT`-aligned.

    A large one is a private anonymous memory map (page-aligned) from
    `_ROWS_BUFFERS`, which takes it back when the array and every view of it
    (the tensor's through DLPack) are gone; a map and not a NumPy array,
    which NumPy advises the kernel to back with huge pages (after an sklearn
    fit, the kernel's compaction made the first touch of a fresh 40 MB array
    take 50-70 ms here). A small one is an offset view of
    a NumPy array: many small fits (sklearn's checks) should not pay a
    page-sized map and its system calls each."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    size = count * dtype.itemsize
    if size >= mmap.PAGESIZE:
        return _ROWS_BUFFERS.array(size, dtype, count).reshape(shape)
    raw = np.empty(size + _ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    return raw[start:start + size].view(dtype).reshape(shape)


class _ReleasedBuffers:
    """The memory map of the last fit's training rows, kept for the next.

    Paging in a fresh map costs far more than the copy into it: measured
    here, 20-38 ms for the first touch of 40 MB and 3-15 ms to unmap it,
    against about 2 ms to write 40 MB into pages already mapped; folds,
    grid searches and the AutoML fit one shape after another. One map is
    kept (the last released), reused by a fit that needs between half of it
    and all of it, and marked lazily free (`MADV_FREE`) while kept, so the
    kernel reclaims its pages under memory pressure instead of swapping
    them (a reclaimed page reads as zeros and is paged in again when
    written: the copy writes every byte before any read). Thread-safe:
    threads may fit at once; a fit that finds no kept map maps a new one.

    A map larger than `KEEP_MAX_BYTES` is not kept: the memory a process
    holds between fits stays bounded (a Dask worker's nanny counts lazily
    freed pages as the worker's until the kernel reclaims them), and a fit
    on that many rows lasts long enough for its paging to matter little.

    Private, not shared, anonymous maps: a shared one is backed by shmem,
    whose first touch and unmap measured about 1.5 and 3-5 times slower.
    """

    KEEP_MAX_BYTES = 256 << 20

    def __init__(self):
        self._lock = threading.Lock()
        self._kept = None

    def array(self, size, dtype, count):
        """A `count`-long 1-D array of `dtype` (`size` bytes) in a map that
        returns here when the array and its views are gone."""
        kept = self._take()
        if kept is not None and size <= len(kept) <= 2 * size:
            buffer = kept
        else:
            if kept is not None:
                _unmap(kept)
            buffer = _private_map(size)
        array = np.frombuffer(buffer, dtype, count)
        # The map goes back when `array` (the owner of its export: every
        # view and DLPack capsule refers to it) is collected, not at exit.
        weakref.finalize(array, self._release, buffer).atexit = False
        return array

    def _release(self, buffer):
        # (Called while the dying array still holds its export of the map:
        # numpy clears an array's weak references before its base.)
        if len(buffer) > self.KEEP_MAX_BYTES:
            _unmap(buffer)
            return
        if hasattr(mmap, "MADV_FREE"):
            try:
                buffer.madvise(mmap.MADV_FREE)
            except OSError:  # a kernel before Linux 4.5
                pass
        with self._lock:
            buffer, self._kept = self._kept, buffer
        if buffer is not None:
            _unmap(buffer)

    def clear(self):
        """Unmap the kept map (for tests, and for a caller that wants the
        memory back at once)."""
        kept = self._take()
        if kept is not None:
            _unmap(kept)

    def _take(self):
        """The kept map (None if none), no longer kept."""
        with self._lock:
            kept, self._kept = self._kept, None
        return kept


def _unmap(buffer):
    """Closes the map now, or, while an array still exports it (the array
    whose collection released it, which numpy lets go of its base after the
    finalizer has run; or, with fits in several threads, a map another
    thread released a moment before), when the last export goes: the map's
    own deallocation unmaps it. (`mmap.close` raises BufferError while
    exported, which a finalizer could only print as an ignored exception.)"""
    try:
        buffer.close()
    except BufferError:
        pass


def _private_map(size):
    if hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS"):
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return mmap.mmap(-1, size)  # Windows: an anonymous map


_ROWS_BUFFERS = _ReleasedBuffers()
if hasattr(os, "register_at_fork"):
    # A child forked while another thread held the lock would never see it
    # released; its copy of the kept map (private: copy-on-write) stays usable.
    os.register_at_fork(after_in_child=lambda: setattr(_ROWS_BUFFERS, "_lock", threading.Lock()))


def _ranks(keys):
    """`np.unique(keys, return_index=True, return_inverse=True)[1:]`, about
    four times faster: each key's rank among the distinct keys, and one
    position of each distinct key (not always the first: only `row_groups`'
    check of shared hashes reads them, and any member of a group serves).
    An unstable sort suffices, since equal keys get the same rank whatever
    their order (np.unique's stable sort is the slow part)."""
    order = np.argsort(keys)
    ordered = keys[order]
    new = np.empty(len(keys), bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    ids = np.empty(len(keys), np.intp)
    ids[order] = np.cumsum(new) - 1
    return order[new], ids


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_KEY_SEED = 0x6B65726173  # the multilinear hash's keys, the same on every machine
_HASH_CHUNK = 2048  # rows per product: its uint64 copy stays in cache


def _words(a):
    """The bytes of each row of `a` as 32-bit words (zero-padded)."""
    a = np.ascontiguousarray(a).reshape(len(a), -1).view(np.uint8)
    pad = -a.shape[1] % 4
    if pad:
        a = np.concatenate([a, np.zeros((len(a), pad), np.uint8)], axis=1)
    return a.view(np.uint32)


def _mix(h):
    """splitmix64's finalizer: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _hash_words(words):
    """A 64-bit hash of each row of 32-bit `words`: the multilinear hash
    sum_j words[:, j] * K_j mod 2^64, with fixed random odd 64-bit keys K_j,
    as an integer matrix product (exact, so the same on every CPU). Two rows
    that differ collide for a fraction of at most 2^(v-63) <= 2^-32 of the
    odd keys, v < 32 being the lowest power of 2 dividing a word's
    difference (31 for a sign bit alone), far less for most differences;
    `row_groups` checks the rows of every shared hash anyway."""
    keys = _hash_keys(words.shape[1])
    h = np.empty(len(words), np.uint64)
    for start in range(0, len(words), _HASH_CHUNK):
        h[start:start + _HASH_CHUNK] = words[start:start + _HASH_CHUNK].astype(np.uint64) @ keys
    return h


@functools.lru_cache(maxsize=64)
def _hash_keys(n_words):
    """`_hash_words`' odd 64-bit keys for rows of `n_words` words (drawn
    once per width, read-only)."""
    keys = np.random.default_rng(_KEY_SEED).integers(
        0, np.iinfo(np.uint64).max, size=n_words, dtype=np.uint64,
        endpoint=True) | np.uint64(1)
    keys.flags.writeable = False
    return keys


def _byte_order_ids(X, targets):
    """`row_groups`' ids numbered in the byte order of the pairs."""

    def ids(a):
        a = np.ascontiguousarray(a).reshape(len(a), -1)
        rows = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1])))
        return np.unique(rows.ravel(), return_inverse=True)[1].ravel()

    x_ids, y_ids = ids(X), ids(targets)
    pairs = x_ids.astype(np.int64) * (int(y_ids.max()) + 1) + y_ids
    return np.unique(pairs, return_inverse=True)[1].ravel()


def merge_duplicates(idx, groups, weights):
    """The batch `idx` with one row per distinct row, in group order.

    Returns the indices of the rows kept (the first of each group) and
    their weights, summed over the group: a row that a batch holds `k`
    times counts as one row of `k` times its weight.
    """
    _, first, inverse = np.unique(
        groups[idx], return_index=True, return_inverse=True
    )
    summed = np.bincount(
        inverse.ravel(), weights=weights[idx], minlength=len(first)
    )
    return idx[first], summed


def update_no_improvement_count(count, value, best, tol):
    """sklearn's stopping rule (`BaseMultilayerPerceptron.
    _update_no_improvement_count`) for a quantity to minimize: the count of
    consecutive epochs whose `value` did not beat the best so far by more
    than `tol`, and the new best. Training stops once the count exceeds
    `n_iter_no_change`. (`_Program.epochs` applies the same rule inside
    its loop.)"""
    count = count + 1 if value > best - tol else 0
    return count, min(best, value)


@dataclasses.dataclass
class EpochBatches:
    """The minibatches of `n_epochs` epochs as arrays (see `epoch_batches`)."""

    x: object  # the training rows, a tensor
    y: object
    idx: np.ndarray  # (epochs, full batches, batch_size) row indices
    w: np.ndarray  # their sample weights (0: padding)
    n_valid: np.ndarray  # (epochs, full batches) rows that are not padding
    idx_last: np.ndarray  # (epochs, padded size of the last batch), or size 0
    w_last: np.ndarray
    n_last: np.ndarray  # (epochs,)
    batch_weight: np.ndarray  # (epochs, full batches + 1) float64 batch weights
    epoch_weight: np.ndarray  # (epochs,) their sums
    n_epochs: int  # epochs to run (the arrays may hold more: a fixed shape)

    def tensors(self, tf):
        """What the program takes (padding is carried by the zero weights:
        the valid counts stay here, for inspection)."""
        return (self.x, self.y) + tuple(tf.constant(a) for a in (
            self.idx, self.w, self.idx_last, self.w_last, self.batch_weight,
            self.epoch_weight,
        )) + (tf.constant(self.n_epochs, tf.int32),)


def _one_batch(idx, size, groups, weights, merged=False):
    """Indices, weights and valid count of one batch, merged and padded to
    `size` (`merged`: `idx` is merged already, `weights` are its own)."""
    if merged:
        w = weights
    elif groups is None:
        w = weights[idx]
    else:
        idx, w = merge_duplicates(idx, groups, weights)
    n = len(idx)
    if size > n:
        idx = np.concatenate([idx, np.repeat(idx[:1], size - n)])
        w = np.concatenate([w, np.zeros(size - n)])
    return idx, w, n


def epoch_batches(orders, batch_size, groups, weights, pad, dtype, capacity=None):
    """The minibatches of the epochs whose row orders are `orders`.

    Each epoch is cut into `len(order) // batch_size` full batches and a
    last one of the remaining rows (if any). With `groups` (`row_groups`) a
    batch's duplicates are merged (`merge_duplicates`) and its rows are in
    group order; merged batches are padded back (repeated first row, weight
    0) to `batch_size`. With `pad`, the last one is padded to `batch_size`
    too and becomes the epoch's last full batch (`idx_last` is then empty),
    or, if it is the epoch's only batch, padded to `bucket` of its size.
    `capacity` (at least `len(orders)`) sizes the arrays, so that chunks of
    fewer epochs keep the shape of the first.

    Returns the arrays of `EpochBatches` but `x` and `y`, as a dict.
    """
    n_train = len(orders[0])
    # A batch of all the rows is a "last" batch (its padding follows its
    # merged size, so a one-batch fit is the same program whatever the
    # duplicates: weights as repetitions bitwise).
    n_full = n_train // batch_size if batch_size < n_train else 0
    rest = n_train - n_full * batch_size
    last = [_one_batch(order[n_full * batch_size:], 0, groups, weights)
            for order in orders] if rest else []
    last_size = max(n for _, _, n in last) if last else 0
    # With padding, a smaller last batch after full ones is padded to
    # `batch_size` and run as one more full batch: one step in the program
    # (one trace, a static shape), for a few padding rows per epoch.
    fold = pad and n_full > 0 and last_size > 0
    if pad and last_size:
        last_size = batch_size if fold else bucket(last_size)
    n_batches = n_full + fold
    capacity = max(capacity or 0, len(orders))
    idx = np.zeros((capacity, n_batches, batch_size), np.int32)
    w = np.zeros((capacity, n_batches, batch_size), dtype)
    n_valid = np.zeros((capacity, n_batches), np.int32)
    idx_last = np.zeros((capacity, 0 if fold else last_size), np.int32)
    w_last = np.zeros((capacity, 0 if fold else last_size), dtype)
    n_last = np.zeros(capacity, np.int32)
    batch_weight = np.zeros((capacity, n_batches + 1))
    for e, order in enumerate(orders):
        full = order[:n_full * batch_size].reshape(n_full, batch_size)
        n_valid[e, :n_full] = batch_size
        if groups is None:
            idx[e, :n_full] = full
        else:  # each batch in group order; merged where it holds duplicates
            # sorted by (group, position): one sort of int64 keys (ids and
            # positions below 2^31), faster than a stable argsort
            key = (groups[full].astype(np.int64) << 32) | np.arange(batch_size, dtype=np.int64)
            key.sort(axis=1)
            idx[e, :n_full] = np.take_along_axis(full, (key & 0xFFFFFFFF).astype(np.intp), axis=1)
            sorted_groups = groups[idx[e, :n_full]]
            for b in np.flatnonzero((sorted_groups[:, 1:] == sorted_groups[:, :-1]).any(axis=1)):
                idx[e, b], w[e, b], n_valid[e, b] = _one_batch(full[b], batch_size, groups, weights)
        merged = n_valid[e, :n_full] < batch_size
        w[e, :n_full][~merged] = weights[idx[e, :n_full][~merged]]
        batch_weight[e, :n_full] = weights[full].sum(axis=1)
        if rest:
            last_batch = _one_batch(
                last[e][0][:last[e][2]], last_size, groups, last[e][1], merged=True)
            if fold:
                idx[e, n_full], w[e, n_full], n_valid[e, n_full] = last_batch
            else:
                idx_last[e], w_last[e], n_last[e] = last_batch
        # The last batch's weight is the last entry either way (0 if none).
        batch_weight[e, n_full] = np.sum(weights[order[n_full * batch_size:]])
    # The epoch's total weight summed batch after batch, as Python's sum.
    epoch_weight = np.cumsum(batch_weight, axis=1)[:, -1]
    epoch_weight[len(orders):] = 1.0  # unused epochs: no division by zero
    return dict(idx=idx, w=w, n_valid=n_valid, idx_last=idx_last, w_last=w_last,
                n_last=n_last, batch_weight=batch_weight, epoch_weight=epoch_weight,
                n_epochs=len(orders))


class Stochastic:
    """sklearn's `_fit_stochastic` for one fit: the epochs of minibatch Adam
    steps on a built network, the stopping rule, early stopping.

    The estimator's parameters are read from `est`; what a continued fit
    (`warm_start`, `partial_fit`) continues comes from its fitted
    attributes. `run` returns the fitted attributes as a dict.
    """

    def __init__(self, est, program, model, x_train, x_tensor, y_train, w_train,
                 groups, batch_size, epochs, validation, continuing,
                 variables, hyperparameters, shuffle_rng, tf):
        self.est, self.program, self.model = est, program, model
        self.x_rows, self.w_train, self.groups = x_train, w_train, groups
        self.x = x_tensor  # the rows `x_train` as a tensor (`training_rows`)
        self.y = tf.constant(y_train)
        self.batch_size, self.epochs = batch_size, epochs
        self.validation = validation  # (X_val, y_val, w_val) or None
        self.continuing = continuing
        self.variables, self.hyperparameters = variables, hyperparameters
        self.shuffle_rng, self.tf = shuffle_rng, tf
        self.dtype = x_train.dtype
        n_train = len(x_train)
        self.n_batches = -(-n_train // batch_size)
        self.mode = _execution_mode(x_train, epochs, self.n_batches)
        # Batches are padded (zero weight) to a few sizes, so that compiled
        # kernels keyed by shape (the layer-norm fast path is XLA-compiled)
        # are reused across batches and fits; not with batch statistics.
        self.pad = est.normalization != "batch"

    def _orders(self, n):
        n_train = len(self.x_rows)
        if self.est.shuffle and self.n_batches > 1:
            return [self.shuffle_rng.permutation(n_train).astype(np.int32) for _ in range(n)]
        return [np.arange(n_train, dtype=np.int32)] * n

    def run(self):
        est = self.est
        early = self.validation is not None
        fitted = _continued_curves(est, self.continuing, early)
        # One epoch per program call with early stopping (a validation pass
        # between epochs) or messages; else chunks of up to CHUNK_INDICES.
        chunk = 1 if early or est.verbose else max(
            1, min(self.epochs, CHUNK_INDICES // len(self.x_rows)))
        best_weights = self.model.get_weights() if early else None
        no_improvement, n_iter, converged = 0, 0, False
        while n_iter < self.epochs and not converged:
            arrays = epoch_batches(
                self._orders(min(chunk, self.epochs - n_iter)), self.batch_size,
                self.groups, self.w_train, self.pad, self.dtype, capacity=chunk)
            batches = EpochBatches(self.x, self.y, **arrays)
            best = np.inf if early else fitted["best_loss_"]
            losses = self.program.epochs(
                self.mode, batches,
                (not early, est.tol, est.n_iter_no_change, best, no_improvement),
                self.variables, self.hyperparameters)
            for epoch_loss in losses:
                n_iter += 1
                fitted["loss_curve_"].append(float(epoch_loss))
                if not np.isfinite(epoch_loss):
                    raise ValueError(
                        f"The training loss became {epoch_loss} at iteration "
                        f"{n_iter}: the optimization diverged. Try a smaller "
                        "learning_rate_init or scaling the input (e.g. "
                        "StandardScaler).")
                if est.verbose:
                    print(f"Iteration {n_iter}, loss = {epoch_loss:.8f}")
                if early:
                    no_improvement, improved = self._validation_epoch(fitted, no_improvement)
                    if improved:
                        best_weights = self.model.get_weights()
                else:
                    no_improvement, fitted["best_loss_"] = update_no_improvement_count(
                        no_improvement, float(epoch_loss), fitted["best_loss_"], est.tol)
                if no_improvement > est.n_iter_no_change:
                    if est.verbose:
                        what = "Validation loss" if early else "Training loss"
                        print(f"{what} did not improve more than tol={est.tol:f} "
                              f"for {est.n_iter_no_change} consecutive epochs. Stopping.")
                    converged = True
                    break
        if early:
            self.model.set_weights(best_weights)
        if est.normalization == "batch":
            # Population statistics of the final weights (see the helper).
            recompute_batch_statistics(self.model, self.x_rows, self.program)
        fitted["n_iter_"] = n_iter
        fitted["converged"] = converged
        return fitted

    def _validation_epoch(self, fitted, no_improvement):
        """Early stopping after an epoch: the validation loss and score,
        and the rule on the loss. Returns the new count and whether the loss
        is the lowest so far (the weights to keep)."""
        est = self.est
        X_val, y_val, w_val = self.validation
        if est.normalization == "batch":
            # Inference needs population statistics (see the end of `run`).
            recompute_batch_statistics(self.model, self.x_rows, self.program)
        out = est._forward(X_val, self.model, logits=True)
        val_loss = est._data_loss(out, y_val, w_val)
        score = est._score_outputs(out, y_val, w_val)
        fitted["validation_loss_curve_"].append(val_loss)
        fitted["validation_scores_"].append(score)
        if est.verbose:
            print(f"Validation loss: {val_loss:f}, score: {score:f}")
        improved = val_loss < fitted["best_validation_loss_"]
        if improved:
            fitted["best_validation_score_"] = score
        no_improvement, fitted["best_validation_loss_"] = update_no_improvement_count(
            no_improvement, val_loss, fitted["best_validation_loss_"], est.tol)
        return no_improvement, improved


def _continued_curves(est, continuing, early):
    """The curves and best values a fit starts from: a continued fit
    continues them, as sklearn's."""
    best_loss = est.best_loss_ if continuing else None
    fitted = {
        "loss_curve_": list(est.loss_curve_) if continuing else [],
        "best_loss_": None if early else (np.inf if best_loss is None else best_loss),
        "validation_loss_curve_": None, "validation_scores_": None,
        "best_validation_loss_": None, "best_validation_score_": None,
    }
    if early:
        was_early = continuing and est.validation_loss_curve_ is not None
        fitted.update(
            validation_loss_curve_=list(est.validation_loss_curve_) if was_early else [],
            validation_scores_=list(est.validation_scores_) if was_early else [],
            best_validation_loss_=est.best_validation_loss_ if was_early else np.inf,
            best_validation_score_=est.best_validation_score_ if was_early else None,
        )
    return fitted


def _execution_mode(x_train, epochs, n_batches):
    """"eager" for a fit of at most `EAGER_MAX_STEPS` steps, "xla" for a
    table network's fit of at least `XLA_MIN_STEPS`, else "graph" (the
    recurrent layers' native kernels run in graphs, not in XLA)."""
    steps = epochs * n_batches
    if steps <= EAGER_MAX_STEPS:
        return "eager"
    if x_train.ndim == 2 and steps >= XLA_MIN_STEPS:
        return "xla"
    return "graph"
