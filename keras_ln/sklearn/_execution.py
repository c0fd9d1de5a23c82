"""How the estimators execute a network: the traced training step, pickling, batch statistics.

`_Program` is the training step of one network structure (see the module
docstring of `_base.py`, "Execution"); `_program` keeps a small LRU cache of
them; `adam_slots` and `adam_state` hold Adam's state between fits
(`partial_fit`). `_model_to_bytes` and
`_model_from_bytes` carry a fitted network through pickles as the bytes of
its `.keras` archive.
"""

import collections
import contextlib
import functools
import os
import tempfile

import keras

from keras_ln.models import LOGITS_LAYER


def _tf():
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "keras_ln.sklearn estimators train with the TensorFlow backend. "
            f"Received: KERAS_BACKEND={keras.backend.backend()!r}"
        )
    import tensorflow as tf

    return tf


class _Program:
    """The training loop of one network structure, traceable once for all.

    A step runs the network through `stateless_call` of a *template* model
    (built with the same architecture), on variable values passed as
    arguments, and updates the variables passed in with Adam's fused update
    (the update of sklearn's `AdamOptimizer`: `_native_adam`).
    The step size, the penalty and Adam's `beta_1`, `beta_2` and `epsilon`
    are scalar tensor arguments too. `epochs` runs many epochs of steps as
    one program (a `tf.while_loop` over epochs and minibatches, with
    sklearn's stopping rule inside), so a step costs its arithmetic, not a
    Python call. Its `tf.function` is traced once per structure and reused
    by every fit of that structure in the process (folds of a grid search,
    sklearn's checks, repeated fits, any values of the hyperparameters)
    instead of once per fit; `_PROGRAMS` keeps the most recent ones.

    The MLPs that `_native_mlp` covers (`native`) run `epochs` with the
    native op instead (`_native_epochs`, `_native/mlp_ops.cc`): the same
    steps and rule in one op, nothing traced.
    """

    def __init__(self, template, loss_fn):
        tf = _tf()
        self.tf = tf
        self.template = template
        self.view = _training_view(template)
        self.step_view = _step_output_view(self.view)  # the view the step differentiates
        self.loss_fn = loss_fn
        # The native loop's description of the network, or None (`_native_mlp`).
        self.native = _native_mlp(self.view, loss_fn)
        self.loops = {
            jit: tf.function(self._epochs, jit_compile=jit, autograph=False)
            for jit in (False, True)
        }
        # Concrete functions by trace key: called directly, without the
        # polymorphic function's per-call dispatch on its arguments (about
        # 0.2 ms, a fifth of a one-row predict).
        self.traced = {}
        # Inference, traced once per sample shape (free row count): the
        # whole model's outputs (predict) and the training view's (the
        # validation loss of early stopping).
        self.inference = {
            logits: tf.function(
                functools.partial(self._infer, net), autograph=False)
            for logits, net in ((False, template), (True, self.view))
        }
        # Batch norms' population statistics (`statistics_pass`).
        self._statistics = tf.function(self._statistics_graph, autograph=False)

    @staticmethod
    def _infer(net, tv, ntv, x):
        return net.stateless_call(
            [v.read_value() for v in tv], [v.read_value() for v in ntv], x,
            training=False,
        )[0]

    def infer(self, model, x, logits=False):
        """Outputs on `x` in inference mode of `model` (a model of this
        structure; with `logits`, its training view), by the traced program
        (one trace per sample shape, with a free number of rows)."""
        tf = self.tf
        args = training_variables(model)
        fn = self.inference[logits]
        key = ("infer", logits, tuple(x.shape[1:]), x.dtype)
        if key not in self.traced:
            self.traced[key] = fn.get_concrete_function(
                *args, tf.TensorSpec([None] + list(x.shape[1:]), x.dtype))
        return self.traced[key](*args, x)

    def statistics_pass(self, model, values, x, momentum):
        """One pass of `recompute_batch_statistics` by the traced program:
        the non-trainable values of `model` (a model of this structure)
        after a training-mode pass over the rows `x` from `values`, with
        every batch norm's momentum `momentum` and dropout off. Traced once
        per sample shape, with a free number of rows."""
        tf = self.tf
        trainable = _tf_variables(model.trainable_variables)
        # Tensors, as the specs of the trace say (the first chunk's values
        # are the variables themselves).
        values = [tf.convert_to_tensor(v) for v in values]
        key = ("statistics", tuple(x.shape[1:]), x.dtype)
        if key not in self.traced:
            self.traced[key] = self._statistics.get_concrete_function(
                trainable, [tf.TensorSpec(v.shape, v.dtype) for v in values],
                tf.TensorSpec([None] + list(x.shape[1:]), x.dtype),
                tf.TensorSpec([], tf.float64))
        return self.traced[key](trainable, values, x, tf.constant(momentum, tf.float64))

    def _statistics_graph(self, trainable, values, x, momentum):
        tf = self.tf
        from keras_ln.sklearn._batch_statistics import statistics_mode

        with statistics_mode(self.template, lambda layer: tf.cast(
                momentum, layer.variable_dtype)):
            _, new = self.template.stateless_call(
                [v.read_value() for v in trainable], values, x, training=True)
        return new

    def epochs(self, mode, batches, stopping, variables, hyperparameters):
        """Up to `batches.n_epochs` epochs of minibatch steps in one call.

        `batches` (`_training.EpochBatches`) holds every epoch's minibatches
        as index and weight arrays; `stopping` is `(active, tol,
        n_iter_no_change, best, count)`, sklearn's rule on the training loss
        (`_training.update_no_improvement_count`), checked after every epoch
        when `active`; the loop also ends after an epoch whose loss is not
        finite. `mode`: "eager" (a short fit: no trace), "graph" (one
        `tf.function` for the whole loop, traced once per sample shape,
        batch size and whether epochs end in a smaller batch, with free
        numbers of epochs and batches) or "xla" (the same function
        XLA-compiled: one program per array shape, about twice as fast per
        step of a small MLP, but a compilation of about a second).

        Returns the epoch losses (float64, those of the epochs run) as NumPy.
        """
        tf = self.tf
        data = batches.tensors(tf)  # x, y, idx, w, idx_last, w_last, weights, n_epochs
        rule = tuple(tf.constant(v, dtype) for v, dtype in zip(
            stopping, (tf.bool, tf.float64, tf.int32, tf.float64, tf.int32)))
        ops = self.native and NATIVE_MLP_LOOP and _native_ops()
        if ops:
            return self._native_epochs(ops, data, rule, variables, hyperparameters)
        args = data + rule + tuple(variables) + tuple(hyperparameters)
        if mode == "eager":
            losses, ran = self._epochs(*args)
            return losses.numpy()[:int(ran)]
        fn = self.loops[mode == "xla"]
        with _executor(tf, mode):
            losses, ran = self._call(fn, mode, data, rule, variables, hyperparameters, args)
        return losses.numpy()[:int(ran)]

    def _native_epochs(self, ops, data, rule, variables, hyperparameters):
        """`epochs` by the native loop (`_native/mlp_ops.cc`): the same
        steps, losses and rule in one op, run in the calling thread and
        (`NATIVE_MLP_THREADS`) a helper thread."""
        tf = self.tf
        x, y = data[:2]
        tv, ntv, ms, vs, t = variables
        output, hidden, layer_norm, activation, ln_epsilon = self.native
        n_outputs = tv[-1].shape[0]
        if output == "softmax":  # class indices -> one-hot rows
            y = tf.one_hot(y, n_outputs, dtype=x.dtype)
        else:
            y = tf.reshape(tf.cast(y, x.dtype), [-1, n_outputs])
        losses, ran, new_tv, new_ms, new_vs, new_t = ops.keras_ln_mlp_epochs(
            x, y, *data[2:], *rule,
            params=[v.read_value() for v in tv],
            m=[v.read_value() for v in ms], v=[v.read_value() for v in vs],
            t=t.read_value(), lr=hyperparameters[0], half_alpha=hyperparameters[1],
            beta_1=hyperparameters[2], beta_2=hyperparameters[3],
            epsilon=hyperparameters[4],
            ln_epsilon=tf.constant(ln_epsilon, tf.float64),
            hidden=hidden, layer_norm=layer_norm, activation=activation,
            output=output, threads=NATIVE_MLP_THREADS,
        )
        for var, value in zip([*tv, *ms, *vs, t], [*new_tv, *new_ms, *new_vs, new_t]):
            var.assign(value)
        return losses.numpy()[:int(ran)]

    def _call(self, fn, mode, data, rule, variables, hyperparameters, args):
        """Trace the loop `fn` for this shape if it is new, and call it."""
        tf = self.tf
        x, y, idx, w, idx_last, w_last = data[:6]
        # XLA compiles per shape anyway; a graph's last batch has a free
        # size (a static one would cost a trace per new bucket of data sizes)
        key = (mode, tuple(x.shape[1:]), tuple(y.shape[1:]), idx.shape[2],
               idx_last.shape[1] if mode == "xla" else idx_last.shape[1] > 0)
        if key not in self.traced:
            def free(t, static):  # the leading dimensions free, the rest as `t`
                return tf.TensorSpec([None] * (t.shape.rank - static) + list(
                    t.shape[t.shape.rank - static:]), t.dtype)

            specs = [free(x, x.shape.rank - 1), free(y, y.shape.rank - 1),
                     free(idx, 1), free(w, 1),
                     # static: the last batch's size under XLA, and its absence
                     free(idx_last, mode == "xla" or idx_last.shape[1] == 0),
                     free(w_last, mode == "xla" or idx_last.shape[1] == 0)]
            specs += [free(t, 0) for t in data[6:] + rule]
            specs += list(variables) + [free(h, 0) for h in hyperparameters]
            self.traced[key] = fn.get_concrete_function(*specs)
        return self.traced[key](*args)

    def _epochs(
        self, x, y, idx, w, idx_last, w_last, batch_weight,
        epoch_weight, n_epochs, active, tol, patience, best, count,
        tv, ntv, ms, vs, t, *hyperparameters,
    ):
        """The loop of `epochs`: `idx`, `w` (n_epochs, n_batches,
        batch_size) are the full batches, `*_last` the last, smaller batch
        of each epoch (none where its static size is 0), padding rows of
        weight 0 in both, `batch_weight` (n_epochs, n_batches + 1) the
        total sample weights of the batches and `epoch_weight` their sum per
        epoch (both float64, summed by NumPy as the Python loop did)."""
        tf = self.tf
        f64 = tf.float64
        n_batches = tf.shape(idx)[1]
        has_last = idx_last.shape[1] != 0  # None (free) or positive: a last batch
        step_args = (tv, ntv, ms, vs, t) + tuple(hyperparameters)

        def epoch(e, losses, best, count, stop):
            def batch(i, total):
                loss = self.step(x, y, w[e, i], idx[e, i], *step_args)
                return i + 1, total + tf.cast(loss, f64) * batch_weight[e, i]

            _, total = tf.while_loop(
                lambda i, _: i < n_batches, batch,
                [tf.constant(0), tf.zeros([], f64)],
            )
            if has_last:
                loss = self.step(x, y, w_last[e], idx_last[e], *step_args)
                total = total + tf.cast(loss, f64) * batch_weight[e, n_batches]
            loss = total / epoch_weight[e]
            # sklearn's `_update_no_improvement_count`, in float64 as in Python.
            count = tf.where(loss > best - tol, count + 1, 0)
            best = tf.minimum(best, loss)
            stop = tf.logical_or(
                tf.logical_not(tf.math.is_finite(loss)),
                tf.logical_and(active, count > patience),
            )
            return e + 1, losses.write(e, loss), best, count, stop

        losses = tf.TensorArray(f64, size=tf.shape(idx)[0])
        ran, losses, _, _, _ = tf.while_loop(
            lambda e, _, __, ___, stop: tf.logical_and(
                e < n_epochs, tf.logical_not(stop)),
            epoch, [tf.constant(0), losses, best, count, tf.constant(False)],
        )
        return losses.stack(), ran

    def step(
        self, x, y, w, idx, tv, ntv, ms, vs, t, lr, half_alpha,
        beta_1, beta_2, epsilon,
    ):
        """One Adam step on rows `idx` of `x` and `y`, weighted by `w` (one
        weight per entry of `idx`; padding rows have weight 0). `ms`, `vs` and `t` are Adam's moments and step count (see
        `adam_slots`)."""
        tf = self.tf
        x = tf.gather(x, idx)
        y = tf.gather(y, idx)
        values = [v.read_value() for v in tv]
        states = [v.read_value() for v in ntv]
        # 1 / the batch's total weight, outside the tape (a constant of the
        # step; 0 for a batch without weight, as divide_no_nan).
        scale = tf.math.divide_no_nan(tf.ones([], w.dtype), tf.reduce_sum(w))
        with tf.GradientTape() as tape:
            tape.watch(values)
            out, new_states = self.step_view.stateless_call(
                values, states, x, training=True
            )
            loss = tf.reduce_sum(self.loss_fn(y, out) * w)
            matrices = [a for a in values if len(a.shape) >= 2]
            if matrices:
                penalty = tf.add_n([_sum_of_squares(tf, a) for a in matrices])
                loss += half_alpha * penalty
            loss = loss * scale
        grads = tape.gradient(loss, values)
        step = t.assign_add(tf.ones([], t.dtype))
        # The variables with a gradient, by dtype (one network has one).
        groups = {}
        for var, m, v, g in zip(tv, ms, vs, grads):
            if g is not None:
                groups.setdefault(var.dtype, []).append((var, m, v, tf.convert_to_tensor(g)))
        native = _native_adam(tf)
        for dtype, group in groups.items():
            # Adam's scalars once per step and dtype, not once per variable.
            # The betas come as float64 tensors, so the bias correction of a
            # float64 network uses their exact values, as sklearn's (a
            # Python float through tf.cast, as in Keras' Adam, is rounded to
            # float32 first: 0.9 -> 0.89999998).
            b1 = tf.cast(beta_1, dtype)
            b2 = tf.cast(beta_2, dtype)
            n = tf.cast(step, dtype)
            scalars = dict(
                beta1_power=tf.pow(b1, n), beta2_power=tf.pow(b2, n),
                lr=tf.cast(lr, dtype), beta1=b1, beta2=b2,
                epsilon=tf.cast(epsilon, dtype),
            )
            if native is not None:
                native.keras_ln_apply_adam(
                    var=[e[0].handle for e in group],
                    m=[e[1].handle for e in group],
                    v=[e[2].handle for e in group],
                    grad=[e[3] for e in group], **scalars,
                )
                continue
            for var, m, v, g in group:
                tf.raw_ops.ResourceApplyAdam(
                    var=var.handle, m=m.handle, v=v.handle, grad=g, **scalars,
                )
        for var, value in zip(ntv, new_states):
            var.assign(value)
        return loss


