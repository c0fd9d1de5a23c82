"""MLPClassifier / MLPRegressor: known values, reproducibility, errors."""

import warnings

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model import Ridge
from sklearn.metrics import log_loss
from sklearn.model_selection import KFold
from sklearn.model_selection import StratifiedKFold
from sklearn.model_selection import cross_val_score
from sklearn.model_selection import cross_validate
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from keras_ln.datasets import load_diabetes
from keras_ln.datasets import load_wine
from keras_ln.models import build_mlp
from keras_ln.sklearn import MLPClassifier
from keras_ln.sklearn import MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _seed(random_state):
    """The model seed the estimators derive from an int random_state."""
    return int(check_random_state(random_state).randint(1, np.iinfo(np.int32).max))


def test_reference_keras_model_gives_same_predictions(blobs):
    """normalization=None: a hand-built Keras MLP with the fitted weights."""
    X, y = blobs
    clf = MLPClassifier((6, 5), activation="tanh", normalization=None,
                        max_iter=20, random_state=0).fit(X, y)
    ref = keras.Sequential([
        keras.Input((3,), dtype="float64"),
        keras.layers.Dense(6, activation="tanh", dtype="float64"),
        keras.layers.Dense(5, activation="tanh", dtype="float64"),
        keras.layers.Dense(3, activation="softmax", dtype="float64"),
    ])
    ref.set_weights(clf.model_.get_weights())
    np.testing.assert_allclose(clf.predict_proba(X), ref(X), rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), np.argmax(ref(X), axis=1))

    target = X @ [1.0, -2.0, 0.5] + 100.0
    reg = MLPRegressor((4,), activation="identity", normalization=None,
                       max_iter=5, random_state=0).fit(X, target)
    w1, b1, w2, b2 = reg.model_.get_weights()
    # The network predicts the standardized target (standardize_target).
    expected = ((X @ w1 + b1) @ w2 + b2).ravel() * target.std() + target.mean()
    np.testing.assert_allclose(reg.predict(X), expected, rtol=1e-12)


@pytest.mark.parametrize("normalization", ["layer", None])
def test_first_epoch_loss_matches_numpy(blobs, normalization):
    """Full batch, one epoch: loss_curve_[0] is the penalized log-loss at
    the initial weights, computed here in NumPy."""
    X, y = blobs
    alpha = 0.3
    clf = MLPClassifier((5,), normalization=normalization, alpha=alpha,
                        max_iter=1, random_state=7).fit(X, y)
    init = build_mlp(3, 3, (5,), normalization=normalization,
                     output_activation="softmax", dtype="float64", seed=_seed(7))
    kernel, bias = init.get_layer("dense_0").get_weights()
    h = X @ kernel + bias
    if normalization == "layer":
        gamma, beta = init.get_layer("norm_0").get_weights()
        mu, var = h.mean(1, keepdims=True), h.var(1, keepdims=True)
        h = (h - mu) / np.sqrt(var + 1e-3) * gamma + beta
    w_out, b_out = init.get_layer("logits").get_weights()
    logits = np.maximum(h, 0) @ w_out + b_out
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    expected = -logp[np.arange(len(y)), y].mean()
    expected += 0.5 * alpha * (np.sum(kernel**2) + np.sum(w_out**2)) / len(y)
    np.testing.assert_allclose(clf.loss_curve_[0], expected, rtol=1e-10)


# Adam's hyperparameters as float32 values: Keras keeps the learning rate in
# a float32 variable and casts beta_1 and beta_2 from Python floats through
# float32 in its bias correction (0.9 -> 0.89999998), where the estimators
# use the float64 values (as sklearn's AdamOptimizer, compared exactly in
# test_sklearn_parity.py); with float32-exact values both are the same.
_F32 = [float(np.float32(v)) for v in (0.9, 0.999, 0.01)]


