"""The training API against sklearn.neural_network's MLPs: partial_fit,
multilabel targets, Adam's parameters and the shape of one-output predictions.

Each test runs sklearn's estimator on the same calls where its behaviour is
the reference (attribute evolution, errors, shapes), and known values where
one exists (sklearn's own AdamOptimizer, its binary log-loss).
"""

import pickle
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import neural_network
from sklearn.datasets import make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score
from sklearn.metrics import hamming_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network._base import binary_log_loss
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from keras_ln.models import build_mlp
from keras_ln.sklearn import LSTMClassifier
from keras_ln.sklearn import LSTMRegressor
from keras_ln.sklearn import MLPClassifier
from keras_ln.sklearn import MLPRegressor
from keras_ln.sklearn import _execution

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture
def multilabel():
    X, Y = make_multilabel_classification(
        n_samples=600, n_features=20, n_classes=5, n_labels=2, random_state=0
    )
    return StandardScaler().fit_transform(X), Y


def _seed(random_state):
    """The model seed the estimators derive from an int random_state."""
    return int(check_random_state(random_state).randint(1, np.iinfo(np.int32).max))


def _sklearn(Estimator, **params):
    """sklearn's MLP of the same kind (its regressor's first argument is `loss`)."""
    ours = Estimator.__name__
    return getattr(neural_network, ours)(hidden_layer_sizes=(5,), **params)


def _state(est):
    return est.n_iter_, est.t_, len(est.loss_curve_), est.best_loss_ == min(est.loss_curve_)


def _outputs(est, X):
    return est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)


def _assert_same_weights(a, b):
    for u, v in zip(a.model_.get_weights(), b.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)