# Whether the networks `_native_mlp` covers train with the native loop
# (else, as every other network, with the traced one; the tests of the
# traced loops set it to False).
NATIVE_MLP_LOOP = True

# The threads of the native loop: 0, as many as TensorFlow's intra-op pool
# has, at most two (a batch of at least 32 rows runs in two shards, the
# second on a helper thread); 1, the calling thread only. The results are
# the same bits either way (the tests compare them).
NATIVE_MLP_THREADS = 0


def _native_ops():
    """The native library's ops, or None (not built, or did not load)."""
    from keras_ln.layers import _native

    return _native.ops()


def _native_mlp(view, loss_fn):
    """What the native loop needs to know of the training view `view`:
    `(output, hidden, layer_norm, activation, ln_epsilon)`; None where the
    loop does not cover the network (then the traced step runs it).

    Covered: `build_mlp`'s networks without batch normalization or dropout,
    each hidden layer a `Dense` with a bias and no activation of its own,
    optionally keras_ln's `LayerNormalization` of its units (with `gamma`
    and `beta`, no regularizer or constraint), then an `Activation` of
    relu, tanh, sigmoid or linear; the last layer a `Dense` with a bias;
    the loss one of the estimators' (its `native_output`); the weights
    those of the layers in that order, none of them non-trainable.
    """
    from keras_ln.layers import LayerNormalization

    output = getattr(loss_fn, "native_output", None)
    if output is None or view.non_trainable_variables:
        return None
    layers = [layer for layer in view.layers
              if not isinstance(layer, keras.layers.InputLayer)]

    def plain_dense(layer):
        return (isinstance(layer, keras.layers.Dense) and layer.use_bias
                and layer.activation is keras.activations.linear
                and layer.kernel_regularizer is None and layer.bias_regularizer is None
                and layer.kernel_constraint is None and layer.bias_constraint is None
                and layer.lora_rank is None and len(layer.input.shape) == 2)

    expected, activations, norms = [], set(), []
    i = hidden = 0
    while i < len(layers) - 1:
        dense = layers[i]
        if not plain_dense(dense):
            return None
        expected += [dense.kernel, dense.bias]
        i += 1
        norm = layers[i] if i < len(layers) - 1 else None
        if isinstance(norm, LayerNormalization):
            if (norm.axis not in (-1, 1, [-1], [1]) or not (norm.center and norm.scale)
                    or any(getattr(norm, a) is not None for a in (
                        "beta_regularizer", "gamma_regularizer",
                        "beta_constraint", "gamma_constraint"))):
                return None
            norms.append(norm.epsilon)
            expected += [norm.gamma, norm.beta]
            i += 1
        act = layers[i] if i < len(layers) - 1 else None
        if type(act) is not keras.layers.Activation:
            return None
        name = keras.activations.serialize(act.activation)
        activations.add(name if isinstance(name, str) else None)
        i += 1
        hidden += 1
    if not layers or not plain_dense(layers[-1]):
        return None
    expected += [layers[-1].kernel, layers[-1].bias]
    if len(activations) > 1 or not activations <= {"relu", "tanh", "sigmoid", "linear"}:
        return None
    if norms and (len(norms) != hidden or len(set(norms)) != 1):
        return None
    if [id(v) for v in expected] != [id(v) for v in view.trainable_variables]:
        return None
    return (output, hidden, bool(norms), activations.pop() if activations else "linear",
            norms[0] if norms else 1e-3)


