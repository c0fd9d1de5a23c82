"""FusedLSTM, FusedGRU: keras' LSTM and GRU run by keras_ln's native kernels.

The recurrent layers without normalization are the reference the normalized
ones are compared with (`normalization=None` in `keras_ln.models` and the
estimators). keras' own `LSTM` and `GRU` run cuDNN on a GPU but, on a CPU, a
generic `while` loop of small ops, which the normalized layers, with their
fused kernels, outpace: a comparison of normalizations would then also
compare implementations (and, under a time budget, train fewer plain
models). `FusedLSTM` is `keras.layers.LSTM` and `FusedGRU` is
`keras.layers.GRU` (same cell, weights, config, outputs and `isinstance`)
whose recurrence runs, where it can, as the LayerNormLSTM / LayerNormGRU
native ops with every norm the identity (one op for the forward loop, one
for the backward loop).

- On a GPU, where keras' layers have cuDNN, or with `use_cudnn=True`,
  keras' own choice runs.
- `use_kernel` as in the normalized layers: "auto" (default) takes the
  native kernel where it applies and keras' loop elsewhere (inside an
  XLA-compiled function, with recurrent dropout in training, other
  activations, `unroll=True`, dtypes other than float32/float64, or without
  the native library); "native" (or True) raises where it cannot run;
  False always runs keras' loop. There is no XLA-compatible kernel: keras'
  loop compiles under XLA as it is.
"""

import keras
from keras import backend
from keras import ops

_USE_KERNEL_OPTIONS = ("auto", True, False, "native")


class _Fused:
    """What FusedLSTM and FusedGRU share (mixed in before keras' class)."""

    def __init__(self, units, use_kernel="auto", **kwargs):
        if not any(use_kernel is option
                   or (isinstance(use_kernel, str) and use_kernel == option)
                   for option in _USE_KERNEL_OPTIONS):
            raise ValueError(
                "Expected `use_kernel` to be one of 'auto', True, False or "
                f"'native'. Received: use_kernel={use_kernel!r}"
            )
        super().__init__(units, **kwargs)
        self.use_kernel = use_kernel
        if use_kernel == "native":
            self.supports_jit = False

    def _keras_runs(self):
        """Whether keras' own `inner_loop` decides: cuDNN asked for, or a
        GPU to run it on."""
        if self.use_kernel is False or self.use_cudnn is True:
            return True
        if backend.backend() != "tensorflow":
            return True
        import tensorflow as tf

        return self.use_cudnn == "auto" and bool(
            tf.config.list_logical_devices("GPU"))

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if not self._keras_runs():
            try:
                return self._kernel_loop(sequences, initial_state, mask,
                                         training)
            except NotImplementedError as error:
                if self.use_kernel != "auto":
                    raise ValueError(
                        f"use_kernel={self.use_kernel!r} was specified, but "
                        f"{error}. Pass use_kernel='auto' to fall back to "
                        "keras' loop where the kernel does not apply."
                    ) from None
        return super().inner_loop(sequences, initial_state, mask, training)

    def _kernel_loop(self, sequences, initial_state, mask, training):
        from keras_ln.layers import _tf_backend

        cell = self.cell
        reason = _unsupported(self, training, sequences.dtype)
        if reason:
            raise NotImplementedError(reason)
        _tf_backend.kernel_choice(self)  # raises inside XLA / without ops
        if training and cell.dropout:
            # One input mask per sequence, as keras' cuDNN path and its
            # loop (the cell's mask is drawn once per call) apply it.
            dp_mask = cell.get_dropout_mask(sequences[:, 0, :])
            sequences = sequences * ops.expand_dims(dp_mask, 1)
        return _tf_backend.plain_recurrence(self, sequences, initial_state,
                                            mask)

    def get_config(self):
        return {**super().get_config(), "use_kernel": self.use_kernel}


@keras.saving.register_keras_serializable(package="keras_ln")
class FusedLSTM(_Fused, keras.layers.LSTM):
    """`keras.layers.LSTM` with keras_ln's native CPU kernel.

    Args:
        units, ...: as `keras.layers.LSTM`.
        use_kernel: "auto" (default), "native" or True (the native kernel,
            or an error saying why it cannot run this call), or False
            (keras' loop). See the module docstring.
    """

    kernel_kind = "plain_lstm"


@keras.saving.register_keras_serializable(package="keras_ln")
class FusedGRU(_Fused, keras.layers.GRU):
    """`keras.layers.GRU` with keras_ln's native CPU kernel (for
    `reset_after=True`, keras' default; the other form runs keras' loop).

    Args:
        units, ...: as `keras.layers.GRU`.
        use_kernel: "auto" (default), "native" or True (the native kernel,
            or an error saying why it cannot run this call), or False
            (keras' loop). See the module docstring.
    """

    kernel_kind = "plain_gru"


def _unsupported(layer, training, dtype):
    """Why the kernel does not run this call (a string), or None."""
    from keras_ln.layers import _tf_backend

    cell = layer.cell
    reason = _tf_backend.unsupported_call(layer, training, dtype, cell.kernel)
    if reason is None and layer.kernel_kind == "plain_gru" and not cell.reset_after:
        return "the kernels implement reset_after=True only"
    return reason
