"""Keras layers of keras_ln: one public layer (and its cell) per module."""

from keras_ln.layers.layer_normalization import LayerNormalization

__all__ = ["LayerNormalization"]

# Recurrent layers (one module each): import them here and extend __all__.
