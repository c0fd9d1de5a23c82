"""What the claims of `_claims` share: the tidy table, the normalization
labels, the estimator inside a Pipeline, and a side-effect-free
training-mode measurement (`_measurement_mode`)."""

import contextlib

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

COLUMNS = ["claim", "normalization", "quantity", "value", "fold", "batch_size", "step", "epoch", "detail"]
_INT_KEYS = ("fold", "batch_size", "step", "epoch")

_ORDER = ("layer", "batch", "none")


def _label(key):
    """'layer', 'batch' or 'none' for a configs key."""
    if key is None or (isinstance(key, str) and key.lower() == "none"):
        return "none"
    if key in ("layer", "batch"):
        return key
    raise ValueError(f"Expected the keys of `configs` to be 'layer', 'batch' or None. Received: {key!r}")


def _labelled(configs):
    out = {}
    for key, est in configs.items():
        label = _label(key)
        if label in out:
            raise ValueError(f"`configs` holds normalization {label!r} twice. Received keys: {list(configs)}")
        out[label] = est
    return {label: out[label] for label in _ORDER if label in out}


def _final(est):
    """The keras_ln estimator of an estimator or a Pipeline ending in one."""
    return est.steps[-1][1] if isinstance(est, Pipeline) else est


def _set_final_params(est, **params):
    prefix = est.steps[-1][0] + "__" if isinstance(est, Pipeline) else ""
    est.set_params(**{prefix + k: v for k, v in params.items()})
    return est


def _prepared(config, seed, **params):
    """An unfitted, seeded clone of `config` with `params` on its estimator."""
    est = clone(config)
    if _final(est).get_params().get("random_state", 0) is None:
        params = {"random_state": seed, **params}
    return _set_final_params(est, **params)


def _is_sequence_model(est):
    from keras_ln.sklearn import LSTMClassifier
    from keras_ln.sklearn import LSTMRegressor

    return isinstance(_final(est), (LSTMClassifier, LSTMRegressor))


def _splits(folds):
    folds = np.asarray(folds)
    if folds.ndim != 1:
        raise ValueError(f"Expected `folds` of shape (n_samples,). Received: shape {folds.shape}")
    ks = np.unique(folds)
    if len(ks) < 2:
        raise ValueError(f"Expected `folds` with at least 2 distinct folds. Received: {ks.tolist()}")
    return [(int(k), np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in ks]


def _row(claim, normalization, quantity, value, **keys):
    return {"claim": claim, "normalization": normalization, "quantity": quantity, "value": value, **keys}


def _table(rows):
    df = pd.DataFrame(rows, columns=COLUMNS)
    for key in _INT_KEYS:
        df[key] = df[key].astype("Int64")
    df["value"] = df["value"].astype(float)
    return df


def _network_input(fitted, X):
    """`X` as the fitted estimator's network takes it (after the Pipeline's
    preprocessing and the estimator's own validation and padding)."""
    est = _final(fitted)
    if isinstance(fitted, Pipeline) and len(fitted.steps) > 1:
        X = fitted[:-1].transform(X)
    return np.asarray(est._validate_predict_data(X)).astype(est._dtype, copy=False)


def _single(inputs):
    """A model's one input as a tensor, not a list of one (so calls with a
    tensor match the model's input structure)."""
    return inputs[0] if isinstance(inputs, (list, tuple)) and len(inputs) == 1 else inputs


def _training_output(model):
    """The model up to what the loss sees: `logits` (classifiers) or
    `output` (regressors); see `keras_ln.models`."""
    import keras

    if "logits" in {layer.name for layer in model.layers}:
        return keras.Model(_single(model.inputs), model.get_layer("logits").output, name=model.name + "_claims")
    return model


@contextlib.contextmanager
def _measurement_mode(model):
    """Dropout off, and the non-trainable variables (batch norms' moving
    statistics, BN-LSTM's step count, random-generator states) restored on
    exit, so a training-mode pass measures without changing the model."""
    import keras

    rates = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Dropout):
            rates.append((layer, "rate", layer.rate))
        else:  # recurrent cells hold their rates as plain attributes
            for name in ("dropout", "recurrent_dropout"):
                value = vars(layer).get(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value:
                    rates.append((layer, name, value))
    saved = [(v, np.array(v.numpy())) for v in model.non_trainable_variables]
    try:
        for layer, name, _ in rates:
            setattr(layer, name, 0.0)
        yield
    finally:
        for layer, name, value in rates:
            setattr(layer, name, value)
        for v, value in saved:
            v.assign(value)
