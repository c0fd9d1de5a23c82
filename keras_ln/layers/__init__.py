"""Keras layers of keras_ln: one public layer (and its cell) per module."""

from keras_ln.layers.layer_normalization import LayerNormalization

__all__ = ["LayerNormalization"]

# Recurrent layers (one module each): import them here and extend __all__.
from keras_ln.layers.batch_norm_lstm import BatchNormLSTM  # noqa: E402
from keras_ln.layers.batch_norm_lstm import BatchNormLSTMCell  # noqa: E402
from keras_ln.layers.fused import FusedGRU  # noqa: E402
from keras_ln.layers.fused import FusedLSTM  # noqa: E402
from keras_ln.layers.layer_norm_gru import LayerNormGRU  # noqa: E402
from keras_ln.layers.layer_norm_gru import LayerNormGRUCell  # noqa: E402
from keras_ln.layers.layer_norm_lstm import LayerNormLSTM  # noqa: E402
from keras_ln.layers.layer_norm_lstm import LayerNormLSTMCell  # noqa: E402

__all__ += [
    "LayerNormLSTMCell",
    "LayerNormLSTM",
    "LayerNormGRUCell",
    "LayerNormGRU",
    "BatchNormLSTMCell",
    "BatchNormLSTM",
    "FusedLSTM",
    "FusedGRU",
]
