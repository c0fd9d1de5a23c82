"""keras_ln.models: network structure, seeding, padding masks, saving."""

import random

import keras
import numpy as np
import pytest

import keras_ln
from keras_ln.models import NaNPaddingMask
from keras_ln.models import build_mlp
from keras_ln.models import build_recurrent
from keras_ln.models import recurrent_layer_class


def _layer_types(model):
    return {layer.name: type(layer) for layer in model.layers}


@pytest.mark.parametrize(
    "normalization, norm_type",
    [
        ("layer", keras_ln.LayerNormalization),
        ("batch", keras.layers.BatchNormalization),
        (None, None),
    ],
)
def test_build_mlp_structure(normalization, norm_type):
    model = build_mlp(
        5, 3, (7, 4), activation="tanh", normalization=normalization,
        dropout=0.25, output_activation="softmax", seed=0,
    )
    types = _layer_types(model)
    assert model.input_shape == (None, 5)
    assert model.output_shape == (None, 3)
    for i, units in enumerate((7, 4)):
        dense = model.get_layer(f"dense_{i}")
        assert dense.units == units
        # Batch norm's beta replaces the Dense bias (batch norm removes it);
        # layer norm does not remove a per-unit bias, so the Dense keeps it.
        assert dense.use_bias == (normalization != "batch")
        assert model.get_layer(f"act_{i}").activation is keras.activations.tanh
        assert model.get_layer(f"dropout_{i}").rate == 0.25
        if norm_type is None:
            assert f"norm_{i}" not in types
        else:
            assert types[f"norm_{i}"] is norm_type
    assert types["logits"] is keras.layers.Dense
    assert types["output"] is keras.layers.Activation


def test_build_mlp_linear_head_and_sklearn_activation_names():
    model = build_mlp(3, 2, (), output_activation=None, seed=0)
    assert [layer.name for layer in model.layers] == ["features", "output"]
    model = build_mlp(3, 1, (4,), activation="logistic", normalization=None)
    assert model.get_layer("act_0").activation is keras.activations.sigmoid


