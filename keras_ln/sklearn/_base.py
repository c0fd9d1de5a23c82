"""Shared fit/predict plumbing of the keras_ln estimators.

`_KerasEstimator` owns everything that does not depend on the input kind
(tables or sequences) or the task (classification or regression): parameter
constraints of the training loop, seeding, the minibatch Adam loop with
sklearn's stopping rules and early stopping, prediction, pickling.
`_ClassifierOutputs` and `_RegressorOutputs` (`_outputs.py`) add the task-specific target
handling, losses and predict methods; `tabular.py` and `sequence.py` add the
input validation and the network (through `keras_ln.models`).

The loop follows `sklearn.neural_network.MLPClassifier(solver="adam")`: per
epoch, shuffled minibatches (`batch_size="auto"` is `min(200, n_samples)`);
the loss of a batch is the sample-weighted mean of the data loss (log-loss;
for a multilabel indicator y the binary log-loss summed over the labels; or
half the squared error averaged over outputs) plus `0.5 * alpha * ||W||^2`
over every weight matrix, divided by the batch's total sample weight;
`loss_curve_` holds the per-epoch mean of the batch losses, weighted by the
batches' total sample weights (by their row counts when every weight is 1,
as in sklearn). Each batch takes one step of sklearn's Adam (`beta_1`,
`beta_2`, `epsilon`, with the bias correction in the step size). Training
stops by sklearn's rule (`_no_improvement`) when the training loss has not
improved by `tol` for `n_iter_no_change` epochs. `partial_fit` (as
sklearn's `incremental` fit) runs one epoch without the stopping rule and
continues Adam's moments and step count from the last fit or partial fit
(`_adam_state`, NumPy arrays, pickled with the estimator); `fit`, warm or
not, starts Adam afresh, as sklearn. Early stopping departs from sklearn on purpose: the rule watches the
validation *loss* (sklearn watches the accuracy or R^2, which on a small
validation part stops at the first plateau of a few rows while the net is
still learning), the weights of the lowest validation loss are restored,
and it is used only where the validation part has at least
`MIN_VALIDATION_ROWS` rows (classifiers: `MIN_VALIDATION_ROWS_PER_CLASS` of
every class); otherwise a warning says so and all rows train without it.
With `normalization="batch"`, the moving statistics of the batch norms are
recomputed from the training rows (`recompute_batch_statistics`) after
training and before each validation pass: a few updates at momentum 0.99
leave them far from the trained network's.

Regressors standardize the targets by default (`standardize_target`): the
network learns `(y - mean) / std` per output column, with the mean and std
weighted by the sample weights (`_outputs._weighted_column_stats`, exact under
repetitions), and predictions are mapped back; the training and validation
losses (`loss_curve_`, `validation_loss_curve_`) are on the standardized
scale, where 0.5 is the loss of predicting the mean.

Sample weights are repetitions, as sklearn's checks expect (a fit with
weight `k` on a row equals the fit with the row repeated `k` times): rows of
weight 0 are removed before batching, and a batch computes each distinct
(row, target) pair once with its summed weight, in an order fixed by the
rows' bytes rather than their positions. So a fit in one batch (at most
`batch_size` rows, 200 by default) with integer weights is bitwise the fit
on the repeated rows, and a one-batch fit does not depend on the order of
the rows. Without this, the two fits round their sums over rows differently
and training amplifies the difference: on sklearn's 15-row check, each loss
spike of the default LSTMClassifier multiplied it about 1000-fold, from
1e-16 to 1e-8-1e-6 in the probabilities after 190 epochs (the check's rtol
is 1e-7). With several batches
per epoch, a repeated row is visited `k` times per epoch and a weighted row
once, so the fits differ, as sklearn's MLP's do. Rows are not merged with
`dropout` (a repeated row draws `k` masks) nor with `normalization="batch"`
(the statistics count each row of a batch once, whatever its weight).

Execution: the epochs run in `_training.Stochastic` (sklearn's
`_fit_stochastic`): the training rows are tensors for the whole fit, and a
chunk of epochs, their minibatches given as index arrays, runs as one
program (`_Program.epochs` in `_execution.py`: a `tf.while_loop` over
epochs and batches, each step a `tf.GradientTape` pass through the
network's `stateless_call` plus one fused `ResourceApplyAdam` per
variable, sklearn's stopping rule checked after every epoch inside the
loop). A fit of few steps runs the loop eagerly (no trace); a longer one
as a `tf.function` traced once per network structure and sample shape and
reused by every later fit of the same structure in the process (grid-search
folds, repeated fits): the variables are arguments, not captures. A long
fit of a table network runs it XLA-compiled. At most `_MAX_PROGRAMS`
structures are kept (least recently used dropped). Batches and predict
chunks are padded (zero weight / cut off) to a few row counts, so that
kernels compiled per shape (the XLA layer-norm fast path) are reused too.
The model is float64 unless `X` is float32 (like sklearn's MLP, which
preserves float32). Prediction calls the model eagerly, chunk by chunk.

Reproducibility: `random_state` seeds the initial weights and dropout (via
`keras_ln.models`, which restores Python's `random` state afterwards), the
per-epoch shuffling (a NumPy `Generator`) and the validation split; no
global seed (NumPy, TensorFlow, Keras) is set or changed (`random_state=None`
draws the seed from NumPy's global generator, as sklearn does), and
`keras.backend.clear_session()` is never called (it would also reset the
user's dtype policy and global seed).
"""

