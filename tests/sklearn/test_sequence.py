"""LSTMClassifier / LSTMRegressor: every cell x normalization, input layouts, masking."""

import keras
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

import keras_ln
from keras_ln.sklearn import LSTMClassifier
from keras_ln.sklearn import LSTMRegressor
from keras_ln.sklearn.sequence import _pad_steps

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

LAYERS = {
    ("lstm", "layer"): keras_ln.LayerNormLSTM,
    ("gru", "layer"): keras_ln.LayerNormGRU,
    ("lstm", "batch"): keras_ln.BatchNormLSTM,
    ("lstm", None): keras_ln.FusedLSTM,
    ("gru", None): keras_ln.FusedGRU,
}


def _seed(random_state):
    """The model seed the estimators derive from an int random_state."""
    return int(check_random_state(random_state).randint(1, np.iinfo(np.int32).max))


@pytest.fixture
def sequences():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 5, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    return X, y


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell, normalization", list(LAYERS))
def test_every_combination(sequences, cell, normalization, bidirectional):
    X, y = sequences
    params = dict(units=(6,), cell=cell, normalization=normalization,
                  bidirectional=bidirectional, dropout=0.1, max_iter=3,
                  learning_rate_init=0.02, random_state=0)
    clf = LSTMClassifier(**params).fit(X, y)
    layer = clf.model_.get_layer("rnn_0")
    if bidirectional:
        assert isinstance(layer, keras.layers.Bidirectional)
        layer = layer.forward_layer
    assert type(layer) is LAYERS[(cell, normalization)]
    proba = clf.predict_proba(X)
    assert proba.shape == (48, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    # Reproducible, dropout included.
    np.testing.assert_array_equal(proba, LSTMClassifier(**params).fit(X, y).predict_proba(X))


@pytest.mark.parametrize("normalization", ["layer", "batch", None])
def test_dropout_on_the_adding_problem_trains(normalization):
    """Two features, one of them almost always 0: dropout on the input
    features zeroed whole sequences (up to their first marker), where a
    layer-normalized LSTM's states stay exactly zero and its gradient
    overflowed (loss nan at the first iteration). Dropout now sits between
    the layers, and every normalization trains with finite losses."""
    from keras_ln.datasets import make_adding_problem

    X, y = make_adding_problem(200, 50)[:2]
    reg = LSTMRegressor(units=(16,), normalization=normalization, dropout=0.1,
                        max_iter=3, batch_size=32, random_state=0).fit(X, y)
    assert np.all(np.isfinite(reg.loss_curve_))
    assert reg.model_.get_layer("dropout_0").rate == 0.1
    assert np.all(np.isfinite(reg.predict(X)))


def test_batch_gru_is_rejected_before_anything_is_fitted(sequences):
    X, y = sequences
    clf = LSTMClassifier((4,), cell="gru", normalization="batch")
    with pytest.raises(ValueError, match=r"cell='gru'.*normalization='batch'"):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)


def test_reference_keras_lstm_gives_same_predictions(sequences):
    X, y = sequences
    target = X[:, :, 1].mean(axis=1)
    reg = LSTMRegressor((5,), normalization=None, max_iter=4, random_state=0)
    reg.fit(X, target)
    ref = keras.Sequential([
        keras.Input((None, 2), dtype="float64"),
        keras.layers.LSTM(5, dtype="float64"),
        keras.layers.Dense(1, dtype="float64"),
    ])
    ref.set_weights(reg.model_.get_weights())
    # The network predicts the standardized target (standardize_target).
    expected = ref(X).numpy().ravel() * target.std() + target.mean()
    np.testing.assert_allclose(reg.predict(X), expected, rtol=1e-10)


def test_two_d_input_is_one_feature_per_step(sequences):
    X, y = sequences
    X2 = X[:, :, 0]
    params = dict(units=(4,), max_iter=3, random_state=0)
    a = LSTMClassifier(**params).fit(X2, y)
    b = LSTMClassifier(**params).fit(X2[:, :, None], y)
    assert a.n_features_in_ == 5 and b.n_features_in_ == 1
    np.testing.assert_array_equal(a.predict_proba(X2), b.predict_proba(X2[:, :, None]))
    # A 3-D X with one feature per step is also accepted after a 2-D fit.
    np.testing.assert_array_equal(a.predict_proba(X2), a.predict_proba(X2[:, :, None]))
    with pytest.raises(ValueError, match="X has 3 features, but LSTMClassifier is expecting 5"):
        a.predict(X2[:, :3])
    with pytest.raises(ValueError, match="2 features per time step"):
        a.predict(X)


