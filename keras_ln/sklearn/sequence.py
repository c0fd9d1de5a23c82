"""`LSTMClassifier` and `LSTMRegressor`: sequence estimators with tunable normalization.

Accepted X:

- a 3-D array `(n_samples, n_timesteps, n_features)`;
- a 2-D array or DataFrame `(n_samples, n_timesteps)`: one feature per step
  (this is what sklearn's own checks pass); `n_features_in_` is then
  `n_timesteps`, as for any table, and predict needs the same width;
- a list of 2-D arrays `(n_timesteps_i, n_features)` of different lengths:
  they are padded (with NaN, at the end) to the longest and the padding is
  masked inside the network (`keras_ln.models.NaNPaddingMask`), so genuine
  zeros in the data are kept.

Every X is NaN-padded (masked) to a power of two up to 64, or a multiple of
32, time steps, which changes no output but bounds the number of shapes.
"""

from numbers import Integral

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_feature_names
from sklearn.utils.validation import _check_y
from sklearn.utils.validation import check_array
from sklearn.utils.validation import check_consistent_length
from sklearn.utils.validation import validate_data

from keras_ln.models import build_recurrent
from keras_ln.models import recurrent_layer_class
from keras_ln.sklearn._base import _FIT_ATTRIBUTES_DOC
from keras_ln.sklearn._base import _TRAINING_PARAMETERS_DOC
from keras_ln.sklearn._base import _STANDARDIZE_TARGET_DOC
from keras_ln.sklearn._base import _KerasEstimator
from keras_ln.sklearn._base import check_sizes
from keras_ln.sklearn._outputs import _ClassifierOutputs
from keras_ln.sklearn._outputs import _RegressorOutputs

_FLOATS = [np.float64, np.float32]