@pytest.mark.parametrize(
    "beta_1, beta_2, epsilon",
    [(_F32[0], _F32[1], 1e-8), (0.5, 0.75, 1e-3), (0.0, 0.25, 1.0)],
)
def test_adam_step_matches_keras_adam(blobs, beta_1, beta_2, epsilon):
    """Three full-batch steps equal Keras' Adam with the same beta_1,
    beta_2 and epsilon on the same loss."""
    X, y = blobs
    lr = _F32[2]
    clf = MLPClassifier((5,), normalization=None, alpha=0.0, max_iter=3,
                        learning_rate_init=lr, beta_1=beta_1, beta_2=beta_2,
                        epsilon=epsilon, random_state=3).fit(X, y)
    init = build_mlp(3, 3, (5,), normalization=None, output_activation="softmax",
                     dtype="float64", seed=_seed(3))
    logits = keras.Model(init.inputs, init.get_layer("logits").output)
    opt = keras.optimizers.Adam(lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    x = tf.constant(X)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=logits(x, training=True)))
        grads = tape.gradient(loss, logits.trainable_variables)
        opt.apply(grads, logits.trainable_variables)
    for ours, ref in zip(clf.model_.get_weights(), init.get_weights()):
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("normalization", ["layer", "batch", None])
def test_same_random_state_same_predictions(blobs, normalization):
    X, y = blobs
    params = dict(hidden_layer_sizes=(8,), normalization=normalization,
                  dropout=0.2, batch_size=16, max_iter=4, random_state=5)
    a = MLPClassifier(**params).fit(X, y).predict_proba(X)
    b = MLPClassifier(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = MLPClassifier(**dict(params, random_state=6)).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)


def test_random_state_none_draws_fresh(blobs):
    X, y = blobs
    a = MLPClassifier((8,), max_iter=2).fit(X, y).predict_proba(X)
    b = MLPClassifier((8,), max_iter=2).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, b)


def test_fit_does_not_touch_global_seeds(blobs):
    X, y = blobs
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    assert np.random.rand() == expected


def test_string_labels_proba_and_log_proba(blobs):
    X, y = blobs
    labels = np.array(["cat", "dog", "emu"], dtype=object)[y]
    clf = MLPClassifier((16,), max_iter=60, learning_rate_init=0.02,
                        random_state=0).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, ["cat", "dog", "emu"])
    proba = clf.predict_proba(X)
    assert proba.shape == (90, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(1)])
    assert clf.score(X, labels) > 0.9