def test_seed_gives_identical_weights_and_restores_python_random():
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    a = build_mlp(4, 2, (8, 8), seed=42, dropout=0.5)
    assert random.random() == expected_next
    b = build_mlp(4, 2, (8, 8), seed=42, dropout=0.5)
    c = build_mlp(4, 2, (8, 8), seed=43, dropout=0.5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    np.testing.assert_array_equal(a(x, training=True), b(x, training=True))


def test_layer_names_do_not_depend_on_global_counters():
    keras.layers.Dense(2)  # bumps Keras' name counter for "dense"
    first = [layer.name for layer in build_mlp(3, 2, (4,)).layers]
    keras.backend.clear_session()
    second = [layer.name for layer in build_mlp(3, 2, (4,)).layers]
    assert first == second


@pytest.mark.parametrize(
    "cell, normalization, name",
    [
        ("lstm", "layer", "LayerNormLSTM"),
        ("gru", "layer", "LayerNormGRU"),
        ("lstm", "batch", "BatchNormLSTM"),
    ],
)
def test_recurrent_layer_class_keras_ln(cell, normalization, name):
    assert recurrent_layer_class(cell, normalization) is getattr(keras_ln, name)


def test_recurrent_layer_class_keras_and_errors():
    # keras' LSTM and GRU, run by the native kernels of the normalized layers.
    assert recurrent_layer_class("lstm", None) is keras_ln.FusedLSTM
    assert issubclass(keras_ln.FusedLSTM, keras.layers.LSTM)
    assert recurrent_layer_class("gru", None) is keras_ln.FusedGRU
    assert issubclass(keras_ln.FusedGRU, keras.layers.GRU)
    with pytest.raises(ValueError, match=r"cell='gru'.*normalization='batch'"):
        recurrent_layer_class("gru", "batch")
    with pytest.raises(ValueError, match="normalization"):
        recurrent_layer_class("lstm", "group")
    with pytest.raises(ValueError, match="cell"):
        recurrent_layer_class("rnn", None)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_build_recurrent_structure(bidirectional):
    model = build_recurrent(
        3, 2, units=(5, 4), cell="gru", normalization="layer",
        bidirectional=bidirectional, output_activation="softmax", seed=0,
    )
    assert model.input_shape == (None, None, 3)
    assert model.output_shape == (None, 2)
    first, second = model.get_layer("rnn_0"), model.get_layer("rnn_1")
    if bidirectional:
        assert isinstance(first, keras.layers.Bidirectional)
        first, second = first.forward_layer, second.forward_layer
    assert isinstance(first, keras_ln.LayerNormGRU)
    assert first.units == 5 and first.return_sequences
    assert second.units == 4 and not second.return_sequences
    assert "dropout_0" not in {layer.name for layer in model.layers}


def test_build_recurrent_dropout_between_layers_not_on_inputs():
    model = build_recurrent(3, 1, units=(5, 4), dropout=0.2, seed=0)
    names = [layer.name for layer in model.layers][1:]
    assert names == ["padding_mask", "rnn_0", "dropout_0", "rnn_1",
                     "dropout_1", "output"]
    assert model.get_layer("dropout_1").rate == 0.2
    assert model.get_layer("rnn_0").dropout == 0.0


def test_build_recurrent_rejects_batch_gru_and_bad_sizes():
    with pytest.raises(ValueError, match=r"cell='gru'.*normalization='batch'"):
        build_recurrent(3, 1, cell="gru", normalization="batch")
    with pytest.raises(ValueError, match="units"):
        build_recurrent(3, 1, units=())
    with pytest.raises(ValueError, match="units"):
        build_recurrent(3, 1, units=(4, -1))
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        build_mlp(3, 1, (0,))


@pytest.mark.parametrize(
    "cell, normalization", [("lstm", "layer"), ("gru", "layer"), ("lstm", None)]
)
def test_nan_padding_is_masked(cell, normalization):
    """A NaN-padded sequence gives the output of the unpadded one."""
    model = build_recurrent(
        2, 1, units=(4,), cell=cell, normalization=normalization,
        bidirectional=True, seed=0,
    )
    rng = np.random.default_rng(0)
    short = rng.normal(size=(1, 3, 2)).astype("float32")
    padded = np.concatenate([short, np.full((1, 2, 2), np.nan, "float32")], 1)
    np.testing.assert_allclose(
        model(padded), model(short), rtol=1e-5, atol=1e-6
    )
    # Genuine zeros are data, not padding.
    zeros = np.concatenate([short, np.zeros((1, 2, 2), "float32")], axis=1)
    assert not np.allclose(model(zeros), model(short))


def test_nan_padding_mask_layer():
    x = np.array([[[1.0, 2.0], [0.0, 0.0], [np.nan, np.nan]]], "float32")
    layer = NaNPaddingMask()
    np.testing.assert_array_equal(layer.compute_mask(x), [[True, True, False]])
    np.testing.assert_array_equal(layer(x), np.nan_to_num(x))


def test_recurrent_model_saves_and_loads(tmp_path):
    model = build_recurrent(2, 3, units=(4,), output_activation="softmax", seed=1)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(0).normal(size=(2, 5, 2)).astype("float32")
    x[0, 3:] = np.nan
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    assert isinstance(loaded.get_layer("padding_mask"), NaNPaddingMask)


def test_seeded_weights_ignore_other_threads_drawing_from_random():
    """Keras draws unset seeds from Python's global `random`, which every thread shares (a Dask worker's
    event loop draws from it): the seeded models take none of their seeds from it."""
    import random
    import threading

    expected_mlp = [w.copy() for w in build_mlp(4, 2, (8, 8), seed=42, dropout=0.5).get_weights()]
    expected_rnn = [w.copy() for w in build_recurrent(3, 2, units=(4,), bidirectional=True, seed=42).get_weights()]
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            random.random()

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            for a, b in zip(build_mlp(4, 2, (8, 8), seed=42, dropout=0.5).get_weights(), expected_mlp):
                np.testing.assert_array_equal(a, b)
            got = build_recurrent(3, 2, units=(4,), bidirectional=True, seed=42).get_weights()
            for a, b in zip(got, expected_rnn):
                np.testing.assert_array_equal(a, b)
    finally:
        stop.set()
        thread.join()


def test_bidirectional_directions_start_from_different_weights():
    model = build_recurrent(3, 2, units=(4,), bidirectional=True, seed=0)
    layer = model.get_layer("rnn_0")
    forward, backward = layer.forward_layer.get_weights(), layer.backward_layer.get_weights()
    assert not np.array_equal(forward[0], backward[0]) and not np.array_equal(forward[1], backward[1])
    assert layer.backward_layer.go_backwards and not layer.forward_layer.go_backwards
