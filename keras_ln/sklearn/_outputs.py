"""Task-specific parts of the keras_ln estimators: targets, losses, predict methods.

`_ClassifierOutputs` (class labels or a multilabel indicator matrix,
log-loss, `predict_proba`) and `_RegressorOutputs` (standardized targets,
half the squared error, `predict` on the targets' scale) are mixed into the
estimators of `tabular.py` and `sequence.py` beside `_base._KerasEstimator`.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import accuracy_score
from sklearn.metrics import r2_score
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import column_or_1d


def _weighted_column_stats(targets, weights):
    """Weighted mean and standard deviation (ddof 0) of every column.

    Weights are repetitions: each column is reduced to its distinct values
    and their summed weights, in sorted order (the weights of a value summed
    in sorted order too), before the sums. So integer weights give bitwise
    the statistics of the repeated rows, and the row order changes nothing.
    """
    means, stds = [], []
    # Equal weights (no sample_weight) need no order among a value's rows:
    # one unstable sort of the values (np.lexsort's two-key merge sort
    # took ~9 ms on 100,000 rows, this ~1 ms).
    uniform = len(weights) == 0 or bool(np.all(weights == weights[0]))
    for column in np.asarray(targets, dtype=np.float64).T:
        order = np.argsort(column) if uniform else np.lexsort((weights, column))
        values, w = column[order], weights[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        values, w = values[starts], np.add.reduceat(w, starts)
        total = np.sum(w)
        mean = np.sum(values * w) / total
        means.append(mean)
        stds.append(np.sqrt(np.sum(w * (values - mean) ** 2) / total))
    return np.array(means), np.array(stds)


# The target kinds (`type_of_target`) sklearn's classifiers accept
# (`check_classification_targets`).
_CLASS_TARGETS = ("binary", "multiclass", "multiclass-multioutput",
                  "multilabel-indicator", "multilabel-sequences")


class _ClassifierOutputs:
    """Classification: labels <-> class indices, log-loss, predict_proba.

    As sklearn's MLP: labels of three or more classes train a softmax
    output on the log-loss; labels of two classes train one sigmoid output,
    the probability of `classes_[1]`, on the binary log-loss (`_binary`);
    a multilabel indicator matrix `(n_samples, n_labels)` of 0 and 1 (where
    the input validation lets it through: `MLPClassifier`) trains one
    sigmoid output per label on the binary log-loss summed over the labels,
    and `classes_` is then `arange(n_labels)`. Either way the targets of
    labels are class indices (int32).
    """

    def _output_activation(self):
        return "sigmoid" if self._sigmoid_outputs() else "softmax"

    def _sigmoid_outputs(self):
        """Whether the outputs are sigmoids of labels (multilabel, or the
        one label of two classes) rather than a softmax over classes."""
        return getattr(self, "_multilabel", False) or self._is_binary()

    def _is_binary(self):
        # Estimators fitted before binary outputs existed have no flag:
        # their networks have a softmax output per class.
        return getattr(self, "_binary", False)

    def _encode_targets(self, y, reset, classes=None, incremental=False):
        """Class indices (int32), or the 0/1 matrix of a multilabel `y`
        (float64), and the number of network outputs. With `reset`, sets
        `classes_` (from `classes` where given: partial_fit's first call);
        otherwise checks `y` against them."""
        name = type(self).__name__
        if sp.issparse(y):
            y = y.toarray()
        kind = type_of_target(y, input_name="y")
        if kind not in _CLASS_TARGETS or "multiclass" in kind:
            # sklearn's refusal of other kinds and its warning about many
            # classes; the other kinds skip it (it computes `kind` again).
            check_classification_targets(y)
        multilabel = kind == "multilabel-indicator"
        if not multilabel and np.ndim(y) == 2 and np.shape(y)[1] > 1:
            raise ValueError(
                f"{name} expects y of shape (n_samples,) (class labels) or a "
                "multilabel indicator matrix (n_samples, n_labels) of 0 and "
                f"1. Received: y of shape {np.shape(y)}, of type {kind!r}"
            )
        if not multilabel:
            y = column_or_1d(y, warn=True)
        if not reset:
            fitted = getattr(self, "_multilabel", False)
            if multilabel != fitted:
                described = {
                    True: "a multilabel indicator matrix",
                    False: "class labels",
                }
                raise ValueError(
                    f"{name} was fitted on {described[fitted]}, so y must be "
                    f"{described[fitted]} too. Received: y of shape "
                    f"{np.shape(y)}, of type {kind!r}"
                )
        if multilabel:
            labels = np.arange(y.shape[1])
            if reset:
                if classes is not None and not np.array_equal(
                    unique_labels(classes), labels
                ):
                    raise ValueError(
                        "For a multilabel indicator y, `classes` must be its "
                        f"column indices, {labels.tolist()}. Received: "
                        f"classes={classes!r}"
                    )
                self.classes_ = labels
                self._multilabel = True
                self._binary = False
            elif y.shape[1] != len(self.classes_):
                raise ValueError(
                    f"y has {y.shape[1]} labels, but {name} was fitted with "
                    f"{len(self.classes_)} labels."
                )
            return y.astype(np.float64), y.shape[1]
        present = np.unique(y)
        if reset:
            if classes is None:
                found = present
                if len(found) < 2:
                    raise ValueError(
                        f"{name} requires at least 2 classes in the data, but "
                        f"the data contains only one class: {found[0]!r}"
                    )
            else:
                found = unique_labels(classes)
                if len(found) < 2:
                    raise ValueError(
                        f"{name} requires at least 2 classes in `classes`. "
                        f"Received: classes={classes!r}"
                    )
            self.classes_ = found
            self._multilabel = False
            self._binary = len(found) == 2
        unseen = np.setdiff1d(present, self.classes_)
        if len(unseen):
            if incremental:
                # sklearn's message (partial_fit).
                raise ValueError(
                    "`y` has classes not in `self.classes_`. `self.classes_` "
                    f"has {self.classes_}. 'y' has {present}. Pass every "
                    "class in `classes` on the first call to partial_fit."
                )
            raise ValueError(
                "warm_start can only be used where `y` has the same "
                f"classes as in the previous call to fit. Previously got "
                f"{self.classes_}, `y` has {present}"
            )
        n_outputs = 1 if self._is_binary() else len(self.classes_)
        return np.searchsorted(self.classes_, y).astype(np.int32), n_outputs

    def _check_partial_fit_classes(self, classes):
        """sklearn's rules for `classes` in `partial_fit`
        (`sklearn.utils.multiclass._check_partial_fit_first_call`)."""
        fitted = hasattr(self, "model_")
        if not fitted and classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit. "
                "Received: classes=None"
            )
        if fitted and classes is not None and not np.array_equal(
            self.classes_, unique_labels(classes)
        ):
            raise ValueError(
                f"`classes={classes!r}` is not the same as on last call to "
                f"partial_fit, was: {self.classes_!r}"
            )

    def _fit_target_scale(self, targets, sample_weight):
        """Class indices are trained as they are."""

    def _scale_targets(self, targets):
        return targets

    def _loss_fn(self, tf):
        if getattr(self, "_multilabel", False):
            def binary_log_loss(y, logits):
                # Summed over the labels, as sklearn's `binary_log_loss`.
                return tf.reduce_sum(
                    tf.nn.sigmoid_cross_entropy_with_logits(
                        labels=tf.cast(y, logits.dtype), logits=logits
                    ),
                    axis=-1,
                )

            binary_log_loss.native_output = "sigmoid"  # see _execution._native_mlp
            return binary_log_loss

        if self._is_binary():
            def binary_class_log_loss(y, logits):
                # One logit, that of classes_[1] (y: class indices).
                return tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=tf.cast(y, logits.dtype), logits=logits[:, 0]
                )

            binary_class_log_loss.native_output = "sigmoid"
            return binary_class_log_loss

        def log_loss(y, logits):
            return tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=logits
            )

        log_loss.native_output = "softmax"
        return log_loss

    def _data_loss(self, logits, y, sample_weight):
        """Weighted mean log-loss, from the logits (float64)."""
        if self._sigmoid_outputs():
            # log(1 + exp(z)) - y z, summed over the labels (binary: one).
            y = np.reshape(y, logits.shape)
            losses = np.sum(np.logaddexp(0.0, logits) - y * logits, axis=1)
            return float(np.average(losses, weights=sample_weight))
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_proba = shifted[np.arange(len(y)), y] - np.log(
            np.exp(shifted).sum(axis=1)
        )
        return float(np.average(-log_proba, weights=sample_weight))

    def _score_outputs(self, logits, y, sample_weight):
        if self._sigmoid_outputs():
            # subset accuracy (binary: of the one label)
            return accuracy_score(
                y.astype(int), (logits > 0).astype(int).reshape(np.shape(y)),
                sample_weight=sample_weight,
            )
        return accuracy_score(y, logits.argmax(axis=1), sample_weight=sample_weight)

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like
            Input data (see the class docstring for the accepted shapes).

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_labels)
            The predicted classes; for a multilabel fit, the indicator
            matrix (int) of the labels of probability above 0.5.
        """
        proba = self._predict_outputs(X)
        if getattr(self, "_multilabel", False):
            return (proba > 0.5).astype(int)
        if self._is_binary():  # as sklearn's: classes_[1] above 0.5
            return self.classes_[(proba[:, 0] > 0.5).astype(int)]
        return self.classes_[proba.argmax(axis=1)]

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : array-like
            Input data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Class probabilities, columns in the order of `classes_`; for a
            multilabel fit, the probability of every label (the rows need
            not sum to 1).
        """
        proba = self._predict_outputs(X)
        if getattr(self, "_multilabel", False):
            return proba
        if self._is_binary():  # [1 - p, p], as sklearn's
            return np.hstack([1.0 - proba, proba])
        # A float32 network's softmax sums to 1 within float32 rounding:
        # normalize again in float64, where sklearn's metrics check it.
        return proba / proba.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Logarithm of the probability estimates.

        Parameters
        ----------
        X : array-like
            Input data.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            `np.log(predict_proba(X))`.
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class _RegressorOutputs:
    """Regression: one or several outputs, half squared error."""

    def _output_activation(self):
        return None

    def _encode_targets(self, y, reset, classes=None, incremental=False):
        y = np.asarray(y)
        if y.ndim not in (1, 2):
            raise ValueError(
                "Expected y of shape (n_samples,) or (n_samples, n_outputs). "
                f"Received: y.shape={y.shape}"
            )
        if y.ndim == 2 and y.shape[1] == 1:
            # One output, as sklearn's MLPRegressor: a DataConversionWarning,
            # and predict returns shape (n_samples,).
            y = column_or_1d(y, warn=True)
        targets = y.reshape(len(y), -1)
        if reset:
            self.n_outputs_ = targets.shape[1]
        elif targets.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {targets.shape[1]} outputs, but {type(self).__name__} "
                f"was fitted with {self.n_outputs_} outputs."
            )
        dtype = getattr(self, "_dtype", None) or np.float64
        return targets.astype(dtype), targets.shape[1]

    def _fit_target_scale(self, targets, sample_weight):
        """Set the target scale of training: the weighted mean and standard
        deviation of every column with `standardize_target`, else 0 and 1.
        """
        n_outputs = targets.shape[1]
        if not self.standardize_target:
            self._y_mean, self._y_scale = np.zeros(n_outputs), np.ones(n_outputs)
            return
        mean, std = _weighted_column_stats(targets, sample_weight)
        # A constant column (std 0, or the rounding of its mean) keeps 1.
        std[std <= 10 * np.finfo(np.float64).eps * np.abs(mean)] = 1.0
        self._y_mean, self._y_scale = mean, std

    def _scale_targets(self, targets):
        return (targets - self._y_mean) / self._y_scale

    def _loss_fn(self, tf):
        def half_squared_error(y, pred):
            y = tf.cast(y, pred.dtype)
            return 0.5 * tf.reduce_mean(tf.square(y - pred), axis=-1)

        half_squared_error.native_output = "identity"
        return half_squared_error

    def _data_loss(self, pred, y, sample_weight):
        """Weighted mean of half the squared error averaged over outputs."""
        errors = 0.5 * np.mean((pred - y) ** 2, axis=1)
        return float(np.average(errors, weights=sample_weight))

    def _score_outputs(self, pred, y, sample_weight):
        # R^2 is the same on the standardized and the original scale.
        return r2_score(y, pred, sample_weight=sample_weight)

    def predict(self, X):
        """Predict using the network.

        Parameters
        ----------
        X : array-like
            Input data (see the class docstring for the accepted shapes).

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values (float64); shape (n_samples,) for one
            output (also for y of shape (n_samples, 1), as sklearn).
        """
        pred = self._predict_outputs(X) * self._y_scale + self._y_mean
        return pred.ravel() if self.n_outputs_ == 1 else pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