def test_multi_output_regression():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 4))
    Y = np.c_[X @ [1.0, 0.5, 0.0, -1.0], X[:, 0] - X[:, 2]]
    reg = MLPRegressor((32,), max_iter=150, learning_rate_init=0.01,
                       random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (120, 2) and reg.n_outputs_ == 2
    assert reg.score(X, Y) > 0.9
    reg1 = MLPRegressor((8,), max_iter=3, random_state=0).fit(X, Y[:, 0])
    assert reg1.predict(X).shape == (120,)


@pytest.mark.parametrize("batch_size", ["auto", 16])
@pytest.mark.parametrize("normalization", ["layer", "batch"])
def test_sample_weight_zero_equals_dropping(blobs, normalization, batch_size):
    """Rows of weight 0 take no place in the minibatches (nor in the batch
    statistics): the fit is bitwise the fit without them."""
    X, y = blobs
    w = np.ones(len(y))
    w[::3] = 0
    params = dict(hidden_layer_sizes=(6,), normalization=normalization,
                  batch_size=batch_size, max_iter=5, random_state=0)
    weighted = MLPClassifier(**params).fit(X, y, sample_weight=w)
    dropped = MLPClassifier(**params).fit(X[w > 0], y[w > 0])
    np.testing.assert_array_equal(weighted.predict_proba(X), dropped.predict_proba(X))
    assert weighted.loss_curve_ == dropped.loss_curve_


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_integer_weights_are_repetitions_bitwise(blobs, Estimator):
    """One batch: weights 0..4 on shuffled rows give bitwise the fit on the
    rows repeated that many times (sklearn's check asks for rtol=1e-7; the
    rounding of the two sums used to differ and grow with training). The
    regressor's target, far from mean 0 and std 1, is standardized with
    the weighted mean and std: bitwise those of the repeated rows too."""
    X, y = blobs
    if Estimator is MLPRegressor:
        y = X @ [1.5, -2.0, 0.7] * 300.0 + 40.0
    w = np.random.default_rng(1).integers(0, 5, len(y))
    params = dict(hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    repeated = Estimator(**params).fit(X.repeat(w, axis=0), y.repeat(w))
    order = np.random.default_rng(2).permutation(len(y))
    weighted = Estimator(**params).fit(X[order], y[order], sample_weight=w[order])
    assert repeated.n_iter_ == weighted.n_iter_ == 20
    assert repeated.loss_curve_ == weighted.loss_curve_
    for a, b in zip(repeated.model_.get_weights(), weighted.model_.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_one_batch_fit_does_not_depend_on_row_order(blobs):
    X, y = blobs
    order = np.random.default_rng(3).permutation(len(y))
    params = dict(hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    a = MLPClassifier(**params).fit(X, y)
    b = MLPClassifier(**params).fit(X[order], y[order])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_duplicates_merged_only_where_exact(blobs):
    """With dropout a repeated row draws its own masks, so duplicates are not
    merged: the fit with every row twice is not the weight-2 fit."""
    X, y = blobs
    params = dict(hidden_layer_sizes=(6,), dropout=0.3, max_iter=5, random_state=0)
    twice = MLPClassifier(**params).fit(np.r_[X, X], np.r_[y, y])
    weighted = MLPClassifier(**params).fit(X, y, sample_weight=np.full(len(y), 2.0))
    assert not np.array_equal(twice.predict_proba(X), weighted.predict_proba(X))
    merged = dict(params, dropout=0.0)
    twice = MLPClassifier(**merged).fit(np.r_[X, X], np.r_[y, y])
    weighted = MLPClassifier(**merged).fit(X, y, sample_weight=np.full(len(y), 2.0))
    np.testing.assert_array_equal(twice.predict_proba(X), weighted.predict_proba(X))


def test_fitted_attributes_and_loss_curve(blobs):
    X, y = blobs
    clf = MLPClassifier((8,), max_iter=7, random_state=0).fit(X, y)
    assert clf.n_features_in_ == 3 and clf.n_iter_ == 7
    assert len(clf.loss_curve_) == 7 and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert isinstance(clf.model_, keras.Model)


def test_stops_when_loss_stalls(blobs):
    X, y = blobs
    clf = MLPClassifier((8,), max_iter=200, tol=10.0, n_iter_no_change=2,
                        random_state=0).fit(X, y)
    # As in sklearn: the first epoch improves on inf, then stop once the
    # count of epochs without improvement exceeds n_iter_no_change.
    assert clf.n_iter_ == 4


def test_convergence_warning(blobs):
    X, y = blobs
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(2\\)"):
        MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)


@pytest.fixture
def overlapping_blobs():
    """300 rows: a validation fifth of 60 rows, enough for early stopping."""
    rng = np.random.default_rng(4)
    centers = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 0.0], [0.0, 2.0, 2.0]])
    y = rng.integers(0, 3, 300)
    X = centers[y] + rng.normal(scale=1.0, size=(300, 3))
    return X, y


def _validation_rows(y, fraction, random_state, stratify=True):
    """The rows the estimators hold out for early stopping."""
    _, val = train_test_split(np.arange(len(y)), random_state=_seed(random_state),
                              test_size=fraction, stratify=y if stratify else None)
    return val


def _stopping_epoch(curve, tol, n_iter_no_change):
    """The epoch at which sklearn's rule stops on `curve` (a loss), or None."""
    count, best = 0, np.inf
    for epoch, value in enumerate(curve, start=1):
        count = count + 1 if value > best - tol else 0
        best = min(best, value)
        if count > n_iter_no_change:
            return epoch
    return None


@pytest.mark.parametrize("normalization", ["layer", "batch", None])
def test_early_stopping_watches_validation_loss(overlapping_blobs, normalization):
    """sklearn's rule, applied to the validation log-loss; the weights of
    the lowest validation loss are restored."""
    X, y = overlapping_blobs
    clf = MLPClassifier((8,), normalization=normalization, early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=3,
                        learning_rate_init=0.02, max_iter=300,
                        random_state=0).fit(X, y)
    curve = clf.validation_loss_curve_
    assert clf.early_stopping_used_ and clf.best_loss_ is None
    assert len(curve) == len(clf.validation_scores_) == clf.n_iter_
    assert _stopping_epoch(curve, clf.tol, 3) == clf.n_iter_ < 300
    best = int(np.argmin(curve))
    assert clf.best_validation_loss_ == curve[best]
    assert clf.best_validation_score_ == clf.validation_scores_[best]
    val = _validation_rows(y, 0.2, 0)
    assert len(val) == 60
    np.testing.assert_allclose(
        log_loss(y[val], clf.predict_proba(X[val])), curve[best], rtol=1e-9
    )
    assert clf.score(X[val], y[val]) == clf.best_validation_score_