def _sum_of_squares(tf, a):
    """The sum of the squares of the entries of the matrix `a` (the L2
    penalty's). Under XLA as a matrix-vector product with ones: XLA's CPU
    backend compiles a reduction of a whole matrix (or of its rows) into a
    slow loop, 12 us per step for 100 x 100, against 1.6 us this way."""
    from keras_ln.layers._tf_layer_norm import in_xla

    squares = tf.square(a)
    if not in_xla():
        return tf.reduce_sum(squares)
    squares = tf.reshape(squares, [a.shape[0], -1])
    return tf.reduce_sum(tf.linalg.matvec(squares, tf.ones([squares.shape[1]], a.dtype)))


def _native_adam(tf):
    """keras_ln's native Adam op (all of a step's variables in one op), or
    None: inside XLA, which cannot compile it, or without the library; then
    one `ResourceApplyAdam` per variable, the same arithmetic to the bit.

    `ResourceApplyAdam` hands each update to the intra-op thread pool: on a
    small network that hand-off (~20 us per variable on 2 threads) was most
    of a graph step; the native op updates small variables in the calling
    thread (`keras_ln/layers/_native/adam_ops.cc`).
    """
    from keras_ln.layers import _native
    from keras_ln.layers._tf_layer_norm import in_xla

    if in_xla():
        return None
    return _native.ops()