# --- partial_fit ----------------------------------------------------------
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_partial_fit_attributes_evolve_as_sklearn(blobs, Estimator):
    """n_iter_ is 1 after every partial_fit, t_ adds the rows of the call,
    loss_curve_ grows by one, best_loss_ is the least loss so far; a fit
    starts them again, a partial_fit after a fit continues them; no
    ConvergenceWarning. The same calls on sklearn's MLP give the same."""
    X, y = blobs
    if Estimator is MLPRegressor:
        y = X @ [1.0, -1.0, 0.5]
    kwargs = {"classes": [0, 1, 2]} if Estimator is MLPClassifier else {}
    ours = Estimator((5,), random_state=0)
    ref = _sklearn(Estimator, random_state=0)
    calls = [
        ("partial_fit", slice(0, 50), kwargs),
        ("partial_fit", slice(50, 90), {}),
        ("partial_fit", slice(0, 90), {}),
        ("fit", slice(0, 90), {}),
        ("partial_fit", slice(0, 30), {}),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for method, rows, extra in calls:
            if method == "fit":
                for est in (ours, ref):
                    est.set_params(max_iter=3)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    ours.fit(X[rows], y[rows])
                    ref.fit(X[rows], y[rows])
            else:
                getattr(ours, method)(X[rows], y[rows], **extra)
                getattr(ref, method)(X[rows], y[rows], **extra)
            assert _state(ours) == _state(ref)
    assert _state(ours) == (1, 3 * 90 + 30, 4, True)
    if Estimator is MLPClassifier:
        np.testing.assert_array_equal(ours.classes_, ref.classes_)


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("batch_size", ["auto", 16])
def test_first_partial_fit_equals_fit_of_one_epoch(blobs, Estimator, batch_size):
    """The same seed draws the same initial weights and the same shuffled
    minibatches (batch_size=16: six shuffled batches), so the first
    partial_fit is bitwise fit(max_iter=1), as in sklearn."""
    X, y = blobs
    if Estimator is MLPRegressor:
        y = X @ [1.0, -1.0, 0.5] * 100.0
    kwargs = {"classes": np.unique(y)} if Estimator is MLPClassifier else {}
    params = dict(hidden_layer_sizes=(6,), batch_size=batch_size, random_state=0)
    fitted = Estimator(**params, max_iter=1).fit(X, y)
    partial = Estimator(**params).partial_fit(X, y, **kwargs)
    _assert_same_weights(fitted, partial)
    assert fitted.loss_curve_ == partial.loss_curve_
    assert _state(fitted) == _state(partial) == (1, 90, 1, True)
    ref_fit = _sklearn(Estimator, batch_size=batch_size, max_iter=1,
                       random_state=0).fit(X, y)
    ref_partial = _sklearn(Estimator, batch_size=batch_size,
                           random_state=0).partial_fit(X, y, **kwargs)
    for a, b in zip(ref_fit.coefs_, ref_partial.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_partial_fit_continues_adam(blobs, Estimator):
    """Without shuffling, two partial_fits are bitwise a fit of two epochs:
    the second call continues Adam's moments and step count (also through a
    pickle). Two warm-started fits of one epoch restart Adam, and differ."""
    X, y = blobs
    if Estimator is MLPRegressor:
        y = X @ [1.0, -1.0, 0.5]
    kwargs = {"classes": [0, 1, 2]} if Estimator is MLPClassifier else {}
    params = dict(hidden_layer_sizes=(6,), batch_size=32, shuffle=False,
                  random_state=0)
    two_epochs = Estimator(**params, max_iter=2).fit(X, y)
    partial = Estimator(**params).partial_fit(X, y, **kwargs)
    restored = pickle.loads(pickle.dumps(partial))
    partial.partial_fit(X, y)
    restored.partial_fit(X, y)
    for est in (partial, restored):
        _assert_same_weights(two_epochs, est)
        assert est.loss_curve_ == two_epochs.loss_curve_
        assert est.t_ == two_epochs.t_ == 180 and est.n_iter_ == 1
    warm = Estimator(**params, max_iter=1, warm_start=True).fit(X, y).fit(X, y)
    assert warm.t_ == 180 and len(warm.loss_curve_) == 2
    assert not np.allclose(_outputs(warm, X), _outputs(two_epochs, X), rtol=1e-6)


def test_partial_fit_classes_as_sklearn(blobs):
    """`classes` may hold labels that `y` lacks (their columns in
    predict_proba); the errors are sklearn's."""
    X, y = blobs
    ours = MLPClassifier((5,), random_state=0)
    ref = _sklearn(MLPClassifier, random_state=0)
    for est in (ours, ref):
        with pytest.raises(ValueError, match="classes must be passed on the first call"):
            est.partial_fit(X, y)
        est.partial_fit(X, y, classes=[0, 1, 2, 3])
        assert est.predict_proba(X).shape == (90, 4)
        np.testing.assert_array_equal(est.classes_, [0, 1, 2, 3])
        est.partial_fit(X[:10], y[:10], classes=np.array([3, 2, 1, 0]))
        with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
            est.partial_fit(X, np.where(y == 2, 5, y))
        with pytest.raises(ValueError, match="is not the same as on last call"):
            est.partial_fit(X, y, classes=[0, 1, 2])
    assert ours.t_ == 100 and len(ours.loss_curve_) == 2  # failed calls add nothing


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_partial_fit_errors(blobs, Estimator):
    X, y = blobs
    kwargs = {"classes": [0, 1, 2]} if Estimator is MLPClassifier else {}
    est = Estimator((4,), early_stopping=True, random_state=0)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        est.partial_fit(X, y, **kwargs)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        _sklearn(Estimator, early_stopping=True).partial_fit(X, y, **kwargs)
    assert not hasattr(est, "model_")
    est.set_params(early_stopping=False).partial_fit(X, y, **kwargs)
    with pytest.raises(ValueError, match=f"X has 2 features, but {Estimator.__name__} "
                                         "is expecting 3 features"):
        est.partial_fit(X[:, :2], y)
    with pytest.raises(ValueError, match="hidden_layer_sizes changed since the last fit"):
        est.set_params(hidden_layer_sizes=(5,)).partial_fit(X, y)
    with pytest.raises(ValueError, match="The 'epsilon' parameter"):
        est.set_params(hidden_layer_sizes=(4,), epsilon=0.0).partial_fit(X, y)
    assert est.t_ == 90


def test_regressor_partial_fit_keeps_first_target_scale(blobs):
    """standardize_target: the scale of the first call's y, kept after."""
    X, _ = blobs
    y = X @ [1.0, -1.0, 0.5] * 50.0 + 7.0
    reg = MLPRegressor((4,), random_state=0).partial_fit(X[:40], y[:40])
    mean, scale = reg._y_mean.copy(), reg._y_scale.copy()
    np.testing.assert_allclose(mean, [y[:40].mean()])
    np.testing.assert_allclose(scale, [y[:40].std()])
    reg.partial_fit(X[40:], 3 * y[40:])
    assert reg._y_mean == mean and reg._y_scale == scale
    with pytest.raises(ValueError, match="y has 2 outputs, but MLPRegressor was "
                                         "fitted with 1 outputs"):
        reg.partial_fit(X, np.c_[y, y])


# --- multilabel ------------------------------------------------------------
def test_multilabel_like_sklearn(multilabel):
    """An indicator matrix: classes_ its column indices, predict the int
    indicator matrix of probabilities above 0.5, predict_proba (n, k) label
    probabilities (rows need not sum to 1), score the subset accuracy;
    test accuracy within 0.05 of sklearn's MLP with the same hidden layer
    and epochs (measured: 0.447 layer, 0.433 None, sklearn 0.407)."""
    X, Y = multilabel
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, random_state=0)
    ref = neural_network.MLPClassifier((32,), max_iter=200, random_state=0)
    ref.fit(X_train, Y_train)
    for normalization in ["layer", None]:
        clf = MLPClassifier((32,), normalization=normalization, max_iter=200,
                            random_state=0).fit(X_train, Y_train)
        np.testing.assert_array_equal(clf.classes_, ref.classes_)
        np.testing.assert_array_equal(clf.classes_, np.arange(5))
        pred, proba = clf.predict(X_test), clf.predict_proba(X_test)
        assert pred.shape == proba.shape == (150, 5)
        assert pred.dtype == ref.predict(X_test).dtype == Y.dtype
        np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
        assert np.all((proba > 0) & (proba < 1))
        assert not np.allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_allclose(clf.predict_log_proba(X_test), np.log(proba))
        score = clf.score(X_test, Y_test)
        assert score == accuracy_score(Y_test, pred)
        assert score >= ref.score(X_test, Y_test) - 0.05
        assert hamming_loss(Y_test, pred) <= hamming_loss(Y_test, ref.predict(X_test)) + 0.02


def test_multilabel_loss_is_sklearns_binary_log_loss(multilabel):
    """One full-batch epoch: loss_curve_[0] is sklearn's binary_log_loss
    (summed over the labels) of the initial network plus the penalty."""
    X, Y = multilabel
    X, Y = X[:150], Y[:150]
    alpha = 0.3
    clf = MLPClassifier((5,), normalization=None, alpha=alpha, max_iter=1,
                        random_state=7).fit(X, Y)
    init = build_mlp(20, 5, (5,), normalization=None, output_activation="sigmoid",
                     dtype="float64", seed=_seed(7))
    kernel, _, w_out, _ = init.get_weights()
    expected = binary_log_loss(Y, np.asarray(init(X)))
    expected += 0.5 * alpha * (np.sum(kernel**2) + np.sum(w_out**2)) / len(Y)
    np.testing.assert_allclose(clf.loss_curve_[0], expected, rtol=1e-12)


def test_multilabel_partial_fit_and_early_stopping(multilabel):
    X, Y = multilabel
    with pytest.raises(ValueError, match=r"`classes` must be its column indices, "
                                         r"\[0, 1, 2, 3, 4\]"):
        MLPClassifier((8,)).partial_fit(X, Y, classes=[0, 1])
    clf = MLPClassifier((8,), random_state=0).partial_fit(X[:300], Y[:300],
                                                          classes=range(5))
    clf.partial_fit(X[300:], Y[300:])
    assert clf.t_ == 600 and clf.predict(X).shape == (600, 5)
    with pytest.raises(ValueError, match="y has 3 labels, but MLPClassifier was "
                                         "fitted with 5 labels"):
        clf.partial_fit(X, Y[:, :3])
    with pytest.raises(ValueError, match="fitted on a multilabel indicator matrix, "
                                         "so y must be a multilabel indicator matrix"):
        clf.partial_fit(X, Y[:, 0])
    # Early stopping holds out rows without stratifying (as sklearn) and
    # scores them by subset accuracy.
    es = MLPClassifier((8,), early_stopping=True, max_iter=5, random_state=0).fit(X, Y)
    assert es.early_stopping_used_ and len(es.validation_scores_) == 5
    with pytest.raises(ValueError, match="Received: y of shape \\(600, 2\\), of type "
                                         "'multiclass-multioutput'"):
        MLPClassifier((4,), max_iter=1).fit(X, np.c_[Y[:, 0], 2 * Y[:, 1]])


# --- Adam's parameters -----------------------------------------------------
def _sklearn_adam_reference(X, y, lr, beta_1, beta_2, epsilon, steps):
    """Full-batch steps of sklearn's AdamOptimizer (float64) on the
    gradients of the initial network's log-loss."""
    init = build_mlp(3, 3, (5,), normalization=None, output_activation="softmax",
                     dtype="float64", seed=_seed(3))
    logits = keras.Model(init.inputs, init.get_layer("logits").output)
    params = [v.numpy() for v in logits.trainable_variables]
    adam = AdamOptimizer(params, lr, beta_1, beta_2, epsilon)
    for _ in range(steps):
        for v, p in zip(logits.trainable_variables, params):
            v.assign(p)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=logits(tf.constant(X), training=True)))
        grads = tape.gradient(loss, logits.trainable_variables)
        adam.update_params(params, [g.numpy() for g in grads])
    return params