import math
import warnings
from numbers import Integral
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.base import _fit_context
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_sample_weight
from sklearn.utils.validation import check_is_fitted

from keras_ln.sklearn._execution import _model_from_bytes
from keras_ln.sklearn._execution import _model_to_bytes
from keras_ln.sklearn._execution import _program
from keras_ln.sklearn._execution import _tf
from keras_ln.sklearn._execution import training_variables
from keras_ln.sklearn._execution import adam_slots
from keras_ln.sklearn._execution import adam_state
from keras_ln.sklearn._training import Stochastic
from keras_ln.sklearn._training import bucket
from keras_ln.sklearn._training import training_rows

# Rows per forward pass at predict time; for sequences at most
# PREDICT_CHUNK_STEPS rows x time steps (a power of two of rows), since a
# recurrent layer's pass keeps per-step state for every row: 4,000 sequences
# of 100 steps in one pass of a 128-unit layer-normalized LSTM peaked at
# 5.5 GiB.
PREDICT_CHUNK = 8192
PREDICT_CHUNK_STEPS = 2**15

# Early stopping needs a validation part that can tell a better epoch from a
# worse one: at least this many rows of positive weight, and for classifiers
# at least MIN_VALIDATION_ROWS_PER_CLASS rows of every class; with less it is
# not used (see `_KerasEstimator._validation_split`). On wine (178 rows),
# sklearn's rule of "at least 2" let a 3-fold AutoML stop on the accuracy of
# 12-14 rows after ~25 epochs, at 0.30 test error against 0.024 for the same
# net trained 200 epochs.
MIN_VALIDATION_ROWS = 50
MIN_VALIDATION_ROWS_PER_CLASS = 2

ACTIVATIONS = {"identity", "logistic", "tanh", "relu"}

# Fitted attributes removed when a fresh fit starts or a fit fails.
_FITTED = (
    "model_",
    "n_features_in_",
    "feature_names_in_",
    "n_iter_",
    "t_",
    "loss_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "validation_loss_curve_",
    "best_validation_loss_",
    "early_stopping_used_",
    "_y_mean",
    "_y_scale",
    "classes_",
    "n_outputs_",
    "_architecture",
    "_net_kwargs",
    "_dtype",
    "_multilabel",
    "_binary",
    "_adam_state",
    "_input_layout",
    "_n_step_features",
    "_program_key",
)