def test_ragged_sequences_are_padded_and_masked():
    rng = np.random.default_rng(1)
    X = [rng.normal(size=(int(n), 3)) for n in rng.integers(2, 8, size=40)]
    y = np.array([x[:, 0].sum() for x in X])
    reg = LSTMRegressor((6,), normalization="layer", max_iter=5, random_state=0).fit(X, y)
    assert reg.n_features_in_ == 3
    together = reg.predict(X)
    one_by_one = np.array([reg.predict([x])[0] for x in X[:5]])
    np.testing.assert_allclose(together[:5], one_by_one, rtol=1e-9)
    # A zero-padded copy is different data: zeros are not padding.
    padded = np.zeros((1, 10, 3))
    padded[0, : len(X[0])] = X[0]
    assert not np.isclose(reg.predict(padded)[0], together[0])
    with pytest.raises(ValueError, match="same number of features"):
        reg.predict([np.ones((3, 3)), np.ones((3, 2))])
    with pytest.raises(ValueError, match="2 features per time step"):
        reg.predict([np.ones((3, 2))])
    with pytest.raises(ValueError, match="NaN"):
        reg.predict([np.full((3, 3), np.nan)])


def test_multi_output_and_sample_weight(sequences):
    X, _ = sequences
    Y = np.c_[X[:, :, 0].sum(1), X[:, :, 1].sum(1)]
    w = np.r_[np.ones(40), np.zeros(8)]
    params = dict(units=(4,), max_iter=3, random_state=0)
    weighted = LSTMRegressor(**params).fit(X, Y, sample_weight=w)
    dropped = LSTMRegressor(**params).fit(X[:40], Y[:40])
    assert weighted.predict(X).shape == (48, 2)
    np.testing.assert_array_equal(weighted.predict(X), dropped.predict(X))


def test_regressor_standardizes_target(sequences):
    """Predictions on the scale of y, training independent of it."""
    X, _ = sequences
    y = X[:, :, 0].sum(1)
    # 40 epochs: at 15 the training R^2 still ranged 0.27-0.83 over seeds 0-4; at 30, 0.66-0.93
    params = dict(units=(4,), max_iter=40, learning_rate_init=0.02, random_state=0)
    reg = LSTMRegressor(**params).fit(X, y)
    big = LSTMRegressor(**params).fit(X, y * 1000 + 5000)
    # the standardized targets agree to rounding (1e-16), which 40 epochs grow to about 1e-11
    np.testing.assert_allclose(big.predict(X), reg.predict(X) * 1000 + 5000,
                               rtol=1e-9)
    np.testing.assert_allclose(big.score(X, y * 1000 + 5000), reg.score(X, y),
                               rtol=1e-10)
    assert reg.score(X, y) > 0.5
    raw = LSTMRegressor(**params, standardize_target=False).fit(X, y * 1000 + 5000)
    assert raw.score(X, y * 1000 + 5000) < 0


def test_integer_weights_are_repetitions_bitwise():
    """Ragged sequences (NaN-padded), one batch: integer weights on shuffled
    rows give bitwise the fit on repeated rows, over enough epochs for the
    LSTM's loss spikes that used to amplify the rounding differences."""
    rng = np.random.default_rng(4)
    X = [rng.normal(size=(int(rng.integers(2, 7)), 2)) for _ in range(15)]
    y = rng.integers(0, 3, 15)
    w = rng.integers(0, 5, 15)
    repeated_X = [x for x, k in zip(X, w) for _ in range(k)]
    order = rng.permutation(15)
    params = dict(units=(8,), max_iter=60, learning_rate_init=0.02, random_state=0)
    repeated = LSTMClassifier(**params).fit(repeated_X, y.repeat(w))
    weighted = LSTMClassifier(**params).fit(
        [X[i] for i in order], y[order], sample_weight=w[order]
    )
    assert repeated.loss_curve_ == weighted.loss_curve_
    np.testing.assert_array_equal(repeated.predict_proba(X), weighted.predict_proba(X))