@pytest.mark.parametrize(
    "beta_1, beta_2, epsilon",
    [(0.9, 0.999, 1e-8), (0.5, 0.999, 1e-8), (0.9, 0.9, 1e-8), (0.9, 0.999, 1e-2)],
)
def test_adam_parameters_match_sklearns_adam(blobs, beta_1, beta_2, epsilon):
    """Three full-batch steps equal sklearn's AdamOptimizer with the same
    beta_1, beta_2, epsilon (float64), and each one changes the result."""
    X, y = blobs
    params = dict(hidden_layer_sizes=(5,), normalization=None, alpha=0.0,
                  max_iter=3, learning_rate_init=0.01, random_state=3)
    clf = MLPClassifier(**params, beta_1=beta_1, beta_2=beta_2,
                        epsilon=epsilon).fit(X, y)
    ref = _sklearn_adam_reference(X, y, 0.01, beta_1, beta_2, epsilon, steps=3)
    for ours, expected in zip(clf.model_.get_weights(), ref, strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-14)
    if (beta_1, beta_2, epsilon) != (0.9, 0.999, 1e-8):
        default = MLPClassifier(**params).fit(X, y)
        assert np.max(np.abs(clf.predict_proba(X) - default.predict_proba(X))) > 1e-4


def test_binary_labels_train_one_logistic_output_as_sklearn(blobs):
    """Two classes: one sigmoid output, P(classes_[1]), trained on the
    binary log-loss, as sklearn's MLP (its last layer has one unit and a
    logistic activation). Three full-batch steps equal sklearn's
    AdamOptimizer on that loss (float64); predict_proba is [1 - p, p] and
    predict thresholds p at 0.5, as sklearn's."""
    X, y3 = blobs
    keep = y3 < 2
    X, idx = X[keep], y3[keep]
    y = np.array(["no", "yes"])[idx]  # string labels: classes_[1] is "yes"
    clf = MLPClassifier((5,), normalization=None, alpha=0.0, max_iter=3,
                        learning_rate_init=0.01, random_state=3).fit(X, y)
    sk = _sklearn(MLPClassifier, max_iter=3).fit(X, y)
    assert sk.out_activation_ == "logistic" and sk.coefs_[-1].shape == (5, 1)
    assert clf.model_.get_layer("logits").kernel.shape == (5, 1)
    assert clf.model_.get_layer("output").get_config()["activation"] == "sigmoid"
    np.testing.assert_array_equal(clf.classes_, sk.classes_)

    init = build_mlp(3, 1, (5,), normalization=None, output_activation="sigmoid",
                     dtype="float64", seed=_seed(3))
    logits = keras.Model(init.inputs, init.get_layer("logits").output)
    params = [v.numpy() for v in logits.trainable_variables]
    adam = AdamOptimizer(params, 0.01, 0.9, 0.999, 1e-8)
    for _ in range(3):
        for v, p in zip(logits.trainable_variables, params):
            v.assign(p)
        with tf.GradientTape() as tape:
            z = logits(tf.constant(X), training=True)[:, 0]
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.constant(idx, tf.float64), logits=z))
        grads = tape.gradient(loss, logits.trainable_variables)
        adam.update_params(params, [g.numpy() for g in grads])
    for ours, expected in zip(clf.model_.get_weights(), params, strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-14)

    p = np.asarray(clf.model_(X)).ravel()
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba, np.c_[1 - p, p], rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), np.where(p > 0.5, "yes", "no"))
    assert clf.score(X, y) == accuracy_score(y, clf.predict(X))
    # The loss it reports is sklearn's binary log-loss of its outputs.
    z = clf._forward(X, logits=True)
    np.testing.assert_allclose(clf._data_loss(z, idx, None),
                               binary_log_loss(idx[:, None], p[:, None]), rtol=1e-9)
    # A third class in a later fit of the same estimator: a softmax per class.
    clf.set_params(max_iter=1).fit(blobs[0], blobs[1])
    assert clf.model_.get_layer("logits").kernel.shape == (5, 3)
    assert clf.predict_proba(blobs[0]).shape == (90, 3)


