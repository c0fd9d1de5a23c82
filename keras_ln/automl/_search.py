"""The search space of each family and the order its candidates are tried."""

import itertools

import numpy as np
from sklearn.model_selection import ParameterGrid

# Declared spaces; the first entry of each list is the default configuration,
# which is trained first (with every normalization) like H2O's default models.
MLP_SPACE = {
    "hidden_layer_sizes": [(64,), (128,), (64, 64), (32,), (128, 64)],
    "learning_rate_init": [1e-3, 3e-3, 1e-2],
    "dropout": [0.0, 0.1, 0.3],
    "alpha": [1e-4, 1e-3],
}
RNN_SPACE = {
    "units": [(32,), (64,), (32, 32)],
    "cell": ["lstm", "gru"],
    "learning_rate_init": [3e-3, 1e-3, 1e-2],
    "dropout": [0.0, 0.1],
}
_NORM_TAG = {"layer": "LN", "batch": "BN", None: "none"}


def candidates(family, norms, seed):
    """Yield (model_id, params) in search order until the declared space is exhausted.

    The default configuration comes first, then a seeded random walk through
    the whole grid; each configuration is yielded once per normalization.
    """
    space = MLP_SPACE if family == "mlp" else RNN_SPACE
    default = {k: v[0] for k, v in space.items()}
    grid = ParameterGrid(space)  # a random walk through the whole declared space
    sampled = (grid[int(i)] for i in np.random.default_rng(seed).permutation(len(grid)))
    seen, k = set(), 0
    for params in itertools.chain([default], sampled):
        key = tuple(sorted((n, repr(v)) for n, v in params.items()))
        if key in seen:
            continue
        seen.add(key)
        k += 1
        for norm in norms:
            if family == "rnn" and norm == "batch" and params["cell"] == "gru":
                continue  # BatchNorm GRU is not provided by keras_ln
            name = "MLP" if family == "mlp" else params["cell"].upper()
            yield f"{name}_{k}_{_NORM_TAG[norm]}", {**params, "normalization": norm}