def test_early_stopping_goes_on_while_accuracy_plateaus():
    """Separable classes: the validation accuracy is 1 within a few epochs,
    which a stopping rule on accuracy (as before, like sklearn's) would
    stop on; the log-loss still falls, so training goes on."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    X = np.c_[4.0 * y - 2.0, np.zeros(300)] + rng.normal(scale=0.5, size=(300, 2))
    clf = MLPClassifier((8,), early_stopping=True, validation_fraction=0.2,
                        n_iter_no_change=5, max_iter=200, learning_rate_init=0.01,
                        random_state=0).fit(X, y)
    scores, curve = clf.validation_scores_, clf.validation_loss_curve_
    first_perfect = scores.index(1.0) + 1
    assert min(scores[first_perfect - 1:]) == 1.0
    # The accuracy rule would have stopped by this epoch.
    accuracy_stop = first_perfect + 5 + 1
    assert clf.n_iter_ > 2 * accuracy_stop
    assert clf.best_validation_loss_ < 0.5 * curve[accuracy_stop - 1]


def test_small_validation_part_trains_without_early_stopping(blobs):
    """27 validation rows: early stopping is not used (a warning says so),
    and the fit is bitwise the fit with early_stopping=False."""
    X, y = blobs
    params = dict(hidden_layer_sizes=(8,), validation_fraction=0.3, max_iter=30,
                  random_state=0)
    with pytest.warns(UserWarning, match="gives 27 validation rows"):
        clf = MLPClassifier(**params, early_stopping=True).fit(X, y)
    plain = MLPClassifier(**params).fit(X, y)
    assert not clf.early_stopping_used_ and not plain.early_stopping_used_
    assert clf.validation_loss_curve_ is None and clf.validation_scores_ is None
    assert clf.best_validation_loss_ is None and clf.best_validation_score_ is None
    assert clf.loss_curve_ == plain.loss_curve_ and clf.best_loss_ == plain.best_loss_
    np.testing.assert_array_equal(clf.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("n_samples, used", [(500, True), (490, False)])
def test_early_stopping_needs_50_validation_rows(n_samples, used):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_samples, 3))
    reg = MLPRegressor((4,), early_stopping=True, max_iter=3, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.fit(X, X[:, 0])
    assert reg.early_stopping_used_ is used
    assert any("validation rows" in str(w.message) for w in caught) is not used
    if used:
        val = _validation_rows(X[:, 0], 0.1, 0, stratify=False)
        assert len(val) == 50 and len(reg.validation_loss_curve_) == 3


def test_early_stopping_needs_two_validation_rows_per_class():
    """600 rows, 60 held out, but the rare class 'c' gets one of them."""
    rng = np.random.default_rng(0)
    y = np.array(["a"] * 295 + ["b"] * 295 + ["c"] * 10)
    X = rng.normal(size=(600, 3))
    clf = MLPClassifier((4,), early_stopping=True, max_iter=2, random_state=0)
    with pytest.warns(UserWarning, match="gives 1 validation rows of class 'c'"):
        clf.fit(X, y)
    assert not clf.early_stopping_used_
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="early_stopping")
        clf.set_params(validation_fraction=0.2).fit(X, y)
    assert clf.early_stopping_used_


@pytest.mark.parametrize("normalization", ["layer", "batch", None])
def test_regressor_standardizes_target(normalization):
    """The network learns (y - mean) / std: a regressor on y * 1000 + 5000
    predicts 1000 times the one on y, plus 5000, and scores the same."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=150)
    params = dict(hidden_layer_sizes=(16,), normalization=normalization,
                  learning_rate_init=0.01, max_iter=40, random_state=0)
    reg = MLPRegressor(**params).fit(X, y)
    big = MLPRegressor(**params).fit(X, y * 1000 + 5000)
    np.testing.assert_allclose(big.predict(X), reg.predict(X) * 1000 + 5000,
                               rtol=1e-12)
    np.testing.assert_allclose(big.score(X, y * 1000 + 5000), reg.score(X, y),
                               rtol=1e-12)
    np.testing.assert_allclose(big.loss_curve_, reg.loss_curve_, rtol=1e-12)
    assert reg.score(X, y) > 0.7
    # As sklearn's MLPRegressor: the same steps on y as it is do not get far.
    raw = MLPRegressor(**params, standardize_target=False).fit(X, y * 1000 + 5000)
    assert raw.score(X, y * 1000 + 5000) < 0
    assert raw.loss_curve_[0] > 1e6