def _executor(tf, mode):
    """The executor of a graph loop: TensorFlow's single-threaded one.

    A step of a small network is ~100 tiny ops. Traced and run under the
    single-threaded executor, the loops stay functional `While` ops (not
    lowered to switch/merge) whose bodies run in the calling thread, op
    after op (the ops' kernels still use the intra-op threads): measured,
    a 500-row MLP fit costs ~12% less, with the same results to the bit.
    The XLA loop is one compiled program, with no executor to choose.
    """
    if mode == "xla":
        return contextlib.nullcontext()
    return tf.experimental.function_executor_type("SINGLE_THREADED_EXECUTOR")


def adam_slots(variables, state=None):
    """Adam's state for `variables`: first and second moments and the step
    count, as `tf.Variable`s; zeros, or the values of `state` (what
    `adam_state` returned for the same variables)."""
    tf = _tf()
    if state is None:
        ms = [tf.zeros(v.shape, v.dtype) for v in variables]
        vs = [tf.zeros(v.shape, v.dtype) for v in variables]
        t = 0
    else:
        ms, vs, t = state
    return (
        [tf.Variable(m, trainable=False) for m in ms],
        [tf.Variable(v, trainable=False) for v in vs],
        tf.Variable(t, dtype=tf.int64, trainable=False),
    )


