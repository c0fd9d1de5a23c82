"""`MLPClassifier` and `MLPRegressor`: tabular estimators with tunable normalization."""

from numbers import Integral

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.base import RegressorMixin
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import validate_data

from keras_ln.models import build_mlp
from keras_ln.sklearn._base import _STANDARDIZE_TARGET_DOC
from keras_ln.sklearn._base import _FIT_ATTRIBUTES_DOC
from keras_ln.sklearn._base import _TRAINING_PARAMETERS_DOC
from keras_ln.sklearn._base import _KerasEstimator
from keras_ln.sklearn._base import check_sizes
from keras_ln.sklearn._outputs import _ClassifierOutputs
from keras_ln.sklearn._outputs import _RegressorOutputs


class _MLP(_KerasEstimator):
    """Multilayer perceptron on 2-D input (shared by both tasks)."""

    _parameter_constraints: dict = {
        **_KerasEstimator._parameter_constraints,
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
    }
    _architecture_params = (
        "hidden_layer_sizes",
        "activation",
        "normalization",
        "dropout",
    )

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        normalization="layer",
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.normalization = normalization
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
        check_sizes(self.hidden_layer_sizes, "hidden_layer_sizes")

    def _validate_fit_data(self, X, y, reset):
        # y: several outputs for the regressor, a multilabel indicator
        # matrix for the classifier (checked in `_encode_targets`).
        return validate_data(
            self,
            X,
            y,
            reset=reset,
            dtype=[np.float64, np.float32],
            multi_output=True,
            y_numeric=not isinstance(self, ClassifierMixin),
        )

    def _validate_predict_data(self, X):
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def _build_model(self, n_inputs, n_outputs, output_activation, dtype, seed):
        return build_mlp(
            n_inputs,
            n_outputs,
            hidden_layer_sizes=check_sizes(
                self.hidden_layer_sizes, "hidden_layer_sizes"
            ),
            activation=self.activation,
            normalization=self.normalization,
            dropout=self.dropout,
            output_activation=output_activation,
            dtype=dtype,
            seed=seed,
            name=type(self).__name__.lower(),
        )


_PARAMETERS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers,), default=(100,)
        Width of each hidden layer (an int for one layer; empty for none).
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        Hidden activation, as in sklearn's MLP.
    normalization : {"layer", "batch"} or None, default="layer"
        What follows each hidden Dense layer: `keras_ln.LayerNormalization`
        ("layer"), `keras.layers.BatchNormalization` ("batch") or nothing.
    dropout : float in [0, 1), default=0.0
        Dropout rate after each hidden activation.
    alpha : float, default=0.0001
        Strength of the L2 penalty on the weight matrices, added as
        `0.5 * alpha * ||W||^2` divided by the batch's total sample weight
        (as in sklearn).
""" + _TRAINING_PARAMETERS_DOC.lstrip("\n")

_ATTRIBUTES_DOC = """
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when X has string column names.
""" + _FIT_ATTRIBUTES_DOC.strip("\n") + """
    model_ : keras.Model
        The fitted network.
"""


class MLPClassifier(ClassifierMixin, _ClassifierOutputs, _MLP):
    __doc__ = (
        """Multilayer perceptron classifier with tunable normalization.

    A Keras network trained like `sklearn.neural_network.MLPClassifier`
    (Adam, log-loss): binary and multiclass targets, any label type (as
    sklearn's, one sigmoid output, the probability of `classes_[1]`, for two
    classes and a softmax output per class for more), and multilabel
    indicator matrices `(n_samples, n_labels)` of 0 and 1 (one sigmoid
    output per label, the binary log-loss summed over the labels;
    `predict` returns the indicator matrix, `predict_proba` the label
    probabilities and `score` the subset accuracy, as sklearn's).
    `partial_fit` trains one epoch at a time, as sklearn's.
"""
        + _PARAMETERS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (for a multilabel fit, `arange(n_labels)`)."""
        + _ATTRIBUTES_DOC
        + """
    See Also
    --------
    MLPRegressor : The regressor.
    keras_ln.sklearn.LSTMClassifier : The same for sequences.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from keras_ln.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier((16,), max_iter=50, learning_rate_init=0.01,
    ...                     random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    """
    )

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the network with one epoch over the given data.

        As sklearn's `MLPClassifier.partial_fit`: the first call (on an
        unfitted estimator) builds the network; every call then trains one
        epoch (minibatches of `batch_size`, shuffled with `shuffle`),
        continuing the weights and Adam's state of the previous call (or
        of `fit`). `n_iter_` is 1 after each call; `t_` and `loss_curve_`
        grow. No stopping rule and no `ConvergenceWarning` apply, and
        `early_stopping=True` raises ValueError. A first call equals
        `fit` with `max_iter=1` on the same data and `random_state`. With
        `normalization="batch"`, the population statistics are those of
        the last call's rows (see `fit`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a multilabel indicator matrix.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights (see `fit`).
        classes : array-like of shape (n_classes,), default=None
            Every class of all calls: required on the first call (for a
            multilabel y, `arange(n_labels)`), optional afterwards, where
            it must equal `classes_`. `y` need not hold all of them; a
            label outside them raises ValueError.

        Returns
        -------
        self : object
            The updated estimator.
        """
        self._check_partial_fit_classes(classes)
        return self._partial_fit(X, y, sample_weight, classes=classes)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _RegressorOutputs, _MLP):
    __doc__ = (
        """Multilayer perceptron regressor with tunable normalization.

    A Keras network trained like `sklearn.neural_network.MLPRegressor`
    (Adam, half squared error); one or several outputs (y of shape
    `(n_samples, 1)` is one output: predictions of shape `(n_samples,)`, as
    sklearn's). Unlike sklearn's, it trains on standardized targets by
    default (`standardize_target`). `partial_fit` trains one epoch at a
    time, as sklearn's.
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
    MLPClassifier : The classifier.
    sklearn.compose.TransformedTargetRegressor : Any other target transform
        (with `standardize_target=False`).
    keras_ln.sklearn.LSTMRegressor : The same for sequences.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_ln.sklearn import MLPRegressor
    >>> X = np.random.default_rng(0).normal(size=(64, 3))
    >>> reg = MLPRegressor((8,), max_iter=20, random_state=0)
    >>> reg.fit(X, X.sum(axis=1)).predict(X[:2]).shape
    (2,)
    """
    )

    _parameter_constraints: dict = {
        **_MLP._parameter_constraints,
        "standardize_target": ["boolean"],
    }
    _architecture_params = _MLP._architecture_params + ("standardize_target",)

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        normalization="layer",
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
            hidden_layer_sizes,
            activation,
            normalization=normalization,
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

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the network with one epoch over the given data.

        As sklearn's `MLPRegressor.partial_fit`: the first call (on an
        unfitted estimator) builds the network; every call then trains one
        epoch (minibatches of `batch_size`, shuffled with `shuffle`),
        continuing the weights and Adam's state of the previous call (or
        of `fit`). `n_iter_` is 1 after each call; `t_` and `loss_curve_`
        grow. No stopping rule and no `ConvergenceWarning` apply, and
        `early_stopping=True` raises ValueError. A first call equals
        `fit` with `max_iter=1` on the same data and `random_state`. With
        `standardize_target`, the target scale is that of the first
        call's `y` (or of `fit`), kept by the later calls. With
        `normalization="batch"`, the population statistics are those of
        the last call's rows (see `fit`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights (see `fit`).

        Returns
        -------
        self : object
            The updated estimator.
        """
        return self._partial_fit(X, y, sample_weight)