def _hashable(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(np.asarray(value).tolist())
    return value


def check_sizes(value, name):
    """A positive int or a sequence of them, as a tuple of ints."""
    sizes = [value] if np.ndim(value) == 0 else list(np.asarray(value).ravel())
    if not all(
        isinstance(s, (Integral, np.integer)) and not isinstance(s, bool) and s > 0
        for s in sizes
    ):
        raise ValueError(f"{name} must hold integers > 0, got {value!r}.")
    return tuple(int(s) for s in sizes)


# Docstring parts shared by the four estimators (numpydoc entries).
_TRAINING_PARAMETERS_DOC = """
    solver : {"adam"}, default="adam"
        The optimizer: Adam, the only one (sklearn's default); any other
        value raises ValueError.
    batch_size : int or "auto", default="auto"
        Minibatch size; "auto" is `min(200, n_samples)`.
    learning_rate_init : float, default=0.001
        Adam's step size.
    max_iter : int, default=200
        Maximum number of epochs (per call to `fit`; `partial_fit`, where
        the estimator has it, runs one).
    shuffle : bool, default=True
        Shuffle the samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, dropout, shuffling and the validation
        split: two fits with the same int give identical predictions.
    tol : float, default=1e-4
        Improvement of the watched loss (the validation loss with early
        stopping, else the training loss) that counts as progress.
    verbose : int, default=0
        0 prints nothing; >0 prints one line per epoch.
    warm_start : bool, default=False
        Continue training the fitted network (same architecture parameters).
    early_stopping : bool, default=False
        Hold out `validation_fraction` of the rows (stratified for
        classifiers), stop when the loss on them (log-loss, or half the
        squared error, without the penalty) has not improved by `tol` for
        `n_iter_no_change` epochs, and restore the weights of the epoch
        with the lowest validation loss. Only where the held-out part has
        at least 50 rows of positive weight (classifiers: and 2 of every
        class): with fewer, one lucky epoch decides, so a warning says so
        and every row trains as with `early_stopping=False`
        (`early_stopping_used_` is then False).
    validation_fraction : float in (0, 1), default=0.1
        Held-out fraction for early stopping.
    beta_1 : float in [0, 1), default=0.9
        Adam's decay rate of the first moment (mean) of the gradients.
    beta_2 : float in [0, 1), default=0.999
        Adam's decay rate of the second moment of the gradients.
    epsilon : float > 0, default=1e-8
        Adam's numerical stability term, added to the square root of the
        second moment (as in sklearn's and Keras' Adam).
    n_iter_no_change : int, default=10
        Epochs without improvement by `tol` before stopping (training stops
        when the count exceeds it, as in sklearn).
"""

_FIT_ATTRIBUTES_DOC = """
    n_iter_ : int
        Epochs run by the last call to `fit` (1 after `partial_fit`).
    t_ : int
        Training rows the optimizer has gone through, as sklearn's `t_`:
        rows per epoch (without the early-stopping validation part) times
        epochs, accumulated over warm starts and partial fits.
    loss_ : float
        Training loss of the last epoch.
    loss_curve_ : list of float
        Training loss of every epoch (continued by warm starts and
        partial fits): the weighted mean data loss plus the L2 penalty, on
        the scale the network trains on (for regressors, standardized
        targets by default: 0.5 is then the loss of predicting the mean;
        see `standardize_target`).
    best_loss_ : float or None
        Smallest training loss (None with early stopping).
    early_stopping_used_ : bool
        Whether the last fit stopped on a validation part (see
        `early_stopping`).
    validation_loss_curve_ : list of float or None
        Validation loss of every epoch, on the training scale, with early
        stopping (else None).
    best_validation_loss_ : float or None
        Lowest validation loss: that of the restored weights.
    validation_scores_ : list of float or None
        Validation score (accuracy or R^2) of every epoch, with early
        stopping (else None).
    best_validation_score_ : float or None
        Validation score of the restored weights (those of the lowest
        validation loss, which need not have the highest score).
"""

_STANDARDIZE_TARGET_DOC = """\
    standardize_target : bool, default=True
        Train on `(y - mean) / std` of every output column and invert that
        at predict, so predictions, `score` and `validation_scores_` are on
        the scale of `y`, while the training does not depend on its units:
        the same `learning_rate_init`, `alpha` and `tol` suit targets in
        thousands or thousandths. Mean and standard deviation are weighted
        by `sample_weight` (so a weight still counts as repetitions), over
        the training rows (without the early-stopping validation part); a
        constant column keeps std 1. A warm start keeps the scale of the
        fit it continues. Like `GaussianProcessRegressor(normalize_y=True)`;
        False trains on `y` as it is, as sklearn's `MLPRegressor` does
        (`sklearn.compose.TransformedTargetRegressor` then applies any
        other transform).
"""


class _SavedModel:
    """A fitted `model_` in pickles: the bytes of its `.keras` archive."""

    def __init__(self, data):
        self.data = data


class _KerasEstimator(BaseEstimator):
    """Base class: training loop, prediction and pickling (see module doc)."""

    _parameter_constraints: dict = {
        "normalization": [StrOptions({"layer", "batch"}), None],
        "activation": [StrOptions(ACTIVATIONS)],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "solver": [StrOptions({"adam"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    }

    # Parameters that define the network; a warm start needs them unchanged.
    _architecture_params = ()

    # --- hooks for subclasses -------------------------------------------
    def _check_architecture(self):
        """Raise ValueError for invalid architecture parameters."""

    def _validate_fit_data(self, X, y, reset):
        """Return `(X, y)` as arrays; `X` float, y as given (validated)."""
        raise NotImplementedError

    def _validate_predict_data(self, X):
        raise NotImplementedError

    def _build_model(
        self, n_inputs, n_outputs, output_activation, dtype, seed, **kwargs
    ):
        raise NotImplementedError

    # --- fit ------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to data.

        Parameters
        ----------
        X : array-like
            Training data (see the class docstring for the accepted shapes).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values (class labels for classifiers).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights; None gives every sample weight 1.
            A weight `k` counts as `k` repetitions of the row and 0 removes
            it (exactly so when the training rows fit in one batch; see the
            module doc of `keras_ln.sklearn._base`).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight)

    def _partial_fit(self, X, y, sample_weight, classes=None):
        """One epoch on `X, y` from the fitted network and Adam's state (a
        new network on the first call), as sklearn's MLP `partial_fit`."""
        # `_fit_context` validates the parameters on the first call only;
        # a later one may have changed them (set_params) too.
        self._validate_params()
        if self.early_stopping:
            raise ValueError(
                "partial_fit does not support early_stopping=True: it trains "
                "one epoch on the rows it is given, with no validation part "
                "(as sklearn's MLP). Received: early_stopping=True; set "
                "early_stopping=False to call partial_fit."
            )
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _fit(self, X, y, sample_weight, incremental=False, classes=None):
        """`fit` (`incremental=False`) or `partial_fit` (True): a fit
        continues the fitted network with `warm_start`, a partial fit
        always."""
        tf = _tf()
        self._check_architecture()
        continuing = hasattr(self, "model_") and (self.warm_start or incremental)
        args = (X, y, sample_weight, continuing, incremental, classes, tf)
        if continuing:
            return self._fit_checked(*args)
        self._forget_fitted()
        try:
            return self._fit_checked(*args)
        except BaseException:
            self._forget_fitted()
            raise

    def _forget_fitted(self):
        for name in _FITTED:
            self.__dict__.pop(name, None)

    def _check_unchanged_architecture(self, architecture, incremental):
        """A continued fit trains the fitted network: raise ValueError if a
        parameter that defines it changed."""
        if architecture == self._architecture:
            return
        changed = sorted(
            p for p in architecture if architecture[p] != self._architecture[p]
        )
        how, instead = (
            ("partial_fit", "Call fit") if incremental
            else ("warm_start=True", "Set warm_start=False")
        )
        raise ValueError(
            f"{how} continues training the fitted network, so "
            "the parameters that define it must not change; "
            f"{', '.join(changed)} changed since the last fit. {instead} "
            "to fit a new network. Received: "
            + ", ".join(f"{p}={architecture[p]!r}" for p in changed)
        )

    def _fit_checked(
        self, X, y, sample_weight, continuing, incremental, classes, tf
    ):
        architecture = {
            p: _hashable(getattr(self, p)) for p in self._architecture_params
        }
        if continuing:
            self._check_unchanged_architecture(architecture, incremental)
        X, y = self._validate_fit_data(X, y, reset=not continuing)
        dtype = self._dtype if continuing else self._compute_dtype(X)
        X = X.astype(dtype, copy=False)
        n_samples = X.shape[0]
        sample_weight = _check_sample_weight(
            sample_weight, np.empty((n_samples, 0)), dtype=np.float64,
            ensure_non_negative=True,
        )
        targets, n_outputs = self._encode_targets(
            y, reset=not continuing, classes=classes, incremental=incremental
        )

        rng = check_random_state(self.random_state)
        seed = int(rng.randint(1, np.iinfo(np.int32).max))
        shuffle_rng = np.random.default_rng(seed)

        train_idx, val_idx = self._validation_split(targets, sample_weight, seed)
        # Rows per epoch as sklearn counts them in `t_` (weight 0 included).
        epoch_rows = len(train_idx)
        # A row of weight 0 is a removed row: it takes no place in batches.
        train_idx = train_idx[sample_weight[train_idx] > 0]
        n_train = len(train_idx)
        if n_train == 0:  # all-zero weights are refused above
            raise ValueError(
                "Every row outside the validation split has sample weight 0: "
                "there is nothing to train on. Received: sample_weight with "
                f"{np.count_nonzero(sample_weight)} positive values in "
                f"{n_samples} rows, validation_fraction="
                f"{self.validation_fraction}"
            )
        if not continuing:  # a continued fit keeps the scale it trained on
            self._fit_target_scale(targets[train_idx], sample_weight[train_idx])
        targets = self._scale_targets(targets).astype(targets.dtype, copy=False)
        batch_size = self._batch_size(n_train)
        model, program, net_kwargs = self._network(
            X, architecture, n_outputs, dtype, seed, continuing, tf
        )
        tv, ntv = training_variables(model)
        # A partial fit continues Adam's state (that of the last fit or
        # partial fit); a fit, warm or not, starts it afresh (as sklearn).
        ms, vs, t = adam_slots(
            tv,
            getattr(self, "_adam_state", None)
            if continuing and incremental else None,
        )
        # Weights as repetitions: a batch computes each distinct row once,
        # with its summed weight, in an order fixed by the rows' bytes (see
        # the module doc). Not with dropout (one mask instead of k) or
        # batch statistics (a row counted once instead of k times).
        # The training rows: X itself where they are all its rows in order
        # (no copy of a large X), else a copy.
        every_row = n_train == n_samples  # train_idx is then arange(n_samples)
        x_train = X if every_row else X[train_idx]
        y_train = targets if every_row else targets[train_idx]
        x_tensor, groups = training_rows(
            x_train, y_train,
            self.dropout == 0 and self.normalization != "batch", tf)
        hyperparameters = (
            tf.constant(self.learning_rate_init, tf.float64),
            tf.constant(0.5 * self.alpha, dtype),
            tf.constant(self.beta_1, tf.float64),
            tf.constant(self.beta_2, tf.float64),
            tf.constant(self.epsilon, tf.float64),
        )
        validation = None
        if val_idx is not None:
            validation = (X[val_idx], targets[val_idx], sample_weight[val_idx])
        fitted = Stochastic(
            self, program, model, x_train, x_tensor, y_train,
            sample_weight[train_idx], groups, batch_size,
            # partial_fit: one epoch (sklearn's `incremental`).
            1 if incremental else self.max_iter, validation, continuing,
            (tv, ntv, ms, vs, t), hyperparameters, shuffle_rng, tf,
        ).run()
        if not fitted.pop("converged") and not incremental:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
            )

        self.model_ = model
        self._dtype = dtype
        self._architecture = architecture
        self._net_kwargs = net_kwargs
        self._adam_state = adam_state(ms, vs, t)
        n_iter = fitted["n_iter_"]
        self.t_ = (getattr(self, "t_", 0) if continuing else 0) + n_iter * epoch_rows
        self.loss_ = fitted["loss_curve_"][-1]
        self.early_stopping_used_ = validation is not None
        for name, value in fitted.items():
            setattr(self, name, value)
        return self

    def _batch_size(self, n_train):
        """sklearn's batch size: "auto" is min(200, rows); a larger one is
        clipped to the rows, with sklearn's warning."""
        if self.batch_size == "auto":
            return min(200, n_train)
        if self.batch_size > n_train:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. "
                "It is going to be clipped"
            )
        return int(np.clip(self.batch_size, 1, n_train))

    def _network(self, X, architecture, n_outputs, dtype, seed, continuing, tf):
        """The network a fit trains (a new one, or the fitted one when
        `continuing`), its structure's program (`_execution._program`,
        shared by every fit of the structure) and the builder arguments
        that depend on the data."""
        output_activation = self._output_activation()
        n_inputs = self._n_network_inputs(X)
        net_kwargs = (
            self._net_kwargs if continuing else self._network_kwargs(X)
        )

        def build(seed):
            return self._build_model(
                n_inputs, n_outputs, output_activation, dtype, seed,
                **net_kwargs,
            )

        model = self.model_ if continuing else build(seed)
        key = (
            type(self).__name__,
            tuple(sorted(architecture.items(), key=str)),
            X.ndim, n_inputs, n_outputs, output_activation, dtype,
            tuple(sorted(net_kwargs.items())),
        )
        program = _program(key, lambda: build(0), self._loss_fn(tf))
        self._program_key = key
        return model, program, net_kwargs

    def _validation_split(self, targets, sample_weight, seed):
        """Row indices `(train, validation)`; validation None without early
        stopping.

        Like sklearn, early stopping holds out `validation_fraction` of the
        rows (stratified for classifiers, except multilabel ones, as
        sklearn), but only where the held-out part can tell a better epoch
        from a worse one: at least `MIN_VALIDATION_ROWS` rows of positive
        weight and, for stratified classifiers,
        `MIN_VALIDATION_ROWS_PER_CLASS` of every class. Otherwise (sklearn
        stops on a validation accuracy of as few as 2 rows) a warning says
        so and every row trains, as with `early_stopping=False`.
        """
        n_samples = len(targets)
        rows = np.arange(n_samples)
        if not self.early_stopping:
            return rows, None
        # "classifier": stratified, with rows of every class.
        classifier = is_classifier(self) and not getattr(self, "_multilabel", False)
        n_val = math.ceil(self.validation_fraction * n_samples)
        problem = None
        if n_val < MIN_VALIDATION_ROWS:
            problem = f"gives {n_val} validation rows"
        else:
            try:
                train_idx, val_idx = train_test_split(
                    rows,
                    random_state=seed,
                    test_size=self.validation_fraction,
                    stratify=targets if classifier else None,
                )
            except ValueError as e:  # too few rows of a class to stratify
                problem = f"cannot be stratified ({e})"
            else:
                kept = val_idx[sample_weight[val_idx] > 0]
                per_class = (
                    np.bincount(targets[kept], minlength=len(self.classes_))
                    if classifier else None
                )
                if len(kept) < MIN_VALIDATION_ROWS:
                    problem = (
                        f"gives {len(kept)} validation rows of positive weight"
                    )
                elif classifier and per_class.min() < MIN_VALIDATION_ROWS_PER_CLASS:
                    problem = (
                        f"gives {per_class.min()} validation rows of class "
                        f"{self.classes_[[per_class.argmin()]].tolist()[0]!r}"
                    )
        if problem is None:
            return train_idx, val_idx
        per_class = (
            f" and {MIN_VALIDATION_ROWS_PER_CLASS} of every class"
            if classifier else ""
        )
        warnings.warn(
            f"early_stopping=True needs at least {MIN_VALIDATION_ROWS} "
            f"validation rows{per_class} to tell a better epoch from a worse "
            f"one; validation_fraction={self.validation_fraction} of "
            f"{n_samples} rows {problem}. Training on every row without "
            "early stopping (as with early_stopping=False); see "
            "`early_stopping_used_`.",
            UserWarning,
        )
        return rows, None

    def _compute_dtype(self, X):
        """float32 for float32 input, else float64 (like sklearn's MLP)."""
        return "float32" if X.dtype == np.float32 else "float64"

    def _network_kwargs(self, X):
        """Builder arguments that depend on the training data."""
        return {}

    def _n_network_inputs(self, X):
        return X.shape[-1]

    # --- predict --------------------------------------------------------
    def _forward(self, X, model=None, logits=False):
        """Outputs of the network (`model`, by default the fitted one) in
        inference mode as float64; with `logits`, those of its training view
        (the logits)."""
        tf = _tf()
        model = self.model_ if model is None else model
        # The traced inference of this structure; where it is not cached
        # (unpickled, dropped from the cache) this model becomes its template.
        key = getattr(self, "_program_key", None) or ("model", id(self.model_))
        program = _program(key, lambda: self.model_, self._loss_fn(tf))
        rows = PREDICT_CHUNK
        if X.ndim == 3:
            rows = min(rows, max(16, 1 << ((PREDICT_CHUNK_STEPS // max(X.shape[1], 1)).bit_length() - 1)))
        outs = []
        for i in range(0, X.shape[0], rows):
            chunk = X[i:i + rows]
            n = chunk.shape[0]
            size = bucket(n)
            if size > n:  # rows are independent at inference: pad, then cut
                chunk = np.concatenate(
                    [chunk, np.zeros((size - n,) + chunk.shape[1:], chunk.dtype)]
                )
            out = program.infer(model, tf.constant(chunk), logits=logits)
            outs.append(np.asarray(out)[:n])
        return np.concatenate(outs, axis=0).astype(np.float64, copy=False)

    def _predict_outputs(self, X):
        check_is_fitted(self)
        X = self._validate_predict_data(X)
        return self._forward(X.astype(self._dtype, copy=False))

    # --- pickling ---------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())
        model = state.get("model_")
        if model is not None:
            state["model_"] = _SavedModel(_model_to_bytes(model))
        return state

    def __setstate__(self, state):
        model = state.get("model_")
        if isinstance(model, _SavedModel):
            state = dict(state, model_=_model_from_bytes(model.data))
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
