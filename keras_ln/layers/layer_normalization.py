"""`keras_ln.LayerNormalization`: a faster, exact drop-in for keras' layer."""

import keras
from keras import constraints
from keras import initializers
from keras import regularizers

from keras_ln.layers._fast_paths import layer_norm
from keras_ln.layers._layer_norm import normalize_axes


@keras.saving.register_keras_serializable(package="keras_ln")
class LayerNormalization(keras.layers.Layer):
    """Layer normalization layer (Ba et al., 2016).

    Normalizes each example independently over `axis`:

    ```python
    mean_i = mean(x_i over axis)
    var_i = mean((x_i - mean_i) ** 2 over axis)
    output_i = (x_i - mean_i) / sqrt(var_i + epsilon) * gamma + beta
    ```

    A drop-in replacement for `keras.layers.LayerNormalization`: the same
    constructor arguments, weights (`gamma`, `beta`, same shapes and order)
    and config keys, so either layer's `get_config()` builds the other with
    `from_config`, and `set_weights` moves weights across. A `.keras` file
    loads as the class it was saved with (`import keras_ln` first); the
    README shows how to switch a saved model between the two layers.
    The statistics are computed in float32 whatever the
    input dtype (float64 for float64 inputs), with a two-pass variance, so
    half-precision inputs and inputs with a large offset normalize
    correctly. On the TensorFlow backend the computation runs fused, with
    a closed-form gradient: as two native ops for float32 and float64
    outside XLA (a row's results the same bits wherever it sits in its
    batch), as XLA-compiled kernels (or plain TensorFlow ops on small
    inputs) elsewhere; other backends use the pure `keras.ops`
    formulation, which gives the same numbers to rounding.

    Args:
        axis: Integer or list/tuple of integers. The axis or axes to
            normalize across, typically the feature axes. `-1` is the last
            dimension of the input. Defaults to `-1`.
        epsilon: Small positive float added to the variance. Defaults to 1e-3.
        center: If True, add the offset `beta`. Defaults to `True`.
        scale: If True, multiply by `gamma`. Defaults to `True`.
        beta_initializer: Initializer for `beta`. Defaults to zeros.
        gamma_initializer: Initializer for `gamma`. Defaults to ones.
        beta_regularizer: Optional regularizer for `beta`.
        gamma_regularizer: Optional regularizer for `gamma`.
        beta_constraint: Optional constraint for `beta`.
        gamma_constraint: Optional constraint for `gamma`.
        **kwargs: Base layer keyword arguments (e.g. `name` and `dtype`).

    Call arguments:
        inputs: Float tensor of any rank covering `axis`. A mask, if any, is
            passed through unchanged.

    Example:

    >>> import numpy as np, keras, keras_ln
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> y = keras_ln.LayerNormalization()(x)
    >>> bool(np.allclose(keras.ops.convert_to_numpy(y).mean(-1), 0, atol=1e-5))
    True

    Reference:

    - [Ba et al., 2016](https://arxiv.org/abs/1607.06450).
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        rms_scaling = kwargs.pop("rms_scaling", False)
        if rms_scaling:
            raise ValueError(
                "Expected `rms_scaling=False`: keras deprecated this option "
                "because it scales by the variance, not the root mean "
                "square; use `keras.layers.RMSNormalization` instead. "
                f"Received: rms_scaling={rms_scaling!r}"
            )
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if not all(_is_int(a) for a in axis):
                raise TypeError(
                    "Expected `axis` to be an int or a list/tuple of ints. "
                    f"Received: axis={axis!r}"
                )
            self.axis = [int(a) for a in axis]
        elif _is_int(axis):
            self.axis = int(axis)
        else:
            raise TypeError(
                "Expected `axis` to be an int or a list/tuple of ints. "
                f"Received: axis={axis!r}"
            )
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
            raise TypeError(
                f"Expected `epsilon` to be a positive float. Received: "
                f"epsilon={epsilon!r} of type {type(epsilon).__name__}"
            )
        if not epsilon > 0:
            raise ValueError(
                f"Expected `epsilon` to be > 0. Received: epsilon={epsilon}"
            )
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True
        # Statistics are taken in float32 from the raw input; the output is
        # cast to the compute dtype, so Keras must not autocast the input.
        self.autocast = False

    def build(self, input_shape):
        axes = normalize_axes(self.axis, len(input_shape))
        shape = tuple(input_shape[a] for a in axes)
        if any(d is None for d in shape):
            raise ValueError(
                "Expected the normalized axes of the input to have a known "
                f"size. Received: axis={self.axis}, "
                f"input_shape={tuple(input_shape)}"
            )
        # Like keras: the stored axis becomes a sorted list once built.
        self.axis = (
            sorted(self.axis) if isinstance(self.axis, list) else [self.axis]
        )
        self._axes = axes
        self.gamma = None
        self.beta = None
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma",
                shape=shape,
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                trainable=True,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=shape,
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
                autocast=False,
            )

    def call(self, inputs):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if "float" not in dtype:
            raise TypeError(
                "Expected a floating-point input to LayerNormalization. "
                f"Received: inputs.dtype={dtype}"
            )
        outputs = layer_norm(
            inputs, self.gamma, self.beta, self._axes, self.epsilon
        )
        return keras.ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        normalize_axes(self.axis, len(input_shape))
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "rms_scaling": False,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool) or (
        hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0
        and "int" in str(value.dtype)
    )
