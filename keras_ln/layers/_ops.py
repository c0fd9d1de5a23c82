"""Layer-normalization arithmetic shared by every layer of keras_ln.

`layer_norm(x, gamma, beta, axis, epsilon)` is the one entry point. It computes
the statistics in float32 (or float64 for float64 inputs) whatever the input
dtype, with a corrected two-pass variance (the mean is subtracted before
squaring and refined by the mean of the deviations, so inputs offset by 1e4
still normalize correctly), and returns the result in the
dtype of `x`.

On the TensorFlow backend a fused fast path is used: an XLA-compiled forward
with a closed-form, XLA-compiled backward (see `_tf_fast_path.py`). The pure
`keras.ops` path below is used on every other backend, and the test-suite
checks that both give the same numbers.
"""

from keras import backend
from keras import ops

_USE_FAST_PATH = True


def set_fast_path(enabled):
    """Enable or disable the backend-specific fast path (for tests/benchmarks).

    Returns the previous setting.
    """
    global _USE_FAST_PATH
    previous = _USE_FAST_PATH
    _USE_FAST_PATH = bool(enabled)
    return previous


def stats_dtype(dtype):
    """The dtype statistics are computed in for inputs of `dtype`."""
    dtype = backend.standardize_dtype(dtype)
    return "float64" if dtype == "float64" else "float32"


def normalize_axes(axis, ndim):
    """Sorted non-negative axes for an input of rank `ndim`.

    Raises ValueError naming `axis` when an axis is out of range or repeated.
    """
    axes = [axis] if isinstance(axis, int) else list(axis)
    if not axes:
        raise ValueError(
            f"Expected `axis` to name at least one axis. Received: axis={axis}"
        )
    resolved = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"Expected every entry of `axis` to be in [{-ndim}, {ndim}) "
                f"for an input of rank {ndim}. Received: axis={axis}"
            )
        resolved.append(a % ndim)
    if len(set(resolved)) != len(resolved):
        raise ValueError(
            "Expected `axis` to hold distinct axes, but some refer to the same "
            f"dimension of a rank-{ndim} input. Received: axis={axis}"
        )
    return sorted(resolved)


def _broadcast_param(p, axes, ndim, shape):
    """Reshape a weight spanning `axes` so that it broadcasts against x."""
    if p is None or axes == [ndim - 1]:
        return p
    return ops.reshape(p, [shape[d] if d in axes else 1 for d in range(ndim)])


def layer_norm_reference(x, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """Pure `keras.ops` layer normalization (any backend)."""
    out_dtype = backend.standardize_dtype(x.dtype)
    ndim = len(x.shape)
    axes = normalize_axes(axis, ndim)
    xs = ops.cast(x, stats_dtype(out_dtype))
    # Corrected two-pass moments: a first mean is refined by the mean of the
    # (small) deviations, so inputs with a large offset keep their precision.
    m1 = ops.mean(xs, axis=axes, keepdims=True)
    d = xs - m1
    dm = ops.mean(d, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(d), axis=axes, keepdims=True)
    variance = ops.maximum(variance - ops.square(dm), 0.0)
    y = (d - dm) * ops.rsqrt(variance + epsilon)
    shape = ops.shape(xs)
    if gamma is not None:
        y = y * ops.cast(_broadcast_param(gamma, axes, ndim, shape), y.dtype)
    if beta is not None:
        y = y + ops.cast(_broadcast_param(beta, axes, ndim, shape), y.dtype)
    return ops.cast(y, out_dtype)


def layer_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """Layer-normalize `x` over `axis`, scale by `gamma`, shift by `beta`.

    Args:
        x: Tensor of any float dtype.
        gamma: Optional scale spanning the normalized axes (shape
            `[x.shape[a] for a in sorted(axis)]`) or broadcastable to x.
        beta: Optional offset, same shape rules as gamma.
        axis: int or list of ints, the axes the statistics are taken over.
        epsilon: Added to the variance.

    Returns:
        Tensor of the dtype and shape of `x`.
    """
    if _USE_FAST_PATH and backend.backend() == "tensorflow":
        from keras_ln.layers import _tf_fast_path

        return _tf_fast_path.layer_norm(x, gamma, beta, axis, epsilon)
    return layer_norm_reference(x, gamma, beta, axis, epsilon)