def adam_state(ms, vs, t):
    """Adam's state as NumPy values (picklable), for `adam_slots`."""
    return [m.numpy() for m in ms], [v.numpy() for v in vs], int(t.numpy())


# Programs by network structure, most recent last (a small LRU cache).
_PROGRAMS = collections.OrderedDict()
_MAX_PROGRAMS = 8


def _program(key, make_template, loss_fn):
    program = _PROGRAMS.pop(key, None)
    if program is None:
        program = _Program(make_template(), loss_fn)
    _PROGRAMS[key] = program
    while len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


def training_variables(model):
    """The `tf.Variable`s of `model`'s training view (trainable, then the
    others), in the order its program's step and inference take them: the
    model's own, since the view (`_training_view`) leaves out only the
    output activation, which has none. A fit reads them here instead of
    building the view, a second Keras model, for every fit."""
    return (_tf_variables(model.trainable_variables),
            _tf_variables(model.non_trainable_variables))


def _training_view(model):
    """The model up to the pre-activation output the loss needs."""
    if LOGITS_LAYER in {layer.name for layer in model.layers}:
        return keras.Model(
            model.inputs, model.get_layer(LOGITS_LAYER).output,
            name=model.name + "_logits",
        )
    return model


# Output widths whose products XLA's CPU backend runs slowly (see
# `_StepOutputDense`).
SMALL_OUTPUT_UNITS = 3


