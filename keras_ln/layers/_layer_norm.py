"""Layer-normalization arithmetic in `keras.ops`, shared by every layer.

`layer_norm_reference` computes the statistics in float32 (or float64 for
float64 inputs) whatever the input dtype, with a corrected two-pass variance
(the mean is subtracted before squaring and refined by the mean of the
deviations, so inputs offset by 1e4 still normalize correctly), and returns
the result in the dtype of `x`. It runs on every backend; the layers call
it through `_fast_paths.layer_norm`, which uses the backend's fused
implementation where there is one (TensorFlow: `_tf_layer_norm.py`), and
the test-suite checks that both give the same numbers.
"""

from keras import backend
from keras import ops


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


def center_columns(kernel):
    """`kernel` minus the mean of each of its rows (over the output axis).

    `h @ center_columns(U)` equals `h @ U` minus its mean over the last
    axis, exactly in exact arithmetic: the fused layers center the recurrent
    kernel once per call, so the loop's normalization of `h @ U` needs no
    mean of its own (`ln_centered`).
    """
    dtype = backend.standardize_dtype(kernel.dtype)
    sdtype = "float64" if dtype == "float64" else "float32"
    k = ops.cast(kernel, sdtype)
    k = k - ops.mean(k, axis=-1, keepdims=True)
    return ops.cast(k, dtype)