def test_binary_estimator_pickled_before_binary_outputs_keeps_its_softmax(blobs, monkeypatch):
    """An estimator fitted before two classes had one sigmoid output (no
    `_binary` attribute, a softmax of two outputs) still predicts, and
    continues training, with its own network."""
    from keras_ln.sklearn import _outputs

    X, y3 = blobs
    X, y = X[y3 < 2], y3[y3 < 2]
    with monkeypatch.context() as m:
        m.setattr(_outputs._ClassifierOutputs, "_is_binary", lambda self: False)
        old = MLPClassifier((5,), max_iter=5, random_state=0).fit(X, y)
    del old.__dict__["_binary"]  # as in a pickle of that release
    old = pickle.loads(pickle.dumps(old))
    assert old.model_.get_layer("logits").kernel.shape == (5, 2)
    softmax = np.asarray(old.model_(X), dtype=np.float64)
    np.testing.assert_allclose(old.predict_proba(X), softmax / softmax.sum(1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(old.predict(X), softmax.argmax(1))
    old.set_params(warm_start=True).fit(X, y)  # continues the two-output network
    assert old.model_.get_layer("logits").kernel.shape == (5, 2)
    assert old.predict_proba(X).shape == (len(X), 2)


def test_adam_parameters_do_not_retrace(blobs, traced_loop):
    """beta_1, beta_2, epsilon and the step size are tensor arguments of
    the traced step: new values reuse its one trace."""
    X, y = blobs
    params = dict(hidden_layer_sizes=(7, 3), max_iter=20, batch_size=30, random_state=0)
    MLPClassifier(**params).fit(X, y)  # 60 steps: traced
    program = next(p for key, p in _execution._PROGRAMS.items()
                   if key[0] == "MLPClassifier" and ("hidden_layer_sizes", (7, 3)) in key[1])
    loop = program.loops[False]  # 60 steps: a graph, not XLA
    traces = loop.experimental_get_tracing_count()
    for values in [dict(beta_1=0.5), dict(beta_2=0.9, epsilon=1e-4),
                   dict(learning_rate_init=0.01, beta_1=0.0)]:
        MLPClassifier(**params, **values).fit(X, y)
    assert loop.experimental_get_tracing_count() == traces == 1


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor, LSTMClassifier,
                                       LSTMRegressor])
