"""keras_ln: layer normalization for Keras 3.

Public layers: `LayerNormalization`, `LayerNormLSTMCell`, `LayerNormLSTM`,
`LayerNormGRUCell`, `LayerNormGRU`, `BatchNormLSTMCell`, `BatchNormLSTM`, and
`FusedLSTM`, `FusedGRU` (keras' LSTM and GRU, the unnormalized references,
run by the native kernels).
scikit-learn estimators live in `keras_ln.sklearn`, the H2O-style search in
`keras_ln.automl`, bundled data in `keras_ln.datasets`.
"""

__version__ = "0.1.0"

from keras_ln.layers import *  # noqa: E402,F401,F403
from keras_ln.layers import __all__ as _layer_names  # noqa: E402

__all__ = list(_layer_names)