def _pad_steps(X3):
    """NaN-pad the time axis to a few lengths (powers of two up to 64, then
    multiples of 32): padded steps are masked, so outputs do not change, and kernels
    compiled per shape (the XLA layer-norm fast path) are reused across
    sequence lengths."""
    steps = X3.shape[1]
    target = 1 << (steps - 1).bit_length() if steps <= 64 else -(-steps // 32) * 32
    if target == steps:
        return X3
    pad = np.full((X3.shape[0], target - steps, X3.shape[2]), np.nan, X3.dtype)
    return np.concatenate([X3, pad], axis=1)


def _is_ragged(X):
    """A list/tuple of 2-D array-likes (one per sequence)."""
    return (
        isinstance(X, (list, tuple))
        and len(X) > 0
        and all(np.ndim(x) == 2 for x in X)
    )


class _Recurrent(_KerasEstimator):
    """Recurrent network on sequences (shared by both tasks)."""

    _parameter_constraints: dict = {
        **_KerasEstimator._parameter_constraints,
        "units": ["array-like", Interval(Integral, 1, None, closed="left")],
        "cell": [StrOptions({"lstm", "gru"})],
        "bidirectional": ["boolean"],
    }
    _architecture_params = (
        "units",
        "cell",
        "normalization",
        "bidirectional",
        "activation",
        "dropout",
    )

    def __init__(
        self,
        units=(64,),
        *,
        cell="lstm",
        normalization="layer",
        bidirectional=False,
        activation="tanh",
        dropout=0.0,
        alpha=0.0001,
        solver="adam",
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=0,
        warm_start=False,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
    ):
        self.units = units
        self.cell = cell
        self.normalization = normalization
        self.bidirectional = bidirectional
        self.activation = activation
        self.dropout = dropout
        self.alpha = alpha
        self.solver = solver
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change

    def _check_architecture(self):
        units = check_sizes(self.units, "units")
        if not units:
            raise ValueError(f"units must hold at least one integer > 0, got {self.units!r}.")
        # Unknown or unavailable combinations (batch-normalized GRU) raise.
        recurrent_layer_class(self.cell, self.normalization)

    # --- input ----------------------------------------------------------
    def _sequences(self, X, reset):
        """X as a float array (n, steps, features), NaN-padded if ragged."""
        name = type(self).__name__
        if _is_ragged(X):
            arrays = [
                check_array(x, dtype=_FLOATS, input_name="X") for x in X
            ]
            widths = {a.shape[1] for a in arrays}
            if len(widths) > 1:
                raise ValueError(
                    "Expected every sequence of X to have the same number of "
                    f"features per time step. Received: {sorted(widths)}"
                )
            dtype = (
                np.float32
                if all(a.dtype == np.float32 for a in arrays)
                else np.float64
            )
            steps = max(a.shape[0] for a in arrays)
            X3 = np.full((len(arrays), steps, widths.pop()), np.nan, dtype)
            for i, a in enumerate(arrays):
                X3[i, : a.shape[0]] = a
            _check_feature_names(self, X3, reset=reset)
            return self._check_step_features(X3, reset, table=False)
        if hasattr(X, "shape"):
            ndim = len(X.shape)
        else:  # lists, array-likes: validate_data rejects what is not 2-D
            try:
                ndim = np.asarray(X).ndim
            except ValueError:
                ndim = 2
        if ndim == 3:
            X3 = check_array(X, dtype=_FLOATS, allow_nd=True, input_name="X")
            if X3.shape[1] < 1 or X3.shape[2] < 1:
                raise ValueError(
                    "Expected X of shape (n_samples, n_timesteps, n_features) "
                    f"with at least one step and one feature. Received: "
                    f"X.shape={X3.shape}"
                )
            _check_feature_names(self, X3, reset=reset)
            return self._check_step_features(X3, reset, table=False)
        if ndim > 3:
            raise ValueError(
                f"Expected 2D or 3D array X for {name}, got {ndim}D array "
                "instead: X must be (n_samples, n_timesteps, n_features), "
                "(n_samples, n_timesteps) or a list of 2-D sequences."
            )
        # 2-D tables (and anything else, which validate_data rejects with
        # sklearn's messages): one feature per time step.
        if reset or self._input_layout == "table":
            X2 = validate_data(self, X, reset=reset, dtype=_FLOATS)
        else:
            X2 = check_array(X, dtype=_FLOATS, input_name="X")
            _check_feature_names(self, X, reset=False)
        return self._check_step_features(X2[:, :, None], reset, table=True)

    def _check_step_features(self, X3, reset, table):
        X3 = _pad_steps(X3)
        n_step_features = X3.shape[2]
        if reset:
            self._input_layout = "table" if table else "sequences"
            self._n_step_features = n_step_features
            if not table:
                self.n_features_in_ = n_step_features
        elif n_step_features != self._n_step_features:
            raise ValueError(
                f"X has {n_step_features} features per time step, but "
                f"{type(self).__name__} is expecting {self._n_step_features} "
                "features per time step as input."
            )
        return X3

    def _validate_fit_data(self, X, y, reset):
        regression = not isinstance(self, ClassifierMixin)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the "
                "target y is None."
            )
        X3 = self._sequences(X, reset)
        y = _check_y(y, multi_output=regression, y_numeric=regression, estimator=self)
        check_consistent_length(X3, y)
        return X3, y

    def _validate_predict_data(self, X):
        return self._sequences(X, reset=False)

    def _compute_dtype(self, X):
        # keras_ln.BatchNormLSTM computes in float32 only (float64 inputs
        # fail inside the layer), so the BN-LSTM network is float32.
        if self.normalization == "batch":
            return "float32"
        return super()._compute_dtype(X)

    def _network_kwargs(self, X):
        # BN-LSTM keeps population statistics per time step of training.
        if self.normalization == "batch":
            return {"max_steps": int(X.shape[1])}
        return {}

    def _build_model(
        self, n_inputs, n_outputs, output_activation, dtype, seed, **kwargs
    ):
        return build_recurrent(
            n_inputs,
            n_outputs,
            units=check_sizes(self.units, "units"),
            cell=self.cell,
            normalization=self.normalization,
            bidirectional=self.bidirectional,
            activation=self.activation,
            dropout=self.dropout,
            output_activation=output_activation,
            dtype=dtype,
            seed=seed,
            name=type(self).__name__.lower(),
            **kwargs,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


_PARAMETERS_DOC = """
    Parameters
    ----------
    units : array-like of shape (n_layers,), default=(64,)
        Width of each stacked recurrent layer (an int for one layer).
    cell : {"lstm", "gru"}, default="lstm"
        The recurrent cell family.
    normalization : {"layer", "batch"} or None, default="layer"
        "layer": `keras_ln.LayerNormLSTM` / `keras_ln.LayerNormGRU`;
        "batch": `keras_ln.BatchNormLSTM` (LSTM only: `cell="gru"` with
        "batch" raises ValueError); None: keras' LSTM / GRU (as
        `keras_ln.FusedLSTM` / `keras_ln.FusedGRU`, run by the native
        kernels).
    bidirectional : bool, default=False
        Wrap each recurrent layer in `keras.layers.Bidirectional`.
    activation : {"tanh", "relu", "logistic", "identity"}, default="tanh"
        Activation of the recurrent layers.
    dropout : float in [0, 1), default=0.0
        Dropout rate after each recurrent layer (on the connections between
        layers and before the output layer; see `keras_ln.models.
        build_recurrent`).
    alpha : float, default=0.0001
        Strength of the L2 penalty on the weight matrices (kernels and
        recurrent kernels), `0.5 * alpha * ||W||^2` divided by the batch's
        total sample weight, as in sklearn's MLP.
""" + _TRAINING_PARAMETERS_DOC.lstrip("\n")

_ATTRIBUTES_DOC = """
    n_features_in_ : int
        Features per time step for 3-D or list input; for 2-D input (one
        feature per step) the number of columns, i.e. time steps.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, for a DataFrame X.
""" + _FIT_ATTRIBUTES_DOC.strip("\n") + """
    model_ : keras.Model
        The fitted network; input `(batch, steps, features)`, NaN steps are
        padding.
"""


class LSTMClassifier(ClassifierMixin, _ClassifierOutputs, _Recurrent):
    __doc__ = (
        """Recurrent-network classifier for sequences, with tunable normalization.

    Trained like `MLPClassifier` (Adam, log-loss; one sigmoid output for two
    classes, a softmax output per class for more) on sequences: a 3-D array
    `(n_samples, n_timesteps, n_features)`, a 2-D array `(n_samples,
    n_timesteps)` (one feature per step), or a list of 2-D arrays of
    different lengths (padded and masked inside).
"""
        + _PARAMETERS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels."""
        + _ATTRIBUTES_DOC
        + """
    See Also
    --------
    LSTMRegressor : The regressor.
    keras_ln.sklearn.MLPClassifier : The same for tables.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_ln.sklearn import LSTMClassifier
    >>> X = np.random.default_rng(0).normal(size=(32, 5, 2))
    >>> y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    >>> clf = LSTMClassifier((8,), max_iter=5, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    """
    )


class LSTMRegressor(RegressorMixin, _RegressorOutputs, _Recurrent):
    __doc__ = (
        """Recurrent-network regressor for sequences, with tunable normalization.

    Trained like `MLPRegressor` (Adam, half squared error, standardized
    targets) on sequences (see `LSTMClassifier` for the accepted X); one or
    several outputs.
"""
        + _PARAMETERS_DOC
        + _STANDARDIZE_TARGET_DOC
        + """
    Attributes
    ----------
    n_outputs_ : int
        Number of outputs."""
        + _ATTRIBUTES_DOC
        + """
    See Also
    --------
    LSTMClassifier : The classifier.
    keras_ln.sklearn.MLPRegressor : The same for tables.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_ln.sklearn import LSTMRegressor
    >>> X = [np.ones((3, 2)), np.ones((5, 2))]
    >>> reg = LSTMRegressor((4,), normalization=None, max_iter=3,
    ...                     random_state=0).fit(X, [1.0, 2.0])
    >>> reg.predict(X).shape
    (2,)
    """
    )

    _parameter_constraints: dict = {
        **_Recurrent._parameter_constraints,
        "standardize_target": ["boolean"],
    }
    _architecture_params = _Recurrent._architecture_params + ("standardize_target",)

    def __init__(
        self,
        units=(64,),
        *,
        cell="lstm",
        normalization="layer",
        bidirectional=False,
        activation="tanh",
        dropout=0.0,
        alpha=0.0001,
        solver="adam",
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=0,
        warm_start=False,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        standardize_target=True,
    ):
        super().__init__(
            units,
            cell=cell,
            normalization=normalization,
            bidirectional=bidirectional,
            activation=activation,
            dropout=dropout,
            alpha=alpha,
            solver=solver,
            batch_size=batch_size,
            learning_rate_init=learning_rate_init,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
        )
        self.standardize_target = standardize_target