def test_solver_and_adam_parameters_as_sklearn(blobs, Estimator):
    """sklearn's names and defaults; sklearn's constraints, with its
    message naming the parameter, the expected and the received value."""
    X, y = blobs
    ours = Estimator().get_params()
    sk = neural_network.MLPClassifier().get_params()
    for name in ["solver", "beta_1", "beta_2", "epsilon"]:
        assert ours[name] == sk[name]
    cases = [
        ("solver", "sgd", r"The 'solver' parameter of \w+ must be a str among "
                          r"\{'adam'\}. Got 'sgd' instead."),
        ("beta_1", 1.0, r"The 'beta_1' parameter of \w+ must be a float in the "
                        r"range \[0.0, 1.0\). Got 1.0 instead."),
        ("beta_2", -0.1, r"The 'beta_2' parameter .* Got -0.1 instead."),
        ("epsilon", 0.0, r"The 'epsilon' parameter of \w+ must be a float in the "
                         r"range \(0.0, inf\). Got 0.0 instead."),
    ]
    for name, value, match in cases:
        with pytest.raises(ValueError, match=match):
            Estimator(max_iter=1, **{name: value}).fit(X, y)
        if name != "solver":  # sklearn has "sgd" and "lbfgs" too
            with pytest.raises(ValueError, match=match.replace(r"\w+", "MLPClassifier")):
                neural_network.MLPClassifier(max_iter=1, **{name: value}).fit(X, y)


# --- y of shape (n, 1) -----------------------------------------------------
@pytest.mark.parametrize("Estimator", [MLPRegressor, LSTMRegressor])
def test_regressor_column_y_predicts_one_dimension(blobs, Estimator):
    """y of shape (n, 1) is one output, as in sklearn's MLPRegressor: a
    DataConversionWarning, predictions of shape (n,), and the fit of y.ravel()."""
    X, _ = blobs
    y = X @ [1.0, -1.0, 0.5]
    params = dict(max_iter=3, random_state=0)
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        column = Estimator((4,), **params).fit(X, y[:, None])
    flat = Estimator((4,), **params).fit(X, y)
    assert column.n_outputs_ == 1 and column.predict(X).shape == (90,)
    np.testing.assert_array_equal(column.predict(X), flat.predict(X))
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        ref = neural_network.MLPRegressor(hidden_layer_sizes=(4,), **params)
        ref.fit(X, y[:, None])
    assert ref.predict(X).shape == (90,)
    two = Estimator((4,), **params).fit(X, np.c_[y, -y])
    assert two.predict(X).shape == (90, 2)