class _StepOutputDense(keras.layers.Dense):
    """keras' `Dense` output layer of at most `SMALL_OUTPUT_UNITS` units, as
    the training step runs it: the same function and gradients, to
    rounding (a product may sum in another order), by the products each
    executor runs fastest. Only `_Program`'s step uses it
    (`_step_output_view`), never a model a user sees.

    - In a TensorFlow graph, one unit: the kernel padded with a column of
      zeros, so that TensorFlow multiplies (rows, k) x (k, 2) matrices, and
      the output's first column kept. TensorFlow hands a matrix product with
      a dimension of 1 (the one unit's forward product, and the gradients
      of its kernel and input) to the intra-op thread pool and waits for
      it; on 2 cores those hand-offs were most of a small one-output
      network's step (a 500-row regressor's: 79 us with one intra-op
      thread, 160-180 us with two). The padded column adds exact zeros.
    - Under XLA (the loops of large fits), no padding, and for 2 or 3
      units no matrix product with a dimension of 2 or 3
      (`_small_product`): XLA's CPU backend runs a product of (rows, 2 or
      3) by (2 or 3, k) by a slow generic loop, 22-32 us for 200 x 100
      (against 1-6 us with 1, 4 or more units, and 3-5 us summed as a
      broadcast product), about a sixth of a binary classifier's step, and
      the kernel's gradient (k, rows) x (rows, 2 or 3) in about 10 us
      (about 1 us as matrix-vector products).
    """

    def call(self, inputs, training=None):
        from keras_ln.layers._tf_layer_norm import in_xla

        kernel = self.kernel
        if in_xla():
            x = _small_product(inputs, kernel) if self.units > 1 else keras.ops.matmul(inputs, kernel)
        elif self.units == 1:
            x = keras.ops.matmul(inputs, keras.ops.pad(kernel, [[0, 0], [0, 1]]))[:, :1]
        else:
            x = keras.ops.matmul(inputs, kernel)
        if self.bias is not None:
            x = keras.ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