def test_learns_sequence_task():
    """Sign of the first of 6 steps (memory across the sequence): LN-LSTM learns it."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 6, 1))
    y = np.where(X[:, 0, 0] > 0, "pos", "neg")
    clf = LSTMClassifier((8,), max_iter=40, learning_rate_init=0.03, random_state=0)
    clf.fit(X[:150], y[:150])
    assert clf.score(X[150:], y[150:]) > 0.9


@pytest.mark.parametrize(
    "X, match",
    [
        (np.ones((4, 3, 2, 1)), "4D"),
        (np.ones(4), "Expected 2D array"),
        (np.ones((0, 3, 2)), "0 sample"),
        (np.ones((4, 0, 2)), "at least one step"),
        (np.full((4, 3, 2), np.inf), "infinity"),
    ],
)
def test_bad_sequences(X, match):
    clf = LSTMRegressor((4,), max_iter=2)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, np.ones(len(X)))
    assert not [k for k in vars(clf) if k.endswith("_")]


def test_units_and_early_stopping(sequences):
    X, y = sequences
    with pytest.raises(ValueError, match="units"):
        LSTMClassifier(units=(4, 0)).fit(X, y)
    # 48 rows: a validation part of 12 is too small to stop on.
    params = dict(units=(4, 3), early_stopping=True, validation_fraction=0.25,
                  n_iter_no_change=1, max_iter=5, random_state=0)
    with pytest.warns(UserWarning, match="gives 12 validation rows"):
        clf = LSTMClassifier(**params).fit(X, y)
    assert not clf.early_stopping_used_ and clf.validation_scores_ is None
    assert clf.model_.get_layer("rnn_1").units == 3
    # 240 rows: 60 held out; the lowest validation log-loss is restored.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(240, 5, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    clf = LSTMClassifier(**dict(params, max_iter=30)).fit(X, y)
    assert clf.early_stopping_used_
    assert clf.best_validation_loss_ == min(clf.validation_loss_curve_)
    _, val = train_test_split(np.arange(240), test_size=0.25, stratify=y,
                              random_state=_seed(0))
    np.testing.assert_allclose(log_loss(y[val], clf.predict_proba(X[val])),
                               clf.best_validation_loss_, rtol=1e-9)


def test_batch_norm_lstm_population_statistics_after_fit(sequences):
    # Few updates at momentum 0.99 leave the per-step moving statistics far
    # from the trained network's; after fit they are recomputed from the
    # training sequences, so inference equals training mode on them.
    X, y = sequences
    clf = LSTMClassifier(units=(6,), normalization="batch", bidirectional=True,
                         max_iter=3, random_state=0).fit(X, y)
    # The estimator NaN-pads the 5 steps to 8 (masked); the time index of
    # the backward layer depends on that padding, so pad here too.
    padded = _pad_steps(X.astype("float32"))
    assert padded.shape[1] == 8
    proba = clf.predict_proba(X)
    again = LSTMClassifier(**clf.get_params()).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), proba)
    # (A training-mode call moves the moving statistics: last.)
    train_mode = np.asarray(clf.model_(padded, training=True))
    # two classes: the network's one output is P(classes_[1])
    assert train_mode.shape == (len(X), 1)
    np.testing.assert_allclose(proba[:, 1:], train_mode, atol=1e-5)


def test_predict_passes_long_sequences_in_bounded_chunks(sequences, monkeypatch):
    """A recurrent pass keeps per-step state for every row: predict bounds rows x steps per pass
    (PREDICT_CHUNK_STEPS) and gives the same outputs as one pass."""
    from keras_ln.sklearn import _base

    X, y = sequences  # 48 sequences of 5 steps
    clf = LSTMClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    whole = clf.predict_proba(X)
    from keras_ln.sklearn import _execution

    sizes = []
    infer = _execution._Program.infer

    def spy(program, model, x, *args, **kwargs):
        sizes.append(int(x.shape[0]))
        return infer(program, model, x, *args, **kwargs)

    monkeypatch.setattr(_base, "PREDICT_CHUNK_STEPS", 100)  # 100 // 5 = 20 -> 16 rows a pass
    monkeypatch.setattr(_execution._Program, "infer", spy)
    np.testing.assert_allclose(clf.predict_proba(X), whole, rtol=1e-6, atol=1e-7)
    assert sizes == [16, 16, 16]


def test_population_statistics_by_the_traced_pass_equal_the_eager_pass(sequences, monkeypatch):
    """`recompute_batch_statistics` through the structure's traced program
    (as the fits run it) gives the eager pass's statistics, over several
    chunks of ragged sequences, and restores momentum and dropout."""
    from keras_ln.sklearn import _batch_statistics
    from keras_ln.sklearn import _execution

    X, y = sequences
    ragged = [x[: 2 + i % 4] for i, x in enumerate(X)]
    clf = LSTMClassifier(units=(6,), normalization="batch", dropout=0.2, max_iter=2,
                         random_state=0).fit(ragged, y)
    model = clf.model_
    padded = _pad_steps(clf._sequences(ragged, reset=False).astype(clf._dtype))
    program = _execution._PROGRAMS[clf._program_key]
    monkeypatch.setattr(_batch_statistics, "_STATS_CHUNK_VALUES", 40)  # 40 // 8 steps: 5 rows a chunk
    results = []
    for how in (None, program):
        _batch_statistics.recompute_batch_statistics(model, padded, how)
        results.append([v.numpy() for v in model.non_trainable_variables])
    for traced, eager in zip(*results):
        np.testing.assert_allclose(traced, eager, rtol=1e-6, atol=1e-7)
    # One trace for every chunk and every later fit of the structure.
    LSTMClassifier(**clf.get_params()).fit(ragged, y)
    _batch_statistics.recompute_batch_statistics(model, padded, program)
    assert program._statistics.experimental_get_tracing_count() == 1
    layers = list(model._flatten_layers(include_self=False, recursive=True))
    cells = [layer for layer in layers if isinstance(layer, keras_ln.BatchNormLSTMCell)]
    dropouts = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    assert cells and dropouts
    assert all(cell.norm_momentum == 0.99 for cell in cells)
    assert all(layer.rate == 0.2 for layer in dropouts)
    assert not any(getattr(cell, "_statistics_only", False) for cell in cells)


def test_population_statistics_pass_saves_nothing_for_a_backward(sequences, monkeypatch):
    """The statistics pass marks the BatchNormLSTM cells `_statistics_only`,
    so that their native forward keeps none of the activations a backward
    would read (`save=False`): the same statistics to the bit as a pass that
    keeps them, and the mark is gone afterwards."""
    from keras_ln.layers import _tf_bn_lstm_kernel
    from keras_ln.sklearn import _batch_statistics
    from tests.layers.test_tf_recurrent_kernels import _native_or_skip

    _native_or_skip()
    X, y = sequences
    clf = LSTMClassifier(units=(6,), normalization="batch", max_iter=2, random_state=0).fit(X, y)
    model = clf.model_
    padded = _pad_steps(clf._sequences(X, reset=False).astype(clf._dtype))
    native = _tf_bn_lstm_kernel.bn_lstm_recurrence_native
    saves = []

    def recorded(keep):
        """The native recurrence, recording the `save` it is called with;
        with `keep`, called with save=True instead."""
        def call(*args, **kwargs):
            saves.append(kwargs.get("save", True))
            return native(*args, **{**kwargs, "save": True} if keep else kwargs)
        return call

    results = []
    for keep in (False, True):
        monkeypatch.setattr(_tf_bn_lstm_kernel, "bn_lstm_recurrence_native", recorded(keep))
        _batch_statistics.recompute_batch_statistics(model, padded)
        results.append([v.numpy() for v in model.non_trainable_variables])
    assert saves and not any(saves)
    for lean, kept in zip(*results):
        np.testing.assert_array_equal(lean, kept)
    cells = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras_ln.BatchNormLSTMCell)]
    assert cells and not any(cell._statistics_only for cell in cells)
