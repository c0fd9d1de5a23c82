"""TensorFlow fast path for layer normalization (placeholder, being written)."""
from keras_ln.layers._ops import layer_norm_reference


def layer_norm(x, gamma, beta, axis, epsilon):
    return layer_norm_reference(x, gamma, beta, axis, epsilon)