def _small_product(x, kernel):
    """`x @ kernel` for a kernel of few columns (`_StepOutputDense`, under
    XLA), without the matrix products that XLA's CPU backend runs slowly
    at these widths: the product and the kernel's gradient `x.T @ dy` one
    column at a time, as matrix-vector products (for (200, 100) and 2 or 3
    columns: 9-10 us per step for the gradient's matrix product against
    about 1 us, and 2.1 against 0.7-1.2 us forward), and the input's
    gradient `dy @ kernel.T` as a broadcast product summed over the
    columns."""
    tf = _tf()
    units = kernel.shape[1]

    def by_column(a, b, transpose_a=False):
        return tf.stack([tf.linalg.matvec(a, b[:, j], transpose_a=transpose_a)
                         for j in range(units)], axis=1)

    @tf.custom_gradient
    def product(x, kernel):
        def grad(dy):
            dx = tf.reduce_sum(dy[:, None, :] * kernel[None, :, :], axis=-1)
            return dx, by_column(x, dy, transpose_a=True)

        return by_column(x, kernel), grad

    return product(tf.convert_to_tensor(x), tf.convert_to_tensor(kernel))


def _step_output_view(view):
    """`view`, or where its last layer is a `Dense` of at most
    `SMALL_OUTPUT_UNITS` units on (rows, k) inputs, the same network ending
    in `_StepOutputDense` instead (every other layer shared; the same
    variables in the same order: the step passes it their values)."""
    last = view.layers[-1]
    if (type(last) is not keras.layers.Dense or last.units > SMALL_OUTPUT_UNITS
            or len(last.input.shape) != 2):
        return view
    step_layer = _StepOutputDense.from_config(last.get_config())
    step_view = keras.Model(view.inputs, step_layer(last.input), name=view.name + "_step")

    def layout(model):
        return ([(v.shape, v.dtype) for v in model.trainable_variables],
                [(v.shape, v.dtype) for v in model.non_trainable_variables])

    return step_view if layout(step_view) == layout(view) else view


def _tf_variables(variables):
    """The backend `tf.Variable`s behind Keras variables."""
    out = []
    for variable in variables:
        value = getattr(variable, "_value", None)
        if value is None or not hasattr(value, "handle"):
            value = variable.value
        out.append(value)
    return out


def _model_to_bytes(model):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        keras.saving.save_model(model, path)
        with open(path, "rb") as f:
            return f.read()


def _model_from_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        return keras.saving.load_model(path, compile=False)