def test_target_scale_is_weighted_mean_and_std():
    """Per output column: the sample-weighted mean and standard deviation
    (ddof 0) of the rows of positive weight; a constant column keeps 1."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3))
    Y = np.c_[X @ [1.0, 2.0, 0.0] * 1000 + 5000, X @ [0.0, 1.0, -1.0] * 1e-3,
              np.full(60, 7.0)]
    w = rng.integers(0, 4, 60).astype(float)
    Y[w == 0] = 1e9  # rows of weight 0 count nowhere
    reg = MLPRegressor((4,), activation="identity", normalization=None,
                       max_iter=3, random_state=0).fit(X, Y, sample_weight=w)
    w1, b1, w2, b2 = reg.model_.get_weights()
    mean = np.average(Y[w > 0], axis=0, weights=w[w > 0])
    std = np.sqrt(np.average((Y[w > 0] - mean) ** 2, axis=0, weights=w[w > 0]))
    assert std[2] == 0
    std[2] = 1.0
    np.testing.assert_allclose(reg.predict(X), ((X @ w1 + b1) @ w2 + b2) * std + mean,
                               rtol=1e-12)


def test_target_statistics_of_weights_are_those_of_repeated_rows():
    """`_weighted_column_stats`: integer weights give bitwise the statistics
    of the rows repeated (the weighted path against the equal-weights one),
    the row order changes no bit, and both match NumPy's float64 mean and
    std (ddof 0), with ties, -0.0 and 0.0 among the values."""
    from keras_ln.sklearn._outputs import _weighted_column_stats

    rng = np.random.default_rng(4)
    Y = np.c_[rng.normal(size=500) * 1e3 + 7, rng.integers(-3, 4, 500).astype(float)]
    Y[:5, 1] = [0.0, -0.0, 0.0, -0.0, 0.0]
    w = rng.integers(1, 4, 500).astype(float)
    repeated = np.repeat(Y, w.astype(int), axis=0)
    mean_w, std_w = _weighted_column_stats(Y, w)
    mean_r, std_r = _weighted_column_stats(repeated, np.ones(len(repeated)))
    np.testing.assert_array_equal(mean_w, mean_r)
    np.testing.assert_array_equal(std_w, std_r)
    order = rng.permutation(len(repeated))
    mean_p, std_p = _weighted_column_stats(repeated[order], np.full(len(repeated), 2.0))
    np.testing.assert_array_equal(mean_p, mean_r)
    np.testing.assert_array_equal(std_p, std_r)
    np.testing.assert_allclose(mean_r, repeated.mean(axis=0), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(std_r, repeated.std(axis=0), rtol=1e-13)


def test_warm_start_keeps_the_target_scale():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 2))
    y = X[:, 0] * 10 + 3
    reg = MLPRegressor((8,), max_iter=20, warm_start=True, random_state=0).fit(X, y)
    before = reg.predict(X)
    # Continuing on targets of another scale trains the same network on the
    # first fit's scale, so a few more epochs move the predictions little.
    reg.set_params(max_iter=1, learning_rate_init=1e-6).fit(X, 2 * y)
    np.testing.assert_allclose(reg.predict(X), before, atol=1e-3)
    with pytest.raises(ValueError, match="standardize_target changed"):
        reg.set_params(standardize_target=False).fit(X, y)


def test_warm_start_continues(blobs):
    X, y = blobs
    clf = MLPClassifier((8,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
    model, curve = clf.model_, list(clf.loss_curve_)
    clf.set_params(learning_rate_init=0.002).fit(X, y)
    assert clf.model_ is model
    assert clf.loss_curve_[:5] == curve and len(clf.loss_curve_) == 10
    assert clf.n_iter_ == 5
    assert clf.loss_curve_[5] < curve[0]
    with pytest.raises(ValueError, match="hidden_layer_sizes changed"):
        clf.set_params(hidden_layer_sizes=(9,)).fit(X, y)
    assert clf.model_ is model  # a failed warm start keeps the fitted network
    with pytest.raises(ValueError, match="same classes"):
        clf.set_params(hidden_layer_sizes=(8,)).fit(X, np.where(y == 2, 5, y))
    # Without warm_start, set_params then fit builds a new network.
    clf.set_params(warm_start=False, hidden_layer_sizes=(9,)).fit(X, y)
    assert clf.model_.get_layer("dense_0").units == 9


def test_verbose(blobs, capsys):
    X, y = blobs
    clf = MLPClassifier((4,), max_iter=3, random_state=0).fit(X, y)
    clf.predict(X)
    clf.predict_proba(X)
    assert capsys.readouterr().out == ""
    MLPClassifier((4,), max_iter=3, random_state=0, verbose=1).fit(X, y)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[0].startswith("Iteration 1, loss = ")


def test_dataframe_feature_names(blobs):
    X, y = blobs
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    clf = MLPClassifier((4,), max_iter=2, random_state=0).fit(df, y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["a", "b", "c"])
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(df[["b", "a", "c"]])


def _assert_not_fitted(est):
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    assert not [k for k in vars(est) if k.endswith("_") and not k.startswith("__")]


@pytest.mark.parametrize(
    "make_X, make_y, params, match",
    [
        (lambda X: np.where(X > 2, np.nan, X), None, {}, "NaN"),
        (lambda X: np.where(X > 2, np.inf, X), None, {}, "infinity"),
        (lambda X: X[:, 0], None, {}, "Expected 2D array"),
        (lambda X: X[:, :, None], None, {}, "dim 3"),
        (lambda X: X[:0], lambda y: y[:0], {}, "0 sample"),
        (None, lambda y: np.zeros_like(y), {}, "only one class"),
        (None, None, {"normalization": "group"}, "normalization"),
        (None, None, {"hidden_layer_sizes": (4, -2)}, "hidden_layer_sizes"),
        (None, None, {"max_iter": -1}, "max_iter"),
        (None, lambda y: y + 0.5, {}, "Unknown label type"),
    ],
)
def test_bad_input_errors_and_nothing_fitted(blobs, make_X, make_y, params, match):
    X, y = blobs
    X = make_X(X) if make_X else X
    y = make_y(y) if make_y else y
    clf = MLPClassifier(**{"hidden_layer_sizes": (4,), "max_iter": 2,
                           "random_state": 0, **params})
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    _assert_not_fitted(clf)


def test_failed_refit_leaves_nothing_fitted(blobs):
    X, y = blobs
    clf = MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(np.full_like(X, np.nan), y)
    _assert_not_fitted(clf)


def test_predict_errors(blobs):
    X, y = blobs
    clf = MLPClassifier((4,), max_iter=2, random_state=0)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but MLPClassifier is expecting 3"):
        clf.predict(X[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(np.full_like(X, np.nan))
    reg = MLPRegressor((4,), max_iter=2, random_state=0)
    with pytest.raises(ValueError, match="NaN"):
        reg.fit(X, np.full(len(X), np.nan))


def test_float32_input_trains_in_float32(blobs):
    X, y = blobs
    clf = MLPClassifier((4,), max_iter=2, random_state=0).fit(X.astype("float32"), y)
    assert clf.model_.get_layer("dense_0").kernel.dtype == "float32"
    assert clf.predict_proba(X).dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict(X)  # float64 input to a float32 network: no warning


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_batch_norm_population_statistics_after_fit(Estimator):
    # 455 rows in batches of 200: 3 updates per epoch, so the moving
    # averages (momentum 0.99) alone would stay near their initial values.
    # After fit they hold the statistics of the training rows, and
    # inference reproduces the training-mode outputs on those rows.
    rng = np.random.default_rng(1)
    X = rng.normal(loc=2.0, scale=3.0, size=(455, 6))
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    est = Estimator(hidden_layer_sizes=(16, 8), normalization="batch",
                    dropout=0.3, max_iter=3, random_state=0).fit(X, y)
    model = est.model_
    dense = model.get_layer("dense_0").kernel.numpy()
    norm = model.get_layer("norm_0")
    pre = X @ dense
    np.testing.assert_allclose(norm.moving_mean.numpy(), pre.mean(0), atol=1e-5)
    np.testing.assert_allclose(
        norm.moving_variance.numpy(), pre.var(0), rtol=1e-5, atol=1e-5
    )
    assert norm.momentum == 0.99
    assert model.get_layer("dropout_0").rate == 0.3
    # Training mode without dropout: the batch statistics of all rows.
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    train_mode = np.asarray(model(X, training=True))
    if Estimator is MLPRegressor:  # the network predicts standardized y
        got = (est.predict(X) - y.mean()) / y.std()
    else:  # two classes: the network's one output is P(classes_[1])
        got = est.predict_proba(X)[:, 1:]
    np.testing.assert_allclose(
        got.reshape(train_mode.shape), train_mode, atol=1e-5
    )


# Default instances against linear models, on the bundled data sets (the
# issue: a net worse than the linear model is a bug). 3-fold CV after
# StandardScaler, seeded; measured values in the comments.
@pytest.mark.parametrize("normalization", ["layer", "batch", None])
def test_default_regressor_matches_ridge_on_diabetes(normalization):
    X, y, _ = load_diabetes()
    cv = KFold(3, shuffle=True, random_state=0)

    def rmse(model):
        return -cross_val_score(make_pipeline(StandardScaler(), model), X, y, cv=cv,
                                scoring="neg_root_mean_squared_error").mean()

    net = rmse(MLPRegressor(normalization=normalization, random_state=0))
    # Measured: 56.4 (layer), 55.9 (batch), 54.8 (None); Ridge 54.7, the
    # mean 76.9; 133 (layer) before the target was standardized.
    assert net < 0.8 * rmse(DummyRegressor())
    assert net < 1.05 * rmse(Ridge())


@pytest.mark.parametrize("normalization", ["layer", "batch", None])
def test_default_classifier_matches_logistic_regression_on_wine(normalization):
    X, y, _ = load_wine()
    cv = StratifiedKFold(3, shuffle=True, random_state=0)

    def scores(model):
        s = cross_validate(make_pipeline(StandardScaler(), model), X, y, cv=cv,
                           scoring=["accuracy", "neg_log_loss"])
        return s["test_accuracy"].mean(), -s["test_neg_log_loss"].mean()

    accuracy, loss = scores(MLPClassifier(normalization=normalization, random_state=0))
    linear_accuracy, linear_loss = scores(LogisticRegression())
    # Measured: accuracy 0.989 / 0.983 / 0.978 and log-loss 0.053 / 0.066 /
    # 0.066 (layer / batch / None); LogisticRegression 0.978 and 0.066.
    assert accuracy >= linear_accuracy - 0.02
    assert loss <= linear_loss + 0.02


@pytest.mark.parametrize("normalization", ["layer", "batch", None])
def test_separates_classes_that_differ_only_in_scale(normalization):
    """Concentric circles: an inner point is an outer one scaled by 0.5. A
    layer-normalized block without the Dense bias sees only directions and
    stays near 0.6 training accuracy; every variant must fit them."""
    from sklearn.datasets import make_circles

    X, y = make_circles(300, factor=0.5, noise=0.05, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(normalization=normalization, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalization", [None, "layer", "batch"])
def test_a_rows_outputs_do_not_depend_on_its_batch(dtype, normalization):
    """`predict_proba` of one row, or of a few, is bit for bit that row of
    the prediction of every row: small inputs are padded to 16 rows, where
    an unpadded (rows, k) product (float64) may sum in another order."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12)).astype(dtype)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(40, 20), normalization=normalization, max_iter=5,
                            random_state=0).fit(X, y)
    full = est.predict_proba(X)
    for start, n in [(0, 1), (7, 1), (299, 1), (13, 2), (40, 3), (100, 5), (5, 9), (31, 17), (64, 100)]:
        np.testing.assert_array_equal(est.predict_proba(X[start:start + n]), full[start:start + n])
