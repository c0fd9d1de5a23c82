"""Where the layers choose between their `keras.ops` code and a backend's
fast path.

As keras' LSTM asks `backend.lstm` for cuDNN: a layer asks this module for
its fast path, the backend's module raises `NotImplementedError` (with the
reason) where that cannot run the call, and the layer falls back to its
generic `keras.ops` code. Only TensorFlow has fast paths, all chosen in
`_tf_backend.py`; it is imported here lazily, so no backend-neutral module
imports TensorFlow.

The recurrent layers with a fused kernel take the choice as an argument,
`use_kernel` (serialized in their config), like keras' `use_cudnn`:

- `"auto"` (default): the fast path where it applies: the native ops
  (`_native`), or inside an XLA-compiled function the XLA-compatible
  kernel; else the generic loop.
- `True`: a fast path as with "auto", and an error where none applies.
- `False`: always the generic loop.
- `"native"` / `"xla"`: that kernel, and an error where it cannot run.
"""

from keras import backend

from keras_ln.layers._layer_norm import layer_norm_reference

USE_KERNEL_OPTIONS = ("auto", True, False, "native", "xla")


def check_use_kernel(value):
    """Raise ValueError unless `value` is one of `USE_KERNEL_OPTIONS`."""
    if not any(value is option or (isinstance(value, str) and value == option)
               for option in USE_KERNEL_OPTIONS):
        raise ValueError(
            "Expected `use_kernel` to be one of 'auto', True, False, "
            f"'native' or 'xla'. Received: use_kernel={value!r}"
        )
    return value


def layer_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """Layer-normalize `x` over `axis`, scale by `gamma`, shift by `beta`.

    The backend's fused implementation where there is one, else
    `layer_norm_reference` (same arguments, same numbers).
    """
    if backend.backend() == "tensorflow":
        from keras_ln.layers import _tf_backend

        return _tf_backend.layer_norm(x, gamma, beta, axis, epsilon)
    return layer_norm_reference(x, gamma, beta, axis, epsilon)


def gate_blocks_apart():
    """Whether a recurrent loop takes its input projection's gate blocks
    apart before the loop (as separate sequences), not as one wide
    sequence sliced in every step: inside an XLA-compiled function on
    TensorFlow. There XLA's CPU backend fused the slices of a step's input
    into the gates' arithmetic and ran that fusion slowly. Measured at
    bench_recurrent.py's shape, inference inside `jit_compile=True`:
    LayerNormGRU's generic loop 34-38 -> 16-18 ms, LayerNormLSTM's 37-39
    -> 22-26 ms, BatchNormLSTM's TensorFlow kernel 31-32 -> 17 ms (its
    training step 151-160 -> 141-145 ms). Elsewhere each block is one more
    read a step (a LayerNormLSTM step of the generic loop 7% slower in
    graph mode). The fused layers' generic loops and BatchNormLSTM's
    TensorFlow kernel ask; the arithmetic is the same either way.
    """
    if backend.backend() == "tensorflow":
        from keras_ln.layers import _tf_backend

        return _tf_backend.in_xla()
    return False


def recurrence(layer, sequences, initial_state, mask, training):
    """`layer`'s recurrence by its backend's fused kernel.

    Returns what `keras.layers.RNN.inner_loop` returns; raises
    NotImplementedError, with the reason, where no kernel runs this call
    as `layer.use_kernel` asks.
    """
    if backend.backend() != "tensorflow":
        raise NotImplementedError(
            f"the {backend.backend()} backend has no fused kernel"
        )
    from keras_ln.layers import _tf_backend

    return _tf_backend.recurrence(
        layer, sequences, initial_state, mask, training
    )
